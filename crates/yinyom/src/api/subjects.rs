//! `/v1/subjects`: data subjects, their current consents and history.

use std::sync::Arc;

use axum::extract::State;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use yinyom_core::consent::{ConsentRecord, ConsentState, NoticeVersion};
use yinyom_core::ledger::LedgerEntry;
use yinyom_core::notice::NoticeRef;
use yinyom_core::purpose::Channel;
use yinyom_core::subject;
use yinyom_core::time;

use super::auth::{EVERYONE, Principal};
use super::extract::{Json, Path, Query};
use super::problem::{Problem, ProblemBody};
use crate::app::App;
use crate::model::{AuditEntry, Role};
use crate::profiles::{self, ANONYMOUS_ID, CUSTOMER_ID, Profile, ProfileError, Subject};
use crate::store::StoreError;
use yinyom_core::contact::ContactKind;
use yinyom_core::subject::SubjectFlags;

const IDENTIFIERS: [&str; 5] = ["customer_id", "email", "phone", "line_id", "anonymous_id"];

/// Current consent for one (purpose, channel).
#[derive(Serialize, ToSchema)]
pub struct ConsentView {
    #[schema(value_type = String)]
    pub purpose: Arc<str>,
    pub channel: Option<Channel>,
    pub state: ConsentState,
    /// The state as a CRM shows it: `unspecified`, `consented`, `not_consented`.
    pub crm: &'static str,
    pub occurred_at: String,
    pub expires_at: Option<String>,
    pub notice: Option<NoticeVersion>,
    #[schema(value_type = String)]
    pub source: Arc<str>,
    /// Ledger entry that set this state.
    pub seq: u64,
}

impl ConsentView {
    pub fn new(r: &ConsentRecord, now: i64) -> Self {
        let state = r.state_at(now);
        ConsentView {
            purpose: r.purpose.clone(),
            channel: r.channel,
            state,
            crm: state.tri_state(),
            occurred_at: time::rfc3339(r.occurred_at),
            expires_at: r.expires_at.map(time::rfc3339),
            notice: r.notice.clone(),
            source: r.source.clone(),
            seq: r.seq,
        }
    }
}

/// One ledger entry, as shown to API clients.
#[derive(Serialize, ToSchema)]
pub struct HistoryEntry {
    pub seq: u64,
    pub purpose: String,
    pub channel: Option<Channel>,
    pub action: yinyom_core::consent::Action,
    pub notice: Option<NoticeRef>,
    pub source: String,
    pub actor: String,
    pub occurred_at: String,
    pub recorded_at: String,
    pub expires_at: Option<String>,
    /// The signed receipt handed out for this grant.
    pub receipt: Option<String>,
    pub evidence_hash: Option<String>,
    /// The evidence itself (owner and admin only; gone after erasure).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub evidence: Option<serde_json::Value>,
    pub prev_hash: String,
    pub hash: String,
}

