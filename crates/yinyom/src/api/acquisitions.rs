//! Personal data acquired from third parties (PDPA s.25, GDPR Art. 14):
//! where it came from, the 30-day deadline to tell the subject, and the
//! record of that notice.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use yinyom_core::time;

use super::auth::{Principal, STAFF};
use super::extract::{Json, Path, Query, past_time_field};
use super::problem::{Problem, ProblemBody};
use crate::app::App;
use crate::model::Acquisition;

/// Body of `PUT /v1/subjects/{id}/acquisition`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquisitionInput {
    /// Who the data came from (a partner, a list broker, …).
    pub source: String,
    /// When it was collected (RFC 3339).
    pub acquired_at: String,
}

/// Body of `POST /v1/subjects/{id}/acquisition/notice`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoticeInput {
    /// How the subject was told (`email`, `sms`, `letter`, …).
    pub method: String,
    /// When (RFC 3339); now when absent.
    #[serde(default)]
    pub at: Option<String>,
    /// The notice version the subject was given.
    #[serde(default)]
    pub notice: Option<NoticeVersionInput>,
    /// Send the notice now through the relay (`method` is then the
    /// channel): a legal obligation, sent whatever the subject consented
    /// to and without an unsubscribe link (purpose `system:s25_notice`).
    /// Its delivery is the message's status (`message_id`,
    /// `GET /v1/messages/{id}`).
    #[serde(default)]
    pub message: Option<crate::model::BreachMessage>,
}

/// A notice version by key and number.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoticeVersionInput {
    pub key: String,
    pub version: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AcquisitionView {
    pub subject: Option<String>,
    pub source: String,
    pub acquired_at: String,
    /// The subject must be told by then (30 days; one month under the GDPR).
    pub due_at: String,
    pub notified_at: Option<String>,
    pub method: Option<String>,
    pub notice: Option<String>,
    /// Due and not told.
    pub overdue: bool,
    pub recorded_by: String,
    /// The notice's message, when it was sent through the relay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// That message's status (`queued`, `retrying`, `sent`, `dead`…), in
    /// the answer to the notice itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_status: Option<String>,
}

impl AcquisitionView {
    fn new(a: Acquisition, now: i64) -> Self {
        AcquisitionView {
            overdue: a.notified_at.is_none() && a.due_at < now,
            subject: a.subject_id,
            source: a.source,
            acquired_at: time::rfc3339(a.acquired_at),
            due_at: time::rfc3339(a.due_at),
            notified_at: a.notified_at.map(time::rfc3339),
            method: a.method,
            notice: a.notice,
            recorded_by: a.recorded_by,
            message_id: a.message_id,
            message_status: None,
        }
    }
}

async fn subject_uid(app: &App, tenant: &str, id: &str) -> Result<String, Problem> {
    match app.store.subject(tenant, id).await? {
        Some(s) if s.flags.erased => Err(Problem::conflict("the subject has been erased")),
        Some(s) => Ok(s.uid),
        None => Err(Problem::not_found(format!("subject {id:?} does not exist"))),
    }
}

