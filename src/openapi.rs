//! The OpenAPI 3.1 document of the whole HTTP API, built on the host: its
//! paths, methods and who may call each come from the route table itself
//! (`routes::route`, walked over `routes::PATHS`), and the request bodies'
//! schemas from the handlers' own types (`api::bodies`, through utoipa).
//! `cargo run --example openapi` prints it; `scripts/build` puts it at
//! `/openapi.json`. Nothing here reaches the wasm.

use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::api::bodies;
use crate::routes::{self, Access, Match, Route, PATHS};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// A body schema from a handler's own type.
fn schema_of<T: ToSchema>() -> Value {
    serde_json::to_value(T::schema()).unwrap_or_default()
}

/// The schemas the bodies refer to (`#/components/schemas/…`).
fn referenced() -> Map<String, Value> {
    let mut all = Vec::new();
    bodies::CreateKey::schemas(&mut all);
    bodies::UpdateKey::schemas(&mut all);
    bodies::CreateOrg::schemas(&mut all);
    bodies::UpdateOrg::schemas(&mut all);
    bodies::PutPrice::schemas(&mut all);
    all.into_iter().map(|(name, schema)| (name, serde_json::to_value(schema).unwrap_or_default())).collect()
}

/// An OpenAI-style request: a JSON object naming its model; the rest passes through to the upstream.
fn inference_body(required: &[&str]) -> Value {
    json!({ "type": "object", "required": required, "additionalProperties": true,
            "properties": { "model": { "type": "string", "minLength": 1 } } })
}

