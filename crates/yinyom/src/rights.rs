//! Data-subject rights requests: receiving them (due dates per the
//! tenant's law), moving them through their status flow, and carrying them
//! out — erasure by crypto-shredding, restriction and objection flags,
//! withdrawal through the ledger, rectification of the sealed profile.
//! The rules themselves (transitions, deadlines) are in
//! `yinyom_core::rights`.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use yinyom_core::consent::{Action, ConsentState};
use yinyom_core::contact::ContactKind;
use yinyom_core::rights::{self, Kind, Status, Step};
use yinyom_core::subject::SubjectFlags;
use yinyom_core::time::{self, Micros};

use yinyom_core::hooks::{Gate, Stage as HookStage};

use crate::api::problem::Problem;
use crate::model::{RequestRow, RequestStep};
use crate::profiles::{self, Profile, ProfileError};
use crate::services::Services;
use crate::store::{Idempotency, PreparedAction, Store, WriteItem};

/// Corrections a rectification request asks for: contact points to set
/// (normalised like `PUT /v1/subjects`), attributes to set (`null` removes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Corrections {
    #[serde(default)]
    pub identifiers: BTreeMap<String, String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// A request as received, checked by the caller for shape only.
pub struct NewRequest {
    pub subject: String,
    pub kind: Kind,
    pub purposes: Vec<String>,
    pub corrections: Option<Corrections>,
    pub via: String,
    pub received_at: Option<Micros>,
    pub actor: String,
}

fn normalize(c: &Corrections) -> Result<Corrections, Problem> {
    let mut out = c.clone();
    for (k, v) in &c.identifiers {
        let field = format!("changes.identifiers.{k}");
        let kind = ContactKind::parse(k)
            .ok_or_else(|| Problem::validation(field.clone(), "use email, phone or line_id"))?;
        let v = kind
            .normalize(v)
            .map_err(|e| Problem::validation(field, e.reason))?;
        out.identifiers.insert(k.clone(), v);
    }
    if c.identifiers.is_empty() && c.attributes.is_empty() {
        return Err(Problem::validation(
            "changes",
            "name the identifiers or attributes to correct",
        ));
    }
    Ok(out)
}

/// The tenant's jurisdictions (`TH`, `EU`), which set its deadlines.
pub async fn jurisdictions(svc: &Services, tenant: &str) -> Result<Vec<String>, Problem> {
    svc.ensure_tenant(tenant).await?;
    Ok(svc
        .view
        .read(tenant, |tv| tv.tenant.jurisdictions.clone())
        .unwrap_or_default())
}

fn step(actor: &str, action: &str, at: Micros, reason: Option<String>) -> RequestStep {
    RequestStep {
        at: time::rfc3339(at),
        actor: actor.to_string(),
        action: action.to_string(),
        reason,
        outcome: None,
    }
}

