//! `/v1/purposes`: the purpose registry.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use yinyom_core::purpose::Purpose;
use yinyom_core::time;

use super::auth::{EVERYONE, MANAGERS, Principal};
use super::extract::{Json, Path};
use super::problem::{Problem, ProblemBody};
use crate::app::App;

#[derive(Serialize, ToSchema)]
pub struct PurposeList {
    pub purposes: Vec<Purpose>,
}

/// Register a purpose.
#[utoipa::path(post, path = "/v1/purposes", tag = "purposes", request_body = Purpose,
    responses((status = 201, body = Purpose), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn create(
    State(app): State<Arc<App>>,
    who: Principal,
    Json(purpose): Json<Purpose>,
) -> Result<(StatusCode, axum::Json<Purpose>), Problem> {
    who.require(MANAGERS)?;
    purpose.validate()?;
    let registered = app
        .view
        .read(&who.tenant, |tv| tv.purposes.len())
        .unwrap_or(0);
    if registered >= crate::view::MAX_PURPOSES {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too-many-purposes",
            format!(
                "a tenant has at most {} purposes",
                crate::view::MAX_PURPOSES
            ),
        ));
    }
    app.store
        .insert_purpose(&who.tenant, &purpose, time::now())
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict => {
                Problem::conflict(format!("purpose {:?} already exists", purpose.key)).field("key")
            }
            e => e.into(),
        })?;
    app.view
        .write(&who.tenant, |tv| tv.put_purpose(purpose.clone()));
    Ok((StatusCode::CREATED, axum::Json(purpose)))
}

/// List the tenant's purposes.
#[utoipa::path(get, path = "/v1/purposes", tag = "purposes",
    responses((status = 200, body = PurposeList)), security(("api_key" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    who: Principal,
) -> Result<axum::Json<PurposeList>, Problem> {
    who.require(EVERYONE)?;
    let mut purposes = app
        .view
        .read(&who.tenant, |tv| {
            tv.purposes.values().cloned().collect::<Vec<_>>()
        })
        .unwrap_or_default();
    purposes.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(axum::Json(PurposeList { purposes }))
}

fn find(app: &App, tenant: &str, key: &str) -> Result<Purpose, Problem> {
    app.view
        .read(tenant, |tv| tv.purposes.get(key).cloned())
        .flatten()
        .ok_or_else(|| Problem::not_found(format!("purpose {key:?} does not exist")))
}

/// Read one purpose.
#[utoipa::path(get, path = "/v1/purposes/{key}", tag = "purposes",
    params(("key" = String, Path)),
    responses((status = 200, body = Purpose), (status = 404, body = ProblemBody)), security(("api_key" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(key): Path<String>,
) -> Result<axum::Json<Purpose>, Problem> {
    who.require(EVERYONE)?;
    find(&app, &who.tenant, &key).map(axum::Json)
}

/// Change a purpose with a JSON merge patch (RFC 7396). The key cannot change.
#[utoipa::path(patch, path = "/v1/purposes/{key}", tag = "purposes",
    params(("key" = String, Path)), request_body(content = Object, content_type = "application/merge-patch+json"),
    responses((status = 200, body = Purpose), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn patch(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(key): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Purpose>, Problem> {
    who.require(MANAGERS)?;
    let patch: serde_json::Value = super::problem::parse_json(&body)?;
    if !patch.is_object() {
        return Err(Problem::validation(
            "",
            "a merge patch must be a JSON object",
        ));
    }
    let current = find(&app, &who.tenant, &key)?;
    let mut merged = serde_json::to_value(&current).expect("purposes serialize");
    merge_patch(&mut merged, &patch);
    let updated: Purpose =
        serde_json::from_value(merged).map_err(|e| Problem::validation("", e.to_string()))?;
    if updated.key != key {
        return Err(Problem::validation(
            "key",
            "the key of a purpose cannot change",
        ));
    }
    updated.validate()?;
    app.store
        .update_purpose(&who.tenant, &updated, time::now())
        .await?;
    app.view
        .write(&who.tenant, |tv| tv.put_purpose(updated.clone()));
    Ok(axum::Json(updated))
}

/// RFC 7396 JSON merge patch.
fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        super::merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
    }
}
