//! Request hooks (issue 14 part 5, docs/hooks.md): the tenant's own
//! endpoints that a rights request calls before approval, before execution
//! and after it. A pre-stage hook holds the request until it answers
//! `approve` or `deny`, in its HTTP response or later through
//! `POST /v1/requests/{id}/hooks/{hook}/reply` with the call's token; a
//! denial rejects the request with the hook's reason. A post-execution hook
//! is told the outcome (each connected system's part) and changes nothing.
//!
//! Calls are made by the leader's task (like connected systems' jobs):
//! signed like webhooks (Standard Webhooks headers), through the guarded
//! client of HTTP connectors (the outbound allow-list), retried with
//! backoff when they fail. The rules (which answers hold, release or
//! reject) are in `yinyom_core::hooks`.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use yinyom_core::hooks::{self as rules, Answer, CallStatus, Decision, Gate, Stage};
use yinyom_core::rights::Kind;
use yinyom_core::time::{self, Micros};

use crate::api::problem::Problem;
use crate::model::RequestRow;
use crate::services::Services;
use crate::store::{HookCall, HookRow, Store, StoreError};

/// Calls taken a round.
const ROUND: u32 = 64;
/// Calls made at once.
const AT_ONCE: usize = 16;

fn secret_name(id: &str) -> String {
    format!("hook:{id}")
}

/// The hook's signing secret (`whsec_…`), opened.
pub fn open_secret(keys: &crate::vault::TenantKeys, h: &HookRow) -> Result<String, String> {
    let plain = keys
        .open_secret(&secret_name(&h.id), &h.secret)
        .map_err(|e| format!("the hook's secret: {e}"))?;
    String::from_utf8(plain).map_err(|_| "the hook's secret is not UTF-8".to_string())
}

/// Seal a hook's signing secret.
pub fn seal_secret(keys: &crate::vault::TenantKeys, id: &str, secret: &str) -> Vec<u8> {
    keys.seal_secret(&secret_name(id), secret.as_bytes())
}

/// The token that authenticates a reply to one call: a keyed hash of the
/// request and the hook under the tenant's lookup key, so it is stored
/// nowhere and stays the same across retries of the call.
pub fn reply_token(keys: &crate::vault::TenantKeys, request_id: &str, hook: &str) -> String {
    format!(
        "yhr_{}",
        keys.lookup_hash("hook-reply", &format!("{request_id}\0{hook}"))
    )
}

/// Whether hooks of a stage take part in requests made by Yinyom's own
/// retention job (erasure by rule, no requester): only post-execution ones
/// are told of them; the pre stages concern what subjects ask for.
fn applies(stage: Stage, r: &RequestRow) -> bool {
    !stage.decides() || r.via != crate::lifecycle::RETENTION_VIA
}

fn wants(h: &HookRow, stage: Stage, kind: Kind) -> bool {
    h.stage == stage.as_str() && (h.kinds.is_empty() || h.kinds.iter().any(|k| k == kind.as_str()))
}

async fn hooks_for(
    store: &dyn Store,
    r: &RequestRow,
    stage: Stage,
) -> Result<Vec<HookRow>, StoreError> {
    if !applies(stage, r) {
        return Ok(vec![]);
    }
    Ok(store
        .hooks(&r.tenant)
        .await?
        .into_iter()
        .filter(|h| wants(h, stage, r.kind))
        .collect())
}

/// How many hooks of `stage` request `r` would call.
pub async fn matching(
    store: &dyn Store,
    r: &RequestRow,
    stage: Stage,
) -> Result<usize, StoreError> {
    Ok(hooks_for(store, r, stage).await?.len())
}