/// Receive a request: the subject must exist and not be erased, and the
/// same kind of request for the same subject may not be open twice.
pub async fn receive(svc: &Services, tenant: &str, r: NewRequest) -> Result<RequestRow, Problem> {
    let now = time::now();
    let received_at = r.received_at.unwrap_or(now);
    if received_at > now + 60 * 1_000_000 {
        return Err(Problem::validation(
            "received_at",
            "is in the future; a request cannot arrive before it is recorded",
        ));
    }
    let jurisdictions = jurisdictions(svc, tenant).await?;
    let Some(record) = svc
        .store
        .subject(tenant, &svc.resolve(tenant, &r.subject))
        .await?
    else {
        return Err(
            Problem::not_found(format!("subject {:?} does not exist", r.subject)).field("subject"),
        );
    };
    if record.flags.erased && r.kind != Kind::Access {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "subject-erased",
            "the subject has been erased already",
        ));
    }
    let mut purposes = r.purposes.clone();
    if r.kind.takes_purposes() {
        if purposes.is_empty() {
            purposes.push("*".into());
        }
        let unknown = svc
            .view
            .read(tenant, |tv| {
                purposes
                    .iter()
                    .find(|p| *p != "*" && !tv.purposes.contains_key(p.as_str()))
                    .cloned()
            })
            .flatten();
        if let Some(p) = unknown {
            return Err(Problem::validation(
                "purposes",
                format!("purpose {p:?} does not exist"),
            ));
        }
    } else if !purposes.is_empty() {
        return Err(Problem::validation(
            "purposes",
            format!("a {} request does not name purposes", r.kind.as_str()),
        ));
    }
    let changes = match (r.kind, &r.corrections) {
        (Kind::Rectification, Some(c)) => {
            let c = normalize(c)?;
            let keys = svc
                .vault
                .tenant(svc.store.as_ref(), tenant)
                .await
                .map_err(crate::store::StoreError::from)?;
            let plain = serde_json::to_vec(&c).expect("corrections serialise");
            Some(keys.seal_secret(&format!("request:{}", record.uid), &plain))
        }
        (Kind::Rectification, None) => {
            return Err(Problem::validation(
                "changes",
                "a rectification request names the corrections",
            ));
        }
        (_, Some(_)) => {
            return Err(Problem::validation(
                "changes",
                "only a rectification request carries changes",
            ));
        }
        (_, None) => None,
    };
    let open = svc.store.subject_requests(tenant, &record.uid).await?;
    if let Some(dup) = open
        .iter()
        .find(|o| o.status.is_open() && o.kind == r.kind && o.purposes == purposes)
    {
        return Err(Problem::conflict(format!(
            "an open {} request for this subject exists: {}",
            r.kind.as_str(),
            dup.id
        ))
        .field("kind"));
    }
    let row = RequestRow {
        tenant: tenant.to_string(),
        id: format!("req_{}", uuid::Uuid::now_v7().simple()),
        subject_uid: record.uid.clone(),
        subject_id: Some(r.subject.clone()),
        kind: r.kind,
        status: Status::Received,
        purposes,
        changes,
        via: r.via,
        received_at,
        due_at: rights::due_at(&jurisdictions, received_at),
        extended: false,
        closed_at: None,
        steps: vec![step(&r.actor, "received", now, None)],
        verification: None,
        updated_at: now,
    };
    svc.store.insert_request(&row).await?;
    announce(svc, &row, &record.id, Action::RequestReceived).await?;
    // Pre-approval hooks hold it until they answer (crate::hooks).
    crate::hooks::call(svc, &row, HookStage::PreApproval).await?;
    Ok(row)
}

/// Chain and propagate a step of request `r` (`request.received`,
/// `request.completed`): an entry naming only the subject's uid and the
/// request, idempotent by the request and step.
/// `request.completed`, for a request that just completed (here, or when
/// its last connected system finished: `systems::finish_if_done`). Once
/// per request: the event's write carries an idempotency key.
pub(crate) async fn announce_completed(svc: &Services, r: &RequestRow) -> Result<(), Problem> {
    // Under the id the subject is stored by now (an erasure replaced it).
    if let Some(id) = svc.store.subject_id(&r.tenant, &r.subject_uid).await? {
        announce(svc, r, &id, Action::RequestCompleted).await?;
    }
    // Post-execution hooks are told the outcome.
    crate::hooks::call(svc, r, HookStage::PostExecution).await?;
    Ok(())
}

