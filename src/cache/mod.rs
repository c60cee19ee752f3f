//! Read caches in front of D1: an in-isolate map for hot entries and KV behind it.

pub mod failures;
pub mod keys;
pub mod orgs;
pub mod prices;

/// The shape of what the caches keep in KV, in every entry's name (`key:v2:…`, `prices:v2:all`). Bump it
/// (and `PREVIOUS_FORMAT` to the old one) whenever `keys::KeyRecord` or `store::prices::PriceRow` changes
/// shape: during a deploy old and new isolates then keep entries of their own, and a new isolate never reads
/// an old one with its new fields defaulted (an empty allowlist lets any model through; a missing price tier
/// charges the base rate). A change removes both names, so an old isolate forgets its copy too.
const FORMAT: &str = "v2";
/// The names before `FORMAT`'s (the first had none).
const PREVIOUS_FORMAT: &str = "";

/// A KV entry's name in `format`.
fn kv_name_in(format: &str, kind: &str, id: &str) -> String {
    match format {
        "" => format!("{kind}:{id}"),
        format => format!("{kind}:{format}:{id}"),
    }
}

/// A KV entry's name: what lookups read and write.
fn kv_name(kind: &str, id: &str) -> String {
    kv_name_in(FORMAT, kind, id)
}

/// A KV entry's names in the current format and the previous one: what a change removes.
fn kv_names(kind: &str, id: &str) -> [String; 2] {
    [kv_name(kind, id), kv_name_in(PREVIOUS_FORMAT, kind, id)]
}
