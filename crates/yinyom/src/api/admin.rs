//! Tenant settings, API keys and ledger verification.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use yinyom_core::ledger::Broken;
use yinyom_core::purpose::Lang;
use yinyom_core::time;

use super::auth::{EVERYONE, MANAGERS, OWNERS, Principal, STAFF};
use super::extract::{Json, Path, Query};
use super::problem::{Problem, ProblemBody};
use crate::app::{App, new_api_key};
use crate::model::{AuditEntry, Dpo, Role, Tenant};

#[derive(Serialize, ToSchema)]
pub struct VerifyView {
    pub ok: bool,
    /// Entries recomputed before stopping.
    pub checked: u64,
    /// The first altered, missing or unreadable entry.
    #[schema(value_type = Option<Object>)]
    pub broken: Option<Broken>,
}

/// Recompute the tenant's hash chain now and name the first altered entry.
/// For ledgers of up to 1,000,000 entries; a larger one is refused with 422
/// `ledger-too-large`: verify it as a job with `POST
/// /v1/ledger/verifications`, which answers at once and shows progress.
#[utoipa::path(get, path = "/v1/ledger/verify", tag = "ledger",
    responses((status = 200, body = VerifyView), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn verify(
    State(app): State<Arc<App>>,
    who: Principal,
) -> Result<axum::Json<VerifyView>, Problem> {
    who.require(STAFF)?;
    let entries = app.store.ledger_size(&who.tenant).await?;
    if entries > crate::verification::INLINE_LIMIT {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ledger-too-large",
            format!(
                "the ledger has {entries} entries, more than the {} verified within one request: \
                 start a verification job with POST /v1/ledger/verifications and follow its Location",
                crate::verification::INLINE_LIMIT
            ),
        ));
    }
    let r = app.store.verify_ledger(&who.tenant).await?;
    Ok(axum::Json(VerifyView {
        ok: r.ok,
        checked: r.checked,
        broken: r.broken,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub role: Role,
    #[serde(default)]
    pub label: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub role: Role,
    pub label: String,
    /// The first characters of the key.
    pub prefix: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub meta: KeyView,
    /// The key itself: shown once, never stored.
    pub key: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

impl From<&crate::model::ApiKey> for KeyView {
    fn from(k: &crate::model::ApiKey) -> Self {
        KeyView {
            id: k.id.clone(),
            role: k.role,
            label: k.label.clone(),
            prefix: k.prefix.clone(),
            created_at: time::rfc3339(k.created_at),
            revoked_at: k.revoked_at.map(time::rfc3339),
        }
    }
}

/// Admins manage every key but owners'; owners manage all.
fn may_manage(who: &Principal, role: Role) -> Result<(), Problem> {
    who.require(MANAGERS)?;
    if role == Role::Owner && who.role != Role::Owner {
        return Err(Problem::forbidden("only an owner may manage owner keys"));
    }
    Ok(())
}

/// Create an API key.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = NewKey,
    responses((status = 201, body = CreatedKey), (status = 403, body = ProblemBody)), security(("api_key" = [])))]
pub async fn create_key(
    State(app): State<Arc<App>>,
    who: Principal,
    Json(req): Json<NewKey>,
) -> Result<(StatusCode, axum::Json<CreatedKey>), Problem> {
    may_manage(&who, req.role)?;
    if req.label.chars().count() > 100 || req.label.chars().any(char::is_control) {
        return Err(Problem::validation(
            "label",
            "must be at most 100 characters, no control characters",
        ));
    }
    let (key, record) = new_api_key(&who.tenant, req.role, &req.label, None);
    app.store.insert_api_key(&record).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedKey {
            meta: KeyView::from(&record),
            key,
        }),
    ))
}

/// List the tenant's API keys (never the keys themselves).
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, body = KeyList)), security(("api_key" = [])))]
pub async fn list_keys(
    State(app): State<Arc<App>>,
    who: Principal,
) -> Result<axum::Json<KeyList>, Problem> {
    who.require(MANAGERS)?;
    let keys = app.store.api_keys(&who.tenant).await?;
    Ok(axum::Json(KeyList {
        keys: keys.iter().map(KeyView::from).collect(),
    }))
}

