//! The messaging relay's HTTP surface: `/v1/messages` (one recipient or
//! an audience), `/v1/audiences/{id}`, `/v1/connectors` and the one-click
//! unsubscribe links `/u/{token}` (RFC 8058).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use yinyom_core::consent::Action;
use yinyom_core::contact::ContactKind;
use yinyom_core::purpose::Channel;
use yinyom_core::segment;
use yinyom_core::time::{self, Micros};

use super::auth::{MANAGERS, Principal, STAFF};
use super::extract::{Json, Path};
use super::problem::{Problem, ProblemBody};
use crate::app::App;
use crate::model::{ConnectorRow, MessageLogEntry, MessageRow};
use crate::profiles::{self, Subject};
use crate::relay::{self, ConnectorSettings, Content};
use crate::store::{Idempotency, PreparedAction, WriteItem};

const MAX_AUDIENCE_SUBJECTS: usize = 10_000;

/// What to send. `subject`, `html` and `text` may hold `{{attribute}}`
/// placeholders, filled from each recipient's profile attributes.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentInput {
    /// Email subject line (required for email).
    #[serde(default)]
    pub subject: Option<String>,
    pub text: String,
    #[serde(default)]
    pub html: Option<String>,
}

/// Who an audience send goes to: listed subjects, everyone matching a
/// segment filter (`country = "TH" and events("purchase", 30d) >= 2`), or
/// everyone whose consent under a notice needs renewal since its latest
/// material version (`renewal`: the notice key).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AudienceInput {
    #[serde(default)]
    pub subjects: Option<Vec<String>>,
    #[serde(default)]
    pub segment: Option<String>,
    #[serde(default)]
    pub renewal: Option<String>,
}

/// Body of `POST /v1/messages`: exactly one of `subject`, `to`, `audience`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The subject's id: sent to its contact point for the channel.
    #[serde(default)]
    pub subject: Option<String>,
    /// A contact point (email, phone, LINE user id): sent only if every
    /// subject holding it allows the purpose on the channel.
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub audience: Option<AudienceInput>,
    pub channel: Channel,
    pub purpose: String,
    pub content: ContentInput,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    pub subject: Option<String>,
    pub channel: String,
    pub purpose: String,
    /// `queued`, `retrying`, `sent`, `suppressed` or `dead`.
    pub status: String,
    /// Why it was suppressed (`withdrawn`, `no_consent`, `objected`, …), or
    /// the last delivery error.
    pub reason: Option<String>,
    pub attempts: u32,
    pub audience: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub log: Vec<MessageLogEntry>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AudienceView {
    pub audience: String,
    pub recipients: u64,
    /// Per status (`queued`, `sent`, `suppressed`, …).
    pub counts: BTreeMap<String, u64>,
    /// Suppressed recipients per reason.
    pub suppressed: BTreeMap<String, u64>,
}

