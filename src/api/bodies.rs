//! The bodies the admin and account endpoints take, as the handlers read them. Host-compiled, so
//! the OpenAPI document (`openapi`) is generated from these very types.

use serde::Deserialize;
use serde_json::Value;

use crate::domain::end_users::BudgetInput;
use crate::domain::orgs::LimitsInput;

/// For PATCH bodies: tells "absent" (`None`) from "null" (`Some(None)`).
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `Provision`'s default reset.
fn monthly() -> Option<Option<String>> {
    Some(Some("monthly".into()))
}

#[derive(Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddBalance {
    pub user_id: String,
    pub amount: f64,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    pub description: Option<String>,
    pub permissions: Option<Vec<String>>,
    pub expires_at: Option<String>,
    pub limit: Option<f64>,
    pub limit_reset: Option<String>,
    pub user_id: Option<String>,
    pub org_id: Option<String>,
    pub allowed_models: Option<Value>,
    pub allowed_providers: Option<Value>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub end_user_budget: Option<BudgetInput>,
    /// Days the key keeps its requests' and answers' bodies (off when absent).
    pub request_log_days: Option<i64>,
}

#[derive(Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
}

#[derive(Deserialize, Clone)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<Option<String>>,
    pub permissions: Option<Vec<String>>,
    pub disabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub limit: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    pub limit_reset: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub allowed_models: Option<Option<Value>>,
    #[serde(default, deserialize_with = "present")]
    pub allowed_providers: Option<Option<Value>>,
    #[serde(default, deserialize_with = "present")]
    pub rpm_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub tpm_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub end_user_budget: Option<Option<BudgetInput>>,
    #[serde(default, deserialize_with = "present")]
    pub request_log_days: Option<Option<i64>>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    pub grace_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    pub name: String,
    pub description: Option<String>,
    pub admin_user_id: Option<String>,
    pub status: Option<String>,
    #[serde(default)]
    pub limits: LimitsInput,
    pub allowed_models: Option<Value>,
    pub allowed_providers: Option<Value>,
}

#[derive(Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateOrg {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub admin_user_id: Option<Option<String>>,
    pub status: Option<String>,
    /// Replaces all three limits (absent ones become unlimited).
    pub limits: Option<LimitsInput>,
    #[serde(default, deserialize_with = "present")]
    pub allowed_models: Option<Option<Value>>,
    #[serde(default, deserialize_with = "present")]
    pub allowed_providers: Option<Option<Value>>,
}

#[derive(Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutRoute {
    /// Only in the body form (`PUT /api/admin/routes`); the path form names the model in the path.
    pub model: Option<String>,
    pub provider: String,
    pub native_model: Option<String>,
    pub fallback_to_openrouter: Option<bool>,
}

/// A price on the wire: a number or OpenRouter's string form. (Read by hand: serde's untagged enums
/// buffer the value first, and that buffer's code is otherwise not in the wasm.)
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema), serde(untagged))]
pub enum WirePrice {
    Number(f64),
    Text(String),
}

impl<'de> Deserialize<'de> for WirePrice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Price;
        impl serde::de::Visitor<'_> for Price {
            type Value = WirePrice;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_f64<E>(self, n: f64) -> Result<WirePrice, E> {
                Ok(WirePrice::Number(n))
            }
            fn visit_i64<E>(self, n: i64) -> Result<WirePrice, E> {
                Ok(WirePrice::Number(n as f64))
            }
            fn visit_u64<E>(self, n: u64) -> Result<WirePrice, E> {
                Ok(WirePrice::Number(n as f64))
            }
            fn visit_str<E>(self, text: &str) -> Result<WirePrice, E> {
                Ok(WirePrice::Text(text.to_string()))
            }
        }
        d.deserialize_any(Price)
    }
}

#[derive(Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutPrice {
    pub model_name: String,
    pub pricing_input: WirePrice,
    pub pricing_output: WirePrice,
    pub pricing_cache_read: Option<WirePrice>,
    pub pricing_cache_write: Option<WirePrice>,
    pub pricing_reasoning: Option<WirePrice>,
    pub display_name: Option<String>,
    pub provider: Option<String>,
    pub context_length: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub is_active: Option<bool>,
    /// A long-context tier: from this prompt size on, the whole request at these rates (none when absent).
    pub long_context: Option<PutLongContext>,
}

#[derive(Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutLongContext {
    pub from_prompt_tokens: u32,
    pub pricing_input: WirePrice,
    pub pricing_output: WirePrice,
    pub pricing_cache_read: Option<WirePrice>,
    pub pricing_cache_write: Option<WirePrice>,
    pub pricing_reasoning: Option<WirePrice>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SyncBody {
    pub overwrite: Option<bool>,
}

#[derive(Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Provision {
    pub email: String,
    pub name: String,
    pub limit: Option<i64>,
    #[serde(default = "monthly", deserialize_with = "present")]
    pub limit_reset: Option<Option<String>>,
    pub utm_source: Option<String>,
    pub locale: Option<String>,
}

#[derive(Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateUpstreamKey {
    #[serde(default, deserialize_with = "present")]
    pub limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub limit_reset: Option<Option<String>>,
    pub disabled: Option<bool>,
}

#[derive(Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    pub name: String,
    pub locale: Option<String>,
    pub utm_source: Option<String>,
    pub image: Option<String>,
}

#[derive(Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub email: Option<String>,
    pub name: Option<String>,
    pub locale: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub utm_source: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub image: Option<Option<String>>,
    pub email_verified: Option<bool>,
}

/// `{"limit": USD, "limit_reset": …}`, or `{"limit": null}` for no budget at all.
#[derive(Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OwnBudgetBody {
    /// Required: absent is refused rather than read as "no budget".
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(not(target_arch = "wasm32"), schema(required = true, value_type = Option<f64>))]
    pub limit: Option<Option<f64>>,
    #[serde(default)]
    pub limit_reset: Option<String>,
}
