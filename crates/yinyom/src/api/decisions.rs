//! `/v1/decisions`: "may purpose P use subject S on channel C now?"
//!
//! Answered from the in-memory view without touching storage, which is
//! what makes them fast; the view is exact because the write path updates
//! it before acknowledging a write.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use yinyom_core::consent::{ConsentState, NoticeVersion};
use yinyom_core::purpose::Channel;
use yinyom_core::time::{self, Micros};

use super::auth::{EVERYONE, Principal};
use super::extract::{Json, Query};
use super::problem::{Problem, ProblemBody};
use crate::app::App;
use crate::view::{Answer, TenantView, Unknown};

const MAX_BATCH: usize = 10_000;

#[derive(Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionQuery {
    pub subject: String,
    pub purpose: String,
    #[serde(default)]
    pub channel: Option<Channel>,
}

#[derive(Serialize, ToSchema)]
pub struct DecisionView {
    pub allowed: bool,
    /// `consent_granted`, `lawful_basis`, `no_consent`, `withdrawn`, `expired`,
    /// `notice_outdated`, `restricted`, `objected`, `erased`; in batches also
    /// `unknown_purpose`.
    pub reason: &'static str,
    pub subject: String,
    pub purpose: String,
    pub channel: Option<Channel>,
    /// The effective consent state, when one is recorded.
    pub state: Option<ConsentState>,
    pub notice: Option<NoticeVersion>,
    pub expires_at: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub requests: Vec<DecisionQuery>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchResponse {
    pub decisions: Vec<DecisionView>,
}

fn view(q: DecisionQuery, answer: Answer<'_>, now: Micros) -> DecisionView {
    let record = answer.record;
    DecisionView {
        allowed: answer.decision.allowed,
        reason: answer.decision.reason.as_str(),
        state: record.as_ref().map(|r| r.state_at(now)),
        notice: record.as_ref().and_then(|r| r.notice.clone()),
        expires_at: record
            .as_ref()
            .and_then(|r| r.expires_at)
            .map(time::rfc3339),
        subject: q.subject,
        purpose: q.purpose,
        channel: q.channel,
    }
}

fn decide_in(
    tv: &TenantView,
    q: DecisionQuery,
    now: Micros,
) -> Result<DecisionView, DecisionQuery> {
    match tv.decide(&q.subject, &q.purpose, q.channel, now) {
        Ok(answer) => Ok(view(q, answer, now)),
        Err(_) => Err(q),
    }
}

/// One decision.
#[utoipa::path(get, path = "/v1/decisions", tag = "decisions", params(DecisionQuery),
    responses((status = 200, body = DecisionView), (status = 400, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn one(
    State(app): State<Arc<App>>,
    who: Principal,
    Query(q): Query<DecisionQuery>,
) -> Result<axum::Json<DecisionView>, Problem> {
    who.require(EVERYONE)?;
    let now = time::now();
    let result = app
        .view
        .read(&who.tenant, |tv| decide_in(tv, q, now))
        .ok_or(Unknown::Tenant);
    match result {
        Ok(Ok(d)) => {
            app.metrics.decision(d.allowed, d.reason);
            Ok(axum::Json(d))
        }
        Ok(Err(q)) => Err(Problem::new(
            axum::http::StatusCode::NOT_FOUND,
            "unknown-purpose",
            format!("purpose {:?} does not exist", q.purpose),
        )
        .field("purpose")),
        Err(_) => Err(Problem::unauthorized(
            "the API key's tenant no longer exists",
        )),
    }
}

/// Many decisions in one call (up to 10,000), answered in request order.
#[utoipa::path(post, path = "/v1/decisions/batch", tag = "decisions", request_body = BatchRequest,
    responses((status = 200, body = BatchResponse), (status = 422, body = ProblemBody)), security(("api_key" = [])))]
pub async fn batch(
    State(app): State<Arc<App>>,
    who: Principal,
    Json(req): Json<BatchRequest>,
) -> Result<axum::Json<BatchResponse>, Problem> {
    who.require(EVERYONE)?;
    if req.requests.len() > MAX_BATCH {
        return Err(Problem::validation(
            "requests",
            format!("at most {MAX_BATCH} decisions per batch"),
        ));
    }
    let now = time::now();
    let decisions = app
        .view
        .read(&who.tenant, |tv| {
            req.requests
                .into_iter()
                .map(|q| {
                    decide_in(tv, q, now).unwrap_or_else(|q| DecisionView {
                        allowed: false,
                        reason: "unknown_purpose",
                        subject: q.subject,
                        purpose: q.purpose,
                        channel: q.channel,
                        state: None,
                        notice: None,
                        expires_at: None,
                    })
                })
                .collect()
        })
        .ok_or_else(|| Problem::unauthorized("the API key's tenant no longer exists"))?;
    Ok(axum::Json(BatchResponse { decisions }))
}
