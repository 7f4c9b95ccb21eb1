//! The tracking collector's HTTP surface: the Segment HTTP tracking API
//! (`/v1/track`, `/v1/identify`, `/v1/page`, `/v1/screen`, `/v1/group`,
//! `/v1/alias`, `/v1/batch`, and the short paths the browser SDKs post to:
//! `/v1/t`, `/v1/i`, `/v1/p`, `/v1/s`, `/v1/g`, `/v1/a`, `/v1/b`), so
//! existing analytics SDKs can point at Yinyom, authenticated by a source's
//! write key; a Segment-compatible settings document
//! (`/v1/projects/{writeKey}/settings`) for analytics.js; and the sources
//! themselves (`/v1/sources`).
//!
//! The write key comes as HTTP Basic user name (the server-side SDKs and
//! analytics-next) or as `writeKey` in the body (analytics.js posts
//! `text/plain`: any content type is read as JSON).
//!
//! CORS: browsers post from the customer's site, so the collector answers
//! CORS for the origins the tenant lists for its banner
//! (`PATCH /v1/tenant {"banner": {"origins": [...]}}`), and only for them: a
//! tenant that lists none gets no CORS, and a request whose `Origin` is not
//! among a listing tenant's origins is refused (403).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use yinyom_core::contact::ContactKind;
use yinyom_core::subject;
use yinyom_core::time::{self, Micros};

use super::auth::{MANAGERS, Principal, STAFF, hash_key};
use super::extract::{Json, Path};
use super::problem::{Problem, ProblemBody};
use crate::app::App;
use crate::collector::{self, MAX_MESSAGES};
use crate::model::{Source, SourceCounts, TrackedEvent};
use crate::nats::Forward;
use crate::profiles::{self, ProfileError};

/// Segment's limits: 32 KB per message, 500 KB per batch.
pub const MESSAGE_LIMIT: usize = 32 * 1024;
pub const BATCH_LIMIT: usize = 500 * 1024;
const WRITE_KEY_PREFIX: &str = "yyw_";
const MAX_SKEW: Micros = 5 * 60 * 1_000_000;
const KINDS: [&str; 6] = ["track", "page", "screen", "identify", "group", "alias"];

/// What the collector did with a request's messages.
#[derive(Serialize, ToSchema)]
pub struct Collected {
    pub success: bool,
    /// Messages allowed by the source's purposes (stored if the source stores).
    pub accepted: u64,
    /// Messages whose subject has not allowed the purposes: dropped, never stored.
    pub dropped: u64,
}

/// One message, validated.
struct Message {
    kind: &'static str,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    previous_id: Option<String>,
    name: Option<String>,
    message_id: String,
    occurred_at: Micros,
    traits: Option<Map<String, Value>>,
    body: Value,
}

fn invalid(at: &str, field: &str, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "invalid-message", detail).field(format!("{at}{field}"))
}

/// An id field: Segment allows strings and numbers.
fn id_field(m: &Map<String, Value>, at: &str, field: &str) -> Result<Option<String>, Problem> {
    let v = match m.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(invalid(at, field, "must be a string or a number")),
    };
    subject::validate_id(&v).map_err(|e| invalid(at, field, e.reason))?;
    Ok(Some(v))
}

