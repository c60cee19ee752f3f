//! `/v1/…` forwards to the upstream as is; `/do/v1/…` first makes one call to a
//! Durable Object that answers at once. Idiomatic workers-rs, nothing tuned.

use worker::js_sys;
use worker::*;

#[durable_object]
pub struct Counter {
    _state: State,
}

impl DurableObject for Counter {
    fn new(state: State, _env: Env) -> Self {
        Self { _state: state }
    }

    async fn fetch(&self, _req: Request) -> Result<Response> {
        Response::ok("ok")
    }
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let mut path = req.path();
    if let Some(rest) = path.strip_prefix("/do") {
        let stub = env.durable_object("COUNTER")?.id_from_name("bench")?.get_stub()?;
        stub.fetch_with_str("https://do/").await?;
        path = rest.to_string();
    }
    let url = format!("{}{}", env.var("UPSTREAM")?, path.trim_start_matches("/v1"));
    let body = req.bytes().await?;
    let mut init = RequestInit::new();
    init.with_method(req.method())
        .with_headers(req.headers().clone())
        .with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
    Fetch::Request(Request::new_with_init(&url, &init)?).send().await
}
