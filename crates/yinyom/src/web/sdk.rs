//! The website banner: `/sdk/yinyom.js` and the two public calls it makes.
//!
//! The banner runs on the controller's own site, so these calls carry no
//! API key: the tenant is named by its public **site key**, and what a
//! visitor can do is narrow — record grant/deny/withdraw for the banner's
//! own purposes, under an anonymous id the banner made, with the notice the
//! banner shows. The server adds IP and user agent to the evidence.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use yinyom_core::consent::Action;
use yinyom_core::purpose::{Lang, Purpose};
use yinyom_core::time;

use crate::api::extract::Query;
use crate::api::problem::{Problem, ProblemBody, parse_json};
use crate::app::App;
use crate::record::{self, ActionRequest, ConsentRequest, NoticeSelector, Origin};
use crate::store::ItemOutcome;

/// The SDK, as written: plain JS, no build step.
const SDK_JS: &str = include_str!("../../web/sdk/yinyom.js");

/// Largest body `POST /sdk/v1/consents` accepts.
pub const CONSENT_BODY_LIMIT: usize = 16 * 1024;

/// A new public site key: `site_` and 24 random alphanumerics.
pub fn new_site_key() -> String {
    let mut rng = rand::thread_rng();
    let tail: String = (0..24)
        .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
        .collect();
    format!("site_{tail}")
}

/// The script to serve. Debug builds read the source file on every request
/// (edit, reload); release builds serve the copy compiled in.
fn sdk_source() -> std::borrow::Cow<'static, str> {
    #[cfg(debug_assertions)]
    if let Ok(s) =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/web/sdk/yinyom.js"))
    {
        return s.into();
    }
    SDK_JS.into()
}

pub(crate) fn gzip(s: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(s.as_bytes());
    e.finish().unwrap_or_default()
}

/// (source, gzipped, ETag).
pub(crate) type Served = Arc<(String, Vec<u8>, String)>;

/// The script as served, made once per distinct source.
fn sdk_bytes() -> Served {
    static CACHE: std::sync::Mutex<Option<Served>> = std::sync::Mutex::new(None);
    let src = sdk_source();
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(hit) = c.as_ref().filter(|h| h.0 == *src) {
        return hit.clone();
    }
    use sha2::Digest;
    let h = sha2::Sha256::digest(src.as_bytes());
    let made = Arc::new((
        src.to_string(),
        gzip(&src),
        format!("\"{}\"", hex::encode(&h[..12])),
    ));
    *c = Some(made.clone());
    made
}

/// `GET /sdk/yinyom.js`: the banner script, gzipped when the browser takes it.
pub async fn script(headers: HeaderMap) -> Response {
    serve_js(&headers, &sdk_bytes())
}