fn parse_message(
    v: Value,
    kind: Option<&'static str>,
    at: &str,
    now: Micros,
) -> Result<Message, Problem> {
    let Value::Object(mut m) = v else {
        return Err(invalid(at, "", "a message must be a JSON object"));
    };
    m.remove("writeKey");
    let kind = match kind {
        Some(k) => k,
        None => {
            let t = m.get("type").and_then(Value::as_str).unwrap_or_default();
            KINDS.into_iter().find(|k| *k == t).ok_or_else(|| {
                invalid(at, "type", format!("must be one of {}", KINDS.join(", ")))
            })?
        }
    };
    m.insert("type".into(), Value::String(kind.into()));
    let user_id = id_field(&m, at, "userId")?;
    let anonymous_id = id_field(&m, at, "anonymousId")?;
    let previous_id = id_field(&m, at, "previousId")?;
    if kind == "alias" {
        if user_id.is_none() || previous_id.is_none() {
            return Err(invalid(
                at,
                "previousId",
                "alias needs userId and previousId",
            ));
        }
    } else if user_id.is_none() && anonymous_id.is_none() {
        return Err(invalid(
            at,
            "userId",
            "a message needs a userId or an anonymousId",
        ));
    }
    let name_field = if kind == "track" { "event" } else { "name" };
    let name = match m.get(name_field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 200 => {
            Some(s.clone())
        }
        Some(_) => {
            return Err(invalid(
                at,
                name_field,
                "must be a string of 1-200 characters",
            ));
        }
    };
    if kind == "track" && name.is_none() {
        return Err(invalid(at, "event", "track needs the event's name"));
    }
    let message_id = match m.get("messageId") {
        None | Some(Value::Null) => uuid::Uuid::now_v7().to_string(),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 100 => s.clone(),
        Some(_) => return Err(invalid(at, "messageId", "must be a string of 1-100 bytes")),
    };
    let occurred_at = match m.get("timestamp").or_else(|| m.get("originalTimestamp")) {
        None | Some(Value::Null) => now,
        Some(Value::String(s)) => time::parse_rfc3339(s)
            .ok_or_else(|| invalid(at, "timestamp", "must be an ISO 8601 / RFC 3339 time"))?,
        Some(_) => {
            return Err(invalid(
                at,
                "timestamp",
                "must be an ISO 8601 / RFC 3339 time",
            ));
        }
    };
    if occurred_at > now + MAX_SKEW {
        return Err(invalid(at, "timestamp", "lies in the future"));
    }
    let traits = match m
        .get("traits")
        .or_else(|| m.get("context").and_then(|c| c.get("traits")))
    {
        None | Some(Value::Null) => None,
        Some(Value::Object(t)) => Some(t.clone()),
        Some(_) => return Err(invalid(at, "traits", "must be an object")),
    };
    for field in ["properties", "context", "integrations"] {
        if m.get(field).is_some_and(|v| !v.is_object() && !v.is_null()) {
            return Err(invalid(at, field, "must be an object"));
        }
    }
    Ok(Message {
        kind,
        user_id,
        anonymous_id,
        previous_id,
        name,
        message_id,
        occurred_at,
        traits,
        body: Value::Object(m),
    })
}

/// The write key: HTTP Basic user name, or `writeKey` in the body.
fn write_key(headers: &HeaderMap, body: &Value) -> Option<String> {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim())
        && let Ok(text) = String::from_utf8(decoded)
    {
        return Some(text.split(':').next().unwrap_or_default().to_string());
    }
    body.get("writeKey")
        .and_then(Value::as_str)
        .map(str::to_string)
}

async fn source_of(app: &App, headers: &HeaderMap, body: &Value) -> Result<Arc<Source>, Problem> {
    let key = write_key(headers, body).ok_or_else(|| {
        Problem::unauthorized("a write key is required (HTTP Basic user name, or writeKey)")
    })?;
    let source = app
        .collector
        .sources
        .get(app.store.as_ref(), &hash_key(&key))
        .await?
        .ok_or_else(|| Problem::unauthorized("unknown write key"))?;
    app.ensure_tenant(&source.tenant).await?;
    Ok(source)
}

