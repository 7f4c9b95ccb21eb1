//! Every hot query of the request paths seeks an index on both databases
//! (`yinyom::store::sql::hot::HOT`, the statements the store itself runs):
//! SQLite's `EXPLAIN QUERY PLAN` shows no `SCAN` of a table that grows, and
//! PostgreSQL's `EXPLAIN`, with sequential scans disabled, no `Seq Scan` of
//! one; a query meant for one of our indexes names it in both plans. And
//! the check itself fails when an index is gone.
//!
//! `cargo test --test queries -- --nocapture` prints every plan (the source
//! of docs/queries.md).

#[macro_use]
mod common;

use common::{Backend, Db};
use sqlx::{Any, Row};
use yinyom::store::Dialect;
use yinyom::store::SqlStore;
use yinyom::store::sql::hot::{Arg, GROWING, HOT, HotQuery};

/// The plan of `q`, one line per node.
async fn plan(store: &SqlStore, q: &HotQuery) -> Vec<String> {
    let mut conn = store.pool().acquire().await.expect("a connection");
    let sql = match store.dialect() {
        Dialect::Sqlite => {
            // EXPLAIN QUERY PLAN plans with the schema the connection last
            // read; a read brings it up to date with other connections'.
            sqlx::query("SELECT count(*) FROM sqlite_master")
                .fetch_one(&mut *conn)
                .await
                .expect("schema");
            format!("EXPLAIN QUERY PLAN {}", q.sql)
        }
        Dialect::Postgres => {
            // Empty tables make a sequential scan the cheapest plan; with it
            // priced out, the plan shows which index the query can use.
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut *conn)
                .await
                .expect("set");
            format!("EXPLAIN {}", q.sql)
        }
    };
    let mut query = sqlx::query::<Any>(&sql);
    for a in q.args {
        query = match a {
            Arg::Int(n) => query.bind(*n),
            Arg::Text(s) => query.bind(*s),
        };
    }
    let rows = query
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{}: EXPLAIN failed: {e}", q.name));
    if store.dialect() == Dialect::Postgres {
        sqlx::query("RESET enable_seqscan")
            .execute(&mut *conn)
            .await
            .expect("reset");
    }
    rows.iter()
        .map(|r| match store.dialect() {
            Dialect::Sqlite => r.get::<String, _>("detail"),
            Dialect::Postgres => r.get::<String, _>(0),
        })
        .collect()
}

/// The table each alias (or table name) in `sql` stands for.
fn tables(sql: &str) -> Vec<(String, String)> {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let keyword = |w: &str| {
        [
            "where", "join", "left", "on", "order", "group", "limit", "set", "inner",
        ]
        .contains(&w)
    };
    let mut out = vec![];
    for (i, w) in words.iter().enumerate() {
        if (w == "from" || w == "join") && i + 1 < words.len() {
            let table = words[i + 1].clone();
            out.push((table.clone(), table.clone()));
            if let Some(alias) = words.get(i + 2).filter(|a| !keyword(a)) {
                out.push((alias.clone(), table));
            }
        }
    }
    out
}

/// What is wrong with `plan` for `q`; empty when it seeks as it should.
fn problems(dialect: Dialect, q: &HotQuery, plan: &[String]) -> Vec<String> {
    let names = tables(q.sql);
    let mut out = vec![];
    for line in plan {
        let scanned = match dialect {
            Dialect::Sqlite => line
                .trim()
                .strip_prefix("SCAN ")
                .filter(|rest| !rest.starts_with("CONSTANT ROW"))
                .and_then(|rest| rest.split_whitespace().next())
                .map(|alias| {
                    names
                        .iter()
                        .find(|(a, _)| a == &alias.to_lowercase())
                        .map_or(alias.to_string(), |(_, t)| t.clone())
                }),
            Dialect::Postgres => line
                .split("Seq Scan on ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_string),
        };
        if let Some(table) = scanned
            && GROWING.contains(&table.as_str())
        {
            out.push(format!("scans {table}: {}", line.trim()));
        }
    }
    if !q.indexes.is_empty()
        && !q
            .indexes
            .iter()
            .any(|index| plan.iter().any(|l| l.contains(index)))
    {
        out.push(format!("does not use {}", q.indexes.join(" or ")));
    }
    out
}

async fn check_all(store: &SqlStore) -> Vec<String> {
    let mut failures = vec![];
    for q in HOT {
        let plan = plan(store, q).await;
        println!("-- {} ({:?}; {})", q.name, store.dialect(), q.path);
        for line in &plan {
            println!("   {line}");
        }
        for p in problems(store.dialect(), q, &plan) {
            failures.push(format!("{}: {p}", q.name));
        }
    }
    failures
}

/// Rows enough for the planners to tell indexes apart by their statistics
/// (on empty tables every index costs the same): 20,000 requests of 5,000
/// subjects, one in ten open; 20,000 messages, most of them sent.
async fn populate(store: &SqlStore) {
    for sql in [
        "INSERT INTO tenants (id, name, body, created_at) VALUES ('t1', 't', '{}', 0)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO rights_requests (tenant, id, subject_uid, kind, status, purposes, via,
             received_at, due_at, extended, steps, updated_at)
         SELECT 't1', 'req_' || i, 'u' || (i % 5000), 'access',
             CASE WHEN i % 10 = 0 THEN 'received' ELSE 'completed' END, '[]', 'api',
             i, i * 1000, 0, '[]', i FROM n",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO messages (tenant, id, subject_uid, channel, purpose, status, attempts,
             next_at, created_at, updated_at)
         SELECT 't1', 'msg_' || i, 'u' || (i % 5000), 'email', 'p',
             CASE WHEN i % 100 = 0 THEN 'queued' ELSE 'sent' END, 0, i, i, i FROM n",
        "ANALYZE rights_requests",
        "ANALYZE messages",
    ] {
        sqlx::query(sql)
            .execute(store.pool())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

async fn every_hot_query_seeks_an_index(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    populate(&store).await;
    let failures = check_all(&store).await;
    assert!(failures.is_empty(), "hot queries that scan:\n{failures:#?}");
}

async fn the_check_fails_without_the_index(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    populate(&store).await;
    for index in ["rights_requests_by_subject", "deliveries_due"] {
        sqlx::query(&format!("DROP INDEX {index}"))
            .execute(store.pool())
            .await
            .expect("drop index");
        let left: i64 = sqlx::query_scalar(if backend == Backend::Sqlite {
            "SELECT count(*) FROM sqlite_master WHERE name = $1"
        } else {
            "SELECT count(*) FROM pg_indexes WHERE indexname = $1 AND schemaname = current_schema()"
        })
        .bind(index)
        .fetch_one(store.pool())
        .await
        .expect("count");
        assert_eq!(left, 0, "{index} dropped");
    }
    let failures = check_all(&store).await;
    for name in [
        "subject_requests:",
        "requests_of_subject:",
        "due_deliveries:",
    ] {
        assert!(
            failures.iter().any(|f| f.starts_with(name)),
            "{name} not reported: {failures:#?}"
        );
    }
    if backend == Backend::Sqlite {
        // Without its index, the retry query reads every delivery.
        assert!(
            failures
                .iter()
                .any(|f| f.starts_with("due_deliveries: scans webhook_deliveries")),
            "{failures:#?}"
        );
    }
}

on_every_backend!(
    every_hot_query_seeks_an_index,
    the_check_fails_without_the_index
);
