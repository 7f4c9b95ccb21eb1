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
        Dialect::Sqlite => format!("EXPLAIN QUERY PLAN {}", q.sql),
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
    if let Some(index) = q.index
        && !plan.iter().any(|l| l.contains(index))
    {
        out.push(format!("does not use {index}"));
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

async fn every_hot_query_seeks_an_index(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let failures = check_all(&store).await;
    assert!(failures.is_empty(), "hot queries that scan:\n{failures:#?}");
}

async fn the_check_fails_without_the_index(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    for index in ["rights_requests_by_subject", "deliveries_due"] {
        sqlx::query(&format!("DROP INDEX {index}"))
            .execute(store.pool())
            .await
            .expect("drop index");
    }
    let failures = check_all(&store).await;
    for name in ["subject_requests:", "requests_of_subject:", "due_deliveries:"] {
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
