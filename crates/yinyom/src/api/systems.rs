//! `/v1/systems`: connected systems and their data map; a request's plan
//! (dry run) and the confirmation of a manual system's part; a subject's
//! consent propagation. The work is in [`crate::systems`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use yinyom_core::systems::{self as map, SystemKind, TableMap};
use yinyom_core::time;

use super::auth::{EVERYONE, MANAGERS, Principal, STAFF};
use super::extract::{Json, Path};
use super::problem::{Problem, ProblemBody};
use crate::app::App;
use crate::store::{StoreError, SystemRow};
use crate::systems::http::{Auth, Connector, Credentials, HttpConfig};
use crate::systems::{self, StoredConfig, SystemPlan, SystemStatus, TableCheck};

/// A system's connection.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionInput {
    /// `postgres://user:password@host:5432/db` or `mysql://…` (MySQL,
    /// MariaDB). Sealed with the tenant key; never shown again. For an HTTP
    /// system: the API's base URL (replaces the connector's).
    #[serde(default)]
    pub url: Option<String>,
    /// HTTP: a bearer token (or Basic password).
    #[serde(default)]
    pub token: Option<String>,
    /// HTTP Basic.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// HTTP OAuth2 client credentials.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
}

/// An HTTP system's connector: a template by name (a file of the
/// connectors directory, or built in: `mailchimp`, `hubspot`), or a
/// connector written out (`definition` as JSON, or `toml` as a file's text).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorInput {
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub definition: Option<serde_json::Value>,
    #[serde(default)]
    pub toml: Option<String>,
    /// The connector's parameters (`list_id`).
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    /// The purpose (and channel) its opt-in / opt-out calls mirror.
    #[serde(default)]
    pub purpose: Option<String>,
    #[serde(default)]
    pub channel: Option<yinyom_core::purpose::Channel>,
}

/// Body of `POST /v1/systems` and `PUT /v1/systems/{key}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemInput {
    /// 1-64 characters of a-z, 0-9, `_`, `-` (in a PUT: the path's key, if given).
    #[serde(default)]
    pub key: Option<String>,
    pub name: String,
    pub kind: SystemKind,
    /// Databases: the connection (in a PUT, absent: kept as it was).
    #[serde(default)]
    pub connection: Option<ConnectionInput>,
    /// The data map: the tables holding subjects' rows.
    #[serde(default)]
    pub tables: Vec<TableMap>,
    /// A manual system: what the team does and how to reach it.
    #[serde(default)]
    pub instructions: Option<String>,
    /// An HTTP system: its connector.
    #[serde(default)]
    pub connector: Option<ConnectorInput>,
}

/// A connection as shown: never its password.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionView {
    /// The URL without password and query parameters.
    pub display: Option<String>,
    /// The full URL is sealed in the store.
    pub sealed: bool,
}

/// A connected system.
#[derive(Debug, Serialize, ToSchema)]
pub struct SystemView {
    pub key: String,
    pub name: String,
    pub kind: SystemKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionView>,
    pub tables: Vec<TableMap>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// An HTTP system's connector and parameters (no secrets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector: Option<systems::http::HttpConfig>,
    pub created_at: String,
    pub updated_at: String,
}

