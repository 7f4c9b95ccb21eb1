//! `/v1/requests`: data-subject rights requests, their status flow, the
//! overdue list, and the access/portability bundle. What completing a
//! request does is in [`crate::rights`].

use std::io::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use yinyom_core::rights::{Kind, Status, Step};
use yinyom_core::time;

use super::auth::{EVERYONE, Principal, STAFF};
use super::extract::{Json, Path, Query, time_field};
use super::page;
use super::problem::{Problem, ProblemBody};
use super::subjects::{HistoryEntry, ReceiptView, consents_of};
use crate::app::App;
use crate::model::{RequestRow, RequestStep};
use crate::profiles;
use crate::rights::{self, Corrections, NewRequest};
use crate::store::RequestFilter;

/// Body of `POST /v1/requests`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestInput {
    /// The subject's id.
    pub subject: String,
    pub kind: Kind,
    /// Restriction, objection, withdrawal: the purposes (`*` or none = all).
    #[serde(default)]
    pub purposes: Vec<String>,
    /// Rectification: the corrections.
    #[serde(default)]
    pub changes: Option<Corrections>,
    /// How the request arrived (`api`, `email`, `phone`, `preference_center`, …).
    #[serde(default)]
    pub via: Option<String>,
    /// When it arrived (RFC 3339), if earlier than now: the due date counts
    /// from receipt.
    #[serde(default)]
    pub received_at: Option<String>,
}

/// A rights request.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestView {
    pub id: String,
    /// The subject's id.
    pub subject: Option<String>,
    pub kind: Kind,
    pub status: Status,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub purposes: Vec<String>,
    pub via: String,
    pub received_at: String,
    pub due_at: String,
    pub extended: bool,
    /// Open and past its due date.
    pub overdue: bool,
    pub closed_at: Option<String>,
    /// Who did what, when and why.
    pub steps: Vec<RequestStep>,
    /// Its part in each connected system (`GET /v1/requests/{id}`); the
    /// request completes when every one is `done`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub systems: Option<Vec<crate::systems::SystemStatus>>,
    /// Its calls of request hooks (`GET /v1/requests/{id}`): a pre-approval
    /// or pre-execution call not `approved` holds the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Vec<crate::hooks::HookStatus>>,
}

impl RequestView {
    fn new(r: RequestRow, now: i64) -> Self {
        RequestView {
            overdue: r.status.is_open() && r.due_at < now,
            id: r.id,
            subject: r.subject_id,
            kind: r.kind,
            status: r.status,
            purposes: r.purposes,
            via: r.via,
            received_at: time::rfc3339(r.received_at),
            due_at: time::rfc3339(r.due_at),
            extended: r.extended,
            closed_at: r.closed_at.map(time::rfc3339),
            steps: r.steps,
            systems: None,
            hooks: None,
        }
    }

    /// With its part in each connected system.
    async fn with_systems(r: RequestRow, app: &App) -> Result<Self, Problem> {
        let systems = crate::systems::statuses(app.store.as_ref(), &r.tenant, &r.id).await?;
        let hooks = crate::hooks::statuses(app.store.as_ref(), &r.tenant, &r.id).await?;
        let mut v = RequestView::new(r, time::now());
        v.systems = Some(systems);
        v.hooks = Some(hooks);
        Ok(v)
    }
}

