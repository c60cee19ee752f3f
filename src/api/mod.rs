//! HTTP layer: the dispatch from `routes::Route` to thin handlers.

pub mod bodies;
pub mod error;

#[cfg(target_arch = "wasm32")]
mod allowed;
#[cfg(target_arch = "wasm32")]
mod archives;
#[cfg(target_arch = "wasm32")]
mod auth;
#[cfg(target_arch = "wasm32")]
mod balance;
#[cfg(target_arch = "wasm32")]
mod chat;
#[cfg(target_arch = "wasm32")]
mod embeddings;
#[cfg(target_arch = "wasm32")]
mod end_users;
#[cfg(target_arch = "wasm32")]
mod incoming;
#[cfg(target_arch = "wasm32")]
mod keys;
#[cfg(target_arch = "wasm32")]
mod log_line;
#[cfg(target_arch = "wasm32")]
mod meter;
#[cfg(target_arch = "wasm32")]
mod models;
#[cfg(target_arch = "wasm32")]
mod orgs;
#[cfg(target_arch = "wasm32")]
mod pins;
#[cfg(target_arch = "wasm32")]
mod prices;
#[cfg(target_arch = "wasm32")]
mod provision;
#[cfg(target_arch = "wasm32")]
mod relay;
#[cfg(target_arch = "wasm32")]
mod reply;
#[cfg(target_arch = "wasm32")]
mod request_log;
#[cfg(target_arch = "wasm32")]
mod respond;
#[cfg(target_arch = "wasm32")]
mod served;
#[cfg(target_arch = "wasm32")]
mod upstream;
#[cfg(target_arch = "wasm32")]
mod usage;
#[cfg(target_arch = "wasm32")]
mod users;

#[cfg(target_arch = "wasm32")]
pub use balance::{reconcile_account, run_reconciliation};
#[cfg(target_arch = "wasm32")]
pub use dispatch::handle;
#[cfg(target_arch = "wasm32")]
pub use incoming::Incoming;
#[cfg(target_arch = "wasm32")]
pub use models::refresh_models_cache;
#[cfg(target_arch = "wasm32")]
pub use prices::sync as sync_prices;
#[cfg(target_arch = "wasm32")]
pub use provision::{mirror_page, mirror_upstream_keys};
#[cfg(target_arch = "wasm32")]
pub use respond::random_bytes;
#[cfg(target_arch = "wasm32")]
pub async fn expire_request_logs(env: &worker::Env) -> Result<serde_json::Value, error::ApiError> {
    request_log::expire(env, js_sys::Date::now() as i64).await
}

#[cfg(target_arch = "wasm32")]
mod dispatch {
    use worker::{Context, Env, Response};

    use super::auth::{authenticate, authenticate_for_inference, Authenticated, Caller};
    use super::error::ApiError;
    use super::incoming::Incoming;
    use super::respond::{self, Call};
    use crate::domain::keys::Permission;
    use crate::routes::{route, Access, Match, Route};

    /// Every request enters here and leaves as a response: errors are OpenAI-shaped, never a bare 500.
    pub async fn handle(req: Incoming, env: Env, ctx: Context) -> Response {
        let mut call = Call::new(&req, env, ctx);
        let path = req.path();
        let method = req.method();
        // Anthropic's Messages API (and anything under it) answers errors in Anthropic's shape.
        // So does the model list asked in Anthropic's dialect (`anthropic-version`).
        call.anthropic_errors = path.starts_with("/v1/messages")
            || path.starts_with("/api/v1/messages")
            || (super::models::in_anthropic_dialect(&req)
                && (path.starts_with("/v1/models") || path.starts_with("/api/v1/models")));
        let result = match route(&method, &path) {
            Match::Found(r, access) => run(r, access, req, &call).await,
            Match::WrongMethod => Err(ApiError::MethodNotAllowed { method, path }),
            Match::NotFound => Err(ApiError::not_found(format!("no route for {method} {path}"))),
        };
        respond::finish(&call, result)
    }