/// What one operation is: its summary and its body's schema (if it takes one).
fn describe(route: &Route) -> (&'static str, Option<Value>) {
    match route {
        Route::Health => ("Liveness (`?deep=1` also probes D1, KV and an account object)", None),
        Route::ChatCompletions => {
            ("OpenAI chat completions, streamed or not", Some(inference_body(&["model", "messages"])))
        }
        Route::Completions => ("Legacy completions", Some(inference_body(&["model", "prompt"]))),
        Route::Messages => ("Anthropic Messages API", Some(inference_body(&["model", "messages", "max_tokens"]))),
        Route::CountTokens => ("Anthropic token count (never billed)", Some(inference_body(&["model", "messages"]))),
        Route::Responses => ("OpenAI Responses API (stateless)", Some(inference_body(&["model", "input"]))),
        Route::ResponsesUnsupported => ("Stored responses: not kept by a stateless gateway", None),
        Route::Embeddings => ("OpenAI embeddings", Some(inference_body(&["model", "input"]))),
        Route::ListModels => ("The models this tenant prices", None),
        Route::GetModel(_) => ("One model of the list (404 model_not_found when not listed)", None),
        Route::CurrentKey => ("The calling key, its limits and spend", None),
        Route::ListUsers => ("Users", None),
        Route::CreateUser => ("Create a user", Some(schema_of::<bodies::CreateUser>())),
        Route::GetUser(_) => ("One user", None),
        Route::UpdateUser(_) => ("Change a user", Some(schema_of::<bodies::UpdateUser>())),
        Route::DeleteUser(_) => ("Delete a user (soft; disables its keys)", None),
        Route::ListKeys => ("Keys the caller may see", None),
        Route::CreateKey => ("Create a key (its text is shown once)", Some(schema_of::<bodies::CreateKey>())),
        Route::CreateToken => ("Create a key for the caller's own user", Some(schema_of::<bodies::CreateToken>())),
        Route::GetKey(_) => ("One key", None),
        Route::UpdateKey(_) => ("Change a key (effective on the next request)", Some(schema_of::<bodies::UpdateKey>())),
        Route::DeleteKey(_) => ("Delete a key (soft)", None),
        Route::RotateKey(_) => ("A new secret for the same key", Some(schema_of::<bodies::RotateKey>())),
        Route::ListEndUsers(_) => ("A key's end users, their spend and budgets", None),
        Route::PutEndUserBudget(..) => ("An end user's own budget", Some(schema_of::<bodies::OwnBudgetBody>())),
        Route::ClearEndUserBudget(..) => ("An end user back to the key's default budget", None),
        Route::ListRequestLog(_) => ("A key's logged requests (when it keeps a request log)", None),
        Route::GetRequestLog(..) => ("One logged request with its bodies", None),
        Route::ListOrgs => ("Organizations", None),
        Route::CreateOrg => ("Create an organization", Some(schema_of::<bodies::CreateOrg>())),
        Route::GetOrg(_) => ("One organization", None),
        Route::UpdateOrg(_) => ("Change an organization", Some(schema_of::<bodies::UpdateOrg>())),
        Route::DeleteOrg(_) => ("Delete an organization (soft; disables its keys)", None),
        Route::CreateOrgKey(_) => ("Create a key of an organization", Some(schema_of::<bodies::CreateKey>())),
        Route::ListPrices => ("Prices (USD per token)", None),
        Route::PutPrice => ("Set a model's price", Some(schema_of::<bodies::PutPrice>())),
        Route::SyncPrices => ("Pull prices from the upstream", Some(schema_of::<bodies::SyncBody>())),
        Route::GetPrice(_) => ("One model's price", None),
        Route::GetBalance => ("The account's balance and money held", None),
        Route::ListTransactions => ("The account's ledger, newest first", None),
        Route::AddBalance => {
            ("Credit or adjust an account (honours Idempotency-Key)", Some(schema_of::<bodies::AddBalance>()))
        }
        Route::GetCredits => ("OpenRouter-style credits", None),
        Route::Reconcile => ("Every account's ledger against its balance (`?user_id=`: one account)", None),
        Route::StartReconcileRun => ("Reconcile every account through the queue, an account a message", None),
        Route::RunRetention => ("A retention pass now: history past USAGE_RETENTION_DAYS moves to R2", None),
        Route::ListArchives => ("The archives retention wrote", None),
        Route::GetArchive(_) => ("One archive's rows (NDJSON)", None),
        Route::RestoreArchive(_) => ("Put an archive's rows back in D1", None),
        Route::GetReconcileRun(_) => ("A reconciliation run's progress and findings (`latest` for the newest)", None),
        Route::OwnStats => ("The caller's usage", None),
        Route::KeyStats(_) => ("A key's usage", None),
        Route::OrgStats(_) => ("An organization's usage", None),
        Route::GlobalStats => ("The tenant's usage", None),
        Route::Generation => ("One request, by its id", None),
        Route::Provision => ("A user, a key and an upstream key in one call", Some(schema_of::<bodies::Provision>())),
        Route::ListUpstreamKeys => ("Upstream (OpenRouter) keys", None),
        Route::UpdateUpstreamKey(_) => ("Change an upstream key", Some(schema_of::<bodies::UpdateUpstreamKey>())),
        Route::DeleteUpstreamKey(_) => ("Delete an upstream key", None),
        Route::Overview => ("Spend, requests, users and keys at a glance", None),
        Route::ListAlerts => ("Alerts and their webhook deliveries", None),
        Route::ListRoutes => ("Pinned routes", None),
        Route::PutRoute(_) => ("Pin a model's route", Some(schema_of::<bodies::PutRoute>())),
        Route::PutRouteFromBody => ("Pin a model's route (model in the body)", Some(schema_of::<bodies::PutRoute>())),
        Route::DeleteRoute(_) => ("Unpin a model", None),
        Route::OpenApi => ("This document", None),
        // A new kind of route: describe it here, add its path to `routes::PATHS`, count it in `routes::ROUTE_KINDS`.
    }
}