fn fill(template: &str, attributes: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let key = after[..end].trim();
                match attributes.get(key) {
                    Some(serde_json::Value::String(s)) => out.push_str(s),
                    Some(serde_json::Value::Null) | None => {}
                    Some(v) => out.push_str(&v.to_string()),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn check(app: &App, tenant: &str, r: &SendRequest) -> Result<ContactKind, Problem> {
    let kind = match r.channel {
        Channel::Email | Channel::Sms | Channel::Line => ContactKind::for_channel(r.channel)
            .ok_or_else(|| Problem::validation("channel", "the relay sends email, sms and line"))?,
        _ => {
            return Err(Problem::validation(
                "channel",
                "the relay sends email, sms and line",
            ));
        }
    };
    let given = [r.subject.is_some(), r.to.is_some(), r.audience.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(Problem::validation(
            "subject",
            "give exactly one of subject, to, audience",
        ));
    }
    let purpose = app
        .view
        .read(tenant, |tv| tv.purposes.get(&r.purpose).cloned())
        .flatten()
        .ok_or_else(|| {
            Problem::validation("purpose", format!("purpose {:?} does not exist", r.purpose))
        })?;
    if !purpose.channels.contains(&r.channel) {
        return Err(Problem::validation(
            "channel",
            format!(
                "purpose {:?} does not cover the {} channel",
                r.purpose,
                r.channel.as_str()
            ),
        ));
    }
    let c = &r.content;
    if c.text.trim().is_empty() || c.text.chars().count() > 20_000 {
        return Err(Problem::validation(
            "content.text",
            "must be 1-20000 characters",
        ));
    }
    if c.html.as_ref().is_some_and(|h| h.len() > 500_000) {
        return Err(Problem::validation(
            "content.html",
            "must be at most 500 KB",
        ));
    }
    if r.channel == Channel::Email {
        match &c.subject {
            Some(s)
                if !s.trim().is_empty()
                    && s.chars().count() <= 300
                    && !s.contains(['\r', '\n']) => {}
            _ => {
                return Err(Problem::validation(
                    "content.subject",
                    "email needs a one-line subject of 1-300 characters",
                ));
            }
        }
    }
    if let Some(a) = &r.audience {
        match (&a.subjects, &a.segment, &a.renewal) {
            (Some(list), None, None) if !list.is_empty() && list.len() <= MAX_AUDIENCE_SUBJECTS => {
            }
            (None, Some(_), None) | (None, None, Some(_)) => {}
            _ => {
                return Err(Problem::validation(
                    "audience",
                    format!(
                        "give `subjects` (1-{MAX_AUDIENCE_SUBJECTS} ids), `segment` or `renewal`"
                    ),
                ));
            }
        }
    }
    Ok(kind)
}

/// What one send request shares between its recipients.
struct Sending<'a> {
    app: &'a App,
    keys: &'a crate::vault::TenantKeys,
    tenant: &'a str,
    r: &'a SendRequest,
    kind: ContactKind,
    now: Micros,
}

/// A queued or suppressed message for one subject.
fn message_for(s: &Sending<'_>, subject: &Subject, audience: Option<&str>) -> MessageRow {
    let Sending {
        app,
        keys,
        tenant,
        r,
        kind,
        now,
    } = *s;
    let mut row = MessageRow::queued(tenant, &subject.record, r.channel.as_str(), &r.purpose, now);
    row.audience = audience.map(str::to_string);
    let decision = app
        .view
        .read(tenant, |tv| {
            tv.decide(&subject.record.id, &r.purpose, Some(r.channel), now)
                .ok()
                .map(|a| a.decision)
        })
        .flatten();
    let Some(to) = subject.profile.contacts.get(&kind) else {
        row.status = "suppressed".into();
        row.reason = Some("no_contact_point".into());
        return row;
    };
    match decision {
        Some(d) if d.allowed => {}
        other => {
            row.status = "suppressed".into();
            row.reason = Some(
                other
                    .map_or("unknown_purpose", |d| d.reason.as_str())
                    .into(),
            );
            return row;
        }
    }
    let attrs = &subject.profile.attributes;
    let content = Content {
        to: to.clone(),
        subject: r.content.subject.as_deref().map(|s| fill(s, attrs)),
        text: fill(&r.content.text, attrs),
        html: r.content.html.as_deref().map(|h| fill(h, attrs)),
    };
    let sealed = match &subject.record.data_key {
        Some(w) => keys
            .unwrap_data_key(&subject.record.uid, w)
            .map(|dk| dk.seal(&serde_json::to_vec(&content).expect("content serialises")))
            .ok(),
        None => None,
    };
    match sealed {
        Some(blob) => row.content = Some(blob),
        None => {
            row.status = "suppressed".into();
            row.reason = Some("no_contact_point".into());
        }
    }
    row
}

/// Send a message to one subject or contact point, or to an audience.
/// Consent is checked now (a refusal is recorded as `suppressed` with the
/// reason) and again right before sending.
#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = SendRequest,
    responses((status = 201, body = MessageView), (status = 202, body = AudienceView),
              (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn send(
    State(app): State<Arc<App>>,
    who: Principal,
    Json(r): Json<SendRequest>,
) -> Result<Response, Problem> {
    who.require(&[
        crate::model::Role::Owner,
        crate::model::Role::Admin,
        crate::model::Role::Service,
    ])?;
    let kind = check(&app, &who.tenant, &r)?;
    let keys = app
        .vault
        .tenant(app.store.as_ref(), &who.tenant)
        .await
        .map_err(crate::store::StoreError::from)?;
    let now = time::now();
    let sending = Sending {
        app: &app,
        keys: &keys,
        tenant: &who.tenant,
        r: &r,
        kind,
        now,
    };
    if let Some(audience) = &r.audience {
        let id = format!("aud_{}", uuid::Uuid::now_v7().simple());
        let subjects = audience_members(&app, &who.tenant, audience).await?;
        let rows: Vec<MessageRow> = subjects
            .iter()
            .map(|s| message_for(&sending, s, Some(&id)))
            .collect();
        for chunk in rows.chunks(2_000) {
            app.store.insert_messages(chunk).await?;
        }
        for row in &rows {
            app.metrics.message(if row.status == "queued" {
                "queued"
            } else {
                "suppressed"
            });
        }
        app.relay_wake.notify_one();
        let view = audience_view(&app, &who.tenant, &id).await?;
        return Ok((StatusCode::ACCEPTED, axum::Json(view)).into_response());
    }
    let subjects: Vec<Subject> = match (&r.subject, &r.to) {
        (Some(id), _) => {
            let s = profiles::read(&app, &who.tenant, id)
                .await?
                .ok_or_else(|| Problem::not_found(format!("subject {id:?} does not exist")))?;
            if !s.profile.contacts.contains_key(&kind) {
                return Err(Problem::validation(
                    "subject",
                    format!("the subject has no {} contact point", kind.as_str()),
                ));
            }
            vec![s]
        }
        (None, Some(to)) => {
            let normalized = kind
                .normalize(to)
                .map_err(|e| Problem::validation("to", e.reason))?;
            let found = profiles::find(&app, &who.tenant, kind.as_str(), &normalized).await?;
            if found.is_empty() {
                return Err(Problem::validation(
                    "to",
                    "no subject has this contact point: without a subject there is no consent to send on",
                ));
            }
            found
        }
        _ => unreachable!("check() requires one recipient"),
    };
    // A contact point shared by several subjects (a family phone) is sent
    // to only if every one of them allows it.
    let mut rows: Vec<MessageRow> = subjects
        .iter()
        .map(|s| message_for(&sending, s, None))
        .collect();
    let mut row = rows.remove(0);
    if let Some(refusal) = rows.iter().find(|o| o.status == "suppressed") {
        row.status = "suppressed".into();
        row.reason = refusal.reason.clone();
        row.content = None;
    }
    app.store
        .insert_messages(std::slice::from_ref(&row))
        .await?;
    app.metrics.message(if row.status == "queued" {
        "queued"
    } else {
        "suppressed"
    });
    if row.status == "queued" {
        app.relay_wake.notify_one();
    }
    let view = message_view(&app, &who.tenant, &row.id).await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// The subjects an audience send goes to.
async fn audience_members(
    app: &App,
    tenant: &str,
    a: &AudienceInput,
) -> Result<Vec<Subject>, Problem> {
    if let Some(ids) = &a.subjects {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match profiles::read(app, tenant, id).await? {
                Some(s) => out.push(s),
                None => {
                    return Err(Problem::validation(
                        "audience.subjects",
                        format!("subject {id:?} does not exist"),
                    ));
                }
            }
        }
        return Ok(out);
    }
    if let Some(key) = &a.renewal {
        let due = crate::segments::renewals(app, tenant, key)
            .await
            .map_err(|e| e.field("audience.renewal"))?;
        let mut ids: Vec<String> = due.subjects.into_iter().map(|r| r.subject).collect();
        ids.dedup();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(s) = profiles::read(app, tenant, &id).await? {
                out.push(s);
            }
        }
        return Ok(out);
    }
    let text = a.segment.as_deref().unwrap_or_default();
    let seg = segment::parse(text).map_err(|e| {
        Problem::validation(
            "audience.segment",
            format!("{} (position {})", e.message, e.position),
        )
    })?;
    Ok(crate::segments::members(app, tenant, &seg).await?)
}

async fn message_view(app: &App, tenant: &str, id: &str) -> Result<MessageView, Problem> {
    let m = app
        .store
        .message(tenant, id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("message {id:?} does not exist")))?;
    let log = app.store.message_log(tenant, id).await?;
    Ok(MessageView {
        id: m.id,
        subject: m.subject_id,
        channel: m.channel,
        purpose: m.purpose,
        status: m.status,
        reason: m.reason,
        attempts: m.attempts,
        audience: m.audience,
        created_at: time::rfc3339(m.created_at),
        updated_at: time::rfc3339(m.updated_at),
        log,
    })
}

async fn audience_view(app: &App, tenant: &str, id: &str) -> Result<AudienceView, Problem> {
    let rows = app.store.audience_counts(tenant, id).await?;
    if rows.is_empty() {
        return Err(Problem::not_found(format!(
            "audience {id:?} does not exist"
        )));
    }
    let mut v = AudienceView {
        audience: id.to_string(),
        recipients: 0,
        counts: BTreeMap::new(),
        suppressed: BTreeMap::new(),
    };
    for (status, reason, n) in rows {
        v.recipients += n;
        *v.counts.entry(status.clone()).or_default() += n;
        if let Some(r) = reason {
            *v.suppressed.entry(r).or_default() += n;
        }
    }
    Ok(v)
}

/// A message: its status, why it was suppressed, and every step so far.
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages", params(("id" = String, Path)),
    responses((status = 200, body = MessageView), (status = 404, body = ProblemBody)), security(("api_key" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<MessageView>, Problem> {
    who.require(crate::api::auth::EVERYONE)?;
    Ok(axum::Json(message_view(&app, &who.tenant, &id).await?))
}

/// An audience send: recipients per status and suppressions per reason.
#[utoipa::path(get, path = "/v1/audiences/{id}", tag = "messages", params(("id" = String, Path)),
    responses((status = 200, body = AudienceView), (status = 404, body = ProblemBody)), security(("api_key" = [])))]
pub async fn audience(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<AudienceView>, Problem> {
    who.require(crate::api::auth::EVERYONE)?;
    Ok(axum::Json(audience_view(&app, &who.tenant, &id).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectorView {
    pub channel: String,
    #[serde(flatten)]
    pub settings: ConnectorSettings,
    /// Whether a secret (password, token) is stored; it is never shown.
    pub has_secret: bool,
    /// Whether a DKIM private key is stored (email); it is never shown.
    pub has_dkim_key: bool,
    pub updated_at: String,
}

/// Configure the tenant's connector for a channel (`email`, `sms`, `line`).
#[utoipa::path(put, path = "/v1/connectors/{channel}", tag = "messages", params(("channel" = String, Path)),
    request_body = ConnectorSettings,
    responses((status = 200, body = ConnectorView), (status = 422, body = ProblemBody)), security(("api_key" = [])))]
pub async fn put_connector(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(channel): Path<String>,
    Json(settings): Json<ConnectorSettings>,
) -> Result<axum::Json<ConnectorView>, Problem> {
    who.require(MANAGERS)?;
    let ch = Channel::parse(&channel)
        .ok_or_else(|| Problem::validation("channel", "must be email, sms or line"))?;
    relay::validate_settings(ch, &settings).map_err(|(f, why)| Problem::validation(f, why))?;
    let keys = app
        .vault
        .tenant(app.store.as_ref(), &who.tenant)
        .await
        .map_err(crate::store::StoreError::from)?;
    let secret = settings
        .secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| keys.seal_secret(&format!("connector:{channel}"), s.as_bytes()));
    let dkim_key = relay::dkim_key(&settings)
        .map_err(|(f, why)| Problem::validation(f, why))?
        .map(|k| keys.seal_secret(&format!("connector:{channel}:dkim"), k.as_bytes()));
    let row = ConnectorRow {
        tenant: who.tenant.to_string(),
        channel: channel.clone(),
        config: serde_json::to_value(&settings).expect("settings serialise"),
        secret,
        dkim_key,
        updated_at: time::now(),
    };
    app.store.put_connector(&row).await?;
    Ok(axum::Json(ConnectorView {
        has_dkim_key: row.dkim_key.is_some(),
        has_secret: row.secret.is_some(),
        channel,
        settings,
        updated_at: time::rfc3339(row.updated_at),
    }))
}

/// The tenant's connectors (secrets are never shown).
#[utoipa::path(get, path = "/v1/connectors", tag = "messages",
    responses((status = 200, body = Vec<ConnectorView>)), security(("api_key" = [])))]
