//! Connected systems end to end (issue 14): a rights request carried out in
//! the tenant's own PostgreSQL and MariaDB databases and by a manual team,
//! with the plan, per-system status, retries and consent propagation.
//! Yinyom's own store runs on SQLite and PostgreSQL; the connected
//! databases are a throwaway schema in the machine's PostgreSQL and a
//! throwaway database in its MariaDB (127.0.0.1:3306, root).

#[macro_use]
mod common;

use std::io::Read;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, Row};

use common::{Backend, TestApp, eventually};
use yinyom::store::scratch::{self, Scratch};

const EMAIL: &str = "malee.shop@example.com";
const OTHER: &str = "somchai.shop@example.com";

/// A throwaway database in the machine's MariaDB, dropped afterwards.
struct Maria {
    name: String,
}

fn maria_base() -> String {
    std::env::var("YINYOM_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

impl Maria {
    async fn create() -> Maria {
        let name = format!("yy_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::MySqlConnection::connect(&maria_base())
            .await
            .expect("MariaDB for tests at 127.0.0.1:3306 (YINYOM_TEST_MYSQL_URL)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
        Maria { name }
    }

    fn url(&self) -> String {
        format!("{}/{}", maria_base(), self.name)
    }

    async fn conn(&self) -> sqlx::MySqlConnection {
        sqlx::MySqlConnection::connect(&self.url()).await.unwrap()
    }
}

impl Drop for Maria {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut c = sqlx::MySqlConnection::connect(&maria_base()).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                    .execute(&mut c)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// The shop: a PostgreSQL schema with customers (phone stored in E.164)
/// and orders (customer_email NOT NULL), for our subject and another.
async fn shop_db() -> (Scratch, sqlx::PgConnection) {
    let s = Scratch::create(&scratch::postgres_url()).await.unwrap();
    let mut c = sqlx::PgConnection::connect(&s.url()).await.unwrap();
    for stmt in [
        "CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL, phone text,
            full_name text, email_opt_in boolean NOT NULL DEFAULT false)",
        "CREATE TABLE orders (id serial PRIMARY KEY, customer_email varchar(40) NOT NULL,
            ship_address text, total numeric(10,2) NOT NULL)",
        "CREATE TABLE invoices (id serial PRIMARY KEY, email text NOT NULL, amount int NOT NULL)",
    ] {
        sqlx::query(stmt).execute(&mut c).await.unwrap();
    }
    for (email, phone, name) in [
        ("Malee.Shop@example.com", "+66898765432", "มาลี ใจดี"),
        (OTHER, "+66811111111", "สมชาย"),
    ] {
        sqlx::query("INSERT INTO customers (email, phone, full_name) VALUES ($1, $2, $3)")
            .bind(email)
            .bind(phone)
            .bind(name)
            .execute(&mut c)
            .await
            .unwrap();
    }
    for (email, addr) in [
        (EMAIL, "1 ถนนสุขุมวิท กรุงเทพฯ"),
        (EMAIL, "2 Silom Rd"),
        (OTHER, "9 Rama IV"),
    ] {
        sqlx::query(
            "INSERT INTO orders (customer_email, ship_address, total) VALUES ($1, $2, 100)",
        )
        .bind(email)
        .bind(addr)
        .execute(&mut c)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO invoices (email, amount) VALUES ($1, 500), ($2, 700)")
        .bind(EMAIL)
        .bind(OTHER)
        .execute(&mut c)
        .await
        .unwrap();
    (s, c)
}

/// The loyalty programme: a MariaDB table whose phone is stored in the
/// Thai national form (`089-876-5432`).
async fn loyalty_db() -> Maria {
    let m = Maria::create().await;
    let mut c = m.conn().await;
    sqlx::query(
        "CREATE TABLE members (id INT AUTO_INCREMENT PRIMARY KEY, phone VARCHAR(20) NOT NULL,
            name VARCHAR(100), points INT NOT NULL DEFAULT 0, sms_opt_in TINYINT(1) NOT NULL DEFAULT 0)",
    )
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query("INSERT INTO members (phone, name, points) VALUES (?, ?, 10), (?, ?, 20)")
        .bind("089-876-5432")
        .bind("Malee")
        .bind("0811111111")
        .bind("Somchai")
        .execute(&mut c)
        .await
        .unwrap();
    m
}

fn shop_system(url: &str) -> Value {
    json!({"key": "shop", "name": "Shop", "kind": "postgres",
        "connection": {"url": url},
        "tables": [
            {"name": "customers", "identity": {"column": "email", "identifier": "email"},
             "columns": {"email": "contact.email", "phone": "contact.phone", "full_name": "user.name"},
             "on_erasure": "delete",
             "consent": {"email_opt_in": {"purpose": "marketing.email", "channel": "email"}}},
            {"name": "orders", "identity": {"column": "customer_email", "identifier": "email"},
             "columns": {"customer_email": "contact.email", "ship_address": "user.address"},
             "on_erasure": "mask"},
            {"name": "invoices", "identity": {"column": "email", "identifier": "email"},
             "columns": {"email": "contact.email", "amount": "financial.transaction"},
             "on_erasure": "retain", "reason": "tax records kept 5 years (Revenue Code s.87/3)"}]})
}

fn loyalty_system(url: &str) -> Value {
    json!({"key": "loyalty", "name": "Loyalty", "kind": "mysql",
        "connection": {"url": url},
        "tables": [
            {"name": "members", "identity": {"column": "phone", "identifier": "phone"},
             "columns": {"phone": "contact.phone", "name": "user.name", "points": "behaviour.purchase"},
             "on_erasure": "delete"}]})
}

async fn setup(t: &TestApp, subject: &str) {
    t.post(
        "/v1/purposes",
        json!({
            "key": "marketing.email",
            "names": { "th": "การตลาดทางอีเมล", "en": "Email marketing" },
            "basis": "consent", "channels": ["email"], "retention_days": 365,
        }),
    )
    .await;
    let (status, _, body) = t
        .request(
            Method::PUT,
            &format!("/v1/subjects/{subject}"),
            &t.owner,
            Some(json!({ "identifiers": { "email": EMAIL, "phone": "+66 89 876 5432" } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn request(t: &TestApp, subject: &str, kind: &str, extra: Value) -> String {
    let mut body = json!({ "subject": subject, "kind": kind });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let r = t.post("/v1/requests", body).await;
    let id = r["id"].as_str().unwrap().to_string();
    act(t, &id, "verify").await;
    id
}

async fn act(t: &TestApp, id: &str, action: &str) -> Value {
    let (status, _, r) = t
        .request(
            Method::POST,
            &format!("/v1/requests/{id}/actions"),
            &t.owner,
            Some(json!({ "action": action })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{action}: {r}");
    r
}

fn system<'a>(r: &'a Value, key: &str) -> &'a Value {
    r["systems"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["key"] == key))
        .unwrap_or_else(|| panic!("no system {key} in {r}"))
}

async fn wait_status(t: &TestApp, id: &str, key: &str, status: &str) -> Value {
    let path = format!("/v1/requests/{id}");
    let ok = eventually(Duration::from_secs(20), || async {
        system(&t.get(&path).await, key)["status"] == status
    })
    .await;
    let r = t.get(&path).await;
    assert!(ok, "{key} never became {status}: {r}");
    r
}

async fn opt_in(pg: &mut sqlx::PgConnection) -> bool {
    sqlx::query_scalar::<_, bool>(
        "SELECT email_opt_in FROM customers WHERE lower(email) = 'malee.shop@example.com'",
    )
    .fetch_one(pg)
    .await
    .unwrap()
}

async fn count_pg(c: &mut sqlx::PgConnection, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(c)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

async fn registration_takes_the_contract_shape_and_keeps_secrets_sealed(backend: Backend) {
    let t = TestApp::new(backend).await;
    // The exact shape of the issue.
    let contract = json!({"key": "shop", "name": "Shop", "kind": "postgres",
     "connection": {"url": "postgres://user@host:5432/db"},
     "tables": [
       {"name": "customers", "identity": {"column": "email", "identifier": "email"},
        "columns": {"email": "contact.email", "phone": "contact.phone", "full_name": "user.name"},
        "on_erasure": "delete"},
       {"name": "orders", "identity": {"column": "customer_email", "identifier": "email"},
        "columns": {"customer_email": "contact.email", "ship_address": "user.address"},
        "on_erasure": "mask"}]});
    let created = t.post("/v1/systems", contract.clone()).await;
    assert_eq!(created["kind"], "postgres");
    assert_eq!(created["tables"][1]["on_erasure"], "mask");
    assert_eq!(
        created["connection"]["display"],
        "postgres://user@host:5432/db"
    );
    // Same key again: 409.
    let (status, _, _) = t
        .request(Method::POST, "/v1/systems", &t.owner, Some(contract))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // A password is sealed and never shown.
    let (status, _, body) = t
        .request(
            Method::PUT,
            "/v1/systems/crm",
            &t.owner,
            Some(json!({"name": "CRM", "kind": "mysql",
                "connection": {"url": "mysql://crm:Sup3rS3cret@db.internal:3306/crm?password=AlsoSecret"},
                "tables": []})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for path in ["/v1/systems", "/v1/systems/crm"] {
        let text = t.get(path).await.to_string();
        assert!(
            !text.contains("Sup3rS3cret") && !text.contains("AlsoSecret"),
            "{text}"
        );
        assert!(text.contains("db.internal"), "{text}");
    }
    // The stored row holds no clear URL either.
    let stored = yinyom::store::Systems::system(t.store.as_ref(), &t.tenant, "crm")
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.config.to_string().contains("Sup3rS3cret"));
    let sealed = stored.secret.unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("Sup3rS3cret"));
    // A PUT without connection keeps it.
    let (status, _, body) = t
        .request(
            Method::PUT,
            "/v1/systems/crm",
            &t.owner,
            Some(json!({"name": "CRM 2", "kind": "mysql", "tables": []})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["connection"]["sealed"], true);

    // Bad maps are 422 problems that name the field.
    for (bad, field) in [
        // An HTTP system needs its connector (tests/http_connectors.rs).
        (
            json!({"key": "h", "name": "H", "kind": "http"}),
            "connector",
        ),
        (
            json!({"key": "h", "name": "H", "kind": "http", "connector": {"template": "nope"}}),
            "connector.template",
        ),
        (
            json!({"key": "x", "name": "X", "kind": "postgres", "connection": {"url": "mysql://a@b/c"}}),
            "connection.url",
        ),
        (
            json!({"key": "x", "name": "X", "kind": "postgres", "connection": {"url": "postgres://a@b/c"},
                "tables": [{"name": "t", "identity": {"column": "e", "identifier": "email"},
                "columns": {"e": "contact.fax"}, "on_erasure": "delete"}]}),
            "tables/0/columns/e",
        ),
        (
            json!({"key": "x", "name": "X", "kind": "postgres", "connection": {"url": "postgres://a@b/c"},
                "tables": [{"name": "t; DROP TABLE x", "identity": {"column": "e", "identifier": "email"},
                "on_erasure": "delete"}]}),
            "tables/0/name",
        ),
        (
            json!({"key": "x", "name": "X", "kind": "postgres", "connection": {"url": "postgres://a@b/c"},
                "tables": [{"name": "t", "identity": {"column": "e", "identifier": "email"},
                "columns": {"e": "contact.email"}, "on_erasure": "retain"}]}),
            "tables/0/reason",
        ),
    ] {
        let (status, _, body) = t
            .request(Method::POST, "/v1/systems", &t.owner, Some(bad))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["field"], field, "{body}");
    }
    // The taxonomy is published, with the s.26 sensitive categories.
    let cats = t.get("/v1/systems/categories").await;
    assert!(
        cats.as_array()
            .unwrap()
            .iter()
            .any(|c| c["key"] == "sensitive.health" && c["sensitive"] == true)
    );

    // The contract's host does not exist: the test says so, per connection.
    let test = t.post_ok("/v1/systems/shop/test", json!({})).await;
    assert_eq!(test["ok"], false, "{test}");
    assert!(test["checks"][0]["error"].is_string(), "{test}");

    let (status, _, _) = t
        .request(Method::DELETE, "/v1/systems/crm", &t.owner, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        t.get("/v1/systems").await["systems"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

async fn the_test_reads_the_catalogue(backend: Backend) {
    let t = TestApp::new(backend).await;
    let (shop, _c) = shop_db().await;
    let loyalty = loyalty_db().await;
    setup(&t, "malee").await;
    t.post("/v1/systems", loyalty_system(&loyalty.url())).await;
    let ok = t.post_ok("/v1/systems/loyalty/test", json!({})).await;
    assert_eq!(ok["ok"], true, "{ok}");
    // A column and a table that do not exist are named.
    let mut map = shop_system(&shop.url());
    map["tables"][0]["columns"]["birthday"] = json!("user.birth_date");
    map["tables"][1]["name"] = json!("order_lines");
    t.post("/v1/systems", map).await;
    let bad = t.post_ok("/v1/systems/shop/test", json!({})).await;
    assert_eq!(bad["ok"], false);
    let text = bad.to_string();
    assert!(text.contains("no column birthday"), "{text}");
    assert!(text.contains("no such table"), "{text}");
}

async fn erasure_reaches_every_system_after_a_dry_run(backend: Backend) {
    let t = TestApp::new(backend).await;
    let (shop, mut pg) = shop_db().await;
    let loyalty = loyalty_db().await;
    setup(&t, "malee").await;
    t.post("/v1/systems", shop_system(&shop.url())).await;
    t.post("/v1/systems", loyalty_system(&loyalty.url())).await;
    t.post(
        "/v1/systems",
        json!({"key": "callcenter", "name": "Call centre", "kind": "manual",
            "instructions": "Delete the caller's recordings in the call system"}),
    )
    .await;
    let id = request(&t, "malee", "erasure", json!({})).await;

    // The dry run counts, per system and table, and changes nothing.
    let plan = t.get(&format!("/v1/requests/{id}/plan")).await;
    let sys = |k: &str| {
        plan["systems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == k)
            .cloned()
            .unwrap()
    };
    let shop_plan = sys("shop");
    assert_eq!(shop_plan["action"], "run", "{plan}");
    let tables = shop_plan["tables"].as_array().unwrap();
    assert_eq!(tables[0]["table"], "customers");
    assert_eq!(tables[0]["action"], "delete");
    // Stored as Malee.Shop@…: emails match in any case.
    assert_eq!(tables[0]["rows"], 1);
    assert_eq!(tables[1]["action"], "mask");
    assert_eq!(tables[1]["rows"], 2);
    assert_eq!(tables[2]["action"], "retain");
    assert_eq!(tables[2]["rows"], 1);
    // The profile holds +66898765432; the loyalty table 089-876-5432.
    assert_eq!(sys("loyalty")["tables"][0]["rows"], 1, "{plan}");
    assert_eq!(sys("callcenter")["action"], "manual");
    assert_eq!(count_pg(&mut pg, "SELECT COUNT(*) FROM customers").await, 2);

    let started = std::time::Instant::now();
    let done = act(&t, &id, "complete").await;
    assert_eq!(done["status"], "in_progress", "{done}");
    assert_eq!(system(&done, "callcenter")["status"], "manual");
    let r = wait_status(&t, &id, "shop", "done").await;
    let r2 = wait_status(&t, &id, "loyalty", "done").await;
    // The task is woken at once: well within the 1 s on a quiet
    // machine (bounded loosely here, CI shares its cores).
    let took = started.elapsed();
    eprintln!("erasure in PostgreSQL and MariaDB done {took:?} after complete");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(system(&r, "shop")["rows"], 3, "{r}"); // 1 deleted + 2 masked; retained rows not counted
    assert_eq!(system(&r2, "loyalty")["rows"], 1);
    assert!(system(&r2, "shop")["finished_at"].is_string());
    // Waiting for the team.
    assert_eq!(r2["status"], "in_progress");

    // Exactly the subject's rows, in every system.
    assert_eq!(count_pg(&mut pg, "SELECT COUNT(*) FROM customers").await, 1);
    assert_eq!(
        count_pg(
            &mut pg,
            &format!("SELECT COUNT(*) FROM customers WHERE email = '{OTHER}'")
        )
        .await,
        1
    );
    let orders = sqlx::query("SELECT customer_email, ship_address FROM orders ORDER BY id")
        .fetch_all(&mut pg)
        .await
        .unwrap();
    assert_eq!(orders.len(), 3, "masking keeps the rows");
    for o in &orders[..2] {
        let email: String = o.get(0);
        assert!(email.starts_with("yy_") && email.len() <= 40, "{email}");
        assert_eq!(o.get::<Option<String>, _>(1), None);
    }
    // Both masked rows carry the same pseudonym; the other subject is untouched.
    assert_eq!(orders[0].get::<String, _>(0), orders[1].get::<String, _>(0));
    assert_eq!(orders[2].get::<String, _>(0), OTHER);
    assert_eq!(
        orders[2].get::<Option<String>, _>(1).as_deref(),
        Some("9 Rama IV")
    );
    assert_eq!(count_pg(&mut pg, "SELECT COUNT(*) FROM invoices").await, 2);
    let mut my = loyalty.conn().await;
    let left: Vec<String> = sqlx::query_scalar("SELECT phone FROM members")
        .fetch_all(&mut my)
        .await
        .unwrap();
    assert_eq!(left, vec!["0811111111".to_string()]);

    // The team confirms; the request completes and records the retention.
    let (status, _, body) = t
        .request(
            Method::POST,
            &format!("/v1/requests/{id}/systems/callcenter/confirm"),
            &t.owner,
            Some(json!({"note": "recordings deleted by Khun Dao"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = t.get(&format!("/v1/requests/{id}")).await;
    assert_eq!(r["status"], "completed", "{r}");
    assert!(r["closed_at"].is_string());
    let last = r["steps"].as_array().unwrap().last().unwrap()["outcome"].to_string();
    assert!(
        last.contains("Revenue Code s.87/3") && last.contains("Khun Dao"),
        "{last}"
    );
    let invoices = &system(&r, "shop")["tables"][2];
    assert_eq!(
        invoices["reason"],
        "tax records kept 5 years (Revenue Code s.87/3)"
    );
    // A system with open work cannot be removed; once done it can.
    let (status, _, _) = t
        .request(Method::DELETE, "/v1/systems/loyalty", &t.owner, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Confirming twice is refused.
    let (status, _, _) = t
        .request(
            Method::POST,
            &format!("/v1/requests/{id}/systems/callcenter/confirm"),
            &t.owner,
            Some(json!({"note": "again"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

async fn access_bundle_holds_each_systems_rows(backend: Backend) {
    let t = TestApp::new(backend).await;
    let (shop, _pg) = shop_db().await;
    let loyalty = loyalty_db().await;
    setup(&t, "malee").await;
    t.post("/v1/systems", shop_system(&shop.url())).await;
    t.post("/v1/systems", loyalty_system(&loyalty.url())).await;
    let id = request(&t, "malee", "access", json!({})).await;
    act(&t, &id, "complete").await;
    let ok = eventually(Duration::from_secs(20), || async {
        t.get(&format!("/v1/requests/{id}")).await["status"] == "completed"
    })
    .await;
    assert!(ok, "{}", t.get(&format!("/v1/requests/{id}")).await);
    let (status, _, zip) = t
        .request_raw(
            Method::GET,
            &format!("/v1/requests/{id}/bundle"),
            Some(&t.owner),
            &[],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip.to_vec())).unwrap();
    let mut read = |name: &str| {
        let mut s = String::new();
        archive
            .by_name(name)
            .unwrap_or_else(|_| panic!("{name} missing"))
            .read_to_string(&mut s)
            .unwrap();
        s
    };
    let customers: Value = serde_json::from_str(&read("systems/shop/customers.json")).unwrap();
    let rows = customers["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["full_name"], "มาลี ใจดี");
    assert_eq!(customers["columns"]["phone"], "contact.phone");
    let orders_csv = read("systems/shop/orders.csv");
    assert!(
        orders_csv.contains("2 Silom Rd") && !orders_csv.contains("Rama IV"),
        "{orders_csv}"
    );
    let members: Value = serde_json::from_str(&read("systems/loyalty/members.json")).unwrap();
    assert_eq!(members["rows"][0]["points"], 10);
    assert!(read("systems.json").contains("loyalty"));
    // Yinyom's own data is still there too.
    assert!(read("subject.json").contains(EMAIL));
}

async fn a_system_that_is_down_is_retried_and_blocks_no_other(backend: Backend) {
    let config = yinyom::app::Config {
        systems: yinyom::systems::SystemsConfig {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(300),
            ..Default::default()
        },
        ..Default::default()
    };
    let t = TestApp::with_config(backend, config).await;
    let (shop, mut pg) = shop_db().await;
    let loyalty = loyalty_db().await;
    setup(&t, "malee").await;
    t.post("/v1/systems", shop_system(&shop.url())).await;
    // Nothing listens on port 1.
    let down = loyalty_system("mysql://root@127.0.0.1:1/nothing");
    t.post("/v1/systems", down.clone()).await;
    let id = request(&t, "malee", "erasure", json!({})).await;
    act(&t, &id, "complete").await;
    wait_status(&t, &id, "shop", "done").await;
    assert_eq!(count_pg(&mut pg, "SELECT COUNT(*) FROM customers").await, 1);
    let path = format!("/v1/requests/{id}");
    let ok = eventually(Duration::from_secs(20), || async {
        system(&t.get(&path).await, "loyalty")["attempts"]
            .as_i64()
            .unwrap_or(0)
            >= 2
    })
    .await;
    let r = t.get(&path).await;
    assert!(ok, "{r}");
    let l = system(&r, "loyalty");
    assert!(
        matches!(l["status"].as_str(), Some("failed" | "running")),
        "{r}"
    );
    assert!(l["error"].is_string() || l["status"] == "running", "{r}");
    assert_eq!(r["status"], "in_progress");
    // A system with work still to do cannot be removed.
    let (status, _, body) = t
        .request(Method::DELETE, "/v1/systems/loyalty", &t.owner, None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // The system comes back (its URL fixed): the retry completes the request.
    let mut fixed = loyalty_system(&loyalty.url());
    fixed.as_object_mut().unwrap().remove("key");
    let (status, _, body) = t
        .request(Method::PUT, "/v1/systems/loyalty", &t.owner, Some(fixed))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = wait_status(&t, &id, "loyalty", "done").await;
    assert_eq!(system(&r, "loyalty")["rows"], 1);
    assert!(system(&r, "loyalty")["attempts"].as_i64().unwrap() >= 3);
    let ok = eventually(Duration::from_secs(5), || async {
        t.get(&path).await["status"] == "completed"
    })
    .await;
    assert!(ok);
}

async fn rectification_corrects_mapped_columns(backend: Backend) {
    let t = TestApp::new(backend).await;
    let (shop, mut pg) = shop_db().await;
    setup(&t, "malee").await;
    t.post("/v1/systems", shop_system(&shop.url())).await;
    let id = request(
        &t,
        "malee",
        "rectification",
        json!({"changes": {"identifiers": {"phone": "0899999999"},
            "attributes": {"user.address": "5 Sathorn Rd"}}}),
    )
    .await;
    let plan = t.get(&format!("/v1/requests/{id}/plan")).await;
    let tables = &plan["systems"][0]["tables"];
    assert_eq!(tables[0]["action"], "update", "{plan}");
    assert_eq!(tables[0]["columns"], json!(["phone"]));
    assert_eq!(tables[1]["columns"], json!(["ship_address"]));
    assert_eq!(tables[2]["action"], "none");
    act(&t, &id, "complete").await;
    wait_status(&t, &id, "shop", "done").await;
    let phone: String = sqlx::query_scalar("SELECT phone FROM customers WHERE lower(email) = $1")
        .bind(EMAIL)
        .fetch_one(&mut pg)
        .await
        .unwrap();
    assert_eq!(phone, "+66899999999");
    let addresses: Vec<String> =
        sqlx::query_scalar("SELECT ship_address FROM orders WHERE customer_email = $1")
            .bind(EMAIL)
            .fetch_all(&mut pg)
            .await
            .unwrap();
    assert_eq!(addresses, vec!["5 Sathorn Rd".to_string(); 2]);
    let other: String = sqlx::query_scalar("SELECT phone FROM customers WHERE email = $1")
        .bind(OTHER)
        .fetch_one(&mut pg)
        .await
        .unwrap();
    assert_eq!(other, "+66811111111");
}

async fn consent_changes_reach_mapped_columns(backend: Backend) {
    let t = TestApp::new(backend).await;
    let (shop, mut pg) = shop_db().await;
    setup(&t, "malee").await;
    t.post("/v1/systems", shop_system(&shop.url())).await;
    t.post(
        "/v1/notices",
        json!({
            "key": "main",
            "texts": { "th": { "title": "ประกาศ", "body": "…" }, "en": { "title": "Notice", "body": "…" } },
            "purposes": ["marketing.email"],
        }),
    )
    .await;
    let record = |action: &str| {
        json!({"subject": "malee", "source": "web", "notice": { "key": "main", "version": 1 },
            "actions": [{"purpose": "marketing.email", "channel": "email", "action": action}]})
    };
    t.post("/v1/consents", record("grant")).await;
    let mut set = false;
    for _ in 0..500 {
        if opt_in(&mut pg).await {
            set = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(set, "a grant sets the column");
    t.post("/v1/consents", record("withdraw")).await;
    let mut cleared = false;
    for _ in 0..500 {
        if !opt_in(&mut pg).await {
            cleared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cleared, "a withdrawal clears the column");
    let ok = eventually(Duration::from_secs(10), || async {
        let p = t.get("/v1/subjects/malee/systems").await;
        p[0]["system"] == "shop" && p[0]["status"] == "done" && p[0]["rows"] == 1
    })
    .await;
    assert!(ok, "{}", t.get("/v1/subjects/malee/systems").await);
    // The other customer was never touched.
    let other: bool = sqlx::query_scalar("SELECT email_opt_in FROM customers WHERE email = $1")
        .bind(OTHER)
        .fetch_one(&mut pg)
        .await
        .unwrap();
    assert!(!other);
}

async fn values_are_bound_never_spliced_into_sql(backend: Backend) {
    let t = TestApp::new(backend).await;
    let (shop, mut pg) = shop_db().await;
    let loyalty = loyalty_db().await;
    sqlx::query("CREATE TABLE accounts (customer_id text NOT NULL, note text)")
        .execute(&mut pg)
        .await
        .unwrap();
    sqlx::query("INSERT INTO accounts VALUES ('c1', 'a'), ('c2', 'b')")
        .execute(&mut pg)
        .await
        .unwrap();
    let mut my = loyalty.conn().await;
    sqlx::query("CREATE TABLE accounts (customer_id VARCHAR(100) NOT NULL, note TEXT)")
        .execute(&mut my)
        .await
        .unwrap();
    sqlx::query("INSERT INTO accounts VALUES ('c1', 'a'), ('c2', 'b')")
        .execute(&mut my)
        .await
        .unwrap();
    let evil = "c1' OR '1'='1";
    let (status, _, body) = t
        .request(
            Method::PUT,
            "/v1/subjects/mallory",
            &t.owner,
            Some(json!({ "identifiers": { "customer_id": evil } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let accounts = json!([{"name": "accounts", "identity": {"column": "customer_id", "identifier": "customer_id"},
        "columns": {"customer_id": "user.account", "note": "behaviour.preference"}, "on_erasure": "delete"}]);
    for (key, kind, url) in [
        ("pg", "postgres", shop.url()),
        ("my", "mysql", loyalty.url()),
    ] {
        t.post(
            "/v1/systems",
            json!({"key": key, "name": key, "kind": kind, "connection": {"url": url}, "tables": accounts}),
        )
        .await;
    }
    let id = request(&t, "mallory", "erasure", json!({})).await;
    let plan = t.get(&format!("/v1/requests/{id}/plan")).await;
    for s in plan["systems"].as_array().unwrap() {
        assert_eq!(s["tables"][0]["rows"], 0, "{plan}");
    }
    act(&t, &id, "complete").await;
    let r = wait_status(&t, &id, "pg", "done").await;
    assert_eq!(system(&r, "pg")["rows"], 0);
    let r = wait_status(&t, &id, "my", "done").await;
    assert_eq!(system(&r, "my")["rows"], 0);
    assert_eq!(count_pg(&mut pg, "SELECT COUNT(*) FROM accounts").await, 2);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
        .fetch_one(&mut my)
        .await
        .unwrap();
    assert_eq!(n, 2);
}

async fn a_failing_propagation_shows_its_error_and_is_retried(backend: Backend) {
    let config = yinyom::app::Config {
        systems: yinyom::systems::SystemsConfig {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(200),
            ..Default::default()
        },
        ..Default::default()
    };
    let t = TestApp::with_config(backend, config).await;
    setup(&t, "malee").await;
    t.post(
        "/v1/notices",
        json!({
            "key": "main",
            "texts": { "th": { "title": "ประกาศ", "body": "…" }, "en": { "title": "Notice", "body": "…" } },
            "purposes": ["marketing.email"],
        }),
    )
    .await;
    t.post(
        "/v1/systems",
        shop_system("postgres://postgres@127.0.0.1:1/none"),
    )
    .await;
    t.post(
        "/v1/consents",
        json!({"subject": "malee", "source": "web", "notice": { "key": "main", "version": 1 },
            "actions": [{"purpose": "marketing.email", "channel": "email", "action": "grant"}]}),
    )
    .await;
    let ok = eventually(Duration::from_secs(20), || async {
        let p = t.get("/v1/subjects/malee/systems").await;
        p[0]["status"] == "failed" && p[0]["attempts"].as_i64().unwrap_or(0) >= 2
    })
    .await;
    let p = t.get("/v1/subjects/malee/systems").await;
    assert!(ok, "{p}");
    assert!(
        p[0]["error"].is_string() && p[0]["retry_at"].is_string(),
        "{p}"
    );
}

on_every_backend!(
    registration_takes_the_contract_shape_and_keeps_secrets_sealed,
    the_test_reads_the_catalogue,
    erasure_reaches_every_system_after_a_dry_run,
    access_bundle_holds_each_systems_rows,
    a_system_that_is_down_is_retried_and_blocks_no_other,
    rectification_corrects_mapped_columns,
    consent_changes_reach_mapped_columns,
    values_are_bound_never_spliced_into_sql,
    a_failing_propagation_shows_its_error_and_is_retried,
);
