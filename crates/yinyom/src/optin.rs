//! Double opt-in: a grant on a purpose marked `double_opt_in`, for email,
//! SMS or LINE, is held until the subject confirms it from a message sent
//! to that contact point. Only then is it written to the ledger (with the
//! confirmation in its evidence); until then decisions answer as before.

use serde_json::json;
use yinyom_core::consent::Action;
use yinyom_core::purpose::Channel;
use yinyom_core::time::{self, MICROS_PER_DAY, Micros};

use crate::api::problem::Problem;
use crate::model::OptIn;
use crate::record::{self, ConsentRequest, Origin};
use crate::services::Services;
use crate::store::{Idempotency, StoreError};
use crate::view::TenantView;

/// What became of a consent request.
pub enum Submitted {
    /// Held for double opt-in: the pending confirmation.
    Held(serde_json::Value),
    /// Through the writer.
    Written(crate::store::ItemOutcome),
}

/// Record a consent request from any surface (API, preference center):
/// checked, then held when it needs double opt-in, else signed (receipt)
/// and written. `gone` is the refusal when the tenant no longer exists.
pub async fn submit(
    svc: &Services,
    tenant: &str,
    actor: &str,
    req: ConsentRequest,
    idempotency: Option<Idempotency>,
    gone: impl FnOnce() -> Problem,
) -> Result<Submitted, Problem> {
    let (item, held) = svc
        .view
        .read(tenant, |tv| {
            // The request is checked, then held (a copy is kept only then).
            let held = needs_confirmation(tv, &req).map(|c| (c, req.clone()));
            let mut item = record::prepare(tv, req, actor, Origin::Api, idempotency, time::now())?;
            if held.is_none() {
                item.receipt = svc.signer.receipt(tv, &item);
            }
            Ok::<_, record::Rejected>((item, held))
        })
        .ok_or_else(gone)??;
    if let Some((channel, req)) = held {
        return Ok(Submitted::Held(
            hold(svc, tenant, actor, &req, channel).await?,
        ));
    }
    Ok(Submitted::Written(svc.writer.write(item).await?))
}

/// How long a confirmation link stays good.
pub const TTL: Micros = 7 * MICROS_PER_DAY;

/// The channel of the first grant that waits for confirmation, if any.
pub fn needs_confirmation(tv: &TenantView, req: &ConsentRequest) -> Option<Channel> {
    req.actions.iter().find_map(|a| {
        let c = a.channel?;
        let double = tv.purposes.get(&a.purpose).is_some_and(|p| p.double_opt_in);
        (a.action == Action::Grant
            && double
            && matches!(c, Channel::Email | Channel::Sms | Channel::Line))
        .then_some(c)
    })
}

/// Hold a checked consent request and send the confirmation message; the
/// response body says it is pending.
pub async fn hold(
    svc: &Services,
    tenant: &str,
    actor: &str,
    req: &ConsentRequest,
    channel: Channel,
) -> Result<serde_json::Value, Problem> {
    let id = format!("opt_{}", uuid::Uuid::now_v7().simple());
    let link = format!("{}/c/{}", svc.public_url, svc.links.token(tenant, &id));
    let message = crate::relay::queue_system(
        svc,
        tenant,
        &req.subject,
        channel,
        "system:opt_in",
        (
            Some("ยืนยันการรับข่าวสาร · Please confirm your subscription".into()),
            format!(
                "กรุณายืนยันว่าคุณต้องการรับข้อความจากเรา: {link}\n\
                 Please confirm that you want to hear from us: {link}\n\n\
                 หากคุณไม่ได้สมัคร โปรดเพิกเฉยข้อความนี้ · If you did not sign up, ignore this message."
            ),
        ),
    )
    .await?;
    let keys = svc
        .vault
        .tenant(svc.store.as_ref(), tenant)
        .await
        .map_err(StoreError::from)?;
    let now = time::now();
    let o = OptIn {
        tenant: tenant.to_string(),
        id: id.clone(),
        subject_id: req.subject.clone(),
        request: keys.seal_secret(
            &format!("opt_in:{id}"),
            &serde_json::to_vec(req).expect("a request serialises"),
        ),
        actor: actor.to_string(),
        channel: channel.as_str().into(),
        message: message.clone(),
        created_at: now,
        expires_at: now + TTL,
        confirmed_at: None,
    };
    svc.store.insert_opt_in(&o).await?;
    Ok(json!({
        "status": "pending",
        "opt_in": id,
        "subject": req.subject,
        "channel": channel.as_str(),
        "message": message,
        "expires_at": time::rfc3339(o.expires_at),
    }))
}

/// What confirming did.
pub enum Confirmed {
    /// The grant is in the ledger now.
    Now(serde_json::Value),
    Already,
}

/// Confirm a held grant: write it, with the confirmation as evidence.
pub async fn confirm(svc: &Services, tenant: &str, id: &str) -> Result<Confirmed, Problem> {
    svc.ensure_tenant(tenant).await?;
    let o = svc
        .store
        .opt_in(tenant, id)
        .await?
        .ok_or_else(|| Problem::not_found("no such confirmation"))?;
    if o.confirmed_at.is_some() {
        return Ok(Confirmed::Already);
    }
    let now = time::now();
    if o.expires_at < now {
        return Err(Problem::new(
            axum::http::StatusCode::GONE,
            "opt-in-expired",
            "this confirmation link has expired; sign up again",
        ));
    }
    let keys = svc
        .vault
        .tenant(svc.store.as_ref(), tenant)
        .await
        .map_err(StoreError::from)?;
    let plain = keys
        .open_secret(&format!("opt_in:{id}"), &o.request)
        .map_err(StoreError::from)?;
    let mut req: ConsentRequest = serde_json::from_slice(&plain)
        .map_err(|e| Problem::bad_request(format!("held request: {e}")))?;
    let confirmation = json!({
        "opt_in": id,
        "channel": o.channel,
        "message": o.message,
        "requested_at": time::rfc3339(o.created_at),
        "confirmed_at": time::rfc3339(now),
    });
    let mut evidence = match req.evidence.take() {
        Some(serde_json::Value::Object(m)) => m,
        Some(other) => serde_json::Map::from_iter([("given".to_string(), other)]),
        None => serde_json::Map::new(),
    };
    evidence.insert("double_opt_in".into(), confirmation);
    req.evidence = Some(serde_json::Value::Object(evidence));
    req.occurred_at = None;
    let item = svc
        .view
        .read(tenant, |tv| {
            let mut item = record::prepare(
                tv,
                req,
                &o.actor,
                Origin::Api,
                Some(Idempotency {
                    key: format!("opt_in:{id}"),
                    request_hash: "opt_in".into(),
                }),
                now,
            )?;
            item.receipt = svc.signer.receipt(tv, &item);
            Ok::<_, record::Rejected>(item)
        })
        .ok_or_else(|| Problem::not_found("the tenant does not exist"))??;
    let outcome = svc.writer.write(item).await?;
    svc.store.confirm_opt_in(tenant, id, now).await?;
    Ok(match outcome {
        crate::store::ItemOutcome::Written { response, .. }
        | crate::store::ItemOutcome::Replayed { response } => Confirmed::Now(response),
        crate::store::ItemOutcome::KeyReused => Confirmed::Already,
    })
}