/// Contact traits (`email`, `phone`) become contact points when valid;
/// the rest are attributes.
fn merge_traits(p: &mut profiles::Profile, traits: &Map<String, Value>) {
    for (k, v) in traits {
        let contact = match k.as_str() {
            "email" => Some(ContactKind::Email),
            "phone" => Some(ContactKind::Phone),
            _ => None,
        };
        match (contact, v.as_str()) {
            (Some(kind), Some(s)) => {
                if let Ok(n) = kind.normalize(s) {
                    p.contacts.insert(kind, n);
                }
            }
            _ => {
                p.attributes.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The request's `Origin` must be one the tenant lists, when it lists any
/// (server-side SDKs send none).
fn check_origin(headers: &HeaderMap, origins: &[String]) -> Result<(), Problem> {
    match headers.get(header::ORIGIN) {
        Some(o) if !origins.is_empty() && !origins.iter().any(|x| x.as_bytes() == o.as_bytes()) => {
            Err(Problem::forbidden(
                "this write key may not be used from this site (origin not allowed)",
            ))
        }
        _ => Ok(()),
    }
}

/// CORS headers of an actual (non-preflight) response: the origin is echoed
/// when the tenant lists it, never `*`.
fn allow_origin(res: &mut Response, origin: Option<&HeaderValue>, origins: &[String]) {
    let h = res.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(o) = origin
        && origins.iter().any(|x| x.as_bytes() == o.as_bytes())
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After"),
        );
    }
}

/// CORS preflight for the collector's paths and the settings document.
/// It names no tenant (browsers send no credentials with it), so it is
/// allowed for an origin some tenant lists; the actual request is then
/// held to its own tenant's list.
pub async fn preflight(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let origin = headers
        .get(header::ORIGIN)
        .filter(|o| o.to_str().is_ok_and(|o| app.view.origin_listed(o)));
    let Some(origin) = origin else {
        let mut res =
            Problem::forbidden("no tenant allows this origin (PATCH /v1/tenant banner.origins)")
                .into_response();
        res.headers_mut()
            .append(header::VARY, HeaderValue::from_static("Origin"));
        return res;
    };
    // The headers asked for (analytics.js: Authorization, Content-Type,
    // X-Retry-Count), when they are a plain list of header names.
    let asked = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| {
            v.len() <= 500
                && v.as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(b))
        })
        .cloned()
        .unwrap_or(HeaderValue::from_static("authorization, content-type"));
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static("Origin, Access-Control-Request-Headers"),
    );
    res
}

/// A collector call answered with CORS for its source's tenant.
async fn respond(
    app: &App,
    headers: &HeaderMap,
    body: &[u8],
    kind: Option<&'static str>,
) -> Response {
    let mut origins = Vec::new();
    let mut res = match collect(app, headers, body, kind, &mut origins).await {
        Ok(c) => c.into_response(),
        Err(p) => p.into_response(),
    };
    allow_origin(&mut res, headers.get(header::ORIGIN), &origins);
    res
}