/// Revoke an API key; it stops working at once on this node.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ProblemBody)), security(("api_key" = [])))]
pub async fn revoke_key(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    who.require(MANAGERS)?;
    let existing = app
        .store
        .api_keys(&who.tenant)
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| Problem::not_found(format!("key {id:?} does not exist")))?;
    may_manage(&who, existing.role)?;
    app.store
        .revoke_api_key(&who.tenant, &id, time::now())
        .await?;
    app.keys.evict(&existing.hash);
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's tenant.
#[utoipa::path(get, path = "/v1/tenant", tag = "tenant",
    responses((status = 200, body = Tenant)), security(("api_key" = [])))]
pub async fn tenant(
    State(app): State<Arc<App>>,
    who: Principal,
) -> Result<axum::Json<Tenant>, Problem> {
    who.require(EVERYONE)?;
    app.view
        .read(&who.tenant, |tv| tv.tenant.clone())
        .map(axum::Json)
        .ok_or_else(|| Problem::not_found("the tenant does not exist"))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub dpo: Option<Dpo>,
    pub jurisdictions: Option<Vec<String>>,
    pub default_lang: Option<Lang>,
    pub policy_url: Option<String>,
    /// Ids of `user`/`service` API keys and of `user` console logins
    /// (`stf_…`) allowed to see contact points in clear (replaces the list).
    pub pii_readers: Option<Vec<String>>,
    /// Security measures listed in the record of processing (replaces the list).
    pub security_measures: Option<Vec<String>>,
    /// Turn the website banner on (a site key is made the first time) or
    /// change the notice it shows; `null` turns it off.
    #[serde(default, deserialize_with = "crate::api::extract::double_option")]
    #[schema(value_type = Option<BannerPatch>)]
    pub banner: Option<Option<BannerPatch>>,
    /// Hours before each kind of deadline at which the DPO is reminded
    /// (each list at most 5 values; breaches' under 72); `null`: the
    /// defaults (requests and s.25 notices 168 and 24, breaches 24 and 6).
    #[serde(default, deserialize_with = "crate::api::extract::double_option")]
    #[schema(value_type = Option<crate::model::Reminders>)]
    pub reminders: Option<Option<crate::model::Reminders>>,
}

/// The website banner's settings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BannerPatch {
    /// The notice the banner shows and records consent to.
    pub notice: String,
    /// Origins the banner may record from (`https://shop.example`); empty
    /// or absent: any.
    #[serde(default)]
    pub origins: Vec<String>,
    /// Replace the site key (the old one stops working).
    #[serde(default)]
    pub rotate_site_key: bool,
    /// Turn on the IAB TCF v2.2 CMP (absent: off).
    #[serde(default)]
    pub tcf: Option<crate::web::tcf::TcfSettings>,
    /// GPP sections (`tcfeuv2`, `usnat`); needs `tcf`.
    #[serde(default)]
    pub gpp: Option<crate::web::tcf::GppSettings>,
}

/// Change the controller's name, DPO contact, jurisdictions or language.
#[utoipa::path(patch, path = "/v1/tenant", tag = "tenant", request_body = TenantPatch,
    responses((status = 200, body = Tenant), (status = 422, body = ProblemBody)), security(("api_key" = [])))]
