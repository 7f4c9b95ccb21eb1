//! Benchmarks of the enforcement gates:
//!
//! - the tracking collector: Segment `batch` calls of 100 messages (half of
//!   their subjects allowed, half dropped), events per second against a bare
//!   axum handler that parses the same JSON body (the HTTP + JSON ceiling);
//!   and single `track` calls;
//! - audience filtering: a segment and the consent filter for one purpose
//!   and channel over every sealed profile, against reading the same rows
//!   without opening them (the storage ceiling).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use base64::Engine;
use http_body_util::Full;
use hyper::Request;
use yinyom_core::purpose::Channel;

use super::{BenchArgs, Load, MakeRequest, PURPOSE, line, load, seeded_store, serve};
use crate::app::{App, Config};
use crate::model::Source;
use crate::store::{SqlStore, Store};
use crate::vault::MasterKey;

const WRITE_KEY: &str = "yyw_bench_write_key";
const PER_BATCH: usize = 100;

fn collector_post(addr: SocketAddr, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"));
    Request::post(path)
        .header("host", addr.to_string())
        .header("authorization", format!("Basic {auth}"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("valid request")
}

pub(crate) async fn collector(
    args: &BenchArgs,
    dir: &std::path::Path,
    warmup: Duration,
    duration: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let store: Arc<dyn Store> = Arc::new(SqlStore::sqlite(&dir.join("collector.db")).await?);
    let store = seeded_store(store, args.subjects).await?;
    let tenant = store.tenants().await?.remove(0).id;
    store
        .insert_source(&Source {
            id: "src_bench".into(),
            tenant,
            name: "bench".into(),
            purposes: vec!["analytics".into()],
            store: true,
            forward: false,
            write_key: String::new(),
            key_hash: crate::api::auth::hash_key(WRITE_KEY),
            key_prefix: "yyw_bench".into(),
            accepted: 0,
            dropped: 0,
            created_at: yinyom_core::time::now(),
        })
        .await?;
    let app = App::start_with(
        store,
        Config {
            master_key: Some(MasterKey::random()),
            ..Config::default()
        },
    )
    .await?;
    let addr = serve(crate::api::router(app)).await?;

    // Bodies made up front: the load generator shares the machine.
    let subjects = args.subjects;
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..256)
            .map(|b| {
                let batch: Vec<serde_json::Value> = (0..PER_BATCH)
                    .map(|j| {
                        let i = (b * PER_BATCH + j) % subjects;
                        serde_json::json!({
                            "type": "track", "userId": format!("cust-{i}"), "event": "Viewed Product",
                            "properties": { "sku": format!("SKU-{j}"), "price": 199.0, "currency": "THB" },
                            "context": { "page": { "url": "https://shop.example/p/1" }, "userAgent": "Mozilla/5.0" },
                        })
                    })
                    .collect();
                Bytes::from(serde_json::to_vec(&serde_json::json!({ "batch": batch })).expect("JSON"))
            })
            .collect(),
    );

    // Ceiling: a bare handler that parses the same body as JSON.
    let bare = axum::Router::new().route(
        "/v1/batch",
        axum::routing::post(|body: Bytes| async move {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let n = v["batch"].as_array().map_or(0, |b| b.len());
            axum::Json(serde_json::json!({ "success": true, "accepted": n, "dropped": 0 }))
        })
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20)),
    );
    let bare_addr = serve(bare).await?;
    let per_event = |l: Load| Load {
        requests: l.requests * PER_BATCH as u64,
        ..l
    };
    let b = bodies.clone();
    let make: MakeRequest =
        Arc::new(move |i| collector_post(bare_addr, "/v1/batch", b[i as usize % b.len()].clone()));
    load(bare_addr, args.connections, warmup, make.clone()).await;
    let ceiling = per_event(load(bare_addr, args.connections, duration, make).await);
    line("bare handler parsing batches", &ceiling, None);

    let b = bodies.clone();
    let make: MakeRequest =
        Arc::new(move |i| collector_post(addr, "/v1/batch", b[i as usize % b.len()].clone()));
    load(addr, args.connections, warmup, make.clone()).await;
    let ours = per_event(load(addr, args.connections, duration, make).await);
    line(
        &format!("collector events, batches of {PER_BATCH}"),
        &ours,
        Some(("JSON ceiling", ceiling.rate())),
    );

    let make: MakeRequest = Arc::new(move |i| {
        let body = serde_json::json!({
            "userId": format!("cust-{}", i as usize % subjects), "event": "Viewed Product",
            "properties": { "sku": "SKU-1", "price": 199.0 },
        });
        collector_post(addr, "/v1/track", Bytes::from(body.to_string()))
    });
    load(addr, args.connections, warmup, make.clone()).await;
    let single = load(addr, args.connections, duration, make).await;
    line(
        "collector events, single track",
        &single,
        Some(("target", 30_000.0)),
    );
    Ok(())
}

