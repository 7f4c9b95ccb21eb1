//! Test harness for the HTTP API: the real router on a real store — a
//! SQLite file in a fresh temporary directory, or a fresh schema in the
//! machine's PostgreSQL — driven in-process with `tower::ServiceExt::oneshot`
//! (no sockets). [`on_every_backend!`] runs each test on both.
//!
//! ```ignore
//! let t = TestApp::new(Backend::Sqlite).await;
//! let (status, headers, body) = t.request(Method::GET, "/v1/purposes", &t.owner, None).await;
//! ```
//!
//! [`TestApp::restart`] drops the running app, closes the database and
//! opens the same database again, so a test can prove what survived and that the
//! in-memory decision view reloads from storage.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use yinyom::app::{self, App, Config};
use yinyom::model::Role;
use yinyom::store::scratch::{self, Scratch};
use yinyom::store::{Registry, SqlStore, Store};

/// The owner key the first tenant is bootstrapped with.
pub const OWNER_KEY: &str = "yy_test_owner_0123456789abcdef0123456789abcdef";

/// Run each named test function (`async fn(Backend)`) once per storage
/// backend, as `sqlite::name` and `postgres::name`. PostgreSQL must be
/// reachable: a missing server fails the tests, it never skips them.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::common::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::common::Backend::Postgres).await;
                }
            )*
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database of one backend, removed when dropped.
pub struct Db {
    url: String,
    _dir: Option<tempfile::TempDir>,
    _schema: Option<Scratch>,
}

impl Db {
    pub async fn new(backend: Backend) -> Db {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("yinyom.db").display());
                Db {
                    url,
                    _dir: Some(dir),
                    _schema: None,
                }
            }
            Backend::Postgres => {
                let schema = Scratch::create(&scratch::postgres_url())
                    .await
                    .expect("PostgreSQL for tests (YINYOM_TEST_POSTGRES_URL)");
                Db {
                    url: schema.url(),
                    _dir: None,
                    _schema: Some(schema),
                }
            }
        }
    }

    /// The `YINYOM_DATABASE_URL` that opens this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The directory holding the SQLite database files (`yinyom.db`, its
    /// WAL and shared memory), for SQLite.
    pub fn sqlite_dir(&self) -> Option<&std::path::Path> {
        self._dir.as_ref().map(|d| d.path())
    }

    /// The throwaway schema, for PostgreSQL.
    pub fn postgres_schema(&self) -> Option<&str> {
        self._schema.as_ref().map(|s| s.name())
    }

    /// A new connection pool on the database (migrated).
    pub async fn open(&self) -> Arc<SqlStore> {
        Arc::new(SqlStore::connect(&self.url).await.expect("open the store"))
    }

    /// `sql`, an UPDATE or DELETE of `ledger` rows, as it is run on this
    /// database's tables (see [`on_ledger_rows`]).
    pub fn ledger_write(&self, sql: &str) -> String {
        if self._dir.is_some() {
            on_ledger_rows(sql)
        } else {
            sql.to_string()
        }
    }
}

/// An UPDATE or DELETE of `ledger` rows as it is run on SQLite, where
/// `ledger` is a read-only view of `ledger_rows`, which names the tenant by
/// its number (migration 0160): `tenant = X` becomes the number of X.
/// Any other statement is returned as it is.
pub fn on_ledger_rows(sql: &str) -> String {
    let sql = if let Some(rest) = sql.strip_prefix("UPDATE ledger SET") {
        format!("UPDATE ledger_rows SET{rest}")
    } else if let Some(rest) = sql.strip_prefix("DELETE FROM ledger WHERE") {
        format!("DELETE FROM ledger_rows WHERE{rest}")
    } else {
        return sql.to_string();
    };
    let Some(at) = sql.find("tenant = ") else {
        return sql;
    };
    let rest = &sql[at + "tenant = ".len()..];
    let end = if let Some(quoted) = rest.strip_prefix('\'') {
        quoted.find('\'').map_or(rest.len(), |i| i + 2)
    } else {
        rest.find(|c: char| c.is_whitespace() || c == ')')
            .unwrap_or(rest.len())
    };
    format!(
        "{}tenant_no = (SELECT no FROM tenant_numbers WHERE id = {}){}",
        &sql[..at],
        &rest[..end],
        &rest[end..]
    )
}