/// A script with its ETag, gzipped when the browser takes it.
pub(crate) fn serve_js(headers: &HeaderMap, sdk: &Served) -> Response {
    let etag = HeaderValue::from_str(&sdk.2).unwrap_or(HeaderValue::from_static("\"sdk\""));
    let cache = (
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == sdk.2))
    {
        return (StatusCode::NOT_MODIFIED, [cache, (header::ETAG, etag)]).into_response();
    }
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let common = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/javascript; charset=utf-8"),
        ),
        cache,
        (header::VARY, HeaderValue::from_static("Accept-Encoding")),
        (
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        ),
        (header::ETAG, etag),
    ];
    if gzip {
        (
            common,
            [(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"))],
            sdk.1.clone(),
        )
            .into_response()
    } else {
        (common, sdk.0.clone()).into_response()
    }
}

/// CORS for the banner's calls: the site the banner runs on is another
/// origin. The origin is echoed (never `*` with a body that names a
/// tenant) when the tenant allows it.
pub(crate) fn cors(res: &mut Response, origin: Option<&HeaderValue>) {
    let h = res.headers_mut();
    if let Some(o) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
    }
    h.insert(header::VARY, HeaderValue::from_static("Origin, Sec-GPC"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
}

/// Preflight for `/sdk/v1/*`.
pub async fn preflight(headers: HeaderMap) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    cors(&mut res, headers.get(header::ORIGIN));
    res
}

/// The tenant a site key names, and whether `origin` may use it.
pub(crate) fn site(app: &App, key: &str, origin: Option<&HeaderValue>) -> Result<String, Problem> {
    let unknown = || Problem::not_found("no banner has this site key").field("site_key");
    if !key.starts_with("site_") || key.len() > 64 {
        return Err(unknown());
    }
    let (tenant, origins) = app.view.tenant_by_site_key(key).ok_or_else(unknown)?;
    if !origins.is_empty() {
        let allowed = origin
            .and_then(|o| o.to_str().ok())
            .is_some_and(|o| origins.iter().any(|x| x == o));
        if !allowed {
            return Err(Problem::forbidden(
                "this banner may not be used from this site (origin not allowed)",
            ));
        }
    }
    Ok(tenant)
}

#[derive(Deserialize, IntoParams)]
pub struct ConfigQuery {
    /// The tenant's public site key.
    pub site_key: String,
}

/// A cookie category as the banner shows it.
#[derive(Serialize, ToSchema)]
pub struct BannerPurpose {
    pub key: String,
    #[schema(value_type = Object)]
    pub names: std::collections::BTreeMap<Lang, String>,
    #[schema(value_type = Object)]
    pub descriptions: std::collections::BTreeMap<Lang, String>,
    /// Not consent-based: always active, no toggle.
    pub required: bool,
    pub consent_mode: Vec<String>,
    pub sale_or_sharing: bool,
    pub cookies: Vec<String>,
}

/// What the banner needs to show itself.
#[derive(Serialize, ToSchema)]
pub struct BannerConfig {
    pub site_key: String,
    #[schema(value_type = Object)]
    pub tenant: serde_json::Value,
    #[schema(value_type = Object)]
    pub notice: serde_json::Value,
    pub purposes: Vec<BannerPurpose>,
    /// The request carried `Sec-GPC: 1`.
    pub gpc: bool,
    /// IAB TCF/GPP settings when the tenant enabled them (`web/tcf.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub tcf: Option<serde_json::Value>,
    /// The tenant's banner design (`/v1/tenant/banner-design`); absent:
    /// the standard look.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub design: Option<yinyom_core::banner::BannerDesign>,
}

fn banner_purposes(purposes: &std::collections::HashMap<String, Purpose>) -> Vec<BannerPurpose> {
    let mut out: Vec<BannerPurpose> = purposes
        .values()
        .filter_map(|p| {
            let b = p.banner.as_ref()?;
            Some(BannerPurpose {
                key: p.key.clone(),
                names: p.names.clone(),
                descriptions: p.descriptions.clone(),
                required: !p.requires_consent(),
                consent_mode: b.consent_mode.clone(),
                sale_or_sharing: b.sale_or_sharing,
                cookies: b.cookies.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| (!a.required, &a.key).cmp(&(!b.required, &b.key)));
    out
}

/// The banner's settings for a site key: the notice it shows (latest
/// version, and the latest material one: choices made before it are asked
/// again), its cookie categories, whether the browser sent Global Privacy
/// Control.
#[utoipa::path(get, path = "/sdk/v1/config", tag = "banner", params(ConfigQuery),
    responses((status = 200, body = BannerConfig), (status = 404, body = ProblemBody)))]
pub async fn config(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ConfigQuery>,
) -> Response {
    let origin = headers.get(header::ORIGIN).cloned();
    let mut res = match config_body(&app, &headers, &q.site_key).await {
        Ok(c) => (
            [(header::CACHE_CONTROL, "public, max-age=60")],
            axum::Json(c),
        )
            .into_response(),
        Err(p) => p.into_response(),
    };
    cors(&mut res, origin.as_ref());
    res
}

async fn config_body(app: &App, headers: &HeaderMap, key: &str) -> Result<BannerConfig, Problem> {
    let tenant = site(app, key, headers.get(header::ORIGIN))?;
    let (t, purposes, notice) = app
        .view
        .read(&tenant, |tv| {
            let notice = tv.tenant.banner.as_ref().and_then(|b| {
                let v = *tv.latest_notice.get(&b.notice)?;
                let renewal = tv.material.get(&b.notice).copied().unwrap_or(1);
                Some((b.notice.clone(), v, renewal))
            });
            (tv.tenant.clone(), banner_purposes(&tv.purposes), notice)
        })
        .ok_or_else(|| Problem::not_found("no banner has this site key"))?;
    let (nkey, version, renewal) = notice.ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "banner-not-configured",
            "the banner's notice has not been published",
        )
    })?;
    let texts = app.web.notice_texts(app, &tenant, &nkey, version).await?;
    Ok(BannerConfig {
        site_key: key.to_string(),
        tenant: json!({
            "name": t.name,
            "policy_url": t.policy_url,
            "default_lang": t.default_lang,
        }),
        notice: json!({
            "key": nkey,
            "version": version,
            "renewal_version": renewal,
            "texts": texts,
        }),
        purposes,
        tcf: t.banner.as_ref().and_then(super::tcf::banner_config),
        design: t.banner_design.clone(),
        gpc: gpc_signal(headers),
    })
}

