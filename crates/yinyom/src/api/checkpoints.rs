//! `/v1/ledger/checkpoints` (signed tree heads of the ledger) and
//! `/v1/receipts/{id}/proof` (a receipt's entries and their audit paths to
//! a checkpoint): see `crate::checkpoint`. Everything they return checks
//! offline against `/.well-known/jwks.json` (`yinyom ledger
//! verify-receipt`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use yinyom_core::proof::{EntryProof, SignedCheckpoint};
use yinyom_core::time;

use super::auth::{EVERYONE, Principal, STAFF};
use super::extract::{Path, Query};
use super::problem::{Problem, ProblemBody};
use crate::app::App;
use crate::checkpoint;
use crate::store::CheckpointRow;

/// A signed checkpoint of the tenant's ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointView {
    pub number: u64,
    /// Ledger entries covered.
    pub size: u64,
    /// Hex: the signed Merkle root.
    pub root: String,
    pub created_at: String,
    /// The claims (`typ`, `tenant`, `number`, `size`, `root`, `partitions`
    /// with each partition's size, Merkle root and chain head, `iat`).
    #[schema(value_type = Object)]
    pub claims: serde_json::Value,
    /// The claims signed with the receipt key (JWS compact, EdDSA): check
    /// it with `/.well-known/jwks.json`.
    pub jws: String,
}

impl From<CheckpointRow> for CheckpointView {
    fn from(c: CheckpointRow) -> Self {
        CheckpointView {
            number: c.number,
            size: c.size,
            root: c.root,
            created_at: time::rfc3339(c.created_at),
            claims: c.body,
            jws: c.jws,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CheckpointQuery {
    /// Page size: 1-1000, 100 by default.
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointList {
    /// The newest checkpoint (null before the first).
    pub latest: Option<CheckpointView>,
    /// Checkpoints, newest first.
    pub checkpoints: Vec<CheckpointView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The tenant's signed checkpoints, newest first, and the latest.
#[utoipa::path(get, path = "/v1/ledger/checkpoints", tag = "ledger", params(CheckpointQuery),
    responses((status = 200, body = CheckpointList), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    who: Principal,
    Query(q): Query<CheckpointQuery>,
) -> Result<axum::Json<CheckpointList>, Problem> {
    who.require(EVERYONE)?;
    let limit = super::page::limit(q.limit)?;
    let before: Option<u64> = super::page::after(q.cursor.as_deref())?;
    let rows = app
        .store
        .checkpoints(&who.tenant, before, limit + 1)
        .await?;
    let (rows, next_cursor) = super::page::split(rows, limit, |c| c.number);
    let latest = app.store.checkpoint(&who.tenant, None).await?;
    Ok(axum::Json(CheckpointList {
        latest: latest.map(Into::into),
        checkpoints: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// One checkpoint by its number.
#[utoipa::path(get, path = "/v1/ledger/checkpoints/{number}", tag = "ledger",
    params(("number" = u64, Path)),
    responses((status = 200, body = CheckpointView), (status = 404, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(number): Path<u64>,
) -> Result<axum::Json<CheckpointView>, Problem> {
    who.require(EVERYONE)?;
    let c = app
        .store
        .checkpoint(&who.tenant, Some(number))
        .await?
        .ok_or_else(|| Problem::not_found(format!("checkpoint {number} does not exist")))?;
    Ok(axum::Json(c.into()))
}

/// Make a checkpoint of the ledger as it is now (the leader also makes one
/// every minute when the ledger grew). If nothing was written since the
/// latest, the latest is answered (200); a new one is 201.
#[utoipa::path(post, path = "/v1/ledger/checkpoints", tag = "ledger",
    responses((status = 201, body = CheckpointView), (status = 200, body = CheckpointView)),
    security(("api_key" = [])))]
pub async fn create(
    State(app): State<Arc<App>>,
    who: Principal,
) -> Result<(StatusCode, axum::Json<CheckpointView>), Problem> {
    who.require(STAFF)?;
    let made = checkpoint::make(app.store.as_ref(), &app.signer, &who.tenant).await?;
    let status = if made.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(made.row.into())))
}

/// A receipt, and the proof that its grants are in the ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptProofView {
    pub receipt_id: String,
    /// The receipt itself (JWS compact).
    pub receipt: String,
    /// The checkpoint the entries are proven against.
    #[schema(value_type = Object)]
    pub checkpoint: SignedCheckpoint,
    /// The ledger entries that carry the receipt's id, each with its
    /// partition, leaf index and audit path (hex, from the leaf up).
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<EntryProof>,
}

/// The inclusion proof of a receipt: the ledger entries of its grants and
/// their audit paths to a signed checkpoint (one is made if none covers
/// them yet). Save the response and the receipt, and check both offline:
/// `yinyom ledger verify-receipt RECEIPT PROOF --jwks jwks.json`.
#[utoipa::path(get, path = "/v1/receipts/{id}/proof", tag = "ledger",
    params(("id" = String, Path)),
    responses((status = 200, body = ReceiptProofView), (status = 404, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn proof(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<ReceiptProofView>, Problem> {
    who.require(EVERYONE)?;
    let (receipt, p) = checkpoint::prove(app.store.as_ref(), &app.signer, &who.tenant, &id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("receipt {id:?} does not exist")))?;
    Ok(axum::Json(ReceiptProofView {
        receipt_id: p.receipt_id,
        receipt,
        checkpoint: p.checkpoint,
        entries: p.entries,
    }))
}
