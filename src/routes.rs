//! The route table: (method, path) → `Route` and who may call it (`Access`).
//! Pure, so it is tested on the host; `api::dispatch` authenticates the caller
//! once, checks the route's access, then runs its handler. The auth-failure
//! matrix (tests/auth-matrix.mjs) reads the accesses from this file.

use crate::domain::keys::Permission;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with no credential.
    Public,
    /// Any gateway key (the operator token is refused by the handler where it has no meaning).
    AnyKey,
    /// A key with this permission, or the operator (who has all).
    Key(Permission),
    /// Inference: a key with `write`, looked up through the caches; the account object checks
    /// the key's authoritative state in the reservation.
    Inference,
    /// A key with `write` for a call no account object sees (counting tokens): read from D1 on each
    /// call, as for management, since nothing else would see a revocation; a secret rotated out serves
    /// it in its grace, as it serves inference.
    Unmetered,
}

use Access::{AnyKey, Inference, Key, Public, Unmetered};
use Permission::{Admin, Read, Write};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    ChatCompletions,
    Completions,
    /// Anthropic's Messages API and its token count.
    Messages,
    CountTokens,
    /// OpenAI's Responses API (stateless), and the parts of it a stateless gateway does not serve.
    Responses,
    ResponsesUnsupported,
    Embeddings,
    ListModels,
    /// One model of the list (`{model}` may hold slashes), as the SDKs' `models.retrieve` asks.
    GetModel(String),
    CurrentKey,
    ListUsers,
    CreateUser,
    GetUser(String),
    UpdateUser(String),
    DeleteUser(String),
    ListKeys,
    CreateKey,
    CreateToken,
    GetKey(String),
    UpdateKey(String),
    DeleteKey(String),
    RotateKey(String),
    /// A key's end users; one end user's own budget (key id, end user as the path has it).
    ListEndUsers(String),
    PutEndUserBudget(String, String),
    ClearEndUserBudget(String, String),
    /// A key's request log, and one logged request (key id, request id).
    ListRequestLog(String),
    GetRequestLog(String, String),
    ListOrgs,
    CreateOrg,
    GetOrg(String),
    UpdateOrg(String),
    DeleteOrg(String),
    CreateOrgKey(String),
    ListPrices,
    PutPrice,
    SyncPrices,
    GetPrice(String),
    GetBalance,
    ListTransactions,
    AddBalance,
    GetCredits,
    Reconcile,
    /// Reconciliation through the queue (`fan_out`): start a run; a run's report (`latest` or an id).
    StartReconcileRun,
    GetReconcileRun(String),
    /// Retention (`retention`): a pass now; the archives; one archive's rows; an archive put back.
    RunRetention,
    ListArchives,
    GetArchive(String),
    RestoreArchive(String),
    OwnStats,
    KeyStats(String),
    OrgStats(String),
    GlobalStats,
    Generation,
    Provision,
    ListUpstreamKeys,
    UpdateUpstreamKey(String),
    DeleteUpstreamKey(String),
    Overview,
    ListAlerts,
    ListRoutes,
    PutRoute(String),
    /// `PUT /api/admin/routes` with the model in the body.
    PutRouteFromBody,
    DeleteRoute(String),
    /// The OpenAPI document (served from the built assets; the Worker answers only when it was not built).
    OpenApi,
}

/// How many kinds of `Route` there are (the OpenAPI test checks `PATHS` reaches every one).
pub const ROUTE_KINDS: usize = 65;