/// Receive a rights request. Its due date is 30 days after receipt for a
/// PDPA tenant (s.30), one month for a GDPR tenant (Art. 12(3)).
#[utoipa::path(post, path = "/v1/requests", tag = "requests", request_body = RequestInput,
    responses((status = 201, body = RequestView), (status = 404, body = ProblemBody),
        (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn create(
    State(app): State<Arc<App>>,
    who: Principal,
    Json(r): Json<RequestInput>,
) -> Result<(StatusCode, axum::Json<RequestView>), Problem> {
    who.require(EVERYONE)?;
    yinyom_core::subject::validate_id(&r.subject)?;
    let received_at = r
        .received_at
        .as_deref()
        .map(|s| time_field("received_at", s))
        .transpose()?;
    let via = r.via.unwrap_or_else(|| "api".into());
    if via.is_empty() || via.len() > 64 || via.chars().any(char::is_control) {
        return Err(Problem::validation("via", "must be 1-64 bytes"));
    }
    let row = rights::receive(
        &app,
        &who.tenant,
        NewRequest {
            subject: r.subject,
            kind: r.kind,
            purposes: r.purposes,
            corrections: r.changes,
            via,
            received_at,
            actor: who.actor(),
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(RequestView::new(row, time::now())),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only requests in this status.
    #[serde(default)]
    pub status: Option<Status>,
    /// Only open requests past their due date.
    #[serde(default)]
    pub overdue: bool,
    /// Only this subject's requests.
    #[serde(default)]
    pub subject: Option<String>,
    /// Page size: 1-1000, 100 by default.
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RequestList {
    pub requests: Vec<RequestView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The tenant's rights requests, the soonest due first, a page at a time
/// (`limit`, `cursor`).
#[utoipa::path(get, path = "/v1/requests", tag = "requests", params(ListQuery),
    responses((status = 200, body = RequestList), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    who: Principal,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<RequestList>, Problem> {
    who.require(STAFF)?;
    let limit = page::limit(q.limit)?;
    let after: Option<(i64, String)> = page::after(q.cursor.as_deref())?;
    let now = time::now();
    let uid = match &q.subject {
        Some(id) => match app.store.subject(&who.tenant, id).await? {
            Some(s) => Some(s.uid),
            None => {
                return Ok(axum::Json(RequestList {
                    requests: vec![],
                    next_cursor: None,
                }));
            }
        },
        None => None,
    };
    let rows = app
        .store
        .requests(
            &who.tenant,
            &RequestFilter {
                status: q.status,
                due_before: q.overdue.then_some(now),
                subject_uid: uid.as_deref(),
            },
            after.as_ref().map(|(due, id)| (*due, id.as_str())),
            limit + 1,
        )
        .await?;
    let (rows, next_cursor) = page::split(rows, limit, |r| (r.due_at, r.id.clone()));
    Ok(axum::Json(RequestList {
        requests: rows.into_iter().map(|r| RequestView::new(r, now)).collect(),
        next_cursor,
    }))
}

/// One rights request with its steps.
#[utoipa::path(get, path = "/v1/requests/{id}", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, body = RequestView), (status = 404, body = ProblemBody)), security(("api_key" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<RequestView>, Problem> {
    who.require(EVERYONE)?;
    let r = rights::load(app.store.as_ref(), &who.tenant, &id).await?;
    Ok(axum::Json(RequestView::with_systems(r, &app).await?))
}

/// Body of `POST /v1/requests/{id}/actions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionInput {
    pub action: Step,
    /// Required to reject or extend (recorded, PDPA s.39).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Move a request on: `verify` (identity checked), `start`, `complete`
/// (carries it out: erases, restricts, withdraws, corrects…), `reject`
/// or `extend` (with a reason).
#[utoipa::path(post, path = "/v1/requests/{id}/actions", tag = "requests", params(("id" = String, Path)),
    request_body = ActionInput,
    responses((status = 200, body = RequestView), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody),
        (status = 422, body = ProblemBody)), security(("api_key" = [])))]
pub async fn act(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
    Json(a): Json<ActionInput>,
) -> Result<axum::Json<RequestView>, Problem> {
    who.require(STAFF)?;
    if let Some(r) = &a.reason
        && r.len() > 2000
    {
        return Err(Problem::validation("reason", "must be at most 2000 bytes"));
    }
    let row = rights::act(&app, &who.tenant, &id, a.action, a.reason, &who.actor()).await?;
    Ok(axum::Json(RequestView::with_systems(row, &app).await?))
}

/// The subject's data for a completed access or portability request: a
/// zip of JSON and CSV files (profile, consents with history and receipts,
/// events, messages). Made from the data as it is now; every download is
/// in the audit log.
#[utoipa::path(get, path = "/v1/requests/{id}/bundle", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, content_type = "application/zip", body = Vec<u8>), (status = 404, body = ProblemBody),
        (status = 409, body = ProblemBody)), security(("api_key" = [])))]