/// `origins` is set to the tenant's allowed origins once the write key
/// names the tenant.
async fn collect(
    app: &App,
    headers: &HeaderMap,
    body: &[u8],
    kind: Option<&'static str>,
    origins: &mut Vec<String>,
) -> Result<axum::Json<Collected>, Problem> {
    let limit = if kind.is_some() {
        MESSAGE_LIMIT
    } else {
        BATCH_LIMIT
    };
    if body.len() > limit {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the body exceeds {} KB", limit / 1024),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("the body is not JSON: {e}")))?;
    let source = source_of(app, headers, &value).await?;
    *origins = app.view.tenant_origins(&source.tenant);
    check_origin(headers, origins)?;
    let now = time::now();
    let messages: Vec<Message> = match kind {
        Some(k) => vec![parse_message(value, Some(k), "", now)?],
        None => {
            let Value::Object(mut outer) = value else {
                return Err(Problem::bad_request(
                    "a batch is an object with a `batch` list",
                ));
            };
            let Some(Value::Array(list)) = outer.remove("batch") else {
                return Err(invalid(
                    "",
                    "batch",
                    "a batch is an object with a `batch` list",
                ));
            };
            if list.len() > MAX_MESSAGES {
                return Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too-large",
                    format!("a batch holds at most {MAX_MESSAGES} messages"),
                ));
            }
            let shared = outer.get("context").cloned();
            list.into_iter()
                .enumerate()
                .map(|(i, mut v)| {
                    if let (Some(ctx), Some(m)) = (&shared, v.as_object_mut()) {
                        m.entry("context").or_insert_with(|| ctx.clone());
                    }
                    let at = format!("batch/{i}/");
                    if serde_json::to_vec(&v).map_or(0, |b| b.len()) > MESSAGE_LIMIT {
                        return Err(invalid(&at, "", "a message exceeds 32 KB"));
                    }
                    parse_message(v, None, &at, now)
                })
                .collect::<Result<_, _>>()?
        }
    };
    let tenant: Arc<str> = source.tenant.as_str().into();
    let expires_at = collector::expiry(&app.view, &source, now);
    let mut events = Vec::new();
    let mut counts = SourceCounts {
        tenant: source.tenant.clone(),
        source: source.id.clone(),
        ..Default::default()
    };
    for m in messages {
        // Identity first: linking makes the anonymous visitor's consent
        // the person's before this message is judged.
        match (m.kind, &m.user_id, &m.anonymous_id, &m.previous_id) {
            ("alias", Some(u), _, Some(prev)) => collector::link(app, &source, u, prev).await?,
            (_, Some(u), Some(a), _) => collector::link(app, &source, u, a).await?,
            _ => {}
        }
        let subject = collector::resolve(
            app,
            &tenant,
            m.user_id.as_deref(),
            m.anonymous_id.as_deref(),
        )
        .await?;
        if m.kind == "alias" {
            counts.accepted += 1;
            app.metrics.collected(true, "linked", 1);
            continue;
        }
        if let Err(reason) = collector::gate(&app.view, &source, &subject, now) {
            counts.dropped += 1;
            app.metrics.collected(false, reason, 1);
            continue;
        }
        counts.accepted += 1;
        app.metrics.collected(true, "allowed", 1);
        if let (Some(traits), "identify") = (&m.traits, m.kind)
            && !traits.is_empty()
        {
            profiles::modify::<()>(app, &source.tenant, &subject, None, |p| {
                merge_traits(p, traits);
                Ok(())
            })
            .await
            .map_err(|e| match e {
                ProfileError::Store(e) => Problem::from(e),
                ProfileError::Refused(()) => Problem::bad_request("traits refused"),
            })?;
        }
        if source.store || source.forward {
            events.push(TrackedEvent {
                tenant: source.tenant.clone(),
                id: m.message_id,
                source: source.id.clone(),
                subject_id: subject,
                kind: m.kind,
                name: m.name,
                body: m.body.to_string(),
                occurred_at: m.occurred_at,
                received_at: now,
                expires_at,
            });
        }
    }
    let (accepted, dropped) = (counts.accepted, counts.dropped);
    let forwarded: Vec<Forward> = match (&app.collector.forwarder, source.forward) {
        (Some(_), true) => events
            .iter()
            .map(|e| {
                let mut body: Value = serde_json::from_str(&e.body).unwrap_or_default();
                body["yinyom"] = serde_json::json!({ "subject": e.subject_id, "source": e.source });
                Forward {
                    subject: format!("yinyom.{}.track.{}", e.tenant, e.source),
                    id: format!("trk_{}_{}", e.tenant, e.id),
                    payload: body.to_string(),
                }
            })
            .collect(),
        _ => Vec::new(),
    };
    if !source.store {
        events.clear();
    }
    app.collector.write(events, counts).await?;
    if let Some(f) = &app.collector.forwarder {
        f.send(forwarded, &app.metrics);
    }
    Ok(axum::Json(Collected {
        success: true,
        accepted,
        dropped,
    }))
}

macro_rules! segment_call {
    ($name:ident, $short:ident, $kind:literal, $path:literal, $short_path:literal, $doc:literal, $short_doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "collector", request_body = Object,
            responses((status = 200, body = Collected), (status = 400, body = ProblemBody), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 413, body = ProblemBody)),
            security(("write_key" = [])))]
        pub async fn $name(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
            respond(&app, &headers, &body, Some($kind)).await
        }

        #[doc = $short_doc]
        #[utoipa::path(post, path = $short_path, tag = "collector", request_body = Object,
            responses((status = 200, body = Collected), (status = 400, body = ProblemBody), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 413, body = ProblemBody)),
            security(("write_key" = [])))]
        pub async fn $short(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
            respond(&app, &headers, &body, Some($kind)).await
        }
    };
}

