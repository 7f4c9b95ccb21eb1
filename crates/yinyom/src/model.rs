//! Records the service keeps beside the domain core: tenants, principals
//! and their API keys, signing keys, subject rows.

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
    /// API keys and console logins (ids) with the `user` role who may see
    /// contact points in clear whatever the subject consented to.
    #[serde(default)]
    pub pii_readers: Vec<String>,
    /// Technical and organisational security measures, for the record of
    /// processing (PDPA s.39, GDPR Art. 30(1)(g)).
    #[serde(default)]
    pub security_measures: Vec<String>,
    /// The website banner: its public site key and the notice it shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner: Option<BannerSite>,
    /// The banner's current design (`/v1/tenant/banner-design`); absent:
    /// the standard look. Presentation only: never a notice change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner_design: Option<yinyom_core::banner::BannerDesign>,
    /// When reminders of deadlines go to the DPO (hours before each
    /// deadline); absent: [`Reminders::default`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminders: Option<Reminders>,
    /// How many hash chains (partitions) the tenant's ledger has: fixed
    /// when the tenant is created (the `tenants.partitions` column).
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    pub created_at: Micros,
}

fn default_partitions() -> u32 {
    yinyom_core::ledger::PARTITIONS
}

/// Hours before a deadline at which the DPO is reminded (by email and a
/// `deadline.approaching` event), per kind of deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reminders {
    /// Rights requests (due in 30 days, PDPA s.30): 7 days and 24 hours.
    #[serde(default = "Reminders::week_and_day")]
    pub requests: Vec<u32>,
    /// A breach's 72 hours to notify the regulator: 24 and 6 hours.
    #[serde(default = "Reminders::breach")]
    pub breaches: Vec<u32>,
    /// Notices to subjects whose data came from a third party (PDPA
    /// s.25, 30 days): 7 days and 24 hours.
    #[serde(default = "Reminders::week_and_day")]
    pub notices: Vec<u32>,
}

impl Reminders {
    fn week_and_day() -> Vec<u32> {
        vec![168, 24]
    }
    fn breach() -> Vec<u32> {
        vec![24, 6]
    }
}

impl Default for Reminders {
    fn default() -> Self {
        Reminders {
            requests: Reminders::week_and_day(),
            breaches: Reminders::breach(),
            notices: Reminders::week_and_day(),
        }
    }
}

/// The tenant's website banner (`/sdk/yinyom.js`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BannerSite {
    /// Public: the banner on the controller's site names the tenant by it.
    pub site_key: String,
    /// The notice (cookie notice) the banner shows and records consent to.
    pub notice: String,
    /// Origins (`https://shop.example`) the banner may record from; empty:
    /// any.
    #[serde(default)]
    pub origins: Vec<String>,
    /// IAB TCF v2.2 (`web/tcf.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcf: Option<crate::web::tcf::TcfSettings>,
    /// GPP sections, with TCF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpp: Option<crate::web::tcf::GppSettings>,
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

/// A subject's row as stored. The profile (identifiers, contact points,
/// attributes) is sealed with the subject's own data key, itself wrapped
/// by the tenant key (see [`crate::vault`]); flags stay readable because
/// decisions need them.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectRecord {
    pub id: String,
    /// Pseudonymous id (UUIDv7: random bits, time-ordered so inserts into
    /// its indexes append): the only reference the ledger keeps.
    pub uid: String,
    /// The wrapped data key; none until a profile is first written.
    pub data_key: Option<Vec<u8>>,
    pub profile: Option<Vec<u8>>,
    /// Bumped by every profile write: writers compare and swap on it.
    pub rev: i64,
    pub flags: SubjectFlags,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// A profile write: insert (`rev` none) or compare-and-swap on `rev`.
