//! `yinyom bench --only scale`: one node at a customer's size. Builds a
//! data set of N subjects × 5 purposes through the real import, then runs
//! the real server binary on it and reports what a node needs: import rate,
//! bytes on disk per record, cold start until `/readyz`, resident memory
//! per record (full view and bounded mode, over an empty server's), decision
//! latency at that size (held subjects, and subjects a bounded view must
//! read from the store), and ledger verification rate.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use yinyom_core::purpose::{Channel, Lang, LawfulBasis, Purpose};
use yinyom_core::time;

use super::{KEY, Load, MakeRequest, get, line, load};
use crate::app;
use crate::store::{SqlStore, Store};

const PURPOSES: usize = 5;

pub async fn scale(subjects: usize, seconds: u64) -> Result<(), Box<dyn std::error::Error>> {
    let records = subjects * PURPOSES;
    let root = tempfile::tempdir()?;
    println!("scale: {subjects} subjects × {PURPOSES} purposes = {records} consent records");

    // An empty server first: the baseline for resident memory.
    let empty_dir = root.path().join("empty");
    let empty = Server::start(&empty_dir, None).await?;
    let empty_ready = empty.ready(Duration::from_secs(60)).await?;
    let (empty_rss, empty_anon) = (empty.rss(), empty.anonymous());
    drop(empty);

    // The data set, through the real import.
    let dir = root.path().join("data");
    std::fs::create_dir_all(&dir)?;
    let csv = root.path().join("crm.csv");
    write_csv(&csv, subjects)?;
    let (rate, secs) = {
        let store: Arc<dyn Store> = Arc::new(SqlStore::sqlite(&dir.join("yinyom.db")).await?);
        let (tenant, _) = app::bootstrap(store.as_ref(), Some(KEY.into()))
            .await?
            .ok_or("the bench store is not empty")?;
        for p in 0..PURPOSES {
            store
                .insert_purpose(&tenant.id, &purpose(p), time::now())
                .await?;
        }
        let start = Instant::now();
        let report = crate::transfer::import(
            store.clone(),
            &tenant.id,
            &csv,
            crate::cli::Format::Csv,
            false,
            None,
        )
        .await?;
        let secs = start.elapsed().as_secs_f64();
        if report.imported as usize != records {
            return Err(format!("imported {} of {records} rows", report.imported).into());
        }
        (report.imported as f64 / secs, secs)
    };
    println!(
        "{:<34} {:>10.0}/s  {records} rows in {secs:.1} s (target ≥ 100,000/s)",
        "import (CSV, durable)", rate
    );
    std::fs::remove_file(&csv)?;
    let bytes = dir_bytes(&dir);
    let wal = std::fs::metadata(dir.join("yinyom.db-wal")).map_or(0, |m| m.len());
    println!(
        "{:<34} {:>10.0} B per record ({:.2} GB in all, of which WAL {:.0} MB; target ≤ 300)",
        "data on disk",
        bytes as f64 / records as f64,
        bytes as f64 / 1e9,
        wal as f64 / 1e6
    );

    // Cold start: the first from the store's current-state table; it
    // saves the view on the way down, and the next start loads that.
    let first = Server::start(&dir, None).await?;
    let t = first.ready(Duration::from_secs(1800)).await?;
    println!(
        "{:<34} {:>10.2} s  ({:.2} s per million records; no snapshot yet)",
        "cold start, from consent_states",
        t.as_secs_f64(),
        t.as_secs_f64() / (records as f64 / 1e6),
    );
    first.stop();
    let full = Server::start(&dir, None).await?;
    let t = full.ready(Duration::from_secs(1800)).await?;
    let (rss, anon) = (full.rss(), full.anonymous());
    println!(
        "{:<34} {:>10.2} s  ({:.2} s per million records; target ≤ 1; empty server {:.2} s)",
        "cold start, from the snapshot",
        t.as_secs_f64(),
        t.as_secs_f64() / (records as f64 / 1e6),
        empty_ready.as_secs_f64()
    );
    let full_view = view_bytes(full.addr).await.unwrap_or(0);
    println!(
        "{:<34} {:>10.1} B per record (the view's own count: {:.0} MiB; target ≤ 48)",
        "decision view (full)",
        full_view as f64 / records as f64,
        full_view as f64 / 1048576.0
    );
    println!(
        "{:<34} {:>10.1} B per record anonymous, {:.1} in all (over an empty server's {:.0}/{:.0} MiB)",
        "process resident memory (full)",
        anon.saturating_sub(empty_anon) as f64 / records as f64,
        rss.saturating_sub(empty_rss) as f64 / records as f64,
        empty_anon as f64 / 1048576.0,
        empty_rss as f64 / 1048576.0
    );
    let d = Duration::from_secs(seconds);
    let hits = decide(full.addr, subjects, 32, d).await;
    line("decisions at this size (held)", &hits, None);
    verification(full.addr).await?;
    drop(full);

    // Bounded: a tenth of what the full view held.
    let budget = (full_view as usize / 10).max(16 << 20);
    let bounded = Server::start(&dir, Some(budget)).await?;
    let t = bounded.ready(Duration::from_secs(1800)).await?;
    println!(
        "{:<34} {:>10.2} s  (--view-memory {} MiB)",
        "cold start until /readyz (bounded)",
        t.as_secs_f64(),
        budget >> 20
    );

    // Misses: every question about a subject not asked before, from the
    // far end of the data set (the warm-up loads the first ones).
    let misses = decide_fresh(bounded.addr, subjects, 4, d).await;
    line("decisions, bounded (misses)", &misses, None);
    // Hits: a hot set well within the budget.
    let hot = (subjects / 100).max(1);
    let _ = decide(bounded.addr, hot, 8, Duration::from_secs(1)).await;
    let hits = decide(bounded.addr, hot, 32, d).await;
    line("decisions, bounded (hot set held)", &hits, None);
    println!(
        "{:<34} {:>10.1} B per record anonymous (over an empty server's; view {:.0} MiB of {:.0})",
        "process resident memory (bounded)",
        bounded.anonymous().saturating_sub(empty_anon) as f64 / records as f64,
        view_bytes(bounded.addr).await.unwrap_or(0) as f64 / 1048576.0,
        budget as f64 / 1048576.0
    );
    drop(bounded);
    println!(
        "{:<34} subjects: {subjects}, records: {records}; see BENCHMARKS.md for 10M/50M",
        "scale"
    );
    Ok(())
}