segment_call!(
    track,
    track_short,
    "track",
    "/v1/track",
    "/v1/t",
    "Record an action (Segment `track`); kept only if the subject allows the source's purposes.",
    "`/v1/track` under the short path analytics.js posts to."
);
segment_call!(
    identify,
    identify_short,
    "identify",
    "/v1/identify",
    "/v1/i",
    "Tie a user to their traits and link their anonymous id (Segment `identify`).",
    "`/v1/identify` under the short path analytics.js posts to."
);
segment_call!(
    page,
    page_short,
    "page",
    "/v1/page",
    "/v1/p",
    "Record a page view (Segment `page`).",
    "`/v1/page` under the short path analytics.js posts to."
);
segment_call!(
    screen,
    screen_short,
    "screen",
    "/v1/screen",
    "/v1/s",
    "Record an app screen view (Segment `screen`).",
    "`/v1/screen` under the short path analytics.js posts to."
);
segment_call!(
    group,
    group_short,
    "group",
    "/v1/group",
    "/v1/g",
    "Associate a user with a group (Segment `group`).",
    "`/v1/group` under the short path analytics.js posts to."
);
segment_call!(
    alias,
    alias_short,
    "alias",
    "/v1/alias",
    "/v1/a",
    "Link a previous id to a user id (Segment `alias`); consent given under the previous id follows the user.",
    "`/v1/alias` under the short path analytics.js posts to."
);

/// Several messages at once (Segment `batch`), at most 500 KB.
#[utoipa::path(post, path = "/v1/batch", tag = "collector", request_body = Object,
    responses((status = 200, body = Collected), (status = 400, body = ProblemBody), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 413, body = ProblemBody)),
    security(("write_key" = [])))]
pub async fn batch(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    respond(&app, &headers, &body, None).await
}

/// `/v1/batch` under the short path analytics.js's batching delivery posts to.
#[utoipa::path(post, path = "/v1/b", tag = "collector", request_body = Object,
    responses((status = 200, body = Collected), (status = 400, body = ProblemBody), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 413, body = ProblemBody)),
    security(("write_key" = [])))]
pub async fn batch_short(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    respond(&app, &headers, &body, None).await
}

