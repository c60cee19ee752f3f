//! Google's Gemini API behind the OpenAI interface: pure translation,
//! host-tested over captured fixtures (`tests/fixtures/gemini/`). Not yet
//! routed to (issue 7): until then every model goes to OpenRouter.

pub mod request;
pub mod response;
pub mod stream;
