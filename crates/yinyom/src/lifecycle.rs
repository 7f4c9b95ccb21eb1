//! Lifecycle jobs inside the server, run by the leader only (with several
//! nodes on PostgreSQL, the one holding the advisory lock), every minute:
//!
//! - **consent expiry**: a grant past its purpose's validity is closed by an
//!   `expire` entry in the ledger (source `expiry`, occurred at the expiry
//!   time), which the outbox propagates like any other change. Decisions
//!   treat such a grant as expired even before the entry is written.
//! - **retention**: a subject whose every choice ended longer ago than its
//!   purpose keeps data (`yinyom_core::rights::retention_over`) is erased
//!   through an erasure request of its own (`via: retention`), so its
//!   connected systems are reached too, if it holds a profile (a
//!   subject known only by its consent history keeps it as proof). It looks
//!   at every subject, so it runs hourly, not every minute. Subjects
//!   under restriction
//!   (PDPA s.34: kept instead of erased) or with an open rights request are
//!   left alone.
//!
//! - **deadlines**: reminders to the DPO before every deadline (rights
//!   requests, a breach's 72 hours, PDPA s.25 notices) by email and a
//!   `deadline.approaching` event, and `deadline.missed` when one passes
//!   (`deadlines.rs`); and a warning in the log for every breach whose
//!   72-hour deadline passed without a notification, and for every
//!   subject whose data came from a third party and who was not told
//!   within 30 days (PDPA s.25).
//!
//! - **breach notices**: the notices to the people affected by a breach
//!   are queued to the relay in batches (`notices.rs`).
//!
//! - **stored responses**: the responses kept for idempotent requests are
//!   forgotten [`IDEMPOTENCY_TTL`] (24 h) after they were written, oldest
//!   first, in batches (index `idempotency_keys_by_age`): a retry with the
//!   same `Idempotency-Key` within a day gets the same answer; later it is a
//!   new request. (An erasure deletes its subject's at once.)
//!
//! All are idempotent: a second node or a second run does nothing twice.

use std::sync::Weak;
use std::time::Duration;

use yinyom_core::consent::Action;
use yinyom_core::purpose::Channel;
use yinyom_core::time::{self, Micros};

use crate::api::problem::Problem;
use crate::services::Services;
use crate::store::{Idempotency, PreparedAction, WriteItem};

/// How many expiries one run writes at most (the next run goes on).
const EXPIRIES_PER_RUN: u32 = 5_000;

/// How long a stored response answers a retry with the same key.
pub const IDEMPOTENCY_TTL: Micros = 24 * 3_600 * 1_000_000;
/// Stored responses deleted per statement, and statements per run.
const RESPONSES_PER_BATCH: u32 = 1_000;
const RESPONSE_BATCHES_PER_RUN: u32 = 100;

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub expired: u64,
    pub erased: u64,
    /// Breaches whose regulator deadline passed without a notification.
    pub breaches_overdue: u64,
    /// Subjects whose data came from a third party and who were not told
    /// within the deadline (PDPA s.25).
    pub notices_overdue: u64,
    /// Signed checkpoints made (tenants whose ledger grew).
    pub checkpoints: u64,
    /// Stored responses of idempotent requests past [`IDEMPOTENCY_TTL`].
    pub responses_expired: u64,
    /// Reminders of deadlines that went out (`deadline.approaching`).
    pub reminders: u64,
    /// Deadlines that passed unmet (`deadline.missed`).
    pub missed: u64,
    /// Reminder emails sent to DPOs.
    pub reminder_emails: u64,
    /// Breach notices queued to the people affected (`notices.rs`).
    pub notices_queued: u64,
}

pub async fn run(svc: Weak<Services>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Retention is counted in days and looks at every subject: hourly,
    // the first an hour after start (not while a new node warms up).
    let mut retention_at = std::time::Instant::now();
    loop {
        tick.tick().await;
        let Some(svc) = svc.upgrade() else { return };
        match svc.store.lead().await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "lifecycle: storage unavailable");
                continue;
            }
        }
        let retention = retention_at.elapsed() >= RETENTION_EVERY;
        if retention {
            retention_at = std::time::Instant::now();
        }
        match run_jobs(&svc, time::now(), retention).await {
            Ok(r) if r.expired == 0 && r.erased == 0 => {}
            Ok(r) => tracing::info!(expired = r.expired, erased = r.erased, "lifecycle run"),
            Err(e) => tracing::warn!(error = %e.detail, "lifecycle run failed"),
        }
        // Planner statistics follow the data (SQLite's advice: run
        // `PRAGMA optimize` periodically on long-lived connections).
        if let Err(e) = svc.store.optimize().await {
            tracing::warn!(error = %e, "lifecycle: optimize failed");
        }
    }
}

const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// One pass of every job as of `now`.
pub async fn run_once(svc: &Services, now: Micros) -> Result<Report, Problem> {
    run_jobs(svc, now, true).await
}

