//! Google's Gemini API behind the OpenAI interface: pure translation,
//! host-tested over captured fixtures (`tests/fixtures/gemini/`); used by the
//! chat path when the tenant sets `GOOGLE_API_KEY`.

pub mod request;
pub mod response;
pub mod stream;
