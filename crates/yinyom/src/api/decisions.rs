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
use crate::view::{Answer, Unknown};

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

fn view(q: DecisionQuery, answer: Answer, now: Micros) -> DecisionView {
    let record = answer.record;
    DecisionView {
        allowed: answer.decision.allowed,
        reason: answer.decision.reason.as_str(),
        state: record.as_ref().map(|r| r.state_at(now)),
        expires_at: record
            .as_ref()
            .and_then(|r| r.expires_at)
            .map(time::rfc3339),
        notice: record.and_then(|r| r.notice),
        subject: q.subject,
        purpose: q.purpose,
        channel: q.channel,
    }
}

fn unknown_purpose(q: DecisionQuery) -> DecisionView {
    DecisionView {
        allowed: false,
        reason: "unknown_purpose",
        subject: q.subject,
        purpose: q.purpose,
        channel: q.channel,
        state: None,
        notice: None,
        expires_at: None,
    }
}

/// One decision from the view (a bounded view reads the store on a miss).
async fn ask(
    app: &App,
    tenant: &str,
    q: &DecisionQuery,
    now: Micros,
) -> Result<Result<Answer, Unknown>, crate::store::StoreError> {
    app.view
        .decide(
            app.store.as_ref(),
            tenant,
            &q.subject,
            &q.purpose,
            q.channel,
            now,
        )
        .await
}

fn gone() -> Problem {
    Problem::unauthorized("the API key's tenant no longer exists")
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
    match ask(&app, &who.tenant, &q, now).await? {
        Ok(answer) => {
            let d = view(q, answer, now);
            app.metrics.decision(d.allowed, d.reason);
            Ok(axum::Json(d))
        }
        Err(Unknown::Purpose) => Err(Problem::new(
            axum::http::StatusCode::NOT_FOUND,
            "unknown-purpose",
            format!("purpose {:?} does not exist", q.purpose),
        )
        .field("purpose")),
        Err(_) => Err(gone()),
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
    // From the view under one lock; subjects a bounded view does not hold
    // are read from the store afterwards.
    let decided: Vec<Result<DecisionView, DecisionQuery>> = app
        .view
        .read(&who.tenant, |tv| {
            req.requests
                .into_iter()
                .map(
                    |q| match tv.decide(&q.subject, &q.purpose, q.channel, now) {
                        Ok(answer) => Ok(view(q, answer, now)),
                        Err(Unknown::Subject) => Err(q),
                        Err(_) => Ok(unknown_purpose(q)),
                    },
                )
                .collect()
        })
        .ok_or_else(gone)?;
    let mut decisions = Vec::with_capacity(decided.len());
    for d in decided {
        decisions.push(match d {
            Ok(d) => d,
            Err(q) => match ask(&app, &who.tenant, &q, now).await? {
                Ok(answer) => view(q, answer, now),
                Err(Unknown::Purpose) => unknown_purpose(q),
                Err(_) => return Err(gone()),
            },
        });
    }
    Ok(axum::Json(BatchResponse { decisions }))
}
