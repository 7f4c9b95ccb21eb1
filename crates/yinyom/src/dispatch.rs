//! Delivering the outbox to webhook endpoints: at least once, in order per
//! subject, signed per the Standard Webhooks spec.
//!
//! One dispatcher runs on every node, but only the leader delivers (the
//! only process for SQLite; the holder of an advisory lock for
//! PostgreSQL). Each round it queues a delivery per endpoint for every new
//! matching event (`fan_out`), then sends what is due, several subjects at
//! once but never two events of one subject to one endpoint at once. A
//! failed attempt (network error, timeout, non-2xx) is retried with
//! exponential backoff and jitter until `give_up_after` has passed since
//! the event was queued; then the delivery is dead (listed, replayable).

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::body::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use yinyom_core::time::{self, Micros};

use crate::app::App;
use crate::model::{Attempt, DueDelivery};

#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Longest wait for an endpoint's response.
    pub timeout: Duration,
    /// Delay before the first retry; doubled on each failure.
    pub retry_base: Duration,
    /// Longest delay between retries.
    pub retry_max: Duration,
    /// A delivery still failing this long after it was queued is dead.
    pub give_up_after: Duration,
    /// Deliveries in flight at once.
    pub concurrency: usize,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(25 * 3600),
            concurrency: 32,
        }
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct Dispatcher {
    app: Weak<App>,
    config: DispatchConfig,
    client: HttpsClient,
}

/// When to try again after `attempts` failures: exponential, capped, with
/// ±20 % jitter so that endpoints coming back are not hit all at once.
pub fn backoff(config: &DispatchConfig, attempts: u32) -> Duration {
    let exp = config
        .retry_base
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let capped = exp.min(config.retry_max);
    capped.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}

impl Dispatcher {
    pub fn new(app: &Arc<App>, config: DispatchConfig) -> Dispatcher {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Dispatcher {
            app: Arc::downgrade(app),
            config,
            client: Client::builder(TokioExecutor::new()).build(https),
        }
    }

    pub async fn run(self) {
        let Some(mut changed) = self.app.upgrade().map(|a| a.changed.subscribe()) else {
            return;
        };
        loop {
            let Some(app) = self.app.upgrade() else {
                return;
            };
            let busy = match self.round(&app).await {
                Ok(busy) => busy,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook dispatch: storage unavailable");
                    false
                }
            };
            drop(app);
            if !busy {
                // New events wake us at once; retries fall due with time.
                let _ = tokio::time::timeout(Duration::from_millis(250), changed.changed()).await;
            }
        }
    }

    /// One round; true when more work is waiting.
    async fn round(&self, app: &App) -> Result<bool, crate::store::StoreError> {
        if !app.store.lead().await? {
            return Ok(false);
        }
        let now = time::now();
        let mut busy = false;
        for w in app.store.webhooks(None).await? {
            busy |= app.store.fan_out(&w, 1_000, now).await? == 1_000;
        }
        let limit = 256;
        let due = app.store.due_deliveries(now, limit).await?;
        busy |= due.len() == limit as usize;
        let mut sending = FuturesUnordered::new();
        let mut queue = due.into_iter();
        loop {
            while sending.len() < self.config.concurrency {
                let Some(d) = queue.next() else { break };
                sending.push(async move {
                    let attempt = self.attempt(&d).await;
                    (d, attempt)
                });
            }
            let Some((d, attempt)) = sending.next().await else {
                break;
            };
            app.metrics.webhook_attempt(attempt.status);
            app.store.record_attempt(&d, &attempt).await?;
        }
        Ok(busy)
    }

    async fn attempt(&self, d: &DueDelivery) -> Attempt {
        let outcome = self.send(d).await;
        let at = time::now();
        match outcome {
            Ok(code) if (200..300).contains(&code) => Attempt {
                status: "delivered",
                next_at: at,
                code: Some(code),
                error: None,
                at,
            },
            failed => {
                let (code, error) = match failed {
                    Ok(code) => (Some(code), format!("the endpoint answered {code}")),
                    Err(e) => (None, e),
                };
                let attempts = d.attempts + 1;
                let age = Duration::from_micros((at - d.created_at).max(0) as u64);
                let dead = age >= self.config.give_up_after;
                Attempt {
                    status: if dead { "dead" } else { "pending" },
                    next_at: at + backoff(&self.config, attempts).as_micros() as Micros,
                    code,
                    error: Some(error),
                    at,
                }
            }
        }
    }

    /// POST the event; the status code, or why there was none.
    async fn send(&self, d: &DueDelivery) -> Result<u16, String> {
        let signer = standardwebhooks::Webhook::new(&d.secret)
            .map_err(|e| format!("the endpoint's secret is unusable: {e}"))?;
        let id = format!("evt_{}_{}", d.tenant, d.seq);
        let timestamp = time::now() / 1_000_000;
        let signature = signer
            .sign(&id, timestamp, d.payload.as_bytes())
            .map_err(|e| format!("signing failed: {e}"))?;
        let request = hyper::Request::post(&d.url)
            .header("content-type", "application/json")
            .header("user-agent", "yinyom-webhooks")
            .header(standardwebhooks::HEADER_WEBHOOK_ID, &id)
            .header(
                standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
                timestamp.to_string(),
            )
            .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
            .body(Full::new(Bytes::from(d.payload.clone())))
            .map_err(|e| format!("bad request: {e}"))?;
        match tokio::time::timeout(self.config.timeout, self.client.request(request)).await {
            Err(_) => Err(format!(
                "no response within {} ms",
                self.config.timeout.as_millis()
            )),
            Ok(Err(e)) => Err(format!("could not reach the endpoint: {e}")),
            Ok(Ok(response)) => Ok(response.status().as_u16()),
        }
    }
}
