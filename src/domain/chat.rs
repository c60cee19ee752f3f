//! The inbound chat request: just enough structure to validate, route and
//! bill it, while every other field passes through unchanged.

use serde_json::{Map, Value};

use super::InvalidRequest;

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];
const MAX_MODEL_LEN: usize = 256;
/// The fields of a chat request the upstream reads, and bills, as input.
const PROMPT_FIELDS: [&str; 5] = ["messages", "tools", "functions", "response_format", "prediction"];
/// Chat-template tokens allowed per message on top of its text.
const PER_MESSAGE_TOKENS: u64 = 8;
/// Tokens allowed for a request with tools, on top of their JSON: the system prompt a provider adds to
/// explain tool use (Anthropic bills 313 to 346 tokens for it on Claude 4, up to 530 on older models).
const TOOL_USE_TOKENS: u64 = 800;
/// The smallest thinking budget Anthropic takes (`thinking.budget_tokens`).
const MIN_THINKING_BUDGET: u64 = 1_024;
/// Tokens allowed per image part (a high-detail image costs up to a few thousand).
const PER_IMAGE_TOKENS: u64 = 4_000;
/// Tokens allowed per image part for GPT-4o mini, which bills an image at 2,833 tokens plus 5,667 a
/// 512-pixel tile, up to eight tiles (a 768 × 2048 image after OpenAI's scaling): 48,169.
const PER_IMAGE_TOKENS_4O_MINI: u64 = 48_200;
/// Tokens allowed per file part. A document (a PDF) is billed per page, its text and the page as an
/// image: Anthropic about 1,500 to 3,000 tokens a page, up to 100 pages; Gemini 258 a page, up to 1,000.
/// Neither the file's bytes (a page can take a few dozen, or nothing in a compressed object stream) nor
/// anything short of reading the document bounds its pages, so a file is held at the most it can cost.
pub const PER_FILE_TOKENS: u64 = 300_000;
const _: () = assert!(PER_FILE_TOKENS >= 100 * 3_000, "Anthropic's 100 pages at its dearest");
/// Whether `text` begins with `prefix` as a URL's scheme and a MIME type are read: after leading white
/// space, in any case (`DATA:Video/mp4`, ` HTTPS://` are what they say to a provider).
fn starts(text: &str, prefix: &str) -> bool {
    text.trim_start().get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// Content parts carrying a video (OpenRouter's `video_url`, and the spellings of other APIs).
const VIDEO_PARTS: [&str; 3] = ["video_url", "input_video", "video"];
/// Content parts carrying an image.
const IMAGE_PARTS: [&str; 2] = ["image_url", "input_image"];
/// Content parts that carry audio (priced per audio token, apart from text).
const AUDIO_PARTS: [&str; 3] = ["input_audio", "audio", "audio_url"];
/// OpenAI service tiers billed at the price table's (standard) rates.
const STANDARD_TIERS: [&str; 2] = ["auto", "default"];
/// Tools the client runs (the upstream only asks for a call): every other kind runs upstream, billed per use.
const CLIENT_TOOLS: [&str; 2] = ["function", "custom"];
/// `tool_choice` objects that name the client's own tools.
const CLIENT_TOOL_CHOICES: [&str; 3] = ["function", "custom", "allowed_tools"];

/// Every `cache_control` in `v` asking for a cache life other than the default five minutes (an hour) is
/// served as five minutes, its `ttl` dropped: Anthropic bills a one-hour cache write at twice the input
/// price, above the price table's cache-write price, and OpenRouter does not report which writes were
/// which. The answer is the same; only the cache lives shorter (docs/decisions.md).
fn shorten_cache_lives(o: &mut Map<String, Value>) {
    if let Some(Value::Object(cache_control)) = o.get_mut("cache_control") {
        if cache_control.get("ttl").is_some_and(|t| t.as_str() != Some("5m")) {
            cache_control.remove("ttl");
        }
    }
    o.values_mut().for_each(shorten_cache_lives_in);
}

fn shorten_cache_lives_in(v: &mut Value) {
    match v {
        Value::Object(o) => shorten_cache_lives(o),
        Value::Array(a) => a.iter_mut().for_each(shorten_cache_lives_in),
        _ => {}
    }
}

/// Audio in or out: audio tokens are priced apart from text (for OpenAI's audio models, 16 times the text
/// input price), at rates the price table does not hold.
fn unpriced_audio(param: &str) -> InvalidRequest {
    InvalidRequest::param(
        "audio in or out (or a video in a file) is billed per audio token or second at a price the price table does not hold, so it is not accepted",
        param,
    )
}

/// The parts in `v` whose `type` is one of `types`.
fn count_parts(v: &Value, types: &[&str]) -> u64 {
    match v {
        Value::Object(o) => {
            u64::from(o.get("type").and_then(Value::as_str).is_some_and(|t| types.contains(&t)))
                + o.values().map(|v| count_parts(v, types)).sum::<u64>()
        }
        Value::Array(a) => a.iter().map(|v| count_parts(v, types)).sum(),
        _ => 0,
    }
}

/// A validated chat completion request. `body` is the client's JSON object,
/// kept whole so unknown fields reach the upstream as they were sent.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub stream: bool,
    /// The output bound: the smaller of `max_tokens` and `max_completion_tokens` when both are set.
    pub max_tokens: Option<u64>,
    /// The client set `stream_options.include_usage: false`: the usage chunk the
    /// gateway asks for anyway (to bill from it) is not passed on.
    pub hide_usage: bool,
    /// OpenRouter's `models`: the models to try after `model`, in order (without `model` itself).
    pub fallbacks: Vec<String>,
    /// Anthropic's `anthropic-beta` header as the client sent it: forwarded to Anthropic only.
    pub anthropic_beta: Option<String>,
    /// Anthropic's own id for `model`, when the client named the model so and the gateway read it as the
    /// price table's (`claude-sonnet-4-5-20250929` for `anthropic/claude-sonnet-4.5`): what a direct
    /// Anthropic route sends (`routing::send_as_asked`).
    pub asked_as: Option<String>,
    pub body: Map<String, Value>,
}

/// An end user's id as the gateway keeps it: trimmed, at most 256 characters, no control characters;
/// anything else is no id.
pub fn end_user_id(raw: Option<&str>) -> Option<String> {
    let id = raw?.trim();
    (!id.is_empty() && id.chars().count() <= 256 && !id.chars().any(char::is_control)).then(|| id.to_string())
}

/// The largest output bound accepted (far above any model's; keeps token arithmetic in range).
pub const MAX_OUTPUT_TOKENS: u64 = 100_000_000;

/// At most this many ids in `models`.
pub const MAX_FALLBACK_MODELS: usize = 8;

