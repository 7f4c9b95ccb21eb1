//! Deadlines that act (run by the leader's minute job, `lifecycle.rs`).
//!
//! Three kinds of deadline are watched, per tenant:
//!
//! - `request`: an open rights request's due date (PDPA s.30, extended
//!   ones included);
//! - `breach`: a breach's 72 hours to notify the regulator (PDPA s.37(4),
//!   GDPR Art. 33), while the risk requires it and the regulator was not
//!   told;
//! - `notice`: notices owed to subjects whose data came from a third party
//!   (PDPA s.25), grouped by the UTC day they are due (`s25:<YYYY-MM-DD>`):
//!   a million acquisitions make a few reminders, not a million.
//!
//! Before a deadline, at the hours the tenant set (`reminders` in the
//! tenant; 7 days and 24 hours, a breach 24 and 6 hours), the DPO gets an
//! email through the tenant's email connector and a `deadline.approaching`
//! event goes out on webhooks, NATS and the event stream; a deadline that
//! passes unmet makes one `deadline.missed`. Each reminder goes out once:
//! its `(tenant, kind, id, reminder)` is claimed in `deadline_reminders`,
//! an insert that does nothing on a second run or node, and its event is
//! written with an idempotency key. When a run finds several reminder
//! times passed at once (the server was down), only the latest goes out;
//! the earlier ones are recorded as `skipped`. A deadline met (request
//! closed, regulator notified, notices given) is no longer listed, so no
//! reminder follows. Deadlines that passed more than [`MISSED_WINDOW`] ago
//! are not looked at (no flood of `missed` when the feature arrives).
//!
//! Events name no person: their subject is the tenant's
//! `system:deadlines` pseudo-subject and they carry only the deadline's
//! kind, id, due time and the seconds left.

use yinyom_core::breach::{self, Recipient};
use yinyom_core::consent::Action;
use yinyom_core::time::{self, Micros};

use crate::api::problem::Problem;
use crate::model::{Reminder, Tenant};
use crate::services::Services;
use crate::store::{Idempotency, PreparedAction, RequestFilter, WriteItem};

const HOUR: Micros = 3_600_000_000;
/// How far back a passed deadline still makes a `deadline.missed`.
pub const MISSED_WINDOW: Micros = 7 * 24 * HOUR;
/// The subject deadline events are written under (never a person).
pub const SUBJECT: &str = "system:deadlines";
/// Attempts at a reminder's email before it is marked `failed`.
const EMAIL_ATTEMPTS: i64 = 10;
const PAGE: u32 = 500;

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub approaching: u64,
    pub missed: u64,
    pub emails_sent: u64,
}

struct Deadline {
    kind: &'static str,
    id: String,
    due_at: Micros,
}

/// Look at a tenant's deadlines as of `now`.
pub async fn run(svc: &Services, tenant: &Tenant, now: Micros) -> Result<Counts, Problem> {
    let settings = tenant.reminders.clone().unwrap_or_default();
    let mut counts = Counts::default();
    let ahead = |hours: &[u32]| hours.iter().copied().max().unwrap_or(0) as Micros * HOUR;

    // Open rights requests due before the furthest reminder, from the
    // window's start on: a page at a time by (due_at, id).
    let mut after = (now - MISSED_WINDOW, String::new());
    loop {
        let page = svc
            .store
            .requests(
                &tenant.id,
                &RequestFilter {
                    status: None,
                    due_before: Some(now + ahead(&settings.requests) + 1),
                    subject_uid: None,
                },
                Some((after.0, after.1.as_str())),
                PAGE,
            )
            .await?;
        for r in &page {
            let d = Deadline {
                kind: "request",
                id: r.id.clone(),
                due_at: r.due_at,
            };
            remind(svc, tenant, &d, &settings.requests, now, &mut counts).await?;
        }
        match page.last() {
            Some(r) if page.len() == PAGE as usize => after = (r.due_at, r.id.clone()),
            _ => break,
        }
    }

    // Breaches (a register of a few): the regulator not yet told.
    for b in svc.store.breaches(Some(&tenant.id)).await? {
        let due_at = breach::regulator_due(b.discovered_at);
        if !b.risk.regulator_required()
            || b.first_notified(Recipient::Regulator).is_some()
            || due_at < now - MISSED_WINDOW
        {
            continue;
        }
        let d = Deadline {
            kind: "breach",
            id: b.id.clone(),
            due_at,
        };
        remind(svc, tenant, &d, &settings.breaches, now, &mut counts).await?;
    }

    // PDPA s.25 notices, by the day they are due.
    for (day, _n, first_due) in svc
        .store
        .pending_notices_by_day(
            &tenant.id,
            now - MISSED_WINDOW,
            now + ahead(&settings.notices) + 1,
        )
        .await?
    {
        let d = Deadline {
            kind: "notice",
            id: format!("s25:{}", &time::rfc3339(day)[..10]),
            due_at: first_due,
        };
        remind(svc, tenant, &d, &settings.notices, now, &mut counts).await?;
    }
    Ok(counts)
}

