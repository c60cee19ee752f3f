//! Anthropic's Messages API behind the OpenAI interface: pure translation,
//! host-tested over captured fixtures (`tests/fixtures/anthropic/`). Not yet
//! routed to: the routing, transport and stream translation come next
//! (issue 7); until then every model goes to OpenRouter.

pub mod request;
pub mod response;
pub mod stream;
