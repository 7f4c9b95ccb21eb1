//! `/v1/ledger/verifications`: ledger verification as a job. Starting one
//! answers at once (202 and a Location); the job reads the chain in pages
//! on every core and stores its progress, so any node answers for it and
//! its result outlives restarts (see `crate::verification`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use yinyom_core::ledger::Broken;
use yinyom_core::time;

use super::auth::{Principal, STAFF};
use super::extract::Path;
use super::problem::{Problem, ProblemBody};
use crate::app::App;
use crate::store::VerificationRow;
use crate::verification;

/// A verification of the tenant's ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationView {
    pub id: String,
    /// `running`, `done` or `failed` (storage failed, or the process
    /// running it stopped: see `error`).
    pub status: String,
    /// Entries verified so far.
    pub checked: u64,
    /// The chain's length when the job started.
    pub total: u64,
    /// Whether the chain is intact; null until done.
    pub ok: Option<bool>,
    /// The first altered, missing or unreadable entry.
    #[schema(value_type = Option<Object>)]
    pub first_broken: Option<Broken>,
    /// Why a failed job failed.
    pub error: Option<String>,
    pub started_by: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Entries per second so far, or over the whole job once finished.
    pub entries_per_second: f64,
}

impl VerificationView {
    fn new(v: VerificationRow, now: i64) -> Self {
        VerificationView {
            entries_per_second: (verification::rate(&v, now) * 10.0).round() / 10.0,
            id: v.id,
            status: v.status,
            checked: v.checked,
            total: v.total,
            ok: v.ok,
            first_broken: v.broken,
            error: v.error,
            started_by: v.started_by,
            started_at: time::rfc3339(v.started_at),
            finished_at: v.finished_at.map(time::rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationList {
    /// The most recent verifications (at most 50), newest first.
    pub verifications: Vec<VerificationView>,
}

/// Start verifying the tenant's ledger in the background: recompute every
/// entry's hash and check the chain's links and its recorded head. Answers
/// at once with the job (202) and its address in `Location`; poll it until
/// `status` is `done`. If a verification is already running for the
/// tenant, that one is answered instead of starting a second.
#[utoipa::path(post, path = "/v1/ledger/verifications", tag = "ledger",
    responses((status = 202, body = VerificationView, headers(("Location" = String, description = "The job's address")))),
    security(("api_key" = [])))]
pub async fn start(State(app): State<Arc<App>>, who: Principal) -> Result<Response, Problem> {
    who.require(STAFF)?;
    let (v, _) = verification::start(app.store.clone(), &who.tenant, &who.actor())
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict => {
                Problem::conflict("a verification was finishing just now; start again")
            }
            e => e.into(),
        })?;
    let location = format!("/v1/ledger/verifications/{}", v.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        axum::Json(VerificationView::new(v, time::now())),
    )
        .into_response())
}

/// One verification: its progress, or its result.
#[utoipa::path(get, path = "/v1/ledger/verifications/{id}", tag = "ledger", params(("id" = String, Path)),
    responses((status = 200, body = VerificationView), (status = 404, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<VerificationView>, Problem> {
    who.require(STAFF)?;
    let v = verification::get(app.store.as_ref(), &who.tenant, &id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("verification {id:?} does not exist")))?;
    Ok(axum::Json(VerificationView::new(v, time::now())))
}

/// The tenant's most recent verifications, newest first.
#[utoipa::path(get, path = "/v1/ledger/verifications", tag = "ledger",
    responses((status = 200, body = VerificationList)), security(("api_key" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    who: Principal,
) -> Result<axum::Json<VerificationList>, Problem> {
    who.require(STAFF)?;
    let now = time::now();
    let verifications = verification::recent(app.store.as_ref(), &who.tenant)
        .await?
        .into_iter()
        .map(|v| VerificationView::new(v, now))
        .collect();
    Ok(axum::Json(VerificationList { verifications }))
}
