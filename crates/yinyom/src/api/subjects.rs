//! `/v1/subjects`: data subjects, their current consents and history.

use std::sync::Arc;

use axum::extract::State;
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
use crate::model::{SubjectRow, SubjectUpdate};

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

#[derive(Serialize, ToSchema)]
pub struct SubjectView {
    #[serde(flatten)]
    pub subject: SubjectRow,
    pub consents: Vec<ConsentView>,
}

#[derive(Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// Include the ledger entries and receipts.
    #[serde(default)]
    pub history: bool,
}

fn consents_of(app: &App, tenant: &str, id: &str) -> Vec<ConsentView> {
    let now = time::now();
    app.view
        .read(tenant, |tv| {
            tv.subjects.get(id).map(|s| {
                s.consents
                    .records
                    .iter()
                    .map(|r| ConsentView::new(r, now))
                    .collect()
            })
        })
        .flatten()
        .unwrap_or_default()
}

/// Create or replace a subject's identifiers, attributes and flags.
#[utoipa::path(put, path = "/v1/subjects/{id}", tag = "subjects", params(("id" = String, Path)),
    request_body = SubjectUpdate,
    responses((status = 200, body = SubjectView), (status = 422, body = ProblemBody)), security(("api_key" = [])))]
pub async fn put(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
    Json(mut update): Json<SubjectUpdate>,
) -> Result<axum::Json<SubjectView>, Problem> {
    who.require(EVERYONE)?;
    subject::validate_id(&id)?;
    for (k, v) in &update.identifiers {
        if !IDENTIFIERS.contains(&k.as_str()) {
            return Err(Problem::validation(
                format!("identifiers.{k}"),
                format!("unknown identifier; use one of {}", IDENTIFIERS.join(", ")),
            ));
        }
        if v.is_empty() || v.len() > 320 {
            return Err(Problem::validation(
                format!("identifiers.{k}"),
                "must be 1-320 bytes",
            ));
        }
    }
    if let Some(flags) = &update.flags {
        if flags.erased {
            return Err(Problem::validation(
                "flags.erased",
                "erasure is a rights request, not a flag to set",
            ));
        }
        let known = app
            .view
            .read(&who.tenant, |tv| {
                flags
                    .restricted
                    .iter()
                    .chain(&flags.objected)
                    .find(|p| *p != "*" && !tv.purposes.contains_key(*p))
                    .cloned()
            })
            .flatten();
        if let Some(p) = known {
            return Err(Problem::validation(
                "flags",
                format!("purpose {p:?} does not exist"),
            ));
        }
    }
    if app
        .view
        .read(&who.tenant, |tv| {
            tv.subjects.get(&id).is_some_and(|s| s.erased())
        })
        .unwrap_or(false)
    {
        return Err(Problem::new(
            axum::http::StatusCode::CONFLICT,
            "subject-erased",
            "the subject has been erased",
        ));
    }
    update.id = id.clone();
    let row = app
        .store
        .upsert_subject(&who.tenant, &update, time::now())
        .await?;
    app.view.set_flags(&who.tenant, &row.id, row.flags.clone());
    Ok(axum::Json(SubjectView {
        consents: consents_of(&app, &who.tenant, &id),
        subject: row,
    }))
}

async fn find(app: &App, tenant: &str, id: &str) -> Result<SubjectRow, Problem> {
    app.store
        .subject(tenant, id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("subject {id:?} does not exist")))
}

/// Read a subject with its current consents.
#[utoipa::path(get, path = "/v1/subjects/{id}", tag = "subjects", params(("id" = String, Path)),
    responses((status = 200, body = SubjectView), (status = 404, body = ProblemBody)), security(("api_key" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<SubjectView>, Problem> {
    who.require(EVERYONE)?;
    let row = find(&app, &who.tenant, &id).await?;
    Ok(axum::Json(SubjectView {
        consents: consents_of(&app, &who.tenant, &id),
        subject: row,
    }))
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
    let (history, receipts) = if q.history {
        let history = app.store.history(&who.tenant, &row.uid).await?;
        let receipts = app.store.receipts(&who.tenant, &row.uid).await?;
        (
            Some(history.into_iter().map(HistoryEntry::from).collect()),
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
        consents: consents_of(&app, &who.tenant, &id),
        history,
        receipts,
    }))
}
