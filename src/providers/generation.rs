//! OpenRouter's record of one generation (`GET /generation?id=`): what it really used. Asked after a
//! stream the client hung up on, which never got its usage chunk: the delivered text alone leaves out
//! what the client never saw (hidden reasoning, the words generated before the upstream stopped), and
//! OpenRouter bills all of it. The record appears a moment after the generation ends.

use serde::Deserialize;

use crate::domain::chat::{CompletionDetails, PromptDetails, Usage};

#[derive(Deserialize)]
struct Record {
    data: Stats,
}

#[derive(Deserialize)]
struct Stats {
    native_tokens_prompt: Option<u64>,
    native_tokens_completion: Option<u64>,
    #[serde(default)]
    native_tokens_reasoning: Option<u64>,
    #[serde(default)]
    native_tokens_cached: Option<u64>,
    #[serde(default)]
    total_cost: Option<f64>,
}

/// The usage a generation record reports (in the provider's own tokens, as a usage chunk counts them);
/// `None` when it is not one or gives no token counts.
pub fn usage_of(body: &[u8]) -> Option<Usage> {
    let stats = serde_json::from_slice::<Record>(body).ok()?.data;
    let (prompt, completion) = (stats.native_tokens_prompt?, stats.native_tokens_completion?);
    let reasoning = stats.native_tokens_reasoning.unwrap_or(0).min(completion);
    let cached = stats.native_tokens_cached.unwrap_or(0).min(prompt);
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
        cost: stats.total_cost.filter(|c| c.is_finite() && *c >= 0.0),
        prompt_tokens_details: (cached > 0).then_some(PromptDetails { cached_tokens: cached, cache_write_tokens: 0 }),
        completion_tokens_details: (reasoning > 0).then_some(CompletionDetails { reasoning_tokens: reasoning }),
    })
    .filter(Usage::counts)
}

/// Asks OpenRouter (at `base_url`, with the key the request went with) for generation `id`'s usage,
/// trying again while the record is not there yet, for at most `within_ms`.
#[cfg(target_arch = "wasm32")]
pub async fn usage(base_url: &str, key: &str, id: &str, within_ms: u64) -> Option<Usage> {
    use super::transport;
    let deadline = js_sys::Date::now() + within_ms as f64;
    let url = format!("{base_url}/generation?id={}", String::from(js_sys::encode_uri_component(id)));
    let auth = format!("Bearer {key}");
    let left = || (deadline - js_sys::Date::now()).max(0.0) as u64;
    let mut wait_ms = 250;
    loop {
        if left() == 0 {
            return None;
        }
        // One try, its answer read whole, inside what is left (the deadline bounds the whole wait).
        let ask = async {
            let headers = [("authorization", auth.as_str())];
            let mut answer = transport::send(worker::Method::Get, &url, &headers, None, left()).await.ok()?;
            usage_of(&transport::read_all(&mut answer).await.ok()?)
        };
        if let Some(Some(usage)) = transport::within(left(), ask).await {
            return Some(usage);
        }
        let pause = wait_ms.min(left());
        worker::Delay::from(std::time::Duration::from_millis(pause)).await;
        wait_ms = (wait_ms * 2).min(2_000);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_gives_the_provider_s_own_token_counts() {
        let body = br#"{"data":{"id":"gen-1","cancelled":true,"tokens_prompt":9,"tokens_completion":40,
            "native_tokens_prompt":10,"native_tokens_completion":42,"native_tokens_reasoning":30,
            "native_tokens_cached":4,"total_cost":0.0001}}"#;
        let usage = usage_of(body).expect("usage");
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (10, 42));
        let tokens = usage.tokens();
        assert_eq!((tokens.reasoning, tokens.cache_read), (30, 4));
        assert_eq!(usage.cost, Some(0.0001));
    }

    #[test]
    fn a_record_without_counts_gives_nothing() {
        assert_eq!(usage_of(br#"{"data":{"id":"gen-1","native_tokens_prompt":null}}"#), None);
        assert_eq!(usage_of(br#"{"error":{"code":404,"message":"Generation not found"}}"#), None);
        assert_eq!(usage_of(b"not json"), None);
    }
}
