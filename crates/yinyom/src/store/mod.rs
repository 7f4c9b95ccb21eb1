//! Storage: one trait, one implementation per database.
//!
//! Everything durable goes through [`Store`]. Implementations scope every
//! query by tenant, and [`Store::commit`] appends consent events in one
//! transaction per batch (group commit): the ledger rows, the chain head,
//! the current state rows, the receipt and the idempotency record land
//! together or not at all, and are on disk before it returns.

pub mod hooks;
pub mod scratch;
pub mod sql;
pub mod systems;

pub use hooks::{HookCall, HookRow, Hooks};
pub use sql::{Dialect, SqlStore};
pub use systems::{Propagation, SystemJob, SystemRow, Systems};

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use yinyom_core::consent::ConsentRecord;
use yinyom_core::ledger::{Broken, LedgerEntry};
use yinyom_core::notice::{Notice, NoticeDraft};
use yinyom_core::purpose::Purpose;
use yinyom_core::rights::Status;
use yinyom_core::subject::SubjectFlags;
use yinyom_core::time::Micros;

pub use crate::model::*;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    Conflict,
    #[error("not found")]
    NotFound,
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One consent request, validated and ready to be sealed into the ledger.
#[derive(Debug, Clone)]
pub struct WriteItem {
    pub tenant: String,
    pub subject_id: String,
    pub actor: String,
    pub source: String,
    pub notice: Option<yinyom_core::notice::NoticeRef>,
    pub evidence: Option<serde_json::Value>,
    pub occurred_at: Micros,
    pub actions: Vec<PreparedAction>,
    pub idempotency: Option<Idempotency>,
    /// The signed receipt for the request's grants, made before the write
    /// (it needs nothing the ledger assigns); stored with it, and its id is
    /// chained into the grants' ledger entries.
    pub receipt: Option<StoredReceipt>,
    /// The evidence names the guardian who gave or joined the grants
    /// (PDPA s.20).
    pub guardian: bool,
}

/// Which of a tenant's requests [`Store::requests`] lists.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFilter<'a> {
    pub status: Option<Status>,
    /// Only open requests due before this.
    pub due_before: Option<Micros>,
    pub subject_uid: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct PreparedAction {
    pub purpose: String,
    pub channel: Option<yinyom_core::purpose::Channel>,
    pub action: yinyom_core::consent::Action,
    pub expires_at: Option<Micros>,
}

#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    /// SHA-256 of the request body: the same key with another body is refused.
    pub request_hash: String,
}

/// Builds an item's response once its entries are chained, inside the
/// transaction, so that an idempotent replay returns exactly the same.
pub type Sealer<'a> = &'a (dyn Fn(&WriteItem, &[LedgerEntry]) -> serde_json::Value + Send + Sync);

pub enum ItemOutcome {
    Written {
        subject_uid: String,
        entries: Vec<LedgerEntry>,
        response: serde_json::Value,
    },
    /// The idempotency key was seen before with the same body.
    Replayed { response: serde_json::Value },
    /// The idempotency key was seen before with a different body.
    KeyReused,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredReceipt {
    pub id: String,
    pub jws: String,
    pub created_at: Micros,
}

/// An event as the outbox holds it; `payload` is the JSON of a
/// [`crate::events::ConsentEvent`], sent as it is.
/// What one [`Outbox::prune_events`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrunedEvents {
    /// Outbox rows deleted.
    pub deleted: u64,
    /// Where the next call goes on (the last event looked at), or `None`
    /// when the events after this page are too new or not yet passed.
    pub next: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub seq: u64,
    pub subject_uid: String,
    pub purpose: String,
    pub kind: String,
    pub payload: String,
}

/// A subject as the view needs it at start-up.
pub struct SubjectSnapshot {
    pub tenant: String,
    pub id: String,
    pub uid: String,
    pub flags: SubjectFlags,
    pub records: Vec<ConsentRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyReport {
    pub ok: bool,
    pub checked: u64,
    pub broken: Option<Broken>,
}

/// A verification job of one tenant's ledger, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationRow {
    pub tenant: String,
    pub id: String,
    /// `running`, `done` or `failed`.
    pub status: String,
    /// The chain's length when the job started.
    pub total: u64,
    pub checked: u64,
    /// Set once done.
    pub ok: Option<bool>,
    pub broken: Option<Broken>,
    /// Why a failed job failed.
    pub error: Option<String>,
    pub started_by: String,
    pub started_at: Micros,
    pub heartbeat_at: Micros,
    pub finished_at: Option<Micros>,
}