pub async fn bundle(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    who.require(STAFF)?;
    let r = rights::load(app.store.as_ref(), &who.tenant, &id).await?;
    if !matches!(r.kind, Kind::Access | Kind::Portability) {
        return Err(Problem::conflict(
            "only access and portability requests have a bundle",
        ));
    }
    if r.status != Status::Completed {
        return Err(Problem::conflict(
            "the bundle is available once the request is completed",
        ));
    }
    let Some(subject_id) = r.subject_id.clone() else {
        return Err(Problem::conflict("the subject was erased; nothing is left"));
    };
    let bytes = make_bundle(&app, &who.tenant, &subject_id, &r).await?;
    app.store
        .insert_audit(&[crate::model::AuditEntry {
            id: 0,
            tenant: who.tenant.to_string(),
            at: time::now(),
            actor: who.actor(),
            subject_uid: r.subject_uid.clone(),
            subject: Some(subject_id.clone()),
            fields: vec!["bundle".into()],
            context: format!("GET /v1/requests/{id}/bundle"),
        }])
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.zip\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

fn csv_of<const N: usize>(header: [&str; N], rows: Vec<[String; N]>) -> Result<Vec<u8>, Problem> {
    super::ropa::csv_bytes(&header, rows.into_iter().map(Vec::from).collect())
}

async fn make_bundle(
    app: &App,
    tenant: &str,
    id: &str,
    r: &RequestRow,
) -> Result<Vec<u8>, Problem> {
    let subject = profiles::read(app, tenant, id).await?;
    let uid = r.subject_uid.as_str();
    let profile = subject
        .as_ref()
        .map(|s| serde_json::to_value(&s.profile).unwrap_or_default())
        .unwrap_or_default();
    let consents = consents_of(app, tenant, id).await?;
    let history: Vec<HistoryEntry> = app
        .store
        .history(tenant, uid)
        .await?
        .into_iter()
        .map(HistoryEntry::from)
        .collect();
    let receipts: Vec<ReceiptView> = app
        .store
        .receipts(tenant, uid)
        .await?
        .into_iter()
        .map(|x| ReceiptView {
            id: x.id,
            jws: x.jws,
            created_at: time::rfc3339(x.created_at),
        })
        .collect();
    let events = app.store.subject_events(tenant, uid, 100_000).await?;
    let messages = app.store.subject_messages(tenant, uid).await?;
    let requests = app.store.subject_requests(tenant, uid).await?;

    let json = |v: serde_json::Value| serde_json::to_vec_pretty(&v).unwrap_or_default();
    let now = time::now();
    let subject_json = json(serde_json::json!({
        "subject": id,
        "pseudonymous_id": uid,
        "profile": profile,
        "exported_at": time::rfc3339(now),
        "request": r.id,
    }));
    let consents_json = json(serde_json::json!({
        "consents": consents, "history": history, "receipts": receipts,
    }));
    let events_json = json(serde_json::to_value(&events).unwrap_or_default());
    let messages_json = json(serde_json::Value::Array(
        messages
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id, "channel": m.channel, "purpose": m.purpose, "status": m.status,
                    "reason": m.reason, "created_at": time::rfc3339(m.created_at),
                })
            })
            .collect(),
    ));
    let requests_json = json(serde_json::Value::Array(
        requests
            .into_iter()
            .map(|x| serde_json::to_value(RequestView::new(x, now)).unwrap_or_default())
            .collect(),
    ));
    let consents_csv = csv_of(
        ["purpose", "channel", "state", "occurred_at"],
        history
            .iter()
            .map(|h| {
                let v = serde_json::to_value(h).unwrap_or_default();
                let s = |k: &str| match &v[k] {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                [s("purpose"), s("channel"), s("action"), s("occurred_at")]
            })
            .collect(),
    )?;
    let events_csv = csv_of(
        ["id", "type", "name", "occurred_at", "source"],
        events
            .iter()
            .map(|e| {
                [
                    e.id.clone(),
                    e.kind.clone(),
                    e.name.clone().unwrap_or_default(),
                    time::rfc3339(e.occurred_at),
                    e.source.clone(),
                ]
            })
            .collect(),
    )?;
    let readme = "Yinyom — ข้อมูลส่วนบุคคลของคุณ · Your personal data\n\n\
        subject.json   ข้อมูลติดต่อและคุณลักษณะ · contact points and attributes\n\
        consents.json  ความยินยอมปัจจุบัน ประวัติ และใบรับรอง · current consents, history, signed receipts (JWS)\n\
        consents.csv   ประวัติความยินยอม · consent history\n\
        events.json / events.csv  เหตุการณ์ที่บันทึก · tracking events kept\n\
        messages.json  ข้อความที่ส่งถึงคุณ · messages sent to you\n\
        requests.json  คำขอใช้สิทธิ · your rights requests\n\
        systems.json, systems/<system>/<table>.json|.csv  ข้อมูลในระบบอื่นขององค์กร · your rows in our other systems\n\n\
        Receipts verify against the keys at /.well-known/jwks.json.\n";

    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("README.txt".into(), readme.as_bytes().to_vec()),
        ("subject.json".into(), subject_json),
        ("consents.json".into(), consents_json),
        ("consents.csv".into(), consents_csv),
        ("events.json".into(), events_json),
        ("events.csv".into(), events_csv),
        ("messages.json".into(), messages_json),
        ("requests.json".into(), requests_json),
    ];
    // The subject's rows in each connected system (`systems/…`).
    files.extend(crate::systems::bundle_files(app, tenant, &r.id).await?);
    let fail = |e: String| Problem::bad_request(format!("bundle: {e}"));
    for (name, data) in files {
        zip.start_file(name, opts)
            .map_err(|e| fail(e.to_string()))?;
        zip.write_all(&data).map_err(|e| fail(e.to_string()))?;
    }
    let out = zip.finish().map_err(|e| fail(e.to_string()))?;
    Ok(out.into_inner())
}

