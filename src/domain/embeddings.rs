//! The inbound embeddings request (OpenAI's `POST /v1/embeddings`): just enough
//! structure to validate, route and bill it; every other field passes through.

use serde_json::{Map, Value};

use super::InvalidRequest;

/// OpenAI's limit on inputs per request.
pub const MAX_INPUTS: usize = 2048;

#[derive(Debug, Clone)]
pub struct EmbeddingsRequest {
    pub model: String,
    /// An upper bound on the input's tokens: a token is at least one byte of text,
    /// a token array is its own count, and each input gets `PER_INPUT_TOKENS` more.
    pub token_bound: u64,
    /// What an estimate of the input reads as its size in bytes (a quarter of it in tokens): a string's bytes,
    /// four for each token of a token array (which counts exactly). An answer without usage is charged so.
    pub estimate_bytes: u64,
    pub body: Map<String, Value>,
}

fn invalid(message: &str, param: &str) -> InvalidRequest {
    InvalidRequest::param(message.to_string(), param)
}

/// Tokens a model may add to each input of its own (BERT's CLS and SEP, an end-of-sequence token).
const PER_INPUT_TOKENS: u64 = 8;

/// Tokens at most in one input: a string's bytes, or a token array's length, and what the model adds.
fn bound_of(item: &Value) -> Option<u64> {
    let own = match item {
        Value::String(s) if !s.is_empty() => s.len() as u64,
        Value::Array(tokens) if !tokens.is_empty() && tokens.iter().all(|t| t.as_u64().is_some()) => {
            tokens.len() as u64
        }
        _ => return None,
    };
    Some(own + PER_INPUT_TOKENS)
}

/// The vectors of an embeddings answer as base64 (little-endian 32-bit floats, as OpenAI encodes them) where
/// the client asked for base64 and the upstream answered numbers: the OpenAI SDKs ask for base64 by default
/// and decode whatever comes, so numbers would be read as garbage without an error.
pub fn encode_vectors(answer: &mut Value) {
    let Some(data) = answer.get_mut("data").and_then(Value::as_array_mut) else { return };
    for item in data {
        let Some(vector) = item.get("embedding").and_then(Value::as_array) else { continue };
        let Some(floats) = vector.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>() else { continue };
        let bytes: Vec<u8> = floats.into_iter().flat_map(|f| (f as f32).to_le_bytes()).collect();
        item["embedding"] = Value::from(base64(&bytes));
    }
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            let c = if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] } else { b'=' };
            out.push(char::from(c));
        }
    }
    out
}

/// One input's size as an estimate reads it (`EmbeddingsRequest::estimate_bytes`).
fn estimate_bytes_of(item: &Value) -> u64 {
    match item {
        Value::String(s) => s.len() as u64,
        Value::Array(tokens) => 4 * tokens.len() as u64,
        _ => 0,
    }
}

