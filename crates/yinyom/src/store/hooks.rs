//! [`Hooks`]: request hooks (endpoints a rights request calls before
//! approval, before execution and after it) and their calls per request.
//! Implemented in `store/sql/hooks.rs`; the logic is in [`crate::hooks`].

use async_trait::async_trait;
use yinyom_core::time::Micros;

use super::Result;

/// A registered hook (its signing secret sealed).
#[derive(Debug, Clone, PartialEq)]
pub struct HookRow {
    pub tenant: String,
    pub id: String,
    pub name: String,
    pub url: String,
    /// `pre_approval`, `pre_execution`, `post_execution`.
    pub stage: String,
    /// Request kinds it is called for; empty: every kind.
    pub kinds: Vec<String>,
    /// `whsec_…`, sealed with the tenant key.
    pub secret: Vec<u8>,
    pub timeout_ms: i64,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// One hook's call for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct HookCall {
    pub tenant: String,
    pub request_id: String,
    pub hook: String,
    pub stage: String,
    /// `pending`, `approved`, `denied`, `failed`, `delivered`, `skipped`.
    pub status: String,
    pub reason: Option<String>,
    pub error: Option<String>,
    pub attempts: i64,
    /// Due (pending, failed) or the end of an attempt's lease; none while
    /// a reply is awaited or once settled.
    pub next_at: Option<Micros>,
    pub answered_at: Option<Micros>,
    pub created_at: Micros,
    pub updated_at: Micros,
}

#[async_trait]
pub trait Hooks: Send + Sync {
    /// Insert or replace a hook.
    async fn put_hook(&self, h: &HookRow) -> Result<()>;
    async fn hook(&self, tenant: &str, id: &str) -> Result<Option<HookRow>>;
    async fn hooks(&self, tenant: &str) -> Result<Vec<HookRow>>;
    async fn delete_hook(&self, tenant: &str, id: &str) -> Result<bool>;

    /// Insert calls (a call that exists is left as it is).
    async fn insert_hook_calls(&self, calls: &[HookCall]) -> Result<()>;
    async fn request_hook_calls(&self, tenant: &str, request_id: &str) -> Result<Vec<HookCall>>;
    /// A call by its request and hook, whatever the tenant (the reply
    /// endpoint's lookup; request ids are unique).
    async fn hook_call(&self, request_id: &str, hook: &str) -> Result<Option<HookCall>>;
    /// Calls due at `now` (to send, to retry, or whose lease ran out).
    async fn due_hook_calls(&self, now: Micros, limit: u32) -> Result<Vec<HookCall>>;
    /// Make a hook's calls not answered yet due at `now` (the hook was
    /// removed: the task settles them); how many.
    async fn wake_hook_calls(&self, tenant: &str, hook: &str, now: Micros) -> Result<u64>;
    /// Write a call read at `expected_updated_at`; false if it changed since.
    async fn update_hook_call(&self, c: &HookCall, expected_updated_at: Micros) -> Result<bool>;
}
