//! Notices the law requires, sent to subjects through the relay: a
//! breach's notice to the people affected (PDPA s.37(4), GDPR Art. 34) and
//! the notice to a subject whose data came from a third party (PDPA s.25,
//! GDPR Art. 14).
//!
//! **The consent gate.** These are legal obligations, not marketing: they
//! go out under the system purposes `system:breach_notice` and
//! `system:s25_notice`, whose lawful basis is the legal obligation itself,
//! so the relay sends them whatever the subject consented to (as it does
//! verification codes) and adds no unsubscribe link. The relay's other
//! checks stay: a subject erased before the attempt is not written to
//! (`suppressed`), and a failed attempt is retried with backoff until the
//! message is `dead`. Every message's status is its delivery record.
//!
//! **Scale.** A breach can affect millions: the recipients are recorded by
//! the caller in batches (`breach_recipients`), and the leader queues
//! their messages [`BATCH`] at a time, each batch in one transaction with
//! the recipients' new status, so nothing is loaded whole and a node that
//! stops mid-way leaves the rest `pending` for the next run.

use yinyom_core::contact::ContactKind;
use yinyom_core::time::{self, Micros};

use crate::api::problem::Problem;
use crate::model::{BreachMessage, MessageRow};
use crate::relay::Content;
use crate::services::Services;
use crate::store::{Store, StoreError};

/// Recipients queued per transaction.
pub const BATCH: u32 = 500;
/// Batches per run of one breach (the next run goes on).
const BATCHES_PER_RUN: u32 = 200;
pub const BREACH_PURPOSE: &str = "system:breach_notice";
pub const S25_PURPOSE: &str = "system:s25_notice";

/// One queueing at a time on a node (the API's first push and the minute
/// job must not take the same pending recipients).
static QUEUEING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Check a notice before it is accepted: text, and a connector for its
/// channel.
pub async fn check(store: &dyn Store, tenant: &str, m: &BreachMessage) -> Result<(), Problem> {
    if ContactKind::for_channel(m.channel).is_none() {
        return Err(Problem::validation(
            "message.channel",
            "use email, sms or line",
        ));
    }
    if m.text.trim().is_empty() || m.text.len() > 10_000 {
        return Err(Problem::validation("message.text", "must be 1-10000 bytes"));
    }
    if m.subject.as_ref().is_some_and(|s| s.len() > 200) {
        return Err(Problem::validation(
            "message.subject",
            "must be at most 200 bytes",
        ));
    }
    if !store
        .connectors(tenant)
        .await?
        .iter()
        .any(|c| c.channel == m.channel.as_str())
    {
        return Err(Problem::validation(
            "message.channel",
            format!("no {} connector is configured", m.channel.as_str()),
        ));
    }
    Ok(())
}

/// A message to one subject, its content sealed with the subject's key;
/// `Err` says why it cannot be sent (no contact point on the channel,
/// erased).
async fn message(
    svc: &Services,
    tenant: &str,
    uid: &str,
    m: &BreachMessage,
    purpose: &str,
    now: Micros,
) -> Result<Result<MessageRow, String>, StoreError> {
    let Some(id) = svc.store.subject_id(tenant, uid).await? else {
        return Ok(Err("the subject does not exist".into()));
    };
    let Some(subject) = crate::profiles::read(svc, tenant, &id).await? else {
        return Ok(Err("the subject does not exist".into()));
    };
    if subject.record.flags.erased {
        return Ok(Err("the subject was erased".into()));
    }
    let Some(kind) = ContactKind::for_channel(m.channel) else {
        return Ok(Err("no contact kind for the channel".into()));
    };
    let (Some(to), Some(wrapped)) = (
        subject.profile.contacts.get(&kind),
        subject.record.data_key.as_ref(),
    ) else {
        return Ok(Err(format!("the subject has no {}", kind.as_str())));
    };
    let keys = svc.vault.tenant(svc.store.as_ref(), tenant).await?;
    let dk = keys.unwrap_data_key(&subject.record.uid, wrapped)?;
    let body = Content {
        to: to.clone(),
        subject: m.subject.clone(),
        text: m.text.clone(),
        html: None,
    };
    let mut row = MessageRow::queued(tenant, &subject.record, m.channel.as_str(), purpose, now);
    row.content = Some(
        dk.seal(&serde_json::to_vec(&body).map_err(|e| StoreError::Unavailable(e.to_string()))?),
    );
    Ok(Ok(row))
}

/// Queue the notices of every breach of `tenant` that has one to send;
/// how many messages were queued.
pub async fn queue_breaches(svc: &Services, tenant: &str) -> Result<u64, Problem> {
    let _one = QUEUEING.lock().await;
    let mut queued = 0;
    for b in svc.store.breaches(Some(tenant)).await? {
        let Some(notice) = &b.subject_notice else {
            continue;
        };
        for _ in 0..BATCHES_PER_RUN {
            let uids = svc
                .store
                .pending_breach_recipients(tenant, &b.id, BATCH)
                .await?;
            if uids.is_empty() {
                break;
            }
            let now = time::now();
            let mut rows = Vec::with_capacity(uids.len());
            let mut failed = Vec::new();
            for uid in &uids {
                match message(svc, tenant, uid, notice, BREACH_PURPOSE, now).await? {
                    Ok(row) => rows.push(row),
                    Err(why) => failed.push((uid.clone(), why)),
                }
            }
            svc.store
                .queue_breach_messages(tenant, &b.id, &rows, &failed)
                .await?;
            queued += rows.len() as u64;
            svc.relay_wake.notify_one();
            if uids.len() < BATCH as usize {
                break;
            }
        }
    }
    Ok(queued)
}

/// Queue a PDPA s.25 notice to one subject; the message's id.
pub async fn send_s25(
    svc: &Services,
    tenant: &str,
    uid: &str,
    m: &BreachMessage,
) -> Result<String, Problem> {
    check(svc.store.as_ref(), tenant, m).await?;
    match message(svc, tenant, uid, m, S25_PURPOSE, time::now()).await? {
        Err(why) => Err(Problem::validation("message.channel", why)),
        Ok(row) => {
            svc.store
                .insert_messages(std::slice::from_ref(&row))
                .await?;
            svc.relay_wake.notify_one();
            Ok(row.id)
        }
    }
}