pub async fn connectors(
    State(app): State<Arc<App>>,
    who: Principal,
) -> Result<axum::Json<Vec<ConnectorView>>, Problem> {
    who.require(STAFF)?;
    let rows = app.store.connectors(&who.tenant).await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|r| ConnectorView {
                has_dkim_key: r.dkim_key.is_some(),
                has_secret: r.secret.is_some(),
                settings: serde_json::from_value(r.config).unwrap_or_default(),
                channel: r.channel,
                updated_at: time::rfc3339(r.updated_at),
            })
            .collect(),
    ))
}

const PAGE_STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;line-height:1.5}button{font-size:1rem;padding:.6rem 1.2rem}";

fn page(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")],
        Html(format!(
            "<!doctype html><html lang=\"th\"><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>Unsubscribe / ยกเลิกการรับข่าวสาร</title><style>{PAGE_STYLE}</style><main>{body}</main></html>"
        )),
    )
        .into_response()
}

/// The page behind a signed link (a button that posts back), or 404 for a
/// link that does not verify.
fn link_page(app: &App, token: &str, body: &str) -> Response {
    if app.links.verify(token).is_none() {
        return bad_link();
    }
    page(StatusCode::OK, body)
}

fn bad_link() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "<h1>ลิงก์ไม่ถูกต้อง · Invalid link</h1><p>ลิงก์นี้ไม่ถูกต้องหรือถูกแก้ไข · This link is not valid.</p>",
    )
}