/// `subject.erased` for an erasure request whose connected systems are all
/// done: the last message that carries the subject (its pseudonymous uid),
/// with each system's outcome in the entry's evidence (keys, statuses and
/// row counts; no personal data). Once: the write carries an idempotency
/// key.
pub(crate) async fn announce_erased(
    svc: &Services,
    r: &RequestRow,
    outcomes: &[crate::events::SystemOutcome],
) -> Result<(), Problem> {
    let Some(id) = svc.store.subject_id(&r.tenant, &r.subject_uid).await? else {
        return Ok(());
    };
    svc.writer
        .write(WriteItem {
            tenant: r.tenant.clone(),
            subject_id: id,
            actor: format!("request:{}", r.id),
            source: "erasure".into(),
            notice: None,
            evidence: Some(serde_json::json!({ "systems": outcomes })),
            occurred_at: time::now(),
            actions: vec![PreparedAction {
                purpose: "*".into(),
                channel: None,
                action: Action::EraseSubject,
                expires_at: None,
            }],
            idempotency: Some(Idempotency {
                key: format!("request:{}:erase_subject", r.id),
                request_hash: "erase_subject".into(),
            }),
            receipt: None,
            guardian: false,
        })
        .await?;
    Ok(())
}

async fn announce(
    svc: &Services,
    r: &RequestRow,
    stored_id: &str,
    action: Action,
) -> Result<(), Problem> {
    svc.writer
        .write(WriteItem {
            tenant: r.tenant.clone(),
            subject_id: stored_id.to_string(),
            actor: format!("request:{}", r.id),
            source: "rights_request".into(),
            notice: None,
            evidence: None,
            occurred_at: time::now(),
            actions: vec![PreparedAction {
                purpose: "*".into(),
                channel: None,
                action,
                expires_at: None,
            }],
            idempotency: Some(Idempotency {
                key: format!("request:{}:{}", r.id, action.as_str()),
                request_hash: action.as_str().into(),
            }),
            receipt: None,
            guardian: false,
        })
        .await?;
    Ok(())
}

/// Take a step on a request; completing it carries it out first.
pub async fn act(
    svc: &Services,
    tenant: &str,
    id: &str,
    action: Step,
    reason: Option<String>,
    actor: &str,
) -> Result<RequestRow, Problem> {
    let mut r = load(svc.store.as_ref(), tenant, id).await?;
    let next = rights::next(r.status, action, reason.as_deref(), r.extended)?;
    if matches!(action, Step::Verify | Step::Start | Step::Complete) {
        hold_check(svc, &r, action).await?;
    }
    let before = r.updated_at;
    let now = time::now().max(before + 1);
    let mut done = step(actor, action.as_str(), now, reason);
    let mut waiting = 0;
    let mut held = 0;
    match action {
        Step::Extend => {
            let j = jurisdictions(svc, tenant).await?;
            r.due_at = rights::extended_due(&j, r.due_at);
            r.extended = true;
            done.outcome = Some(format!("due {}", time::rfc3339(r.due_at)));
        }
        Step::Complete => {
            // Pre-execution hooks first: nothing is carried out until each
            // approved (crate::hooks; `resume` carries it out then).
            held = crate::hooks::matching(svc.store.as_ref(), &r, HookStage::PreExecution).await?;
            if held > 0 {
                done.outcome = Some(format!(
                    "held until {held} pre-execution hook(s) approve; see `hooks`"
                ));
            } else {
                waiting = execute(svc, &mut r, &mut done, now, false).await?;
            }
        }
        Step::Reject => r.closed_at = Some(now),
        Step::Verify | Step::Start => {}
    }
    r.status = if waiting > 0 || held > 0 {
        Status::InProgress
    } else {
        next
    };
    r.updated_at = now;
    r.steps.push(done);
    save(svc.store.as_ref(), &r, before).await?;
    if held > 0 {
        // The calls once the hold is saved (an answer then finds it held).
        if crate::hooks::call(svc, &r, HookStage::PreExecution).await? == 0 {
            resume(svc, tenant, id).await?; // the hooks were removed meanwhile
        }
        return load(svc.store.as_ref(), tenant, id).await;
    }
    if action == Step::Complete && waiting == 0 {
        announce_completed(svc, &r).await?;
    }
    if waiting > 0 && crate::systems::finish_if_done(svc, tenant, id).await? {
        return load(svc.store.as_ref(), tenant, id).await;
    }
    Ok(r)
}