/// Body of `POST /sdk/v1/consents`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BannerConsent {
    pub site_key: String,
    /// The visitor's anonymous id, a UUID the banner made (or analytics.js's).
    pub anonymous_id: String,
    pub notice: NoticeSelector,
    pub actions: Vec<BannerAction>,
    #[serde(default)]
    pub evidence: BannerEvidence,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BannerAction {
    pub purpose: String,
    /// `grant`, `deny` or `withdraw`.
    pub action: Action,
}

/// What the banner saw; the server adds IP and user agent.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BannerEvidence {
    #[serde(default)]
    pub page_url: Option<String>,
    /// The control the visitor used: `accept_all`, `reject_all`,
    /// `save_preferences`, `withdraw`, or `gpc` (Global Privacy Control).
    #[serde(default)]
    pub ui_element: Option<String>,
    #[serde(default)]
    pub locale: Option<String>,
    /// The browser sends Global Privacy Control
    /// (`navigator.globalPrivacyControl`); the header `Sec-GPC: 1` counts
    /// the same. With GPC, grants of sale-or-sharing purposes are recorded
    /// as denials (listed in the answer's `gpc_denied`).
    #[serde(default)]
    pub gpc: bool,
    /// The IAB TCF TC string the banner wrote (`euconsent-v2`).
    #[serde(default)]
    pub tc_string: Option<String>,
    /// The GPP string the banner wrote.
    #[serde(default)]
    pub gpp_string: Option<String>,
}

const UI_ELEMENTS: [&str; 5] = [
    "accept_all",
    "reject_all",
    "save_preferences",
    "withdraw",
    "gpc",
];

/// The client's address as the connection saw it.
pub struct ClientIp(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string()),
        ))
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
}

