//! Anthropic's Messages API behind the OpenAI interface: pure translation,
//! host-tested over captured fixtures (`tests/fixtures/anthropic/`); used by
//! the chat path when the tenant sets `ANTHROPIC_API_KEY`. `inbound` is the other
//! direction: the Messages API spoken to the gateway (`POST /v1/messages`).

pub mod inbound;
pub mod request;
pub mod response;
pub mod stream;

/// Whether `model`'s `verbosity` (OpenRouter's parameter) is Anthropic's effort, how much the model may
/// spend (Claude's), rather than OpenAI's, how long the answer is: a client's setting of the one is not
/// carried as the other.
pub fn verbosity_is_effort(model: &str) -> bool {
    model.starts_with("anthropic/")
}