    /// Authenticates the caller once, as the route's access says, and checks it.
    async fn authorize(access: Access, req: &Incoming, call: &Call) -> Result<Option<Authenticated>, ApiError> {
        let auth = match access {
            Access::Public => return Ok(None),
            Access::Inference => authenticate_for_inference(req, call).await?,
            Access::AnyKey | Access::Key(_) | Access::Unmetered => authenticate(req, call).await?,
        };
        match access {
            Access::Inference | Access::Unmetered => auth.caller.require(Permission::Write)?,
            Access::Key(needed) => auth.caller.require(needed)?,
            Access::Public | Access::AnyKey => {}
        }
        // A secret rotated out keeps working for inference and reads during its grace, but changes
        // nothing: whoever still holds it must not rotate the key back or mint keys with it.
        if auth.rotated_out && matches!(access, Access::Key(Permission::Write | Permission::Admin)) {
            return Err(ApiError::unauthenticated("this secret was rotated out: use the new secret to make changes"));
        }
        // A suspended organization's keys are refused everywhere; inference learns it in its reservation
        // (`meter::reserve_in_org`), so it is not looked up twice there.
        if let (Caller::Key(key), false) = (&auth.caller, access == Access::Inference) {
            if let Some(org_id) = &key.org_id {
                super::orgs::active(call, org_id).await?;
            }
        }
        Ok(Some(auth))
    }

