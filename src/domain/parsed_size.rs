//! What a JSON body takes once parsed, estimated before it is parsed. An inference body may be 8 MiB;
//! parsed into `serde_json::Value`s (24 bytes each on wasm32, more in an array whose buffer doubled) and
//! maps (every object allocates a B-tree node of about 400 bytes, however few its entries), then copied by
//! a translation, a body of millions of zeros or of small objects would ask for hundreds of megabytes,
//! past the isolate's 128 MB, and running out of memory aborts the isolate with every request in flight in
//! it (their streams unbilled). A body that would take more than `MAX_BYTES` parsed is refused first.

use super::InvalidRequest;

/// What one value may take parsed: a `Value` in an array buffer up to twice its length.
const VALUE_BYTES: usize = 48;
/// What an object takes besides its values: a B-tree leaf node of 11 keys and values.
const OBJECT_BYTES: usize = 420;
/// The most a body may take parsed: room for the 300,000 token ids OpenAI accepts in one embeddings request,
/// and far more than a chat needs (a long agent session is some thousands of objects).
pub const MAX_BYTES: usize = 16 * 1024 * 1024;

/// An upper bound on what `bytes` takes parsed as JSON (their strings aside, which the body's own size
/// bounds): every value but the first follows a `,`, `:` or `[` outside a string, every object opens with
/// `{`. Not a validation: the parser that comes after says whether it is JSON.
pub fn estimate(bytes: &[u8]) -> usize {
    let (mut values, mut objects, mut in_string, mut escaped) = (1usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b',' | b':' | b'[' => values += 1,
                b'{' => objects += 1,
                _ => {}
            }
        }
    }
    values.saturating_mul(VALUE_BYTES).saturating_add(objects.saturating_mul(OBJECT_BYTES))
}

/// Refuses a body that would take more than `MAX_BYTES` parsed, before anything parses it.
pub fn check(bytes: &[u8]) -> Result<(), InvalidRequest> {
    let parsed = estimate(bytes);
    if parsed > MAX_BYTES {
        return Err(InvalidRequest::new(format!(
            "the request body holds too many JSON values or objects: parsed, it could take up to {} MB; at most {} MB are accepted",
            parsed.div_ceil(1024 * 1024),
            MAX_BYTES / (1024 * 1024)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn counted(v: &Value) -> (usize, usize) {
        let (mut values, mut objects) = (1, usize::from(v.is_object()));
        let children: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            Value::Object(o) => o.values().collect(),
            _ => Vec::new(),
        };
        for child in children {
            let (v, o) = counted(child);
            values += v;
            objects += o;
        }
        (values, objects)
    }

    #[test]
    fn never_less_than_the_values_and_objects_there_are() {
        for json in [
            r#"{"a":[{"b":1,"c":[true,null]}],"d":"e"}"#,
            "[1,[2,[3,[4]]]]",
            r#"{"text":"a, b: [c] {d}","x":"\",[{","y":"\\"}"#,
            r#""just a string""#,
            "7",
            "[[],[],{}]",
        ] {
            let (values, objects) = counted(&serde_json::from_str(json).expect("JSON"));
            assert!(estimate(json.as_bytes()) >= values * VALUE_BYTES + objects * OBJECT_BYTES, "{json}");
        }
        assert_eq!(estimate(br#"{"t":"a, b: [c] {d}"}"#), 2 * VALUE_BYTES + OBJECT_BYTES, "strings are text");
    }

    #[test]
    fn millions_of_zeros_or_small_objects_are_refused_before_parsing() {
        let zeros = format!(r#"{{"model":"m","input":[{}0]}}"#, "0,".repeat(4_000_000));
        assert!(check(zeros.as_bytes()).expect_err("too many").message.contains("JSON values or objects"));
        let objects = format!(r#"{{"model":"m","metadata":[{}{{}}]}}"#, r#"{"a":0},"#.repeat(200_000));
        assert!(check(objects.as_bytes()).is_err(), "1.6 MB of small objects");
        let tokens = format!(r#"{{"model":"m","input":[{}0]}}"#, "1234,".repeat(300_000));
        assert_eq!(check(tokens.as_bytes()), Ok(()), "OpenAI's most token ids in one embeddings request");
        let chat = format!(
            r#"{{"model":"m","messages":[{}{{"role":"user","content":"go on"}}]}}"#,
            r#"{"role":"user","content":[{"type":"text","text":"a long agent session"}]},"#.repeat(5_000)
        );
        assert_eq!(check(chat.as_bytes()), Ok(()), "ten thousand turns' objects");
    }
}