/// Every status any operation answers, described once (`#/components/responses/{code}`).
fn shared_responses() -> Map<String, Value> {
    let described = [
        ("200", "Success"),
        ("201", "Created"),
        ("202", "Accepted: the work goes on in the background"),
        ("400", "Bad request: the error names the parameter"),
        ("401", "Missing or refused credential"),
        ("402", "Balance, key, organization or end-user limit"),
        ("403", "Not permitted"),
        ("404", "Not found"),
        ("405", "Method not allowed"),
        ("409", "Conflict"),
        ("413", "Body too large"),
        ("426", "Upgrade required (WebSocket on the Responses API)"),
        ("429", "Rate limited (`retry-after`, `metadata.limit_source`)"),
        ("502", "Upstream failed"),
        ("503", "Unavailable"),
        ("504", "Upstream timed out"),
    ];
    let mut shared: Map<String, Value> = described
        .iter()
        .map(|(code, text)| {
            let schema = if code.starts_with('2') {
                json!({ "type": "object" })
            } else {
                json!({ "$ref": "#/components/schemas/Error" })
            };
            (code.to_string(), json!({ "description": text, "content": { "application/json": { "schema": schema } } }))
        })
        .collect();
    // The Messages API's failures, in Anthropic's shape (and its 529 for an overloaded upstream).
    let anthropic = described.iter().filter(|(code, _)| !code.starts_with('2')).copied();
    for (code, text) in anthropic.chain([("529", "Upstream overloaded (Anthropic's `overloaded_error`)")]) {
        let schema = json!({ "$ref": "#/components/schemas/AnthropicError" });
        let response = json!({ "description": text, "content": { "application/json": { "schema": schema } } });
        shared.insert(format!("anthropic_{code}"), response);
    }
    shared
}

/// Whether a path is the Messages API's, which answers errors in Anthropic's shape.
fn in_anthropic_shape(template: &str) -> bool {
    template.starts_with("/v1/messages") || template.starts_with("/api/v1/messages")
}

/// An operation's responses with its errors in Anthropic's shape.
fn anthropic_responses(responses: Value, access: Access) -> Value {
    let Value::Object(codes) = responses else { return responses };
    let mut out: Map<String, Value> = codes
        .into_iter()
        .map(|(code, value)| match code.starts_with('2') {
            true => (code, value),
            false => {
                let reference = json!({ "$ref": format!("#/components/responses/anthropic_{code}") });
                (code, reference)
            }
        })
        .collect();
    if access == Access::Inference {
        out.insert("529".into(), json!({ "$ref": "#/components/responses/anthropic_529" }));
    }
    Value::Object(out)
}

/// The statuses an operation may answer, by who may call it.
fn responses(access: Access, method: &str, has_body: bool, accepted: bool) -> Value {
    let mut codes: Vec<(&str, &str)> = vec![("200", "Success"), ("400", "Bad request: the error names the parameter")];
    if method == "POST" {
        codes.push(("201", "Created"));
    }
    if accepted {
        codes.push(("202", "Accepted"));
    }
    if has_body {
        codes.push(("413", "Body too large"));
    }
    if access != Access::Public {
        codes.extend([("401", "Missing or refused credential"), ("403", "Not permitted"), ("429", "Rate limited")]);
    }
    codes.extend([("404", "Not found"), ("405", "Method not allowed"), ("409", "Conflict"), ("503", "Unavailable")]);
    if access == Access::Inference {
        codes.extend([
            ("402", "Balance, key, organization or end-user limit"),
            ("426", "Upgrade required (WebSocket on the Responses API)"),
            ("502", "Upstream failed"),
            ("504", "Upstream timed out"),
        ]);
    }
    if matches!(access, Access::Key(_)) {
        codes.push(("502", "An upstream management API failed"));
    }
    let map: Map<String, Value> = codes
        .into_iter()
        .map(|(code, _)| (code.to_string(), json!({ "$ref": format!("#/components/responses/{code}") })))
        .collect();
    Value::Object(map)
}

/// A template's path with each `{param}` filled, as a request would have it.
pub fn example(template: &str) -> String {
    template.split('/').map(|s| if s.starts_with('{') { "x1" } else { s }).collect::<Vec<_>>().join("/")
}

/// Every operation: (template, method, route, access).
pub fn operations() -> Vec<(&'static str, &'static str, Route, Access)> {
    let mut ops = Vec::new();
    for template in PATHS {
        for method in METHODS {
            if let Match::Found(route, access) = routes::route(method, &example(template)) {
                ops.push((*template, method, route, access));
            }
        }
    }
    ops
}

