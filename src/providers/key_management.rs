//! OpenRouter's key-management API (`$OPENROUTER_API_BASE/keys`), called with
//! the tenant's provisioning key. Limits travel in USD; `hash` is OpenRouter's
//! id for a key. Requests go through `transport`, the only module that fetches.

use serde::Deserialize;
use serde_json::{json, Value};
use worker::Method;

use super::openai_compat::ProviderError;
use super::transport;

/// A key as OpenRouter describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct UpstreamKey {
    pub hash: String,
    #[serde(default)]
    pub name: String,
    pub limit: Option<f64>,
    #[serde(default)]
    pub limit_reset: Option<String>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub usage: f64,
}

pub struct KeyApi<'a> {
    pub base_url: &'a str,
    pub provisioning_key: &'a str,
    pub timeout_ms: u64,
}

/// Keys per page of OpenRouter's key list.
pub const PAGE: usize = 100;

impl KeyApi<'_> {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, ProviderError> {
        let auth = format!("Bearer {}", self.provisioning_key);
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        let url = format!("{}/keys{path}", self.base_url);
        let bytes = body.map(|b| b.to_string().into_bytes());
        let mut upstream = transport::send(method, &url, &headers, bytes.as_deref(), self.timeout_ms).await?;
        let body = transport::read_all(&mut upstream).await?;
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).map_err(|e| ProviderError::Malformed(e.to_string()))
    }

    fn key_of(value: &Value) -> Result<UpstreamKey, ProviderError> {
        UpstreamKey::deserialize(&value["data"]).map_err(|e| ProviderError::Malformed(format!("key: {e}")))
    }

    /// Creates a key; answers it and its text (shown once).
    pub async fn create(
        &self,
        name: &str,
        limit_usd: Option<f64>,
        limit_reset: Option<&str>,
    ) -> Result<(UpstreamKey, String), ProviderError> {
        let answer = self
            .call(Method::Post, "", Some(json!({"name": name, "limit": limit_usd, "limit_reset": limit_reset})))
            .await?;
        let text = answer["key"].as_str().ok_or_else(|| ProviderError::Malformed("no key text".into()))?;
        Ok((Self::key_of(&answer)?, text.to_string()))
    }

    /// Changes a key's `limit`, `limit_reset` or `disabled` (the fields present in `patch`).
    pub async fn update(&self, hash: &str, patch: Value) -> Result<UpstreamKey, ProviderError> {
        Self::key_of(&self.call(Method::Patch, &format!("/{hash}"), Some(patch)).await?)
    }

    /// Deletes a key; one OpenRouter no longer knows counts as deleted.
    pub async fn delete(&self, hash: &str) -> Result<(), ProviderError> {
        match self.call(Method::Delete, &format!("/{hash}"), None).await {
            Ok(_) | Err(ProviderError::Rejected { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One page of the key list from `offset` (`PAGE` keys at most), disabled keys included (OpenRouter
    /// leaves them out unless asked, so a key disabled on its side would have been mirrored as live).
    pub async fn page(&self, offset: usize) -> Result<Vec<UpstreamKey>, ProviderError> {
        let answer = self.call(Method::Get, &format!("?include_disabled=true&offset={offset}"), None).await?;
        Vec::<UpstreamKey>::deserialize(&answer["data"]).map_err(|e| ProviderError::Malformed(format!("keys: {e}")))
    }
}