/// The page behind an unsubscribe link: a button that confirms (a GET
/// never unsubscribes: mail scanners follow links).
pub async fn unsubscribe_page(
    State(app): State<Arc<App>>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    link_page(
        &app,
        &token,
        "<h1>ยกเลิกการรับข่าวสาร · Unsubscribe</h1>\
         <p>กดปุ่มด้านล่างเพื่อถอนความยินยอมในการรับข้อความนี้ · Press the button to withdraw your consent to these messages.</p>\
         <form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\">ยกเลิก · Unsubscribe</button></form>",
    )
}

/// RFC 8058 one-click unsubscribe: withdraws the consent the message relied
/// on, at once, in the ledger (source `unsubscribe_link`). Repeating it
/// changes nothing.
pub async fn unsubscribe(
    State(app): State<Arc<App>>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    let Some((tenant, message)) = app.links.verify(&token) else {
        return bad_link();
    };
    match withdraw(&app, &tenant, &message).await {
        Ok(()) => page(
            StatusCode::OK,
            "<h1>ยกเลิกแล้ว · Unsubscribed</h1><p>คุณจะไม่ได้รับข้อความนี้อีก · You will not receive these messages any more.</p>",
        ),
        Err(p) if p.status == StatusCode::NOT_FOUND => bad_link(),
        Err(p) => p.into_response(),
    }
}