impl SystemView {
    fn of(row: SystemRow) -> SystemView {
        let config = StoredConfig::of(&row);
        let kind = SystemKind::parse(&row.kind).unwrap_or(SystemKind::Manual);
        SystemView {
            connection: (kind != SystemKind::Manual).then(|| ConnectionView {
                display: config.connection.clone(),
                sealed: row.secret.is_some(),
            }),
            key: row.key,
            name: row.name,
            kind,
            tables: config.tables,
            instructions: config.instructions,
            connector: config.connector,
            created_at: time::rfc3339(row.created_at),
            updated_at: time::rfc3339(row.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SystemList {
    pub systems: Vec<SystemView>,
}

fn check_key(key: &str) -> Result<(), Problem> {
    let ok = !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Problem::validation(
            "key",
            "must be 1-64 characters of a-z, 0-9, '_' or '-'",
        ))
    }
}

/// Validate an input and make the row to store (`previous`: the system as
/// it was, for a PUT).
async fn row_of(
    app: &App,
    tenant: &str,
    key: &str,
    input: SystemInput,
    previous: Option<&SystemRow>,
) -> Result<SystemRow, Problem> {
    check_key(key)?;
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(Problem::validation("name", "must be 1-200 characters"));
    }
    if let Some(i) = &input.instructions
        && (i.len() > 4000 || i.trim().is_empty())
    {
        return Err(Problem::validation("instructions", "must be 1-4000 bytes"));
    }
    map::validate_tables(&input.tables)?;
    let unknown = app
        .view
        .read(tenant, |tv| {
            input
                .tables
                .iter()
                .flat_map(|t| t.consent.values())
                .find(|c| !tv.purposes.contains_key(c.purpose.as_str()))
                .map(|c| c.purpose.clone())
        })
        .flatten();
    if let Some(p) = unknown {
        return Err(Problem::validation(
            "tables",
            format!("consent column names purpose {p:?}, which does not exist"),
        ));
    }
    let mut config = StoredConfig {
        tables: input.tables,
        connection: None,
        instructions: input.instructions,
        connector: None,
    };
    if input.connector.is_some() && input.kind != SystemKind::Http {
        return Err(Problem::validation(
            "connector",
            "only an http system has a connector",
        ));
    }
    let keys = app
        .vault
        .tenant(app.store.as_ref(), tenant)
        .await
        .map_err(StoreError::from)?;
    let secret = match input.kind {
        SystemKind::Http => {
            let (hc, credentials) = http_config(app, tenant, input.connector, input.connection)?;
            config.connection = Some(hc.base_url.clone());
            config.connector = Some(hc);
            match credentials {
                Some(c) => Some(keys.seal_secret(
                    &format!("system:{key}"),
                    &serde_json::to_vec(&c).map_err(|e| Problem::bad_request(e.to_string()))?,
                )),
                None => previous
                    .filter(|p| p.kind == SystemKind::Http.as_str())
                    .and_then(|p| p.secret.clone()),
            }
        }
        SystemKind::Manual => {
            if input.connection.is_some() {
                return Err(Problem::validation(
                    "connection",
                    "a manual system has no connection",
                ));
            }
            None
        }
        kind @ (SystemKind::Postgres | SystemKind::Mysql) => match (&input.connection, previous) {
            (Some(c), _) => {
                let raw = c.url.as_deref().ok_or_else(|| {
                    Problem::validation(
                        "connection.url",
                        "a database system needs its connection URL",
                    )
                })?;
                if c.token.is_some()
                    || c.username.is_some()
                    || c.password.is_some()
                    || c.client_id.is_some()
                    || c.client_secret.is_some()
                {
                    return Err(Problem::validation(
                        "connection",
                        "a database system takes only `url` (credentials go in it)",
                    ));
                }
                let url = systems::check_url(kind, raw)?;
                config.connection = Some(systems::redact(&url));
                Some(keys.seal_secret(&format!("system:{key}"), raw.as_bytes()))
            }
            (None, Some(p)) if p.kind == kind.as_str() && p.secret.is_some() => {
                config.connection = StoredConfig::of(p).connection;
                p.secret.clone()
            }
            (None, _) => {
                return Err(Problem::validation(
                    "connection.url",
                    "a database system needs its connection URL",
                ));
            }
        },
    };
    let now = time::now();
    Ok(SystemRow {
        tenant: tenant.to_string(),
        key: key.to_string(),
        name: name.to_string(),
        kind: input.kind.as_str().into(),
        config: serde_json::to_value(&config).map_err(|e| Problem::bad_request(e.to_string()))?,
        secret,
        created_at: previous.map_or(now, |p| p.created_at),
        updated_at: previous.map_or(now, |p| now.max(p.updated_at + 1)),
    })
}

/// An HTTP system's connector, parameters and base URL, and its
/// credentials (none given: `None`).
fn http_config(
    app: &App,
    tenant: &str,
    input: Option<ConnectorInput>,
    connection: Option<ConnectionInput>,
) -> Result<(HttpConfig, Option<Credentials>), Problem> {
    let Some(input) = input else {
        return Err(Problem::validation(
            "connector",
            "an http system needs a connector: {\"template\": \"mailchimp\"} or a definition",
        ));
    };
    let bad = |field: &str, why: String| Problem::validation(field, why);
    let from_template = input.template.is_some();
    let connector = match (&input.template, &input.definition, &input.toml) {
        (Some(t), None, None) => systems::http::template(&app.systems.config.http, t)
            .map_err(|e| bad("connector.template", e))?,
        (None, Some(d), None) => {
            let c: Connector = serde_json::from_value(d.clone())
                .map_err(|e| bad("connector.definition", e.to_string()))?;
            systems::http::validate(&c).map_err(|e| bad("connector.definition", e))?;
            c
        }
        (None, None, Some(t)) => {
            if t.len() > 64 * 1024 {
                return Err(bad("connector.toml", "must be at most 64 KiB".into()));
            }
            systems::http::parse(t).map_err(|e| bad("connector.toml", e))?
        }
        _ => {
            return Err(bad(
                "connector",
                "give exactly one of template, definition or toml".into(),
            ));
        }
    };
    for p in &connector.params {
        match input.params.get(p) {
            Some(v) if !v.is_empty() && v.len() <= 500 => {}
            _ => {
                return Err(bad(
                    &format!("connector.params.{p}"),
                    format!("the {} connector needs parameter {p}", connector.name),
                ));
            }
        }
    }
    if let Some(extra) = input.params.keys().find(|k| !connector.params.contains(k)) {
        return Err(bad(
            &format!("connector.params.{extra}"),
            format!(
                "the {} connector takes no parameter {extra}",
                connector.name
            ),
        ));
    }
    let c = connection.unwrap_or(ConnectionInput {
        url: None,
        token: None,
        username: None,
        password: None,
        client_id: None,
        client_secret: None,
    });
    // A parameter of the base URL names a host part: letters, digits, '-'.
    for (k, v) in &input.params {
        if connector.base_url.contains(&format!("{{{k}}}"))
            && !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad(
                &format!("connector.params.{k}"),
                "is part of the host: letters, digits and '-' only".into(),
            ));
        }
    }
    let filled = |text: &str| {
        let mut t = text.to_string();
        for (k, v) in &input.params {
            t = t.replace(&format!("{{{k}}}"), v);
        }
        t
    };
    let base = filled(c.url.as_deref().unwrap_or(&connector.base_url));
    // A template's own hosts are allowed; anything else must be listed.
    let mut hosts = Vec::new();
    if from_template {
        hosts.extend(systems::http::host_of(&filled(&connector.base_url)));
        if let Auth::Oauth2 { token_url, .. } = &connector.auth {
            hosts.extend(systems::http::host_of(token_url));
        }
    }
    let url =
        url::Url::parse(&base).map_err(|e| bad("connection.url", format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad(
            "connection.url",
            "must be an http:// or https:// URL with a host".into(),
        ));
    }
    let purpose = input
        .purpose
        .clone()
        .or_else(|| connector.consent.as_ref().and_then(|k| k.purpose.clone()));
    if let Some(p) = &purpose {
        if connector.consent.is_none() {
            return Err(bad(
                "connector.purpose",
                format!("the {} connector sets no consent", connector.name),
            ));
        }
        let exists = app
            .view
            .read(tenant, |tv| tv.purposes.contains_key(p.as_str()))
            .unwrap_or(false);
        if !exists {
            return Err(bad(
                "connector.purpose",
                format!("purpose {p:?} does not exist"),
            ));
        }
    }
    let credentials = Credentials {
        token: c.token,
        username: c.username,
        password: c.password,
        client_id: c.client_id,
        client_secret: c.client_secret,
    };
    let given = credentials.token.is_some()
        || credentials.username.is_some()
        || credentials.password.is_some()
        || credentials.client_id.is_some()
        || credentials.client_secret.is_some();
    if given {
        let missing = match &connector.auth {
            Auth::Bearer if credentials.token.is_none() => Some("connection.token"),
            Auth::Basic { .. } if credentials.password.is_none() && credentials.token.is_none() => {
                Some("connection.password")
            }
            Auth::Oauth2 { .. } if credentials.client_id.is_none() => Some("connection.client_id"),
            Auth::Oauth2 { .. } if credentials.client_secret.is_none() => {
                Some("connection.client_secret")
            }
            _ => None,
        };
        if let Some(field) = missing {
            return Err(bad(
                field,
                format!("the {} connector's authentication needs it", connector.name),
            ));
        }
    }
    let hc = HttpConfig {
        template: input.template,
        params: input.params,
        base_url: url.as_str().trim_end_matches('/').to_string(),
        hosts,
        purpose,
        channel: input.channel,
        definition: Some(connector),
    };
    Ok((hc, given.then_some(credentials)))
}

