//! `/v1/breaches`: the breach register, the regulator's 72-hour deadline
//! (PDPA s.37(4), GDPR Art. 33) and the notifications made. The rules are
//! in `yinyom_core::breach`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use yinyom_core::breach::{self, Recipient, Risk};
use yinyom_core::time;

use super::auth::{MANAGERS, Principal, STAFF};
use super::extract::{Json, Path, Query, past_time_field, time_field};
use super::problem::{Problem, ProblemBody};
use crate::app::App;
use crate::model::{Breach, BreachMessage, BreachNotification, BreachRecipient};

/// The view of one breach, with its notice's delivery counts.
async fn full_view(app: &App, b: Breach, now: i64) -> Result<BreachView, Problem> {
    let counts = app.store.breach_recipient_counts(&b.tenant, &b.id).await?;
    let message = b.subject_notice.clone();
    let mut v = BreachView::new(b, now);
    let n = |k: &str| counts.get(k).copied().unwrap_or(0);
    if message.is_some() || !counts.is_empty() {
        v.subject_notice = Some(SubjectNoticeView {
            message,
            recipients: counts.values().sum(),
            pending: n("pending"),
            queued: n("queued") + n("retrying"),
            sent: n("sent"),
            failed: n("failed") + n("dead") + n("suppressed"),
        });
    }
    Ok(v)
}

/// Body of `POST /v1/breaches`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreachInput {
    /// When the controller became aware of it (RFC 3339); the deadline
    /// counts from here.
    pub discovered_at: String,
    pub description: String,
    /// Kinds of personal data involved.
    #[serde(default)]
    pub categories: Vec<String>,
    /// How many people are affected (an estimate while unknown).
    pub affected_subjects: u64,
    pub risk: Risk,
    /// Why the risk is what it is.
    pub risk_assessment: String,
    #[serde(default)]
    pub measures: String,
}

/// Body of `POST /v1/breaches/{id}/notifications`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationInput {
    pub to: Recipient,
    /// When it was made (RFC 3339); now when absent.
    #[serde(default)]
    pub at: Option<String>,
    #[serde(default)]
    pub reference: String,
    /// Required when the regulator is told more than 72 hours after discovery.
    #[serde(default)]
    pub delay_reason: Option<String>,
    /// With `"to": "subjects"`: send this notice through the relay to every
    /// recipient recorded with `POST /v1/breaches/{id}/recipients` (and
    /// those added later), one message each. A legal obligation, not
    /// marketing: sent whatever the subjects consented to, without an
    /// unsubscribe link (purpose `system:breach_notice`).
    #[serde(default)]
    pub message: Option<BreachMessage>,
}

/// Body of `POST /v1/breaches/{id}/recipients`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientsInput {
    /// Subject ids (1-1000 a call; call again for more).
    pub subjects: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecipientsAdded {
    /// Recorded now (a subject already recorded is not counted twice).
    pub added: u64,
    /// Ids that name no subject (or an erased one): not recorded.
    pub unknown: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RecipientQuery {
    /// Page size: 1-1000, 100 by default.
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecipientList {
    pub recipients: Vec<BreachRecipient>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The notice to the people affected and where its messages are.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubjectNoticeView {
    /// The notice asked for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<BreachMessage>,
    /// Recipients recorded.
    pub recipients: u64,
    /// Not queued yet.
    pub pending: u64,
    /// Queued or being retried by the relay.
    pub queued: u64,
    /// Accepted by the provider (the SMTP server, the SMS or LINE API).
    pub sent: u64,
    /// Not sent: no contact point, erased, suppressed, or given up.
    pub failed: u64,
}

/// A breach with its deadlines.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreachView {
    pub id: String,
    pub discovered_at: String,
    pub recorded_at: String,
    pub description: String,
    pub categories: Vec<String>,
    pub affected_subjects: u64,
    pub risk: Risk,
    pub risk_assessment: String,
    pub measures: String,
    /// Whether the regulator must be told (not when the risk is unlikely).
    pub regulator_required: bool,
    /// 72 hours after discovery.
    pub regulator_due_at: String,
    pub regulator_notified_at: Option<String>,
    /// The regulator is due and was not told.
    pub regulator_overdue: bool,
    /// Whether the people affected must be told (high risk).
    pub subjects_required: bool,
    pub subjects_notified_at: Option<String>,
    pub notifications: Vec<NotificationView>,
    /// The notice sent to the people affected through the relay, with its
    /// delivery counts (one breach's view only, not the list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_notice: Option<SubjectNoticeView>,
    pub recorded_by: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    pub to: Recipient,
    pub at: String,
    pub reference: String,
    /// Made after the 72-hour deadline.
    pub late: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_reason: Option<String>,
    pub recorded_by: String,
}

impl BreachView {
    fn new(b: Breach, now: i64) -> Self {
        let due = breach::regulator_due(b.discovered_at);
        BreachView {
            regulator_required: b.risk.regulator_required(),
            regulator_due_at: time::rfc3339(due),
            regulator_notified_at: b.first_notified(Recipient::Regulator).map(time::rfc3339),
            regulator_overdue: b.regulator_overdue(now),
            subjects_required: b.risk.subjects_required(),
            subjects_notified_at: b.first_notified(Recipient::Subjects).map(time::rfc3339),
            notifications: b
                .notifications
                .into_iter()
                .map(|n| NotificationView {
                    to: n.to,
                    at: time::rfc3339(n.at),
                    reference: n.reference,
                    late: n.at > due,
                    delay_reason: n.delay_reason,
                    recorded_by: n.recorded_by,
                })
                .collect(),
            subject_notice: None,
            id: b.id,
            discovered_at: time::rfc3339(b.discovered_at),
            recorded_at: time::rfc3339(b.created_at),
            description: b.description,
            categories: b.categories,
            affected_subjects: b.affected_subjects,
            risk: b.risk,
            risk_assessment: b.risk_assessment,
            measures: b.measures,
            recorded_by: b.recorded_by,
        }
    }
}

fn text(field: &str, v: &str, max: usize, required: bool) -> Result<(), Problem> {
    if required && v.trim().is_empty() {
        return Err(Problem::validation(field, "is required"));
    }
    if v.len() > max {
        return Err(Problem::validation(
            field,
            format!("must be at most {max} bytes"),
        ));
    }
    Ok(())
}

/// Record a breach. The regulator's deadline is 72 hours after discovery.
#[utoipa::path(post, path = "/v1/breaches", tag = "breaches", request_body = BreachInput,
    responses((status = 201, body = BreachView), (status = 422, body = ProblemBody)), security(("api_key" = [])))]
