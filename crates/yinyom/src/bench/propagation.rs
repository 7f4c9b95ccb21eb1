//! Benchmarks of propagation: durable writes on PostgreSQL (against a raw
//! batched insert into the same schema), withdrawal → webhook received at a
//! steady 1,000 changes/s, and how stale a second node on the same
//! PostgreSQL is after a write on the first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use yinyom_core::purpose::Channel;

use super::{BenchArgs, PURPOSE, consent_writes, post, raw_insert_ceiling, seeded_store};
use crate::app::App;
use crate::store::scratch::{self, Scratch};
use crate::store::{SqlStore, Store};

type Error = Box<dyn std::error::Error>;

/// A server that stops (dropping its app) when the guard is dropped, so a
/// section's app does not outlive the database it was measured on.
struct Scoped(tokio::task::AbortHandle);

impl Drop for Scoped {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve_scoped(router: axum::Router) -> Result<(SocketAddr, Scoped), Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((addr, Scoped(task.abort_handle())))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

fn consent(subject: &str, action: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "subject": subject,
            "notice": {"key": "marketing", "version": 1},
            "source": "web",
            "actions": [{"purpose": PURPOSE, "channel": "email", "action": action}],
        })
        .to_string(),
    )
}

/// A keep-alive HTTP/1.1 connection.
async fn connect(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>, Error> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// POST a consent change; the seq of its ledger entry.
async fn change(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>,
    addr: SocketAddr,
    subject: &str,
    action: &str,
) -> Result<u64, Error> {
    let res = sender
        .send_request(post(addr, "/v1/consents", consent(subject, action)))
        .await?;
    let ok = res.status().is_success();
    let body = res.into_body().collect().await?.to_bytes();
    if !ok {
        return Err(format!("write refused: {}", String::from_utf8_lossy(&body)).into());
    }
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    v["events"][0]["seq"]
        .as_u64()
        .ok_or_else(|| "no seq in the response".into())
}

pub async fn pg_writes(
    args: &BenchArgs,
    warmup: Duration,
    duration: Duration,
) -> Result<(), Error> {
    let mut raw = None;
    // One batch committing at a time (as before partitioned chains), then
    // the writer's lanes: each on a fresh schema, against one raw ceiling.
    for (lanes, label) in [
        (1, " (PostgreSQL, 1 batch at a time)"),
        (
            SqlStore::PG_WRITE_LANES,
            " (PostgreSQL, batches side by side)",
        ),
    ] {
        let schema = Scratch::create(&scratch::postgres_url()).await?;
        let store = Arc::new(SqlStore::connect(&schema.url()).await?);
        store.set_write_lanes(lanes);
        let raw = match raw {
            Some(r) => r,
            None => *raw.insert(raw_insert_ceiling(&store, args.writers, duration).await?),
        };
        let seeded = seeded_store(store.clone(), args.subjects.min(10_000)).await?;
        let app = App::start(seeded).await?;
        let (addr, _server) = serve_scoped(crate::api::router(app)).await?;
        consent_writes(args, addr, warmup, duration, raw, label, &[1, 4]).await?;
    }
    Ok(())
}

pub async fn webhooks(dir: &std::path::Path, duration: Duration) -> Result<(), Error> {
    let rate = 1_000u64;
    let store: Arc<dyn Store> = Arc::new(SqlStore::sqlite(&dir.join("webhooks.db")).await?);
    let store = seeded_store(store, 1_000).await?;
    let app = App::start(store).await?;
    let (addr, _server) = serve_scoped(crate::api::router(app)).await?;

    // The receiver notes when each event arrived.
    let arrived: Arc<Mutex<HashMap<u64, Instant>>> = Default::default();
    let log = arrived.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: Bytes| {
            let log = log.clone();
            async move {
                let at = Instant::now();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
                    && let Some(seq) = v["ledger"]["seq"].as_u64()
                {
                    log.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(seq)
                        .or_insert(at);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let (hook_addr, _receiver) = serve_scoped(receiver).await?;
    let mut sender = connect(addr).await?;
    let res = sender
        .send_request(post(
            addr,
            "/v1/webhooks",
            Bytes::from(
                serde_json::json!({"url": format!("http://{hook_addr}/hook"), "events": ["consent.withdrawn"]})
                    .to_string(),
            ),
        ))
        .await?;
    if !res.status().is_success() {
        return Err("could not register the webhook".into());
    }
    let _ = res.into_body().collect().await?;

    // 1,000 changes/s (grant then withdraw per subject), from 16 connections.
    let connections = 16u64;
    let interval = Duration::from_micros(1_000_000 * connections / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for c in 0..connections {
        tasks.push(tokio::spawn(async move {
            let mut sent: Vec<(u64, Instant)> = Vec::new();
            let Ok(mut sender) = connect(addr).await else {
                return sent;
            };
            let first = start + Duration::from_micros(1_000_000 * c / rate);
            let mut k = 0u32;
            loop {
                let due = first + interval * k;
                if due > start + duration {
                    return sent;
                }
                tokio::time::sleep_until(due.into()).await;
                let subject = format!("wh-{c}-{}", k / 2);
                let action = if k.is_multiple_of(2) {
                    "grant"
                } else {
                    "withdraw"
                };
                let t0 = Instant::now();
                if let Ok(seq) = change(&mut sender, addr, &subject, action).await
                    && action == "withdraw"
                {
                    sent.push((seq, t0));
                }
                k += 1;
            }
        }));
    }
    let mut sent = Vec::new();
    for t in tasks {
        sent.extend(t.await.unwrap_or_default());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let arrived = arrived.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut latencies: Vec<u64> = sent
        .iter()
        .filter_map(|(seq, t0)| {
            arrived
                .get(seq)
                .map(|t1| t1.duration_since(*t0).as_micros() as u64)
        })
        .collect();
    latencies.sort_unstable();
    println!(
        "{:<34} {:>10} of {} delivered  p50 {:>6} µs  p99 {:>6} µs  (at {rate} changes/s; target p99 ≤ 25 ms)",
        "withdrawal → webhook received",
        latencies.len(),
        sent.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    );
    Ok(())
}

/// Two nodes of one cluster (one PostgreSQL, one master key): the write
/// rate of one node alone, then of both together at full rate, and how
/// stale node B's view is after an acknowledged write on node A while both
/// take writes. A node started with another master key must be refused.
pub async fn nodes(args: &BenchArgs, duration: Duration) -> Result<(), Error> {
    use crate::app::Config;
    use crate::vault::MasterKey;

    let schema = Scratch::create(&scratch::postgres_url()).await?;
    let a: Arc<dyn Store> = Arc::new(SqlStore::connect(&schema.url()).await?);
    let a = seeded_store(a, 100).await?;
    let b: Arc<dyn Store> = Arc::new(SqlStore::connect(&schema.url()).await?);
    let tenant = a.tenants().await?.remove(0).id;
    let key = MasterKey::random();
    let config = |key: &MasterKey| Config {
        master_key: Some(key.clone()),
        ..Config::default()
    };
    let node_a = App::start_with(a, config(&key)).await?;
    let node_b = App::start_with(b, config(&key)).await?;
    let stranger: Arc<dyn Store> = Arc::new(SqlStore::connect(&schema.url()).await?);
    match App::start_with(stranger, config(&MasterKey::random())).await {
        Ok(_) => {
            return Err("a node with another master key than the cluster's was accepted".into());
        }
        Err(e) if e.to_string().contains("YINYOM_MASTER_KEY") => {
            println!("{:<34} refused: {e}", "node with another master key");
        }
        Err(e) => {
            return Err(format!("a node with another master key failed unclearly: {e}").into());
        }
    }
    let (addr_a, _server_a) = serve_scoped(crate::api::router(node_a)).await?;
    let (addr_b, _server_b) = serve_scoped(crate::api::router(node_b.clone())).await?;

    let writes = |addr: SocketAddr, node: &'static str| -> super::MakeRequest {
        Arc::new(move |i| {
            let action = if i % 3 == 0 { "withdraw" } else { "grant" };
            super::post(
                addr,
                "/v1/consents",
                consent(&format!("{node}-{i}"), action),
            )
        })
    };
    let warmup = Duration::from_secs(1);
    super::load(addr_a, args.writers, warmup, writes(addr_a, "warm")).await;
    let one = super::load(addr_a, args.writers, duration, writes(addr_a, "one")).await;
    super::line("durable writes, 1 node (PostgreSQL)", &one, None);

    // Both nodes at full rate; meanwhile a probe writes on A and waits for
    // B to see it.
    let load_a = tokio::spawn(super::load(
        addr_a,
        args.writers,
        duration,
        writes(addr_a, "a"),
    ));
    let load_b = tokio::spawn(super::load(
        addr_b,
        args.writers,
        duration,
        writes(addr_b, "b"),
    ));
    let mut sender = connect(addr_a).await?;
    let mut stale = Vec::new();
    let until = Instant::now() + duration;
    let mut i = 0usize;
    while Instant::now() < until {
        let subject = format!("probe-{}", i % 50);
        let action = if (i / 50).is_multiple_of(2) {
            "grant"
        } else {
            "withdraw"
        };
        i += 1;
        // A connection the server closed under load is reopened once.
        let seq = match change(&mut sender, addr_a, &subject, action).await {
            Ok(seq) => seq,
            Err(first) => {
                sender = connect(addr_a).await?;
                change(&mut sender, addr_a, &subject, action)
                    .await
                    .map_err(|e| format!("probe write failed twice: {first}; {e}"))?
            }
        };
        let acknowledged = Instant::now();
        let deadline = acknowledged + Duration::from_secs(10);
        loop {
            let seen = node_b
                .view
                .read(&tenant, |tv| {
                    tv.subject(&subject)
                        .and_then(|s| s.consents.effective(PURPOSE, Some(Channel::Email)).cloned())
                        .is_some_and(|r| r.seq >= seq)
                })
                .unwrap_or(false);
            if seen {
                stale.push(acknowledged.elapsed().as_micros() as u64);
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("node B did not see seq {seq} within 10 s").into());
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    let (la, lb) = (load_a.await?, load_b.await?);
    super::line("durable writes, node A of 2", &la, None);
    super::line("durable writes, node B of 2", &lb, None);
    let both = super::Load {
        requests: la.requests + lb.requests,
        errors: la.errors + lb.errors,
        seconds: la.seconds.max(lb.seconds),
        p50_us: la.p50_us.max(lb.p50_us),
        p99_us: la.p99_us.max(lb.p99_us),
    };
    super::line(
        "durable writes, 2 nodes together",
        &both,
        Some(("1 node", one.rate())),
    );
    stale.sort_unstable();
    println!(
        "{:<34} {:>10} writes  p50 {:>6} µs  p99 {:>6} µs  max {} µs  (target p99 ≤ 50 ms)",
        "cross-node staleness under load",
        stale.len(),
        percentile(&stale, 0.5),
        percentile(&stale, 0.99),
        stale.last().copied().unwrap_or(0),
    );
    drop(node_b);
    Ok(())
}
