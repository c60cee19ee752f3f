//! A pure relay for OpenAI-style server-sent events.
//!
//! Upstream bytes go in; complete lines come out unchanged, to be forwarded
//! at once. A partial line is held back until its end arrives, so a cut
//! stream never leaves the client half an event. Along the way the relay
//! notes what billing needs: the usage chunk (which may have `choices: []`),
//! the delivered content, whether `[DONE]` arrived, and any error event.

use serde::Deserialize;
use serde_json::Value;

use crate::domain::chat::Usage;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct StreamSummary {
    /// `data: [DONE]` arrived.
    pub done: bool,
    /// The last usage object seen.
    pub usage: Option<Usage>,
    /// An `error` object the upstream sent as an event.
    pub upstream_error: Option<Value>,
    /// Number of `data:` events carrying JSON.
    pub events: u64,
    /// UTF-8 bytes of content and tool-call arguments delivered to the client.
    pub content_bytes: u64,
    /// The `model` the chunks name (the model that served, when the upstream chose among fallbacks).
    pub model: Option<String>,
    /// The `id` the chunks carry (the upstream's generation id on the OpenRouter route).
    pub id: Option<String>,
}

/// Given the stream's usage and the model its chunks name, the cost (USD) to report in its place.
pub type CostReporter = Box<dyn Fn(&Usage, Option<&str>) -> f64>;

#[derive(Default)]
pub struct SseRelay {
    pending: Vec<u8>,
    summary: StreamSummary,
    report_cost: Option<CostReporter>,
    /// The client said `include_usage: false`: usage is noted, not passed on.
    hide_usage: bool,
    /// The upstream's own cost is passed on as `usage.upstream_cost` (else dropped).
    show_upstream_cost: bool,
}

/// An upstream's id for its answer as it is kept (the ledger, D1, the generation lookup): at most 256
/// printable ASCII characters; anything else is no id (a hostile one could stall every write it rides in).
pub fn upstream_id(id: Option<String>) -> Option<String> {
    id.filter(|id| !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| b.is_ascii_graphic()))
}

#[derive(Deserialize)]
struct ChunkProbe {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChoiceProbe>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChoiceProbe {
    #[serde(default)]
    delta: Option<DeltaProbe>,
}

#[derive(Deserialize)]
struct DeltaProbe {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallProbe>>,
}

#[derive(Deserialize)]
struct ToolCallProbe {
    #[serde(default)]
    function: Option<FunctionProbe>,
}

#[derive(Deserialize)]
struct FunctionProbe {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

impl SseRelay {
    pub fn new() -> Self {
        Self::default()
    }

    /// A relay that rewrites the usage chunk's `cost` to what the gateway
    /// charges, keeping the upstream's figure as `upstream_cost`.
    /// `show_upstream_cost`: keep the upstream's figure as `usage.upstream_cost` (see `set_usage_cost`).
    pub fn reporting_cost(report: CostReporter, show_upstream_cost: bool) -> Self {
        Self { report_cost: Some(report), show_upstream_cost, ..Self::default() }
    }

    /// Keeps usage from the client (it is still noted for billing).
    pub fn hiding_usage(mut self, hide: bool) -> Self {
        self.hide_usage = hide;
        self
    }

    pub fn summary(&self) -> &StreamSummary {
        &self.summary
    }

    /// Takes upstream bytes; returns the bytes to forward now (whole lines).
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let Some(last_newline) = chunk.iter().rposition(|&b| b == b'\n') else {
            self.pending.extend_from_slice(chunk);
            return Vec::new();
        };
        let mut out = std::mem::take(&mut self.pending);
        out.extend_from_slice(&chunk[..=last_newline]);
        self.pending.extend_from_slice(&chunk[last_newline + 1..]);
        let mut rewritten: Option<Vec<u8>> = None;
        let mut start = 0;
        for line in out.split(|&b| b == b'\n') {
            let end = start + line.len();
            if let Some(new_line) = self.observe_line(line) {
                let buf = rewritten.get_or_insert_with(|| out[..start].to_vec());
                buf.extend_from_slice(&new_line);
            } else if let Some(buf) = rewritten.as_mut() {
                buf.extend_from_slice(line);
            }
            if let Some(buf) = rewritten.as_mut() {
                if end < out.len() {
                    buf.push(b'\n');
                }
            }
            start = end + 1;
        }
        rewritten.unwrap_or(out)
    }