pub async fn patch_tenant(
    State(app): State<Arc<App>>,
    who: Principal,
    Json(p): Json<TenantPatch>,
) -> Result<axum::Json<Tenant>, Problem> {
    who.require(OWNERS)?;
    let mut t = app
        .view
        .read(&who.tenant, |tv| tv.tenant.clone())
        .ok_or_else(|| Problem::not_found("the tenant does not exist"))?;
    if let Some(name) = p.name {
        t.name = name;
    }
    if let Some(dpo) = p.dpo {
        if !dpo.email.contains('@') {
            return Err(Problem::validation("dpo.email", "must be an email address"));
        }
        t.dpo = dpo;
    }
    if let Some(j) = p.jurisdictions {
        if j.is_empty() || j.iter().any(|x| x != "TH" && x != "EU") {
            return Err(Problem::validation(
                "jurisdictions",
                "must list TH and/or EU",
            ));
        }
        t.jurisdictions = j;
    }
    if let Some(l) = p.default_lang {
        t.default_lang = l;
    }
    if let Some(r) = p.reminders {
        if let Some(r) = &r {
            for (field, hours, max) in [
                ("reminders.requests", &r.requests, 24 * 90),
                ("reminders.breaches", &r.breaches, 71),
                ("reminders.notices", &r.notices, 24 * 90),
            ] {
                if hours.len() > 5 || hours.iter().any(|h| *h == 0 || *h > max) {
                    return Err(Problem::validation(
                        field,
                        format!("at most 5 numbers of hours, each 1-{max}"),
                    ));
                }
            }
        }
        t.reminders = r;
    }
    if let Some(url) = p.policy_url {
        if !url.starts_with("https://") && !url.starts_with("http://") {
            return Err(Problem::validation("policy_url", "must be an http(s) URL"));
        }
        t.policy_url = Some(url);
    }
    if let Some(m) = p.security_measures {
        if m.len() > 100 || m.iter().any(|x| x.trim().is_empty() || x.len() > 1000) {
            return Err(Problem::validation(
                "security_measures",
                "at most 100 entries of 1-1000 bytes",
            ));
        }
        t.security_measures = m;
    }
    if let Some(readers) = p.pii_readers {
        let keys = app.store.api_keys(&who.tenant).await?;
        let staff = app.store.staff(&who.tenant).await?;
        let live = |r: &String| {
            keys.iter().any(|k| k.id == *r && k.revoked_at.is_none())
                || staff.iter().any(|s| s.id == *r && s.disabled_at.is_none())
        };
        if let Some(unknown) = readers.iter().find(|r| !live(r)) {
            return Err(Problem::validation(
                "pii_readers",
                format!("{unknown:?} is not a live API key or console login of this tenant"),
            ));
        }
        t.pii_readers = readers;
    }
    match p.banner {
        None => {}
        Some(None) => t.banner = None,
        Some(Some(b)) => {
            let known = app
                .view
                .read(&who.tenant, |tv| tv.latest_notice.contains_key(&b.notice))
                .unwrap_or(false);
            if !known {
                return Err(Problem::validation(
                    "banner.notice",
                    format!("no notice {:?} has been published", b.notice),
                ));
            }
            if let Some((i, _)) = b.origins.iter().enumerate().find(|(_, o)| !is_origin(o)) {
                return Err(Problem::validation(
                    format!("banner.origins/{i}"),
                    "must be an origin: http(s)://host[:port], no path",
                ));
            }
            crate::web::tcf::configure(&app, &who.tenant, b.tcf.as_ref(), b.gpp.as_ref()).await?;
            let site_key = match (&t.banner, b.rotate_site_key) {
                (Some(old), false) => old.site_key.clone(),
                _ => crate::web::sdk::new_site_key(),
            };
            t.banner = Some(crate::model::BannerSite {
                site_key,
                notice: b.notice,
                origins: b.origins,
                tcf: b.tcf,
                gpp: b.gpp,
            });
        }
    }
    if t.name.trim().is_empty() || t.name.chars().count() > 200 {
        return Err(Problem::validation("name", "must be 1-200 characters"));
    }
    app.store.update_tenant(&t).await?;
    app.view.add_tenant(t.clone());
    Ok(axum::Json(t))
}

#[derive(Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Entries with an id below this one (pagination, newest first).
    pub before: Option<i64>,
    /// At most this many (1-1000, default 100).
    pub limit: Option<u32>,
}

/// The audit log: every read of personal data in clear, newest first. A
/// full page carries `Link: <…?before=ID&limit=N>; rel="next"` (RFC 8288).
#[utoipa::path(get, path = "/v1/audit", tag = "tenant", params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>,
        headers(("link" = String, description = "the next page, rel=\"next\""))),
        (status = 403, body = ProblemBody)), security(("api_key" = [])))]
pub async fn audit(
    State(app): State<Arc<App>>,
    who: Principal,
    Query(q): Query<AuditQuery>,
) -> Result<(HeaderMap, axum::Json<Vec<AuditEntry>>), Problem> {
    who.require(MANAGERS)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::validation("limit", "must be 1-1000"));
    }
    let entries = app.store.audit(&who.tenant, q.before, limit).await?;
    let mut headers = HeaderMap::new();
    if entries.len() == limit as usize
        && let Some(last) = entries.last()
    {
        let link = format!("</v1/audit?before={}&limit={limit}>; rel=\"next\"", last.id);
        if let Ok(v) = HeaderValue::from_str(&link) {
            headers.insert(header::LINK, v);
        }
    }
    Ok((headers, axum::Json(entries)))
}

/// `scheme://host[:port]` as browsers send it in `Origin`.
fn is_origin(o: &str) -> bool {
    let Some(rest) = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && o.len() <= 300
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}