impl ChatRequest {
    /// Parses and validates raw body bytes, OpenAI-style.
    pub fn parse(bytes: &[u8]) -> Result<Self, InvalidRequest> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| InvalidRequest::new(format!("request body is not valid JSON: {e}")))?;
        let Value::Object(mut body) = value else {
            return Err(InvalidRequest::new("request body must be a JSON object"));
        };
        shorten_cache_lives(&mut body);
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.trim().is_empty() && m.len() <= MAX_MODEL_LEN => m.clone(),
            Some(Value::String(_)) => {
                return Err(InvalidRequest::param(
                    "`model` must be a non-empty model id of at most 256 characters",
                    "model",
                ))
            }
            Some(_) => return Err(InvalidRequest::param("`model` must be a string", "model")),
            None => return Err(InvalidRequest::param("you must provide a `model` parameter", "model")),
        };
        validate_messages(body.get("messages"))?;
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(InvalidRequest::param("`stream` must be a boolean", "stream")),
        };
        let max_tokens = match (positive_int(&body, "max_completion_tokens")?, positive_int(&body, "max_tokens")?) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // The reservation covers one choice: several would cost several times what is held.
        if body.get("n").is_some_and(|n| !n.is_null() && n.as_u64() != Some(1)) {
            return Err(InvalidRequest::param(
                "`n` must be 1: the gateway reserves and bills one choice per request",
                "n",
            ));
        }
        let fallbacks = fallback_models(body.get("models"), &model)?;
        let hide_usage =
            body.get("stream_options").and_then(|o| o.get("include_usage")).is_some_and(|v| v == &Value::Bool(false));
        Ok(Self { model, stream, max_tokens, hide_usage, fallbacks, anthropic_beta: None, asked_as: None, body })
    }

    /// Who the calling application serves: `header` (`X-Tollgate-End-User`, set by the application
    /// itself), else `safety_identifier`, else `user` (fields a client passed through may have set).
    pub fn end_user(&self, header: Option<&str>) -> Option<String> {
        let field = |f: &str| end_user_id(self.body.get(f).and_then(Value::as_str));
        end_user_id(header).or_else(|| field("safety_identifier")).or_else(|| field("user"))
    }

    /// Inline files (PDFs) for a model that cannot read them are parsed by OpenRouter, by default with a
    /// paid OCR engine whose fee is not in the tokens: such a request asks for OpenRouter's free engine. The
    /// models of providers that read PDFs themselves (Anthropic, Google, OpenAI) get them as they are
    /// (billed as input tokens, which the prompt's bound covers). Other routes drop `plugins`.
    pub fn parse_files_free(&mut self) {
        let native = |m: &str| ["anthropic/", "google/", "openai/"].iter().any(|p| m.starts_with(p));
        let files = self.body.get("messages").map_or(0, |m| count_parts(m, &["file"]));
        let all_native = native(&self.model) && self.fallbacks.iter().all(|m| native(m));
        let chosen = self.body.get("plugins").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
        if files > 0 && !all_native && !chosen {
            self.body.insert(
                "plugins".into(),
                serde_json::json!([{"id": "file-parser", "pdf": {"engine": "cloudflare-ai"}}]),
            );
        }
    }

    /// Refuses what would cost more than the price table can price: OpenRouter's
    /// `plugins` (web search, file parsing), `web_search_options`, a preset, files by
    /// URL (parsed upstream for a fee), videos (billed per second of video, which
    /// neither their URL nor their bytes bound, also as an image part's data URL). The
    /// reservation must bound every cost.
    pub fn refuse_unpriced_fees(&self) -> Result<(), InvalidRequest> {
        let unpriced = |param: &str, what: &str| {
            InvalidRequest::param(
                format!(
                    "`{param}` ({what}) adds per-request fees the gateway cannot price or bound, so it is not accepted"
                ),
                param,
            )
        };
        if self.body.get("plugins").is_some_and(|p| p.as_array().is_none_or(|list| !list.is_empty())) {
            return Err(unpriced("plugins", "OpenRouter plugins such as web search or file parsing"));
        }
        if self.body.get("web_search_options").is_some_and(|v| !v.is_null()) {
            return Err(unpriced("web_search_options", "web search"));
        }
        // A preset may choose models and settings the gateway never sees: it could neither price them
        // nor hold them to an allowlist.
        if self.body.get("preset").is_some_and(|v| !v.is_null()) {
            return Err(InvalidRequest::param(
                "`preset` (an OpenRouter preset) chooses models the gateway cannot see, price or allow, so it is not accepted: send the model and settings themselves",
                "preset",
            ));
        }
        // OpenRouter reads `prompt` as input too (its completions field), but the gateway counts `messages` only.
        if self.body.get("prompt").is_some_and(|v| !v.is_null()) {
            return Err(InvalidRequest::param(
                "`prompt` is not a chat field: send it as a message (or use /v1/completions)",
                "prompt",
            ));
        }
        // OpenAI bills `priority` at about twice the standard price and `flex` at half: the table holds one.
        if let Some(tier) = self.body.get("service_tier").filter(|v| !v.is_null()) {
            if !tier.as_str().is_some_and(|t| STANDARD_TIERS.contains(&t)) {
                return Err(InvalidRequest::param(
                    "`service_tier` other than \"auto\" or \"default\" is billed at a price the price table does not hold (priority processing costs about twice the standard price), so it is not accepted",
                    "service_tier",
                ));
            }
        }
        // OpenRouter's server tools (`openrouter:web_search`, `openrouter:web_fetch`, image generation…) run
        // upstream, as often as the model likes, each use billed on top of the tokens.
        let tools = self.body.get("tools").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        for (i, tool) in tools.iter().enumerate() {
            if !tool.get("type").and_then(Value::as_str).is_some_and(|t| CLIENT_TOOLS.contains(&t)) {
                return Err(InvalidRequest::param(
                    format!(
                        "`tools[{i}]` is not a `function` or `custom` tool: a tool the upstream runs itself (such as OpenRouter's web search) adds per-use fees the gateway cannot price or bound, so it is not accepted"
                    ),
                    format!("tools[{i}]"),
                ));
            }
        }
        let choice = self.body.get("tool_choice").filter(|c| c.is_object());
        if choice
            .is_some_and(|c| !c.get("type").and_then(Value::as_str).is_some_and(|t| CLIENT_TOOL_CHOICES.contains(&t)))
        {
            return Err(InvalidRequest::param(
                "`tool_choice` may name a `function` or `custom` tool (or `allowed_tools`): a tool the upstream runs itself adds per-use fees the gateway cannot price or bound, so it is not accepted",
                "tool_choice",
            ));
        }
        // Generated images are billed at their own output rate (about twelve times text's on Gemini), which the
        // table's one output price does not hold.
        if self.body.get("modalities").and_then(Value::as_array).is_some_and(|m| m.iter().any(|x| x == "image")) {
            return Err(InvalidRequest::param(
                "`modalities` asks for images, billed at an output rate the price table does not hold, so it is not accepted",
                "modalities",
            ));
        }
        let audio_out =
            self.body.get("modalities").and_then(Value::as_array).is_some_and(|m| m.iter().any(|x| x == "audio"));
        if audio_out || self.body.get("audio").is_some_and(|v| !v.is_null()) {
            return Err(unpriced_audio(if audio_out { "modalities" } else { "audio" }));
        }
        let messages = self.body.get("messages").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        for (i, message) in messages.iter().enumerate() {
            let parts = message.get("content").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            for (j, part) in parts.iter().enumerate() {
                if part.get("type").and_then(Value::as_str).is_some_and(|t| AUDIO_PARTS.contains(&t)) {
                    return Err(unpriced_audio(&format!("messages[{i}].content[{j}]")));
                }
                if part.get("type").and_then(Value::as_str).is_some_and(|t| VIDEO_PARTS.contains(&t)) {
                    return Err(InvalidRequest::param(
                        "a video costs prompt tokens per second of video, which the gateway cannot bound before the call, so it is not accepted",
                        format!("messages[{i}].content[{j}]"),
                    ));
                }
                // An image part carries any data URL on to a provider that reads it by its type (Gemini takes
                // `data:video/mp4` as a video): only an image is held as one.
                let kind = part.get("type").and_then(Value::as_str);
                let image = part.get("image_url").and_then(|u| u.as_str().or_else(|| u.get("url")?.as_str()));
                if kind.is_some_and(|t| IMAGE_PARTS.contains(&t))
                    && image.is_some_and(|url| starts(url, "data:") && !starts(url, "data:image/"))
                {
                    return Err(InvalidRequest::param(
                        "an image part's data URL must hold an image (`data:image/…`): another type (a video, a document) is billed in ways the gateway cannot bound before the call",
                        format!("messages[{i}].content[{j}]"),
                    ));
                }
                let file = part.get("file").filter(|_| kind == Some("file"));
                let data = || ["file_data", "url"].into_iter().filter_map(|f| file?.get(f)?.as_str());
                // A file is held as a document; audio or video in one is billed as such.
                if data().any(|d| starts(d, "data:audio/") || starts(d, "data:video/")) {
                    return Err(unpriced_audio(&format!("messages[{i}].content[{j}].file")));
                }
                if data().any(|d| starts(d, "http://") || starts(d, "https://")) {
                    return Err(unpriced(
                        &format!("messages[{i}].content[{j}].file"),
                        "a file fetched and parsed by URL",
                    ));
                }
            }
        }
        Ok(())
    }

    /// An estimate of the prompt's tokens, for a client that asks for a count (`count_tokens` where the
    /// provider is not asked), not for holding money (that is `prompt_token_bound`): a token for every four
    /// bytes of the input fields' text, an inline image or file's data left out and counted as a typical one
    /// instead (an image about 1,600 tokens, as Anthropic counts a 1,092-pixel square; a file 3,000, a page
    /// of a PDF), and each message's template tokens.
    pub fn prompt_token_estimate(&self) -> u64 {
        fn text_bytes(v: &Value) -> u64 {
            match v {
                Value::String(s) if s.trim_start().get(..5).is_some_and(|p| p.eq_ignore_ascii_case("data:")) => 0,
                Value::String(s) => s.len() as u64,
                Value::Array(a) => a.iter().map(text_bytes).sum(),
                Value::Object(o) => o.iter().map(|(k, v)| k.len() as u64 + text_bytes(v)).sum(),
                other => other.to_string().len() as u64,
            }
        }
        let text: u64 = PROMPT_FIELDS.iter().filter_map(|f| self.body.get(*f)).map(text_bytes).sum();
        let messages = self.body.get("messages").and_then(Value::as_array).map_or(0, |m| m.len() as u64);
        let parts = |types: &[&str]| self.body.get("messages").map_or(0, |m| count_parts(m, types));
        text.div_ceil(4) + 3 * messages + 1_600 * parts(&IMAGE_PARTS) + 3_000 * parts(&["file"])
    }

    /// `prompt_token_bound`, cut to the model's context length when it has one (no model reads more than
    /// its context; a file's allowance can pass it).
    /// `served_as`: the model an operator's route pin sends the request to, when it has one (an alias
    /// pinned to `gpt-4o-mini` bills images as that model does).
    pub fn prompt_token_bound_within(&self, context_length: Option<u64>, served_as: Option<&str>) -> u64 {
        self.prompt_bound(served_as).min(context_length.unwrap_or(u64::MAX))
    }

    /// An upper bound on the prompt's tokens: a token is at least one byte, so
    /// the UTF-8 size as JSON of every field the upstream reads as input (the
    /// messages, tools, a structured output's schema, a predicted output) bounds
    /// their text; each message gets a small allowance for the chat template, each
    /// image and each file (a document billed per page) a fixed allowance.
    pub fn prompt_token_bound(&self) -> u64 {
        self.prompt_bound(None)
    }

    fn prompt_bound(&self, served_as: Option<&str>) -> u64 {
        let size =
            |field: &str| self.body.get(field).map_or(0, |v| serde_json::to_vec(v).map_or(0, |b| b.len() as u64));
        let messages = self.body.get("messages").and_then(Value::as_array).map_or(0, |m| m.len() as u64);
        let parts = |types: &[&str]| self.body.get("messages").map_or(0, |m| count_parts(m, types));
        let (images, files) = (parts(&IMAGE_PARTS), parts(&["file"]));
        let text: u64 = PROMPT_FIELDS.iter().map(|f| size(f)).sum();
        let listed = |field: &str| self.body.get(field).and_then(Value::as_array).is_some_and(|l| !l.is_empty());
        let tool_use = if listed("tools") || listed("functions") { TOOL_USE_TOKENS } else { 0 };
        // The dearest any model the request may use bills an image (a fallback too).
        let models = std::iter::once(self.model.as_str()).chain(self.fallbacks.iter().map(String::as_str));
        let per_image = match models.chain(served_as).any(|m| m.contains("gpt-4o-mini")) {
            true => PER_IMAGE_TOKENS_4O_MINI,
            false => PER_IMAGE_TOKENS,
        };
        text + tool_use + PER_MESSAGE_TOKENS * messages + per_image * images + PER_FILE_TOKENS * files
    }

    /// Sets the output bound sent upstream: every spelling the client used (both, when it
    /// set both), else `max_tokens`. Only what was reserved is ever asked for.
    ///
    /// A thinking budget (`reasoning.max_tokens`) the lower bound would no longer hold is lowered
    /// with it: Anthropic refuses a budget not under `max_tokens`. A Claude model's thinking is turned
    /// off when less than `MIN_THINKING_BUDGET` is left (Anthropic refuses a budget under 1,024
    /// tokens); another model's is not (OpenRouter refuses turning off a model that must reason). A
    /// budget the client itself set at or above its own `max_tokens` (Anthropic's interleaved
    /// thinking allows it) is its own.
    pub fn cap_output(&mut self, max_tokens: u64) {
        let lowered = self.max_tokens.is_none_or(|asked| max_tokens < asked);
        let fields: Vec<&str> =
            ["max_completion_tokens", "max_tokens"].into_iter().filter(|f| self.body.contains_key(*f)).collect();
        for field in if fields.is_empty() { vec!["max_tokens"] } else { fields } {
            self.body.insert(field.into(), Value::from(max_tokens));
        }
        self.max_tokens = Some(max_tokens);
        let Some(reasoning) = self.body.get_mut("reasoning").and_then(Value::as_object_mut) else { return };
        let budget = reasoning.get("max_tokens").and_then(Value::as_u64);
        if lowered && budget.is_some_and(|b| b >= max_tokens) {
            let claude = self.model.starts_with("anthropic/") || self.model.contains("claude");
            if max_tokens > MIN_THINKING_BUDGET || !claude {
                reasoning.insert("max_tokens".into(), Value::from(max_tokens.saturating_sub(1).max(1)));
            } else {
                reasoning.remove("max_tokens");
                reasoning.insert("enabled".into(), Value::Bool(false));
            }
        }
    }
}