/// A Global Vendor List (IAB TCF) as stored for a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVendorList {
    pub version: u32,
    pub url: String,
    pub fetched_at: Micros,
    pub body: String,
}

/// The IAB TCF vendor lists tenants' banners use (`store/sql/tcf.rs`).
#[async_trait]
pub trait VendorLists: Send + Sync {
    /// Keep a fetched list; a version already stored only has its
    /// `fetched_at` (and url) updated: a published version never changes.
    async fn put_vendor_list(&self, tenant: &str, list: &StoredVendorList) -> Result<()>;
    /// One version, or the newest when `version` is `None`.
    async fn vendor_list(
        &self,
        tenant: &str,
        version: Option<u32>,
    ) -> Result<Option<StoredVendorList>>;
}

/// A banner design as stored: one version of the tenant's history.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDesign {
    pub version: u64,
    pub design: yinyom_core::banner::BannerDesign,
    /// The API key or console login that saved it.
    pub created_by: String,
    pub created_at: Micros,
}

/// Banner designs with their history (`store/sql/banner.rs`).
#[async_trait]
pub trait BannerDesigns: Send + Sync {
    /// Save `t.banner_design` as the next version of the tenant's history
    /// and update the tenant, in one transaction; the new version.
    async fn save_banner_design(&self, t: &Tenant, by: &str, at: Micros) -> Result<u64>;
    /// The tenant's designs, newest first, versions below `before`.
    async fn banner_designs(
        &self,
        tenant: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StoredDesign>>;
}

/// Ledger verification: the rows in pages, the head, and the jobs.
#[async_trait]
pub trait Verifications: Send + Sync {
    /// The `seq` of the `rows`-th ledger row of `tenant` after `after`
    /// (`seq <= upto`), counting rows; `None` if fewer are left. Where a
    /// verification page of `rows` rows ends.
    async fn ledger_page_end(
        &self,
        tenant: &str,
        after: u64,
        upto: u64,
        rows: u32,
    ) -> Result<Option<u64>>;
    /// The ledger rows of `tenant` with `after < seq <= upto` (a keyset
    /// page: no long query, no long transaction), each decoded and checked
    /// on its own by `checker` on the thread that reads them, in `seq`
    /// order.
    async fn check_ledger_range(
        &self,
        tenant: &str,
        after: u64,
        upto: u64,
        checker: crate::verification::Checker,
    ) -> Result<crate::verification::Checks>;
    /// The recorded head of each partition of the tenant's ledger that
    /// has entries (its size and last hash), by partition.
    async fn ledger_partitions(&self, tenant: &str) -> Result<Vec<yinyom_core::ledger::Head>>;
    /// Entries in the tenant's ledger: the sum of its partitions' sizes.
    async fn ledger_size(&self, tenant: &str) -> Result<u64> {
        Ok(self
            .ledger_partitions(tenant)
            .await?
            .iter()
            .map(|h| h.chain.seq)
            .sum())
    }
    /// The greatest `seq` stored for the tenant (0 when none).
    async fn ledger_last_seq(&self, tenant: &str) -> Result<u64>;
    /// The first entry stored past its partition's recorded head (written
    /// behind the service's back): its `seq`, if there is one. Each
    /// partition is compared with its head in one statement, so a write
    /// committing meanwhile is never mistaken for one.
    async fn ledger_past_heads(&self, tenant: &str) -> Result<Option<u64>>;
    /// Record a new running job; `Conflict` if the tenant has one running.
    async fn insert_verification(&self, v: &VerificationRow) -> Result<()>;
    async fn verification(&self, tenant: &str, id: &str) -> Result<Option<VerificationRow>>;
    /// The tenant's jobs, newest first.
    async fn verifications(&self, tenant: &str, limit: u32) -> Result<Vec<VerificationRow>>;
    /// A running job's progress and heartbeat; false if it is no longer
    /// running (marked failed as stale), so the job should stop.
    async fn progress_verification(
        &self,
        tenant: &str,
        id: &str,
        checked: u64,
        at: Micros,
    ) -> Result<bool>;
    /// Store a job's outcome (status, checked, ok, broken, error,
    /// finished_at) if it is still running.
    async fn finish_verification(&self, v: &VerificationRow) -> Result<bool>;
    /// Mark running jobs whose last heartbeat is before `stale_before` as
    /// failed (their process died); returns how many.
    async fn expire_verifications(&self, stale_before: Micros, at: Micros) -> Result<u64>;
}

/// A change committed by some process sharing the database, announced to
/// every node so that each keeps its in-memory view exact.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Change {
    /// New ledger entries of the tenant, up to `upto` (the last `seq` the
    /// batch wrote; 0 when not known). On PostgreSQL a follower may not
    /// see them at once: readers take entries below the horizon of
    /// transactions still running, so it reads again until it has.
    Ledger {
        tenant: String,
        #[serde(default)]
        upto: u64,
    },
    Purposes {
        tenant: String,
    },
    Notices {
        tenant: String,
    },
    /// A subject's flags (restriction, objection, erasure) changed.
    Subject {
        tenant: String,
        id: String,
    },
    /// An API key was created or revoked.
    Keys,
    /// A tenant was created or its settings changed.
    Tenant {
        id: String,
    },
    /// The feed was interrupted: anything may have changed meanwhile.
    Resync,
}