impl From<LedgerEntry> for HistoryEntry {
    fn from(e: LedgerEntry) -> Self {
        let b = e.body;
        HistoryEntry {
            seq: e.seq,
            purpose: b.purpose,
            channel: b.channel,
            action: b.action,
            notice: b.notice,
            source: b.source,
            actor: b.actor,
            occurred_at: time::rfc3339(b.occurred_at),
            recorded_at: time::rfc3339(b.recorded_at),
            expires_at: b.expires_at.map(time::rfc3339),
            receipt: b.receipt,
            evidence_hash: b.evidence_hash,
            evidence: None,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ReceiptView {
    pub id: String,
    /// JWS compact serialisation; verify with `/.well-known/jwks.json`.
    pub jws: String,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct SubjectConsents {
    pub subject: String,
    pub consents: Vec<ConsentView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryEntry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipts: Option<Vec<ReceiptView>>,
}

/// What `PUT /v1/subjects/{id}` sets.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectUpdate {
    /// `customer_id`, `email`, `phone` (any format; Thai numbers may be
    /// national), `line_id` (a LINE user id) replace the stored ones;
    /// `anonymous_id` links one more device or browser to the subject.
    #[serde(default)]
    pub identifiers: BTreeMap<String, String>,
    /// Profile attributes (demographics, preferences); replace the stored ones.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// Restriction and objection; omitted: unchanged.
    #[serde(default)]
    pub flags: Option<SubjectFlags>,
}

/// A contact point and its consent, per channel, as a CRM shows it.
#[derive(Serialize, ToSchema)]
pub struct ContactView {
    pub kind: ContactKind,
    /// In clear, or masked (`08x-xxx-5678`, `s***@example.com`) for staff
    /// who may not see it.
    pub value: String,
    pub masked: bool,
    /// Per channel the contact point reaches: `unspecified`, `consented`
    /// or `not_consented` (over the consent-based purposes of that channel).
    pub channels: BTreeMap<Channel, ChannelConsent>,
}

#[derive(Serialize, ToSchema)]
pub struct ChannelConsent {
    pub status: &'static str,
    /// The state per purpose that uses the channel.
    pub purposes: BTreeMap<String, &'static str>,
}

#[derive(Serialize, ToSchema)]
pub struct SubjectView {
    pub id: String,
    /// Pseudonymous id: the only reference the ledger keeps.
    pub uid: String,
    /// `customer_id` and the contact points, masked like `contacts`.
    pub identifiers: BTreeMap<String, String>,
    pub contacts: Vec<ContactView>,
    /// Devices and browsers linked to the subject.
    pub anonymous_ids: Vec<String>,
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub flags: SubjectFlags,
    pub created_at: String,
    pub updated_at: String,
    pub consents: Vec<ConsentView>,
    /// The newest IAB TCF TC string the banner recorded, decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub tcf: Option<serde_json::Value>,
}

#[derive(Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// Include the ledger entries and receipts.
    #[serde(default)]
    pub history: bool,
}

pub(crate) async fn consents_of(
    app: &App,
    tenant: &str,
    id: &str,
) -> Result<Vec<ConsentView>, StoreError> {
    let now = time::now();
    let subject = app.view.subject(app.store.as_ref(), tenant, id).await?;
    Ok(subject
        .map(|s| {
            s.consents
                .records
                .iter()
                .map(|r| ConsentView::new(r, now))
                .collect()
        })
        .unwrap_or_default())
}

fn identifier_kind(name: &str) -> Option<Result<ContactKind, &'static str>> {
    match name {
        CUSTOMER_ID => Some(Err(CUSTOMER_ID)),
        ANONYMOUS_ID => Some(Err(ANONYMOUS_ID)),
        other => ContactKind::parse(other).map(Ok),
    }
}

/// Validate an update against the tenant's registry before anything is read.
fn check_update(app: &App, tenant: &str, update: &SubjectUpdate) -> Result<(), Problem> {
    for (k, v) in &update.identifiers {
        let field = format!("identifiers.{k}");
        match identifier_kind(k) {
            None => {
                return Err(Problem::validation(
                    field,
                    format!("unknown identifier; use one of {}", IDENTIFIERS.join(", ")),
                ));
            }
            Some(Ok(kind)) => {
                kind.normalize(v)
                    .map_err(|e| Problem::validation(field, e.reason))?;
            }
            Some(Err(_)) => {
                if v.is_empty() || v.len() > 200 || v.chars().any(char::is_control) {
                    return Err(Problem::validation(
                        field,
                        "must be 1-200 bytes without control characters",
                    ));
                }
            }
        }
    }
    if serde_json::to_vec(&update.attributes).map_or(0, |v| v.len()) > 64 * 1024 {
        return Err(Problem::validation(
            "attributes",
            "must be at most 64 KiB of JSON",
        ));
    }
    if let Some(flags) = &update.flags {
        if flags.erased {
            return Err(Problem::validation(
                "flags.erased",
                "erasure is a rights request, not a flag to set",
            ));
        }
        if let Some(born) = &flags.born_on {
            let date = subject::parse_birth_date(born)?;
            if date > time::from_micros(time::now()).date() {
                return Err(Problem::validation("flags.born_on", "is in the future"));
            }
        }
        let unknown = app
            .view
            .read(tenant, |tv| {
                flags
                    .restricted
                    .iter()
                    .chain(&flags.objected)
                    .find(|p| *p != "*" && !tv.purposes.contains_key(*p))
                    .cloned()
            })
            .flatten();
        if let Some(p) = unknown {
            return Err(Problem::validation(
                "flags",
                format!("purpose {p:?} does not exist"),
            ));
        }
    }
    Ok(())
}

fn erased_problem() -> Problem {
    Problem::new(
        axum::http::StatusCode::CONFLICT,
        "subject-erased",
        "the subject has been erased",
    )
}

/// Create or replace a subject's identifiers, attributes and flags. The
/// profile is stored encrypted with the subject's own key.
#[utoipa::path(put, path = "/v1/subjects/{id}", tag = "subjects", params(("id" = String, Path)),
    request_body = SubjectUpdate,
    responses((status = 200, body = SubjectView), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)), security(("api_key" = [])))]