/// Sets `stream_options.include_usage: true` in a stream's upstream body, whatever the client sent
/// there (`false`, `null`, not an object): the charge is made from the usage chunk.
pub fn ask_for_usage(body: &mut Map<String, Value>) {
    let options = body.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
    if !options.is_object() {
        *options = Value::Object(Map::new());
    }
    if let Some(options) = options.as_object_mut() {
        options.insert("include_usage".into(), Value::Bool(true));
    }
}

fn fallback_models(models: Option<&Value>, model: &str) -> Result<Vec<String>, InvalidRequest> {
    let invalid = || {
        InvalidRequest::param(format!("`models` must be an array of at most {MAX_FALLBACK_MODELS} model ids"), "models")
    };
    let list = match models {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) if list.len() <= MAX_FALLBACK_MODELS => list,
        Some(_) => return Err(invalid()),
    };
    let mut fallbacks: Vec<String> = Vec::new();
    for id in list {
        let id = id.as_str().filter(|m| !m.trim().is_empty() && m.len() <= MAX_MODEL_LEN).ok_or_else(invalid)?;
        if id != model && !fallbacks.iter().any(|f| f == id) {
            fallbacks.push(id.to_string());
        }
    }
    Ok(fallbacks)
}

pub(crate) fn positive_int(body: &Map<String, Value>, field: &str) -> Result<Option<u64>, InvalidRequest> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v > MAX_OUTPUT_TOKENS => {
                Err(InvalidRequest::param(format!("`{field}` must be at most {MAX_OUTPUT_TOKENS}"), field))
            }
            Some(v) if v > 0 => Ok(Some(v)),
            _ => Err(InvalidRequest::param(format!("`{field}` must be a positive integer"), field)),
        },
        Some(_) => Err(InvalidRequest::param(format!("`{field}` must be a positive integer"), field)),
    }
}

