//! The preference center, `/p/{token}`: a data subject sees each purpose in
//! plain Thai or English, the state per channel, when and to which notice
//! version they agreed; changes any of it (withdrawing is one switch, like
//! granting); downloads their receipts; files a rights request.
//!
//! The link is the credential: `base64url(tenant \0 uid.expiry)` signed
//! with a key of its own, so no cookie is involved (and no CSRF is
//! possible); pages send no referrer, so the token never leaks to links.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use yinyom_core::consent::{Action, ConsentRecord, ConsentState};
use yinyom_core::purpose::{Channel, Lang, Purpose};
use yinyom_core::rights::Kind;
use yinyom_core::time::{self, Micros};

use super::page::{self, code, tr};
use super::sdk::ClientIp;
use crate::api::problem::Problem;
use crate::app::App;
use crate::record::{ActionRequest, ConsentRequest, NoticeSelector};

/// A preference link lives a week unless asked otherwise.
pub const DEFAULT_TTL_HOURS: u32 = 24 * 7;
/// At most 30 days.
pub const MAX_TTL_HOURS: u32 = 24 * 30;

/// A signed link to `uid`'s preference center, valid until `expires_at`.
pub fn token(app: &App, tenant: &str, uid: &str, expires_at: Micros) -> String {
    app.preference_links
        .token(tenant, &format!("{uid}.{}", expires_at / 1_000_000))
}

/// Why a link does not open.
#[derive(Debug, PartialEq, Eq)]
pub enum BadLink {
    Invalid,
    Expired,
}

/// (tenant, uid) of a genuine, unexpired link.
pub fn open(app: &App, token: &str, now: Micros) -> Result<(String, String), BadLink> {
    let (tenant, rest) = app.preference_links.verify(token).ok_or(BadLink::Invalid)?;
    let (uid, exp) = rest.rsplit_once('.').ok_or(BadLink::Invalid)?;
    let exp: i64 = exp.parse().map_err(|_| BadLink::Invalid)?;
    if exp.saturating_mul(1_000_000) <= now {
        return Err(BadLink::Expired);
    }
    Ok((tenant, uid.to_string()))
}

fn bad_link(b: BadLink) -> Response {
    match b {
        BadLink::Invalid => page::message(
            StatusCode::NOT_FOUND,
            "ลิงก์ไม่ถูกต้อง",
            "This link is not valid: it may have been altered.",
        ),
        BadLink::Expired => page::message(
            StatusCode::GONE,
            "ลิงก์หมดอายุแล้ว กรุณาขอลิงก์ใหม่",
            "This link has expired. Please ask for a new one.",
        ),
    }
}

/// The subject behind a link: tenant, controller id, uid.
struct Visitor {
    tenant: String,
    id: String,
    uid: String,
}

async fn visitor(app: &App, token: &str) -> Result<Visitor, Response> {
    let (tenant, uid) = open(app, token, time::now()).map_err(bad_link)?;
    let gone = || {
        page::message(
            StatusCode::NOT_FOUND,
            "ไม่พบข้อมูลของคุณ",
            "We hold no data about you under this link.",
        )
    };
    if app.ensure_tenant(&tenant).await.is_err() {
        return Err(gone());
    }
    let id = match app.store.subject_id(&tenant, &uid).await {
        Ok(Some(id)) => id,
        Ok(None) => return Err(gone()),
        Err(e) => return Err(Problem::from(e).into_response()),
    };
    let erased = app.view.read(&tenant, |tv| tv.erased(&id)).unwrap_or(true);
    if erased {
        return Err(gone());
    }
    Ok(Visitor { tenant, id, uid })
}

#[derive(Deserialize)]
pub struct PageQuery {
    pub lang: Option<String>,
    pub saved: Option<String>,
    pub request: Option<String>,
}

/// One switch on the page: a purpose on a channel (none: purpose-wide).
struct Row {
    channel: Option<Channel>,
    record: Option<ConsentRecord>,
}

struct Shown {
    purpose: Purpose,
    rows: Vec<Row>,
    /// The latest notice asking for this purpose, and its latest material
    /// version (grants before it need renewal).
    notice: Option<(String, u32, u32)>,
}