pub type ChangeFeed = tokio::sync::mpsc::Receiver<Change>;

/// Profiles and who read them: sealed blobs and keyed hashes only, the
/// store never sees personal data in clear.
#[async_trait]
pub trait Profiles: Send + Sync {
    /// A tenant's wrapped key, if made.
    async fn tenant_key(&self, tenant: &str) -> Result<Option<Vec<u8>>>;
    /// Store a tenant's wrapped key unless one exists (the first wins).
    async fn insert_tenant_key(&self, tenant: &str, master_id: &str, wrapped: &[u8]) -> Result<()>;
    /// Insert (`w.rev` none) or update if the stored rev is still `w.rev`;
    /// false when another writer came first (read again and retry).
    async fn put_profile(&self, tenant: &str, w: &ProfileWrite, at: Micros) -> Result<bool>;
    /// Subjects found by a keyed hash.
    async fn subjects_by_lookup(
        &self,
        tenant: &str,
        kind: &str,
        hash: &str,
    ) -> Result<Vec<SubjectRecord>>;
    /// Subjects still holding identifiers or attributes in clear (written
    /// before profiles were encrypted): (tenant, id, identifiers, attributes).
    /// The id of the subject with pseudonymous id `uid` (none once erased).
    async fn subject_id(&self, tenant: &str, uid: &str) -> Result<Option<String>>;
    /// Every subject of the tenant with a profile, in pages by id after `after`
    /// (the primary key's order, so a page is an index range).
    async fn profiles(&self, tenant: &str, after: &str, limit: u32) -> Result<Vec<SubjectRecord>>;
    async fn clear_profiles(&self, limit: u32) -> Result<Vec<(String, String, String, String)>>;
    async fn insert_audit(&self, entries: &[AuditEntry]) -> Result<()>;
    /// The tenant's audit log, newest first, before id `before`.
    async fn audit(&self, tenant: &str, before: Option<i64>, limit: u32)
    -> Result<Vec<AuditEntry>>;
}

/// The tracking collector's sources and the events they may keep.
#[async_trait]
pub trait Events: Send + Sync {
    async fn insert_source(&self, s: &Source) -> Result<()>;
    /// Live sources of one tenant, or of every tenant (`None`).
    async fn sources(&self, tenant: Option<&str>) -> Result<Vec<Source>>;
    /// Returns whether a live source was deleted.
    async fn delete_source(&self, tenant: &str, id: &str, at: Micros) -> Result<bool>;
    /// Store allowed events (subjects are created as needed; a message id
    /// seen before is kept once) and add to the sources' counters, in one
    /// transaction.
    async fn store_events(&self, events: &[TrackedEvent], counts: &[SourceCounts]) -> Result<()>;
    /// Per subject uid, how many events named `name` occurred at or after `since`.
    async fn event_counts(
        &self,
        tenant: &str,
        name: &str,
        since: Micros,
    ) -> Result<HashMap<String, u64>>;
    /// A subject's stored events, newest first.
    async fn subject_events(&self, tenant: &str, uid: &str, limit: u32)
    -> Result<Vec<StoredEvent>>;
    /// Delete events whose retention ended before `now`; returns how many.
    async fn expire_events(&self, now: Micros) -> Result<u64>;
}

