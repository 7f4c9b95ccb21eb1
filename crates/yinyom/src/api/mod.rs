//! The HTTP API: routes, middleware and the OpenAPI description.
//!
//! Handlers are thin: they authenticate, check the role, validate at the
//! edge and call the view, the writer or the store.

pub(crate) mod acquisitions;
pub(crate) mod admin;
pub mod auth;
pub(crate) mod breaches;
pub(crate) mod checkpoints;
pub(crate) mod consents;
pub(crate) mod decisions;
pub mod design;
pub mod extract;
pub(crate) mod hooks;
pub mod limit;
pub(crate) mod messages;
pub(crate) mod notices;
pub mod page;
pub mod problem;
pub(crate) mod purposes;
pub(crate) mod requests;
pub(crate) mod ropa;
pub(crate) mod staff;
pub mod stream;
pub(crate) mod subjects;
pub(crate) mod systems;
pub(crate) mod track;
pub(crate) mod verifications;
pub mod webhooks;

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use crate::app::App;
use crate::metrics::RouteLabels;
use problem::Problem;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Batch decisions may carry up to 10,000 queries.
pub const BATCH_BODY_LIMIT: usize = 4 * 1024 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(title = "Yinyom", description = "Consent management: purposes, notices, a tamper-evident consent ledger with signed receipts, and fast decisions.", license(name = "Apache-2.0")),
    paths(
        purposes::create, purposes::list, purposes::get, purposes::patch,
        notices::publish, notices::list, notices::current, notices::version, notices::renewals,
        subjects::put, subjects::get, subjects::consents, subjects::events, subjects::preference_link, stream::stream,
        webhooks::create, webhooks::list, webhooks::get, webhooks::delete,
        webhooks::deliveries, webhooks::replay,
        consents::record,
        decisions::one, decisions::batch,
        admin::verify, verifications::start, verifications::get, verifications::list, checkpoints::list, checkpoints::get, checkpoints::create, checkpoints::proof, admin::create_key, admin::list_keys, admin::revoke_key, admin::tenant, admin::patch_tenant, admin::audit,
        design::get, design::put, design::history,
        staff::create, staff::list, staff::disable,
        track::track, track::identify, track::page, track::screen, track::group, track::alias, track::batch,
        track::track_short, track::identify_short, track::page_short, track::screen_short, track::group_short, track::alias_short, track::batch_short,
        track::settings,
        messages::send, messages::get, messages::audience, messages::connectors, messages::put_connector, messages::evaluate_segment,
        track::create_source, track::list_sources, track::delete_source,
        requests::create, requests::list, requests::get, requests::act, requests::bundle,
        requests::send_code, requests::confirm_code,
        systems::create, systems::list, systems::get, systems::put, systems::delete, systems::test,
        systems::categories, systems::plan, systems::confirm, systems::propagation,
        hooks::create, hooks::list, hooks::get, hooks::put, hooks::delete, hooks::reply,
        breaches::create, breaches::list, breaches::get, breaches::notify,
        breaches::add_recipients, breaches::recipients, ropa::export,
        acquisitions::put, acquisitions::notice, acquisitions::list,
        healthz, readyz, jwks,
        crate::web::sdk::config, crate::web::sdk::record, crate::web::tcf::vendor_list,
    ),
    components(schemas(problem::ProblemBody, crate::events::ConsentEvent)),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "reply_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "write_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    let doc = ApiDoc::openapi();
    match serde_json::to_value(&doc)
        .map(problem_responses)
        .and_then(serde_json::from_value)
    {
        Ok(with_problems) => with_problems,
        Err(_) => doc,
    }
}

/// Every error is an RFC 9457 problem: errors are documented as
/// `application/problem+json`, and each operation's `default` response
/// says that any status it does not list is one too.
fn problem_responses(mut doc: serde_json::Value) -> serde_json::Value {
    let problem = serde_json::json!({ "$ref": "#/components/schemas/ProblemBody" });
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return doc;
    };
    for item in paths.values_mut().filter_map(|i| i.as_object_mut()) {
        for op in item.values_mut() {
            let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) else {
                continue;
            };
            for r in responses.values_mut() {
                let Some(content) = r.get_mut("content").and_then(|c| c.as_object_mut()) else {
                    continue;
                };
                let is_problem = content
                    .get("application/json")
                    .is_some_and(|c| c["schema"] == problem);
                if is_problem && let Some(c) = content.remove("application/json") {
                    content.insert("application/problem+json".into(), c);
                }
            }
            responses.entry("default").or_insert_with(|| {
                serde_json::json!({
                    "description": "An error, as an RFC 9457 problem",
                    "content": { "application/problem+json": { "schema": problem } },
                })
            });
        }
    }
    doc
}