impl Shown {
    /// The row's consent was given to a version of the purpose's notice
    /// older than its latest material one: it needs renewing.
    fn outdated(&self, r: &Row) -> bool {
        self.notice
            .as_ref()
            .zip(r.record.as_ref().and_then(|x| x.notice.as_ref()))
            .is_some_and(|((k, _, material), n)| *k == *n.key && n.version < *material)
    }
}

fn field(purpose: &str, channel: Option<Channel>) -> String {
    format!("{purpose}|{}", channel.map_or("*", Channel::as_str))
}

fn channel_name(c: Option<Channel>, lang: Lang) -> &'static str {
    match c {
        None => tr(lang, "ทุกช่องทาง", "All channels"),
        Some(Channel::Email) => tr(lang, "อีเมล", "Email"),
        Some(Channel::Sms) => tr(lang, "SMS", "SMS"),
        Some(Channel::Phone) => tr(lang, "โทรศัพท์", "Phone calls"),
        Some(Channel::Line) => tr(lang, "LINE", "LINE"),
        Some(Channel::Push) => tr(lang, "การแจ้งเตือนแอป", "App notifications"),
        Some(Channel::Post) => tr(lang, "ไปรษณีย์", "Post"),
        Some(Channel::Web) => tr(lang, "เว็บไซต์", "Website"),
    }
}

/// What the subject can change: purposes resting on consent, each on its
/// channels (or as a whole when it has none).
async fn shown(
    app: &App,
    v: &Visitor,
) -> Result<Option<(crate::model::Tenant, Vec<Shown>)>, crate::store::StoreError> {
    let held = app
        .view
        .subject(app.store.as_ref(), &v.tenant, &v.id)
        .await?;
    Ok(app.view.read(&v.tenant, |tv| {
        let consents = held.as_ref().map(|s| &s.consents);
        let mut out: Vec<Shown> = tv
            .purposes
            .values()
            .filter(|p| p.requires_consent())
            .map(|p| {
                let channels: Vec<Option<Channel>> = if p.channels.is_empty() {
                    vec![None]
                } else {
                    p.channels.iter().copied().map(Some).collect()
                };
                let rows = channels
                    .into_iter()
                    .map(|c| Row {
                        channel: c,
                        record: consents.and_then(|s| s.effective(&p.key, c)).cloned(),
                    })
                    .collect();
                let notice = tv
                    .latest_notice
                    .iter()
                    .filter(|(k, v)| {
                        tv.notices
                            .get(&((*k).clone(), **v))
                            .is_some_and(|n| n.purposes.contains(&p.key))
                    })
                    .max_by_key(|(k, _)| (*k).clone())
                    .map(|(k, v)| (k.clone(), *v, tv.material.get(k).copied().unwrap_or(1)));
                Shown {
                    purpose: p.clone(),
                    rows,
                    notice,
                }
            })
            .collect();
        out.sort_by(|a, b| a.purpose.key.cmp(&b.purpose.key));
        (tv.tenant.clone(), out)
    }))
}

fn state_text(r: Option<&ConsentRecord>, now: Micros, lang: Lang) -> Markup {
    let Some(r) = r else {
        return html! { span.muted { (tr(lang, "ยังไม่ได้เลือก", "Not chosen yet")) } };
    };
    let when = page::date(r.occurred_at);
    let notice = r
        .notice
        .as_ref()
        .map(|n| format!(" · {} v{}", n.key, n.version))
        .unwrap_or_default();
    match r.state_at(now) {
        ConsentState::Granted => html! {
            span.ok { (tr(lang, "ยินยอม", "Consented")) }
            " " span.muted { (tr(lang, "เมื่อ ", "on ")) (when) (notice) }
        },
        ConsentState::Expired => html! {
            span.bad { (tr(lang, "หมดอายุ", "Expired")) } " " span.muted { (when) }
        },
        ConsentState::Withdrawn => html! {
            span.bad { (tr(lang, "ถอนความยินยอมแล้ว", "Withdrawn")) } " " span.muted { (tr(lang, "เมื่อ ", "on ")) (when) }
        },
        ConsentState::Denied => html! {
            span.bad { (tr(lang, "ไม่ยินยอม", "Not consented")) } " " span.muted { (tr(lang, "เมื่อ ", "on ")) (when) }
        },
        ConsentState::Unspecified => {
            html! { span.muted { (tr(lang, "ยังไม่ได้เลือก", "Not chosen yet")) } }
        }
        ConsentState::Erased => html! {
            span.bad { (tr(lang, "ลบข้อมูลแล้ว", "Erased")) }
        },
    }
}