/// The reminders of one deadline due by `now`.
async fn remind(
    svc: &Services,
    tenant: &Tenant,
    d: &Deadline,
    hours: &[u32],
    now: Micros,
    counts: &mut Counts,
) -> Result<(), Problem> {
    let mut due: Vec<String> = if now > d.due_at {
        vec!["missed".into()]
    } else {
        let mut passed: Vec<u32> = hours
            .iter()
            .copied()
            .filter(|h| now >= d.due_at - *h as Micros * HOUR)
            .collect();
        passed.sort_unstable_by(|a, b| b.cmp(a));
        passed.dedup();
        passed
            .into_iter()
            .map(|h| (h as Micros * 3600).to_string())
            .collect()
    };
    let Some(latest) = due.last().cloned() else {
        return Ok(());
    };
    // What went out already (an indexed read of this deadline's few rows).
    let sent = svc.store.reminders(&tenant.id, d.kind, &d.id).await?;
    due.retain(|r| !sent.iter().any(|s| &s.reminder == r));
    for r in due {
        let send = r == latest;
        if claim(svc, tenant, d, &r, send, now).await? && send {
            if r == "missed" {
                counts.missed += 1;
            } else {
                counts.approaching += 1;
            }
        }
    }
    Ok(())
}

/// Claim a reminder not yet recorded; when it is the one to send, its
/// event is written first (idempotent by key, so a run that stopped
/// between the two writes it once) and a claim never stands without it.
async fn claim(
    svc: &Services,
    tenant: &Tenant,
    d: &Deadline,
    reminder: &str,
    send: bool,
    now: Micros,
) -> Result<bool, Problem> {
    if send {
        let action = if reminder == "missed" {
            Action::DeadlineMissed
        } else {
            Action::DeadlineApproaching
        };
        svc.writer
            .write(WriteItem {
                tenant: tenant.id.clone(),
                subject_id: SUBJECT.into(),
                actor: crate::events::deadline_actor(d.kind, &d.id, d.due_at),
                source: "deadline".into(),
                notice: None,
                evidence: None,
                occurred_at: now,
                actions: vec![PreparedAction {
                    purpose: "*".into(),
                    channel: None,
                    action,
                    expires_at: None,
                }],
                idempotency: Some(Idempotency {
                    key: format!("deadline:{}:{}:{reminder}", d.kind, d.id),
                    request_hash: action.as_str().into(),
                }),
                receipt: None,
                guardian: false,
            })
            .await?;
    }
    let (email_status, email_error) = if !send {
        (
            "skipped",
            Some("a later reminder was due at once".to_string()),
        )
    } else if tenant.dpo.email.contains('@') {
        ("pending", None)
    } else {
        (
            "skipped",
            Some("the tenant has no DPO email address".to_string()),
        )
    };
    let claimed = svc
        .store
        .claim_reminder(&Reminder {
            tenant: tenant.id.clone(),
            kind: d.kind.into(),
            ref_id: d.id.clone(),
            reminder: reminder.into(),
            due_at: d.due_at,
            created_at: now,
            email_status: email_status.into(),
            email_attempts: 0,
            email_error,
        })
        .await?;
    if claimed && send {
        tracing::info!(tenant = %tenant.id, kind = d.kind, id = %d.id, reminder,
            due_at = %time::rfc3339(d.due_at), "deadline reminder");
    }
    Ok(claimed)
}

/// Send the reminders' emails still pending (every tenant); how many went.
pub async fn send_emails(svc: &Services) -> Result<u64, Problem> {
    let mut sent = 0;
    for mut r in svc.store.reminders_to_email(100).await? {
        let dpo = svc
            .view
            .read(&r.tenant, |tv| tv.tenant.dpo.email.clone())
            .unwrap_or_default();
        let (subject, text) = email(&r);
        let id = format!(
            "reminder.{}.{}.{}",
            r.kind,
            r.ref_id.replace(':', "-"),
            r.reminder
        );
        r.email_attempts += 1;
        match crate::relay::send_staff_email(svc, &r.tenant, &dpo, &id, &subject, &text).await {
            Ok(_) => {
                r.email_status = "sent".into();
                r.email_error = None;
                sent += 1;
            }
            Err(e) => {
                tracing::warn!(tenant = %r.tenant, error = %e, "deadline reminder: email not sent");
                if r.email_attempts >= EMAIL_ATTEMPTS {
                    r.email_status = "failed".into();
                }
                r.email_error = Some(e);
            }
        }
        svc.store.settle_reminder(&r).await?;
    }
    Ok(sent)
}

/// The email to the DPO: which deadline, when; no personal data.
fn email(r: &Reminder) -> (String, String) {
    let what_th = match r.kind.as_str() {
        "request" => format!("คำขอใช้สิทธิ {}", r.ref_id),
        "breach" => format!(
            "การแจ้งเหตุละเมิด {} ต่อสำนักงานคณะกรรมการฯ (72 ชั่วโมง)",
            r.ref_id
        ),
        _ => format!("การแจ้งเจ้าของข้อมูลตามมาตรา 25 ({})", r.ref_id),
    };
    let what_en = match r.kind.as_str() {
        "request" => format!("rights request {}", r.ref_id),
        "breach" => format!("notifying the regulator of breach {} (72 hours)", r.ref_id),
        _ => format!(
            "notices to subjects whose data came from third parties, PDPA s.25 ({})",
            r.ref_id
        ),
    };
    let due = time::rfc3339(r.due_at);
    if r.reminder == "missed" {
        (
            format!("เลยกำหนด · Deadline missed: {what_en}"),
            format!(
                "เลยกำหนดแล้ว: {what_th} ครบกำหนดเมื่อ {due}\n\
                 The deadline passed: {what_en} was due at {due}.\n"
            ),
        )
    } else {
        let hours = r.reminder.parse::<i64>().unwrap_or(0) / 3600;
        (
            format!("ใกล้ครบกำหนด · Deadline in {hours} h: {what_en}"),
            format!(
                "ใกล้ครบกำหนด: {what_th} ครบกำหนด {due} (อีก {hours} ชั่วโมง)\n\
                 Deadline approaching: {what_en} is due at {due} (in {hours} hours).\n"
            ),
        )
    }
}