pub async fn put(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
    Json(update): Json<SubjectUpdate>,
) -> Result<axum::Json<SubjectView>, Problem> {
    who.require(EVERYONE)?;
    subject::validate_id(&id)?;
    if id.starts_with(crate::vault::ERASED_PREFIX) {
        return Err(Problem::validation(
            "id",
            "ids beginning with 'erased:' name erased subjects",
        ));
    }
    check_update(&app, &who.tenant, &update)?;
    if app
        .view
        .read(&who.tenant, |tv| tv.erased(&id))
        .unwrap_or(false)
    {
        return Err(erased_problem());
    }
    let before = app
        .view
        .read(&who.tenant, |tv| tv.flags(&id).cloned())
        .flatten()
        .unwrap_or_default();
    let subject = profiles::modify(
        &app,
        &who.tenant,
        &id,
        update.flags.clone(),
        |p: &mut Profile| {
            p.contacts.clear();
            p.customer_id = None;
            for (k, v) in &update.identifiers {
                match identifier_kind(k) {
                    Some(Ok(kind)) => {
                        let v = kind.normalize(v).map_err(|e| {
                            Problem::validation(format!("identifiers.{k}"), e.reason)
                        })?;
                        p.contacts.insert(kind, v);
                    }
                    Some(Err(CUSTOMER_ID)) => p.customer_id = Some(v.clone()),
                    Some(Err(_)) => {
                        p.anonymous_ids.insert(v.clone());
                    }
                    None => {}
                }
            }
            p.attributes = update.attributes.clone();
            Ok(())
        },
    )
    .await
    .map_err(|e| match e {
        ProfileError::Store(e) => Problem::from(e),
        ProfileError::Refused(p) => p,
    })?;
    if let Some(after) = &update.flags {
        // Restrictions and objections set here propagate like consent.
        crate::rights::ledger_flag_changes(
            &app,
            &who.tenant,
            &id,
            &before,
            after,
            "api",
            &who.actor(),
        )
        .await?;
    }
    Ok(axum::Json(
        present(&app, &who, subject, "PUT /v1/subjects/{id}").await?,
    ))
}