/// Seal `n` profiles straight into the database (the API would take
/// minutes): `cust-i`, email, country TH for two in three, LA otherwise.
async fn seal_profiles(
    store: &SqlStore,
    app: &App,
    tenant: &str,
    n: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let keys = app.vault.tenant(store, tenant).await?;
    let pool = store.pool();
    let existing: std::collections::HashMap<String, String> =
        sqlx::query_as::<_, (String, String)>("SELECT id, uid FROM subjects WHERE tenant = $1")
            .bind(tenant)
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let now = yinyom_core::time::now();
    let begin = match store.dialect() {
        crate::store::Dialect::Sqlite => "BEGIN IMMEDIATE",
        crate::store::Dialect::Postgres => "BEGIN",
    };
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let mut tx = pool.begin_with(begin).await?;
        for &i in chunk {
            let id = format!("cust-{i}");
            let uid = existing
                .get(&id)
                .cloned()
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
            let (dk, wrapped) = keys.new_data_key(&uid);
            let profile = serde_json::json!({
                "contacts": { "email": format!("cust-{i}@example.com") },
                "attributes": { "country": if i % 3 == 0 { "LA" } else { "TH" }, "tier": "gold" },
            });
            sqlx::query(
                "INSERT INTO subjects (tenant, id, uid, data_key, profile, profile_rev, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 1, $6, $6)
                 ON CONFLICT (tenant, id) DO UPDATE SET data_key = excluded.data_key,
                    profile = excluded.profile, profile_rev = 1",
            )
            .bind(tenant)
            .bind(&id)
            .bind(&uid)
            .bind(wrapped)
            .bind(dk.seal(profile.to_string().as_bytes()))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

pub(crate) async fn audience(
    args: &BenchArgs,
    dir: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let n = args.audience_subjects;
    let sql = Arc::new(SqlStore::sqlite(&dir.join("audience.db")).await?);
    let store: Arc<dyn Store> = sql.clone();
    let started = Instant::now();
    let store = seeded_store(store, n).await?;
    let tenant = store.tenants().await?.remove(0).id;
    let app = App::start_with(
        store,
        Config {
            master_key: Some(MasterKey::random()),
            ..Config::default()
        },
    )
    .await?;
    seal_profiles(&sql, &app, &tenant, n).await?;
    println!(
        "{:<34} {n} subjects with sealed profiles, half granted {PURPOSE} (set up in {:.0} s)",
        "audience",
        started.elapsed().as_secs_f64()
    );

    // Ceiling: read the same rows, page by page, without opening them.
    let t = Instant::now();
    let mut after = String::new();
    let mut rows = 0usize;
    loop {
        let page = app.store.profiles(&tenant, &after, 2_000).await?;
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        rows += page.len();
    }
    let raw = t.elapsed().as_secs_f64();
    println!(
        "{:<34} {:>10.0}/s  {rows} rows in {raw:.2} s",
        "read sealed rows (ceiling)",
        rows as f64 / raw
    );

    for (label, filter) in [
        ("consent filter only", None),
        ("segment country = \"TH\"", Some("country = \"TH\"")),
    ] {
        let seg = filter.map(yinyom_core::segment::parse).transpose()?;
        let t = Instant::now();
        let e =
            crate::segments::evaluate(&app, &tenant, seg.as_ref(), PURPOSE, Some(Channel::Email))
                .await?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{:<34} {:>10.0}/s  {} matched, {} allowed in {secs:.2} s  ratio {:.2} of reading the rows",
            format!("audience: {label}"),
            e.matched as f64 / secs,
            e.matched,
            e.allowed,
            raw / secs
        );
    }
    Ok(())
}
