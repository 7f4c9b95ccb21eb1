//! `yinyom bench`: throughput and latency of the calls DESIGN.md sets
//! targets for, each next to a ceiling measured in the same run on the same
//! machine, because absolute numbers on shared machines drift:
//!
//! - single decisions over HTTP/1.1 keep-alive vs. a bare axum handler
//!   returning a constant (the HTTP ceiling);
//! - decisions inside batch calls (target: 1,000,000/s);
//! - durable consent writes over HTTP vs. a raw batched durable insert into
//!   the same SQLite database (the write ceiling).
//!
//! Server and load generator share the machine (loopback only), so the
//! ratios are what to compare across runs.

mod checkpoints;
mod gates;
mod propagation;
mod requests;
mod rights;
mod scale;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use yinyom_core::notice::{NoticeDraft, NoticeText};
use yinyom_core::purpose::{Channel, Lang, LawfulBasis, Purpose};
use yinyom_core::time;

use crate::app::{self, App};
use crate::record::{self, ActionRequest, ConsentRequest, NoticeSelector, Origin};
use crate::store::SqlStore;
use crate::store::Store;

#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent keep-alive connections for single decisions.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Concurrent writers for durable consent writes.
    #[arg(long, default_value_t = 64)]
    pub writers: usize,
    /// Subjects with consents in the store.
    #[arg(long, default_value_t = 100_000)]
    pub subjects: usize,
    /// Queries per batch call.
    #[arg(long, default_value_t = 10_000)]
    pub batch: usize,
    /// Rows in the import measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub import_rows: usize,
    /// Subjects (× 5 purposes) in the memory measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub memory_subjects: usize,
    /// Subjects with sealed profiles in the audience measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub audience_subjects: usize,
    /// Subjects (× 5 purposes) in the scale measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub scale_subjects: usize,
    /// Ledger entries in the verification measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub verify_entries: usize,
    /// Which measurements to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http,batch,writes,import,memory,pg,webhooks,nodes,collector,audience,requests,verify,checkpoints"
    )]
    pub only: Vec<Section>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Http,
    Batch,
    Writes,
    Import,
    Memory,
    /// PostgreSQL durable writes.
    Pg,
    /// Withdrawal → webhook received, at a steady rate.
    Webhooks,
    /// Staleness of a second node on the same PostgreSQL.
    Nodes,
    /// Tracking events accepted or dropped by the collector.
    Collector,
    /// A segment and the consent filter over every profile.
    Audience,
    /// One node at a customer's size: import, disk, cold start, memory,
    /// decisions (not in the default set: it takes minutes).
    Scale,
    /// `POST /v1/requests` rate as requests accumulate (first vs last 1,000).
    Requests,
    /// Ledger verification: the job (pages on every core) vs. the old
    /// single-threaded pass.
    Verify,
    /// Signed checkpoints: building the tree, an incremental checkpoint,
    /// receipt proofs (time, size) and their offline verification, the
    /// audit of every checkpoint.
    Checkpoints,
    /// Erasure requests carried out in connected PostgreSQL and MariaDB
    /// systems, and with one system down (needs MariaDB; not in the
    /// default set).
    Rights,
}

pub(crate) const KEY: &str = "yy_bench_owner_key";
pub(crate) const PURPOSE: &str = "marketing.email";

pub(crate) struct Load {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
    pub(crate) p50_us: u32,
    pub(crate) p99_us: u32,
}