/// One of the five consent purposes the import and scale data sets use.
pub(super) fn purpose(p: usize) -> Purpose {
    Purpose {
        key: format!("purpose.{p}"),
        names: [(Lang::En, format!("Purpose {p}"))].into(),
        descriptions: Default::default(),
        basis: LawfulBasis::Consent,
        categories: vec![],
        channels: vec![Channel::Email, Channel::Sms],
        retention_days: 730,
        validity_days: None,
        recipients: vec![],
        double_opt_in: false,
        banner: None,
    }
}

fn write_csv(file: &Path, subjects: usize) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(file)?);
    writeln!(out, "subject,purpose,channel,state,occurred_at,source")?;
    let states = ["granted", "denied", "withdrawn", "granted"];
    for i in 0..subjects {
        for p in 0..PURPOSES {
            writeln!(
                out,
                "crm-{i:09},purpose.{p},email,{},2024-0{}-1{}T08:30:00Z,crm",
                states[(i + p) % 4],
                1 + (i + p) % 9,
                i % 10
            )?;
        }
    }
    out.flush()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The real binary serving a data directory.
struct Server {
    child: Child,
    addr: SocketAddr,
    started: Instant,
}

impl Server {
    async fn start(
        dir: &Path,
        view_memory: Option<usize>,
    ) -> Result<Server, Box<dyn std::error::Error>> {
        std::fs::create_dir_all(dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("serve")
            .env("YINYOM_DATA_DIR", dir)
            .env("YINYOM_LISTEN", addr.to_string())
            .env("YINYOM_BOOTSTRAP_API_KEY", KEY)
            .env_remove("YINYOM_MASTER_KEY")
            .env_remove("YINYOM_MASTER_KEY_FILE")
            .env_remove("YINYOM_DATABASE_URL")
            .env_remove("YINYOM_VIEW_MEMORY")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(bytes) = view_memory {
            cmd.arg("--view-memory").arg(bytes.to_string());
        }
        Ok(Server {
            child: cmd.spawn()?,
            addr,
            started: Instant::now(),
        })
    }

    /// Time from start until `/readyz` answers 200.
    async fn ready(&self, within: Duration) -> Result<Duration, Box<dyn std::error::Error>> {
        loop {
            if self.started.elapsed() > within {
                return Err("the server did not become ready".into());
            }
            if status(self.addr, "/readyz").await == Some(200) {
                return Ok(self.started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resident bytes: in all, and anonymous (heap; not the database's
    /// memory-mapped pages, which the kernel can drop).
    fn rss(&self) -> u64 {
        self.smaps("Rss:")
    }

    fn anonymous(&self) -> u64 {
        self.smaps("Anonymous:")
    }

    fn smaps(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/smaps_rollup", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .map_or(0, |kib| kib * 1024)
    }

    /// Stop with SIGTERM (the view is saved) and wait.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Decisions about random subjects among the first `subjects`.
async fn decide(addr: SocketAddr, subjects: usize, connections: usize, d: Duration) -> Load {
    let make: MakeRequest = Arc::new(move |i| {
        let s = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as usize % subjects;
        get(
            addr,
            format!(
                "/v1/decisions?subject=crm-{s:09}&purpose=purpose.{}&channel=email",
                i % 5
            ),
            true,
        )
    });
    load(addr, connections, d, make).await
}

/// Decisions each about a subject not asked before, from the end of the
/// data set backwards.
async fn decide_fresh(addr: SocketAddr, subjects: usize, connections: usize, d: Duration) -> Load {
    let make: MakeRequest = Arc::new(move |i| {
        let s = subjects - 1 - (i as usize % subjects);
        get(
            addr,
            format!("/v1/decisions?subject=crm-{s:09}&purpose=purpose.0&channel=email"),
            true,
        )
    });
    load(addr, connections, d, make).await
}

/// `POST /v1/ledger/verifications` of the whole data set, polled to its
/// end: entries per second (target ≥ 200,000, 1,000,000 per 5 s).
async fn verification(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let started = send(addr, "POST", "/v1/ledger/verifications").await?;
    let id = started["id"]
        .as_str()
        .ok_or("no verification id")?
        .to_string();
    let begun = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let v = send(addr, "GET", &format!("/v1/ledger/verifications/{id}")).await?;
        match v["status"].as_str() {
            Some("running") => continue,
            Some("done") if v["ok"] == true => {
                let checked = v["checked"].as_u64().unwrap_or(0);
                let secs = begun.elapsed().as_secs_f64();
                println!(
                    "{:<34} {:>10.0}/s  {checked} entries in {secs:.1} s (target ≥ 200,000/s)",
                    "ledger verification (job)",
                    checked as f64 / secs
                );
                return Ok(());
            }
            _ => return Err(format!("verification ended: {v}").into()),
        }
    }
}

/// A JSON call with the owner key.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut all = String::new();
    s.read_to_string(&mut all).await?;
    let body = all.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok(serde_json::from_str(body)?)
}

/// What the decision view holds, from `/readyz`.
async fn view_bytes(addr: SocketAddr) -> Option<u64> {
    let v = send(addr, "GET", "/readyz").await.ok()?;
    v["view"]["bytes"].as_u64()
}

/// The status of a plain `GET` (none while nothing listens).
async fn status(addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