/// Refuse a step while hooks hold the request: pre-approval hooks that
/// have not all approved hold every step but rejecting and extending;
/// pre-execution hooks, once called, hold a second `complete`.
async fn hold_check(svc: &Services, r: &RequestRow, action: Step) -> Result<(), Problem> {
    let (gate, _) =
        crate::hooks::gate(svc.store.as_ref(), &r.tenant, &r.id, HookStage::PreApproval).await?;
    if let Gate::Held(n) = gate {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "held-by-hooks",
            format!("the request is held until {n} pre-approval hook(s) approve; see `hooks`"),
        ));
    }
    if action == Step::Complete {
        let (gate, calls) = crate::hooks::gate(
            svc.store.as_ref(),
            &r.tenant,
            &r.id,
            HookStage::PreExecution,
        )
        .await?;
        if !calls.is_empty() {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "held-by-hooks",
                match gate {
                    Gate::Held(n) => format!(
                        "the request is held until {n} pre-execution hook(s) approve; see `hooks`"
                    ),
                    _ => "the request is being carried out already".to_string(),
                },
            ));
        }
    }
    Ok(())
}

/// Carry a request out (the part of `complete` after its hooks): connected
/// systems first (they need the identifiers an erasure here shreds), then
/// Yinyom's own part; the step's outcome says what was done. Returns how
/// many systems the request now waits for (`systems.rs`).
async fn execute(
    svc: &Services,
    r: &mut RequestRow,
    done: &mut RequestStep,
    now: Micros,
    resumed: bool,
) -> Result<usize, Problem> {
    let waiting = crate::systems::begin(svc, r, resumed).await?;
    let mut outcome = carry_out(svc, r, waiting > 0).await?;
    if waiting > 0 {
        outcome.push_str(&format!("; waiting for {waiting} connected system(s)"));
    } else {
        r.closed_at = Some(now);
    }
    done.outcome = Some(outcome);
    r.changes = None;
    Ok(waiting)
}

/// Carry out a request its pre-execution hooks all approved (called by
/// `hooks::settle`): once, recorded as an `execute` step.
pub(crate) async fn resume(svc: &Services, tenant: &str, id: &str) -> Result<(), Problem> {
    let mut r = load(svc.store.as_ref(), tenant, id).await?;
    if r.status != Status::InProgress
        || !r.steps.iter().any(|s| s.action == "complete")
        || r.steps.iter().any(|s| s.action == "execute")
    {
        return Ok(());
    }
    let before = r.updated_at;
    let now = time::now().max(before + 1);
    let mut done = step("yinyom", "execute", now, None);
    let waiting = execute(svc, &mut r, &mut done, now, true).await?;
    if waiting == 0 {
        r.status = Status::Completed;
    }
    r.updated_at = now;
    r.steps.push(done);
    save(svc.store.as_ref(), &r, before).await?;
    if waiting == 0 {
        announce_completed(svc, &r).await?;
    } else {
        crate::systems::finish_if_done(svc, tenant, id).await?;
    }
    Ok(())
}

/// Reject a request a hook denied, with the hook's reason (recorded as the
/// rejection's, PDPA s.30 para. 3).
pub(crate) async fn reject_by_hook(
    store: &dyn Store,
    tenant: &str,
    id: &str,
    hook: &str,
    stage: HookStage,
    reason: &str,
) -> Result<(), Problem> {
    for _ in 0..5 {
        let mut r = load(store, tenant, id).await?;
        if !r.status.is_open() || r.steps.iter().any(|s| s.action == "execute") {
            return Ok(());
        }
        let before = r.updated_at;
        let now = time::now().max(before + 1);
        let mut s = step(
            &format!("hook:{hook}"),
            "reject",
            now,
            Some(reason.to_string()),
        );
        s.outcome = Some(format!("denied by the {} hook {hook}", stage.as_str()));
        r.steps.push(s);
        r.status = Status::Rejected;
        r.closed_at = Some(now);
        r.changes = None;
        r.updated_at = now;
        if store.update_request(&r, before).await? {
            return Ok(());
        }
    }
    Err(Problem::conflict(
        "the request changed at the same time; read it again",
    ))
}