/// A running Yinyom on its own database.
pub struct TestApp {
    /// Kept so the database lives as long as the app.
    pub db: Db,
    config: Config,
    pub store: Arc<SqlStore>,
    pub app: Arc<App>,
    router: Router,
    /// The bootstrapped tenant's id.
    pub tenant: String,
    /// That tenant's owner key.
    pub owner: String,
}

/// Another tenant, with its own owner key.
pub struct OtherTenant {
    pub id: String,
    pub owner: String,
}

impl TestApp {
    /// A fresh store, bootstrapped with one tenant whose owner key is [`OWNER_KEY`].
    pub async fn new(backend: Backend) -> TestApp {
        TestApp::with_config(backend, Config::default()).await
    }

    /// With service settings of the test's own (e.g. fast webhook retries).
    pub async fn with_config(backend: Backend, mut config: Config) -> TestApp {
        // One master key for the app's whole life, restarts included.
        config
            .master_key
            .get_or_insert_with(yinyom::vault::MasterKey::random);
        let db = Db::new(backend).await;
        let store = db.open().await;
        let (tenant, owner) = app::bootstrap(store.as_ref(), Some(OWNER_KEY.to_string()))
            .await
            .expect("bootstrap")
            .expect("an empty store bootstraps a tenant");
        let (app, router) = start(&store, config.clone()).await;
        TestApp {
            config,
            db,
            store,
            app,
            router,
            tenant: tenant.id,
            owner,
        }
    }

    /// Stop the app, close the database, open the same file again and start
    /// a new app on it (fresh view, key cache and writer).
    pub async fn restart(&mut self) {
        self.store.pool().close().await;
        let store = self.db.open().await;
        let again = app::bootstrap(store.as_ref(), None)
            .await
            .expect("bootstrap");
        assert!(again.is_none(), "a restart must not bootstrap again");
        let (app, router) = start(&store, self.config.clone()).await;
        // Dropping the old router and app stops the old writer.
        self.router = router;
        self.app = app;
        self.store = store;
    }

    /// A second tenant with its own owner key (as `yinyom tenants create`
    /// does), made known to the running view as a restart would.
    pub async fn create_tenant(&self, name: &str) -> OtherTenant {
        let (tenant, owner) = app::create_tenant(self.store.as_ref(), name, None)
            .await
            .expect("create tenant");
        let id = tenant.id.clone();
        self.app.view.add_tenant(tenant);
        OtherTenant { id, owner }
    }

    /// A new API key with `role` in `tenant`; returns the key and its id.
    pub async fn key_in(&self, tenant: &str, role: Role) -> (String, String) {
        let (key, record) = app::new_api_key(tenant, role, role.as_str(), None);
        self.store
            .insert_api_key(&record)
            .await
            .expect("insert key");
        (key, record.id)
    }

    /// A new API key with `role` in the bootstrapped tenant.
    pub async fn key(&self, role: Role) -> String {
        self.key_in(&self.tenant.clone(), role).await.0
    }

    /// A JSON request; `key` goes into `Authorization: Bearer` unless empty.
    /// The response body is parsed as JSON (`Null` when empty, a string
    /// when it is not JSON).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let bytes = body.map(|b| serde_json::to_vec(&b).expect("serialize"));
        let (status, headers, body) = self
            .request_raw(method, path, (!key.is_empty()).then_some(key), &[], bytes)
            .await;
        (status, headers, json_of(&body))
    }

    /// Any request: extra headers and raw body bytes (sent as
    /// `application/json` unless a content-type is among `headers`).
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let has_type = headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !has_type {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .expect("request");
        self.send(req).await
    }

    /// A GET whose response body is read as it arrives (event streams).
    pub async fn open(
        &self,
        path: &str,
        key: &str,
        headers: &[(&str, &str)],
    ) -> axum::response::Response {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {key}"));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Body::empty()).expect("request");
        self.router.clone().oneshot(req).await.expect("infallible")
    }

    /// Send a prepared request through the router.
    pub async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.expect("response body").to_bytes();
        (parts.status, parts.headers, bytes)
    }

    /// `GET path` with the owner key; panics unless 200.
    pub async fn get(&self, path: &str) -> Value {
        let (status, _, body) = self.request(Method::GET, path, &self.owner, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// `POST path` with the owner key; panics unless 200.
    pub async fn post_ok(&self, path: &str, body: Value) -> Value {
        let (status, _, res) = self
            .request(Method::POST, path, &self.owner, Some(body))
            .await;
        assert_eq!(status, StatusCode::OK, "POST {path}: {res}");
        res
    }

    /// `POST path` with the owner key; panics unless 201.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, _, res) = self
            .request(Method::POST, path, &self.owner, Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "POST {path}: {res}");
        res
    }
}

