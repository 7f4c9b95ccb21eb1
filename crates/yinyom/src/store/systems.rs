//! [`Systems`]: connected systems (the tenant's databases and teams that
//! rights requests and consent changes reach), the work a request does in
//! each, and consent propagation per subject. Implemented in
//! `store/sql/systems.rs`; the logic is in [`crate::systems`].

use async_trait::async_trait;
use yinyom_core::time::Micros;

use super::Result;

/// A connected system as stored (its connection URL sealed).
#[derive(Debug, Clone, PartialEq)]
pub struct SystemRow {
    pub tenant: String,
    pub key: String,
    pub name: String,
    pub kind: String,
    /// The data map and settings, without secrets.
    pub config: serde_json::Value,
    /// The connection URL, sealed with the tenant key.
    pub secret: Option<Vec<u8>>,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// What one rights request does in one system, and how far it got.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemJob {
    pub tenant: String,
    pub request_id: String,
    pub system: String,
    /// `pending`, `running`, `done`, `failed`, `manual`.
    pub status: String,
    pub rows: i64,
    pub error: Option<String>,
    pub attempts: i64,
    /// When it is due (pending, failed) or its lease ends (running).
    pub next_at: Option<Micros>,
    pub finished_at: Option<Micros>,
    /// Per table: action, rows, reason; a staff note.
    pub detail: Option<serde_json::Value>,
    /// Sealed: the subject's identifiers and corrections (dropped when done).
    pub payload: Option<Vec<u8>>,
    /// Sealed: the rows an access request collected.
    pub result: Option<Vec<u8>>,
    pub updated_at: Micros,
}

/// A consent change carried to one system's consent columns for a subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Propagation {
    pub tenant: String,
    pub subject_uid: String,
    pub system: String,
    /// `pending`, `running`, `done`, `failed`.
    pub status: String,
    pub rows: i64,
    pub error: Option<String>,
    pub attempts: i64,
    pub next_at: Option<Micros>,
    pub finished_at: Option<Micros>,
    /// Sealed: identifiers and the values to set.
    pub payload: Option<Vec<u8>>,
    pub updated_at: Micros,
}

#[async_trait]
pub trait Systems: Send + Sync {
    /// Insert or replace a system; whether it was new.
    async fn put_system(&self, s: &SystemRow) -> Result<bool>;
    async fn system(&self, tenant: &str, key: &str) -> Result<Option<SystemRow>>;
    async fn systems(&self, tenant: &str) -> Result<Vec<SystemRow>>;
    async fn delete_system(&self, tenant: &str, key: &str) -> Result<bool>;
    /// Jobs of requests that are not finished in a system.
    async fn open_system_jobs(&self, tenant: &str, system: &str) -> Result<u64>;

    /// Insert jobs (a job that exists is left as it is).
    async fn insert_system_jobs(&self, jobs: &[SystemJob]) -> Result<()>;
    async fn request_system_jobs(&self, tenant: &str, request_id: &str) -> Result<Vec<SystemJob>>;
    /// Jobs due at `now`: pending or failed ones whose time came, running
    /// ones whose lease ran out (their node stopped).
    async fn due_system_jobs(&self, now: Micros, limit: u32) -> Result<Vec<SystemJob>>;
    /// Write a job read at `expected_updated_at`; false if it changed since.
    async fn update_system_job(&self, j: &SystemJob, expected_updated_at: Micros) -> Result<bool>;

    /// Insert or replace a subject's propagation to a system.
    async fn put_propagation(&self, p: &Propagation) -> Result<()>;
    async fn propagations(&self, tenant: &str, subject_uid: &str) -> Result<Vec<Propagation>>;
    async fn due_propagations(&self, now: Micros, limit: u32) -> Result<Vec<Propagation>>;
    async fn update_propagation(
        &self,
        p: &Propagation,
        expected_updated_at: Micros,
    ) -> Result<bool>;
}