/// Do what a request asks; returns what was done, for its record.
/// `systems_pending`: connected systems still have their part to do (an
/// erasure then announces `subject.erased` when they are done).
async fn carry_out(
    svc: &Services,
    r: &RequestRow,
    systems_pending: bool,
) -> Result<String, Problem> {
    let tenant = r.tenant.as_str();
    let Some(id) = r.subject_id.clone() else {
        return Ok("the subject was erased before".into());
    };
    match r.kind {
        // The bundle is made when it is downloaded, from the data as it is.
        Kind::Access | Kind::Portability => Ok("the data bundle is ready to download".into()),
        Kind::Erasure => {
            erase(
                svc,
                tenant,
                &id,
                &r.subject_uid,
                &format!("request:{}", r.id),
                !systems_pending,
            )
            .await
        }
        Kind::Restriction | Kind::Objection => {
            let purposes = r.purposes.clone();
            let kind = r.kind;
            let current = svc
                .store
                .subject(tenant, &id)
                .await?
                .map(|s| s.flags)
                .unwrap_or_default();
            let mut flags = current;
            let (set, action) = if kind == Kind::Restriction {
                (&mut flags.restricted, Action::Restrict)
            } else {
                (&mut flags.objected, Action::Object)
            };
            set.extend(purposes.iter().cloned());
            // The flags first (decisions honour them at once), then the
            // ledger entries that propagate them. A retry after a crash
            // between the two writes the entries then (idempotent by the
            // request's id), so no change goes unannounced.
            profiles::modify::<Problem>(svc, tenant, &id, Some(flags), |_| Ok(()))
                .await
                .map_err(profile_problem)?;
            let actions = purposes
                .iter()
                .map(|p| PreparedAction {
                    purpose: p.clone(),
                    channel: None,
                    action,
                    expires_at: None,
                })
                .collect();
            svc.writer
                .write(ledgered_by(r, &id, time::now(), actions))
                .await?;
            Ok(format!(
                "{} of {} in force",
                if kind == Kind::Restriction {
                    "restriction"
                } else {
                    "objection"
                },
                purposes.join(", ")
            ))
        }
        Kind::Withdrawal => withdraw(svc, r, &id).await,
        Kind::Rectification => {
            let Some(blob) = &r.changes else {
                return Ok("nothing to correct".into());
            };
            let keys = svc
                .vault
                .tenant(svc.store.as_ref(), tenant)
                .await
                .map_err(crate::store::StoreError::from)?;
            let plain = keys
                .open_secret(&format!("request:{}", r.subject_uid), blob)
                .map_err(crate::store::StoreError::from)?;
            let c: Corrections = serde_json::from_slice(&plain)
                .map_err(|e| Problem::bad_request(format!("stored corrections: {e}")))?;
            profiles::modify::<Problem>(svc, tenant, &id, None, |p: &mut Profile| {
                for (k, v) in &c.identifiers {
                    if let Some(kind) = ContactKind::parse(k) {
                        p.contacts.insert(kind, v.clone());
                    }
                }
                for (k, v) in &c.attributes {
                    if v.is_null() {
                        p.attributes.remove(k);
                    } else {
                        p.attributes.insert(k.clone(), v.clone());
                    }
                }
                Ok(())
            })
            .await
            .map_err(profile_problem)?;
            let mut fields: Vec<String> = c.identifiers.keys().cloned().collect();
            fields.extend(c.attributes.keys().map(|k| format!("attributes.{k}")));
            Ok(format!("corrected {}", fields.join(", ")))
        }
    }
}

fn profile_problem(e: ProfileError<Problem>) -> Problem {
    match e {
        ProfileError::Store(e) => Problem::from(e),
        ProfileError::Refused(p) => p,
    }
}