/// Body of `POST /v1/requests/{id}/verification`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendCodeInput {
    /// Where to send the code: a channel whose contact point the subject's
    /// profile holds (`email`, `sms`, `line`).
    pub channel: yinyom_core::purpose::Channel,
}

/// Send the subject a one-time code (through the relay) to verify that
/// the requester is the subject.
#[utoipa::path(post, path = "/v1/requests/{id}/verification", tag = "requests", params(("id" = String, Path)),
    request_body = SendCodeInput,
    responses((status = 202, body = RequestView), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn send_code(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
    Json(b): Json<SendCodeInput>,
) -> Result<(StatusCode, axum::Json<RequestView>), Problem> {
    who.require(EVERYONE)?;
    let row = rights::send_code(&app, &who.tenant, &id, b.channel, &who.actor()).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(RequestView::new(row, time::now())),
    ))
}

/// Body of `POST /v1/requests/{id}/verification/confirm`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmCodeInput {
    pub code: String,
}

/// Check the code the subject received: the right one verifies the
/// request; five wrong ones, or 15 minutes, and a new code is needed.
#[utoipa::path(post, path = "/v1/requests/{id}/verification/confirm", tag = "requests", params(("id" = String, Path)),
    request_body = ConfirmCodeInput,
    responses((status = 200, body = RequestView), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn confirm_code(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
    Json(b): Json<ConfirmCodeInput>,
) -> Result<axum::Json<RequestView>, Problem> {
    who.require(EVERYONE)?;
    if b.code.len() > 32 {
        return Err(Problem::validation("code", "is not right"));
    }
    let row = rights::check_code(&app, &who.tenant, &id, &b.code, &who.actor()).await?;
    Ok(axum::Json(RequestView::new(row, time::now())))
}