/// The messaging relay: connectors and messages.
#[async_trait]
pub trait Messages: Send + Sync {
    async fn put_connector(&self, c: &ConnectorRow) -> Result<()>;
    async fn connectors(&self, tenant: &str) -> Result<Vec<ConnectorRow>>;
    /// Insert messages with their first log entry (`queued` or `suppressed`
    /// with the reason).
    async fn insert_messages(&self, messages: &[MessageRow]) -> Result<()>;
    async fn message(&self, tenant: &str, id: &str) -> Result<Option<MessageRow>>;
    async fn message_log(&self, tenant: &str, id: &str) -> Result<Vec<MessageLogEntry>>;
    /// A subject's messages, oldest first.
    async fn subject_messages(&self, tenant: &str, uid: &str) -> Result<Vec<MessageRow>>;
    /// Messages `queued` or `retrying` and due at `now`, oldest first.
    async fn due_messages(&self, now: Micros, limit: u32) -> Result<Vec<MessageRow>>;
    /// Record an attempt's outcome (new status, reason, attempts, next_at)
    /// and log it; the content is dropped once the message is final.
    async fn settle_message(&self, m: &MessageRow, detail: Option<&str>) -> Result<()>;
    /// Per (status, reason), how many messages of an audience send.
    async fn audience_counts(
        &self,
        tenant: &str,
        audience: &str,
    ) -> Result<Vec<(String, Option<String>, u64)>>;
}