/// Create the calls of `stage` for request `r` (the tenant's hooks of that
/// stage that want its kind); returns how many. The task makes them.
pub async fn call(svc: &Services, r: &RequestRow, stage: Stage) -> Result<usize, StoreError> {
    let hooks = hooks_for(svc.store.as_ref(), r, stage).await?;
    if hooks.is_empty() {
        return Ok(0);
    }
    let now = time::now();
    let calls: Vec<HookCall> = hooks
        .iter()
        .map(|h| HookCall {
            tenant: r.tenant.clone(),
            request_id: r.id.clone(),
            hook: h.id.clone(),
            stage: stage.as_str().into(),
            status: CallStatus::Pending.as_str().into(),
            reason: None,
            error: None,
            attempts: 0,
            next_at: Some(now),
            answered_at: None,
            created_at: now,
            updated_at: now,
        })
        .collect();
    svc.store.insert_hook_calls(&calls).await?;
    svc.systems.hooks_wake.notify_one();
    Ok(calls.len())
}

fn status_of(c: &HookCall) -> CallStatus {
    CallStatus::parse(&c.status).unwrap_or(CallStatus::Pending)
}

/// The gate of a stage for a request, with its calls.
pub async fn gate(
    store: &dyn Store,
    tenant: &str,
    request_id: &str,
    stage: Stage,
) -> Result<(Gate, Vec<HookCall>), StoreError> {
    let calls: Vec<HookCall> = store
        .request_hook_calls(tenant, request_id)
        .await?
        .into_iter()
        .filter(|c| c.stage == stage.as_str())
        .collect();
    let statuses: Vec<CallStatus> = calls.iter().map(status_of).collect();
    Ok((rules::gate(&statuses), calls))
}

/// One call as `GET /v1/requests/{id}` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HookStatus {
    /// The hook's id.
    pub id: String,
    pub stage: Stage,
    pub status: CallStatus,
    /// The hook's reason (a denial's is the request's rejection reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why the last attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub attempts: i64,
    /// Called, and its reply is awaited through the reply endpoint.
    pub awaiting_reply: bool,
    /// When a failed call is tried again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<String>,
}

impl HookStatus {
    pub fn of(c: &HookCall) -> HookStatus {
        let status = status_of(c);
        HookStatus {
            id: c.hook.clone(),
            stage: Stage::parse(&c.stage).unwrap_or(Stage::PreApproval),
            status,
            reason: c.reason.clone(),
            error: c.error.clone(),
            attempts: c.attempts,
            awaiting_reply: status == CallStatus::Pending && c.attempts > 0 && c.next_at.is_none(),
            retry_at: (status == CallStatus::Failed)
                .then_some(c.next_at)
                .flatten()
                .map(time::rfc3339),
            answered_at: c.answered_at.map(time::rfc3339),
        }
    }
}

/// A request's calls, for its view.
pub async fn statuses(
    store: &dyn Store,
    tenant: &str,
    id: &str,
) -> Result<Vec<HookStatus>, StoreError> {
    Ok(store
        .request_hook_calls(tenant, id)
        .await?
        .iter()
        .map(HookStatus::of)
        .collect())
}

/// What a hook is sent (JSON, signed).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HookPayload {
    /// `request.pre_approval`, `request.pre_execution`, `request.post_execution`.
    #[serde(rename = "type")]
    pub kind: String,
    pub hook: String,
    pub stage: Stage,
    pub tenant: String,
    pub request: HookRequest,
    /// Post-execution: how the request ended, with each connected system's
    /// part (statuses, rows, per-table actions; no personal data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<serde_json::Value>,
    /// Pre stages: where to answer later, and the token to answer with
    /// (`Authorization: Bearer <token>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyTo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HookRequest {
    pub id: String,
    pub kind: Kind,
    pub status: yinyom_core::rights::Status,
    /// The subject's id as Yinyom stores it now (after an erasure, its
    /// pseudonym), and its pseudonymous uid.
    pub subject: Option<String>,
    pub subject_uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purposes: Vec<String>,
    pub via: String,
    pub received_at: String,
    pub due_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplyTo {
    pub url: String,
    pub token: String,
}