/// What carrying out request `r` writes to the ledger (source
/// `rights_request`), idempotent by the request's id: a retry after a
/// crash writes nothing twice.
fn ledgered_by(r: &RequestRow, id: &str, at: Micros, actions: Vec<PreparedAction>) -> WriteItem {
    WriteItem {
        tenant: r.tenant.clone(),
        subject_id: id.to_string(),
        actor: format!("request:{}", r.id),
        source: "rights_request".into(),
        notice: None,
        evidence: Some(serde_json::json!({ "request": r.id })),
        occurred_at: at,
        actions,
        idempotency: Some(Idempotency {
            key: format!("request:{}", r.id),
            request_hash: r.kind.as_str().into(),
        }),
        receipt: None,
        guardian: false,
    }
}

/// Withdraw every consent the request names that stands granted, through
/// the ledger (source `rights_request`).
async fn withdraw(svc: &Services, r: &RequestRow, id: &str) -> Result<String, Problem> {
    let now = time::now();
    let all = r.purposes.iter().any(|p| p == "*");
    let held = svc.view.subject(svc.store.as_ref(), &r.tenant, id).await?;
    let actions: Vec<PreparedAction> = held
        .map(|s| {
            s.consents
                .records
                .iter()
                .filter(|c| c.state_at(now) == ConsentState::Granted)
                .filter(|c| all || r.purposes.iter().any(|p| **p == *c.purpose))
                .map(|c| PreparedAction {
                    purpose: c.purpose.to_string(),
                    channel: c.channel,
                    action: Action::Withdraw,
                    expires_at: None,
                })
                .collect()
        })
        .unwrap_or_default();
    if actions.is_empty() {
        return Ok("no consent stood granted".into());
    }
    let n = actions.len();
    svc.writer.write(ledgered_by(r, id, now, actions)).await?;
    Ok(format!("{n} consent(s) withdrawn in the ledger"))
}

/// Erase a subject: mark each of its consent records `erased` in the
/// ledger and, with `announce`, `subject.erased` (entries that name only
/// its uid), then in one transaction destroy its data key (every sealed
/// byte becomes unreadable), delete the rest, and replace its id by its
/// keyed pseudonym wherever it was stored. `actor` is the request
/// (`request:<id>`) or the job that erases. Without `announce` (connected
/// systems still have their part to do), `subject.erased` is written by
/// [`announce_erased`] once they are done, with their outcomes.
pub async fn erase(
    svc: &Services,
    tenant: &str,
    id: &str,
    uid: &str,
    actor: &str,
    announce: bool,
) -> Result<String, Problem> {
    let Some(subject) = svc.store.subject(tenant, id).await? else {
        return Ok("the subject was erased before".into());
    };
    let mut flags = subject.flags;
    let held = svc.view.subject(svc.store.as_ref(), tenant, id).await?;
    let mut actions: Vec<PreparedAction> = held
        .map(|s| {
            s.consents
                .records
                .iter()
                .filter(|r| r.state != ConsentState::Erased)
                .map(|r| PreparedAction {
                    purpose: r.purpose.to_string(),
                    channel: r.channel,
                    action: Action::Erase,
                    expires_at: None,
                })
                .collect()
        })
        .unwrap_or_default();
    let records = actions.len();
    if announce {
        actions.push(PreparedAction {
            purpose: "*".into(),
            channel: None,
            action: Action::EraseSubject,
            expires_at: None,
        });
    }
    // Idempotent: a retry after a crash between this write and the
    // transaction below writes nothing twice.
    svc.writer
        .write(WriteItem {
            tenant: tenant.to_string(),
            subject_id: id.to_string(),
            actor: actor.to_string(),
            source: "erasure".into(),
            notice: None,
            evidence: None,
            occurred_at: time::now(),
            actions,
            idempotency: Some(Idempotency {
                key: format!("erase:{uid}"),
                request_hash: "erase".into(),
            }),
            receipt: None,
            guardian: false,
        })
        .await?;
    flags.erased = true;
    flags.born_on = None;
    flags.age_band = None;
    let keys = svc
        .vault
        .tenant(svc.store.as_ref(), tenant)
        .await
        .map_err(crate::store::StoreError::from)?;
    let pseudonym = keys.pseudonym(id);
    let receipts = svc
        .store
        .receipts(tenant, uid)
        .await?
        .into_iter()
        .filter_map(|r| {
            let jws = svc.signer.with_principal(&r.jws, &pseudonym)?;
            Some((r.id, jws))
        })
        .collect();
    let gone = svc
        .store
        .erase_subject(&crate::model::Erasure {
            tenant,
            id,
            uid,
            pseudonym: &pseudonym,
            flags: &flags,
            receipts,
            at: time::now(),
        })
        .await?;
    svc.arm_pseudonyms(tenant).await?;
    let held = svc.store.subject_states(tenant, &pseudonym).await?;
    svc.view
        .write(tenant, |tv| tv.put_erased(id, &pseudonym, flags, &held));
    if let Err(e) = svc.store.purge_deleted().await {
        tracing::warn!(error = %e, "could not truncate the write-ahead log after an erasure");
    }
    Ok(format!(
        "data key destroyed; profile, lookups and {} event(s) deleted; {} message(s) emptied; \
         evidence of {} ledger entries deleted; {records} consent record(s) erased; \
         {} stored response(s) deleted; the id replaced by a pseudonym",
        gone.events, gone.messages, gone.evidence, gone.responses
    ))
}