/// Record that a subject's data came from a third party: the notice to the
/// subject is due 30 days after it was acquired (PDPA s.25).
#[utoipa::path(put, path = "/v1/subjects/{id}/acquisition", tag = "subjects", params(("id" = String, Path)),
    request_body = AcquisitionInput,
    responses((status = 200, body = AcquisitionView), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn put(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
    Json(a): Json<AcquisitionInput>,
) -> Result<axum::Json<AcquisitionView>, Problem> {
    who.require(STAFF)?;
    let now = time::now();
    if a.source.trim().is_empty() || a.source.len() > 200 {
        return Err(Problem::validation("source", "must be 1-200 bytes"));
    }
    let acquired_at = past_time_field("acquired_at", &a.acquired_at, now)?;
    let uid = subject_uid(&app, &who.tenant, &id).await?;
    let jurisdictions = crate::rights::jurisdictions(&app, &who.tenant).await?;
    let before = app.store.acquisition(&who.tenant, &uid).await?;
    let row = Acquisition {
        tenant: who.tenant.to_string(),
        subject_uid: uid,
        subject_id: Some(id),
        source: a.source,
        acquired_at,
        due_at: yinyom_core::rights::third_party_notice_due(&jurisdictions, acquired_at),
        notified_at: before.as_ref().and_then(|b| b.notified_at),
        method: before.as_ref().and_then(|b| b.method.clone()),
        notice: before.as_ref().and_then(|b| b.notice.clone()),
        recorded_by: who.actor(),
        updated_at: now,
        message_id: before.as_ref().and_then(|b| b.message_id.clone()),
    };
    app.store.put_acquisition(&row).await?;
    Ok(axum::Json(AcquisitionView::new(row, now)))
}

/// Record the notice given to a subject whose data came from a third party.
#[utoipa::path(post, path = "/v1/subjects/{id}/acquisition/notice", tag = "subjects", params(("id" = String, Path)),
    request_body = NoticeInput,
    responses((status = 200, body = AcquisitionView), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn notice(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
    Json(n): Json<NoticeInput>,
) -> Result<axum::Json<AcquisitionView>, Problem> {
    who.require(STAFF)?;
    let now = time::now();
    if n.method.trim().is_empty() || n.method.len() > 64 {
        return Err(Problem::validation("method", "must be 1-64 bytes"));
    }
    if let Some(m) = &n.message {
        if n.method != m.channel.as_str() {
            return Err(Problem::validation(
                "method",
                "must be the message's channel when a message is sent",
            ));
        }
        if n.at.is_some() {
            return Err(Problem::validation(
                "at",
                "a notice sent now is given now: leave `at` out",
            ));
        }
    }
    let when = match &n.at {
        Some(s) => past_time_field("at", s, now)?,
        None => now,
    };
    let uid = subject_uid(&app, &who.tenant, &id).await?;
    let mut row = app
        .store
        .acquisition(&who.tenant, &uid)
        .await?
        .ok_or_else(|| {
            Problem::not_found("no third-party acquisition is recorded for this subject")
        })?;
    if when < row.acquired_at {
        return Err(Problem::validation("at", "is before the data was acquired"));
    }
    if let Some(r) = &n.notice {
        let known = app
            .view
            .read(&who.tenant, |tv| {
                tv.notices.contains_key(&(r.key.clone(), r.version))
            })
            .unwrap_or(false);
        if !known {
            return Err(Problem::validation(
                "notice",
                format!("notice {}@{} does not exist", r.key, r.version),
            ));
        }
    }
    let message_id = match &n.message {
        Some(m) => Some(crate::notices::send_s25(&app, &who.tenant, &uid, m).await?),
        None => None,
    };
    row.notified_at = Some(when);
    row.message_id = message_id.clone().or(row.message_id);
    row.method = Some(n.method);
    row.notice = n.notice.map(|r| format!("{}@{}", r.key, r.version));
    row.recorded_by = who.actor();
    row.updated_at = now;
    app.store.put_acquisition(&row).await?;
    let mut view = AcquisitionView::new(row, now);
    if let Some(id) = &message_id {
        view.message_status = app.store.message(&who.tenant, id).await?.map(|m| m.status);
    }
    Ok(axum::Json(view))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AcquisitionQuery {
    /// Only subjects not yet told.
    #[serde(default)]
    pub pending: bool,
    /// Only subjects past the deadline and not told.
    #[serde(default)]
    pub overdue: bool,
    /// Page size: 1-1000, 100 by default.
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AcquisitionList {
    pub acquisitions: Vec<AcquisitionView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Subjects whose data came from third parties, the soonest due first: the
/// deadline list of PDPA s.25.
#[utoipa::path(get, path = "/v1/acquisitions", tag = "subjects", params(AcquisitionQuery),
    responses((status = 200, body = AcquisitionList), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    who: Principal,
    Query(q): Query<AcquisitionQuery>,
) -> Result<axum::Json<AcquisitionList>, Problem> {
    who.require(STAFF)?;
    let limit = super::page::limit(q.limit)?;
    let after: Option<(i64, String)> = super::page::after(q.cursor.as_deref())?;
    let now = time::now();
    let rows = app
        .store
        .acquisitions(
            &who.tenant,
            q.pending || q.overdue,
            q.overdue.then_some(now),
            after.as_ref().map(|(due, uid)| (*due, uid.as_str())),
            limit + 1,
        )
        .await?;
    let (rows, next_cursor) =
        super::page::split(rows, limit, |a| (a.due_at, a.subject_uid.clone()));
    Ok(axum::Json(AcquisitionList {
        acquisitions: rows
            .into_iter()
            .map(|a| AcquisitionView::new(a, now))
            .collect(),
        next_cursor,
    }))
}