async fn load(app: &App, tenant: &str, key: &str) -> Result<SystemRow, Problem> {
    app.store
        .system(tenant, key)
        .await?
        .ok_or_else(|| Problem::not_found(format!("system {key:?} does not exist")))
}

/// Register a connected system: a PostgreSQL or MySQL/MariaDB database
/// with its data map, or a team acting by hand (`manual`).
#[utoipa::path(post, path = "/v1/systems", tag = "systems", request_body = SystemInput,
    responses((status = 201, body = SystemView), (status = 409, body = ProblemBody),
        (status = 422, body = ProblemBody)), security(("api_key" = [])))]
pub async fn create(
    State(app): State<Arc<App>>,
    who: Principal,
    Json(input): Json<SystemInput>,
) -> Result<(StatusCode, axum::Json<SystemView>), Problem> {
    who.require(MANAGERS)?;
    let Some(key) = input.key.clone() else {
        return Err(Problem::validation("key", "name the system's key"));
    };
    check_key(&key)?;
    if app.store.system(&who.tenant, &key).await?.is_some() {
        return Err(
            Problem::conflict(format!("system {key:?} exists; PUT to change it")).field("key"),
        );
    }
    let row = row_of(&app, &who.tenant, &key, input, None).await?;
    app.store.put_system(&row).await?;
    Ok((StatusCode::CREATED, axum::Json(SystemView::of(row))))
}