/// Every path the table serves, as templates (`{name}`: one segment; `{model}` may hold slashes).
/// The OpenAPI document walks these through `route`, so it lists exactly what the table serves.
pub const PATHS: &[&str] = &[
    "/health",
    "/openapi.json",
    "/v1/chat/completions",
    "/api/v1/chat/completions",
    "/v1/completions",
    "/api/v1/completions",
    "/v1/messages",
    "/api/v1/messages",
    "/v1/messages/count_tokens",
    "/api/v1/messages/count_tokens",
    "/v1/responses",
    "/api/v1/responses",
    "/v1/responses/{response_id}",
    "/api/v1/responses/{response_id}",
    "/v1/embeddings",
    "/api/v1/embeddings",
    "/v1/models",
    "/api/v1/models",
    "/v1/models/{model}",
    "/api/v1/models/{model}",
    "/api/v1/key",
    "/api/v1/credits",
    "/api/v1/generation",
    "/api/admin/users",
    "/api/admin/users/{user_id}",
    "/api/keys",
    "/api/token",
    "/api/keys/{key_id}",
    "/api/keys/{key_id}/rotate",
    "/api/keys/{key_id}/end-users",
    "/api/keys/{key_id}/end-users/{end_user}",
    "/api/keys/{key_id}/requests",
    "/api/keys/{key_id}/requests/{request_id}",
    "/api/orgs",
    "/api/orgs/{org_id}",
    "/api/orgs/{org_id}/keys",
    "/api/models/pricing",
    "/api/models/pricing/sync",
    "/api/models/pricing/{model}",
    "/api/balance",
    "/api/balance/transactions",
    "/api/balance/admin/add",
    "/api/admin/reconcile",
    "/api/admin/reconcile/runs",
    "/api/admin/reconcile/runs/{run_id}",
    "/api/admin/retention/run",
    "/api/admin/archives",
    "/api/admin/archives/{archive_id}",
    "/api/admin/archives/{archive_id}/restore",
    "/api/stats",
    "/api/stats/global",
    "/api/stats/keys/{key_id}",
    "/api/stats/orgs/{org_id}",
    "/api/admin/provision",
    "/api/admin/openrouter-keys",
    "/api/admin/openrouter-keys/{upstream_key_id}",
    "/api/admin/overview",
    "/api/admin/alerts",
    "/api/admin/routes",
    "/api/admin/routes/{model}",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Found(Route, Access),
    /// The path exists, but not for this method.
    WrongMethod,
    NotFound,
}

/// The path of a serialised absolute URL (`https://host/p/a?q#f` → `/p/a`), as the
/// runtime hands it over: special schemes always serialise a path, beginning at the
/// first `/` after the host.
pub fn path_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[after_scheme..];
    let Some(start) = rest.find('/') else { return "/" };
    let path = &rest[start..];
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// The query of a serialised URL as name → value, read as `application/x-www-form-urlencoded` (`+` is
/// a space, `%XX` a byte, text that is not UTF-8 replaced); the last of a repeated name wins.
pub fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    let url = &url[..url.find('#').unwrap_or(url.len())];
    let Some(start) = url.find('?') else { return Default::default() };
    url[start + 1..]
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name, true), decode(value, true))
        })
        .collect()
}