/// Segment-compatible settings for analytics.js
/// (`AnalyticsBrowser.load({writeKey, cdnURL: "<this server>"})`): its
/// events go to this server's collector, and nothing is loaded from
/// Segment's CDN (no destinations, plugins or remote metrics). The write key
/// in the path is the one the browser holds anyway.
#[utoipa::path(get, path = "/v1/projects/{key}/settings", tag = "collector",
    params(("key" = String, Path, description = "A source's write key")),
    responses((status = 200, body = Object), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub async fn settings(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Response {
    let mut origins = Vec::new();
    let mut res = match settings_body(&app, &headers, &key, &mut origins).await {
        Ok(v) => (
            [(header::CACHE_CONTROL, "public, max-age=60")],
            axum::Json(v),
        )
            .into_response(),
        Err(p) => p.into_response(),
    };
    allow_origin(&mut res, headers.get(header::ORIGIN), &origins);
    res
}

async fn settings_body(
    app: &App,
    headers: &HeaderMap,
    key: &str,
    origins: &mut Vec<String>,
) -> Result<Value, Problem> {
    let unknown = || Problem::not_found("no source has this write key");
    if !key.starts_with(WRITE_KEY_PREFIX) || key.len() > 100 {
        return Err(unknown());
    }
    let source = app
        .collector
        .sources
        .get(app.store.as_ref(), &hash_key(key))
        .await?
        .ok_or_else(unknown)?;
    app.ensure_tenant(&source.tenant).await?;
    *origins = app.view.tenant_origins(&source.tenant);
    check_origin(headers, origins)?;
    let (protocol, host) = app
        .public_url
        .split_once("://")
        .unwrap_or(("https", app.public_url.as_str()));
    let api_host = format!("{}/v1", host.trim_end_matches('/'));
    Ok(serde_json::json!({
        "integrations": {
            "Segment.io": {
                "apiKey": key,
                "apiHost": api_host,
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": false,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {
            "track": { "__default": { "enabled": true, "integrations": {} } },
            "identify": { "__default": { "enabled": true } },
            "group": { "__default": { "enabled": true } },
        },
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": { "sampleRate": 0 },
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": [],
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSource {
    pub name: String,
    /// Purposes (tracking, analytics) that must all allow a subject's events.
    pub purposes: Vec<String>,
    /// Store allowed events (default true).
    #[serde(default = "yes")]
    pub store: bool,
    /// Publish allowed events to NATS (the server needs `--nats-url`).
    #[serde(default)]
    pub forward: bool,
}

fn yes() -> bool {
    true
}

/// Register a tracking source; its write key is shown once.
#[utoipa::path(post, path = "/v1/sources", tag = "collector", request_body = NewSource,
    responses((status = 201, body = Source), (status = 422, body = ProblemBody)), security(("api_key" = [])))]
pub async fn create_source(
    State(app): State<Arc<App>>,
    who: Principal,
    Json(s): Json<NewSource>,
) -> Result<(StatusCode, axum::Json<Source>), Problem> {
    who.require(MANAGERS)?;
    if s.name.trim().is_empty() || s.name.chars().count() > 200 {
        return Err(Problem::validation("name", "must be 1-200 characters"));
    }
    if s.forward && app.collector.forwarder.is_none() {
        return Err(Problem::validation(
            "forward",
            "this server has no NATS to forward to (start it with --nats-url)",
        ));
    }
    if !s.store && !s.forward {
        return Err(Problem::validation(
            "store",
            "a source that neither stores nor forwards would only count events",
        ));
    }
    if s.purposes.is_empty() || s.purposes.len() > 20 {
        return Err(Problem::validation("purposes", "name 1-20 purposes"));
    }
    let unknown = app
        .view
        .read(&who.tenant, |tv| {
            s.purposes
                .iter()
                .find(|p| !tv.purposes.contains_key(*p))
                .cloned()
        })
        .flatten();
    if let Some(p) = unknown {
        return Err(Problem::validation(
            "purposes",
            format!("purpose {p:?} does not exist"),
        ));
    }
    let key = format!(
        "{WRITE_KEY_PREFIX}{}",
        super::auth::generate_key().trim_start_matches(super::auth::KEY_PREFIX)
    );
    let source = Source {
        id: format!("src_{}", uuid::Uuid::now_v7().simple()),
        tenant: who.tenant.to_string(),
        name: s.name,
        purposes: s.purposes,
        store: s.store,
        forward: s.forward,
        key_hash: hash_key(&key),
        key_prefix: key.chars().take(10).collect(),
        write_key: key,
        accepted: 0,
        dropped: 0,
        created_at: time::now(),
    };
    app.store.insert_source(&source).await?;
    app.collector.sources.reload(app.store.as_ref()).await?;
    Ok((StatusCode::CREATED, axum::Json(source)))
}

/// The tenant's sources with their accepted/dropped counters.
#[utoipa::path(get, path = "/v1/sources", tag = "collector",
    responses((status = 200, body = Vec<Source>)), security(("api_key" = [])))]
pub async fn list_sources(
    State(app): State<Arc<App>>,
    who: Principal,
) -> Result<axum::Json<Vec<Source>>, Problem> {
    who.require(STAFF)?;
    Ok(axum::Json(app.store.sources(Some(&who.tenant)).await?))
}

/// Delete a source: its write key stops working at once on this node
/// (within seconds on others).
#[utoipa::path(delete, path = "/v1/sources/{id}", tag = "collector", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ProblemBody)), security(("api_key" = [])))]
pub async fn delete_source(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    who.require(MANAGERS)?;
    if !app
        .store
        .delete_source(&who.tenant, &id, time::now())
        .await?
    {
        return Err(Problem::not_found(format!("source {id:?} does not exist")));
    }
    app.collector.sources.reload(app.store.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT)
}
