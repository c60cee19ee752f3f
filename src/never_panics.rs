//! "Never panics": every parser of outside input, fed arbitrary text or bytes,
//! answers `Ok`/`Some` or `Err`/`None` (host property tests, `cargo test`).

use proptest::prelude::*;

use crate::domain::{chat, keys, money, paging, pricing, routing, time, usage, windows};
use crate::providers::sse::{DataLines, SseRelay};

/// Any text, with a bias towards the characters our parsers split on.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[0-9T:+\\-.Zé\"{}\\[\\], a-z_/]{0,48}"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn timestamps(t in text(), now in 0i64..4_102_444_800_000) {
        let _ = time::parse_iso(&t);
        let _ = keys::validate_expiry(&t, now);
        let _ = usage::day_range(Some(&t), Some(&t), now);
        let _ = usage::day_range(Some(&t), None, now);
    }

    #[test]
    fn money_and_prices(usd in any::<f64>(), t in text()) {
        let _ = money::usd_to_micros("amount", usd);
        let _ = keys::validate_limit(usd);
        let _ = pricing::from_usd_per_token("prompt", usd);
        let _ = pricing::parse_usd_per_token("prompt", &t);
    }

    #[test]
    fn urls(t in text()) {
        let _ = crate::routes::path_of(&t);
        let _ = crate::routes::query_of(&t);
        let _ = crate::routes::query_of(&format!("https://h/p?{t}"));
    }

    #[test]
    fn key_fields_and_query_values(t in text(), u in text()) {
        let _ = keys::looks_like_key(&t);
        let _ = keys::failure_bucket(&t);
        let _ = keys::hash(&t);
        let _ = keys::secrets_equal(&t, &u);
        let _ = keys::validate_limit_reset(&t);
        let _ = keys::parse_permissions(&[t.clone(), u.clone()]);
        let _ = keys::Permission::parse(&t);
        let _ = windows::Reset::parse(&t);
        let _ = routing::Provider::parse(&t);
        let _ = paging::Page::parse(Some(&t), Some(&u), "page_size");
        let _ = usage::GroupBy::parse(Some(&t), true);
    }

    #[test]
    fn chat_bodies(bytes in proptest::collection::vec(any::<u8>(), 0..256), t in text()) {
        let _ = chat::ChatRequest::parse(&bytes);
        let _ = crate::domain::parsed_size::check(&bytes);
        let _ = crate::domain::parsed_size::check(t.as_bytes());
        let _ = crate::providers::generation::usage_of(&bytes);
        let _ = crate::providers::generation::usage_of(t.as_bytes());
        if let Ok(req) = chat::ChatRequest::parse(t.as_bytes()) {
            let _ = req.prompt_token_bound();
        }
    }

    #[test]
    fn sse_streams(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
        let (mut relay, mut lines) = (SseRelay::new(), DataLines::default());
        for chunk in &chunks {
            let _ = relay.feed(chunk);
            let _ = lines.feed(chunk);
        }
        let _ = relay.finish(None);
    }

    #[test]
    fn sse_streams_of_events(events in proptest::collection::vec(text(), 0..6), cut in 0usize..64) {
        let stream: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        let bytes = stream.as_bytes();
        let cut = cut.min(bytes.len());
        let mut relay = SseRelay::new();
        let _ = relay.feed(&bytes[..cut]);
        let _ = relay.feed(&bytes[cut..]);
        let _ = relay.finish(Some("{}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Object messages are read tag first (`domain::tagged`): any text, and a valid message with a field
    /// replaced, moved or cut, is a message or an error.
    #[test]
    fn object_messages(t in text(), cut in 0usize..200, field in "[a-z_]{1,12}", value in text()) {
        use crate::billing::protocol::{AccountRequest, AccountResponse, OrgRequest, OrgResponse};
        let valid = [
            r#"{"op":"settle","account_id":"u","settlements":[{"request_id":"r","cost":5,"description":"m","usage":null}]}"#,
            r#"{"result":"reserved","reservation":{"decision":"partial","amount":3,"source":"key_limit"},"resets_at_ms":null}"#,
            r#"{"op":"put_end_user_budget","key_id":"k","end_user":"e","own":{"kind":"own","budget":{"limit_micros":1,"reset":"daily"}}}"#,
        ];
        let read = |bytes: &[u8]| {
            let _ = serde_json::from_slice::<AccountRequest>(bytes);
            let _ = serde_json::from_slice::<AccountResponse>(bytes);
            let _ = serde_json::from_slice::<OrgRequest>(bytes);
            let _ = serde_json::from_slice::<OrgResponse>(bytes);
        };
        prop_assert!(serde_json::from_str::<AccountRequest>(valid[0]).is_ok());
        prop_assert!(serde_json::from_str::<AccountResponse>(valid[1]).is_ok());
        prop_assert!(serde_json::from_str::<AccountRequest>(valid[2]).is_ok());
        read(t.as_bytes());
        for message in valid {
            read(&message.as_bytes()[..cut.min(message.len())]);
            let json = serde_json::to_string(&value).unwrap_or_default();
            read(message.replacen("{", &format!("{{\"{field}\":{json},"), 1).as_bytes());
            read(message.replacen("\"op\"", &format!("\"{field}\""), 1).replacen("\"result\"", &format!("\"{field}\""), 1).as_bytes());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The other dialects' request bodies, and chat answers and streams translated back into them.
    #[test]
    fn dialects(bytes in proptest::collection::vec(any::<u8>(), 0..256), t in text(), cut in 0usize..400) {
        use crate::providers::{anthropic, gemini, responses};
        use crate::domain::{completions, embeddings};
        for body in [&bytes[..], t.as_bytes()] {
            let _ = anthropic::inbound::to_chat(body);
            let _ = responses::to_chat(body);
            let _ = completions::to_chat(body);
            let _ = embeddings::EmbeddingsRequest::parse(body);
            let _ = anthropic::inbound::answer_from_chat(body.to_vec(), Some("END"));
            let _ = responses::answer_from_chat(body.to_vec(), &responses::CustomTools::default());
            let _ = completions::answer_from_chat(body.to_vec());
            let _ = completions::stream_from_chat(body.to_vec());
        }
        // A chat stream cut anywhere, and the providers' streams fed arbitrary events.
        let stream = format!(
            "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"hi\"}}}}]}}\n\ndata: {t}\n\ndata: [DONE]\n\n"
        );
        let (head, tail) = stream.as_bytes().split_at(cut.min(stream.len()));
        let mut messages = anthropic::inbound::MessagesStream::new(Some("END".into()));
        let mut answers = responses::ResponsesStream::new(responses::CustomTools::default());
        let mut from_anthropic = anthropic::stream::ToOpenAiSse::new("m", 0);
        let mut from_gemini = gemini::stream::ToOpenAiSse::new("m", 0);
        for part in [head, tail, &bytes[..]] {
            let _ = messages.feed(part.to_vec());
            let _ = answers.feed(part.to_vec());
            let _ = from_anthropic.feed(part);
            let _ = from_gemini.feed(part);
        }
    }

    /// What else comes from outside: OpenRouter's catalogue and its key limits, a direct OpenAI stream,
    /// upstream error answers, alert settings, budgets and limits as the API takes them, retention days,
    /// and the reasoning pieces a client sends back.
    #[test]
    fn other_outside_input(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        t in text(),
        status in any::<u16>(),
        usd in any::<f64>(),
        n in any::<i64>(),
        tokens in any::<u64>(),
    ) {
        use crate::providers::{openai, openai_compat, reasoning};
        for body in [&bytes[..], t.as_bytes()] {
            let _ = openai_compat::parse_model_list(body);
            let _ = openai_compat::classify_error(status, Some(&t), body);
            let _ = openai_compat::embeddings_usage(body);
            let mut sse = openai::RenameModelSse::new("m");
            let _ = sse.feed(body);
            let _ = serde_json::from_slice::<crate::domain::end_users::BudgetInput>(body).map(|b| b.validate("budget"));
            let _ = serde_json::from_slice::<crate::domain::orgs::LimitsInput>(body).map(|l| l.validate());
            if let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(body) {
                crate::domain::embeddings::encode_vectors(&mut answer);
            }
            if let Ok(serde_json::Value::Array(details)) = serde_json::from_slice(body) {
                let _ = reasoning::blocks_from_details(&details, true);
                let _ = reasoning::blocks_from_details(&details, false);
                let mut whole = details.clone();
                reasoning::merge_details(&mut whole, &details);
                let _ = whole.iter().filter_map(reasoning::readable).count();
            }
        }
        // A document block and a reasoning item sent back, their fields anything.
        let odd = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or(serde_json::Value::from(t.clone()));
        let document = serde_json::json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": [
            {"type": "document", "title": odd, "source": {"type": t, "media_type": odd, "data": odd, "content": odd}},
            {"type": "document", "source": {"type": "content", "content": [odd, {"type": "image", "source": odd}]}},
            {"type": "document", "source": {"type": "base64", "media_type": t, "data": t}}]}]});
        if let Ok(chat) = crate::providers::anthropic::inbound::to_chat(document.to_string().as_bytes()) {
            let _ = crate::providers::anthropic::request::messages_request(&chat, "claude", 8);
            let _ = crate::providers::gemini::request::generate_request(&chat, "gemini");
        }
        for content in [format!("tollgate.reasoning_details.v1:{t}"), format!("tollgate.reasoning_details.v1:{odd}")] {
            let item = serde_json::json!({"model": "m", "input": [{"type": "reasoning", "encrypted_content": content},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": t}, {"role": "assistant", "content": odd}]});
            let _ = crate::providers::responses::to_chat(item.to_string().as_bytes());
        }
        // Prompt-size overrides as OpenRouter may list them (odd ones too): whatever tier they make, a
        // request's charge at any size stays within its worst case.
        let rate = n.rem_euclid(1_000_000_000_001);
        let odd = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default();
        let listed = serde_json::json!({"prompt": "0.000001", "completion": "0.000002", "overrides": [
            {"min_prompt_tokens": tokens, "prompt": t, "completion": usd},
            {"min_prompt_tokens": tokens % 1_000_000, "prompt": rate as f64 / 1e12, "input_cache_read": t},
            odd,
        ]});
        if let Ok(p) = serde_json::from_value::<openai_compat::UpstreamPricing>(listed) {
            let base = pricing::Price { input: rate / 3, output: rate / 2, cache_read: Some(rate / 7), ..pricing::Price::default() };
            let price = pricing::Price { long_context: pricing::long_context(&base, &p.prompt_size_overrides()), ..base };
            for prompt in [tokens, tokens % 1_000_000, 0] {
                let used = pricing::Tokens { prompt, completion: prompt / 3, cache_read: prompt / 2, ..pricing::Tokens::default() };
                let worst = pricing::Tokens { prompt, completion: prompt / 3, ..pricing::Tokens::default() };
                prop_assert!(pricing::cost(&price, &used) <= pricing::cost(&price.worst_rates(), &worst));
                let _ = pricing::affordable_output_tokens(&price, prompt, n);
            }
        }
        let _ = crate::domain::alerts::AlertRules::parse_percents(&t);
        let _ = crate::domain::request_log::validate_days(Some(n));
        let _ = crate::domain::provisioning::usd_to_cents(usd);
        let _ = pricing::catalogue_limit(tokens);
        let budget = crate::domain::end_users::BudgetInput { limit: usd, limit_reset: Some(t.clone()) };
        let _ = budget.validate("budget");
        let limits = crate::domain::orgs::LimitsInput { monthly_requests: Some(n), monthly_tokens: Some(n), monthly_cost: Some(usd) };
        let _ = limits.validate();
    }

    /// Token counts from an upstream, anywhere in u64's range, add up without overflow (a release build
    /// would wrap them: a request charged for almost nothing).
    #[test]
    fn upstream_token_counts(a in any::<u64>(), b in any::<u64>(), c in any::<u64>(), d in any::<u64>()) {
        use crate::providers::{anthropic, gemini, responses};
        let from_anthropic = anthropic::response::usage(&serde_json::json!({
            "input_tokens": a, "cache_read_input_tokens": b, "cache_creation_input_tokens": c, "output_tokens": d
        }));
        prop_assert!(from_anthropic.prompt_tokens >= a.max(b).max(c));
        let from_gemini = gemini::response::usage(&serde_json::json!({
            "promptTokenCount": a, "candidatesTokenCount": b, "thoughtsTokenCount": c, "cachedContentTokenCount": d
        }));
        prop_assert!(from_gemini.completion_tokens >= b.max(c));
        let answer = serde_json::json!({
            "id": "c", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": a, "completion_tokens": b, "total_tokens": c,
                      "prompt_tokens_details": {"cached_tokens": c, "cache_write_tokens": d},
                      "completion_tokens_details": {"reasoning_tokens": d}},
        })
        .to_string()
        .into_bytes();
        let _ = anthropic::inbound::answer_from_chat(answer.clone(), None);
        let _ = responses::answer_from_chat(answer.clone(), &responses::CustomTools::default());
        let _ = crate::domain::completions::answer_from_chat(answer.clone());
        let _ = crate::providers::openai_compat::completion_usage(&answer);
        let _ = crate::providers::generation::usage_of(&answer);
    }
}
