//! The route table: (method, path) → `Route`. Pure, so it is tested on the host;
//! `api::dispatch` maps each `Route` to its handler.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    ChatCompletions,
    ListModels,
    CurrentKey,
    ListUsers,
    CreateUser,
    GetUser(String),
    UpdateUser(String),
    DeleteUser(String),
    ListKeys,
    CreateKey,
    CreateToken,
    GetKey(String),
    UpdateKey(String),
    DeleteKey(String),
    RotateKey(String),
    ListOrgs,
    CreateOrg,
    GetOrg(String),
    UpdateOrg(String),
    DeleteOrg(String),
    CreateOrgKey(String),
    ListPrices,
    PutPrice,
    SyncPrices,
    GetPrice(String),
    GetBalance,
    ListTransactions,
    AddBalance,
    GetCredits,
    Reconcile,
    OwnStats,
    KeyStats(String),
    OrgStats(String),
    GlobalStats,
    Generation,
    Provision,
    ListUpstreamKeys,
    UpdateUpstreamKey(String),
    DeleteUpstreamKey(String),
    Overview,
    ListRoutes,
    PutRoute(String),
    DeleteRoute(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Found(Route),
    /// The path exists, but not for this method.
    WrongMethod,
    NotFound,
}

/// The path of a serialised absolute URL (`https://host/p/a?q#f` → `/p/a`), as the
/// runtime hands it over: special schemes always serialise a path, beginning at the
/// first `/` after the host.
pub fn path_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[after_scheme..];
    let Some(start) = rest.find('/') else { return "/" };
    let path = &rest[start..];
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

