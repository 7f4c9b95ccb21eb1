//! The admin console's door: staff log in with email and password
//! (argon2id), get a session cookie (`HttpOnly`, `SameSite=Strict`, only a
//! hash of it stored), and every form they post carries the session's
//! CSRF token. A staff member acts with their role exactly as an API key
//! of that role would: the console calls the API's own handlers.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use rand::RngCore;
use yinyom_core::purpose::Lang;
use yinyom_core::time::{self, Micros};

use super::page::{self, code, tr};
use crate::api::auth::{Principal, hash_key};
use crate::api::problem::Problem;
use crate::app::App;
use crate::model::{StaffMember, StaffSession};

pub const SESSION_COOKIE: &str = "yy_session";
const LOGIN_COOKIE: &str = "yy_login";
const LANG_COOKIE: &str = "yy_lang";
/// A session lasts a working day.
const SESSION_HOURS: i64 = 12;

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Hash a password for storage (argon2id, random salt, PHC string).
pub fn hash_password(password: &str) -> Result<String, Problem> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Problem::bad_request(format!("the password could not be hashed: {e}")))
}

fn password_ok(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Equal-time comparison of two tokens.
pub fn same(a: &str, b: &str) -> bool {
    use sha2::Digest;
    // Compare digests, so neither length nor content leaks through timing.
    let (x, y) = (
        sha2::Sha256::digest(a.as_bytes()),
        sha2::Sha256::digest(b.as_bytes()),
    );
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn secure_flag(app: &App) -> &'static str {
    if app.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

fn set_cookie(res: &mut Response, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// A logged-in staff member.
pub struct Staff {
    pub who: Principal,
    pub member: StaffMember,
    pub csrf: String,
    pub lang: Lang,
    session: String,
}

/// The `lang=` parameter of a query string.
fn lang_param(query: Option<&str>) -> Option<&str> {
    query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("lang="))
}

fn lang_of(parts: &Parts, default: Lang) -> Lang {
    let q = lang_param(parts.uri.query()).or_else(|| cookie(&parts.headers, LANG_COOKIE));
    page::choose_lang(q, &parts.headers, default)
}

impl FromRequestParts<Arc<App>> for Staff {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let to_login = || Redirect::to("/admin/login").into_response();
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or_else(to_login)?;
        if token.len() != 64 {
            return Err(to_login());
        }
        let hash = hash_key(token);
        let (session, member) = app
            .store
            .session(&hash, time::now())
            .await
            .map_err(|e| Problem::from(e).into_response())?
            .ok_or_else(to_login)?;
        let default = app
            .view
            .read(&member.tenant, |tv| tv.tenant.default_lang)
            .unwrap_or(Lang::Th);
        Ok(Staff {
            who: Principal {
                tenant: member.tenant.as_str().into(),
                role: member.role,
                key_id: member.id.as_str().into(),
            },
            lang: lang_of(parts, default),
            member,
            csrf: session.csrf,
            session: hash,
        })
    }
}

/// The fields of a posted form.
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field, trimmed; empty is none.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn checked(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// The form of a request whose CSRF token matches the session's, or a 403
/// page (a page is what the browser shows: its size does not matter here).
#[allow(clippy::result_large_err)]
pub fn checked_form(
    staff: &Staff,
    form: Result<axum::Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Result<Fields, Response> {
    let Ok(axum::Form(fields)) = form else {
        return Err(page::message(
            StatusCode::BAD_REQUEST,
            "อ่านแบบฟอร์มไม่ได้",
            "The form could not be read.",
        ));
    };
    let f = Fields(fields);
    match f.get("csrf") {
        Some(t) if same(t, &staff.csrf) => Ok(f),
        _ => Err(csrf_failed()),
    }
}

fn csrf_failed() -> Response {
    page::message(
        StatusCode::FORBIDDEN,
        "แบบฟอร์มหมดอายุหรือไม่ได้มาจากหน้านี้ กรุณาโหลดหน้าใหม่แล้วลองอีกครั้ง",
        "This form expired or did not come from this console (CSRF check failed). Reload the page and try again.",
    )
}

/// The hidden field every console form carries.
pub fn csrf_field(staff: &Staff) -> Markup {
    html! { input type="hidden" name="csrf" value=(staff.csrf); }
}

/// Console sections: (path, Thai, English, who sees it).
const NAV: &[(&str, &str, &str, bool)] = &[
    ("/admin", "ภาพรวม", "Dashboard", false),
    ("/admin/purposes", "วัตถุประสงค์", "Purposes", false),
    ("/admin/notices", "ประกาศ", "Notices", false),
    ("/admin/subjects", "เจ้าของข้อมูล", "Subjects", false),
    ("/admin/requests", "คำขอใช้สิทธิ", "Requests", false),
    ("/admin/breaches", "เหตุละเมิด", "Breaches", false),
    ("/admin/systems", "ระบบที่เชื่อมต่อ", "Systems", false),
    ("/admin/banner", "หน้าตาแบนเนอร์", "Banner design", true),
    ("/admin/webhooks", "Webhooks", "Webhooks", true),
    ("/admin/audit", "บันทึกการเข้าถึง", "Audit log", true),
    ("/admin/ledger", "ตรวจสอบบัญชี", "Ledger", false),
];

/// A console page: navigation, language switch, logout.
pub fn shell(staff: &Staff, path: &str, title: &str, body: Markup) -> Response {
    let lang = staff.lang;
    let manager = crate::api::auth::MANAGERS.contains(&staff.member.role);
    let other = match lang {
        Lang::Th => (Lang::En, "English"),
        Lang::En => (Lang::Th, "ภาษาไทย"),
    };
    let top = html! {
        header.top {
            nav aria-label=(tr(lang, "เมนูหลัก", "Main")) {
                strong { "Yinyom" } " "
                @for (href, th, en, managers) in NAV {
                    @if !*managers || manager {
                        a href=(href) aria-current=[(*href == path).then_some("page")] { (tr(lang, th, en)) }
                    }
                }
            }
            div {
                a.lang href={ (path) "?lang=" (code(other.0)) } lang=(code(other.0)) { (other.1) } " · "
                span { (staff.member.email) " (" (staff.member.role.as_str()) ")" } " "
                form method="post" action="/admin/logout" style="display:inline" {
                    (csrf_field(staff))
                    button.secondary type="submit" { (tr(lang, "ออกจากระบบ", "Log out")) }
                }
            }
        }
    };
    page::respond(
        StatusCode::OK,
        page::layout(lang, title, top, html! { main { (body) } }),
    )
}

/// A problem shown as a console page (the status stays a 4xx).
pub fn failed(staff: &Staff, path: &str, p: Problem) -> Response {
    let lang = staff.lang;
    let status = p.status;
    let mut res = shell(
        staff,
        path,
        tr(lang, "ทำรายการไม่สำเร็จ", "Not done"),
        html! {
            h1 { (tr(lang, "ทำรายการไม่สำเร็จ", "That did not work")) }
            p.error role="alert" { (p.detail) @if let Some(f) = &p.field { " (" code { (f) } ")" } }
            p { a href=(path) { (tr(lang, "กลับ", "Back")) } }
        },
    );
    *res.status_mut() = status;
    res
}

fn login_page(app: &App, headers: &HeaderMap, error: bool, status: StatusCode) -> Response {
    let lang = page::choose_lang(cookie(headers, LANG_COOKIE), headers, Lang::Th);
    let token = random_token();
    let body = html! {
        main.narrow {
            h1 { (tr(lang, "เข้าสู่ระบบ Yinyom", "Log in to Yinyom")) }
            @if error {
                p.error role="alert" { (tr(lang, "อีเมลหรือรหัสผ่านไม่ถูกต้อง", "Wrong email or password.")) }
            }
            form method="post" action="/admin/login" {
                input type="hidden" name="csrf" value=(token);
                div.field {
                    label for="email" { (tr(lang, "อีเมล", "Email")) }
                    input type="email" id="email" name="email" autocomplete="username" required;
                }
                div.field {
                    label for="password" { (tr(lang, "รหัสผ่าน", "Password")) }
                    input type="password" id="password" name="password" autocomplete="current-password" required;
                }
                button type="submit" { (tr(lang, "เข้าสู่ระบบ", "Log in")) }
            }
            p.lang { a href="/admin/login?lang=th" lang="th" { "ภาษาไทย" } " · " a href="/admin/login?lang=en" lang="en" { "English" } }
        }
    };
    let mut res = page::respond(
        status,
        page::layout(lang, tr(lang, "เข้าสู่ระบบ", "Log in"), html! {}, body),
    );
    // Login CSRF: the form's token must match this cookie (double submit).
    set_cookie(
        &mut res,
        format!(
            "{LOGIN_COOKIE}={token}; Path=/admin/login; HttpOnly; SameSite=Strict; Max-Age=3600{}",
            secure_flag(app)
        ),
    );
    res
}

/// `GET /admin/login`.
pub async fn login_form(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    login_page(&app, &headers, false, StatusCode::OK)
}

/// A hash to check passwords against when the email is unknown, so both
/// cases take the same time.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password").unwrap_or_default())
}

/// `POST /admin/login`.
pub async fn login(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    form: Result<axum::Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(axum::Form(fields)) = form else {
        return login_page(&app, &headers, true, StatusCode::BAD_REQUEST);
    };
    let f = Fields(fields);
    let csrf_ok = match (f.get("csrf"), cookie(&headers, LOGIN_COOKIE)) {
        (Some(a), Some(b)) => same(a, b),
        _ => false,
    };
    if !csrf_ok {
        return csrf_failed();
    }
    let email = f.get("email").unwrap_or("").trim().to_lowercase();
    let password = f.get("password").unwrap_or("");
    if email.len() > 254 || password.len() > 1024 {
        return login_page(&app, &headers, true, StatusCode::UNAUTHORIZED);
    }
    if !app.web.login_allowed(&email) {
        return page::message(
            StatusCode::TOO_MANY_REQUESTS,
            "ลองเข้าสู่ระบบผิดหลายครั้งเกินไป กรุณารอสักครู่",
            "Too many failed logins: wait a few minutes and try again.",
        );
    }
    let member = match app.store.staff_by_email(&email).await {
        Ok(m) => m.filter(|m| m.disabled_at.is_none()),
        Err(e) => return Problem::from(e).into_response(),
    };
    let hash = member
        .as_ref()
        .map_or(decoy_hash(), |m| m.password_hash.as_str());
    let ok = password_ok(hash, password) && member.is_some();
    let Some(member) = member.filter(|_| ok) else {
        app.web.login_failed(&email);
        tracing::info!("console login refused");
        return login_page(&app, &headers, true, StatusCode::UNAUTHORIZED);
    };
    app.web.login_succeeded(&email);
    let token = random_token();
    let now = time::now();
    let session = StaffSession {
        hash: hash_key(&token),
        staff_id: member.id.clone(),
        csrf: random_token(),
        created_at: now,
        expires_at: now + SESSION_HOURS * 3_600_000_000,
    };
    if let Err(e) = app.store.insert_session(&session).await {
        return Problem::from(e).into_response();
    }
    let mut res = Redirect::to("/admin").into_response();
    set_cookie(
        &mut res,
        format!(
            "{SESSION_COOKIE}={token}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{}",
            SESSION_HOURS * 3600,
            secure_flag(&app)
        ),
    );
    set_cookie(
        &mut res,
        format!("{LOGIN_COOKIE}=; Path=/admin/login; Max-Age=0"),
    );
    res
}

/// `POST /admin/logout`.
pub async fn logout(
    State(app): State<Arc<App>>,
    staff: Staff,
    form: Result<axum::Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    if let Err(r) = checked_form(&staff, form) {
        return r;
    }
    if let Err(e) = app.store.delete_session(&staff.session).await {
        return Problem::from(e).into_response();
    }
    let mut res = Redirect::to("/admin/login").into_response();
    set_cookie(
        &mut res,
        format!("{SESSION_COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    res
}

/// Remembers `?lang=` in a cookie for the console's later pages.
pub async fn remember_lang(req: Request, next: Next) -> Response {
    let lang = lang_param(req.uri().query())
        .filter(|l| *l == "th" || *l == "en")
        .map(str::to_string);
    let mut res = next.run(req).await;
    if let Some(l) = lang {
        set_cookie(
            &mut res,
            format!("{LANG_COOKIE}={l}; Path=/admin; SameSite=Lax; Max-Age=31536000"),
        );
    }
    res
}

/// Failed logins per email: after 5 within 15 minutes, wait.
#[derive(Default)]
pub struct LoginThrottle {
    failures: std::sync::Mutex<std::collections::HashMap<String, (u32, Micros)>>,
}

const LOGIN_WINDOW: Micros = 15 * 60 * 1_000_000;
const LOGIN_FAILURES: u32 = 5;

impl LoginThrottle {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (u32, Micros)>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn allowed(&self, email: &str) -> bool {
        let now = time::now();
        self.lock()
            .get(email)
            .is_none_or(|(n, since)| *n < LOGIN_FAILURES || now - since > LOGIN_WINDOW)
    }

    pub fn failed(&self, email: &str) {
        let now = time::now();
        let mut m = self.lock();
        if m.len() > 100_000 {
            m.retain(|_, (_, since)| now - *since <= LOGIN_WINDOW);
        }
        let e = m.entry(email.to_string()).or_insert((0, now));
        if now - e.1 > LOGIN_WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
    }

    pub fn succeeded(&self, email: &str) {
        self.lock().remove(email);
    }
}