const REQUEST_KINDS: [Kind; 6] = [
    Kind::Access,
    Kind::Portability,
    Kind::Erasure,
    Kind::Restriction,
    Kind::Objection,
    Kind::Withdrawal,
];

fn kind_name(k: Kind, lang: Lang) -> &'static str {
    match k {
        Kind::Access => tr(lang, "ขอสำเนาข้อมูลของฉัน", "A copy of my data"),
        Kind::Portability => tr(
            lang,
            "ขอรับข้อมูลในรูปแบบที่อ่านด้วยเครื่องได้",
            "My data in a machine-readable format",
        ),
        Kind::Rectification => tr(lang, "ขอแก้ไขข้อมูล", "Correct my data"),
        Kind::Erasure => tr(lang, "ขอให้ลบข้อมูลของฉัน", "Erase my data"),
        Kind::Restriction => tr(lang, "ขอให้ระงับการใช้ข้อมูล", "Restrict the use of my data"),
        Kind::Objection => tr(
            lang,
            "คัดค้านการประมวลผล (รวมถึงการตลาดทางตรง)",
            "Object to processing (direct marketing included)",
        ),
        Kind::Withdrawal => tr(lang, "ถอนความยินยอมทั้งหมด", "Withdraw all my consents"),
    }
}

/// `GET /p/{token}`.
pub async fn show(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let v = match visitor(&app, &token).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let found = match shown(&app, &v).await {
        Ok(found) => found,
        Err(e) => return Problem::from(e).into_response(),
    };
    let Some((tenant, shown)) = found else {
        return bad_link(BadLink::Invalid);
    };
    let lang = page::choose_lang(q.lang.as_deref(), &headers, tenant.default_lang);
    let now = time::now();
    let other = match lang {
        Lang::Th => (Lang::En, "English"),
        Lang::En => (Lang::Th, "ภาษาไทย"),
    };
    let base = format!("/p/{token}");
    let top = html! {
        header.top {
            strong { (tenant.name) }
            a.lang href={ (base) "?lang=" (code(other.0)) } lang=(code(other.0)) hreflang=(code(other.0)) { (other.1) }
        }
    };
    let body = html! {
        main.narrow {
            h1 { (tr(lang, "การตั้งค่าความเป็นส่วนตัวของคุณ", "Your privacy choices")) }
            @if q.saved.is_some() {
                p.notice role="status" { (tr(lang, "บันทึกการเลือกของคุณแล้ว มีผลทันที", "Your choices are saved and apply at once.")) }
            }
            @if q.saved.as_deref() == Some("confirm") {
                p.notice role="status" { (tr(lang, "เราส่งข้อความให้คุณยืนยันแล้ว การยินยอมจะมีผลเมื่อคุณยืนยัน", "We sent you a message to confirm; the consent applies once you confirm it.")) }
            }
            @if let Some(r) = &q.request {
                p.notice role="status" { (tr(lang, "เราได้รับคำขอของคุณแล้ว เลขที่ ", "We received your request, number ")) code { (r) } }
            }
            p { (tr(lang,
                "เปิดหรือปิดแต่ละรายการได้ตลอดเวลา การถอนความยินยอมทำได้ง่ายเช่นเดียวกับการให้ความยินยอม",
                "Switch each one on or off at any time: withdrawing is as easy as agreeing.")) }
            form method="post" action=(base) {
                input type="hidden" name="lang" value=(code(lang));
                @for s in &shown {
                    section.card aria-labelledby={ "p-" (s.purpose.key) } {
                        h2 id={ "p-" (s.purpose.key) } { (page::in_lang(&s.purpose.names, lang)) }
                        @let desc = page::in_lang(&s.purpose.descriptions, lang);
                        @if !desc.is_empty() { p { (desc) } }
                        @if s.notice.is_none() {
                            p.muted { (tr(lang, "ยังไม่มีประกาศความเป็นส่วนตัวสำหรับรายการนี้ จึงยังให้ความยินยอมไม่ได้", "There is no notice for this yet, so it cannot be agreed to.")) }
                        }
                        @for r in &s.rows {
                            @let f = field(&s.purpose.key, r.channel);
                            @let on = r.record.as_ref().is_some_and(|x| x.state_at(now) == ConsentState::Granted);
                            @let renew = on && s.outdated(r);
                            div.field {
                                input type="hidden" name="shown" value=(f);
                                label.switch {
                                    input type="checkbox" role="switch" name="on" value=(f) checked[on] disabled[s.notice.is_none() && !on];
                                    (channel_name(r.channel, lang))
                                }
                                div { (state_text(r.record.as_ref(), now, lang))
                                    @if renew { " " span.bad { (tr(lang, "ประกาศมีการเปลี่ยนแปลง กรุณายืนยันอีกครั้ง", "The notice has changed: please confirm again")) } }
                                }
                            }
                        }
                    }
                }
                @if shown.is_empty() {
                    p.muted { (tr(lang, "ไม่มีรายการที่ต้องขอความยินยอม", "Nothing here needs your consent.")) }
                } @else {
                    button type="submit" { (tr(lang, "บันทึกการเลือก", "Save my choices")) }
                }
            }
            h2 { (tr(lang, "หลักฐานการให้ความยินยอม", "Proof of your consents")) }
            p { a href={ (base) "/receipts" } download="receipts.json" { (tr(lang, "ดาวน์โหลดใบรับรองการให้ความยินยอม (JSON ที่ลงนามแล้ว)", "Download your consent receipts (signed JSON)")) } }
            h2 id="rights" { (tr(lang, "ใช้สิทธิของคุณ", "Use your rights")) }
            form method="post" action={ (base) "/requests" } aria-labelledby="rights" {
                input type="hidden" name="lang" value=(code(lang));
                div.field {
                    label for="kind" { (tr(lang, "สิ่งที่คุณต้องการ", "What you would like")) }
                    select id="kind" name="kind" {
                        @for k in REQUEST_KINDS { option value=(k.as_str()) { (kind_name(k, lang)) } }
                    }
                }
                p.muted { (tr(lang, "เราจะตอบภายใน 30 วัน และอาจขอยืนยันตัวตนก่อน", "We answer within 30 days and may first check that it is you.")) }
                button.secondary type="submit" { (tr(lang, "ส่งคำขอ", "Send the request")) }
            }
            p { a href={ "/t/" (tenant.id) "?lang=" (code(lang)) } { (tr(lang, "เราประมวลผลข้อมูลของคุณอย่างไร", "How we process your data")) } }
            @if let Some(url) = &tenant.policy_url {
                p { a href=(url) { (tr(lang, "นโยบายความเป็นส่วนตัว", "Privacy policy")) } }
            }
        }
    };
    page::respond(
        StatusCode::OK,
        page::layout(
            lang,
            tr(lang, "การตั้งค่าความเป็นส่วนตัว", "Privacy choices"),
            top,
            body,
        ),
    )
}