async fn withdraw(app: &App, tenant: &str, message: &str) -> Result<(), Problem> {
    app.ensure_tenant(tenant).await?;
    let m = app
        .store
        .message(tenant, message)
        .await?
        .ok_or_else(|| Problem::not_found("no such message"))?;
    let Some(subject) = m.subject_id else {
        return Ok(()); // erased: nothing left to withdraw
    };
    let channel = Channel::parse(&m.channel);
    let item = WriteItem {
        tenant: tenant.to_string(),
        subject_id: subject,
        actor: format!("link:{message}"),
        source: "unsubscribe_link".into(),
        notice: None,
        evidence: Some(serde_json::json!({ "message": message, "method": "one-click" })),
        occurred_at: time::now(),
        actions: vec![PreparedAction {
            purpose: m.purpose,
            channel,
            action: Action::Withdraw,
            expires_at: None,
        }],
        idempotency: Some(Idempotency {
            key: format!("unsubscribe:{message}"),
            request_hash: "unsubscribe".into(),
        }),
        receipt: None,
        guardian: false,
    };
    app.writer.write(item).await?;
    Ok(())
}

/// Body of `POST /v1/segments/evaluate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    /// A segment filter; none: every subject with a profile.
    #[serde(default)]
    pub filter: Option<String>,
    pub purpose: String,
    #[serde(default)]
    pub channel: Option<Channel>,
}