impl Load {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

type MakeRequest = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

/// Drive `connections` keep-alive HTTP/1.1 connections as fast as they go.
async fn load(addr: SocketAddr, connections: usize, duration: Duration, make: MakeRequest) -> Load {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                return (latencies, 1);
            };
            let _ = stream.set_nodelay(true);
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            else {
                return (latencies, 1);
            };
            tokio::spawn(conn);
            let mut i = c as u64;
            while Instant::now() < deadline {
                let req = make(i);
                i += connections as u64;
                let t = Instant::now();
                match sender.send_request(req).await {
                    Ok(res) => {
                        let ok = res.status().is_success();
                        if res.into_body().collect().await.is_err() || !ok {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
                latencies.push(t.elapsed().as_micros() as u32);
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Load {
        requests: all.len() as u64,
        errors,
        seconds,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

pub(crate) async fn serve(router: axum::Router) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

fn get(addr: SocketAddr, path: String, key: bool) -> Request<Full<Bytes>> {
    let mut b = Request::get(path).header("host", addr.to_string());
    if key {
        b = b.header("authorization", format!("Bearer {KEY}"));
    }
    b.body(Full::new(Bytes::new())).expect("valid request")
}

pub(crate) fn post(addr: SocketAddr, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("valid request")
}

/// A store with one tenant, four purposes, one notice, and `subjects`
/// subjects of which every other one granted consent (email marketing,
/// and analytics).
pub(crate) async fn seeded_store(
    store: Arc<dyn Store>,
    subjects: usize,
) -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
    let (tenant, _) = app::bootstrap(store.as_ref(), Some(KEY.into()))
        .await?
        .ok_or("the bench store is not empty")?;
    // The purpose decisions ask about, and three more a banner asks for at once.
    for key in [PURPOSE, "marketing.sms", "analytics", "personalisation"] {
        let purpose = Purpose {
            key: key.into(),
            names: [(Lang::En, key.to_string())].into(),
            descriptions: Default::default(),
            basis: LawfulBasis::Consent,
            categories: vec![],
            channels: vec![Channel::Email, Channel::Sms, Channel::Web],
            retention_days: 730,
            validity_days: Some(365),
            recipients: vec![],
            double_opt_in: false,
            banner: None,
        };
        store
            .insert_purpose(&tenant.id, &purpose, time::now())
            .await?;
    }
    store
        .publish_notice(
            &tenant.id,
            NoticeDraft {
                key: "marketing".into(),
                texts: [(
                    Lang::En,
                    NoticeText {
                        title: "Marketing".into(),
                        body: "We send offers.".into(),
                        url: None,
                    },
                )]
                .into(),
                purposes: vec![
                    PURPOSE.into(),
                    "marketing.sms".into(),
                    "analytics".into(),
                    "personalisation".into(),
                ],
                material: false,
            },
            time::now(),
        )
        .await?;
    let view = app::load_view(store.as_ref()).await?;
    let now = time::now();
    let mut batch = Vec::new();
    for i in 0..subjects {
        if i % 2 == 1 {
            continue;
        }
        let req = ConsentRequest {
            subject: format!("cust-{i}"),
            notice: Some(NoticeSelector {
                key: "marketing".into(),
                version: 1,
            }),
            source: "web".into(),
            evidence: None,
            occurred_at: None,
            actions: vec![
                ActionRequest {
                    purpose: PURPOSE.into(),
                    channel: Some(Channel::Email),
                    action: yinyom_core::consent::Action::Grant,
                },
                // Tracking, for the collector's measurement.
                ActionRequest {
                    purpose: "analytics".into(),
                    channel: None,
                    action: yinyom_core::consent::Action::Grant,
                },
            ],
        };
        let item = view
            .read(&tenant.id, |tv| {
                record::prepare(tv, req, "bench", Origin::Import, None, now)
            })
            .ok_or("tenant vanished")?
            .map_err(|r| r.detail)?;
        batch.push(item);
        if batch.len() == 5_000 || i + 2 >= subjects {
            let seal = |_: &_, _: &[_]| serde_json::Value::Null;
            store.commit(&batch, &seal).await?;
            batch.clear();
        }
    }
    Ok(store)
}

/// Rows per second for a plain batched durable insert into the same kind of
/// database (a fresh SQLite file, or the PostgreSQL schema under test): the
/// write ceiling.
pub(crate) async fn raw_insert_ceiling(
    store: &SqlStore,
    batch: usize,
    duration: Duration,
) -> Result<f64, Box<dyn std::error::Error>> {
    let pool = store.pool();
    sqlx::query(
        "CREATE TABLE raw (id BIGINT PRIMARY KEY, subject TEXT, purpose TEXT, action TEXT, at BIGINT, hash TEXT)",
    )
    .execute(pool)
    .await?;
    let begin = match store.dialect() {
        crate::store::Dialect::Sqlite => "BEGIN IMMEDIATE",
        crate::store::Dialect::Postgres => "BEGIN",
    };
    let hash = "0".repeat(64);
    let start = Instant::now();
    let mut rows = 0i64;
    while start.elapsed() < duration {
        let mut tx = pool.begin_with(begin).await?;
        for _ in 0..batch {
            sqlx::query(
                "INSERT INTO raw (id, subject, purpose, action, at, hash) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(rows)
            .bind(format!("cust-{rows}"))
            .bind(PURPOSE)
            .bind("grant")
            .bind(time::now())
            .bind(&hash)
            .execute(&mut *tx)
            .await?;
            rows += 1;
        }
        tx.commit().await?;
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

pub(crate) fn line(name: &str, l: &Load, ceiling: Option<(&str, f64)>) {
    let ratio = ceiling
        .map(|(what, c)| format!("  ratio {:.2} of {what} ({:.0}/s)", l.rate() / c, c))
        .unwrap_or_default();
    println!(
        "{name:<34} {:>10.0}/s  p50 {:>6} µs  p99 {:>6} µs  errors {}{ratio}",
        l.rate(),
        l.p50_us,
        l.p99_us,
        l.errors
    );
}

pub async fn run(args: BenchArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let duration = Duration::from_secs(args.seconds);
    let warmup = Duration::from_secs(1);
    let dir = tempfile::tempdir()?;
    let on = |s: Section| args.only.contains(&s);
    println!(
        "yinyom bench: {} s per measurement, {} subjects, {} cores",
        args.seconds,
        args.subjects,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    // First: resident memory is measured as the process's growth, which
    // memory the allocator kept from earlier sections would hide.
    if on(Section::Memory) {
        memory(args.memory_subjects);
    }
    if on(Section::Http) || on(Section::Batch) || on(Section::Writes) {
        let store: Arc<dyn Store> =
            Arc::new(SqlStore::sqlite(&dir.path().join("yinyom.db")).await?);
        let store = seeded_store(store, args.subjects).await?;
        let app = App::start(store).await?;
        let addr = serve(crate::api::router(app)).await?;
        if on(Section::Http) {
            http(&args, addr, warmup, duration).await?;
        }
        if on(Section::Batch) {
            batch(&args, addr, warmup, duration).await;
        }
        if on(Section::Writes) {
            writes(&args, dir.path(), addr, warmup, duration).await?;
        }
    }
    if on(Section::Import) {
        import(args.import_rows, dir.path()).await?;
    }
    if on(Section::Pg) {
        propagation::pg_writes(&args, warmup, duration).await?;
    }
    if on(Section::Webhooks) {
        propagation::webhooks(dir.path(), duration).await?;
    }
    if on(Section::Nodes) {
        propagation::nodes(&args, duration).await?;
    }
    if on(Section::Collector) {
        gates::collector(&args, dir.path(), warmup, duration).await?;
    }
    if on(Section::Audience) {
        gates::audience(&args, dir.path()).await?;
    }
    if on(Section::Scale) {
        scale::scale(args.scale_subjects, args.seconds).await?;
    }
    if on(Section::Requests) {
        requests::requests(&args, dir.path()).await?;
    }
    if on(Section::Checkpoints) {
        checkpoints::run(args.verify_entries, dir.path()).await?;
    }
    if on(Section::Verify) {
        verify(args.verify_entries, dir.path()).await?;
    }
    if on(Section::Rights) {
        rights::rights(&args, dir.path()).await?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn http(
    args: &BenchArgs,
    addr: SocketAddr,
    warmup: Duration,
    duration: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    // HTTP ceiling: a bare handler returning a constant decision-sized body.
    let bare = axum::Router::new().route(
        "/v1/decisions",
        axum::routing::get(|| async {
            axum::Json(serde_json::json!({"allowed": true, "reason": "consent_granted", "subject": "cust-0",
                "purpose": PURPOSE, "channel": "email", "state": "granted", "notice": {"key": "marketing", "version": 1},
                "expires_at": "2027-11-22T00:00:00Z"}))
        }),
    );
    let bare_addr = serve(bare).await?;
    let make: MakeRequest = Arc::new(move |_| get(bare_addr, "/v1/decisions".into(), false));
    load(bare_addr, args.connections, warmup, make.clone()).await;
    let ceiling = load(bare_addr, args.connections, duration, make).await;
    line("bare axum handler (HTTP ceiling)", &ceiling, None);

    let subjects = args.subjects as u64;
    let make: MakeRequest = Arc::new(move |i| {
        get(
            addr,
            format!(
                "/v1/decisions?subject=cust-{}&purpose={PURPOSE}&channel=email",
                i % subjects
            ),
            true,
        )
    });
    load(addr, args.connections, warmup, make.clone()).await;
    let single = load(addr, args.connections, duration, make).await;
    line(
        "single decisions",
        &single,
        Some(("HTTP ceiling", ceiling.rate())),
    );
    Ok(())
}

async fn batch(args: &BenchArgs, addr: SocketAddr, warmup: Duration, duration: Duration) {
    let queries: Vec<serde_json::Value> = (0..args.batch)
        .map(|i| serde_json::json!({"subject": format!("cust-{}", i % args.subjects), "purpose": PURPOSE, "channel": "email"}))
        .collect();
    let body =
        Bytes::from(serde_json::to_vec(&serde_json::json!({ "requests": queries })).expect("JSON"));
    let make: MakeRequest = Arc::new(move |_| post(addr, "/v1/decisions/batch", body.clone()));
    load(addr, 2, warmup, make.clone()).await;
    let batch = load(addr, 2, duration, make).await;
    let per_decision = Load {
        requests: batch.requests * args.batch as u64,
        ..batch
    };
    line(
        &format!("decisions in batches of {}", args.batch),
        &per_decision,
        Some(("target", 1_000_000.0)),
    );
}

async fn writes(
    args: &BenchArgs,
    dir: &std::path::Path,
    addr: SocketAddr,
    warmup: Duration,
    duration: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let ceiling_db = SqlStore::sqlite(&dir.join("ceiling.db")).await?;
    let raw = raw_insert_ceiling(&ceiling_db, args.writers, duration).await?;
    consent_writes(args, addr, warmup, duration, raw, "", &[1, 4]).await
}

/// Durable consent writes over HTTP, as events per second against `raw`.
pub(crate) async fn consent_writes(
    args: &BenchArgs,
    addr: SocketAddr,
    warmup: Duration,
    duration: Duration,
    raw: f64,
    label: &str,
    per_request: &[usize],
) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "{:<34} {raw:>10.0}/s  (transactions of {} rows)",
        format!("raw durable insert{label}"),
        args.writers
    );
    for &actions in per_request {
        let make: MakeRequest = Arc::new(move |i| {
            let purposes = [PURPOSE, "marketing.sms", "analytics", "personalisation"];
            let verb = if i % 3 == 0 { "withdraw" } else { "grant" };
            let body = serde_json::json!({
                "subject": format!("writer-{actions}-{i}"),
                "notice": {"key": "marketing", "version": 1},
                "source": "web",
                "evidence": {"ip": "203.0.113.9", "user_agent": "bench"},
                "actions": purposes[..actions].iter()
                    .map(|p| serde_json::json!({"purpose": p, "channel": "email", "action": verb}))
                    .collect::<Vec<_>>(),
            });
            post(addr, "/v1/consents", Bytes::from(body.to_string()))
        });
        load(addr, args.writers, warmup, make.clone()).await;
        let writes = load(addr, args.writers, duration, make).await;
        let events = Load {
            requests: writes.requests * actions as u64,
            ..writes
        };
        line(
            &format!("durable consent events{label}, {actions}/request"),
            &events,
            Some(("write ceiling", raw)),
        );
    }
    Ok(())
}

/// `yinyom import` of a CRM export: rows per second and total time.
async fn import(rows: usize, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write;
    let dir = dir.join("import");
    std::fs::create_dir_all(&dir)?;
    let sql = Arc::new(SqlStore::sqlite(&dir.join("yinyom.db")).await?);
    let store: Arc<dyn Store> = sql.clone();
    let (tenant, _) = app::bootstrap(store.as_ref(), None)
        .await?
        .ok_or("store not empty")?;
    for p in 0..5 {
        store
            .insert_purpose(&tenant.id, &scale::purpose(p), time::now())
            .await?;
    }
    let file = dir.join("crm.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
    writeln!(
        out,
        "subject,purpose,channel,state,occurred_at,source,evidence"
    )?;
    let states = ["granted", "denied", "withdrawn"];
    for i in 0..rows {
        // Evidence as CRMs export it: the campaign form a batch came from.
        writeln!(
            out,
            "crm-{},purpose.{},email,{},2024-0{}-1{}T08:30:00Z,crm,\"{{\"\"form\"\":\"\"campaign-{}\"\"}}\"",
            i / 5,
            i % 5,
            states[i % 3],
            1 + i % 9,
            i % 10,
            i % 7
        )?;
    }
    out.flush()?;
    let start = Instant::now();
    let report = crate::transfer::import(
        store.clone(),
        &tenant.id,
        &file,
        crate::cli::Format::Csv,
        false,
        None,
    )
    .await?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:<34} {:>10.0}/s  {} rows in {secs:.1} s (target ≤ 30 s for 1,000,000){}",
        "import (CSV, durable)",
        report.imported as f64 / secs,
        report.imported,
        if report.rejected.is_empty() {
            String::new()
        } else {
            format!(", {} rejected", report.rejected.len())
        }
    );
    disk_use(&sql, report.imported).await?;
    Ok(())
}

/// Bytes per imported record, in total and per table and index (SQLite's
/// `dbstat`), after a checkpoint has moved the WAL into the database file.
async fn disk_use(store: &SqlStore, records: usize) -> Result<(), Box<dyn std::error::Error>> {
    use sqlx::Row;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(store.pool())
        .await?;
    let rows = sqlx::query(
        "SELECT name, SUM(pgsize) AS bytes FROM dbstat GROUP BY name ORDER BY bytes DESC",
    )
    .fetch_all(store.pool())
    .await?;
    let per = |b: i64| b as f64 / records.max(1) as f64;
    let total: i64 = rows.iter().map(|r| r.get::<i64, _>("bytes")).sum();
    println!(
        "{:<34} {:>10.0} B/record  {:.1} MiB (target ≤ 300 B/record)",
        "import: database size",
        per(total),
        total as f64 / 1048576.0
    );
    for r in rows.iter().take(10) {
        let bytes: i64 = r.get("bytes");
        if per(bytes) >= 1.0 {
            println!(
                "  {:<32} {:>10.0} B/record",
                r.get::<String, _>("name"),
                per(bytes)
            );
        }
    }
    Ok(())
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Resident memory of the decision view holding `subjects` × 5 purposes.
fn memory(subjects: usize) {
    use yinyom_core::consent::{ConsentRecord, ConsentState, NoticeVersion};
    let before = resident_bytes().unwrap_or(0);
    let tenant = crate::model::Tenant {
        id: "t".into(),
        name: "bench".into(),
        dpo: Default::default(),
        jurisdictions: vec!["TH".into()],
        default_lang: Lang::Th,
        policy_url: None,
        pii_readers: Vec::new(),
        security_measures: vec![],
        banner: None,
        banner_design: None,
        reminders: None,
        partitions: yinyom_core::ledger::PARTITIONS,
        created_at: 0,
    };
    let snapshots = (0..subjects).map(|i| crate::store::SubjectSnapshot {
        tenant: "t".into(),
        id: format!("cust-{i:08}"),
        uid: uuid::Uuid::new_v4().to_string(),
        flags: Default::default(),
        records: (0..5)
            .map(|p| ConsentRecord {
                purpose: format!("purpose.{p}").into(),
                channel: Some(Channel::Email),
                state: ConsentState::Granted,
                seq: (i * 5 + p) as u64,
                occurred_at: 1_700_000_000_000_000,
                expires_at: None,
                notice: Some(NoticeVersion {
                    key: "marketing".into(),
                    version: 1,
                }),
                source: "web".into(),
                guardian: false,
            })
            .collect(),
    });
    let view = crate::view::View::load_iter(vec![(tenant, vec![], vec![])], snapshots);
    let after = resident_bytes().unwrap_or(0);
    let n = view.read("t", |tv| tv.subjects.len()).unwrap_or(0);
    println!(
        "{:<34} {:>10.1} MiB for {n} subjects × 5 purposes (target ≤ 1024 MiB)",
        "decision view resident memory",
        (after.saturating_sub(before)) as f64 / (1024.0 * 1024.0)
    );
}

/// Ledger verification of `entries` entries (with evidence, as the API
/// writes them), on SQLite and then PostgreSQL (a scratch schema): the job
/// path (keyset pages read through the native driver, decoded and checked
/// on every core, run as a job) against the old single-threaded pass over
/// one query through the `Any` driver, in one run.
async fn verify(entries: usize, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let dir = dir.join("verify");
    std::fs::create_dir_all(&dir)?;
    let sql = Arc::new(SqlStore::sqlite(&dir.join("yinyom.db")).await?);
    verify_on("SQLite", sql, entries).await?;
    let schema =
        crate::store::scratch::Scratch::create(&crate::store::scratch::postgres_url()).await?;
    let sql = Arc::new(SqlStore::connect(&schema.url()).await?);
    verify_on("PostgreSQL", sql, entries).await
}

async fn verify_on(
    backend: &str,
    sql: Arc<SqlStore>,
    entries: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use crate::store::{PreparedAction, WriteItem};
    use yinyom_core::consent::Action;
    println!("verify on {backend}:");
    let store: Arc<dyn Store> = sql.clone();
    let (tenant, _) = app::bootstrap(store.as_ref(), None)
        .await?
        .ok_or("store not empty")?;
    let start = Instant::now();
    let now = time::now();
    // Ten entries per request (5 purposes × 2 channels), 1,000 requests
    // per transaction.
    let per_item = 10;
    let mut written = 0;
    let mut i = 0;
    while written < entries {
        let mut batch = Vec::with_capacity(1_000);
        while batch.len() < 1_000 && written < entries {
            let n = per_item.min(entries - written);
            batch.push(WriteItem {
                tenant: tenant.id.clone(),
                subject_id: format!("cust-{i}"),
                actor: "bench".into(),
                source: "web".into(),
                notice: None,
                evidence: Some(serde_json::json!({"ip": "203.0.113.9", "user_agent": "bench/1.0"})),
                occurred_at: now - i as i64,
                actions: (0..n)
                    .map(|k| PreparedAction {
                        purpose: format!("purpose.{}", k / 2),
                        channel: Some(if k % 2 == 0 {
                            Channel::Email
                        } else {
                            Channel::Sms
                        }),
                        action: if (i + k) % 3 == 0 {
                            Action::Withdraw
                        } else {
                            Action::Grant
                        },
                        expires_at: None,
                    })
                    .collect(),
                idempotency: None,
                receipt: None,
                guardian: false,
            });
            written += n;
            i += 1;
        }
        let seal = |_: &WriteItem, _: &[_]| serde_json::Value::Null;
        store.commit(&batch, &seal).await?;
    }
    println!(
        "{:<34} {entries} entries written in {:.1} s",
        "verify: ledger built",
        start.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let old = sql.verify_ledger_sequential(&tenant.id).await?;
    let old_secs = t.elapsed().as_secs_f64();
    let old_rate = old.checked as f64 / old_secs;
    println!(
        "{:<34} {old_rate:>10.0}/s  {} entries in {old_secs:.1} s, ok {}",
        "verify: single-threaded (old)", old.checked, old.ok
    );

    let t = Instant::now();
    let (job, _) = crate::verification::start(store.clone(), &tenant.id, "bench").await?;
    let done = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let v = store
            .verification(&tenant.id, &job.id)
            .await?
            .ok_or("the job vanished")?;
        if v.status != "running" {
            break v;
        }
    };
    let secs = t.elapsed().as_secs_f64();
    let rate = done.checked as f64 / secs;
    println!(
        "{:<34} {rate:>10.0}/s  {} entries in {secs:.1} s, ok {:?}  ratio {:.2} of single-threaded; target 200000/s (1,000,000 per 5 s): {}",
        "verify: job (pages, every core)",
        done.checked,
        done.ok,
        rate / old_rate,
        if rate >= 200_000.0 { "met" } else { "NOT met" }
    );
    if done.ok != Some(true) || !old.ok || done.checked != old.checked {
        return Err(format!("the two passes disagree: old {old:?}, job {done:?}").into());
    }
    Ok(())
}