fn form_lang(form: &[(String, String)]) -> &str {
    form.iter()
        .find(|(k, _)| k == "lang")
        .map_or("", |(_, v)| v.as_str())
}

/// `POST /p/{token}`: apply the switches. A switch turned on grants (under
/// the latest notice asking for the purpose), one turned off withdraws a
/// consent in force; untouched ones record nothing.
pub async fn save(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Result<axum::Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let v = match visitor(&app, &token).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(axum::Form(form)) = form else {
        return Problem::bad_request("the form could not be read").into_response();
    };
    let lang = form_lang(&form).to_string();
    let shown_fields: BTreeSet<&str> = form
        .iter()
        .filter(|(k, _)| k == "shown")
        .map(|(_, v)| v.as_str())
        .collect();
    let on: BTreeSet<&str> = form
        .iter()
        .filter(|(k, _)| k == "on")
        .map(|(_, v)| v.as_str())
        .collect();
    let found = match shown(&app, &v).await {
        Ok(found) => found,
        Err(e) => return Problem::from(e).into_response(),
    };
    let Some((_, shown)) = found else {
        return bad_link(BadLink::Invalid);
    };
    let now = time::now();
    // Actions per notice: one consent request (and one receipt) each.
    let mut by_notice: BTreeMap<Option<(String, u32)>, Vec<ActionRequest>> = BTreeMap::new();
    for s in &shown {
        for r in &s.rows {
            let f = field(&s.purpose.key, r.channel);
            if !shown_fields.contains(f.as_str()) {
                continue;
            }
            let granted = r
                .record
                .as_ref()
                .is_some_and(|x| x.state_at(now) == ConsentState::Granted);
            let outdated = granted && s.outdated(r);
            let wants = on.contains(f.as_str());
            let action = match (wants, granted) {
                (true, false) => Action::Grant,
                (true, true) if outdated => Action::Grant,
                (false, true) => Action::Withdraw,
                _ => continue,
            };
            if action == Action::Grant && s.notice.is_none() {
                continue;
            }
            let notice = s.notice.as_ref().map(|(k, ver, _)| (k.clone(), *ver));
            by_notice.entry(notice).or_default().push(ActionRequest {
                purpose: s.purpose.key.clone(),
                channel: r.channel,
                action,
            });
        }
    }
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(500).collect::<String>());
    let mut confirm = false;
    for (notice, actions) in by_notice {
        let req = ConsentRequest {
            subject: v.id.clone(),
            notice: notice.map(|(key, version)| NoticeSelector { key, version }),
            source: "preference_center".into(),
            evidence: Some(serde_json::json!({
                "ip": ip,
                "user_agent": user_agent,
                "locale": lang,
                "form": "preference_center",
            })),
            occurred_at: None,
            actions,
        };
        let gone = || Problem::not_found("the tenant no longer exists");
        match crate::optin::submit(&app, &v.tenant, "preference_link", req, None, gone).await {
            Ok(crate::optin::Submitted::Held(_)) => confirm = true,
            Ok(crate::optin::Submitted::Written(_)) => {}
            Err(p) => return p.into_response(),
        }
    }
    let lang = if lang == "th" || lang == "en" {
        format!("&lang={lang}")
    } else {
        String::new()
    };
    let saved = if confirm { "confirm" } else { "1" };
    Redirect::to(&format!("/p/{token}?saved={saved}{lang}")).into_response()
}