/// How long a one-time code stays good.
const CODE_TTL: Micros = 15 * 60 * 1_000_000;
/// Wrong codes allowed before a new one must be sent.
const CODE_ATTEMPTS: u32 = 5;
/// Codes one request may send.
const CODES_PER_REQUEST: usize = 5;

/// A tenant's request, or 404.
pub async fn load(store: &dyn Store, tenant: &str, id: &str) -> Result<RequestRow, Problem> {
    store
        .request(tenant, id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("request {id:?} does not exist")))
}

/// Write a request changed since `before` was read, or 409.
async fn save(store: &dyn Store, r: &RequestRow, before: Micros) -> Result<(), Problem> {
    if store.update_request(r, before).await? {
        Ok(())
    } else {
        Err(Problem::conflict(
            "the request changed at the same time; read it again",
        ))
    }
}

/// Verify a requester's identity by a one-time code sent to a contact
/// point the subject's profile holds (so only the subject can read it).
pub async fn send_code(
    svc: &Services,
    tenant: &str,
    id: &str,
    channel: yinyom_core::purpose::Channel,
    actor: &str,
) -> Result<RequestRow, Problem> {
    use rand::Rng;
    let mut r = load(svc.store.as_ref(), tenant, id).await?;
    if r.status != Status::Received {
        return Err(Problem::validation(
            "action",
            format!(
                "the request is {}; only a received request is verified",
                r.status.as_str()
            ),
        ));
    }
    let Some(subject) = r.subject_id.clone() else {
        return Err(Problem::conflict("the subject has been erased"));
    };
    // Each code allows a few tries; a few codes per request bound guessing
    // (and messages to the subject).
    if r.steps.iter().filter(|s| s.action == "code_sent").count() >= CODES_PER_REQUEST {
        return Err(Problem::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too-many-codes",
            "enough codes were sent for this request; verify the requester another way",
        ));
    }
    let code = format!("{:06}", rand::thread_rng().gen_range(0..1_000_000));
    let keys = svc
        .vault
        .tenant(svc.store.as_ref(), tenant)
        .await
        .map_err(crate::store::StoreError::from)?;
    let message = crate::relay::queue_system(
        svc,
        tenant,
        &subject,
        channel,
        "system:verification",
        (
            Some("รหัสยืนยันตัวตน · Your verification code".into()),
            format!(
                "รหัสยืนยันคำขอใช้สิทธิของคุณคือ {code} (ใช้ได้ 15 นาที)\n\
                 The code to confirm your data request is {code} (valid for 15 minutes).\n\n\
                 หากคุณไม่ได้ส่งคำขอ โปรดเพิกเฉยข้อความนี้ · If you did not ask, ignore this message."
            ),
        ),
    )
    .await?;
    let before = r.updated_at;
    let now = time::now().max(before + 1);
    r.verification = Some(crate::model::CodeSent {
        hash: keys.lookup_hash(&format!("code:{}", r.id), &code),
        channel: channel.as_str().into(),
        message: message.clone(),
        expires_at: now + CODE_TTL,
        attempts: 0,
    });
    let mut s = step(actor, "code_sent", now, None);
    s.outcome = Some(format!(
        "one-time code sent by {} ({message})",
        channel.as_str()
    ));
    r.steps.push(s);
    r.updated_at = now;
    save(svc.store.as_ref(), &r, before).await?;
    Ok(r)
}