/// How many subjects match a segment filter and how many of them a
/// purpose may reach on a channel (suppressions per reason). A filter that
/// does not parse is a 422 naming the position.
#[utoipa::path(post, path = "/v1/segments/evaluate", tag = "messages", request_body = EvaluateRequest,
    responses((status = 200, body = crate::segments::Evaluation), (status = 422, body = ProblemBody)), security(("api_key" = [])))]
pub async fn evaluate_segment(
    State(app): State<Arc<App>>,
    who: Principal,
    Json(r): Json<EvaluateRequest>,
) -> Result<axum::Json<crate::segments::Evaluation>, Problem> {
    who.require(crate::api::auth::EVERYONE)?;
    if app
        .view
        .read(&who.tenant, |tv| !tv.purposes.contains_key(&r.purpose))
        .unwrap_or(true)
    {
        return Err(Problem::validation(
            "purpose",
            format!("purpose {:?} does not exist", r.purpose),
        ));
    }
    let seg = r
        .filter
        .as_deref()
        .map(segment::parse)
        .transpose()
        .map_err(|e| {
            Problem::validation("filter", format!("{} (position {})", e.message, e.position))
        })?;
    Ok(axum::Json(
        crate::segments::evaluate(&app, &who.tenant, seg.as_ref(), &r.purpose, r.channel).await?,
    ))
}

/// The page behind a double opt-in link: a button that confirms (a GET
/// never confirms: mail scanners follow links).
pub async fn opt_in_page(
    State(app): State<Arc<App>>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    link_page(
        &app,
        &token,
        "<h1>ยืนยันการรับข่าวสาร · Confirm</h1>\
         <p>กดปุ่มด้านล่างเพื่อยืนยันความยินยอม · Press the button to confirm your consent.</p>\
         <form method=\"post\"><button type=\"submit\">ยืนยัน · Confirm</button></form>",
    )
}

/// Confirm a double opt-in: the held grant is written to the ledger.
pub async fn opt_in_confirm(
    State(app): State<Arc<App>>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    let Some((tenant, id)) = app.links.verify(&token) else {
        return bad_link();
    };
    if !id.starts_with("opt_") {
        return bad_link();
    }
    match crate::optin::confirm(&app, &tenant, &id).await {
        Ok(_) => page(
            StatusCode::OK,
            "<h1>ยืนยันแล้ว · Confirmed</h1><p>ขอบคุณ · Thank you.</p>",
        ),
        Err(p) if p.status == StatusCode::NOT_FOUND => bad_link(),
        Err(p) if p.status == StatusCode::GONE => page(
            StatusCode::GONE,
            "<h1>ลิงก์หมดอายุ · Link expired</h1><p>โปรดสมัครใหม่ · Please sign up again.</p>",
        ),
        Err(p) => p.into_response(),
    }
}