pub fn router(app: Arc<App>) -> Router {
    let v1 = Router::new()
        .route("/v1/purposes", post(purposes::create).get(purposes::list))
        .route(
            "/v1/purposes/{key}",
            get(purposes::get).patch(purposes::patch),
        )
        .route("/v1/notices", post(notices::publish).get(notices::list))
        .route("/v1/notices/{key}", get(notices::current))
        .route("/v1/notices/{key}/renewals", get(notices::renewals))
        .route(
            "/v1/notices/{key}/versions/{version}",
            get(notices::version),
        )
        .route("/v1/subjects/{id}", get(subjects::get).put(subjects::put))
        .route("/v1/subjects/{id}/consents", get(subjects::consents))
        .route("/v1/subjects/{id}/events", get(subjects::events))
        .route(
            "/v1/subjects/{id}/preference-link",
            post(subjects::preference_link),
        )
        .route("/v1/consents", post(consents::record))
        .route("/v1/decisions", get(decisions::one))
        .route(
            "/v1/decisions/batch",
            post(decisions::batch).layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)),
        )
        .route("/v1/ledger/verify", get(admin::verify))
        .route(
            "/v1/ledger/verifications",
            post(verifications::start).get(verifications::list),
        )
        .route("/v1/ledger/verifications/{id}", get(verifications::get))
        .route(
            "/v1/ledger/checkpoints",
            post(checkpoints::create).get(checkpoints::list),
        )
        .route("/v1/ledger/checkpoints/{number}", get(checkpoints::get))
        .route("/v1/receipts/{id}/proof", get(checkpoints::proof))
        .route("/v1/keys", post(admin::create_key).get(admin::list_keys))
        .route("/v1/keys/{id}", delete(admin::revoke_key))
        .route("/v1/tenant", get(admin::tenant).patch(admin::patch_tenant))
        .route(
            "/v1/tenant/banner-design",
            get(design::get).put(design::put),
        )
        .route("/v1/tenant/banner-design/history", get(design::history))
        .route("/v1/audit", get(admin::audit))
        .route("/v1/staff", post(staff::create).get(staff::list))
        .route("/v1/staff/{id}", delete(staff::disable))
        .route("/v1/requests", post(requests::create).get(requests::list))
        .route("/v1/requests/{id}", get(requests::get))
        .route("/v1/requests/{id}/actions", post(requests::act))
        .route("/v1/requests/{id}/bundle", get(requests::bundle))
        .route("/v1/requests/{id}/plan", get(systems::plan))
        .route(
            "/v1/requests/{id}/systems/{key}/confirm",
            post(systems::confirm),
        )
        .route("/v1/requests/{id}/hooks/{hook}/reply", post(hooks::reply))
        .route("/v1/hooks", post(hooks::create).get(hooks::list))
        .route(
            "/v1/hooks/{id}",
            get(hooks::get).put(hooks::put).delete(hooks::delete),
        )
        .route("/v1/systems", post(systems::create).get(systems::list))
        .route("/v1/systems/categories", get(systems::categories))
        .route(
            "/v1/systems/{key}",
            get(systems::get).put(systems::put).delete(systems::delete),
        )
        .route("/v1/systems/{key}/test", post(systems::test))
        .route("/v1/subjects/{id}/systems", get(systems::propagation))
        .route("/v1/requests/{id}/verification", post(requests::send_code))
        .route(
            "/v1/requests/{id}/verification/confirm",
            post(requests::confirm_code),
        )
        .route("/v1/breaches", post(breaches::create).get(breaches::list))
        .route("/v1/breaches/{id}", get(breaches::get))
        .route("/v1/breaches/{id}/notifications", post(breaches::notify))
        .route(
            "/v1/breaches/{id}/recipients",
            post(breaches::add_recipients).get(breaches::recipients),
        )
        .route("/v1/records-of-processing", get(ropa::export))
        .route("/v1/subjects/{id}/acquisition", put(acquisitions::put))
        .route(
            "/v1/subjects/{id}/acquisition/notice",
            post(acquisitions::notice),
        )
        .route("/v1/acquisitions", get(acquisitions::list))
        .route("/v1/messages", post(messages::send))
        .route("/v1/messages/{id}", get(messages::get))
        .route("/v1/audiences/{id}", get(messages::audience))
        .route("/v1/segments/evaluate", post(messages::evaluate_segment))
        .route("/v1/connectors", get(messages::connectors))
        .route("/v1/connectors/{channel}", put(messages::put_connector))
        .route(
            "/v1/sources",
            post(track::create_source).get(track::list_sources),
        )
        .route("/v1/sources/{id}", delete(track::delete_source))
        .route("/v1/track", post(track::track).options(track::preflight))
        .route("/v1/t", post(track::track_short).options(track::preflight))
        .route(
            "/v1/identify",
            post(track::identify).options(track::preflight),
        )
        .route(
            "/v1/i",
            post(track::identify_short).options(track::preflight),
        )
        .route("/v1/page", post(track::page).options(track::preflight))
        .route("/v1/p", post(track::page_short).options(track::preflight))
        .route("/v1/screen", post(track::screen).options(track::preflight))
        .route("/v1/s", post(track::screen_short).options(track::preflight))
        .route("/v1/group", post(track::group).options(track::preflight))
        .route("/v1/g", post(track::group_short).options(track::preflight))
        .route("/v1/alias", post(track::alias).options(track::preflight))
        .route("/v1/a", post(track::alias_short).options(track::preflight))
        .route(
            "/v1/batch",
            post(track::batch)
                .options(track::preflight)
                .layer(DefaultBodyLimit::max(track::BATCH_LIMIT + 1)),
        )
        .route(
            "/v1/b",
            post(track::batch_short)
                .options(track::preflight)
                .layer(DefaultBodyLimit::max(track::BATCH_LIMIT + 1)),
        )
        .route(
            "/v1/projects/{key}/settings",
            get(track::settings).options(track::preflight),
        )
        .route("/v1/stream", get(stream::stream))
        .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::get).delete(webhooks::delete),
        )
        .route("/v1/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/v1/webhooks/{id}/replay", post(webhooks::replay));
    Router::new()
        .merge(v1)
        .merge(crate::web::routes())
        .route("/healthz", get(healthz))
        .route("/t/{tenant}", get(ropa::transparency))
        .route(
            "/c/{token}",
            get(messages::opt_in_page).post(messages::opt_in_confirm),
        )
        .route(
            "/u/{token}",
            get(messages::unsubscribe_page).post(messages::unsubscribe),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/openapi.json", get(openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(app.clone(), limit::limit))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .layer(CatchPanicLayer::custom(panicked))
        .with_state(app)
}