/// Data-subject rights requests, erasure, lifecycle queries and the
/// breach register.
#[async_trait]
pub trait Requests: Send + Sync {
    /// Record (or replace) where a subject's data was acquired.
    async fn put_acquisition(&self, a: &Acquisition) -> Result<()>;
    async fn acquisition(&self, tenant: &str, uid: &str) -> Result<Option<Acquisition>>;
    /// A tenant's acquisitions, the soonest due first; only those not yet
    /// notified when `pending`.
    /// A page of them, after `after` (the previous page's last
    /// `(due_at, subject_uid)`), at most `limit`; only those due before
    /// `due_before` when given (which implies `pending`).
    async fn acquisitions(
        &self,
        tenant: &str,
        pending: bool,
        due_before: Option<Micros>,
        after: Option<(Micros, &str)>,
        limit: u32,
    ) -> Result<Vec<Acquisition>>;
    async fn insert_opt_in(&self, o: &OptIn) -> Result<()>;
    async fn opt_in(&self, tenant: &str, id: &str) -> Result<Option<OptIn>>;
    /// Mark confirmed unless it already was; whether this call did.
    async fn confirm_opt_in(&self, tenant: &str, id: &str, at: Micros) -> Result<bool>;
    /// Claim a deadline's reminder: inserted unless it exists (on any
    /// node); whether this call did.
    async fn claim_reminder(&self, r: &Reminder) -> Result<bool>;
    /// Reminders whose email to the DPO is still `pending`, oldest first.
    async fn reminders_to_email(&self, limit: u32) -> Result<Vec<Reminder>>;
    /// Store a reminder's email status, attempts and error.
    async fn settle_reminder(&self, r: &Reminder) -> Result<()>;
    /// The reminders of one deadline, in the order they went out.
    async fn reminders(&self, tenant: &str, kind: &str, ref_id: &str) -> Result<Vec<Reminder>>;
    /// PDPA s.25 notices not yet given that are due in `[from, to)`,
    /// grouped by the UTC day of their deadline: (day start, how many, the
    /// first deadline of the day). A range of `acquisitions_pending`.
    async fn pending_notices_by_day(
        &self,
        tenant: &str,
        from: Micros,
        to: Micros,
    ) -> Result<Vec<(Micros, u64, Micros)>>;
    /// Record people affected by a breach (by uid); how many were new.
    async fn add_breach_recipients(
        &self,
        tenant: &str,
        breach: &str,
        uids: &[String],
        at: Micros,
    ) -> Result<u64>;
    /// Up to `limit` of a breach's recipients not yet queued, by uid.
    async fn pending_breach_recipients(
        &self,
        tenant: &str,
        breach: &str,
        limit: u32,
    ) -> Result<Vec<String>>;
    /// In one transaction: the messages queued (and their log's first
    /// line), their recipients marked `queued`, and those that could not be
    /// queued marked `failed` with the reason: (uid, error).
    async fn queue_breach_messages(
        &self,
        tenant: &str,
        breach: &str,
        queued: &[MessageRow],
        failed: &[(String, String)],
    ) -> Result<()>;
    /// A breach's recipients per status (a queued one's is its message's).
    async fn breach_recipient_counts(
        &self,
        tenant: &str,
        breach: &str,
    ) -> Result<BTreeMap<String, u64>>;
    /// A page of a breach's recipients, by uid after `after`.
    async fn breach_recipients(
        &self,
        tenant: &str,
        breach: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<BreachRecipient>>;
    async fn insert_breach(&self, b: &Breach) -> Result<()>;
    /// A tenant's breaches, the latest discovered first.
    async fn breaches(&self, tenant: Option<&str>) -> Result<Vec<Breach>>;
    async fn breach(&self, tenant: &str, id: &str) -> Result<Option<Breach>>;
    /// Write if still as `expected_updated_at` says; false otherwise.
    async fn update_breach(&self, b: &Breach, expected_updated_at: Micros) -> Result<bool>;
    async fn insert_request(&self, r: &RequestRow) -> Result<()>;
    /// Refresh the planner's statistics where they are stale (SQLite's
    /// `PRAGMA optimize`; PostgreSQL's autovacuum does this by itself).
    async fn optimize(&self) -> Result<()>;
    async fn request(&self, tenant: &str, id: &str) -> Result<Option<RequestRow>>;
    /// A subject's requests, by due date (the duplicate check of a new
    /// request, the access bundle, retention): a seek on
    /// `(tenant, subject_uid)`, whatever the tenant holds.
    async fn subject_requests(&self, tenant: &str, uid: &str) -> Result<Vec<RequestRow>>;
    /// One page of a tenant's requests, by `(due_at, id)`, after `after`
    /// (the last row of the previous page), at most `limit`: only in
    /// `status` when given; only open ones due before `due_before` when
    /// given; only one subject's when given.
    async fn requests(
        &self,
        tenant: &str,
        filter: &RequestFilter<'_>,
        after: Option<(Micros, &str)>,
        limit: u32,
    ) -> Result<Vec<RequestRow>>;
    /// Write a request's new state if it is still as `expected_updated_at`
    /// says; false when someone else changed it first.
    async fn update_request(&self, r: &RequestRow, expected_updated_at: Micros) -> Result<bool>;
    /// Crypto-shred a subject in one transaction: drop its wrapped data key
    /// and sealed profile, lookups, events, message contents and errors,
    /// consent evidence, sealed request data, held opt-ins and stored
    /// responses that name it; replace its id by its pseudonym (the
    /// subject row, receipts); set `flags` (erased).
    async fn erase_subject(&self, e: &Erasure<'_>) -> Result<Erased>;
    /// Forget stored responses of idempotent requests written before
    /// `before`, at most `limit` (oldest first); returns how many.
    async fn expire_idempotency_keys(&self, before: Micros, limit: u32) -> Result<u64>;
    /// Grants past their validity at `now` that no `expire` entry closed
    /// yet: (tenant, subject id, purpose, channel or "", expires_at).
    async fn due_expiries(
        &self,
        now: Micros,
        limit: u32,
    ) -> Result<Vec<(String, String, String, String, Micros)>>;
    /// Make deleted data unrecoverable from the database files where the
    /// engine allows (SQLite: checkpoint and truncate the WAL).
    async fn purge_deleted(&self) -> Result<()>;
    /// Copy the write-ahead log into the database file and empty it
    /// (SQLite; nothing to do on PostgreSQL): after a bulk write such as an
    /// import, so that the data is on disk once.
    async fn truncate_wal(&self) -> Result<()>;
}

/// Staff of the admin console and their sessions.
#[async_trait]
pub trait StaffStore: Send + Sync {
    /// Fails with `Conflict` when the email is taken.
    async fn insert_staff(&self, s: &StaffMember) -> Result<()>;
    async fn staff_by_email(&self, email: &str) -> Result<Option<StaffMember>>;
    async fn staff(&self, tenant: &str) -> Result<Vec<StaffMember>>;
    /// Disable a member and end their sessions; false when unknown.
    async fn disable_staff(&self, tenant: &str, id: &str, at: Micros) -> Result<bool>;
    async fn insert_session(&self, s: &StaffSession) -> Result<()>;
    /// A live session and its (enabled) member.
    async fn session(&self, hash: &str, now: Micros)
    -> Result<Option<(StaffSession, StaffMember)>>;
    async fn delete_session(&self, hash: &str) -> Result<()>;
    /// The console's dashboard: ledger entries per UTC day (of
    /// `occurred_at`), purpose, channel and action, from the day of
    /// `since` on; counted as they are written, so the cost is the days'
    /// rows, not the ledger's.
    async fn daily_choices(&self, tenant: &str, since: Micros) -> Result<Vec<DailyChoices>>;
    /// Suppressed messages per reason.
    async fn suppressions(&self, tenant: &str) -> Result<Vec<(String, i64)>>;
}

/// How many `action`s on (`purpose`, `channel`) were made on `day` (days
/// since 1970-01-01, UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyChoices {
    pub day: i64,
    pub purpose: String,
    pub channel: Option<String>,
    pub action: String,
    pub count: i64,
}

/// Tenants and what is registered per tenant: API keys, purposes, notice
/// versions; and the server's receipt-signing keys.
#[async_trait]
pub trait Registry: Send + Sync {
    async fn tenants(&self) -> Result<Vec<Tenant>>;
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<()>;
    async fn update_tenant(&self, tenant: &Tenant) -> Result<()>;