/// Check a one-time code: the right one verifies the request.
pub async fn check_code(
    svc: &Services,
    tenant: &str,
    id: &str,
    code: &str,
    actor: &str,
) -> Result<RequestRow, Problem> {
    let mut r = load(svc.store.as_ref(), tenant, id).await?;
    let Some(mut sent) = r.verification.clone() else {
        return Err(Problem::validation(
            "code",
            "no code was sent for this request",
        ));
    };
    let before = r.updated_at;
    let now = time::now().max(before + 1);
    if sent.expires_at < now || sent.attempts >= CODE_ATTEMPTS {
        return Err(Problem::validation(
            "code",
            "the code expired or was tried too often; send a new one",
        ));
    }
    let keys = svc
        .vault
        .tenant(svc.store.as_ref(), tenant)
        .await
        .map_err(crate::store::StoreError::from)?;
    let given = keys.lookup_hash(&format!("code:{}", r.id), code.trim());
    let same = given.len() == sent.hash.len()
        && given
            .bytes()
            .zip(sent.hash.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    r.updated_at = now;
    if !same {
        sent.attempts += 1;
        r.verification = Some(sent);
        save(svc.store.as_ref(), &r, before).await?;
        return Err(Problem::validation("code", "the code is not right"));
    }
    r.status = rights::next(r.status, Step::Verify, None, r.extended)?;
    r.verification = None;
    let mut s = step(actor, "verify", now, None);
    s.outcome = Some(format!(
        "identity verified by a one-time code sent by {}",
        sent.channel
    ));
    r.steps.push(s);
    save(svc.store.as_ref(), &r, before).await?;
    Ok(r)
}

/// Record in the ledger, and so propagate, how a subject's restriction and
/// objection flags changed (`before` → `after`): one entry per purpose
/// restricted, objected to, or lifted.
pub async fn ledger_flag_changes(
    svc: &Services,
    tenant: &str,
    subject_id: &str,
    before: &SubjectFlags,
    after: &SubjectFlags,
    source: &str,
    actor: &str,
) -> Result<(), Problem> {
    let mut actions = Vec::new();
    for (old, new, on, off) in [
        (
            &before.restricted,
            &after.restricted,
            Action::Restrict,
            Action::LiftRestriction,
        ),
        (
            &before.objected,
            &after.objected,
            Action::Object,
            Action::LiftObjection,
        ),
    ] {
        let change = |p: &String, action| PreparedAction {
            purpose: p.clone(),
            channel: None,
            action,
            expires_at: None,
        };
        actions.extend(new.difference(old).map(|p| change(p, on)));
        actions.extend(old.difference(new).map(|p| change(p, off)));
    }
    if actions.is_empty() {
        return Ok(());
    }
    svc.writer
        .write(WriteItem {
            tenant: tenant.to_string(),
            subject_id: subject_id.to_string(),
            actor: actor.to_string(),
            source: source.to_string(),
            notice: None,
            evidence: None,
            occurred_at: time::now(),
            actions,
            idempotency: None,
            receipt: None,
            guardian: false,
        })
        .await?;
    Ok(())
}
