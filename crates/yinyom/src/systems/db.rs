//! Connections to connected PostgreSQL and MySQL/MariaDB databases: a small
//! pool per system, cached by system and replaced when the system changes,
//! and the few operations the data map needs, inside one transaction per
//! run. Statements come from [`yinyom_core::systems::Dialect`]: names
//! checked and quoted, every value bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::mysql::{MySql, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions, Postgres};
use sqlx::{Connection as _, Row};
use yinyom_core::systems::{Bind, CatalogueColumn, Dialect, Statement, TableName};
use yinyom_core::time::Micros;

/// How long to wait for a connection before the attempt fails (and is
/// retried later): a system that is down must not hold the others.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections per system: requests are carried out a few at a time.
const POOL_SIZE: u32 = 4;

#[derive(Clone)]
pub enum Pool {
    Pg(PgPool),
    My(MySqlPool),
}

/// Pools by (tenant, system key), with the `updated_at` of the system they
/// were made for: a changed system (new URL) gets a new pool.
#[derive(Default)]
pub struct Pools(Mutex<HashMap<(String, String), (Micros, Pool)>>);

impl Pools {
    pub fn get(
        &self,
        tenant: &str,
        key: &str,
        updated_at: Micros,
        dialect: Dialect,
        url: &str,
    ) -> Result<Pool, String> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let k = (tenant.to_string(), key.to_string());
        if let Some((at, pool)) = map.get(&k)
            && *at == updated_at
        {
            return Ok(pool.clone());
        }
        let pool = match dialect {
            Dialect::Postgres => Pool::Pg(
                PgPoolOptions::new()
                    .max_connections(POOL_SIZE)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .idle_timeout(Duration::from_secs(60))
                    .connect_lazy(url)
                    .map_err(|e| format!("connection URL: {e}"))?,
            ),
            Dialect::Mysql => Pool::My(
                MySqlPoolOptions::new()
                    .max_connections(POOL_SIZE)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .idle_timeout(Duration::from_secs(60))
                    .connect_lazy(url)
                    .map_err(|e| format!("connection URL: {e}"))?,
            ),
        };
        if let Some((_, old)) = map.insert(k, (updated_at, pool.clone())) {
            let old = old.clone();
            tokio::spawn(async move {
                match old {
                    Pool::Pg(p) => p.close().await,
                    Pool::My(p) => p.close().await,
                }
            });
        }
        Ok(pool)
    }

    /// Forget a system's pool (it was removed).
    pub fn forget(&self, tenant: &str, key: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&(tenant.to_string(), key.to_string()));
    }
}

/// One transaction on a connected database.
pub enum Tx {
    Pg(sqlx::Transaction<'static, Postgres>),
    My(sqlx::Transaction<'static, MySql>),
}

fn pg<'q>(s: &'q Statement) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let mut q = sqlx::query(&s.sql);
    for b in &s.binds {
        q = match b {
            Bind::Text(t) => q.bind(t.as_str()),
            Bind::Bool(v) => q.bind(*v),
            Bind::Int(i) => q.bind(*i),
        };
    }
    q
}

fn my<'q>(s: &'q Statement) -> sqlx::query::Query<'q, MySql, sqlx::mysql::MySqlArguments> {
    let mut q = sqlx::query(&s.sql);
    for b in &s.binds {
        q = match b {
            Bind::Text(t) => q.bind(t.as_str()),
            Bind::Bool(v) => q.bind(*v),
            Bind::Int(i) => q.bind(*i),
        };
    }
    q
}

fn err(e: sqlx::Error) -> String {
    match e {
        sqlx::Error::PoolTimedOut => "could not connect within 3 s".into(),
        sqlx::Error::Database(d) => format!("database: {}", d.message()),
        other => other.to_string(),
    }
}

impl Pool {
    pub async fn begin(&self) -> Result<Tx, String> {
        Ok(match self {
            Pool::Pg(p) => Tx::Pg(p.begin().await.map_err(err)?),
            Pool::My(p) => Tx::My(p.begin().await.map_err(err)?),
        })
    }

    /// A round trip on a fresh connection.
    pub async fn ping(&self) -> Result<(), String> {
        match self {
            Pool::Pg(p) => p.acquire().await.map_err(err)?.ping().await.map_err(err),
            Pool::My(p) => p.acquire().await.map_err(err)?.ping().await.map_err(err),
        }
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), String> {
        match self {
            Tx::Pg(t) => t.commit().await.map_err(err),
            Tx::My(t) => t.commit().await.map_err(err),
        }
    }

    pub async fn rollback(self) -> Result<(), String> {
        match self {
            Tx::Pg(t) => t.rollback().await.map_err(err),
            Tx::My(t) => t.rollback().await.map_err(err),
        }
    }

    /// The table's columns from the catalogue; empty: no such table.
    pub async fn catalogue(&mut self, t: &TableName) -> Result<Vec<CatalogueColumn>, String> {
        let s = match self {
            Tx::Pg(_) => Dialect::Postgres.catalogue(t),
            Tx::My(_) => Dialect::Mysql.catalogue(t),
        };
        let columns = match self {
            Tx::Pg(tx) => pg(&s)
                .fetch_all(&mut **tx)
                .await
                .map_err(err)?
                .iter()
                .map(|r| {
                    Ok(CatalogueColumn {
                        name: r.try_get(0)?,
                        nullable: r.try_get::<String, _>(1)? == "YES",
                        data_type: r.try_get(2)?,
                        max_chars: r.try_get(3)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>(),
            Tx::My(tx) => my(&s)
                .fetch_all(&mut **tx)
                .await
                .map_err(err)?
                .iter()
                .map(|r| {
                    Ok(CatalogueColumn {
                        name: r.try_get(0)?,
                        nullable: r.try_get::<String, _>(1)? == "YES",
                        data_type: r.try_get(2)?,
                        max_chars: r.try_get(3)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>(),
        };
        columns.map_err(err)
    }

    /// The single number a `SELECT COUNT(*)` returns.
    pub async fn count(&mut self, s: &Statement) -> Result<i64, String> {
        match self {
            Tx::Pg(tx) => pg(s).fetch_one(&mut **tx).await.map_err(err)?.try_get(0),
            Tx::My(tx) => my(s).fetch_one(&mut **tx).await.map_err(err)?.try_get(0),
        }
        .map_err(err)
    }

    /// Rows of one JSON text column, parsed.
    pub async fn json_rows(&mut self, s: &Statement) -> Result<Vec<serde_json::Value>, String> {
        let texts: Vec<String> = match self {
            Tx::Pg(tx) => pg(s)
                .fetch_all(&mut **tx)
                .await
                .map_err(err)?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>(),
            Tx::My(tx) => my(s)
                .fetch_all(&mut **tx)
                .await
                .map_err(err)?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>(),
        }
        .map_err(err)?;
        texts
            .iter()
            .map(|t| serde_json::from_str(t).map_err(|e| format!("row as JSON: {e}")))
            .collect()
    }

    /// Run a statement; the rows it matched.
    pub async fn execute(&mut self, s: &Statement) -> Result<u64, String> {
        Ok(match self {
            Tx::Pg(tx) => pg(s).execute(&mut **tx).await.map_err(err)?.rows_affected(),
            Tx::My(tx) => my(s).execute(&mut **tx).await.map_err(err)?.rows_affected(),
        })
    }
}
