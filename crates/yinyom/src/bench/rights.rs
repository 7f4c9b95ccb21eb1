//! `yinyom bench --only rights`: erasure requests carried out in connected
//! systems — a PostgreSQL schema (customers deleted, orders masked), a
//! MariaDB database (members deleted), rows found by the subject's id, and
//! an HTTP system registered from the built-in `mailchimp` connector
//! template, served on loopback by a server that speaks the calls the
//! template makes (find the member by the MD5 of the email, then
//! `POST …/actions/delete-permanent`); Yinyom's own store is SQLite. Three
//! measurements:
//!
//! 1. one erasure at a time: from `complete` to every system `done`
//!    (p50 and worst of 20);
//! 2. 1,000 erasure requests completed 8 at a time: until every request is
//!    `completed`;
//! 3. 200 more while the MariaDB system is down (its URL points at a closed
//!    port) and the HTTP system answers 503, for 3 s, then both repaired:
//!    every request completes, none is lost, every member is deleted once.
//!
//! Needs PostgreSQL (`YINYOM_TEST_POSTGRES_URL`, default the local `test`
//! database) and MariaDB (`YINYOM_TEST_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use futures_util::StreamExt;
use md5::{Digest, Md5};
use sqlx::Connection;
use tower::ServiceExt;
use yinyom_core::rights::{Kind, Step};
use yinyom_core::time;

use super::{BenchArgs, seeded_store};
use crate::app::{App, Config};
use crate::rights::{self, NewRequest};
use crate::store::scratch::{self, Scratch};
use crate::store::{SqlStore, Store, SystemRow};
use crate::systems::{StoredConfig, SystemsConfig};

const SINGLE: usize = 20;
const MANY: usize = 1_000;
const DOWN: usize = 200;
const CONCURRENCY: usize = 8;

type BoxError = Box<dyn std::error::Error>;

fn mysql_base() -> String {
    std::env::var("YINYOM_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

fn tables(json: serde_json::Value) -> Vec<yinyom_core::systems::TableMap> {
    serde_json::from_value(json).expect("bench data map")
}

async fn register(
    app: &App,
    tenant: &str,
    key: &str,
    kind: &str,
    url: &str,
    map: Vec<yinyom_core::systems::TableMap>,
) -> Result<(), BoxError> {
    let keys = app.vault.tenant(app.store.as_ref(), tenant).await?;
    let now = time::now();
    let previous = app.store.system(tenant, key).await?;
    app.store
        .put_system(&SystemRow {
            tenant: tenant.into(),
            key: key.into(),
            name: key.into(),
            kind: kind.into(),
            config: serde_json::to_value(StoredConfig {
                tables: map,
                connection: None,
                instructions: None,
                connector: None,
            })?,
            secret: Some(keys.seal_secret(&format!("system:{key}"), url.as_bytes())),
            created_at: now,
            updated_at: previous.map_or(now, |p| now.max(p.updated_at + 1)),
        })
        .await?;
    Ok(())
}

/// A loopback Mailchimp audience: the members by subscriber hash (MD5 of
/// the lower-case email), whether it answers, and what it deleted.
#[derive(Default)]
struct Audience {
    members: std::sync::Mutex<std::collections::HashSet<String>>,
    deleted: std::sync::Mutex<Vec<String>>,
    down: std::sync::atomic::AtomicBool,
    refused: std::sync::atomic::AtomicU64,
}

fn email_of(subject: &str) -> String {
    format!("{subject}@example.com")
}

fn subscriber_hash(email: &str) -> String {
    hex::encode(Md5::digest(email.to_lowercase().as_bytes()))
}

impl Audience {
    /// 503 while down; 401 without the Basic credentials the template sends.
    fn gate(&self, headers: &HeaderMap) -> Option<StatusCode> {
        use std::sync::atomic::Ordering;
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Some(StatusCode::SERVICE_UNAVAILABLE);
        }
        let basic = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Basic "));
        (!basic).then_some(StatusCode::UNAUTHORIZED)
    }
}

/// `GET /3.0/lists/{list_id}/members/{subscriber_hash}` and
/// `POST /3.0/lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent`,
/// as Mailchimp's Marketing API v3 documents them.
fn mailchimp(audience: Arc<Audience>) -> axum::Router {
    async fn find(
        State(a): State<Arc<Audience>>,
        Path((_list, hash)): Path<(String, String)>,
        headers: HeaderMap,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        if let Some(code) = a.gate(&headers) {
            return (
                code,
                axum::Json(serde_json::json!({"title": "unavailable"})),
            )
                .into_response();
        }
        let known = a.members.lock().is_ok_and(|m| m.contains(&hash));
        if known {
            axum::Json(serde_json::json!({"id": hash, "status": "subscribed"})).into_response()
        } else {
            (
                StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({"title": "Resource Not Found"})),
            )
                .into_response()
        }
    }
    async fn delete(
        State(a): State<Arc<Audience>>,
        Path((_list, hash)): Path<(String, String)>,
        headers: HeaderMap,
    ) -> StatusCode {
        if let Some(code) = a.gate(&headers) {
            return code;
        }
        let removed = a.members.lock().is_ok_and(|mut m| m.remove(&hash));
        if !removed {
            return StatusCode::NOT_FOUND;
        }
        if let Ok(mut d) = a.deleted.lock() {
            d.push(hash);
        }
        StatusCode::NO_CONTENT
    }
    axum::Router::new()
        .route("/3.0/lists/{list}/members/{hash}", axum::routing::get(find))
        .route(
            "/3.0/lists/{list}/members/{hash}/actions/delete-permanent",
            axum::routing::post(delete),
        )
        .with_state(audience)
}