    async fn insert_api_key(&self, key: &ApiKey) -> Result<()>;
    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>>;
    async fn api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>>;
    /// Returns the key if it existed in the tenant.
    async fn revoke_api_key(&self, tenant: &str, id: &str, at: Micros) -> Result<Option<ApiKey>>;

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRow>>;
    async fn insert_signing_key(&self, key: &SigningKeyRow) -> Result<()>;
    /// Replace a key's stored secret if it is still `old` (sealing a key
    /// stored in clear by an earlier version).
    async fn reseal_signing_key(&self, kid: &str, old: &[u8], new: &[u8]) -> Result<()>;

    async fn insert_purpose(&self, tenant: &str, purpose: &Purpose, at: Micros) -> Result<()>;
    async fn update_purpose(&self, tenant: &str, purpose: &Purpose, at: Micros) -> Result<()>;
    async fn purposes(&self, tenant: &str) -> Result<Vec<Purpose>>;

    /// Publish `draft` as the next version of its key.
    async fn publish_notice(&self, tenant: &str, draft: NoticeDraft, at: Micros) -> Result<Notice>;
    /// Every version of every notice of the tenant, oldest first.
    async fn notices(&self, tenant: &str) -> Result<Vec<Notice>>;
}

/// The outbox as its consumers see it: events after a cursor, webhook
/// endpoints and their deliveries (retries, dead letters, replay), and the
/// cursors of the other sinks (NATS).
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Up to `limit` outbox events of `tenant` after `seq`, oldest first.
    async fn events_after(&self, tenant: &str, seq: u64, limit: u32) -> Result<Vec<OutboxEvent>>;
    /// The seq of the tenant's newest event (0 when none).
    async fn last_event(&self, tenant: &str) -> Result<u64>;
    /// Forget old events of `tenant`: of the (up to `limit`) events after
    /// `after`, oldest first, those every consumer has passed (each live
    /// webhook's cursor and every sink's cursor), recorded before `before`
    /// and not waiting in an undelivered (pending or dead) delivery. The
    /// ledger keeps every entry; only the outbox row (the event's before
    /// and after state) goes.
    async fn prune_events(
        &self,
        tenant: &str,
        after: u64,
        before: Micros,
        limit: u32,
    ) -> Result<PrunedEvents>;
    /// The greatest seq of `tenant` whose event was forgotten (0: none): a
    /// reader resuming before it has missed events.
    async fn events_pruned_upto(&self, tenant: &str) -> Result<u64>;

