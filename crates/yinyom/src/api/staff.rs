//! `/v1/staff`: people who log in to the admin console (`/admin`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use yinyom_core::time;

use super::auth::{OWNERS, Principal};
use super::extract::{Json, Path};
use super::problem::{Problem, ProblemBody};
use crate::app::App;
use crate::model::{Role, StaffMember};
use crate::store::StoreError;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStaff {
    /// The login name.
    pub email: String,
    #[serde(default)]
    pub name: String,
    pub role: Role,
    /// At least 12 characters; stored only as an argon2id hash.
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StaffList {
    pub staff: Vec<StaffMember>,
}

/// Give someone a console login with a role (owners only).
#[utoipa::path(post, path = "/v1/staff", tag = "tenant", request_body = NewStaff,
    responses((status = 201, body = StaffMember), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn create(
    State(app): State<Arc<App>>,
    who: Principal,
    Json(n): Json<NewStaff>,
) -> Result<(StatusCode, axum::Json<StaffMember>), Problem> {
    who.require(OWNERS)?;
    let email = n.email.trim().to_lowercase();
    if email.len() > 254
        || yinyom_core::contact::ContactKind::Email
            .normalize(&email)
            .is_err()
    {
        return Err(Problem::validation("email", "must be an email address"));
    }
    if n.role == Role::Service {
        return Err(Problem::validation(
            "role",
            "people are owner, admin or user; service is for API keys",
        ));
    }
    let chars = n.password.chars().count();
    if !(12..=1024).contains(&chars) {
        return Err(Problem::validation(
            "password",
            "must be 12-1024 characters",
        ));
    }
    if n.name.chars().count() > 200 {
        return Err(Problem::validation("name", "at most 200 characters"));
    }
    let m = StaffMember {
        id: format!("stf_{}", uuid::Uuid::now_v7().simple()),
        tenant: who.tenant.to_string(),
        email,
        name: n.name,
        role: n.role,
        password_hash: crate::web::admin::hash_password(&n.password)?,
        created_at: time::now(),
        disabled_at: None,
    };
    match app.store.insert_staff(&m).await {
        Ok(()) => Ok((StatusCode::CREATED, axum::Json(m))),
        Err(StoreError::Conflict) => Err(Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            "someone already logs in with this email",
        )
        .field("email")),
        Err(e) => Err(e.into()),
    }
}

/// The tenant's console logins.
#[utoipa::path(get, path = "/v1/staff", tag = "tenant",
    responses((status = 200, body = StaffList)), security(("api_key" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    who: Principal,
) -> Result<axum::Json<StaffList>, Problem> {
    who.require(OWNERS)?;
    Ok(axum::Json(StaffList {
        staff: app.store.staff(&who.tenant).await?,
    }))
}

/// Disable a login; its sessions end at once.
#[utoipa::path(delete, path = "/v1/staff/{id}", tag = "tenant", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ProblemBody)), security(("api_key" = [])))]
pub async fn disable(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    who.require(OWNERS)?;
    if app
        .store
        .disable_staff(&who.tenant, &id, time::now())
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("no such staff member"))
    }
}
