//! `/v1/webhooks`: endpoints that receive consent events, their deliveries
//! log, and replay of dead deliveries. Delivery itself is in
//! [`crate::dispatch`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use yinyom_core::time;

use super::auth::{MANAGERS, Principal};
use super::extract::{Json, Path, Query};
use super::problem::{Problem, ProblemBody};
use super::stream::check_types;
use crate::app::App;
use crate::model::{Delivery, Webhook};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// `http://` or `https://` URL that receives a POST per event.
    pub url: String,
    /// Event types to deliver (`consent.withdrawn`, …); all when empty.
    #[serde(default)]
    pub events: Vec<String>,
    /// Purposes whose events to deliver; all when empty.
    #[serde(default)]
    pub purposes: Vec<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<Delivery>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// `pending`, `delivered` or `dead`.
    pub status: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    pub limit: Option<u32>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Seqs of the dead deliveries to send again; all dead ones when absent.
    pub seqs: Option<Vec<u64>>,
}

#[derive(Serialize, ToSchema)]
pub struct Replayed {
    pub requeued: u64,
}

/// A webhook's settings as far as they can be checked without a registry
/// (the URL and the event types).
pub fn check(req: &NewWebhook) -> Result<(), Problem> {
    check_url(&req.url)?;
    check_types(&req.events, "events")
}

pub(crate) fn check_url(url: &str) -> Result<(), Problem> {
    let bad = |why: &str| Problem::validation("url", format!("{why}: {url:?}"));
    if url.len() > 2048 {
        return Err(bad("must be at most 2048 characters"));
    }
    let uri: Uri = url.parse().map_err(|_| bad("is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("must be an http:// or https:// URL")),
    }
    match uri.authority() {
        Some(a) if !a.host().is_empty() && !a.as_str().contains('@') => Ok(()),
        Some(_) => Err(bad("must name a host, without user or password")),
        None => Err(bad("must name a host")),
    }
}

async fn find(app: &App, tenant: &str, id: &str) -> Result<Webhook, Problem> {
    app.store
        .webhooks(Some(tenant))
        .await?
        .into_iter()
        .find(|w| w.id == id)
        .ok_or_else(|| Problem::not_found(format!("webhook {id:?} does not exist")))
}

/// Register an endpoint. Its signing secret is in this response only.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = NewWebhook,
    responses((status = 201, body = Webhook), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn create(
    State(app): State<Arc<App>>,
    who: Principal,
    Json(req): Json<NewWebhook>,
) -> Result<(StatusCode, axum::Json<Webhook>), Problem> {
    who.require(MANAGERS)?;
    check(&req)?;
    let unknown = app
        .view
        .read(&who.tenant, |tv| {
            req.purposes
                .iter()
                .find(|p| !tv.purposes.contains_key(*p))
                .cloned()
        })
        .flatten();
    if let Some(p) = unknown {
        return Err(Problem::validation(
            "purposes",
            format!("purpose {p:?} does not exist"),
        ));
    }
    if req.description.chars().count() > 200 || req.description.chars().any(char::is_control) {
        return Err(Problem::validation(
            "description",
            "must be at most 200 characters, no control characters",
        ));
    }
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    let webhook = Webhook {
        id: format!("wh_{}", uuid::Uuid::now_v7().simple()),
        tenant: who.tenant.to_string(),
        url: req.url,
        events: req.events,
        purposes: req.purposes,
        description: req.description,
        secret: format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ),
        // Events from now on.
        cursor: app.store.last_event(&who.tenant).await?,
        created_at: time::now(),
    };
    app.store.insert_webhook(&webhook).await?;
    app.changed.send_modify(|n| *n += 1);
    Ok((StatusCode::CREATED, axum::Json(webhook)))
}

/// The tenant's endpoints (without their secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookList)), security(("api_key" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    who: Principal,
) -> Result<axum::Json<WebhookList>, Problem> {
    who.require(MANAGERS)?;
    let mut webhooks = app.store.webhooks(Some(&who.tenant)).await?;
    for w in &mut webhooks {
        w.secret.clear();
    }
    Ok(axum::Json(WebhookList { webhooks }))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = Webhook), (status = 404, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Webhook>, Problem> {
    who.require(MANAGERS)?;
    let mut w = find(&app, &who.tenant, &id).await?;
    w.secret.clear();
    Ok(axum::Json(w))
}

/// Remove an endpoint; nothing more is delivered to it.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ProblemBody)), security(("api_key" = [])))]
pub async fn delete(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    who.require(MANAGERS)?;
    if app
        .store
        .delete_webhook(&who.tenant, &id, time::now())
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!("webhook {id:?} does not exist")))
    }
}

/// The endpoint's deliveries, newest first: status, attempts, last answer.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path), DeliveryQuery),
    responses((status = 200, body = DeliveryList), (status = 404, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn deliveries(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
    Query(q): Query<DeliveryQuery>,
) -> Result<axum::Json<DeliveryList>, Problem> {
    who.require(MANAGERS)?;
    find(&app, &who.tenant, &id).await?;
    if let Some(s) = &q.status
        && !["pending", "delivered", "dead"].contains(&s.as_str())
    {
        return Err(Problem::validation(
            "status",
            "must be pending, delivered or dead",
        ));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let deliveries = app
        .store
        .deliveries(&who.tenant, &id, q.status.as_deref(), limit)
        .await?;
    Ok(axum::Json(DeliveryList { deliveries }))
}

/// Send dead deliveries again (all, or the given seqs).
#[utoipa::path(post, path = "/v1/webhooks/{id}/replay", tag = "webhooks",
    params(("id" = String, Path)), request_body = ReplayRequest,
    responses((status = 200, body = Replayed), (status = 404, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn replay(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
    Json(req): Json<ReplayRequest>,
) -> Result<axum::Json<Replayed>, Problem> {
    who.require(MANAGERS)?;
    find(&app, &who.tenant, &id).await?;
    if req.seqs.as_ref().is_some_and(|s| s.len() > 10_000) {
        return Err(Problem::validation("seqs", "at most 10,000 at once"));
    }
    let requeued = app
        .store
        .replay(&who.tenant, &id, req.seqs.as_deref(), time::now())
        .await?;
    app.changed.send_modify(|n| *n += 1);
    Ok(axum::Json(Replayed { requeued }))
}