    async fn insert_webhook(&self, w: &Webhook) -> Result<()>;
    /// Live endpoints of one tenant, or of every tenant (`None`).
    async fn webhooks(&self, tenant: Option<&str>) -> Result<Vec<Webhook>>;
    /// Returns whether a live endpoint was deleted.
    async fn delete_webhook(&self, tenant: &str, id: &str, at: Micros) -> Result<bool>;
    /// Subjects with a pending delivery to the endpoint: their new events
    /// must wait behind it.
    async fn pending_subjects(&self, tenant: &str, webhook: &str) -> Result<Vec<String>>;
    /// Pending deliveries due at `now`, oldest first: per endpoint and
    /// subject only the earliest undelivered one, so that each subject's
    /// events arrive in order.
    async fn due_deliveries(&self, now: Micros, limit: u32) -> Result<Vec<DueDelivery>>;
    /// Record a dispatch round in one transaction: deliveries of new
    /// events (with their first attempt, or none yet), further attempts of
    /// queued ones, and each endpoint's new cursor (tenant, webhook, seq).
    async fn settle(
        &self,
        new: &[(DueDelivery, Option<Attempt>)],
        retried: &[(DueDelivery, Attempt)],
        cursors: &[(String, String, u64)],
    ) -> Result<()>;
    /// An endpoint's deliveries, newest first, optionally of one status.
    async fn deliveries(
        &self,
        tenant: &str,
        webhook: &str,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>>;
    /// Queue dead deliveries again (all of the endpoint's, or those of the
    /// given seqs); returns how many.
    async fn replay(
        &self,
        tenant: &str,
        webhook: &str,
        seqs: Option<&[u64]>,
        at: Micros,
    ) -> Result<u64>;
    /// How far `sink` has published the tenant's outbox (0: nothing yet).
    async fn sink_cursor(&self, sink: &str, tenant: &str) -> Result<u64>;
    async fn set_sink_cursor(&self, sink: &str, tenant: &str, seq: u64) -> Result<()>;
}

/// The consent ledger: the one write path (a batch of consent requests,
/// sealed and committed durably with its outbox rows), idempotency, and
/// reading history back.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Seal and persist a batch of consent requests in one durable
    /// transaction. Outcomes are in the order of `items`.
    async fn commit(&self, items: &[WriteItem], seal: Sealer<'_>) -> Result<Vec<ItemOutcome>>;
    /// How many batches may be committing at once: one where the database
    /// takes one writer at a time (SQLite); several where batches of
    /// different partitions do not wait on each other (PostgreSQL).
    fn write_lanes(&self) -> usize {
        1
    }
    /// Which of `lanes` writer lanes `item` goes to: a function of its
    /// ledger partition, so that batches of different lanes append to
    /// different partitions and never wait on each other's locks (and a
    /// subject's requests stay in one lane, in order).
    fn lane_of(&self, _item: &WriteItem, _lanes: usize) -> usize {
        0
    }
    async fn idempotent_response(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<(String, serde_json::Value)>>;

    /// Ledger entries of one subject, oldest first.
    async fn history(&self, tenant: &str, subject_uid: &str) -> Result<Vec<LedgerEntry>>;
    async fn receipts(&self, tenant: &str, subject_uid: &str) -> Result<Vec<StoredReceipt>>;
    /// The evidence kept beside a subject's ledger entries (seq → evidence);
    /// erasure deletes it, the chain keeps its hash.
    async fn evidence(
        &self,
        tenant: &str,
        subject_uid: &str,
    ) -> Result<std::collections::BTreeMap<u64, serde_json::Value>>;
    /// Each tenant's stable point: the greatest `seq` such that every entry
    /// up to it is committed and no entry at or below it can appear later
    /// (on PostgreSQL, below the horizon of transactions still running).
    /// A reader starting from it misses nothing.
    async fn heads(&self) -> Result<HashMap<String, u64>>;
    /// Up to `limit` ledger entries of `tenant` after `seq`, oldest first,
    /// each with its subject's id (`None` once erased).
    async fn ledger_after(
        &self,
        tenant: &str,
        seq: u64,
        limit: u32,
    ) -> Result<Vec<(Option<String>, LedgerEntry)>>;
    /// The tenant's whole ledger, oldest first, with subject identifiers
    /// resolved (erased subjects resolve to none).
    async fn ledger(&self, tenant: &str) -> Result<Vec<(Option<String>, LedgerEntry)>>;
}

/// Current consent state (`consent_states`, the fold of the ledger), as the
/// decision view loads it.
#[async_trait]
pub trait CurrentState: Send + Sync {
    /// Up to about `limit` current-state rows of `tenant` after the subject
    /// `after_id`, in subject id order, as whole subjects with their records
    /// (the view loads page by page; flags are read by `flagged_subjects`).
    async fn states_page(
        &self,
        tenant: &str,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<SubjectSnapshot>>;
    /// Every subject of `tenant` with a flag set (erased, restricted,
    /// objected, age), by id.
    async fn flagged_subjects(&self, tenant: &str) -> Result<Vec<(String, SubjectFlags)>>;
    /// One subject's current consent records (none for an unknown subject).
    async fn subject_states(&self, tenant: &str, id: &str) -> Result<Vec<ConsentRecord>>;
}

/// Every aggregate of durable state behind one object (each in its
/// supertrait); here what concerns the store as a whole: liveness, its
/// identity, subjects' rows, the change feed between nodes, the lead.
#[async_trait]
pub trait Store:
    Ledger
    + CurrentState
    + Registry
    + Outbox
    + Profiles
    + Events
    + Messages
    + Requests
    + StaffStore
    + Verifications
    + Checkpoints
    + VendorLists
    + BannerDesigns
    + Systems
    + Hooks
    + Send
    + Sync
    + 'static
{
    /// Cheap round trip for readiness.
    async fn ping(&self) -> Result<()>;

    /// A subject's row (profile still sealed).
    async fn subject(&self, tenant: &str, id: &str) -> Result<Option<SubjectRecord>>;

    /// A random id this database was given when created: files derived
    /// from it (the view's snapshot) name it.
    async fn store_id(&self) -> Result<String>;
    /// Recompute the tenant's hash chain from the stored rows, on every
    /// core (see [`crate::verification`]).
    async fn verify_ledger(&self, tenant: &str) -> Result<VerifyReport> {
        let progress = std::sync::atomic::AtomicU64::new(0);
        crate::verification::verify(self, tenant, &Default::default(), &progress).await
    }
    /// Changes committed by any process sharing the database, for stores
    /// that several nodes can share (PostgreSQL); `None` for a store with a
    /// single process (SQLite, whose data directory is locked).
    async fn follow(&self) -> Result<Option<ChangeFeed>>;
    /// Subjects whose row changed at or after `since`: (tenant, id, flags).
    async fn subjects_changed_since(
        &self,
        since: Micros,
    ) -> Result<Vec<(String, String, SubjectFlags)>>;

    /// Take (or confirm) the dispatcher's lead among the nodes sharing the
    /// database; only the leader delivers.
    async fn lead(&self) -> Result<bool>;
}

/// Settings kept as JSON beside a tenant.
pub type Settings = BTreeMap<String, serde_json::Value>;

/// A signed checkpoint of a tenant's ledger (a signed tree head).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointRow {
    pub tenant: String,
    pub number: u64,
    /// Entries covered.
    pub size: u64,
    /// Hex: the root the checkpoint signs.
    pub root: String,
    /// The signed claims.
    pub body: serde_json::Value,
    /// `body` signed with the receipt key (JWS compact, EdDSA).
    pub jws: String,
    pub created_at: Micros,
}

/// The Merkle trees over the ledger and their signed checkpoints (see
/// [`crate::checkpoint`]).
#[async_trait]
pub trait Checkpoints: Send + Sync {
    /// The `seq` and hash (hex) of partition `part`'s entries at positions
    /// `after < pseq <= upto`, in order.
    async fn entry_hashes(
        &self,
        tenant: &str,
        part: u32,
        after: u64,
        upto: u64,
    ) -> Result<Vec<(u64, String)>>;
    /// The stored perfect subtrees among `wanted` (levels ≥
    /// [`yinyom_core::merkle::STORED_LEVEL`]).
    async fn merkle_nodes(
        &self,
        tenant: &str,
        part: u32,
        wanted: &[yinyom_core::merkle::Subtree],
    ) -> Result<HashMap<yinyom_core::merkle::Subtree, yinyom_core::merkle::Hash>>;
    /// Store subtrees (already stored ones are left as they are: a
    /// subtree's hash never changes).
    async fn insert_merkle_nodes(
        &self,
        tenant: &str,
        part: u32,
        nodes: &[(yinyom_core::merkle::Subtree, yinyom_core::merkle::Hash)],
    ) -> Result<()>;
    /// Store a checkpoint; false if its number is taken (another node made
    /// it first).
    async fn insert_checkpoint(&self, c: &CheckpointRow) -> Result<bool>;
    /// Checkpoint `number`, or the latest when `None`.
    async fn checkpoint(&self, tenant: &str, number: Option<u64>) -> Result<Option<CheckpointRow>>;
    /// Checkpoints numbered below `before` (all when `None`), newest first.
    async fn checkpoints(
        &self,
        tenant: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<CheckpointRow>>;
    /// A receipt by its id, and the subject (uid) it was given to.
    async fn receipt(&self, tenant: &str, id: &str) -> Result<Option<(String, StoredReceipt)>>;
}
