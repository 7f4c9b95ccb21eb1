//! `yinyom bench --only requests`: `POST /v1/requests` as requests pile up.
//! 20,000 access requests, each for a subject of its own, over 8 keep-alive
//! connections on a SQLite store; the rate of the first and the last 1,000
//! and their ratio. A query that grows with the stored requests (the
//! duplicate check once read the whole tenant) shows as a ratio below 1.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::body::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use super::{BenchArgs, post, seeded_store, serve};
use crate::app::App;
use crate::store::{SqlStore, Store};

const REQUESTS: usize = 20_000;
const WINDOW: usize = 1_000;
const CONNECTIONS: usize = 8;

pub(crate) async fn requests(
    _args: &BenchArgs,
    dir: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let store: Arc<dyn Store> = Arc::new(SqlStore::sqlite(&dir.join("requests.db")).await?);
    // Every other seeded subject exists: 2 × REQUESTS gives one per request.
    let store = seeded_store(store, 2 * REQUESTS).await?;
    let app = App::start(store).await?;
    let addr = serve(crate::api::router(app)).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut done: Vec<Instant> = Vec::new();
            let mut errors = 0usize;
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= REQUESTS {
                    break;
                }
                let body =
                    serde_json::json!({"subject": format!("cust-{}", 2 * i), "kind": "access"});
                let res = sender
                    .send_request(post(addr, "/v1/requests", Bytes::from(body.to_string())))
                    .await?;
                let ok = res.status().as_u16() == 201;
                res.into_body().collect().await?;
                if !ok {
                    errors += 1;
                }
                done.push(Instant::now());
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((done, errors))
        }));
    }
    let mut done = Vec::with_capacity(REQUESTS);
    let mut errors = 0;
    for t in tasks {
        let (d, e) = t.await?.map_err(|e| e.to_string())?;
        done.extend(d);
        errors += e;
    }
    done.sort_unstable();
    let seconds = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64();
    let first = WINDOW as f64 / seconds(start, done[WINDOW - 1]);
    let last = WINDOW as f64 / seconds(done[REQUESTS - WINDOW - 1], done[REQUESTS - 1]);
    let all = REQUESTS as f64 / seconds(start, done[REQUESTS - 1]);
    println!(
        "{:<34} {all:>10.0}/s  first {WINDOW}: {first:.0}/s, last {WINDOW}: {last:.0}/s, \
         last/first {:.2}, errors {errors}",
        format!("POST /v1/requests ×{REQUESTS}"),
        last / first
    );
    Ok(())
}