/// Record the visitor's choice in the ledger (source `web`), with the
/// page, the control used, locale, GPC, IP and user agent as evidence.
#[utoipa::path(post, path = "/sdk/v1/consents", tag = "banner", request_body = BannerConsent,
    responses((status = 201, body = Object), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn record(
    State(app): State<Arc<App>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let origin = headers.get(header::ORIGIN).cloned();
    let mut res = match record_body(&app, ip, &headers, body).await {
        Ok(v) => (StatusCode::CREATED, axum::Json(v)).into_response(),
        Err(p) => p.into_response(),
    };
    cors(&mut res, origin.as_ref());
    res
}

async fn record_body(
    app: &App,
    ip: Option<String>,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<serde_json::Value, Problem> {
    let body = body?;
    if body.len() > CONSENT_BODY_LIMIT {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("at most {CONSENT_BODY_LIMIT} bytes"),
        ));
    }
    let c: BannerConsent = parse_json(&body)?;
    let tenant = site(app, &c.site_key, headers.get(header::ORIGIN))?;
    super::tcf::check_list_version(app, &tenant, c.evidence.tc_string.as_deref()).await?;
    if !is_uuid(&c.anonymous_id) {
        return Err(Problem::validation(
            "anonymous_id",
            "must be the UUID the banner made",
        ));
    }
    let e = &c.evidence;
    if let Some(u) = &e.page_url
        && (u.len() > 2000 || !(u.starts_with("https://") || u.starts_with("http://")))
    {
        return Err(Problem::validation(
            "evidence.page_url",
            "must be an http(s) URL of at most 2000 bytes",
        ));
    }
    if let Some(u) = &e.ui_element
        && !UI_ELEMENTS.contains(&u.as_str())
    {
        return Err(Problem::validation(
            "evidence.ui_element",
            format!("must be one of {}", UI_ELEMENTS.join(", ")),
        ));
    }
    if let Some(l) = &e.locale
        && (l.is_empty()
            || l.len() > 35
            || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return Err(Problem::validation(
            "evidence.locale",
            "must be a language tag (th-TH)",
        ));
    }
    // A known person's consent is theirs to give through the preference
    // center, not through an anonymous banner call.
    if app
        .store
        .subject(&tenant, &c.anonymous_id)
        .await?
        .is_some_and(|s| s.profile.is_some())
    {
        return Err(Problem::forbidden(
            "this id belongs to a known subject; use the preference center",
        ));
    }
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(500).collect::<String>());
    let gpc = e.gpc || gpc_signal(headers);
    let site_key = c.site_key.clone();
    let req = ConsentRequest {
        subject: c.anonymous_id.clone(),
        notice: Some(c.notice),
        source: "web".into(),
        evidence: Some(json!({
            "ip": ip,
            "user_agent": user_agent,
            "locale": e.locale,
            "page_url": e.page_url,
            "ui_element": e.ui_element,
            "gpc": gpc,
            "banner": site_key,
        }))
        .map(|mut v| {
            // IAB TCF/GPP strings, when the banner wrote them.
            for (k, x) in [("tc_string", &e.tc_string), ("gpp_string", &e.gpp_string)] {
                if let Some(x) = x {
                    v[k] = json!(x);
                }
            }
            v
        }),
        occurred_at: None,
        actions: c
            .actions
            .iter()
            .map(|a| ActionRequest {
                purpose: a.purpose.clone(),
                channel: None,
                action: a.action,
            })
            .collect(),
    };
    let (item, gpc_denied) = app
        .view
        .read(&tenant, |tv| {
            let Some(banner) = tv.tenant.banner.as_ref() else {
                return Err(Problem::not_found("no banner has this site key"));
            };
            if req.notice.as_ref().is_some_and(|n| n.key != banner.notice) {
                return Err(Problem::validation(
                    "notice.key",
                    format!("the banner shows notice {:?}", banner.notice),
                ));
            }
            let actions: Vec<_> = c
                .actions
                .iter()
                .map(|a| (a.purpose.clone(), a.action))
                .collect();
            super::tcf::check_submission(
                banner,
                &actions,
                e.tc_string.as_deref(),
                e.gpp_string.as_deref(),
                e.ui_element.as_deref(),
            )?;
            for (i, a) in c.actions.iter().enumerate() {
                let field = || format!("actions/{i}");
                if a.action == Action::Expire {
                    return Err(Problem::validation(
                        format!("{}/action", field()),
                        "must be grant, deny or withdraw",
                    ));
                }
                match tv.purposes.get(&a.purpose) {
                    Some(p) if p.banner.is_some() && p.requires_consent() => {}
                    _ => {
                        return Err(Problem::validation(
                            format!("{}/purpose", field()),
                            format!("{:?} is not a consent category of this banner", a.purpose),
                        ));
                    }
                }
            }
            // Global Privacy Control is an opt-out of sale and sharing: a
            // submission that carries it never grants such a purpose, whatever
            // the script sent; it is recorded as denied, with the evidence
            // saying GPC decided it.
            let mut req = req;
            let mut gpc_denied = Vec::new();
            if gpc {
                for a in &mut req.actions {
                    let sale = tv
                        .purposes
                        .get(&a.purpose)
                        .and_then(|p| p.banner.as_ref())
                        .is_some_and(|b| b.sale_or_sharing);
                    if sale && a.action == Action::Grant {
                        a.action = Action::Deny;
                        gpc_denied.push(a.purpose.clone());
                    }
                }
                if !gpc_denied.is_empty()
                    && let Some(ev) = req.evidence.as_mut()
                {
                    ev["gpc_denied"] = json!(gpc_denied);
                }
            }
            let mut item = record::prepare(
                tv,
                req,
                &format!("banner:{site_key}"),
                Origin::Api,
                None,
                time::now(),
            )?;
            item.receipt = app.signer.receipt(tv, &item);
            Ok((item, gpc_denied))
        })
        .ok_or_else(|| Problem::not_found("no banner has this site key"))??;
    let recorded = item.actions.len();
    let response = match app.writer.write(item).await? {
        ItemOutcome::Written { response, .. } | ItemOutcome::Replayed { response } => response,
        ItemOutcome::KeyReused => json!({}),
    };
    Ok(json!({
        "recorded": recorded,
        "receipt": response.get("receipt").and_then(|r| r.get("jws")).cloned(),
        "gpc_denied": gpc_denied,
    }))
}

/// The request carries Global Privacy Control (`Sec-GPC: 1`).
fn gpc_signal(headers: &HeaderMap) -> bool {
    headers
        .get("sec-gpc")
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"1")
}

/// Routes of the banner.
pub fn routes() -> axum::Router<Arc<App>> {
    use axum::routing::{MethodFilter, get, on};
    axum::Router::new()
        .route("/sdk/yinyom.js", get(script))
        .route(
            "/sdk/v1/config",
            get(config).on(MethodFilter::OPTIONS, preflight),
        )
        .route(
            "/sdk/v1/consents",
            axum::routing::post(record).on(MethodFilter::OPTIONS, preflight),
        )
        .route("/sdk/v1/{*rest}", on(MethodFilter::OPTIONS, preflight))
}