/// Read a subject: profile, contact points with their consent per
/// channel, and current consents. Contact points are masked for the `user`
/// and `service` roles unless the subject consented on that channel or the
/// key is on the tenant's `pii_readers` list; every read in clear is
/// written to the audit log.
#[utoipa::path(get, path = "/v1/subjects/{id}", tag = "subjects", params(("id" = String, Path)),
    responses((status = 200, body = SubjectView), (status = 404, body = ProblemBody)), security(("api_key" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<SubjectView>, Problem> {
    who.require(EVERYONE)?;
    let subject = profiles::read(&app, &who.tenant, &id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("subject {id:?} does not exist")))?;
    Ok(axum::Json(
        present(&app, &who, subject, "GET /v1/subjects/{id}").await?,
    ))
}

/// Per channel a contact kind reaches, its tri-state over the purposes
/// that need consent on that channel.
fn channel_consents(
    app: &App,
    tenant: &str,
    sv: Option<&crate::view::SubjectView>,
    kind: ContactKind,
) -> BTreeMap<Channel, ChannelConsent> {
    let now = time::now();
    app.view
        .read(tenant, |tv| {
            kind.channels()
                .iter()
                .map(|&c| {
                    let purposes: BTreeMap<String, &'static str> = tv
                        .purposes
                        .values()
                        .filter(|p| p.requires_consent() && p.channels.contains(&c))
                        .map(|p| {
                            let state = sv
                                .and_then(|s| s.consents.effective(&p.key, Some(c)))
                                .map_or("unspecified", |r| r.state_at(now).tri_state());
                            (p.key.clone(), state)
                        })
                        .collect();
                    let status = if purposes.values().any(|s| *s == "consented") {
                        "consented"
                    } else if purposes.values().any(|s| *s == "not_consented") {
                        "not_consented"
                    } else {
                        "unspecified"
                    };
                    (c, ChannelConsent { status, purposes })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Shape a subject for the caller: mask what the role may not see and
/// audit what it sees in clear.
pub(crate) async fn present(
    app: &App,
    who: &Principal,
    s: Subject,
    context: &str,
) -> Result<SubjectView, Problem> {
    let privileged = matches!(who.role, Role::Owner | Role::Admin)
        || app
            .view
            .read(&who.tenant, |tv| {
                tv.tenant.pii_readers.iter().any(|k| **k == *who.key_id)
            })
            .unwrap_or(false);
    let mut contacts = Vec::new();
    let mut identifiers = BTreeMap::new();
    let mut clear = Vec::new();
    let held = app
        .view
        .subject(app.store.as_ref(), &who.tenant, &s.record.id)
        .await?;
    for (kind, value) in &s.profile.contacts {
        let channels = channel_consents(app, &who.tenant, held.as_ref(), *kind);
        let consented = channels.values().any(|c| c.status == "consented");
        let masked = !(privileged || consented);
        let shown = if masked {
            kind.mask(value)
        } else {
            clear.push(kind.as_str().to_string());
            value.clone()
        };
        identifiers.insert(kind.as_str().to_string(), shown.clone());
        contacts.push(ContactView {
            kind: *kind,
            value: shown,
            masked,
            channels,
        });
    }
    if let Some(c) = &s.profile.customer_id {
        identifiers.insert(CUSTOMER_ID.to_string(), c.clone());
    }
    if !clear.is_empty() {
        app.store
            .insert_audit(&[AuditEntry {
                id: 0,
                tenant: who.tenant.to_string(),
                at: time::now(),
                actor: who.actor(),
                subject_uid: s.record.uid.clone(),
                subject: None,
                fields: clear,
                context: context.to_string(),
            }])
            .await?;
    }
    Ok(SubjectView {
        tcf: crate::web::tcf::subject_state(app, &who.tenant, &s.record.uid).await?,
        consents: consents_of(app, &who.tenant, &s.record.id).await?,
        id: s.record.id,
        uid: s.record.uid,
        identifiers,
        contacts,
        anonymous_ids: s.profile.anonymous_ids.into_iter().collect(),
        attributes: s.profile.attributes,
        flags: s.record.flags,
        created_at: time::rfc3339(s.record.created_at),
        updated_at: time::rfc3339(s.record.updated_at),
    })
}

async fn find(app: &App, tenant: &str, id: &str) -> Result<crate::model::SubjectRecord, Problem> {
    app.store
        .subject(tenant, &app.resolve(tenant, id))
        .await?
        .ok_or_else(|| Problem::not_found(format!("subject {id:?} does not exist")))
}

/// Current consent states; with `history=true` also the ledger entries and receipts.
#[utoipa::path(get, path = "/v1/subjects/{id}/consents", tag = "consents", params(("id" = String, Path), HistoryQuery),
    responses((status = 200, body = SubjectConsents), (status = 404, body = ProblemBody)), security(("api_key" = [])))]
pub async fn consents(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<axum::Json<SubjectConsents>, Problem> {
    who.require(EVERYONE)?;
    let row = find(&app, &who.tenant, &id).await?;
    // States first: a write landing meanwhile then shows in the history
    // (newer than the states), never a state whose entry is missing.
    let consents = consents_of(&app, &who.tenant, &id).await?;
    let (history, receipts) = if q.history {
        let history = app.store.history(&who.tenant, &row.uid).await?;
        let receipts = app.store.receipts(&who.tenant, &row.uid).await?;
        // Evidence (IP, user agent, form) is personal data: managers only.
        let mut evidence = if super::auth::MANAGERS.contains(&who.role) {
            app.store.evidence(&who.tenant, &row.uid).await?
        } else {
            Default::default()
        };
        (
            Some(
                history
                    .into_iter()
                    .map(|e| {
                        let ev = evidence.remove(&e.seq);
                        HistoryEntry {
                            evidence: ev,
                            ..HistoryEntry::from(e)
                        }
                    })
                    .collect(),
            ),
            Some(
                receipts
                    .into_iter()
                    .map(|r| ReceiptView {
                        id: r.id,
                        jws: r.jws,
                        created_at: time::rfc3339(r.created_at),
                    })
                    .collect(),
            ),
        )
    } else {
        (None, None)
    };
    Ok(axum::Json(SubjectConsents {
        subject: id.clone(),
        consents,
        history,
        receipts,
    }))
}

/// The tracking events kept for a subject (allowed by its consent, within
/// retention), newest first.
#[utoipa::path(get, path = "/v1/subjects/{id}/events", tag = "collector", params(("id" = String, Path)),
    responses((status = 200, body = Vec<crate::model::StoredEvent>), (status = 404, body = ProblemBody)), security(("api_key" = [])))]
pub async fn events(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Vec<crate::model::StoredEvent>>, Problem> {
    who.require(super::auth::STAFF)?;
    let row = find(&app, &who.tenant, &id).await?;
    Ok(axum::Json(
        app.store
            .subject_events(&who.tenant, &row.uid, 1000)
            .await?,
    ))
}

/// Body of `POST /v1/subjects/{id}/preference-link`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// How long the link works, in hours (1-720, default 168).
    #[serde(default)]
    pub ttl_hours: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreferenceLink {
    pub url: String,
    pub expires_at: String,
}

/// A signed, expiring link to the subject's preference center, to send
/// them (by email, SMS, LINE or on a receipt).
#[utoipa::path(post, path = "/v1/subjects/{id}/preference-link", tag = "subjects",
    params(("id" = String, Path)), request_body = LinkRequest,
    responses((status = 201, body = PreferenceLink), (status = 404, body = ProblemBody),
        (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn preference_link(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(axum::http::StatusCode, axum::Json<PreferenceLink>), Problem> {
    who.require(EVERYONE)?;
    let r: LinkRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LinkRequest::default()
    } else {
        super::problem::parse_json(&body)?
    };
    let hours = r
        .ttl_hours
        .unwrap_or(crate::web::preferences::DEFAULT_TTL_HOURS);
    if !(1..=crate::web::preferences::MAX_TTL_HOURS).contains(&hours) {
        return Err(Problem::validation("ttl_hours", "must be 1-720"));
    }
    let s = app
        .store
        .subject(&who.tenant, &app.resolve(&who.tenant, &id))
        .await?
        .ok_or_else(|| Problem::not_found(format!("subject {id:?} does not exist")))?;
    if s.flags.erased {
        return Err(Problem::new(
            axum::http::StatusCode::CONFLICT,
            "subject-erased",
            "the subject has been erased",
        ));
    }
    let expires_at = time::now() + i64::from(hours) * 3_600_000_000;
    let token = crate::web::preferences::token(&app, &who.tenant, &s.uid, expires_at);
    Ok((
        axum::http::StatusCode::CREATED,
        axum::Json(PreferenceLink {
            url: format!("{}/p/{token}", app.public_url),
            expires_at: time::rfc3339(expires_at),
        }),
    ))
}