/// A call to Yinyom's own API (in process, through the real router).
async fn call(
    app: &Arc<App>,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> Result<(), BoxError> {
    let req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {}", super::KEY))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))?;
    let res = crate::api::router(app.clone()).oneshot(req).await?;
    if !res.status().is_success() {
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20).await?;
        return Err(format!(
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    Ok(())
}

/// Receive, verify and complete an erasure for `subject`; its id.
async fn erase(app: &App, tenant: &str, subject: String) -> Result<String, String> {
    let r = rights::receive(
        app,
        tenant,
        NewRequest {
            subject,
            kind: Kind::Erasure,
            purposes: vec![],
            corrections: None,
            via: "bench".into(),
            received_at: None,
            actor: "bench".into(),
        },
    )
    .await
    .map_err(|p| format!("{p:?}"))?;
    for step in [Step::Verify, Step::Complete] {
        rights::act(app, tenant, &r.id, step, None, "bench")
            .await
            .map_err(|p| format!("{p:?}"))?;
    }
    Ok(r.id)
}

async fn all_done(app: &App, tenant: &str, id: &str) -> bool {
    app.store
        .request_system_jobs(tenant, id)
        .await
        .is_ok_and(|j| !j.is_empty() && j.iter().all(|j| j.status == "done"))
}

async fn completed(app: &App, tenant: &str, ids: &[String]) -> Result<usize, BoxError> {
    let mut n = 0;
    for id in ids {
        if app
            .store
            .request(tenant, id)
            .await?
            .is_some_and(|r| r.status == yinyom_core::rights::Status::Completed)
        {
            n += 1;
        }
    }
    Ok(n)
}

pub(crate) async fn rights(_args: &BenchArgs, dir: &std::path::Path) -> Result<(), BoxError> {
    let subjects = SINGLE + MANY + DOWN;
    // Seeded subjects are cust-0, cust-2, …: one per request.
    let store: Arc<dyn Store> = Arc::new(SqlStore::sqlite(&dir.join("rights.db")).await?);
    let store = seeded_store(store, 2 * subjects).await?;
    let app = App::start_with(
        store,
        Config {
            systems: SystemsConfig {
                retry_base: Duration::from_millis(200),
                retry_max: Duration::from_secs(1),
                http: crate::systems::http::HttpSettings {
                    allow_hosts: vec!["127.0.0.1".into()],
                    allow_private: vec!["127.0.0.1".into()],
                    ..Default::default()
                },
            },
            ..Config::default()
        },
    )
    .await?;
    let tenant = app.store.tenants().await?.remove(0).id;
    let ids: Vec<String> = (0..subjects).map(|i| format!("cust-{}", 2 * i)).collect();

    // The email platform over HTTP: every subject is a member, found by email.
    let audience = Arc::new(Audience::default());
    for id in &ids {
        if let Ok(mut m) = audience.members.lock() {
            m.insert(subscriber_hash(&email_of(id)));
        }
        call(
            &app,
            "PUT",
            &format!("/v1/subjects/{id}"),
            serde_json::json!({"identifiers": {"email": email_of(id)}}),
        )
        .await?;
    }
    let mc = super::serve(mailchimp(audience.clone())).await?;
    call(
        &app,
        "POST",
        "/v1/systems",
        serde_json::json!({"key": "mailchimp", "name": "Mailchimp", "kind": "http",
            "connector": {"template": "mailchimp", "params": {"dc": "us1", "list_id": "bench"}},
            "connection": {"url": format!("http://{mc}"), "password": "bench-key"}}),
    )
    .await?;

    // The shop on PostgreSQL.
    let shop = Scratch::create(&scratch::postgres_url()).await?;
    let mut pg = sqlx::PgConnection::connect(&shop.url()).await?;
    for s in [
        "CREATE TABLE customers (subject text PRIMARY KEY, email text, full_name text)",
        "CREATE TABLE orders (id serial PRIMARY KEY, subject text NOT NULL, ship_address text)",
        "CREATE INDEX orders_subject ON orders (subject)",
        "INSERT INTO customers SELECT 'cust-' || (2 * i), 'c' || i || '@example.com', 'Name ' || i
         FROM generate_series(0, 10000) i",
        "INSERT INTO orders (subject, ship_address) SELECT 'cust-' || (2 * (i % 10001)), 'Road ' || i
         FROM generate_series(0, 30000) i",
        "ANALYZE",
    ] {
        sqlx::query(s).execute(&mut pg).await?;
    }
    // The loyalty programme on MariaDB.
    let db = format!("yy_{}", uuid::Uuid::new_v4().simple());
    let mut root = sqlx::MySqlConnection::connect(&mysql_base()).await?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut root)
        .await?;
    let my_url = format!("{}/{db}", mysql_base());
    let result = async {
        let mut my = sqlx::MySqlConnection::connect(&my_url).await?;
        sqlx::query(
            "CREATE TABLE members (subject VARCHAR(64) PRIMARY KEY, name VARCHAR(100), points INT)",
        )
        .execute(&mut my)
        .await?;
        for chunk in (0..10_001).collect::<Vec<usize>>().chunks(1000) {
            let values: Vec<String> = chunk
                .iter()
                .map(|i| format!("('cust-{}', 'Member {i}', {i})", 2 * i))
                .collect();
            sqlx::query(&format!("INSERT INTO members VALUES {}", values.join(",")))
                .execute(&mut my)
                .await?;
        }
        register(
            &app,
            &tenant,
            "shop",
            "postgres",
            &shop.url(),
            tables(serde_json::json!([
                {"name": "customers", "identity": {"column": "subject", "identifier": "subject"},
                 "columns": {"email": "contact.email", "full_name": "user.name"}, "on_erasure": "delete"},
                {"name": "orders", "identity": {"column": "subject", "identifier": "subject"},
                 "columns": {"ship_address": "user.address"}, "on_erasure": "mask"}])),
        )
        .await?;
        let loyalty_map = tables(serde_json::json!([
            {"name": "members", "identity": {"column": "subject", "identifier": "subject"},
             "columns": {"name": "user.name", "points": "behaviour.purchase"}, "on_erasure": "delete"}]));
        register(&app, &tenant, "loyalty", "mysql", &my_url, loyalty_map.clone()).await?;

        // 1. One at a time.
        let mut took = Vec::new();
        for subject in &ids[..SINGLE] {
            let start = Instant::now();
            let id = erase(&app, &tenant, subject.clone()).await?;
            while !all_done(&app, &tenant, &id).await {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            took.push(start.elapsed());
        }
        took.sort();
        println!(
            "{:<34} p50 {:.0} ms, worst {:.0} ms (complete → PostgreSQL, MariaDB and HTTP done, ×{SINGLE})",
            "erasure in 3 connected systems",
            took[SINGLE / 2].as_secs_f64() * 1000.0,
            took[SINGLE - 1].as_secs_f64() * 1000.0,
        );

        // 2. Many.
        let start = Instant::now();
        let requests: Vec<Result<String, String>> = futures_util::stream::iter(ids[SINGLE..SINGLE + MANY].to_vec())
            .map(|s| erase(&app, &tenant, s))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let submitted = start.elapsed();
        let requests: Vec<String> = requests.into_iter().collect::<Result<_, _>>()?;
        while completed(&app, &tenant, &requests).await? < MANY {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "{:<34} {:.1} s until all completed ({:.1} s to complete them in Yinyom; {:.0}/s)",
            format!("{MANY} erasures, 3 systems"),
            start.elapsed().as_secs_f64(),
            submitted.as_secs_f64(),
            MANY as f64 / start.elapsed().as_secs_f64(),
        );

        // 3. MariaDB and the HTTP system down for 3 s.
        register(&app, &tenant, "loyalty", "mysql", "mysql://root@127.0.0.1:1/none", loyalty_map.clone()).await?;
        audience.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let start = Instant::now();
        let requests: Vec<Result<String, String>> =
            futures_util::stream::iter(ids[SINGLE + MANY..].to_vec())
                .map(|s| erase(&app, &tenant, s))
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
        let requests: Vec<String> = requests.into_iter().collect::<Result<_, _>>()?;
        tokio::time::sleep(Duration::from_secs(3).saturating_sub(start.elapsed())).await;
        let mut attempts_while_down = 0;
        for id in &requests {
            attempts_while_down += app
                .store
                .request_system_jobs(&tenant, id)
                .await?
                .iter()
                .filter(|j| j.system == "loyalty" || j.system == "mailchimp")
                .map(|j| j.attempts)
                .sum::<i64>();
        }
        register(&app, &tenant, "loyalty", "mysql", &my_url, loyalty_map).await?;
        audience.down.store(false, std::sync::atomic::Ordering::SeqCst);
        let repaired = Instant::now();
        let deadline = repaired + Duration::from_secs(120);
        let mut done = 0;
        while Instant::now() < deadline {
            done = completed(&app, &tenant, &requests).await?;
            if done == DOWN {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM members")
            .fetch_one(&mut my)
            .await?;
        let (deleted, unique, members_left, refused) = {
            let d = audience.deleted.lock().map(|d| d.clone()).unwrap_or_default();
            let unique = d.iter().collect::<std::collections::HashSet<_>>().len();
            let left = audience.members.lock().map(|m| m.len()).unwrap_or(usize::MAX);
            (d.len(), unique, left, audience.refused.load(std::sync::atomic::Ordering::SeqCst))
        };
        println!(
            "{:<34} {done}/{DOWN} completed {:.1} s after repair; {attempts_while_down} attempts while down \
             ({refused} HTTP calls refused); MariaDB: {left} of 10,001 members left (expected {}); \
             HTTP: {deleted} members deleted ({} twice), {members_left} left (expected 0)",
            "MariaDB + HTTP down 3 s, repaired",
            repaired.elapsed().as_secs_f64(),
            10_001 - subjects,
            deleted - unique,
        );
        Ok::<_, BoxError>(())
    }
    .await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute(&mut root)
        .await;
    result
}
