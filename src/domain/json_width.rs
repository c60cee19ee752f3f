//! How many values a JSON body holds, counted before it is parsed. An inference body may be 8 MiB, and
//! parsed into `serde_json::Value` each value takes 16 bytes or more in the isolate (an object's entry
//! several times that), then a translation copies it: a body of 4 million zeros would ask for hundreds of
//! megabytes, past the isolate's 128 MB, and running out of memory aborts the isolate with every request
//! in flight in it (their streams unbilled). A body of more values than any request needs is refused
//! before it is parsed.

use super::InvalidRequest;

/// Values a request body may hold: above the 300,000 token ids OpenAI accepts in one embeddings request,
/// and far above what a chat needs (a long agent session is some tens of thousands).
pub const MAX_VALUES: usize = 400_000;

/// An upper bound on the values in `bytes` as JSON: every value but the first follows a `,`, `:` or `[`
/// outside a string. Not a validation: the parser that comes after says whether it is JSON.
pub fn values(bytes: &[u8]) -> usize {
    let (mut count, mut in_string, mut escaped) = (1usize, false, false);
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
                b',' | b':' | b'[' => count += 1,
                _ => {}
            }
        }
    }
    count
}

/// Refuses a body of more than `MAX_VALUES` values, before anything parses it.
pub fn check(bytes: &[u8]) -> Result<(), InvalidRequest> {
    let n = values(bytes);
    if n > MAX_VALUES {
        return Err(InvalidRequest::new(format!(
            "the request body holds about {n} JSON values; at most {MAX_VALUES} are accepted"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_values_outside_strings_never_fewer_than_there_are() {
        // 6 values; an object's comma (before a key) counts one more.
        assert_eq!(values(br#"{"model":"m","input":[1,2,3]}"#), 7);
        assert_eq!(values(br#"{"text":"a, b: [c]","x":"\",["}"#), 4, "commas and brackets in strings are text");
        assert_eq!(values(b"[[],[]]"), 5);
        for json in [r#"{"a":[{"b":1,"c":[true,null]}],"d":"e"}"#, "[1,[2,[3,[4]]]]", r#""just a string""#, "7"] {
            let parsed: serde_json::Value = serde_json::from_str(json).expect("JSON");
            let count = |v: &serde_json::Value| -> usize {
                fn walk(v: &serde_json::Value) -> usize {
                    1 + match v {
                        serde_json::Value::Array(a) => a.iter().map(walk).sum(),
                        serde_json::Value::Object(o) => o.values().map(walk).sum(),
                        _ => 0,
                    }
                }
                walk(v)
            };
            assert!(values(json.as_bytes()) >= count(&parsed), "{json}");
        }
    }

    #[test]
    fn a_body_of_millions_of_zeros_is_refused_before_parsing() {
        let zeros = format!(r#"{{"model":"m","input":[{}0]}}"#, "0,".repeat(MAX_VALUES));
        let refused = check(zeros.as_bytes()).expect_err("too wide");
        assert!(refused.message.contains("JSON values"), "{}", refused.message);
        let fine = format!(r#"{{"model":"m","input":[{}0]}}"#, "0,".repeat(MAX_VALUES - 10));
        assert_eq!(check(fine.as_bytes()), Ok(()));
    }
}