    /// The upstream body ended. When it ended without `[DONE]`, or `error`
    /// is given, returns the closing bytes: the error event, then `[DONE]`.
    /// Whatever partial line was still held back is dropped.
    pub fn finish(&mut self, error_json: Option<&str>) -> Vec<u8> {
        self.pending.clear();
        match error_json {
            Some(err) if !self.summary.done => {
                self.summary.done = true;
                format!("data: {err}\n\ndata: [DONE]\n\n").into_bytes()
            }
            _ => Vec::new(),
        }
    }

    /// Notes what the line says; returns a replacement line when it carries usage to re-price.
    fn observe_line(&mut self, line: &[u8]) -> Option<Vec<u8>> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let data = line.strip_prefix(b"data:")?;
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if data.trim_ascii() == b"[DONE]" {
            self.summary.done = true;
            return None;
        }
        let probe = serde_json::from_slice::<ChunkProbe>(data).ok()?;
        self.summary.events += 1;
        if self.summary.model.is_none() {
            self.summary.model = probe.model.filter(|m| !m.is_empty());
        }
        if self.summary.id.is_none() {
            self.summary.id = upstream_id(probe.id);
        }
        let mut replacement = None;
        if let Some(usage) = &probe.usage {
            // The last report wins; a usage that counts nothing (`{}`, zeros) is no report, and is not shown
            // to the client as one (its cost would read 0 after the real one).
            if self.hide_usage || !usage.counts() {
                replacement = Some(without_usage(data, probe.choices.is_empty()));
            } else if let Some(report) = &self.report_cost {
                replacement = reprice(data, report(usage, self.summary.model.as_deref()), self.show_upstream_cost);
            }
            if usage.counts() {
                self.summary.usage = probe.usage.clone();
            }
        }
        if probe.error.is_some() {
            self.summary.upstream_error = probe.error;
        }
        for delta in probe.choices.into_iter().filter_map(|c| c.delta) {
            let text = [delta.content, delta.reasoning, delta.refusal]
                .into_iter()
                .flatten()
                .map(|s| s.len() as u64)
                .sum::<u64>();
            let tools = delta
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .filter_map(|t| t.function)
                .map(|f| f.name.map_or(0, |n| n.len()) + f.arguments.map_or(0, |a| a.len()))
                .sum::<usize>() as u64;
            self.summary.content_bytes += text + tools;
        }
        replacement
    }
}

/// Sets `usage.cost` to what the gateway charged (USD): for a whole answer and for a
/// stream's usage chunk. The upstream's own figures (what the tenant pays: OpenRouter's
/// `cost`, its `cost_details` and `is_byok`) are kept, the cost as `usage.upstream_cost`, only
/// when `show_upstream_cost` (a tenant's margin is its own business). Answers whether the
/// value had a usage object.
pub fn set_usage_cost(answer: &mut Value, cost: f64, show_upstream_cost: bool) -> bool {
    let Some(usage) = answer.get_mut("usage").and_then(Value::as_object_mut) else { return false };
    let upstream = usage.remove("cost");
    if show_upstream_cost {
        if let Some(upstream) = upstream {
            usage.insert("upstream_cost".into(), upstream);
        }
    } else {
        usage.remove("cost_details");
        usage.remove("is_byok");
    }
    usage.insert("cost".into(), Value::from(cost));
    true
}

/// The event with its usage re-priced (see `set_usage_cost`).
fn reprice(data: &[u8], cost: f64, show_upstream_cost: bool) -> Option<Vec<u8>> {
    let mut event: Value = serde_json::from_slice(data).ok()?;
    if !set_usage_cost(&mut event, cost, show_upstream_cost) {
        return None;
    }
    let mut line = b"data: ".to_vec();
    line.extend(serde_json::to_vec(&event).ok()?);
    Some(line)
}

/// The event without its usage: nothing at all when usage was all it carried
/// (an empty line, which SSE ignores).
fn without_usage(data: &[u8], usage_only: bool) -> Vec<u8> {
    let Ok(mut event) = serde_json::from_slice::<Value>(data) else { return Vec::new() };
    if usage_only {
        return Vec::new();
    }
    if let Some(fields) = event.as_object_mut() {
        fields.remove("usage");
    }
    let mut line = b"data: ".to_vec();
    line.extend(serde_json::to_vec(&event).unwrap_or_default());
    line
}

/// The longest line of an upstream's event stream: a line is held whole until it ends (to be relayed or
/// translated), so a stream whose line never ends would grow without bound in the isolate's memory.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// How long the line an upstream's stream is in the middle of has grown (bytes since its last newline).
#[derive(Debug, Default)]
pub struct OpenLine(usize);

