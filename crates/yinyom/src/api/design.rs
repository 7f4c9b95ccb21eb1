//! The banner's design: colours, font, radius, position, logo, texts, dark
//! mode; every saved version kept. A design is presentation only: it never
//! changes the banner's notice, its version, or anyone's consent.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use yinyom_core::banner::BannerDesign;
use yinyom_core::time;

use super::auth::{MANAGERS, Principal, STAFF};
use super::extract::{Json, Query};
use super::problem::{Problem, ProblemBody};
use crate::app::App;
use crate::store::StoredDesign;

/// One version of the design.
#[derive(Serialize, ToSchema)]
pub struct DesignView {
    /// 0: never saved (the standard design).
    pub version: u64,
    pub design: BannerDesign,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

impl From<StoredDesign> for DesignView {
    fn from(d: StoredDesign) -> Self {
        DesignView {
            version: d.version,
            design: d.design,
            created_by: Some(d.created_by),
            created_at: Some(time::rfc3339(d.created_at)),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DesignHistory {
    /// Newest first.
    pub versions: Vec<DesignView>,
    /// Pass as `before` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<u64>,
}

#[derive(Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// Versions below this one.
    pub before: Option<u64>,
    /// 1-100, default 20.
    pub limit: Option<u32>,
}

/// Check a design: 422 naming the field that breaks a rule (equal
/// prominence of Accept and Reject, WCAG AA contrast, ranges).
pub fn check(d: &BannerDesign) -> Result<(), Problem> {
    d.validate()
        .map_err(|r| Problem::validation(r.field, r.message))
}

/// The banner's current design.
#[utoipa::path(get, path = "/v1/tenant/banner-design", tag = "banner",
    responses((status = 200, body = DesignView)), security(("api_key" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    who: Principal,
) -> Result<axum::Json<DesignView>, Problem> {
    who.require(STAFF)?;
    let latest = app.store.banner_designs(&who.tenant, None, 1).await?;
    Ok(axum::Json(match latest.into_iter().next() {
        Some(d) => d.into(),
        None => DesignView {
            version: 0,
            design: BannerDesign::default(),
            created_by: None,
            created_at: None,
        },
    }))
}

/// Save a new design (every field optional: `{}` is the standard look).
/// Refused with 422 naming the field when "Reject all" would not be as
/// prominent as "Accept all" (fill, font size or weight, hidden) or any
/// text would fall below WCAG AA contrast (4.5:1). Never changes the
/// notice version: nobody is asked again.
#[utoipa::path(put, path = "/v1/tenant/banner-design", tag = "banner", request_body = BannerDesign,
    responses((status = 200, body = DesignView), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn put(
    State(app): State<Arc<App>>,
    who: Principal,
    Json(design): Json<BannerDesign>,
) -> Result<axum::Json<DesignView>, Problem> {
    who.require(MANAGERS)?;
    check(&design)?;
    let saved = save(&app, &who, design).await?;
    Ok(axum::Json(saved))
}

/// Store `design` as the tenant's next version; the view follows.
pub async fn save(app: &App, who: &Principal, design: BannerDesign) -> Result<DesignView, Problem> {
    let mut t = app
        .view
        .read(&who.tenant, |tv| tv.tenant.clone())
        .ok_or_else(|| Problem::not_found("the tenant does not exist"))?;
    t.banner_design = Some(design.clone());
    let at = time::now();
    let version = app.store.save_banner_design(&t, &who.key_id, at).await?;
    app.view.add_tenant(t);
    Ok(DesignView {
        version,
        design,
        created_by: Some(who.key_id.to_string()),
        created_at: Some(time::rfc3339(at)),
    })
}

/// Every saved design, newest first.
#[utoipa::path(get, path = "/v1/tenant/banner-design/history", tag = "banner", params(HistoryQuery),
    responses((status = 200, body = DesignHistory), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn history(
    State(app): State<Arc<App>>,
    who: Principal,
    Query(q): Query<HistoryQuery>,
) -> Result<axum::Json<DesignHistory>, Problem> {
    who.require(STAFF)?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(Problem::validation("limit", "must be 1-100"));
    }
    let rows = app
        .store
        .banner_designs(&who.tenant, q.before, limit)
        .await?;
    let next_before = (rows.len() == limit as usize)
        .then(|| rows.last().map(|d| d.version))
        .flatten();
    Ok(axum::Json(DesignHistory {
        versions: rows.into_iter().map(DesignView::from).collect(),
        next_before,
    }))
}