/// `%XX` as a byte (and, in a form, `+` as a space); text that is not UTF-8 replaced.
fn decode(text: &str, form: bool) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b'+', ..) if form => {
                out.push(b' ');
                i += 1;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A model id from the path segments after a route's prefix, each percent-decoded (`openai%2Fgpt-4o`
/// and `openai/gpt-4o` name the same model).
fn model_of(segments: &[&str]) -> String {
    segments.iter().map(|s| decode(s, false)).collect::<Vec<_>>().join("/")
}

pub fn route(method: &str, path: &str) -> Match {
    let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let id = |i: usize| segments.get(i).map(|s| s.to_string()).unwrap_or_default();
    let candidates: Vec<(&str, Route, Access)> = match segments.as_slice() {
        ["health"] => vec![("GET", Route::Health, Public)],
        ["openapi.json"] => vec![("GET", Route::OpenApi, Public)],
        ["v1", "chat", "completions"] | ["api", "v1", "chat", "completions"] => {
            vec![("POST", Route::ChatCompletions, Inference)]
        }
        ["v1", "embeddings"] | ["api", "v1", "embeddings"] => vec![("POST", Route::Embeddings, Inference)],
        ["v1", "completions"] | ["api", "v1", "completions"] => vec![("POST", Route::Completions, Inference)],
        ["v1", "messages"] | ["api", "v1", "messages"] => vec![("POST", Route::Messages, Inference)],
        ["v1", "responses"] | ["api", "v1", "responses"] => {
            vec![("POST", Route::Responses, Inference), ("GET", Route::Responses, Inference)]
        }
        ["v1", "responses", _, ..] | ["api", "v1", "responses", _, ..] => {
            vec![("POST", Route::ResponsesUnsupported, Inference), ("GET", Route::ResponsesUnsupported, Inference)]
        }
        ["v1", "messages", "count_tokens"] | ["api", "v1", "messages", "count_tokens"] => {
            vec![("POST", Route::CountTokens, Unmetered)]
        }
        ["v1", "models"] | ["api", "v1", "models"] => vec![("GET", Route::ListModels, Public)],
        ["v1", "models", model @ ..] | ["api", "v1", "models", model @ ..] if model.iter().all(|p| !p.is_empty()) => {
            vec![("GET", Route::GetModel(model_of(model)), Public)]
        }
        ["api", "v1", "key"] => vec![("GET", Route::CurrentKey, AnyKey)],
        ["api", "admin", "users"] => {
            vec![("GET", Route::ListUsers, Key(Admin)), ("POST", Route::CreateUser, Key(Admin))]
        }
        ["api", "admin", "users", u] if !u.is_empty() => {
            vec![
                ("GET", Route::GetUser(id(3)), Key(Admin)),
                ("PATCH", Route::UpdateUser(id(3)), Key(Admin)),
                ("DELETE", Route::DeleteUser(id(3)), Key(Admin)),
            ]
        }
        ["api", "keys"] => vec![("GET", Route::ListKeys, Key(Read)), ("POST", Route::CreateKey, Key(Write))],
        ["api", "token"] => vec![("POST", Route::CreateToken, Key(Write))],
        ["api", "keys", k] if !k.is_empty() => {
            vec![
                ("GET", Route::GetKey(id(2)), Key(Read)),
                ("PATCH", Route::UpdateKey(id(2)), Key(Write)),
                ("DELETE", Route::DeleteKey(id(2)), Key(Write)),
            ]
        }
        ["api", "keys", k, "rotate"] if !k.is_empty() => vec![("POST", Route::RotateKey(id(2)), Key(Write))],
        ["api", "keys", k, "end-users"] if !k.is_empty() => vec![("GET", Route::ListEndUsers(id(2)), Key(Read))],
        ["api", "keys", k, "requests"] if !k.is_empty() => vec![("GET", Route::ListRequestLog(id(2)), Key(Read))],
        ["api", "keys", k, "requests", r] if !k.is_empty() && !r.is_empty() => {
            vec![("GET", Route::GetRequestLog(id(2), id(4)), Key(Read))]
        }
        ["api", "keys", k, "end-users", e] if !k.is_empty() && !e.is_empty() => vec![
            ("PUT", Route::PutEndUserBudget(id(2), id(4)), Key(Write)),
            ("DELETE", Route::ClearEndUserBudget(id(2), id(4)), Key(Write)),
        ],
        ["api", "orgs"] => vec![("GET", Route::ListOrgs, Key(Admin)), ("POST", Route::CreateOrg, Key(Admin))],
        ["api", "orgs", o] if !o.is_empty() => {
            vec![
                ("GET", Route::GetOrg(id(2)), Key(Admin)),
                ("PATCH", Route::UpdateOrg(id(2)), Key(Admin)),
                ("DELETE", Route::DeleteOrg(id(2)), Key(Admin)),
            ]
        }
        ["api", "orgs", o, "keys"] if !o.is_empty() => vec![("POST", Route::CreateOrgKey(id(2)), Key(Admin))],
        ["api", "models", "pricing"] => vec![("GET", Route::ListPrices, Public), ("PUT", Route::PutPrice, Key(Admin))],
        ["api", "models", "pricing", "sync"] => {
            vec![("POST", Route::SyncPrices, Key(Admin)), ("GET", Route::GetPrice("sync".into()), Public)]
        }
        ["api", "models", "pricing", model @ ..] if model.iter().all(|p| !p.is_empty()) => {
            vec![("GET", Route::GetPrice(model_of(model)), Public)]
        }
        ["api", "balance"] => vec![("GET", Route::GetBalance, Key(Read))],
        ["api", "balance", "transactions"] => vec![("GET", Route::ListTransactions, Key(Read))],
        ["api", "balance", "admin", "add"] => vec![("POST", Route::AddBalance, Key(Admin))],
        ["api", "v1", "credits"] => vec![("GET", Route::GetCredits, Key(Read))],
        ["api", "admin", "reconcile"] => vec![("GET", Route::Reconcile, Key(Admin))],
        ["api", "admin", "retention", "run"] => vec![("POST", Route::RunRetention, Key(Admin))],
        ["api", "admin", "archives"] => vec![("GET", Route::ListArchives, Key(Admin))],
        ["api", "admin", "archives", a] if !a.is_empty() => vec![("GET", Route::GetArchive(id(3)), Key(Admin))],
        ["api", "admin", "archives", a, "restore"] if !a.is_empty() => {
            vec![("POST", Route::RestoreArchive(id(3)), Key(Admin))]
        }
        ["api", "admin", "reconcile", "runs"] => vec![("POST", Route::StartReconcileRun, Key(Admin))],
        ["api", "admin", "reconcile", "runs", r] if !r.is_empty() => {
            vec![("GET", Route::GetReconcileRun(id(4)), Key(Admin))]
        }
        ["api", "stats"] => vec![("GET", Route::OwnStats, Key(Read))],
        ["api", "stats", "global"] => vec![("GET", Route::GlobalStats, Key(Admin))],
        ["api", "stats", "keys", k] if !k.is_empty() => vec![("GET", Route::KeyStats(id(3)), Key(Read))],
        ["api", "stats", "orgs", o] if !o.is_empty() => vec![("GET", Route::OrgStats(id(3)), Key(Admin))],
        ["api", "v1", "generation"] => vec![("GET", Route::Generation, Key(Read))],
        ["api", "admin", "provision"] => vec![("POST", Route::Provision, Key(Admin))],
        ["api", "admin", "openrouter-keys"] => vec![("GET", Route::ListUpstreamKeys, Key(Admin))],
        ["api", "admin", "openrouter-keys", k] if !k.is_empty() => {
            vec![
                ("PATCH", Route::UpdateUpstreamKey(id(3)), Key(Admin)),
                ("DELETE", Route::DeleteUpstreamKey(id(3)), Key(Admin)),
            ]
        }
        ["api", "admin", "overview"] => vec![("GET", Route::Overview, Key(Admin))],
        ["api", "admin", "alerts"] => vec![("GET", Route::ListAlerts, Key(Admin))],
        ["api", "admin", "routes"] => {
            vec![("GET", Route::ListRoutes, Key(Admin)), ("PUT", Route::PutRouteFromBody, Key(Admin))]
        }
        ["api", "admin", "routes", model @ ..] if model.iter().all(|p| !p.is_empty()) => {
            vec![
                ("PUT", Route::PutRoute(model_of(model)), Key(Admin)),
                ("DELETE", Route::DeleteRoute(model_of(model)), Key(Admin)),
            ]
        }
        _ => return Match::NotFound,
    };
    let method = if method == "HEAD" { "GET" } else { method };
    candidates.into_iter().find(|(m, _, _)| *m == method).map_or(Match::WrongMethod, |(_, r, a)| Match::Found(r, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str) -> Result<Route, Match> {
        match super::route(method, path) {
            Match::Found(r, _) => Ok(r),
            other => Err(other),
        }
    }

    #[test]
    fn every_route_says_who_may_call_it() {
        let access = |m: &str, p: &str| match super::route(m, p) {
            Match::Found(_, a) => a,
            other => panic!("{m} {p}: {other:?}"),
        };
        assert_eq!(access("GET", "/health"), Public);
        assert_eq!(access("POST", "/v1/chat/completions"), Inference);
        assert_eq!(access("POST", "/v1/messages/count_tokens"), Unmetered, "no account object sees a count");
        assert_eq!(access("GET", "/api/keys"), Key(Read));
        assert_eq!(access("POST", "/api/keys/k/rotate"), Key(Write));
        assert_eq!(access("GET", "/api/admin/users"), Key(Admin));
        assert_eq!(access("GET", "/api/v1/key"), AnyKey);
    }

    #[test]
    fn path_of_drops_host_query_and_fragment() {
        assert_eq!(path_of("https://gw.example.com/v1/chat/completions?x=1#f"), "/v1/chat/completions");
        assert_eq!(path_of("http://127.0.0.1:8787/api/users/u_1"), "/api/users/u_1");
        assert_eq!(path_of("http://127.0.0.1:8787/"), "/");
        assert_eq!(path_of("http://127.0.0.1:8787"), "/");
        assert_eq!(path_of("https://h/a%3Fb?c"), "/a%3Fb");
    }

    #[test]
    fn query_strings_read_as_forms() {
        let q = query_of("https://h/p?user_id=u%201&group_by=model&a=1&a=2&flag&plus=a+b&bad=%zz%4&e=%C3%A9#frag?x=y");
        assert_eq!(q.get("user_id").map(String::as_str), Some("u 1"));
        assert_eq!(q.get("group_by").map(String::as_str), Some("model"));
        assert_eq!(q.get("a").map(String::as_str), Some("2"), "the last one wins");
        assert_eq!(q.get("flag").map(String::as_str), Some(""));
        assert_eq!(q.get("plus").map(String::as_str), Some("a b"));
        assert_eq!(q.get("bad").map(String::as_str), Some("%zz%4"), "a broken escape stays as written");
        assert_eq!(q.get("e").map(String::as_str), Some("é"));
        assert!(!q.contains_key("x"), "the fragment is not the query");
        assert!(query_of("https://h/p").is_empty());
        assert!(query_of("https://h/p#a?b=c").is_empty());
        assert_eq!(query_of("https://h/p?%FF=1").get("\u{FFFD}").map(String::as_str), Some("1"));
    }

    #[test]
    fn openai_and_openrouter_paths_both_work() {
        assert_eq!(route("POST", "/v1/chat/completions"), Ok(Route::ChatCompletions));
        assert_eq!(route("POST", "/api/v1/chat/completions/"), Ok(Route::ChatCompletions));
        assert_eq!(route("GET", "/api/v1/models"), Ok(Route::ListModels));
        assert_eq!(route("GET", "/v1/models/openai/gpt-4o"), Ok(Route::GetModel("openai/gpt-4o".into())));
        assert_eq!(route("GET", "/api/v1/models/openai%2Fgpt-4o/"), Ok(Route::GetModel("openai/gpt-4o".into())));
        assert_eq!(route("GET", "/v1/models/a//b"), Err(Match::NotFound));
        assert_eq!(route("HEAD", "/health"), Ok(Route::Health));
    }

    #[test]
    fn wrong_method_and_unknown_paths() {
        assert_eq!(route("GET", "/v1/chat/completions"), Err(Match::WrongMethod));
        assert_eq!(route("GET", "/v1/chat"), Err(Match::NotFound));
        assert_eq!(route("GET", "/"), Err(Match::NotFound));
        assert_eq!(route("POST", "/api/keys"), Ok(Route::CreateKey));
        assert_eq!(route("PUT", "/api/keys/k1"), Err(Match::WrongMethod));
        assert_eq!(route("GET", "/api/keys//rotate"), Err(Match::NotFound));
    }

    #[test]
    fn route_pins_take_model_ids_with_slashes() {
        assert_eq!(route("GET", "/api/admin/routes"), Ok(Route::ListRoutes));
        assert_eq!(
            route("PUT", "/api/admin/routes/anthropic/claude-3.5-sonnet"),
            Ok(Route::PutRoute("anthropic/claude-3.5-sonnet".into()))
        );
        assert_eq!(route("DELETE", "/api/admin/routes/x"), Ok(Route::DeleteRoute("x".into())));
        assert_eq!(
            route("DELETE", "/api/admin/routes/openai%2Fgpt-4o"),
            Ok(Route::DeleteRoute("openai/gpt-4o".into())),
            "a model id percent-encoded in the path"
        );
        assert_eq!(
            route("GET", "/api/models/pricing/vendor/mod%C3%A8le+1"),
            Ok(Route::GetPrice("vendor/modèle+1".into()))
        );
        assert_eq!(route("GET", "/api/admin/routes/x"), Err(Match::WrongMethod));
        assert_eq!(route("PUT", "/api/admin/routes/a//b"), Err(Match::NotFound));
    }

    #[test]
    fn resource_ids_are_captured() {
        assert_eq!(route("GET", "/api/keys/k1"), Ok(Route::GetKey("k1".into())));
        assert_eq!(route("POST", "/api/keys/k1/rotate"), Ok(Route::RotateKey("k1".into())));
        assert_eq!(route("GET", "/api/keys/k1/end-users"), Ok(Route::ListEndUsers("k1".into())));
        assert_eq!(
            route("PUT", "/api/keys/k1/end-users/alice%40example.com"),
            Ok(Route::PutEndUserBudget("k1".into(), "alice%40example.com".into()))
        );
        assert_eq!(route("GET", "/api/keys/k1/end-users/alice"), Err(Match::WrongMethod));
        assert_eq!(route("DELETE", "/api/admin/users/u1/"), Ok(Route::DeleteUser("u1".into())));
        assert_eq!(route("GET", "/api/v1/key"), Ok(Route::CurrentKey));
        assert_eq!(route("GET", "/api/models/pricing/openai/gpt-4o"), Ok(Route::GetPrice("openai/gpt-4o".into())));
        assert_eq!(route("POST", "/api/models/pricing/sync"), Ok(Route::SyncPrices));
        assert_eq!(route("GET", "/api/models/pricing/a//b"), Err(Match::NotFound));
        assert_eq!(route("POST", "/api/balance/admin/add"), Ok(Route::AddBalance));
        assert_eq!(route("GET", "/api/stats/keys/k1"), Ok(Route::KeyStats("k1".into())));
        assert_eq!(route("GET", "/api/stats/orgs/o1"), Ok(Route::OrgStats("o1".into())));
        assert_eq!(route("GET", "/api/stats/global"), Ok(Route::GlobalStats));
        assert_eq!(route("GET", "/api/v1/generation"), Ok(Route::Generation));
    }
}
