//! `POST /v1/consents`: record consent actions, durably, with a receipt.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::auth::{EVERYONE, Principal};
use super::problem::{Problem, ProblemBody, parse_json};
use crate::app::App;
use crate::optin::Submitted;
use crate::record::ConsentRequest;
use crate::store::{Idempotency, ItemOutcome};

fn replay(response: serde_json::Value) -> Response {
    let mut res = (StatusCode::CREATED, axum::Json(response)).into_response();
    res.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    res
}

fn key_reused() -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
        "this Idempotency-Key was already used with a different request body",
    )
    .field("Idempotency-Key")
}

/// Record one or more consent actions for a subject. Returns the ledger
/// events and, for grants, a signed receipt. Send an `Idempotency-Key`
/// header to make retries safe.
#[utoipa::path(post, path = "/v1/consents", tag = "consents", request_body = ConsentRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key and body replay the first response")),
    responses(
        (status = 201, description = "Recorded: events and receipt", body = Object),
        (status = 400, body = ProblemBody), (status = 409, body = ProblemBody),
        (status = 413, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn record(
    State(app): State<Arc<App>>,
    who: Principal,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, Problem> {
    who.require(EVERYONE)?;
    let body = body?;
    let idempotency = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    Problem::validation("Idempotency-Key", "must be 1-255 visible ASCII characters")
                })?;
            Some(Idempotency {
                key: key.to_string(),
                request_hash: hex::encode(Sha256::digest(&body)),
            })
        }
    };
    if let Some(idem) = &idempotency
        && let Some((hash, response)) = app
            .store
            .idempotent_response(&who.tenant, &idem.key)
            .await?
    {
        return if hash == idem.request_hash {
            Ok(replay(response))
        } else {
            Err(key_reused())
        };
    }
    let req: ConsentRequest = parse_json(&body)?;
    let gone = || Problem::unauthorized("the API key's tenant no longer exists");
    match crate::optin::submit(&app, &who.tenant, &who.actor(), req, idempotency, gone).await? {
        Submitted::Held(pending) => Ok((StatusCode::ACCEPTED, axum::Json(pending)).into_response()),
        Submitted::Written(ItemOutcome::Written { response, .. }) => {
            Ok((StatusCode::CREATED, axum::Json(response)).into_response())
        }
        Submitted::Written(ItemOutcome::Replayed { response }) => Ok(replay(response)),
        Submitted::Written(ItemOutcome::KeyReused) => Err(key_reused()),
    }
}
