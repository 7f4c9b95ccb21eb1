//! `/v1/hooks`: request hooks (endpoints a rights request calls before
//! approval, before execution and after it), and the reply endpoint a hook
//! answers a call through later. The work is in [`crate::hooks`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use yinyom_core::hooks::{Decision, Stage};
use yinyom_core::rights::Kind;
use yinyom_core::time;

use super::auth::{MANAGERS, Principal};
use super::extract::{Json, Path};
use super::problem::{Problem, ProblemBody};
use crate::app::App;
use crate::hooks::HookStatus;
use crate::store::{HookRow, StoreError};

/// Default and bounds of a hook's time limit per call.
const TIMEOUT_DEFAULT_MS: u32 = 10_000;
const TIMEOUT_MIN_MS: u32 = 100;
const TIMEOUT_MAX_MS: u32 = 30_000;
/// Hooks a tenant may register.
const HOOKS_MAX: usize = 50;

/// Body of `POST /v1/hooks` and `PUT /v1/hooks/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HookInput {
    /// What the hook is (for staff), 1-100 characters.
    pub name: String,
    /// `http://` or `https://` URL called with a POST per request. Its host
    /// is allowed like a connected system's; a private or loopback address
    /// only if `--connector-allow-private` lists it.
    pub url: String,
    pub stage: Stage,
    /// Request kinds it is called for; all when empty.
    #[serde(default)]
    pub kinds: Vec<Kind>,
    /// Time limit of one call, 100-30000 ms (10000 by default); a call
    /// without an answer by then failed and is retried.
    #[serde(default)]
    pub timeout_ms: Option<u32>,
}

