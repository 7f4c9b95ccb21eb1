//! `/v1/notices`: versioned privacy notices.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use yinyom_core::notice::{Notice, NoticeDraft};
use yinyom_core::time;

use super::auth::{EVERYONE, MANAGERS, Principal};
use super::extract::{Json, Path};
use super::problem::{Problem, ProblemBody};
use crate::app::App;

#[derive(Serialize, ToSchema)]
pub struct NoticeList {
    /// The current version of each notice.
    pub notices: Vec<Notice>,
}

/// Publish a new version of a notice (version 1 if the key is new).
#[utoipa::path(post, path = "/v1/notices", tag = "notices", request_body = NoticeDraft,
    responses((status = 201, body = Notice), (status = 422, body = ProblemBody)), security(("api_key" = [])))]
pub async fn publish(
    State(app): State<Arc<App>>,
    who: Principal,
    Json(draft): Json<NoticeDraft>,
) -> Result<(StatusCode, axum::Json<Notice>), Problem> {
    who.require(MANAGERS)?;
    draft.validate()?;
    let missing = app
        .view
        .read(&who.tenant, |tv| {
            draft
                .purposes
                .iter()
                .position(|p| !tv.purposes.contains_key(p))
        })
        .flatten();
    if let Some(i) = missing {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown-purpose",
            format!("purpose {:?} does not exist", draft.purposes[i]),
        )
        .field(format!("purposes/{i}")));
    }
    let notice = app
        .store
        .publish_notice(&who.tenant, draft, time::now())
        .await?;
    app.view.write(&who.tenant, |tv| tv.put_notice(&notice));
    Ok((StatusCode::CREATED, axum::Json(notice)))
}

async fn versions(app: &App, tenant: &str, key: &str) -> Result<Vec<Notice>, Problem> {
    let all = app.store.notices(tenant).await?;
    let versions: Vec<Notice> = all.into_iter().filter(|n| n.key == key).collect();
    if versions.is_empty() {
        return Err(Problem::not_found(format!("notice {key:?} does not exist")));
    }
    Ok(versions)
}

/// The current notices.
#[utoipa::path(get, path = "/v1/notices", tag = "notices",
    responses((status = 200, body = NoticeList)), security(("api_key" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    who: Principal,
) -> Result<axum::Json<NoticeList>, Problem> {
    who.require(EVERYONE)?;
    let mut notices: Vec<Notice> = Vec::new();
    for n in app.store.notices(&who.tenant).await? {
        match notices.last_mut() {
            Some(last) if last.key == n.key => *last = n,
            _ => notices.push(n),
        }
    }
    Ok(axum::Json(NoticeList { notices }))
}

/// The current version of a notice.
#[utoipa::path(get, path = "/v1/notices/{key}", tag = "notices", params(("key" = String, Path)),
    responses((status = 200, body = Notice), (status = 404, body = ProblemBody)), security(("api_key" = [])))]
pub async fn current(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(key): Path<String>,
) -> Result<axum::Json<Notice>, Problem> {
    who.require(EVERYONE)?;
    let mut v = versions(&app, &who.tenant, &key).await?;
    Ok(axum::Json(v.pop().expect("versions is never empty")))
}

/// One version of a notice.
#[utoipa::path(get, path = "/v1/notices/{key}/versions/{version}", tag = "notices",
    params(("key" = String, Path), ("version" = u32, Path)),
    responses((status = 200, body = Notice), (status = 404, body = ProblemBody)), security(("api_key" = [])))]
pub async fn version(
    State(app): State<Arc<App>>,
    who: Principal,
    Path((key, version)): Path<(String, u32)>,
) -> Result<axum::Json<Notice>, Problem> {
    who.require(EVERYONE)?;
    versions(&app, &who.tenant, &key)
        .await?
        .into_iter()
        .find(|n| n.version == version)
        .map(axum::Json)
        .ok_or_else(|| Problem::not_found(format!("notice {key:?} has no version {version}")))
}

/// The subjects whose consent under this notice needs renewal: given under
/// an older version than the latest material one. Send them a request to
/// agree again with `POST /v1/messages` and `"audience": {"renewal": KEY}`.
#[utoipa::path(get, path = "/v1/notices/{key}/renewals", tag = "notices", params(("key" = String, Path)),
    responses((status = 200, body = crate::segments::Renewals), (status = 404, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn renewals(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(key): Path<String>,
) -> Result<axum::Json<crate::segments::Renewals>, Problem> {
    who.require(super::auth::STAFF)?;
    app.ensure_tenant(&who.tenant).await?;
    Ok(axum::Json(
        crate::segments::renewals(&app, &who.tenant, &key).await?,
    ))
}