impl EmbeddingsRequest {
    pub fn parse(bytes: &[u8]) -> Result<Self, InvalidRequest> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| InvalidRequest::new(format!("request body is not valid JSON: {e}")))?;
        let Value::Object(body) = value else {
            return Err(InvalidRequest::new("request body must be a JSON object"));
        };
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.trim().is_empty() && m.len() <= 256 => m.clone(),
            _ => return Err(invalid("`model` must be a model id", "model")),
        };
        // Vectors of different models do not mix, and a preset chooses a model the gateway cannot see.
        for field in ["models", "preset"] {
            if body.get(field).is_some_and(|v| !v.is_null()) {
                return Err(invalid(&format!("`{field}` is not accepted for embeddings: name one model"), field));
            }
        }
        let input_error = "`input` must be a non-empty string, an array of strings, an array of token ids, or an array of such arrays (at most 2048 inputs)";
        let token_bound = match body.get("input") {
            None => return Err(invalid("you must provide an `input` parameter", "input")),
            Some(tokens @ Value::Array(items)) if items.first().is_some_and(Value::is_number) => {
                bound_of(tokens).ok_or_else(|| invalid(input_error, "input"))?
            }
            Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_INPUTS => {
                items.iter().map(bound_of).sum::<Option<u64>>().ok_or_else(|| invalid(input_error, "input"))?
            }
            Some(single @ Value::String(_)) => bound_of(single).ok_or_else(|| invalid(input_error, "input"))?,
            Some(_) => return Err(invalid(input_error, "input")),
        };
        match body.get("encoding_format") {
            None | Some(Value::Null) => {}
            Some(Value::String(f)) if f == "float" || f == "base64" => {}
            Some(_) => return Err(invalid("`encoding_format` must be `float` or `base64`", "encoding_format")),
        }
        match body.get("dimensions") {
            None | Some(Value::Null) => {}
            Some(d) if d.as_u64().is_some_and(|d| (1..=100_000).contains(&d)) => {}
            Some(_) => return Err(invalid("`dimensions` must be a positive integer", "dimensions")),
        }
        let estimate_bytes = match body.get("input") {
            Some(Value::Array(items)) if items.first().is_some_and(Value::is_number) => 4 * items.len() as u64,
            Some(Value::Array(items)) => items.iter().map(estimate_bytes_of).sum(),
            Some(single) => estimate_bytes_of(single),
            None => 0,
        };
        Ok(Self { model, token_bound, estimate_bytes, body })
    }

    /// The body to send upstream, under the provider's own model id, `without` the fields it does not take.
    pub fn upstream_body(&self, native_model: &str, without: &[&str]) -> Vec<u8> {
        let mut body = self.body.clone();
        for field in without {
            body.remove(*field);
        }
        body.insert("model".into(), Value::from(native_model));
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<EmbeddingsRequest, InvalidRequest> {
        EmbeddingsRequest::parse(json.as_bytes())
    }

    #[test]
    fn numbers_asked_for_as_base64_are_encoded_as_openai_encodes_them() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        let mut answer =
            serde_json::json!({"data": [{"embedding": [1.0, -2.5]}, {"embedding": "AACAPw=="}, {"embedding": ["x"]}]});
        encode_vectors(&mut answer);
        // 1.0f32 = 00 00 80 3f, -2.5f32 = 00 00 20 c0
        assert_eq!(answer["data"][0]["embedding"], "AACAPwAAIMA=");
        assert_eq!(answer["data"][1]["embedding"], "AACAPw==", "base64 already: as it came");
        assert_eq!(answer["data"][2]["embedding"], serde_json::json!(["x"]), "not numbers: as it came");
    }

    #[test]
    fn an_estimate_counts_token_ids_exactly_and_text_by_its_bytes() {
        let ids = parse(r#"{"model":"m","input":[[1,2,3,4,5,6,7]]}"#).expect("valid");
        assert_eq!(crate::domain::ledger::estimate_tokens(ids.estimate_bytes), 7);
        let flat = parse(r#"{"model":"m","input":[1,2,3]}"#).expect("valid");
        assert_eq!(crate::domain::ledger::estimate_tokens(flat.estimate_bytes), 3);
        let text = parse(r#"{"model":"m","input":["abcdefgh","abcd"]}"#).expect("valid");
        assert_eq!(crate::domain::ledger::estimate_tokens(text.estimate_bytes), 3);
        assert!(text.token_bound >= 12, "the bound still holds every byte");
    }

    #[test]
    fn a_fallback_list_or_a_preset_is_refused() {
        for field in ["models", "preset"] {
            let json = format!(r#"{{"model":"m","input":"x","{field}":["a/b"]}}"#);
            assert_eq!(parse(&json).err().and_then(|e| e.param).as_deref(), Some(field));
        }
    }

    #[test]
    fn bounds_every_input_shape() {
        // Each input: its bytes (or token ids), and the tokens a model adds to every input.
        let own = PER_INPUT_TOKENS;
        assert_eq!(parse(r#"{"model":"m","input":"héllo"}"#).expect("string").token_bound, 6 + own);
        assert_eq!(parse(r#"{"model":"m","input":["ab","cde"]}"#).expect("strings").token_bound, 5 + 2 * own);
        assert_eq!(parse(r#"{"model":"m","input":[1,2,3]}"#).expect("tokens").token_bound, 3 + own);
        assert_eq!(
            parse(r#"{"model":"m","input":[[1,2],[3]],"encoding_format":"base64","dimensions":256}"#)
                .expect("arrays")
                .token_bound,
            3 + 2 * own
        );
        // A direct OpenAI route does not get OpenRouter's fields.
        let request =
            parse(r#"{"model":"openai/m","input":"x","provider":{"order":["a"]},"dimensions":8}"#).expect("valid");
        let sent: Value = serde_json::from_slice(&request.upstream_body("m", &["provider"])).expect("json");
        assert_eq!(sent, serde_json::json!({"model": "m", "input": "x", "dimensions": 8}));
    }

    #[test]
    fn refuses_bad_input_naming_the_parameter() {
        for (json, param) in [
            (r#"{"input":"x"}"#, "model"),
            (r#"{"model":"m"}"#, "input"),
            (r#"{"model":"m","input":""}"#, "input"),
            (r#"{"model":"m","input":[]}"#, "input"),
            (r#"{"model":"m","input":[1,"a"]}"#, "input"),
            (r#"{"model":"m","input":["a",""]}"#, "input"),
            (r#"{"model":"m","input":{"a":1}}"#, "input"),
            (r#"{"model":"m","input":"x","encoding_format":"hex"}"#, "encoding_format"),
            (r#"{"model":"m","input":"x","dimensions":0}"#, "dimensions"),
        ] {
            assert_eq!(parse(json).err().and_then(|e| e.param).as_deref(), Some(param), "{json}");
        }
    }
}
