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
            format!("EXPLAIN QUERY PLAN {}", q.sql_on(Dialect::Sqlite))
        }
        Dialect::Postgres => {
            // Empty tables make a sequential scan the cheapest plan; with it
            // priced out, the plan shows which index the query can use.
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut *conn)
                .await
                .expect("set");
            format!("EXPLAIN {}", q.sql_on(Dialect::Postgres))
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
    let names = tables(q.sql_on(dialect));
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

/// PostgreSQL's generic plan of `sql` (the plan a prepared statement
/// settles on after a few runs, made without knowing its parameters), on
/// tables that have no statistics yet.
async fn generic_plan(store: &SqlStore, sql: &str, args: &[Arg]) -> Vec<String> {
    let mut conn = store.pool().acquire().await.expect("a connection");
    let literals: Vec<String> = args
        .iter()
        .map(|a| match a {
            Arg::Int(n) => n.to_string(),
            Arg::Text(s) => format!("'{}'", s.replace('\'', "''")),
        })
        .collect();
    let types: Vec<&str> = args
        .iter()
        .map(|a| match a {
            Arg::Int(_) => "bigint",
            Arg::Text(_) => "text",
        })
        .collect();
    let types = if types.is_empty() {
        String::new()
    } else {
        format!(" ({})", types.join(", "))
    };
    for statement in [
        "SET plan_cache_mode = force_generic_plan".to_string(),
        "SET enable_seqscan = off".to_string(),
        // Typed as sqlx binds them (i64 as bigint, &str as text).
        format!("PREPARE generic_check{types} AS {sql}"),
    ] {
        sqlx::raw_sql(&statement)
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let explain = if literals.is_empty() {
        "EXPLAIN EXECUTE generic_check".to_string()
    } else {
        format!("EXPLAIN EXECUTE generic_check({})", literals.join(", "))
    };
    let rows = sqlx::raw_sql(&explain)
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{explain}: {e}"));
    sqlx::raw_sql("DEALLOCATE generic_check; RESET plan_cache_mode; RESET enable_seqscan")
        .execute(&mut *conn)
        .await
        .expect("reset");
    rows.iter().map(|r| r.get::<String, _>(0)).collect()
}

/// Scans in `plan` of a growing table that seek by the tenant alone (they
/// read the tenant's whole table, however little the query returns).
fn by_tenant_alone(plan: &[String]) -> Vec<String> {
    let mut out = vec![];
    let mut table: Option<String> = None;
    for line in plan {
        let line = line.trim().trim_start_matches("->").trim();
        if let Some(rest) = line.split(" Scan ").nth(1) {
            table = rest
                .split(" on ")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .map(str::to_string)
                .filter(|t| GROWING.contains(&t.as_str()));
            continue;
        }
        let (Some(t), Some(cond)) = (&table, line.strip_prefix("Index Cond: ")) else {
            continue;
        };
        let alone = cond
            .split(" AND ")
            .map(|c| c.trim_matches(|ch| ch == '(' || ch == ')'))
            .all(|c| c.starts_with("tenant = "));
        if alone {
            out.push(format!("reads {t} by {cond}"));
        }
    }
    out
}

/// On PostgreSQL, every hot query's generic plan bounds each growing table
/// by more than the tenant; and the check catches the join that did not
/// (outbox events joined to their entries, bounded on the outbox side only:
/// a merge join then read the tenant's ledger from its first entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_generic_plans_seek_past_the_tenant() {
    let db = Db::new(Backend::Postgres).await;
    let store = db.open().await;
    // Statistics for the request and message tables (their queries'
    // plans with statistics are checked above); the rest have none.
    populate(&store).await;
    let mut failures = vec![];
    for q in HOT {
        let plan = generic_plan(&store, q.sql, q.args).await;
        println!("-- {} (generic)", q.name);
        for line in &plan {
            println!("   {line}");
        }
        for p in by_tenant_alone(&plan) {
            failures.push(format!("{}: {p}\n{}", q.name, plan.join("\n")));
        }
    }
    assert!(
        failures.is_empty(),
        "generic plans that read a tenant's whole table:\n{}",
        failures.join("\n\n")
    );
    let unbounded = "SELECT o.before_state, o.after_state, l.*
         FROM outbox o JOIN ledger l ON l.tenant = o.tenant AND l.seq = o.seq
         WHERE o.tenant = $1 AND o.seq > $2 ORDER BY o.seq LIMIT $3";
    let plan = generic_plan(
        &store,
        unbounded,
        &[Arg::Text("t1"), Arg::Int(10), Arg::Int(500)],
    )
    .await;
    assert!(
        by_tenant_alone(&plan)
            .iter()
            .any(|p| p.starts_with("reads ledger")),
        "{plan:#?}"
    );
}

/// SQLite: `ledger`, `consent_states` and `outbox` are views that find the
/// tenant's number by its id (migration 0160). With the statistics of one
/// tenant (most deployments) the planner must still seek that id, not scan
/// for it: after a scan it cannot take a page of the ledger in index
/// order, and sorts the tenant's whole range to apply `ORDER BY … LIMIT`.
/// (With the number kept in a rowid column of `tenants`, it scanned.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_views_seek_the_tenant_with_the_statistics_of_one() {
    let db = Db::new(Backend::Sqlite).await;
    let store = db.open().await;
    populate(&store).await;
    sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();
    let stat: String =
        sqlx::query_scalar("SELECT stat FROM sqlite_stat1 WHERE tbl = 'tenant_numbers' LIMIT 1")
            .fetch_one(store.pool())
            .await
            .expect("statistics of tenant_numbers");
    assert!(stat.starts_with("1 "), "{stat}");
    for name in [
        "history",
        "evidence",
        "ledger_after",
        "events_after",
        "last_event",
    ] {
        let q = HOT.iter().find(|q| q.name == name).expect(name);
        let plan = plan(&store, q).await;
        assert!(
            plan.iter()
                .any(|l| l.contains("SEARCH t USING PRIMARY KEY (id=?)")),
            "{name}: {plan:#?}"
        );
        if name == "ledger_after" {
            assert!(
                !plan.iter().any(|l| l.contains("TEMP B-TREE")),
                "{name}: {plan:#?}"
            );
        }
    }
}