impl OpenLine {
    /// Takes the next chunk of the stream; `false` once a line has passed `MAX_LINE_BYTES`.
    pub fn fits(&mut self, chunk: &[u8]) -> bool {
        self.0 = match chunk.iter().rposition(|&b| b == b'\n') {
            Some(last) => chunk.len() - last - 1,
            None => self.0.saturating_add(chunk.len()),
        };
        self.0 <= MAX_LINE_BYTES
    }
}

/// Splits a server-sent event stream into the payloads of its `data:` lines,
/// whatever the chunking (for providers whose events are translated, not relayed).
#[derive(Debug, Default)]
pub struct DataLines {
    pending: Vec<u8>,
}

impl DataLines {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if let Some(data) = line.strip_prefix("data:") {
                out.push(data.trim_start().to_string());
            }
        }
        out
    }
}

/// What a relayed chat stream says, step by step, for the translators into other dialects
/// (Anthropic's Messages, OpenAI's Responses).
#[derive(Debug, Clone, PartialEq)]
pub enum ChatStep {
    /// The first chunk (its `id`, `model`, `created`).
    Start(Value),
    Text(String),
    /// A piece of a refusal (structured outputs: the model declined, and says why instead of answering).
    Refusal(String),
    /// A delta's `reasoning_details` as they came (before the steps read from them), for a dialect that
    /// gives them back whole (the Responses API's reasoning items).
    Details(Vec<Value>),
    /// A piece of the model's thinking, its signature (which ends a thinking block), or a block of
    /// redacted (encrypted) thinking.
    Thinking(String),
    Signature(String),
    Redacted(String),
    /// A new tool call: its id and function name.
    ToolStart {
        id: Value,
        name: Value,
    },
    /// More of the current tool call's arguments.
    ToolArgs(String),
    /// A choice's `finish_reason`.
    Finish(String),
    /// The choice ended at a stop sequence (`native_finish_reason: "stop_sequence"`), named when the
    /// upstream named it; comes before its `Finish`.
    StopSequence(Option<Value>),
    Usage(Value),
    /// An error event: its `error` object.
    Error(Value),
    /// `data: [DONE]`.
    Done,
}

/// The message of a stream's error event.
pub fn error_message(error: &Value) -> Value {
    error.get("message").cloned().unwrap_or(Value::from("upstream error"))
}

/// Reads whole SSE lines of a chat stream as `ChatStep`s (comments and unreadable lines skipped).
#[derive(Debug, Default)]
pub struct ChatSteps {
    /// Whether `ChatStep::Details` are wanted (the Responses API's reasoning items; Messages reads the
    /// thinking steps only).
    details: bool,
    started: bool,
    /// The chat index and id of the tool call being written.
    tool: Option<(u64, String)>,
}

impl ChatSteps {
    /// A reader that also gives each delta's details whole (`ChatStep::Details`).
    pub fn with_details() -> Self {
        Self { details: true, ..Self::default() }
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Vec<ChatStep> {
        let mut steps = Vec::new();
        for data in String::from_utf8_lossy(bytes).lines().filter_map(|l| l.strip_prefix("data:").map(str::trim_start))
        {
            if data == "[DONE]" {
                steps.push(ChatStep::Done);
                continue;
            }
            let Ok(chunk) = serde_json::from_slice::<Value>(data.as_bytes()) else { continue };
            if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
                steps.push(ChatStep::Error(error.clone()));
                continue;
            }
            if !self.started {
                self.started = true;
                steps.push(ChatStep::Start(chunk.clone()));
            }
            if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
                steps.push(ChatStep::Usage(usage.clone()));
            }
            let Some(choice) = chunk.pointer("/choices/0") else { continue };
            steps.extend(thinking_steps(choice.get("delta"), self.details));
            if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                self.tool = None;
                steps.push(ChatStep::Text(text.to_string()));
            }
            if let Some(text) = choice.pointer("/delta/refusal").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                self.tool = None;
                steps.push(ChatStep::Refusal(text.to_string()));
            }
            for call in choice.pointer("/delta/tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
                // A new call: another index, or another id (some upstreams repeat the id on every delta).
                let new = match &self.tool {
                    Some((i, current)) => *i != index || (!id.is_empty() && id != current),
                    None => true,
                };
                if new {
                    self.tool = Some((index, id.to_string()));
                    let (id, name) = (
                        call.get("id").cloned().unwrap_or_default(),
                        call.pointer("/function/name").cloned().unwrap_or_default(),
                    );
                    steps.push(ChatStep::ToolStart { id, name });
                }
                if let Some(args) =
                    call.pointer("/function/arguments").and_then(Value::as_str).filter(|a| !a.is_empty())
                {
                    steps.push(ChatStep::ToolArgs(args.to_string()));
                }
            }
            if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
                if choice.get("native_finish_reason").and_then(Value::as_str) == Some("stop_sequence") {
                    steps.push(ChatStep::StopSequence(choice.get("stop_sequence").filter(|s| s.is_string()).cloned()));
                }
                steps.push(ChatStep::Finish(finish.to_string()));
            }
        }
        steps
    }
}