/// The tenant's connected systems (connection secrets are never shown).
#[utoipa::path(get, path = "/v1/systems", tag = "systems",
    responses((status = 200, body = SystemList)), security(("api_key" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    who: Principal,
) -> Result<axum::Json<SystemList>, Problem> {
    who.require(STAFF)?;
    let rows = app.store.systems(&who.tenant).await?;
    Ok(axum::Json(SystemList {
        systems: rows.into_iter().map(SystemView::of).collect(),
    }))
}

/// One connected system.
#[utoipa::path(get, path = "/v1/systems/{key}", tag = "systems", params(("key" = String, Path)),
    responses((status = 200, body = SystemView), (status = 404, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(key): Path<String>,
) -> Result<axum::Json<SystemView>, Problem> {
    who.require(STAFF)?;
    Ok(axum::Json(SystemView::of(
        load(&app, &who.tenant, &key).await?,
    )))
}

/// Replace a system's settings and data map (without `connection`, a
/// database keeps its sealed URL).
#[utoipa::path(put, path = "/v1/systems/{key}", tag = "systems", params(("key" = String, Path)),
    request_body = SystemInput,
    responses((status = 200, body = SystemView), (status = 201, body = SystemView),
        (status = 422, body = ProblemBody)), security(("api_key" = [])))]
pub async fn put(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(key): Path<String>,
    Json(input): Json<SystemInput>,
) -> Result<(StatusCode, axum::Json<SystemView>), Problem> {
    who.require(MANAGERS)?;
    if let Some(k) = &input.key
        && *k != key
    {
        return Err(Problem::validation(
            "key",
            "differs from the key in the path",
        ));
    }
    let previous = app.store.system(&who.tenant, &key).await?;
    let row = row_of(&app, &who.tenant, &key, input, previous.as_ref()).await?;
    let created = app.store.put_system(&row).await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        axum::Json(SystemView::of(row)),
    ))
}

/// Remove a system (refused while requests are still to be carried out in it).
#[utoipa::path(delete, path = "/v1/systems/{key}", tag = "systems", params(("key" = String, Path)),
    responses((status = 204), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn delete(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(key): Path<String>,
) -> Result<StatusCode, Problem> {
    who.require(MANAGERS)?;
    load(&app, &who.tenant, &key).await?;
    let open = app.store.open_system_jobs(&who.tenant, &key).await?;
    if open > 0 {
        return Err(Problem::conflict(format!(
            "{open} request(s) are still to be carried out in system {key:?}"
        )));
    }
    app.store.delete_system(&who.tenant, &key).await?;
    app.systems.pools.forget(&who.tenant, &key);
    Ok(StatusCode::NO_CONTENT)
}

/// The result of `POST /v1/systems/{key}/test`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    pub ok: bool,
    /// The connection (`table: null`), then each mapped table.
    pub checks: Vec<TableCheck>,
}

/// Check that the system answers and that every mapped table and column
/// exists in its catalogue (`information_schema`).
#[utoipa::path(post, path = "/v1/systems/{key}/test", tag = "systems", params(("key" = String, Path)),
    responses((status = 200, body = TestResult), (status = 404, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn test(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(key): Path<String>,
) -> Result<axum::Json<TestResult>, Problem> {
    who.require(MANAGERS)?;
    let row = load(&app, &who.tenant, &key).await?;
    if row.kind == SystemKind::Manual.as_str() {
        return Err(Problem::validation(
            "key",
            "a manual system has no connection to test",
        ));
    }
    let checks = systems::test(&app, &row).await;
    Ok(axum::Json(TestResult {
        ok: checks.iter().all(|c| c.ok),
        checks,
    }))
}

/// A data category of the taxonomy.
#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryView {
    pub key: &'static str,
    /// A sensitive category (PDPA s.26, GDPR Art. 9/10).
    pub sensitive: bool,
    pub en: &'static str,
    pub th: &'static str,
}

/// The data categories columns are labelled with.
#[utoipa::path(get, path = "/v1/systems/categories", tag = "systems",
    responses((status = 200, body = Vec<CategoryView>)), security(("api_key" = [])))]