#[derive(Debug, Clone)]
pub struct ProfileWrite {
    pub id: String,
    pub uid: String,
    pub rev: Option<i64>,
    pub data_key: Vec<u8>,
    pub profile: Vec<u8>,
    /// Keyed hashes `(kind, hash)` by which the subject is found; they
    /// replace the subject's previous ones.
    pub lookups: Vec<(String, String)>,
    /// Lookup kinds a single subject owns: writing one takes it from
    /// whichever subject had it (an anonymous id linked to a person).
    pub exclusive: &'static [&'static str],
    /// New flags, or keep the stored ones.
    pub flags: Option<SubjectFlags>,
}

/// A clear-text read of personal data, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(skip)]
    pub tenant: String,
    pub at: Micros,
    /// `key:<id>` of the API key that read.
    pub actor: String,
    /// The subject's pseudonymous id.
    pub subject_uid: String,
    /// The subject's id, while it is not erased.
    pub subject: Option<String>,
    /// Which fields were shown in clear (`email`, `phone`, …).
    pub fields: Vec<String>,
    /// What the read was for (`GET /v1/subjects/{id}`, …).
    pub context: String,
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

/// A tracking source (a website, an app, a server) sending events to the
/// collector with its write key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Source {
    pub id: String,
    #[serde(skip)]
    pub tenant: String,
    pub name: String,
    /// Purposes that must all allow processing of an event's subject for
    /// the event to be kept.
    pub purposes: Vec<String>,
    /// Store allowed events (else they are only counted and forwarded).
    pub store: bool,
    /// Publish allowed events to NATS (`yinyom.<tenant>.track.<source>`).
    pub forward: bool,
    /// The write key, shown once when the source is created.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub write_key: String,
    #[serde(skip)]
    pub key_hash: String,
    /// The first characters of the write key, to recognise it.
    pub key_prefix: String,
    /// Events accepted and dropped so far (as of the last stored batch).
    pub accepted: u64,
    pub dropped: u64,
    pub created_at: Micros,
}

/// An allowed event on its way to the events table.
#[derive(Debug, Clone)]
pub struct TrackedEvent {
    pub tenant: String,
    pub id: String,
    pub source: String,
    pub subject_id: String,
    pub kind: &'static str,
    pub name: Option<String>,
    pub body: String,
    pub occurred_at: Micros,
    pub received_at: Micros,
    pub expires_at: Micros,
}

/// A stored event, as read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredEvent {
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
    pub occurred_at: Micros,
    pub received_at: Micros,
    pub expires_at: Micros,
}

/// What one collector batch adds to a source's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceCounts {
    pub tenant: String,
    pub source: String,
    pub accepted: u64,
    pub dropped: u64,
}

/// A tenant's connector for one channel, as stored (its secret sealed).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorRow {
    pub tenant: String,
    pub channel: String,
    pub config: serde_json::Value,
    pub secret: Option<Vec<u8>>,
    /// The DKIM private key (email), sealed like the secret.
    pub dkim_key: Option<Vec<u8>>,
    pub updated_at: Micros,
}

/// One message to one subject on one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    pub tenant: String,
    pub id: String,
    pub audience: Option<String>,
    pub subject_uid: String,
    /// The subject's id (none once erased); filled in on reads.
    pub subject_id: Option<String>,
    pub channel: String,
    pub purpose: String,
    /// `queued`, `retrying`, `sent`, `suppressed`, `dead`.
    pub status: String,
    pub reason: Option<String>,
    pub attempts: u32,
    pub next_at: Micros,
    /// Recipient and content, sealed with the subject's data key.
    pub content: Option<Vec<u8>>,
    pub created_at: Micros,
    pub updated_at: Micros,
}