    async fn run(r: Route, access: Access, req: Incoming, call: &Call) -> Result<Response, ApiError> {
        let authorized = match (authorize(access, &req, call).await, &r) {
            // A key that rotated itself repeats the rotation with the secret it rotated from.
            (Err(refused), Route::RotateKey(id)) if refused.status() == 401 => {
                return match super::keys::replay_own_rotation(&req, call, id).await? {
                    Some(replayed) => Ok(replayed),
                    None => Err(refused),
                };
            }
            (authorized, _) => authorized?,
        };
        let Some(auth) = authorized else {
            return match r {
                Route::Health => super::models::health(&req, call).await,
                Route::ListModels => super::models::list_models(&req, call).await,
                Route::GetModel(model) => super::models::get_model(&req, call, &model).await,
                Route::ListPrices => super::prices::list_prices(req, call).await,
                Route::GetPrice(model) => super::prices::get_price(&req, call, &model).await,
                // The built assets answer `/openapi.json` before the Worker; it reaches here only unbuilt.
                Route::OpenApi => Err(ApiError::not_found(
                    "the OpenAPI document was not built: scripts/build writes build/assets/openapi.json",
                )),
                other => Err(ApiError::internal(format!("{other:?} is not a public route"))),
            };
        };
        let caller = &auth.caller;
        match r {
            Route::ChatCompletions => super::chat::create_chat_completion(req, call, auth).await,
            Route::Embeddings => super::embeddings::create_embeddings(req, call, auth).await,
            Route::Completions => super::chat::create_completion(req, call, auth).await,
            Route::Messages => super::chat::create_message(req, call, auth).await,
            Route::Responses => super::chat::create_response(req, call, auth).await,
            Route::ResponsesUnsupported => Err(ApiError::bad_request(
                "this gateway is stateless: it keeps no responses, so it cannot retrieve, compact, cancel or delete one; send the whole conversation to POST /v1/responses",
            )),
            Route::CountTokens => super::chat::count_message_tokens(req, call, caller).await,
            Route::CurrentKey => super::keys::current_key(call, caller).await,
            Route::ListUsers => super::users::list_users(req, call).await,
            Route::CreateUser => super::users::create_user(req, call).await,
            Route::GetUser(id) => super::users::get_user(call, &id).await,
            Route::UpdateUser(id) => super::users::update_user(req, call, &id).await,
            Route::DeleteUser(id) => super::users::delete_user(call, &id).await,
            Route::ListKeys => super::keys::list_keys(req, call, caller).await,
            Route::CreateKey => super::keys::create_key(req, call, caller).await,
            Route::CreateToken => super::keys::create_token(req, call, caller).await,
            Route::GetKey(id) => super::keys::get_key(call, caller, &id).await,
            Route::UpdateKey(id) => super::keys::update_key(req, call, caller, &id).await,
            Route::DeleteKey(id) => super::keys::delete_key(call, caller, &id).await,
            Route::RotateKey(id) => super::keys::rotate_key(req, call, caller, &id).await,
            Route::ListEndUsers(id) => super::end_users::list(req, call, caller, &id).await,
            Route::PutEndUserBudget(id, end_user) => super::end_users::put(req, call, caller, &id, &end_user).await,
            Route::ClearEndUserBudget(id, end_user) => super::end_users::clear(call, caller, &id, &end_user).await,
            Route::ListRequestLog(id) => super::request_log::list(req, call, caller, &id).await,
            Route::GetRequestLog(id, request_id) => super::request_log::get(call, caller, &id, &request_id).await,
            Route::ListOrgs => super::orgs::list_orgs(req, call).await,
            Route::CreateOrg => super::orgs::create_org(req, call).await,
            Route::GetOrg(id) => super::orgs::get_org(call, &id).await,
            Route::UpdateOrg(id) => super::orgs::update_org(req, call, caller, &id).await,
            Route::DeleteOrg(id) => super::orgs::delete_org(call, caller, &id).await,
            Route::CreateOrgKey(id) => super::orgs::create_org_key(req, call, caller, &id).await,
            Route::PutPrice => super::prices::put_price(req, call).await,
            Route::SyncPrices => super::prices::sync_prices(req, call).await,
            Route::GetBalance => super::balance::get_balance(req, call, caller).await,
            Route::ListTransactions => super::balance::list_transactions(req, call, caller).await,
            Route::AddBalance => super::balance::add_balance(req, call).await,
            Route::GetCredits => super::balance::get_credits(req, call, caller).await,
            Route::Reconcile => super::balance::reconcile(req, call).await,
            Route::StartReconcileRun => super::balance::start_reconcile_run(call).await,
            Route::RunRetention => super::archives::run_retention(call).await,
            Route::ListArchives => super::archives::list(req, call).await,
            Route::GetArchive(id) => super::archives::get(call, &id).await,
            Route::RestoreArchive(id) => super::archives::restore(call, &id).await,
            Route::GetReconcileRun(id) => super::balance::get_reconcile_run(call, &id).await,
            Route::OwnStats => super::usage::get_own_stats(req, call, caller).await,
            Route::KeyStats(id) => super::usage::get_key_stats(req, call, caller, &id).await,
            Route::OrgStats(id) => super::usage::get_org_stats(req, call, &id).await,
            Route::GlobalStats => super::usage::get_global_stats(req, call).await,
            Route::Generation => super::usage::get_generation(req, call, caller).await,
            Route::Provision => super::provision::provision(req, call).await,
            Route::ListUpstreamKeys => super::provision::list_upstream_keys(req, call).await,
            Route::UpdateUpstreamKey(id) => super::provision::update_upstream_key(req, call, &id).await,
            Route::DeleteUpstreamKey(id) => super::provision::delete_upstream_key(call, &id).await,
            Route::Overview => super::usage::get_overview(call).await,
            Route::ListAlerts => super::usage::list_alerts(req, call).await,
            Route::ListRoutes => super::pins::list_routes(call).await,
            Route::PutRoute(model) => super::pins::put_route(req, call, Some(model)).await,
            Route::PutRouteFromBody => super::pins::put_route(req, call, None).await,
            Route::DeleteRoute(model) => super::pins::delete_route(call, &model).await,
            Route::Health | Route::ListModels | Route::GetModel(_) | Route::ListPrices | Route::GetPrice(_) | Route::OpenApi => {
                Err(ApiError::internal(format!("{r:?} is public")))
            }
        }
    }
}