async fn payload(
    svc: &Services,
    keys: &crate::vault::TenantKeys,
    r: &RequestRow,
    hook: &str,
    stage: Stage,
) -> Result<HookPayload, StoreError> {
    let outcome = if stage.decides() {
        None
    } else {
        let systems = crate::systems::statuses(svc.store.as_ref(), &r.tenant, &r.id).await?;
        Some(serde_json::json!({
            "status": r.status,
            "closed_at": r.closed_at.map(time::rfc3339),
            "steps": r.steps.iter().filter(|s| s.actor == "yinyom" || s.action == "complete")
                .map(|s| serde_json::json!({"action": s.action, "at": s.at, "outcome": s.outcome}))
                .collect::<Vec<_>>(),
            "systems": systems,
        }))
    };
    Ok(HookPayload {
        kind: format!("request.{}", stage.as_str()),
        hook: hook.to_string(),
        stage,
        tenant: r.tenant.clone(),
        request: HookRequest {
            id: r.id.clone(),
            kind: r.kind,
            status: r.status,
            subject: r.subject_id.clone(),
            subject_uid: r.subject_uid.clone(),
            purposes: r.purposes.clone(),
            via: r.via.clone(),
            received_at: time::rfc3339(r.received_at),
            due_at: time::rfc3339(r.due_at),
        },
        outcome,
        reply: stage.decides().then(|| ReplyTo {
            url: format!(
                "{}/v1/requests/{}/hooks/{}/reply",
                svc.public_url.trim_end_matches('/'),
                r.id,
                hook
            ),
            token: reply_token(keys, &r.id, hook),
        }),
    })
}

/// The wait before attempt `attempts + 1`, after `attempts` failures (the
/// connected systems' settings).
fn backoff(svc: &Services, attempts: i64) -> Micros {
    let c = &svc.systems.config;
    let factor = 2u32.saturating_pow(attempts.clamp(1, 20) as u32 - 1);
    c.retry_base
        .saturating_mul(factor)
        .min(c.retry_max)
        .as_micros() as Micros
}

/// The background task (leader only): makes due calls, retries failures.
pub async fn run(svc: Weak<Services>) {
    let Some(wake) = svc.upgrade().map(|a| a.systems.hooks_wake.clone()) else {
        return;
    };
    loop {
        let Some(a) = svc.upgrade() else { return };
        let busy = match round(&a).await {
            Ok(busy) => busy,
            Err(e) => {
                tracing::warn!(error = %e, "request hooks: storage unavailable");
                false
            }
        };
        drop(a);
        if !busy {
            let _ = tokio::time::timeout(Duration::from_millis(500), wake.notified()).await;
        }
    }
}

async fn round(svc: &Arc<Services>) -> Result<bool, StoreError> {
    use futures_util::StreamExt;
    if !svc.store.lead().await? {
        return Ok(false);
    }
    let due = svc.store.due_hook_calls(time::now(), ROUND).await?;
    let busy = due.len() == ROUND as usize;
    let results: Vec<Result<(), StoreError>> = futures_util::stream::iter(due)
        .map(|c| attempt(svc, c))
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(busy)
}