impl MessageRow {
    /// A new message to `subject`, queued now, without content yet.
    pub fn queued(
        tenant: &str,
        subject: &SubjectRecord,
        channel: &str,
        purpose: &str,
        now: Micros,
    ) -> MessageRow {
        MessageRow {
            tenant: tenant.to_string(),
            id: format!("msg_{}", uuid::Uuid::now_v7().simple()),
            audience: None,
            subject_uid: subject.uid.clone(),
            subject_id: Some(subject.id.clone()),
            channel: channel.to_string(),
            purpose: purpose.to_string(),
            status: "queued".into(),
            reason: None,
            attempts: 0,
            next_at: now,
            content: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// A step in a message's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageLogEntry {
    pub at: Micros,
    pub status: String,
    pub detail: Option<String>,
}

/// A data-subject rights request as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRow {
    pub tenant: String,
    pub id: String,
    pub subject_uid: String,
    /// The subject's id; filled in on reads.
    pub subject_id: Option<String>,
    pub kind: yinyom_core::rights::Kind,
    pub status: yinyom_core::rights::Status,
    /// For restriction, objection, withdrawal: the purposes (`*` = all).
    pub purposes: Vec<String>,
    /// For rectification: the corrections, sealed with the subject's key.
    pub changes: Option<Vec<u8>>,
    /// How the request arrived (`api`, `email`, `preference_center`, …).
    pub via: String,
    pub received_at: Micros,
    pub due_at: Micros,
    pub extended: bool,
    pub closed_at: Option<Micros>,
    pub steps: Vec<RequestStep>,
    /// A one-time code sent to the subject to verify the requester.
    pub verification: Option<CodeSent>,
    pub updated_at: Micros,
}

/// A one-time code sent to a verified contact point: only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeSent {
    /// HMAC of the code under the tenant's lookup key.
    pub hash: String,
    pub channel: String,
    pub message: String,
    pub expires_at: Micros,
    pub attempts: u32,
}

/// One thing done to a request, by whom and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RequestStep {
    #[schema(value_type = String)]
    pub at: String,
    /// `key:<id>` of the API key that acted.
    pub actor: String,
    /// `received`, `verify`, `start`, `complete`, `reject`, `extend`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What completing it did (`data key destroyed; 3 events deleted`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// What an erasure removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    pub events: u64,
    pub messages: u64,
    pub evidence: u64,
    /// Stored responses of idempotent requests that named the subject.
    pub responses: u64,
}

/// One subject's erasure, as [`crate::store::Requests::erase_subject`]
/// carries it out.
#[derive(Debug, Clone)]
pub struct Erasure<'a> {
    pub tenant: &'a str,
    /// The controller's id for the subject, replaced by `pseudonym`.
    pub id: &'a str,
    pub uid: &'a str,
    pub pseudonym: &'a str,
    pub flags: &'a SubjectFlags,
    /// Stored receipts re-signed with the pseudonym as the principal: (id, jws).
    pub receipts: Vec<(String, String)>,
    pub at: Micros,
}

/// A personal data breach in the register, as stored (`body` of the row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breach {
    #[serde(skip)]
    pub tenant: String,
    #[serde(skip)]
    pub id: String,
    #[serde(skip)]
    pub discovered_at: Micros,
    pub description: String,
    /// Kinds of personal data involved (`email`, `health`, …).
    pub categories: Vec<String>,
    /// How many people are affected (an estimate while unknown).
    pub affected_subjects: u64,
    pub risk: yinyom_core::breach::Risk,
    pub risk_assessment: String,
    /// Measures taken or proposed to address it.
    #[serde(default)]
    pub measures: String,
    pub notifications: Vec<BreachNotification>,
    /// The notice to the people affected, sent through the relay to every
    /// recipient (`breach_recipients`), once asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_notice: Option<BreachMessage>,
    /// Who recorded it.
    pub recorded_by: String,
    #[serde(skip)]
    pub created_at: Micros,
    #[serde(skip)]
    pub updated_at: Micros,
}

impl Breach {
    /// When `to` was first told, if ever.
    pub fn first_notified(&self, to: yinyom_core::breach::Recipient) -> Option<Micros> {
        self.notifications
            .iter()
            .filter(|n| n.to == to)
            .map(|n| n.at)
            .min()
    }