/// Metrics per route, and headers every response carries.
async fn observe(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = crate::metrics::method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| crate::metrics::intern(p.as_str()))
        .unwrap_or("unmatched");
    let mut res = next.run(req).await;
    app.metrics.request(
        RouteLabels {
            method,
            route,
            status: res.status().as_u16(),
        },
        start.elapsed().as_secs_f64(),
    );
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    // Served over TLS (by a proxy in front): browsers keep to it.
    if app.public_url.starts_with("https://") {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    res
}

fn panicked(_: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "an internal error occurred; nothing was written",
    )
    .into_response()
}

async fn not_found() -> Problem {
    Problem::not_found("no such endpoint")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this endpoint does not accept that method",
    )
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Object)))]
async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: decisions can be served (the view is loaded) and storage
/// answers. While the server starts, 503 with the load's progress.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Object), (status = 503, body = problem::ProblemBody)))]
async fn readyz(State(app): State<Arc<App>>) -> Result<axum::Json<serde_json::Value>, Problem> {
    app.store.ping().await?;
    let view = app.view.stats();
    Ok(axum::Json(
        serde_json::json!({ "status": "ready", "view": view }),
    ))
}

/// The router while the store opens and the view loads: liveness answers,
/// readiness reports progress (503), everything else is 503 with
/// `Retry-After`.
pub fn starting_router(view: Arc<crate::view::View>) -> Router {
    let started = std::time::Instant::now();
    let progress = move || {
        let p = &view.progress;
        serde_json::json!({
            "type": format!("{}starting", problem::TYPE_BASE),
            "title": "Starting",
            "status": 503,
            "detail": "the decision view is loading",
            "loaded_subjects": p.subjects.load(std::sync::atomic::Ordering::Relaxed),
            "loaded_records": p.records.load(std::sync::atomic::Ordering::Relaxed),
            "seconds": started.elapsed().as_secs_f64(),
        })
    };
    let unready = move || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::CONTENT_TYPE, "application/problem+json"),
                (header::RETRY_AFTER, "1"),
            ],
            progress().to_string(),
        )
    };
    Router::new()
        .route("/healthz", get(healthz))
        .fallback(move || async move { unready() })
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    app.metrics.view(&app.view.stats());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
}

/// Public keys that verify consent receipts (JWKS, RFC 7517).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations", responses((status = 200, body = Object)))]
async fn jwks(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(app.signer.jwks()),
    )
}

async fn openapi_json() -> impl IntoResponse {
    axum::Json(openapi())
}
