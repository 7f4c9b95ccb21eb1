//! Throwaway PostgreSQL schemas: every test, benchmark run or drill gets a
//! schema of its own in a shared database and drops it afterwards, so runs
//! never see each other's rows.

use sqlx::{AnyConnection, Connection};

use super::{Result, StoreError};

/// The PostgreSQL that tests and benchmarks use: `YINYOM_TEST_POSTGRES_URL`,
/// or the machine's local server (trust auth, database `test`).
pub fn postgres_url() -> String {
    std::env::var("YINYOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A schema created for one run; dropped (with everything in it) when this
/// is dropped.
pub struct Scratch {
    base_url: String,
    name: String,
}

impl Scratch {
    /// Create a fresh, uniquely named schema in the database at `base_url`.
    pub async fn create(base_url: &str) -> Result<Scratch> {
        sqlx::any::install_default_drivers();
        let name = format!("yy_{}", uuid::Uuid::new_v4().simple());
        let mut conn = AnyConnection::connect(base_url)
            .await
            .map_err(|e| StoreError::Unavailable(format!("PostgreSQL at {base_url}: {e}")))?;
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let _ = conn.close().await;
        Ok(Scratch {
            base_url: base_url.to_string(),
            name,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL whose connections use this schema.
    pub fn url(&self) -> String {
        let sep = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}options=-c%20search_path%3D{}",
            self.base_url, self.name
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let (url, name) = (self.base_url.clone(), self.name.clone());
        // Drop may run inside a runtime: do the cleanup on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = AnyConnection::connect(&url).await.ok()?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .execute(&mut conn)
                    .await
                    .ok()?;
                conn.close().await.ok()
            })
        });
        let _ = cleanup.join();
    }
}