    /// The regulator should have been told by `now` and was not.
    pub fn regulator_overdue(&self, now: Micros) -> bool {
        let told = self.first_notified(yinyom_core::breach::Recipient::Regulator);
        yinyom_core::breach::regulator_overdue(self.risk, self.discovered_at, told, now)
    }
}

/// A notification made about a breach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BreachNotification {
    pub to: yinyom_core::breach::Recipient,
    /// When it was made.
    pub at: Micros,
    /// The regulator's case number, the message id, …
    #[serde(default)]
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_reason: Option<String>,
    pub recorded_by: String,
}

/// Personal data acquired from a third party (PDPA s.25), and the notice
/// the subject must be given within 30 days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquisition {
    pub tenant: String,
    pub subject_uid: String,
    /// Filled in on reads.
    pub subject_id: Option<String>,
    pub source: String,
    pub acquired_at: Micros,
    pub due_at: Micros,
    pub notified_at: Option<Micros>,
    pub method: Option<String>,
    pub notice: Option<String>,
    pub recorded_by: String,
    pub updated_at: Micros,
    /// The notice sent through the relay, when it was.
    pub message_id: Option<String>,
}

/// A grant waiting for the subject's confirmation (double opt-in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptIn {
    pub tenant: String,
    pub id: String,
    pub subject_id: String,
    /// The consent request as received, sealed with the tenant key.
    pub request: Vec<u8>,
    pub actor: String,
    pub channel: String,
    pub message: String,
    pub created_at: Micros,
    pub expires_at: Micros,
    pub confirmed_at: Option<Micros>,
}

/// A person who logs in to the admin console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StaffMember {
    pub id: String,
    pub tenant: String,
    /// The login name, lower case; unique over all tenants.
    pub email: String,
    pub name: String,
    pub role: Role,
    /// PHC string (argon2id); never leaves the server.
    #[serde(skip)]
    pub password_hash: String,
    pub created_at: Micros,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<Micros>,
}

/// A logged-in console session; the cookie's value is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffSession {
    /// SHA-256 of the cookie value.
    pub hash: String,
    pub staff_id: String,
    /// Every form posted in this session must carry it.
    pub csrf: String,
    pub created_at: Micros,
    pub expires_at: Micros,
}

/// A reminder of a deadline that went out (`deadline_reminders`): claimed
/// once per `(tenant, kind, ref_id, reminder)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reminder {
    pub tenant: String,
    /// `request`, `breach` or `notice` (PDPA s.25).
    pub kind: String,
    /// The request's or breach's id; `s25:<YYYY-MM-DD>` for notices.
    pub ref_id: String,
    /// Seconds before the deadline (`"86400"`), or `missed`.
    pub reminder: String,
    pub due_at: Micros,
    pub created_at: Micros,
    /// The email to the DPO: `pending`, `sent`, `failed` (given up),
    /// `skipped` (a later reminder of the same deadline was due at once).
    pub email_status: String,
    pub email_attempts: i64,
    pub email_error: Option<String>,
}

/// A notice sent to subjects through the relay (a breach's, PDPA s.25's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreachMessage {
    /// `email`, `sms` or `line`.
    pub channel: yinyom_core::purpose::Channel,
    /// The email's subject line (email only).
    #[serde(default)]
    pub subject: Option<String>,
    pub text: String,
}

/// One person told of a breach, as `GET /v1/breaches/{id}/recipients`
/// lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BreachRecipient {
    pub subject_uid: String,
    /// The subject's id (absent once erased).
    pub subject: Option<String>,
    /// `pending` (not queued yet), `failed` (could not be queued: `error`),
    /// or the message's status: `queued`, `retrying`, `sent`, `dead`,
    /// `suppressed`.
    pub status: String,
    pub message_id: Option<String>,
    pub error: Option<String>,
}
