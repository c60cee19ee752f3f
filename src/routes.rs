//! The route table: (method, path) → `Route`. Pure, so it is tested on the host;
//! `api::dispatch` maps each `Route` to its handler.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    ChatCompletions,
    ListModels,
    CreateUser,
    CreateKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Found(Route),
    /// The path exists, but not for this method.
    WrongMethod,
    NotFound,
}

pub fn route(method: &str, path: &str) -> Match {
    let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let candidates: &[(&str, Route)] = match segments.as_slice() {
        ["health"] => &[("GET", Route::Health)],
        ["v1", "chat", "completions"] | ["api", "v1", "chat", "completions"] => &[("POST", Route::ChatCompletions)],
        ["v1", "models"] | ["api", "v1", "models"] => &[("GET", Route::ListModels)],
        ["api", "admin", "users"] => &[("POST", Route::CreateUser)],
        ["api", "keys"] => &[("POST", Route::CreateKey)],
        _ => return Match::NotFound,
    };
    let method = if method == "HEAD" { "GET" } else { method };
    candidates.iter().find(|(m, _)| *m == method).map_or(Match::WrongMethod, |(_, r)| Match::Found(r.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