/// A request hook.
#[derive(Debug, Serialize, ToSchema)]
pub struct HookView {
    pub id: String,
    pub name: String,
    pub url: String,
    pub stage: Stage,
    pub kinds: Vec<Kind>,
    pub timeout_ms: i64,
    /// `whsec_…`: the key the calls are signed with (Standard Webhooks). In
    /// the response that creates the hook only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl HookView {
    fn of(h: &HookRow) -> HookView {
        HookView {
            id: h.id.clone(),
            name: h.name.clone(),
            url: h.url.clone(),
            stage: Stage::parse(&h.stage).unwrap_or(Stage::PreApproval),
            kinds: h.kinds.iter().filter_map(|k| Kind::parse(k)).collect(),
            timeout_ms: h.timeout_ms,
            secret: None,
            created_at: time::rfc3339(h.created_at),
            updated_at: time::rfc3339(h.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HookList {
    pub hooks: Vec<HookView>,
}

fn check(app: &App, h: &HookInput) -> Result<(), Problem> {
    let n = h.name.trim().chars().count();
    if n == 0 || n > 100 || h.name.chars().any(char::is_control) {
        return Err(Problem::validation(
            "name",
            "must be 1-100 characters, no control characters",
        ));
    }
    super::webhooks::check_url(&h.url)?;
    app.systems
        .http
        .check_hook_url(&h.url)
        .map_err(|e| Problem::validation("url", e))?;
    if let Some(t) = h.timeout_ms
        && !(TIMEOUT_MIN_MS..=TIMEOUT_MAX_MS).contains(&t)
    {
        return Err(Problem::validation(
            "timeout_ms",
            format!("must be {TIMEOUT_MIN_MS}-{TIMEOUT_MAX_MS}"),
        ));
    }
    Ok(())
}

fn kinds_of(h: &HookInput) -> Vec<String> {
    let mut kinds: Vec<String> = h.kinds.iter().map(|k| k.as_str().to_string()).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// Register a hook. Its signing secret is in this response only.
#[utoipa::path(post, path = "/v1/hooks", tag = "hooks", request_body = HookInput,
    responses((status = 201, body = HookView), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn create(
    State(app): State<Arc<App>>,
    who: Principal,
    Json(h): Json<HookInput>,
) -> Result<(StatusCode, axum::Json<HookView>), Problem> {
    who.require(MANAGERS)?;
    check(&app, &h)?;
    if app.store.hooks(&who.tenant).await?.len() >= HOOKS_MAX {
        return Err(Problem::validation(
            "url",
            format!("a tenant has at most {HOOKS_MAX} hooks"),
        ));
    }
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let keys = app
        .vault
        .tenant(app.store.as_ref(), &who.tenant)
        .await
        .map_err(StoreError::from)?;
    let id = format!("hk_{}", uuid::Uuid::now_v7().simple());
    let now = time::now();
    let row = HookRow {
        tenant: who.tenant.to_string(),
        secret: crate::hooks::seal_secret(&keys, &id, &secret),
        id,
        name: h.name.trim().to_string(),
        url: h.url.clone(),
        stage: h.stage.as_str().into(),
        kinds: kinds_of(&h),
        timeout_ms: i64::from(h.timeout_ms.unwrap_or(TIMEOUT_DEFAULT_MS)),
        created_at: now,
        updated_at: now,
    };
    app.store.put_hook(&row).await?;
    let mut view = HookView::of(&row);
    view.secret = Some(secret);
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// The tenant's hooks (without their secrets).
#[utoipa::path(get, path = "/v1/hooks", tag = "hooks",
    responses((status = 200, body = HookList)), security(("api_key" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    who: Principal,
) -> Result<axum::Json<HookList>, Problem> {
    who.require(MANAGERS)?;
    let hooks = app.store.hooks(&who.tenant).await?;
    Ok(axum::Json(HookList {
        hooks: hooks.iter().map(HookView::of).collect(),
    }))
}

async fn find(app: &App, tenant: &str, id: &str) -> Result<HookRow, Problem> {
    app.store
        .hook(tenant, id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("hook {id:?} does not exist")))
}

#[utoipa::path(get, path = "/v1/hooks/{id}", tag = "hooks", params(("id" = String, Path)),
    responses((status = 200, body = HookView), (status = 404, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<HookView>, Problem> {
    who.require(MANAGERS)?;
    Ok(axum::Json(HookView::of(
        &find(&app, &who.tenant, &id).await?,
    )))
}

/// Change a hook (its secret stays). Calls made already keep their stage.
#[utoipa::path(put, path = "/v1/hooks/{id}", tag = "hooks", params(("id" = String, Path)),
    request_body = HookInput,
    responses((status = 200, body = HookView), (status = 404, body = ProblemBody),
        (status = 422, body = ProblemBody)), security(("api_key" = [])))]
pub async fn put(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
    Json(h): Json<HookInput>,
) -> Result<axum::Json<HookView>, Problem> {
    who.require(MANAGERS)?;
    let mut row = find(&app, &who.tenant, &id).await?;
    check(&app, &h)?;
    row.name = h.name.trim().to_string();
    row.url = h.url.clone();
    row.stage = h.stage.as_str().into();
    row.kinds = kinds_of(&h);
    row.timeout_ms = i64::from(h.timeout_ms.unwrap_or(TIMEOUT_DEFAULT_MS));
    row.updated_at = time::now().max(row.updated_at + 1);
    app.store.put_hook(&row).await?;
    Ok(axum::Json(HookView::of(&row)))
}

/// Remove a hook. Its calls not answered yet hold their requests no more
/// (they become `skipped`).
#[utoipa::path(delete, path = "/v1/hooks/{id}", tag = "hooks", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ProblemBody)), security(("api_key" = [])))]
pub async fn delete(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    who.require(MANAGERS)?;
    if app.store.delete_hook(&who.tenant, &id).await? {
        crate::hooks::release_removed(&app, &who.tenant, &id).await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!("hook {id:?} does not exist")))
    }
}

/// Body of `POST /v1/requests/{id}/hooks/{hook}/reply`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyInput {
    pub decision: Decision,
    /// Why (a denial's reason becomes the request's rejection reason).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A hook answers a call later: `approve` or `deny`, authenticated by the
/// call's reply token (`Authorization: Bearer <token>`, from the call's
/// `reply.token`), not an API key. The same answer again is accepted; a
/// different one after the call was answered is a conflict.
#[utoipa::path(post, path = "/v1/requests/{id}/hooks/{hook}/reply", tag = "hooks",
    params(("id" = String, Path), ("hook" = String, Path)), request_body = ReplyInput,
    responses((status = 200, body = HookStatus), (status = 401, body = ProblemBody),
        (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("reply_token" = [])))]
pub async fn reply(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, hook)): Path<(String, String)>,
    Json(b): Json<ReplyInput>,
) -> Result<axum::Json<HookStatus>, Problem> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if b.reason
        .as_ref()
        .is_some_and(|r| r.len() > yinyom_core::hooks::REASON_MAX)
    {
        return Err(Problem::validation(
            "reason",
            format!("must be at most {} bytes", yinyom_core::hooks::REASON_MAX),
        ));
    }
    if id.len() > 100 || hook.len() > 100 {
        return Err(Problem::not_found("no such call"));
    }
    let status = crate::hooks::reply(&app, &id, &hook, token, b.decision, b.reason).await?;
    Ok(axum::Json(status))
}