/// A delta's thinking: from its `reasoning_details` when it has them (they carry signatures), else
/// from its `reasoning` text.
fn thinking_steps(delta: Option<&Value>, with_details: bool) -> Vec<ChatStep> {
    let Some(delta) = delta else { return Vec::new() };
    let field = |d: &Value, f: &str| d.get(f).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    // An empty list (OpenRouter sends one beside content) is no details: the text, if any, is in `reasoning`.
    let Some(details) = delta.get("reasoning_details").and_then(Value::as_array).filter(|d| !d.is_empty()) else {
        return field(delta, "reasoning").map(ChatStep::Thinking).into_iter().collect();
    };
    let mut steps = if with_details { vec![ChatStep::Details(details.clone())] } else { Vec::new() };
    for detail in details {
        match detail.get("type").and_then(Value::as_str) {
            Some("reasoning.text") => {
                steps.extend(field(detail, "text").map(ChatStep::Thinking));
                steps.extend(field(detail, "signature").map(ChatStep::Signature));
            }
            // Only Anthropic's is redacted thinking (another provider's encrypted reasoning has no such block).
            Some("reasoning.encrypted")
                if matches!(
                    detail.get("format").and_then(Value::as_str),
                    None | Some(super::reasoning::ANTHROPIC_FORMAT)
                ) =>
            {
                steps.extend(field(detail, "data").map(ChatStep::Redacted))
            }
            _ => {}
        }
    }
    steps
}

/// One OpenAI SSE event.
pub fn data_event(payload: &str) -> Vec<u8> {
    format!("data: {payload}\n\n").into_bytes()
}

#[cfg(test)]
mod tests {

    #[test]
    fn data_lines_survive_any_chunking_and_skip_other_fields() {
        let stream = b"event: ping\r\ndata: {\"a\":1}\r\n\n: comment\ndata: two\n\n";
        for size in 1..stream.len() {
            let mut lines = DataLines::default();
            let got: Vec<String> = stream.chunks(size).flat_map(|c| lines.feed(c)).collect();
            assert_eq!(got, ["{\"a\":1}", "two"], "chunks of {size}");
        }
        assert_eq!(data_event("[DONE]"), b"data: [DONE]\n\n");
    }

    use super::*;

    const STREAM: &str = ": OPENROUTER PROCESSING\n\n\
        data: {\"id\":\"gen-1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n\
        data: {\"id\":\"gen-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n\
        data: {\"id\":\"gen-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"cost\":0.00042,\"is_byok\":false,\"cost_details\":{\"upstream_inference_cost\":null}}}\n\n\
        data: [DONE]\n\n";

    #[test]
    fn hides_usage_from_a_client_that_said_no_but_still_notes_it() {
        let mut relay = SseRelay::new().hiding_usage(true);
        let out = String::from_utf8(relay.feed(STREAM.as_bytes())).expect("utf8");
        assert!(!out.contains("usage"), "{out}");
        assert!(out.contains("[DONE]"));
        assert_eq!(relay.summary().usage.as_ref().map(|u| u.completion_tokens), Some(2));
        assert_eq!(relay.summary().id.as_deref(), Some("gen-1"));
    }

    #[test]
    fn forwards_everything_and_finds_the_usage_chunk() {
        let mut relay = SseRelay::new();
        let out = relay.feed(STREAM.as_bytes());
        assert_eq!(out, STREAM.as_bytes());
        assert!(relay.finish(Some("{}")).is_empty(), "a finished stream gets no error event");
        let s = relay.summary();
        assert!(s.done);
        assert_eq!(s.events, 3);
        assert_eq!(s.content_bytes, 5);
        let usage = s.usage.as_ref().expect("usage chunk");
        assert_eq!((usage.prompt_tokens, usage.completion_tokens, usage.cost), (9, 2, Some(0.00042)));
    }

    #[test]
    fn a_line_that_never_ends_is_bounded() {
        let mut line = OpenLine::default();
        let piece = vec![b'x'; MAX_LINE_BYTES / 2];
        assert!(line.fits(&piece) && line.fits(&piece), "at the bound");
        assert!(!line.fits(b"x"), "past it");
        let mut line = OpenLine::default();
        assert!(line.fits(&piece) && line.fits(b"\ndata: {}") && line.fits(&piece), "a newline starts the count again");
    }