/// One attempt at a call: leased, sent, its answer recorded; a decision
/// settles the request's stage.
async fn attempt(svc: &Arc<Services>, mut c: HookCall) -> Result<(), StoreError> {
    let before = c.updated_at;
    let now = time::now().max(before + 1);
    let hook = svc.store.hook(&c.tenant, &c.hook).await?;
    let request = svc.store.request(&c.tenant, &c.request_id).await?;
    let (Some(hook), Some(r)) = (hook, request) else {
        // The hook was removed (or the request is gone): it holds nothing.
        c.status = CallStatus::Skipped.as_str().into();
        c.next_at = None;
        c.error = Some("the hook was removed before it answered".into());
        c.updated_at = now;
        if svc.store.update_hook_call(&c, before).await? {
            settle(svc, &c.tenant, &c.request_id).await?;
        }
        return Ok(());
    };
    let stage = Stage::parse(&c.stage).unwrap_or(Stage::PreApproval);
    if stage.decides() && !r.status.is_open() {
        // Rejected by staff meanwhile: nothing to ask.
        c.status = CallStatus::Skipped.as_str().into();
        c.next_at = None;
        c.error = Some(format!("the request was {} first", r.status.as_str()));
        c.updated_at = now;
        svc.store.update_hook_call(&c, before).await?;
        return Ok(());
    }
    let limit = Duration::from_millis(hook.timeout_ms.clamp(100, 60_000) as u64);
    // Leased for the call's time and a margin: another round (after this
    // node died) takes it again only then.
    c.attempts += 1;
    c.next_at = Some(now + limit.as_micros() as Micros + 30_000_000);
    c.updated_at = now;
    if !svc.store.update_hook_call(&c, before).await? {
        return Ok(()); // answered or taken meanwhile
    }
    let taken = c.updated_at;
    let answer = send(svc, &hook, &r, stage, limit).await;
    let now = time::now().max(taken + 1);
    c.updated_at = now;
    match answer {
        Answer::Decided(d, reason) => {
            c.status = if stage.decides() {
                d.status()
            } else {
                CallStatus::Delivered
            }
            .as_str()
            .into();
            c.reason = reason;
            c.error = None;
            c.next_at = None;
            c.answered_at = Some(now);
        }
        Answer::Later => {
            c.status = CallStatus::Pending.as_str().into();
            c.error = None;
            c.next_at = None;
        }
        Answer::Failed(e) => {
            tracing::warn!(hook = %c.hook, request = %c.request_id, attempts = c.attempts, error = %e,
                "request hook: call failed; retrying later");
            c.status = CallStatus::Failed.as_str().into();
            c.error = Some(e);
            c.next_at = Some(now + backoff(svc, c.attempts));
        }
    }
    if svc.store.update_hook_call(&c, taken).await? && status_of(&c).settled() {
        record_answer(svc.store.as_ref(), &c).await?;
        settle(svc, &c.tenant, &c.request_id).await?;
    }
    Ok(())
}

async fn send(
    svc: &Services,
    hook: &HookRow,
    r: &RequestRow,
    stage: Stage,
    limit: Duration,
) -> Answer {
    let prepared = async {
        let keys = svc
            .vault
            .tenant(svc.store.as_ref(), &r.tenant)
            .await
            .map_err(|e| e.to_string())?;
        let secret = open_secret(&keys, hook)?;
        let body = serde_json::to_vec(
            &payload(svc, &keys, r, &hook.id, stage)
                .await
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let id = format!("hkc_{}_{}", r.id, hook.id);
        let headers: Vec<(String, String)> = crate::dispatch::signed_headers(&secret, &id, &body)?
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Ok::<_, String>((headers, body))
    };
    let (headers, body) = match prepared.await {
        Ok(p) => p,
        Err(e) => return Answer::Failed(e),
    };
    match svc
        .systems
        .http
        .post_hook(&hook.url, &headers, body, limit)
        .await
    {
        Ok((status, bytes)) => rules::read_answer(stage, status, &bytes),
        Err(e) => Answer::Failed(e),
    }
}

/// A hook's decision in the request's steps (actor `hook:<id>`).
async fn record_answer(store: &dyn Store, c: &HookCall) -> Result<(), StoreError> {
    let Some(stage) = Stage::parse(&c.stage).filter(|s| s.decides()) else {
        return Ok(());
    };
    let action = match status_of(c) {
        CallStatus::Approved => "hook_approved",
        CallStatus::Denied => "hook_denied",
        _ => return Ok(()),
    };
    for _ in 0..5 {
        let Some(mut r) = store.request(&c.tenant, &c.request_id).await? else {
            return Ok(());
        };
        let before = r.updated_at;
        let now = time::now().max(before + 1);
        r.steps.push(crate::model::RequestStep {
            at: time::rfc3339(now),
            actor: format!("hook:{}", c.hook),
            action: action.into(),
            reason: c.reason.clone(),
            outcome: Some(stage.as_str().into()),
        });
        r.updated_at = now;
        if store.update_request(&r, before).await? {
            return Ok(());
        }
    }
    Ok(())
}

/// Act on a request's pre-stage gates once calls settled: a denial rejects
/// it with the hook's reason; every pre-execution hook approving carries
/// it out.
pub async fn settle(svc: &Services, tenant: &str, request_id: &str) -> Result<(), StoreError> {
    let calls = svc.store.request_hook_calls(tenant, request_id).await?;
    let stages: BTreeSet<&str> = calls.iter().map(|c| c.stage.as_str()).collect();
    for stage in [Stage::PreApproval, Stage::PreExecution] {
        if !stages.contains(stage.as_str()) {
            continue;
        }
        let of_stage: Vec<&HookCall> = calls.iter().filter(|c| c.stage == stage.as_str()).collect();
        let statuses: Vec<CallStatus> = of_stage.iter().map(|c| status_of(c)).collect();
        match rules::gate(&statuses) {
            Gate::Denied(i) => {
                let c = of_stage[i];
                let reason = c
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("denied by the {} hook {}", stage.as_str(), c.hook));
                if let Err(e) = crate::rights::reject_by_hook(
                    svc.store.as_ref(),
                    tenant,
                    request_id,
                    &c.hook,
                    stage,
                    &reason,
                )
                .await
                {
                    tracing::warn!(request = %request_id, error = %e.detail,
                        "request hook: the denial could not be recorded");
                }
                return Ok(());
            }
            Gate::Held(_) => return Ok(()),
            Gate::Open if stage == Stage::PreExecution => {
                if let Err(e) = crate::rights::resume(svc, tenant, request_id).await {
                    tracing::warn!(request = %request_id, error = %e.detail,
                        "request hook: the request could not be carried out after approval");
                }
            }
            Gate::Open => {}
        }
    }
    Ok(())
}