/// The body as JSON: `Null` when empty, a string when it is not JSON.
pub fn json_of(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

async fn start(store: &Arc<SqlStore>, config: Config) -> (Arc<App>, Router) {
    let dyn_store: Arc<dyn Store> = store.clone();
    let app = App::start_with(dyn_store, config).await.expect("start app");
    let router = yinyom::api::router(app.clone());
    (app, router)
}

/// Server-sent events read from a streaming body: `(id, event, data)`.
pub struct Sse {
    body: Body,
    buffer: String,
}

impl Sse {
    pub fn new(res: axum::response::Response) -> Sse {
        Sse {
            body: res.into_body(),
            buffer: String::new(),
        }
    }

    /// The next event (comments and keep-alives skipped), or `None` when
    /// none arrives within `wait`.
    pub async fn next(&mut self, wait: std::time::Duration) -> Option<(String, String, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some((id, event, json_of(data.as_bytes())));
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??;
            if let Ok(bytes) = frame.ok()?.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
}

/// How a [`Receiver`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 204, and the request is recorded.
    Accept,
    /// 500 (not recorded).
    Fail,
    /// No answer for 5 s.
    Hang,
}

struct ReceiverState {
    mode: Mode,
    received: Vec<(HeaderMap, Bytes)>,
}

/// A real HTTP webhook receiver on a loopback port.
pub struct Receiver {
    pub url: String,
    state: Arc<std::sync::Mutex<ReceiverState>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(std::sync::Mutex::new(ReceiverState {
            mode: Mode::Accept,
            received: Vec::new(),
        }));
        let shared = state.clone();
        let handler = move |headers: HeaderMap, body: Bytes| {
            let state = shared.clone();
            async move {
                let mode = state.lock().unwrap().mode;
                match mode {
                    Mode::Accept => {
                        state.lock().unwrap().received.push((headers, body));
                        StatusCode::NO_CONTENT
                    }
                    Mode::Fail => StatusCode::INTERNAL_SERVER_ERROR,
                    Mode::Hang => {
                        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                        StatusCode::NO_CONTENT
                    }
                }
            }
        };
        let router = Router::new().route("/hook", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    pub fn set(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// Requests accepted so far: headers and body.
    pub fn received(&self) -> Vec<(HeaderMap, Bytes)> {
        self.state.lock().unwrap().received.clone()
    }
}

/// Poll `check` every 10 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

/// A real SMTP server (Python's aiosmtpd) on a loopback port, recording
/// what it receives.
pub struct SmtpSink {
    child: std::process::Child,
    file: tempfile::NamedTempFile,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl SmtpSink {
    pub fn start(port: u16) -> SmtpSink {
        use std::io::BufRead;
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut child = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/support/smtp_sink.py"
            ))
            .arg(file.path())
            .arg(port.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 with aiosmtpd (pip install aiosmtpd)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP sink did not start");
        SmtpSink { child, file }
    }

    pub fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(self.file.path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait (up to 10 s) until every entry of `tenant` committed so far is
/// below the store's horizon, so that readers after a cursor see them all
/// (on PostgreSQL, writers in other tests' transactions hold it back a
/// little; on SQLite at once).
pub async fn settled(store: &dyn Store, tenant: &str) {
    let last = store
        .ledger(tenant)
        .await
        .expect("ledger")
        .last()
        .map_or(0, |(_, e)| e.seq);
    for _ in 0..1000 {
        if store
            .heads()
            .await
            .expect("heads")
            .get(tenant)
            .copied()
            .unwrap_or(0)
            >= last
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("entries of {tenant} up to {last} never came below the horizon");
}