pub async fn create(
    State(app): State<Arc<App>>,
    who: Principal,
    Json(b): Json<BreachInput>,
) -> Result<(StatusCode, axum::Json<BreachView>), Problem> {
    who.require(MANAGERS)?;
    let now = time::now();
    let discovered_at = past_time_field("discovered_at", &b.discovered_at, now)?;
    text("description", &b.description, 8000, true)?;
    text("risk_assessment", &b.risk_assessment, 8000, true)?;
    text("measures", &b.measures, 8000, false)?;
    if b.categories.len() > 50
        || b.categories
            .iter()
            .any(|c| c.trim().is_empty() || c.len() > 100)
    {
        return Err(Problem::validation(
            "categories",
            "at most 50 names of 1-100 bytes",
        ));
    }
    let row = Breach {
        tenant: who.tenant.to_string(),
        id: format!("brc_{}", uuid::Uuid::now_v7().simple()),
        discovered_at,
        description: b.description,
        categories: b.categories,
        affected_subjects: b.affected_subjects,
        risk: b.risk,
        risk_assessment: b.risk_assessment,
        measures: b.measures,
        notifications: vec![],
        subject_notice: None,
        recorded_by: who.actor(),
        created_at: now,
        updated_at: now,
    };
    app.store.insert_breach(&row).await?;
    Ok((StatusCode::CREATED, axum::Json(BreachView::new(row, now))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BreachQuery {
    /// Only breaches whose regulator deadline passed without a notification.
    #[serde(default)]
    pub overdue: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BreachList {
    pub breaches: Vec<BreachView>,
}

/// The breach register, the latest discovered first.
#[utoipa::path(get, path = "/v1/breaches", tag = "breaches", params(BreachQuery),
    responses((status = 200, body = BreachList)), security(("api_key" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    who: Principal,
    Query(q): Query<BreachQuery>,
) -> Result<axum::Json<BreachList>, Problem> {
    who.require(STAFF)?;
    let now = time::now();
    let breaches = app
        .store
        .breaches(Some(&who.tenant))
        .await?
        .into_iter()
        .map(|b| BreachView::new(b, now))
        .filter(|v| !q.overdue || v.regulator_overdue)
        .collect();
    Ok(axum::Json(BreachList { breaches }))
}

/// One breach.
#[utoipa::path(get, path = "/v1/breaches/{id}", tag = "breaches", params(("id" = String, Path)),
    responses((status = 200, body = BreachView), (status = 404, body = ProblemBody)), security(("api_key" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<BreachView>, Problem> {
    who.require(STAFF)?;
    let b = app
        .store
        .breach(&who.tenant, &id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("breach {id:?} does not exist")))?;
    Ok(axum::Json(full_view(&app, b, time::now()).await?))
}

/// Record a notification to the regulator or to the people affected.
#[utoipa::path(post, path = "/v1/breaches/{id}/notifications", tag = "breaches", params(("id" = String, Path)),
    request_body = NotificationInput,
    responses((status = 200, body = BreachView), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody),
        (status = 422, body = ProblemBody)), security(("api_key" = [])))]
pub async fn notify(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
    Json(n): Json<NotificationInput>,
) -> Result<axum::Json<BreachView>, Problem> {
    who.require(MANAGERS)?;
    let now = time::now();
    let at = match &n.at {
        Some(s) => time_field("at", s)?,
        None => now,
    };
    text("reference", &n.reference, 500, false)?;
    if let Some(r) = &n.delay_reason {
        text("delay_reason", r, 4000, false)?;
    }
    let mut b = app
        .store
        .breach(&who.tenant, &id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("breach {id:?} does not exist")))?;
    breach::check_notification(n.to, b.discovered_at, at, now, n.delay_reason.as_deref())?;
    if let Some(m) = &n.message {
        if n.to != Recipient::Subjects {
            return Err(Problem::validation(
                "message",
                "only a notification to the subjects is sent through the relay",
            ));
        }
        if b.subject_notice.is_some() {
            return Err(Problem::conflict(
                "the notice to the subjects was already sent; recipients added later get it too",
            ));
        }
        crate::notices::check(app.store.as_ref(), &who.tenant, m).await?;
        b.subject_notice = Some(m.clone());
    }
    let sending = n.message.is_some();
    let before = b.updated_at;
    b.notifications.push(BreachNotification {
        to: n.to,
        at,
        reference: n.reference,
        delay_reason: n.delay_reason,
        recorded_by: who.actor(),
    });
    b.updated_at = now.max(before + 1);
    if !app.store.update_breach(&b, before).await? {
        return Err(Problem::conflict(
            "the breach changed at the same time; try again",
        ));
    }
    if sending {
        push(&app, &who.tenant);
    }
    Ok(axum::Json(full_view(&app, b, now).await?))
}

/// Queue what is pending now rather than at the next minute (on the
/// leader; the minute job goes on from where this stops).
fn push(app: &Arc<App>, tenant: &str) {
    let app = app.clone();
    let tenant = tenant.to_string();
    tokio::spawn(async move {
        if matches!(app.store.lead().await, Ok(true))
            && let Err(e) = crate::notices::queue_breaches(&app, &tenant).await
        {
            tracing::warn!(error = %e.detail, "breach notices: queueing failed");
        }
    });
}

/// Record people affected by a breach: the recipients of its notice.
#[utoipa::path(post, path = "/v1/breaches/{id}/recipients", tag = "breaches", params(("id" = String, Path)),
    request_body = RecipientsInput,
    responses((status = 200, body = RecipientsAdded), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn add_recipients(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
    Json(r): Json<RecipientsInput>,
) -> Result<axum::Json<RecipientsAdded>, Problem> {
    who.require(MANAGERS)?;
    if r.subjects.is_empty() || r.subjects.len() > 1000 {
        return Err(Problem::validation("subjects", "give 1-1000 subject ids"));
    }
    let b = app
        .store
        .breach(&who.tenant, &id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("breach {id:?} does not exist")))?;
    let mut uids = Vec::with_capacity(r.subjects.len());
    let mut unknown = Vec::new();
    for s in r.subjects {
        match app.store.subject(&who.tenant, &s).await? {
            Some(rec) if !rec.flags.erased => uids.push(rec.uid),
            _ => unknown.push(s),
        }
    }
    let added = app
        .store
        .add_breach_recipients(&who.tenant, &b.id, &uids, time::now())
        .await?;
    if b.subject_notice.is_some() {
        push(&app, &who.tenant);
    }
    Ok(axum::Json(RecipientsAdded { added, unknown }))
}

/// The people told of a breach, each with the status of their message.
#[utoipa::path(get, path = "/v1/breaches/{id}/recipients", tag = "breaches",
    params(("id" = String, Path), RecipientQuery),
    responses((status = 200, body = RecipientList), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn recipients(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
    Query(q): Query<RecipientQuery>,
) -> Result<axum::Json<RecipientList>, Problem> {
    who.require(STAFF)?;
    let limit = super::page::limit(q.limit)?;
    let after: Option<String> = super::page::after(q.cursor.as_deref())?;
    if app.store.breach(&who.tenant, &id).await?.is_none() {
        return Err(Problem::not_found(format!("breach {id:?} does not exist")));
    }
    let rows = app
        .store
        .breach_recipients(&who.tenant, &id, after.as_deref().unwrap_or(""), limit + 1)
        .await?;
    let (recipients, next_cursor) = super::page::split(rows, limit, |r| r.subject_uid.clone());
    Ok(axum::Json(RecipientList {
        recipients,
        next_cursor,
    }))
}
