//! Records the service keeps beside the domain core: tenants, principals
//! and their API keys, signing keys, subject rows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use yinyom_core::purpose::Lang;
use yinyom_core::subject::SubjectFlags;
use yinyom_core::time::Micros;

/// One organisation: the data controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub dpo: Dpo,
    /// Jurisdictions whose law applies: `TH` (PDPA), `EU` (GDPR).
    pub jurisdictions: Vec<String>,
    pub default_lang: Lang,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_url: Option<String>,
    pub created_at: Micros,
}

/// The data protection officer named on receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Dpo {
    pub name: String,
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    User,
    Service,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::User, Role::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::User => "user",
            Role::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// An API key as stored: only its SHA-256 hash, never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub tenant: String,
    pub role: Role,
    pub label: String,
    pub hash: String,
    /// The first characters of the key, to recognise it in listings.
    pub prefix: String,
    pub created_at: Micros,
    pub revoked_at: Option<Micros>,
}

/// A receipt-signing key. Retired keys stay published so old receipts
/// still verify.
#[derive(Debug, Clone)]
pub struct SigningKeyRow {
    pub kid: String,
    pub secret: Vec<u8>,
    pub created_at: Micros,
}

/// What `PUT /v1/subjects/{id}` sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectUpdate {
    #[serde(skip)]
    pub id: String,
    /// `customer_id`, `email`, `phone`, `line_id`, `anonymous_id`.
    #[serde(default)]
    pub identifiers: BTreeMap<String, String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub flags: Option<SubjectFlags>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubjectRow {
    pub id: String,
    /// Pseudonymous id (UUIDv7: random bits, time-ordered so inserts into
    /// its indexes append): the only reference the ledger keeps.
    pub uid: String,
    pub identifiers: BTreeMap<String, String>,
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub flags: SubjectFlags,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// A webhook endpoint: consent events matching its filters are POSTed to
/// `url`, signed per the Standard Webhooks spec with `secret`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    pub id: String,
    #[serde(skip)]
    pub tenant: String,
    pub url: String,
    /// Event types delivered; empty: all.
    pub events: Vec<String>,
    /// Purposes whose events are delivered; empty: all.
    pub purposes: Vec<String>,
    pub description: String,
    /// `whsec_…`: shown once, when the endpoint is created.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub secret: String,
    /// Deliveries exist for every matching event up to this seq.
    #[serde(skip)]
    pub cursor: u64,
    pub created_at: Micros,
}

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// The event's seq (its id is `evt_<tenant>_<seq>`).
    pub seq: u64,
    /// `pending` (retrying), `delivered`, or `dead` (gave up; replayable).
    pub status: String,
    pub attempts: u32,
    /// When the next attempt is due (pending deliveries).
    pub next_at: Micros,
    pub last_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// A delivery due now, with what it takes to send it.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub tenant: String,
    pub webhook: String,
    pub seq: u64,
    pub subject_uid: String,
    pub attempts: u32,
    pub created_at: Micros,
    pub url: String,
    pub secret: String,
    pub payload: String,
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub status: &'static str,
    pub next_at: Micros,
    pub code: Option<u16>,
    pub error: Option<String>,
    pub at: Micros,
}