pub async fn categories(who: Principal) -> Result<axum::Json<Vec<CategoryView>>, Problem> {
    who.require(EVERYONE)?;
    Ok(axum::Json(
        map::CATEGORIES
            .iter()
            .map(|c| CategoryView {
                key: c.key,
                sensitive: c.sensitive,
                en: c.en,
                th: c.th,
            })
            .collect(),
    ))
}

/// The plan of `GET /v1/requests/{id}/plan`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Plan {
    pub request: String,
    pub kind: yinyom_core::rights::Kind,
    pub systems: Vec<SystemPlan>,
}

/// A dry run: per system and table, what completing the request would do
/// and to how many rows. Nothing is changed.
#[utoipa::path(get, path = "/v1/requests/{id}/plan", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, body = Plan), (status = 404, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn plan(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Plan>, Problem> {
    who.require(STAFF)?;
    let r = crate::rights::load(app.store.as_ref(), &who.tenant, &id).await?;
    let systems = systems::plan(&app, &r).await?;
    Ok(axum::Json(Plan {
        request: r.id,
        kind: r.kind,
        systems,
    }))
}

/// Body of `POST /v1/requests/{id}/systems/{key}/confirm`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmInput {
    /// What the team did (kept with the request).
    pub note: String,
}

/// A manual system's part is done: staff confirm it with a note. The
/// request completes when every system is done.
#[utoipa::path(post, path = "/v1/requests/{id}/systems/{key}/confirm", tag = "requests",
    params(("id" = String, Path), ("key" = String, Path)), request_body = ConfirmInput,
    responses((status = 200, body = Vec<SystemStatus>), (status = 404, body = ProblemBody),
        (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn confirm(
    State(app): State<Arc<App>>,
    who: Principal,
    Path((id, key)): Path<(String, String)>,
    Json(b): Json<ConfirmInput>,
) -> Result<axum::Json<Vec<SystemStatus>>, Problem> {
    who.require(STAFF)?;
    let note = b.note.trim();
    if note.is_empty() || note.len() > 2000 {
        return Err(Problem::validation("note", "must be 1-2000 bytes"));
    }
    crate::rights::load(app.store.as_ref(), &who.tenant, &id).await?;
    systems::confirm(&app, &who.tenant, &id, &key, note, &who.actor()).await?;
    Ok(axum::Json(
        systems::statuses(app.store.as_ref(), &who.tenant, &id).await?,
    ))
}

/// A subject's consent propagation to one system.
#[derive(Debug, Serialize, ToSchema)]
pub struct PropagationView {
    pub system: String,
    /// `pending`, `running`, `done`, `failed` (retried).
    pub status: String,
    pub rows: i64,
    pub error: Option<String>,
    pub attempts: i64,
    pub finished_at: Option<String>,
    pub retry_at: Option<String>,
    pub updated_at: String,
}

/// How the subject's consent changes reached each connected system's
/// consent columns.
#[utoipa::path(get, path = "/v1/subjects/{id}/systems", tag = "subjects", params(("id" = String, Path)),
    responses((status = 200, body = Vec<PropagationView>), (status = 404, body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn propagation(
    State(app): State<Arc<App>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Vec<PropagationView>>, Problem> {
    who.require(STAFF)?;
    let Some(s) = app.store.subject(&who.tenant, &id).await? else {
        return Err(Problem::not_found(format!("subject {id:?} does not exist")));
    };
    let rows = app.store.propagations(&who.tenant, &s.uid).await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|p| PropagationView {
                retry_at: (p.status == "failed")
                    .then_some(p.next_at)
                    .flatten()
                    .map(time::rfc3339),
                system: p.system,
                status: p.status,
                rows: p.rows,
                error: p.error,
                attempts: p.attempts,
                finished_at: p.finished_at.map(time::rfc3339),
                updated_at: time::rfc3339(p.updated_at),
            })
            .collect(),
    ))
}