fn validate_messages(messages: Option<&Value>) -> Result<(), InvalidRequest> {
    let list = match messages {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => {
            return Err(InvalidRequest::param("`messages` must contain at least one message", "messages"))
        }
        Some(_) => return Err(InvalidRequest::param("`messages` must be an array", "messages")),
        None => return Err(InvalidRequest::param("you must provide a `messages` parameter", "messages")),
    };
    for (i, message) in list.iter().enumerate() {
        let param = || format!("messages[{i}]");
        let Value::Object(m) = message else {
            return Err(InvalidRequest::param(format!("`messages[{i}]` must be an object"), param()));
        };
        match m.get("role") {
            Some(Value::String(role)) if ROLES.contains(&role.as_str()) => {}
            Some(Value::String(role)) => {
                return Err(InvalidRequest::param(
                    format!(
                        "`messages[{i}].role` is `{role}`; expected one of system, developer, user, assistant, tool"
                    ),
                    format!("messages[{i}].role"),
                ))
            }
            _ => {
                return Err(InvalidRequest::param(
                    format!("`messages[{i}].role` is required"),
                    format!("messages[{i}].role"),
                ))
            }
        }
        match m.get("content") {
            None | Some(Value::Null | Value::String(_) | Value::Array(_)) => {}
            Some(_) => {
                return Err(InvalidRequest::param(
                    format!("`messages[{i}].content` must be a string or an array of content parts"),
                    format!("messages[{i}].content"),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ChatRequest, InvalidRequest> {
        ChatRequest::parse(json.as_bytes())
    }

    #[test]
    fn the_end_user_is_the_header_else_the_safety_identifier_else_the_user() {
        let both = parse(
            r#"{"model":"m","safety_identifier":"s-1","user":"u-1","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .expect("valid");
        assert_eq!(both.end_user(Some("h-1")).as_deref(), Some("h-1"), "the application's header wins");
        assert_eq!(both.end_user(None).as_deref(), Some("s-1"));
        let user = parse(r#"{"model":"m","user":" u-1 ","messages":[{"role":"user","content":"hi"}]}"#).expect("valid");
        assert_eq!(user.end_user(None).as_deref(), Some("u-1"));
        assert_eq!(user.end_user(Some("\u{7}")).as_deref(), Some("u-1"), "an unusable id gives way");
        assert_eq!(end_user_id(Some(&"x".repeat(300))), None);
        assert_eq!(
            end_user_id(Some(&"用".repeat(256))).map(|id| id.chars().count()),
            Some(256),
            "characters, not bytes"
        );
        assert_eq!(end_user_id(Some(&"用".repeat(257))), None);
    }

    #[test]
    fn prompt_bound_counts_a_schema_and_a_prediction() {
        let plain = parse(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).expect("valid");
        let schema = format!(
            r#"{{"type":"json_schema","json_schema":{{"name":"s","schema":{{"description":"{}"}}}}}}"#,
            "x".repeat(5_000)
        );
        let prediction = format!(r#"{{"type":"content","content":"{}"}}"#, "y".repeat(3_000));
        let json = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"response_format":{schema},"prediction":{prediction}}}"#
        );
        let big = parse(&json).expect("valid");
        assert_eq!(
            big.prompt_token_bound(),
            plain.prompt_token_bound() + schema.len() as u64 + prediction.len() as u64
        );
        // Tools: their JSON, and the tool-use system prompt a provider adds (once, however many tools).
        let tools = r#"[{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"g"}}]"#;
        let with_tools =
            parse(&format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"tools":{tools}}}"#))
                .expect("valid");
        assert_eq!(with_tools.prompt_token_bound(), plain.prompt_token_bound() + tools.len() as u64 + TOOL_USE_TOKENS);
        let none = parse(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[]}"#).expect("valid");
        assert_eq!(none.prompt_token_bound(), plain.prompt_token_bound() + 2, "an empty list is its two bytes");
    }

    #[test]
    fn the_models_list_gives_the_fallbacks_after_the_model() {
        let req =
            parse(r#"{"model":"a/x","models":["a/x","b/y","b/y","c/z"],"messages":[{"role":"user","content":"hi"}]}"#)
                .expect("valid");
        assert_eq!(req.fallbacks, ["b/y", "c/z"]);
        assert_eq!(req.body["models"].as_array().map(Vec::len), Some(4), "the body keeps the client's list");
        for bad in [r#""a/x""#, "[1]", r#"[""]"#, r#"["a","b","c","d","e","f","g","h","i"]"#] {
            let json = format!(r#"{{"model":"a/x","models":{bad},"messages":[{{"role":"user","content":"hi"}}]}}"#);
            assert_eq!(parse(&json).expect_err(bad).param.as_deref(), Some("models"), "{bad}");
        }
    }

    #[test]
    fn accepts_a_minimal_request_and_keeps_unknown_fields() {
        let req = parse(r#"{"model":"openai/gpt-4o","messages":[{"role":"user","content":"hi"}],"provider":{"order":["x"]},"max_tokens":7}"#)
            .expect("valid");
        assert_eq!(req.model, "openai/gpt-4o");
        assert!(!req.stream);
        assert_eq!(req.max_tokens, Some(7));
        assert_eq!(req.body["provider"]["order"][0], "x", "unknown fields are kept to pass on");
    }

    #[test]
    fn streams_always_ask_for_usage_and_remember_a_client_that_said_no() {
        let sent = |req: &ChatRequest| {
            let mut body = req.body.clone();
            ask_for_usage(&mut body);
            body
        };
        let req = parse(r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#).expect("valid");
        assert_eq!(sent(&req)["stream_options"]["include_usage"], true);
        assert!(!req.hide_usage);
        let req = parse(r#"{"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1},"messages":[{"role":"user","content":"hi"}]}"#)
            .expect("valid");
        assert_eq!(sent(&req)["stream_options"]["include_usage"], true, "the charge needs the upstream's usage");
        assert_eq!(sent(&req)["stream_options"]["x"], 1);
        assert!(req.hide_usage);
    }

    #[test]
    fn a_cut_stream_keeps_its_reported_prompt_and_the_larger_output() {
        let reported = Usage {
            prompt_tokens: 120_010,
            completion_tokens: 1,
            total_tokens: 120_011,
            cost: Some(0.5),
            prompt_tokens_details: Some(PromptDetails { cached_tokens: 0, cache_write_tokens: 120_000 }),
            completion_tokens_details: None,
        };
        let cut = reported.cut_short(500);
        assert_eq!((cut.prompt_tokens, cut.completion_tokens, cut.total_tokens), (120_010, 500, 120_510));
        assert_eq!(cut.tokens().cache_write, 120_000, "the cache write stays priced as one");
        assert_eq!(cut.cost, None, "a cost reported for part of the answer is not the answer's");
        assert_eq!(reported.cut_short(0).completion_tokens, 1, "the output reported so far, when more");
    }

    #[test]
    fn a_part_larger_than_its_whole_was_counted_beside_it() {
        let tokens = |json: &str| serde_json::from_str::<Usage>(json).expect("usage").tokens();
        // xAI: reasoning beside the completion (total = prompt + completion + reasoning).
        let xai = tokens(
            r#"{"prompt_tokens":10120,"completion_tokens":1499,"total_tokens":14428,"completion_tokens_details":{"reasoning_tokens":2809}}"#,
        );
        assert_eq!((xai.completion, xai.reasoning), (4308, 2809), "every output token priced");
        // Reasoning beside the completion but no larger: `total_tokens` tells (no jump at the completion's size).
        let smaller = tokens(
            r#"{"prompt_tokens":100,"completion_tokens":1000,"total_tokens":2000,"completion_tokens_details":{"reasoning_tokens":900}}"#,
        );
        assert_eq!(smaller.completion, 1900);
        // Cache tokens beside the prompt (Anthropic's own counting).
        let beside = tokens(
            r#"{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":50,"cache_write_tokens":20}}"#,
        );
        assert_eq!((beside.prompt, beside.cache_read, beside.cache_write), (80, 50, 20));
        // Parts within their whole (OpenAI's and OpenRouter's counting) are as reported.
        let within = tokens(
            r#"{"prompt_tokens":100,"completion_tokens":40,"prompt_tokens_details":{"cached_tokens":60},"completion_tokens_details":{"reasoning_tokens":30}}"#,
        );
        assert_eq!((within.prompt, within.completion, within.cache_read, within.reasoning), (100, 40, 60, 30));
    }

    #[test]
    fn a_usage_counting_no_prompt_is_no_report() {
        let counts = |json: &str| serde_json::from_str::<Usage>(json).expect("usage").counts();
        assert!(!counts("{}"));
        assert!(!counts(r#"{"prompt_tokens":0,"completion_tokens":0}"#));
        assert!(!counts(r#"{"prompt_tokens":-1,"completion_tokens":-1}"#));
        assert!(!counts(r#"{"completion_tokens":40}"#), "a report without its prompt is no report either");
        assert!(counts(r#"{"prompt_tokens":9,"completion_tokens":0}"#));
    }

    #[test]
    fn usage_counts_are_read_leniently_and_bounded() {
        let usage = |json: &str| serde_json::from_str::<Usage>(json).map(|u| u.tokens());
        let read = usage(
            r#"{"prompt_tokens":10.2,"completion_tokens":7,"total_tokens":null,"cost":null,
                "prompt_tokens_details":{"cached_tokens":null,"audio_tokens":0},
                "completion_tokens_details":{"reasoning_tokens":-3}}"#,
        )
        .expect("one odd field does not lose the usage");
        assert_eq!((read.prompt, read.completion, read.cache_read, read.reasoning), (11, 7, 0, 0));
        let huge = usage(r#"{"prompt_tokens":1e300,"completion_tokens":18446744073709551615}"#).expect("read");
        assert_eq!((huge.prompt, huge.completion), (MAX_TOKENS, MAX_TOKENS), "at most what every store sums exactly");
        assert!(usage(r#"{"prompt_tokens":"12"}"#).is_err(), "not a number is not a count");
        // The upstream's cost: an odd one is read as it can be, never losing the usage.
        let shown = |json: &str| serde_json::from_str::<Usage>(json).expect("usage kept").cost;
        assert_eq!(shown(r#"{"prompt_tokens":3,"cost":"0.0012"}"#), Some(0.0012));
        assert_eq!(shown(r#"{"prompt_tokens":3,"cost":{"total":1}}"#), None);
        assert_eq!(shown(r#"{"prompt_tokens":3,"cost":"NaN"}"#), None);
        assert_eq!(shown(r#"{"prompt_tokens":3,"cost":null}"#), None);
    }

    #[test]
    fn fees_the_price_table_cannot_bound_are_refused_naming_the_field() {
        let refused = |json: &str| parse(json).expect("valid").refuse_unpriced_fees().err().and_then(|e| e.param);
        let msg = r#""messages":[{"role":"user","content":"x"}]"#;
        assert_eq!(
            refused(&format!(r#"{{"model":"m",{msg},"plugins":[{{"id":"web"}}]}}"#)).as_deref(),
            Some("plugins")
        );
        assert_eq!(refused(&format!(r#"{{"model":"m",{msg},"plugins":[]}}"#)), None);
        assert_eq!(
            refused(&format!(r#"{{"model":"m",{msg},"web_search_options":{{}}}}"#)).as_deref(),
            Some("web_search_options")
        );
        let file = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"file","file":{"filename":"a.pdf","file_data":"https://x/a.pdf"}}]}]}"#;
        assert_eq!(refused(file).as_deref(), Some("messages[0].content[1].file"));
        let inline = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,AAAA"}}]}]}"#;
        assert_eq!(refused(inline), None);
        assert_eq!(refused(&format!(r#"{{"model":"m",{msg},"preset":"cheap"}}"#)).as_deref(), Some("preset"));
        assert_eq!(refused(&format!(r#"{{"model":"m",{msg},"prompt":"more input"}}"#)).as_deref(), Some("prompt"));
        // A scheme or a MIME type in another case, or after white space, is what it says.
        let part = |p: &str| format!(r#"{{"model":"m","messages":[{{"role":"user","content":[{p}]}}]}}"#);
        let odd = [
            r#"{"type":"image_url","image_url":{"url":"DATA:video/mp4;base64,AAAA"}}"#,
            r#"{"type":"file","file":{"file_data":"Data:Audio/wav;base64,AAAA"}}"#,
            r#"{"type":"file","file":{"file_data":" HTTPS://x/doc.pdf"}}"#,
            r#"{"type":"file","file":{"file_data":"data:application/pdf;base64,AAAA","url":"https://x/doc.pdf"}}"#,
        ];
        for p in odd {
            assert!(refused(&part(p)).is_some(), "{p}");
        }
        // The client's own tools pass; a server tool (billed per use upstream) is refused, named.
        let own = r#"[{"type":"function","function":{"name":"f"}},{"type":"custom","custom":{"name":"apply_patch"}}]"#;
        assert_eq!(refused(&format!(r#"{{"model":"m",{msg},"tools":{own},"tool_choice":"required"}}"#)), None);
        let server = r#"{"type":"openrouter:web_search"}"#;
        assert_eq!(
            refused(&format!(
                r#"{{"model":"m",{msg},"tools":[{{"type":"function","function":{{"name":"f"}}}},{server}]}}"#
            ))
            .as_deref(),
            Some("tools[1]")
        );
        assert_eq!(
            refused(&format!(r#"{{"model":"m",{msg},"tools":[{{"function":{{}}}}]}}"#)).as_deref(),
            Some("tools[0]")
        );
        let pick = |choice: &str| refused(&format!(r#"{{"model":"m",{msg},"tools":{own},"tool_choice":{choice}}}"#));
        assert_eq!(pick(r#"{"type":"function","function":{"name":"f"}}"#), None);
        assert_eq!(pick(r#"{"type":"allowed_tools","allowed_tools":{"mode":"auto","tools":[]}}"#), None);
        assert_eq!(pick(r#"{"type":"web_search_preview"}"#).as_deref(), Some("tool_choice"));
        let cached = |ttl: &str| {
            format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"text","text":"x","cache_control":{{"type":"ephemeral"{ttl}}}}}]}}]}}"#
            )
        };
        // An hour's cache life is served as five minutes, wherever it is asked for; five minutes stays.
        let life = |body: &str, at: &[&str]| {
            let chat = ChatRequest::parse(body.as_bytes()).expect("valid");
            assert_eq!(refused(body), None);
            let mut v = &Value::Object(chat.body.clone());
            for step in at {
                v = match step.parse::<usize>() {
                    Ok(i) => &v[i],
                    Err(_) => &v[*step],
                };
            }
            v["cache_control"].clone()
        };
        let part = ["messages", "0", "content", "0"];
        assert_eq!(life(&cached(r#","ttl":"1h""#), &part), serde_json::json!({"type": "ephemeral"}));
        assert_eq!(life(&cached(r#","ttl":"5m""#), &part), serde_json::json!({"type": "ephemeral", "ttl": "5m"}));
        assert_eq!(life(&cached(""), &part), serde_json::json!({"type": "ephemeral"}));
        let tool = r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"},"cache_control":{"type":"ephemeral","ttl":"1h"}}]}"#;
        assert_eq!(life(tool, &["tools", "0"]), serde_json::json!({"type": "ephemeral"}));
        let top = format!(r#"{{"model":"m",{msg},"cache_control":{{"type":"ephemeral","ttl":"1h"}}}}"#);
        assert_eq!(life(&top, &[]), serde_json::json!({"type": "ephemeral"}));
        let image = |url: &str| {
            format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"image_url","image_url":{{"url":"{url}"}}}}]}}]}}"#
            )
        };
        assert_eq!(refused(&image("data:video/mp4;base64,AAAA")).as_deref(), Some("messages[0].content[0]"));
        assert_eq!(refused(&image("data:application/pdf;base64,AAAA")).as_deref(), Some("messages[0].content[0]"));
        assert_eq!(refused(&image("data:image/png;base64,AAAA")), None);
        assert_eq!(refused(&image("https://x/y.png")), None);
        for tier in ["priority", "flex", "scale"] {
            let json = format!(r#"{{"model":"m",{msg},"service_tier":"{tier}"}}"#);
            assert_eq!(refused(&json).as_deref(), Some("service_tier"), "{tier}");
        }
        for tier in [r#""auto""#, r#""default""#, "null"] {
            assert_eq!(refused(&format!(r#"{{"model":"m",{msg},"service_tier":{tier}}}"#)), None, "{tier}");
        }
        assert_eq!(
            refused(&format!(r#"{{"model":"m",{msg},"modalities":["text","image"]}}"#)).as_deref(),
            Some("modalities")
        );
        assert_eq!(
            refused(&format!(r#"{{"model":"m",{msg},"modalities":["text","audio"]}}"#)).as_deref(),
            Some("modalities")
        );
        assert_eq!(refused(&format!(r#"{{"model":"m",{msg},"modalities":["text"]}}"#)), None);
        assert_eq!(
            refused(&format!(r#"{{"model":"m",{msg},"audio":{{"voice":"alloy","format":"wav"}}}}"#)).as_deref(),
            Some("audio")
        );
        let heard = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]}"#;
        assert_eq!(refused(heard).as_deref(), Some("messages[0].content[1]"));
        let filed = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"filename":"a.mp3","file_data":"data:audio/mpeg;base64,AAAA"}}]}]}"#;
        assert_eq!(refused(filed).as_deref(), Some("messages[0].content[0].file"));
        let input_image = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"input_image","image_url":"data:video/webm;base64,AA"}]}]}"#;
        assert_eq!(refused(input_image).as_deref(), Some("messages[0].content[0]"));
        for video in [
            r#"{"type":"video_url","video_url":{"url":"https://www.youtube.com/watch?v=x"}}"#,
            r#"{"type":"video_url","video_url":{"url":"data:video/mp4;base64,AAAA"}}"#,
            r#"{"type":"input_video","video_url":"https://x/v.mp4"}"#,
        ] {
            let json = format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"text","text":"x"}},{video}]}}]}}"#
            );
            assert_eq!(refused(&json).as_deref(), Some("messages[0].content[1]"), "{video}");
        }
    }

    #[test]
    fn an_inline_pdf_for_a_model_that_cannot_read_it_asks_for_the_free_parser() {
        let file = r#"{"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,AAAA"}}"#;
        let with = |model: &str| {
            let mut req = parse(&format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":[{file}]}}]}}"#))
                .expect("valid");
            req.parse_files_free();
            req.body.get("plugins").cloned()
        };
        assert_eq!(
            with("meta-llama/llama-3.1-8b-instruct"),
            Some(serde_json::json!([{"id": "file-parser", "pdf": {"engine": "cloudflare-ai"}}]))
        );
        assert_eq!(with("anthropic/claude-sonnet-4"), None, "read natively");
    }

    #[test]
    fn prompt_bound_covers_text_messages_and_images() {
        let req = parse(r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#)
            .expect("valid");
        let json_len = serde_json::to_vec(&req.body["messages"]).expect("json").len() as u64;
        assert_eq!(req.prompt_token_bound(), json_len + 2 * PER_MESSAGE_TOKENS + PER_IMAGE_TOKENS);
        // GPT-4o mini bills an image at up to twelve times that, and so is held, as a fallback too.
        let mini = r#"{"model":"m","models":["openai/gpt-4o-mini"],"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#;
        let mini = parse(mini).expect("valid");
        assert_eq!(
            mini.prompt_token_bound() - mini.body["messages"].to_string().len() as u64,
            PER_MESSAGE_TOKENS + PER_IMAGE_TOKENS_4O_MINI
        );
        // So is an alias an operator pinned to it: the model that serves bills the image.
        assert_eq!(
            req.prompt_token_bound_within(None, Some("gpt-4o-mini")) - req.prompt_token_bound(),
            PER_IMAGE_TOKENS_4O_MINI - PER_IMAGE_TOKENS
        );
        assert_eq!(req.prompt_token_bound_within(Some(10), Some("gpt-4o-mini")), 10, "cut to the context");
        // "héllo" is 6 UTF-8 bytes: never fewer bound tokens than bytes of text
        let req = parse(r#"{"model":"m","messages":[{"role":"user","content":"héllo"}]}"#).expect("valid");
        assert!(req.prompt_token_bound() >= 6 + PER_MESSAGE_TOKENS);
    }

    #[test]
    fn a_file_is_held_at_the_most_its_pages_can_cost() {
        // A hundred pages fit in a few kilobytes; each is billed as text and an image.
        let pdf = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"sum up"},{"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,JVBERi0xLjQK"}}]}]}"#;
        let req = parse(pdf).expect("valid");
        let json_len = serde_json::to_vec(&req.body["messages"]).expect("json").len() as u64;
        assert_eq!(req.prompt_token_bound(), json_len + PER_MESSAGE_TOKENS + PER_FILE_TOKENS);
        assert_eq!(req.prompt_token_bound_within(Some(200_000), None), 200_000, "no model reads past its context");
        assert_eq!(req.prompt_token_bound_within(None, None), req.prompt_token_bound());
        let small = parse(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).expect("valid");
        assert_eq!(small.prompt_token_bound_within(Some(200_000), None), small.prompt_token_bound());
    }

    #[test]
    fn capping_output_uses_the_clients_spelling() {
        let mut req = parse(r#"{"model":"m","max_completion_tokens":500,"messages":[{"role":"user","content":"x"}]}"#)
            .expect("valid");
        req.cap_output(40);
        assert_eq!(req.body["max_completion_tokens"], 40);
        assert!(req.body.get("max_tokens").is_none());
        let mut req = parse(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#).expect("valid");
        req.cap_output(7);
        assert_eq!((req.body["max_tokens"].as_u64(), req.max_tokens), (Some(7), Some(7)));
    }

    #[test]
    fn a_thinking_budget_stays_under_a_lowered_output_bound_or_thinking_is_turned_off() {
        let thinking = |max_tokens: u64, budget: u64| {
            parse(&format!(
                r#"{{"model":"anthropic/claude-sonnet-4","max_tokens":{max_tokens},"reasoning":{{"max_tokens":{budget}}},"messages":[{{"role":"user","content":"x"}}]}}"#
            ))
            .expect("valid")
        };
        // Only part of 32,000 affordable: the budget comes down under the new bound.
        let mut req = thinking(32_000, 31_999);
        req.cap_output(5_000);
        assert_eq!(req.body["reasoning"]["max_tokens"], 4_999);
        // Too little left to think in (Anthropic takes no budget under 1,024): thinking is off.
        let mut req = thinking(32_000, 31_999);
        req.cap_output(1_024);
        assert_eq!(req.body["reasoning"], serde_json::json!({"enabled": false}));
        // Another provider's model is not made to stop reasoning (some must): its budget comes down.
        let mut req = parse(
            r#"{"model":"openai/gpt-5","max_tokens":32000,"reasoning":{"max_tokens":31999},"messages":[{"role":"user","content":"x"}]}"#,
        )
        .expect("valid");
        req.cap_output(500);
        assert_eq!(req.body["reasoning"], serde_json::json!({"max_tokens": 499}));
        // A budget that still fits, and one the client set above its own bound, are left alone.
        let mut req = thinking(32_000, 2_000);
        req.cap_output(5_000);
        assert_eq!(req.body["reasoning"]["max_tokens"], 2_000);
        let mut req = thinking(4_000, 8_000);
        req.cap_output(4_000);
        assert_eq!(req.body["reasoning"]["max_tokens"], 8_000);
    }

    #[test]
    fn both_output_fields_bound_by_the_smaller_and_both_are_capped() {
        let mut req = parse(
            r#"{"model":"m","max_tokens":5,"max_completion_tokens":9,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .expect("valid");
        assert_eq!(req.max_tokens, Some(5));
        req.cap_output(5);
        assert_eq!((req.body["max_tokens"].as_u64(), req.body["max_completion_tokens"].as_u64()), (Some(5), Some(5)));
    }

    #[test]
    fn several_choices_are_refused_the_reservation_covers_one() {
        assert_eq!(
            parse(r#"{"model":"m","n":3,"messages":[{"role":"user","content":"x"}]}"#)
                .err()
                .and_then(|e| e.param)
                .as_deref(),
            Some("n")
        );
        assert!(parse(r#"{"model":"m","n":1,"messages":[{"role":"user","content":"x"}]}"#).is_ok());
    }

    #[test]
    fn rejects_bad_input_naming_the_parameter() {
        let cases: &[(&str, Option<&str>)] = &[
            ("not json", None),
            ("[1,2]", None),
            (r#"{"messages":[{"role":"user","content":"x"}]}"#, Some("model")),
            (r#"{"model":5,"messages":[{"role":"user","content":"x"}]}"#, Some("model")),
            (r#"{"model":"  ","messages":[{"role":"user","content":"x"}]}"#, Some("model")),
            (r#"{"model":"m"}"#, Some("messages")),
            (r#"{"model":"m","messages":[]}"#, Some("messages")),
            (r#"{"model":"m","messages":"hi"}"#, Some("messages")),
            (r#"{"model":"m","messages":[5]}"#, Some("messages[0]")),
            (r#"{"model":"m","messages":[{"content":"x"}]}"#, Some("messages[0].role")),
            (r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#, Some("messages[0].role")),
            (r#"{"model":"m","messages":[{"role":"user","content":5}]}"#, Some("messages[0].content")),
            (r#"{"model":"m","stream":"yes","messages":[{"role":"user","content":"x"}]}"#, Some("stream")),
            (r#"{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#, Some("max_tokens")),
            (r#"{"model":"m","max_tokens":-3,"messages":[{"role":"user","content":"x"}]}"#, Some("max_tokens")),
            (r#"{"model":"m","max_tokens":1.5,"messages":[{"role":"user","content":"x"}]}"#, Some("max_tokens")),
        ];
        for (body, param) in cases {
            let err = parse(body).expect_err(body);
            assert_eq!(err.param.as_deref(), *param, "{body}: {}", err.message);
            assert!(!err.message.is_empty());
        }
    }
}

/// Token usage as OpenAI and OpenRouter report it. `cost` is the upstream's
/// own figure in USD when it sends one. Counts are read leniently (`count`): one odd field must not
/// lose the whole usage, which is what the request is charged by.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct Usage {
    #[serde(default, deserialize_with = "count")]
    pub prompt_tokens: u64,
    #[serde(default, deserialize_with = "count")]
    pub completion_tokens: u64,
    #[serde(default, deserialize_with = "count")]
    pub total_tokens: u64,
    #[serde(default, deserialize_with = "cost", skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct PromptDetails {
    #[serde(default, deserialize_with = "count")]
    pub cached_tokens: u64,
    #[serde(default, deserialize_with = "count")]
    pub cache_write_tokens: u64,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct CompletionDetails {
    #[serde(default, deserialize_with = "count")]
    pub reasoning_tokens: u64,
}

/// The most tokens a request is counted for one part (prompt, completion, cache, reasoning): far past any
/// model's context, and small enough that a day's totals of two million such requests still sum within
/// `money::MAX_SAFE`, which every store keeps and reads back exactly (the stats read their sums as
/// JavaScript numbers, and refuse one past it). An upstream reporting more is not believed past it; the
/// charge is at most the request's hold either way.
pub const MAX_TOKENS: u64 = u32::MAX as u64;

/// A token count as an upstream reports it: `null` is none, a fraction counts whole (rounded up), a
/// negative count is none, and a count is at most `MAX_TOKENS`. Anything but a number or `null` is refused.
fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = <Option<f64> as serde::Deserialize>::deserialize(d)?.unwrap_or(0.0);
    Ok(if n > 0.0 { n.ceil().min(MAX_TOKENS as f64) as u64 } else { 0 })
}

/// The upstream's own cost: a number, or a number written as a string; anything else is none, and never
/// makes the usage unreadable (it is shown, and is the least a charge from OpenRouter's record pays).
fn cost<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let cost = match <Value as serde::Deserialize>::deserialize(d)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    Ok(cost.filter(|c| c.is_finite()))
}

impl Usage {
    /// Whether this is a report at all: every request has a prompt, so a usage that counts none (`{}`, zeros,
    /// negative counts, which `count` reads as none) says nothing, and the request is charged as one whose
    /// usage never came (the upstream's record, else an estimate), not at zero.
    pub fn counts(&self) -> bool {
        self.prompt_tokens > 0
    }

    /// The token split prices apply to, each count at most `MAX_TOKENS` (as `count` reads them; the direct
    /// providers' usage is built, not read, and may sum past it). A part counted beside its whole, not in it
    /// (reasoning beside the completion, as xAI reports it; cache tokens beside the prompt, as Anthropic's own
    /// API does), is added to it rather than cut to it: it is beside when it is larger than its whole, or when
    /// `total_tokens` counts it on top of the prompt and the completion.
    pub fn tokens(&self) -> super::pricing::Tokens {
        let details = self.prompt_tokens_details.clone().unwrap_or_default();
        let max = MAX_TOKENS;
        let (cache_read, cache_write) = (details.cached_tokens.min(max), details.cache_write_tokens.min(max));
        let cache = cache_read.saturating_add(cache_write);
        let reasoning = self.completion_tokens_details.as_ref().map_or(0, |c| c.reasoning_tokens.min(max));
        let (mut prompt, mut completion) = (self.prompt_tokens.min(max), self.completion_tokens.min(max));
        let beyond = self.total_tokens.saturating_sub(prompt.saturating_add(completion));
        let (reasoning_beside, cache_beside) = match beyond {
            0 => (false, false),
            n if n == reasoning.saturating_add(cache) => (true, true),
            n => (n == reasoning, n == cache),
        };
        if cache_beside || cache > prompt {
            prompt = prompt.saturating_add(cache).min(max);
        }
        if reasoning_beside || reasoning > completion {
            completion = completion.saturating_add(reasoning).min(max);
        }
        super::pricing::Tokens { prompt, completion, cache_read, cache_write, reasoning }
    }

    /// What a stream cut short used, from the usage its upstream had reported before the cut (the
    /// prompt's and the cache's tokens exact; the output so far) and `completion` estimated from the
    /// content delivered: the larger output of the two.
    pub fn cut_short(&self, completion: u64) -> Usage {
        let completion_tokens = self.completion_tokens.max(completion);
        Usage {
            completion_tokens,
            total_tokens: self.prompt_tokens.saturating_add(completion_tokens),
            cost: None,
            ..self.clone()
        }
    }
}