pub fn route(method: &str, path: &str) -> Match {
    let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let id = |i: usize| segments.get(i).map(|s| s.to_string()).unwrap_or_default();
    let candidates: Vec<(&str, Route)> = match segments.as_slice() {
        ["health"] => vec![("GET", Route::Health)],
        ["v1", "chat", "completions"] | ["api", "v1", "chat", "completions"] => vec![("POST", Route::ChatCompletions)],
        ["v1", "models"] | ["api", "v1", "models"] => vec![("GET", Route::ListModels)],
        ["api", "v1", "key"] => vec![("GET", Route::CurrentKey)],
        ["api", "admin", "users"] => vec![("GET", Route::ListUsers), ("POST", Route::CreateUser)],
        ["api", "admin", "users", u] if !u.is_empty() => {
            vec![
                ("GET", Route::GetUser(id(3))),
                ("PATCH", Route::UpdateUser(id(3))),
                ("DELETE", Route::DeleteUser(id(3))),
            ]
        }
        ["api", "keys"] => vec![("GET", Route::ListKeys), ("POST", Route::CreateKey)],
        ["api", "token"] => vec![("POST", Route::CreateToken)],
        ["api", "keys", k] if !k.is_empty() => {
            vec![("GET", Route::GetKey(id(2))), ("PATCH", Route::UpdateKey(id(2))), ("DELETE", Route::DeleteKey(id(2)))]
        }
        ["api", "keys", k, "rotate"] if !k.is_empty() => vec![("POST", Route::RotateKey(id(2)))],
        ["api", "orgs"] => vec![("GET", Route::ListOrgs), ("POST", Route::CreateOrg)],
        ["api", "orgs", o] if !o.is_empty() => {
            vec![("GET", Route::GetOrg(id(2))), ("PATCH", Route::UpdateOrg(id(2))), ("DELETE", Route::DeleteOrg(id(2)))]
        }
        ["api", "orgs", o, "keys"] if !o.is_empty() => vec![("POST", Route::CreateOrgKey(id(2)))],
        ["api", "models", "pricing"] => vec![("GET", Route::ListPrices), ("PUT", Route::PutPrice)],
        ["api", "models", "pricing", "sync"] => {
            vec![("POST", Route::SyncPrices), ("GET", Route::GetPrice("sync".into()))]
        }
        ["api", "models", "pricing", model @ ..] if model.iter().all(|p| !p.is_empty()) => {
            vec![("GET", Route::GetPrice(model.join("/")))]
        }
        ["api", "balance"] => vec![("GET", Route::GetBalance)],
        ["api", "balance", "transactions"] => vec![("GET", Route::ListTransactions)],
        ["api", "balance", "admin", "add"] => vec![("POST", Route::AddBalance)],
        ["api", "v1", "credits"] => vec![("GET", Route::GetCredits)],
        ["api", "admin", "reconcile"] => vec![("GET", Route::Reconcile)],
        ["api", "stats"] => vec![("GET", Route::OwnStats)],
        ["api", "stats", "global"] => vec![("GET", Route::GlobalStats)],
        ["api", "stats", "keys", k] if !k.is_empty() => vec![("GET", Route::KeyStats(id(3)))],
        ["api", "stats", "orgs", o] if !o.is_empty() => vec![("GET", Route::OrgStats(id(3)))],
        ["api", "v1", "generation"] => vec![("GET", Route::Generation)],
        ["api", "admin", "provision"] => vec![("POST", Route::Provision)],
        ["api", "admin", "openrouter-keys"] => vec![("GET", Route::ListUpstreamKeys)],
        ["api", "admin", "openrouter-keys", k] if !k.is_empty() => {
            vec![("PATCH", Route::UpdateUpstreamKey(id(3))), ("DELETE", Route::DeleteUpstreamKey(id(3)))]
        }
        ["api", "admin", "overview"] => vec![("GET", Route::Overview)],
        ["api", "admin", "routes"] => vec![("GET", Route::ListRoutes)],
        ["api", "admin", "routes", model @ ..] if model.iter().all(|p| !p.is_empty()) => {
            vec![("PUT", Route::PutRoute(model.join("/"))), ("DELETE", Route::DeleteRoute(model.join("/")))]
        }
        _ => return Match::NotFound,
    };
    let method = if method == "HEAD" { "GET" } else { method };
    candidates.iter().find(|(m, _)| *m == method).map_or(Match::WrongMethod, |(_, r)| Match::Found(r.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_of_drops_host_query_and_fragment() {
        assert_eq!(path_of("https://gw.example.com/v1/chat/completions?x=1#f"), "/v1/chat/completions");
        assert_eq!(path_of("http://127.0.0.1:8787/api/users/u_1"), "/api/users/u_1");
        assert_eq!(path_of("http://127.0.0.1:8787/"), "/");
        assert_eq!(path_of("http://127.0.0.1:8787"), "/");
        assert_eq!(path_of("https://h/a%3Fb?c"), "/a%3Fb");
    }

    #[test]
    fn openai_and_openrouter_paths_both_work() {
        assert_eq!(route("POST", "/v1/chat/completions"), Match::Found(Route::ChatCompletions));
        assert_eq!(route("POST", "/api/v1/chat/completions/"), Match::Found(Route::ChatCompletions));
        assert_eq!(route("GET", "/api/v1/models"), Match::Found(Route::ListModels));
        assert_eq!(route("HEAD", "/health"), Match::Found(Route::Health));
    }

    #[test]
    fn wrong_method_and_unknown_paths() {
        assert_eq!(route("GET", "/v1/chat/completions"), Match::WrongMethod);
        assert_eq!(route("GET", "/v1/chat"), Match::NotFound);
        assert_eq!(route("GET", "/"), Match::NotFound);
        assert_eq!(route("POST", "/api/keys"), Match::Found(Route::CreateKey));
        assert_eq!(route("PUT", "/api/keys/k1"), Match::WrongMethod);
        assert_eq!(route("GET", "/api/keys//rotate"), Match::NotFound);
    }

    #[test]
    fn route_pins_take_model_ids_with_slashes() {
        assert_eq!(route("GET", "/api/admin/routes"), Match::Found(Route::ListRoutes));
        assert_eq!(
            route("PUT", "/api/admin/routes/anthropic/claude-3.5-sonnet"),
            Match::Found(Route::PutRoute("anthropic/claude-3.5-sonnet".into()))
        );
        assert_eq!(route("DELETE", "/api/admin/routes/x"), Match::Found(Route::DeleteRoute("x".into())));
        assert_eq!(route("GET", "/api/admin/routes/x"), Match::WrongMethod);
        assert_eq!(route("PUT", "/api/admin/routes/a//b"), Match::NotFound);
    }

    #[test]
    fn resource_ids_are_captured() {
        assert_eq!(route("GET", "/api/keys/k1"), Match::Found(Route::GetKey("k1".into())));
        assert_eq!(route("POST", "/api/keys/k1/rotate"), Match::Found(Route::RotateKey("k1".into())));
        assert_eq!(route("DELETE", "/api/admin/users/u1/"), Match::Found(Route::DeleteUser("u1".into())));
        assert_eq!(route("GET", "/api/v1/key"), Match::Found(Route::CurrentKey));
        assert_eq!(
            route("GET", "/api/models/pricing/openai/gpt-4o"),
            Match::Found(Route::GetPrice("openai/gpt-4o".into()))
        );
        assert_eq!(route("POST", "/api/models/pricing/sync"), Match::Found(Route::SyncPrices));
        assert_eq!(route("GET", "/api/models/pricing/a//b"), Match::NotFound);
        assert_eq!(route("POST", "/api/balance/admin/add"), Match::Found(Route::AddBalance));
        assert_eq!(route("GET", "/api/stats/keys/k1"), Match::Found(Route::KeyStats("k1".into())));
        assert_eq!(route("GET", "/api/stats/orgs/o1"), Match::Found(Route::OrgStats("o1".into())));
        assert_eq!(route("GET", "/api/stats/global"), Match::Found(Route::GlobalStats));
        assert_eq!(route("GET", "/api/v1/generation"), Match::Found(Route::Generation));
    }
}