pub fn document() -> Value {
    let mut paths = Map::new();
    for (template, method, route, access) in operations() {
        let (summary, body) = describe(&route);
        let params: Vec<Value> = template
            .split('/')
            .filter(|s| s.starts_with('{'))
            .map(|s| {
                let name = s.trim_matches(|c| c == '{' || c == '}');
                json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string", "minLength": 1 } })
            })
            .collect();
        let mut op = json!({
            "summary": summary,
            "operationId": format!("{}_{}", method.to_lowercase(), template.trim_matches('/').replace(['/', '{', '}', '-', '.'], "_")),
            "responses": responses(access, method, body.is_some(), matches!(route, Route::StartReconcileRun)),
        });
        if in_anthropic_shape(template) {
            op["responses"] = anthropic_responses(op["responses"].take(), access);
        }
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(schema) = body {
            op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": schema } } });
        }
        match access {
            Access::Public => op["security"] = json!([]),
            Access::Key(p) => op["x-permission"] = json!(format!("{p:?}").to_lowercase()),
            Access::Inference | Access::Unmetered | Access::AnyKey => {}
        }
        let entry = paths.entry(template.to_string()).or_insert_with(|| json!({}));
        entry[method.to_lowercase()] = op;
    }
    let mut schemas = referenced();
    if let Value::Object(error) = error_schema() {
        schemas.extend(error);
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Tollgate", "version": env!("CARGO_PKG_VERSION"),
                  "description": "A multi-tenant LLM gateway: OpenAI and Anthropic APIs in front of OpenRouter and direct providers, with exact money." },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "A gateway key (sk-tg-v1-…) or the operator's ADMIN_TOKEN; the Messages API also takes x-api-key" } },
            "schemas": schemas,
            "responses": shared_responses(),
        }
    })
}

/// The error bodies: OpenAI's shape everywhere, Anthropic's on the Messages API.
fn error_schema() -> Value {
    json!({
                "AnthropicError": { "type": "object", "required": ["type", "error"], "properties": {
                    "type": { "const": "error" },
                    "error": { "type": "object", "required": ["type", "message"],
                               "properties": { "type": { "type": "string" }, "message": { "type": "string" } } } } },
                "Error": { "type": "object", "required": ["error"], "properties": { "error": {
                    "type": "object", "required": ["message", "type", "code"],
                    "properties": { "message": { "type": "string" }, "type": { "type": "string" }, "code": { "type": "string" },
                                    "param": { "type": "string" }, "metadata": { "type": "object" } } } } }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_of_the_table_is_in_the_document() {
        let ops = operations();
        let seen: std::collections::HashSet<_> = ops.iter().map(|(_, _, r, _)| std::mem::discriminant(r)).collect();
        assert_eq!(seen.len(), routes::ROUTE_KINDS, "a route the table serves is missing from routes::PATHS");
        let doc = document();
        for (template, method, _, _) in &ops {
            assert!(doc["paths"][template][method.to_lowercase()].is_object(), "{method} {template}");
        }
    }

    #[test]
    fn the_messages_api_says_its_errors_come_in_anthropics_shape() {
        let doc = document();
        let messages = &doc["paths"]["/v1/messages"]["post"]["responses"];
        assert_eq!(messages["400"]["$ref"], "#/components/responses/anthropic_400");
        assert_eq!(messages["529"]["$ref"], "#/components/responses/anthropic_529");
        assert_eq!(messages["200"]["$ref"], "#/components/responses/200");
        let refers =
            |name: &str| doc["components"]["responses"][name]["content"]["application/json"]["schema"]["$ref"].clone();
        assert_eq!(refers("anthropic_529"), "#/components/schemas/AnthropicError");
        assert!(doc["components"]["schemas"]["AnthropicError"].is_object());
        let chat = &doc["paths"]["/v1/chat/completions"]["post"]["responses"];
        assert_eq!(chat["400"]["$ref"], "#/components/responses/400", "OpenAI's shape elsewhere");
        assert!(chat.get("529").is_none());
    }

    #[test]
    fn bodies_come_from_the_handlers_types() {
        let doc = document();
        let create = &doc["paths"]["/api/keys"]["post"]["requestBody"]["content"]["application/json"]["schema"];
        let props = create["properties"].as_object().expect("CreateKey's fields");
        for field in ["name", "limit", "rpm_limit", "end_user_budget", "allowed_models"] {
            assert!(props.contains_key(field), "{field}");
        }
        assert_eq!(create["required"], json!(["name"]));
    }
}