    #[test]
    fn an_upstream_id_is_kept_only_when_short_and_printable() {
        assert_eq!(upstream_id(Some("gen-1".into())).as_deref(), Some("gen-1"));
        assert_eq!(upstream_id(Some("x".repeat(257))), None);
        assert_eq!(upstream_id(Some("a b".into())), None);
        assert_eq!(upstream_id(Some(String::new())), None);
    }

    #[test]
    fn a_later_usage_that_counts_nothing_does_not_undo_the_report() {
        let mut relay = SseRelay::new();
        relay.feed(STREAM.as_bytes());
        let shown = relay.feed(b"data: {\"choices\":[],\"usage\":{}}\n\n");
        assert!(!String::from_utf8_lossy(&shown).contains("usage"), "not shown to the client as a report");
        relay.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":-1}}\n\n");
        let usage = relay.summary().usage.as_ref().expect("usage kept");
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (9, 2));
        let mut empty = SseRelay::new();
        empty.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":{}}\n\n");
        assert!(empty.summary().usage.is_none(), "no report: charged as a stream whose usage never came");
    }

    #[test]
    fn chunk_boundaries_anywhere_give_the_same_bytes_and_summary() {
        let whole = {
            let mut r = SseRelay::new();
            r.feed(STREAM.as_bytes());
            r.summary().clone()
        };
        for size in [1, 2, 3, 7, 16, 64] {
            let mut relay = SseRelay::new();
            let mut out = Vec::new();
            for piece in STREAM.as_bytes().chunks(size) {
                out.extend(relay.feed(piece));
            }
            assert_eq!(out, STREAM.as_bytes(), "chunk size {size}");
            assert_eq!(relay.summary(), &whole, "chunk size {size}");
        }
    }

    #[test]
    fn handles_crlf_and_tool_call_arguments() {
        let mut relay = SseRelay::new();
        relay.feed(b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\r\n\r\n");
        assert_eq!(relay.summary().content_bytes, 1 + 7);
    }

    #[test]
    fn a_cut_stream_drops_the_partial_line_and_ends_with_error_then_done() {
        let mut relay = SseRelay::new();
        let out = relay.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"choi");
        assert!(out.ends_with(b"\n\n"));
        assert!(!String::from_utf8_lossy(&out).contains("choi\""), "partial line held back");
        let tail = relay.finish(Some(r#"{"error":{"message":"cut"}}"#));
        assert_eq!(tail, b"data: {\"error\":{\"message\":\"cut\"}}\n\ndata: [DONE]\n\n");
        assert_eq!(relay.summary().content_bytes, 2);
    }

    #[test]
    fn reports_the_gateways_cost_in_the_usage_chunk_whatever_the_chunking() {
        for size in [1, 5, 13, STREAM.len()] {
            let mut relay = SseRelay::reporting_cost(
                Box::new(|u: &Usage, _: Option<&str>| u.completion_tokens as f64 * 0.5),
                size != 1,
            );
            let mut out = Vec::new();
            for piece in STREAM.as_bytes().chunks(size) {
                out.extend(relay.feed(piece));
            }
            let text = String::from_utf8(out).expect("utf8");
            let usage_line = text.lines().find(|l| l.contains("\"usage\"")).expect("usage line");
            let event: Value = serde_json::from_str(&usage_line[6..]).expect("json");
            assert_eq!(event["usage"]["cost"], 1.0, "chunk size {size}");
            if size == 1 {
                for hidden in ["upstream_cost", "cost_details", "is_byok"] {
                    assert!(event["usage"].get(hidden).is_none(), "the tenant's cost is not shown: {hidden}");
                }
            } else {
                assert_eq!(event["usage"]["upstream_cost"], 0.00042);
                assert!(event["usage"]["cost_details"].is_object());
            }
            assert_eq!(text.lines().filter(|l| l.starts_with("data: ")).count(), 4, "no event lost or split");
            assert!(text.ends_with("data: [DONE]\n\n"));
            assert_eq!(relay.summary().usage.as_ref().map(|u| u.completion_tokens), Some(2));
        }
    }

    #[test]
    fn records_an_upstream_error_event() {
        let mut relay = SseRelay::new();
        relay.feed(b"data: {\"error\":{\"code\":502,\"message\":\"provider down\"}}\n\n");
        assert_eq!(relay.summary().upstream_error.as_ref().map(|e| e["code"].clone()), Some(502.into()));
    }
}