/// `GET /p/{token}/receipts`: every receipt the subject was given (JWS,
/// verifiable with `/.well-known/jwks.json`).
pub async fn receipts(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    let v = match visitor(&app, &token).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match app.store.receipts(&v.tenant, &v.uid).await {
        Ok(rs) => {
            let body = serde_json::json!({
                "subject": v.id,
                "jwks": "/.well-known/jwks.json",
                "receipts": rs.iter().map(|r| serde_json::json!({
                    "id": r.id, "jws": r.jws, "issued_at": time::rfc3339(r.created_at),
                })).collect::<Vec<_>>(),
            });
            let mut res = (
                [(
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"receipts.json\"",
                )],
                axum::Json(body),
            )
                .into_response();
            page::secure(res.headers_mut());
            res
        }
        Err(e) => Problem::from(e).into_response(),
    }
}

/// `POST /p/{token}/requests`: file a rights request (via
/// `preference_center`); staff verify and carry it out.
pub async fn request(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    form: Result<axum::Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let v = match visitor(&app, &token).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(axum::Form(form)) = form else {
        return Problem::bad_request("the form could not be read").into_response();
    };
    let kind = form
        .iter()
        .find(|(k, _)| k == "kind")
        .and_then(|(_, k)| Kind::parse(k))
        .filter(|k| REQUEST_KINDS.contains(k));
    let Some(kind) = kind else {
        return Problem::validation("kind", "choose what you would like").into_response();
    };
    let lang = form_lang(&form).to_string();
    let r = crate::rights::NewRequest {
        subject: v.id.clone(),
        kind,
        purposes: vec![],
        corrections: None,
        via: "preference_center".into(),
        received_at: None,
        actor: "preference_link".into(),
    };
    match crate::rights::receive(&app, &v.tenant, r).await {
        Ok(row) => {
            let lang = if lang == "th" || lang == "en" {
                format!("&lang={lang}")
            } else {
                String::new()
            };
            Redirect::to(&format!("/p/{token}?request={}{lang}#rights", row.id)).into_response()
        }
        Err(p) if p.status == StatusCode::CONFLICT => page::message(
            StatusCode::CONFLICT,
            "คุณมีคำขอแบบเดียวกันที่กำลังดำเนินการอยู่แล้ว",
            "You already have the same request open; we are working on it.",
        ),
        Err(p) => p.into_response(),
    }
}

/// Routes of the preference center.
pub fn routes() -> axum::Router<Arc<App>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/p/{token}", get(show).post(save))
        .route("/p/{token}/receipts", get(receipts))
        .route("/p/{token}/requests", post(request))
}