async fn run_jobs(svc: &Services, now: Micros, with_retention: bool) -> Result<Report, Problem> {
    let mut report = Report {
        expired: expire_consents(svc, now).await?,
        ..Report::default()
    };
    for _ in 0..RESPONSE_BATCHES_PER_RUN {
        let n = svc
            .store
            .expire_idempotency_keys(now - IDEMPOTENCY_TTL, RESPONSES_PER_BATCH)
            .await?;
        report.responses_expired += n;
        if n < u64::from(RESPONSES_PER_BATCH) {
            break;
        }
    }
    for t in svc.store.tenants().await? {
        svc.ensure_tenant(&t.id).await?;
        if with_retention {
            report.erased += retention(svc, &t.id, now).await?;
        }
        if crate::checkpoint::make_if_grown(svc.store.as_ref(), &svc.signer, &t.id).await? {
            report.checkpoints += 1;
        }
        report.notices_queued += crate::notices::queue_breaches(svc, &t.id).await?;
        let c = crate::deadlines::run(svc, &t, now).await?;
        report.reminders += c.approaching;
        report.missed += c.missed;
        let mut after: Option<(Micros, String)> = None;
        loop {
            let page = svc
                .store
                .acquisitions(
                    &t.id,
                    true,
                    Some(now),
                    after.as_ref().map(|(d, u)| (*d, u.as_str())),
                    1_000,
                )
                .await?;
            for a in &page {
                tracing::warn!(tenant = %t.id, subject_uid = %a.subject_uid,
                    "third-party data: the subject was not told within 30 days (PDPA s.25)");
                report.notices_overdue += 1;
            }
            match page.last() {
                Some(a) if page.len() == 1_000 => after = Some((a.due_at, a.subject_uid.clone())),
                _ => break,
            }
        }
    }
    for b in svc.store.breaches(None).await? {
        if b.regulator_overdue(now) {
            tracing::warn!(tenant = %b.tenant, breach = %b.id,
                "breach: the 72-hour deadline to notify the regulator has passed (PDPA s.37(4), GDPR Art. 33)");
            report.breaches_overdue += 1;
        }
    }
    report.reminder_emails = crate::deadlines::send_emails(svc).await?;
    Ok(report)
}

async fn expire_consents(svc: &Services, now: Micros) -> Result<u64, Problem> {
    let due = svc.store.due_expiries(now, EXPIRIES_PER_RUN).await?;
    let mut done = 0;
    for (tenant, subject, purpose, channel, expires_at) in due {
        svc.ensure_tenant(&tenant).await?;
        let item = WriteItem {
            idempotency: Some(Idempotency {
                key: format!("expire:{subject}:{purpose}:{channel}:{expires_at}"),
                request_hash: "expire".into(),
            }),
            tenant,
            subject_id: subject,
            actor: "system:lifecycle".into(),
            source: "expiry".into(),
            notice: None,
            evidence: Some(serde_json::json!({ "expires_at": time::rfc3339(expires_at) })),
            occurred_at: expires_at,
            actions: vec![PreparedAction {
                purpose,
                channel: Channel::parse(&channel),
                action: Action::Expire,
                expires_at: None,
            }],
            receipt: None,
            guardian: false,
        };
        match svc.writer.write(item).await {
            Ok(_) => done += 1,
            Err(e) => tracing::warn!(error = %e, "could not record a consent expiry"),
        }
    }
    Ok(done)
}

/// Erase the tenant's subjects whose retention is over; how many.
async fn retention(svc: &Services, tenant: &str, now: Micros) -> Result<u64, Problem> {
    let mut due: Vec<String> = Vec::new();
    svc.view
        .each_subject(svc.store.as_ref(), tenant, |tv, id, s| {
            if !s.erased()
                && s.flags.as_ref().is_none_or(|f| f.restricted.is_empty())
                && yinyom_core::rights::retention_over(
                    &s.consents.records,
                    |p| tv.purposes.get(p).map(|p| p.retention_days),
                    now,
                )
            {
                due.push(id.to_string());
            }
        })
        .await?;
    let mut erased = 0;
    for id in due {
        let Some(record) = svc.store.subject(tenant, &id).await? else {
            continue;
        };
        // Only personal data is deleted: a subject known by its consent
        // history alone (an import, say) keeps it as proof.
        if record.profile.is_none() {
            continue;
        }
        let open = svc
            .store
            .subject_requests(tenant, &record.uid)
            .await?
            .iter()
            .any(|r| r.status.is_open());
        if open {
            continue;
        }
        if let Some(request) = erase_for_retention(svc, tenant, &id).await? {
            tracing::info!(tenant = %tenant, subject_uid = %record.uid, request = %request,
                "retention ended: subject erased");
            erased += 1;
        }
    }
    Ok(erased)
}

/// Erase a subject whose retention is over the way an erasure request is
/// carried out, through a request of its own (`via: retention`, taken by
/// `system:lifecycle`): its connected systems get erasure jobs (the
/// identifiers sealed in them before the local shredding), its progress is
/// visible on the request, and `subject.erased` lists the systems'
/// outcomes. Returns the request's id; none if another run made one first.
async fn erase_for_retention(
    svc: &Services,
    tenant: &str,
    id: &str,
) -> Result<Option<String>, Problem> {
    use yinyom_core::rights::{Kind, Step};
    let actor = "system:lifecycle";
    let received = crate::rights::receive(
        svc,
        tenant,
        crate::rights::NewRequest {
            subject: id.to_string(),
            kind: Kind::Erasure,
            purposes: vec![],
            corrections: None,
            via: RETENTION_VIA.into(),
            received_at: None,
            actor: actor.into(),
        },
    )
    .await;
    let r = match received {
        Ok(r) => r,
        // Another node's run, or the subject was erased meanwhile.
        Err(p) if p.status == axum::http::StatusCode::CONFLICT => return Ok(None),
        Err(p) => return Err(p),
    };
    crate::rights::act(
        svc,
        tenant,
        &r.id,
        Step::Verify,
        Some("retention ended: erased by the controller; there is no requester to verify".into()),
        actor,
    )
    .await?;
    crate::rights::act(svc, tenant, &r.id, Step::Complete, None, actor).await?;
    Ok(Some(r.id))
}

/// How a request made by the retention job arrived (`RequestRow::via`).
pub const RETENTION_VIA: &str = "retention";