/// The reply endpoint: a hook answers a call later. `token` is the call's
/// reply token. Unknown call or wrong token: 404 / 401, never saying which
/// of request or hook was wrong.
pub async fn reply(
    svc: &Services,
    request_id: &str,
    hook: &str,
    token: Option<&str>,
    decision: Decision,
    reason: Option<String>,
) -> Result<HookStatus, Problem> {
    let unauthorized = || {
        Problem::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the reply token is missing or not this call's",
        )
    };
    let Some(token) = token else {
        return Err(unauthorized());
    };
    let Some(mut c) = svc.store.hook_call(request_id, hook).await? else {
        return Err(unauthorized());
    };
    let keys = svc
        .vault
        .tenant(svc.store.as_ref(), &c.tenant)
        .await
        .map_err(StoreError::from)?;
    let want = reply_token(&keys, request_id, hook);
    let same = want.len() == token.len()
        && want
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(unauthorized());
    }
    let stage = Stage::parse(&c.stage).unwrap_or(Stage::PreApproval);
    if !stage.decides() {
        return Err(Problem::conflict(
            "a post-execution hook is told the outcome; it has nothing to decide",
        ));
    }
    let reason = reason
        .as_deref()
        .map(|r| rules::truncate(r.trim()))
        .filter(|r| !r.is_empty());
    // The task may be recording the call's HTTP answer at the same time
    // (a reply can arrive before the response that said it would): read
    // again and retry.
    let mut tries = 0;
    loop {
        let status = status_of(&c);
        if status.settled() {
            if status == decision.status() {
                return Ok(HookStatus::of(&c)); // the same answer again
            }
            return Err(Problem::conflict(format!(
                "this call was answered already: {}",
                status.as_str()
            )));
        }
        let before = c.updated_at;
        let now = time::now().max(before + 1);
        c.status = decision.status().as_str().into();
        c.reason = reason.clone();
        c.error = None;
        c.next_at = None;
        c.answered_at = Some(now);
        c.updated_at = now;
        if svc.store.update_hook_call(&c, before).await? {
            break;
        }
        tries += 1;
        match svc.store.hook_call(request_id, hook).await? {
            Some(again) if tries < 5 => c = again,
            _ => {
                return Err(Problem::conflict(
                    "the call changed at the same time; send the reply again",
                ));
            }
        }
    }
    record_answer(svc.store.as_ref(), &c).await?;
    settle(svc, &c.tenant, &c.request_id).await?;
    Ok(HookStatus::of(&c))
}

/// A hook was removed: its calls not answered yet are settled as `skipped`
/// by the task (which finds the hook gone), releasing their requests.
pub async fn release_removed(svc: &Services, tenant: &str, hook: &str) -> Result<(), StoreError> {
    if svc.store.wake_hook_calls(tenant, hook, time::now()).await? > 0 {
        svc.systems.hooks_wake.notify_one();
    }
    Ok(())
}
