//! Delivering the outbox to webhook endpoints: at least once, in order per
//! subject, signed per the Standard Webhooks spec.
//!
//! One dispatcher runs on every node, but only the leader delivers (the
//! only process for SQLite; the holder of an advisory lock for
//! PostgreSQL). Each round it reads each endpoint's new matching events
//! after its cursor and sends them, together with queued retries that are
//! due: several subjects at once, but one subject's events to one endpoint
//! strictly in order (a subject with a queued delivery waits behind it). A
//! failed attempt (network error, timeout, non-2xx) is retried with
//! exponential backoff and jitter until `give_up_after` has passed since
//! the event was queued; then the delivery is dead (listed, replayable).

use std::collections::{HashMap, HashSet};
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

use crate::model::{Attempt, DueDelivery, Webhook};
use crate::services::Services;
use crate::store::OutboxEvent;

/// Events and deliveries read per endpoint and round.
const PAGE: u32 = 1_000;

/// Whether the endpoint's filters let the event through.
/// A restriction or objection of every purpose (`*`) concerns every purpose.
fn wants(w: &Webhook, e: &OutboxEvent) -> bool {
    (w.events.is_empty() || w.events.contains(&e.kind))
        && crate::events::for_purposes(&w.purposes, &e.kind, &e.purpose)
}

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

pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An HTTP/1 client for http and https URLs (webhooks, SMS and LINE providers).
pub fn https_client() -> HttpsClient {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

pub struct Dispatcher {
    svc: Weak<Services>,
    config: DispatchConfig,
    client: HttpsClient,
}

/// When to try again after `attempts` failures: exponential, capped, with
/// ±20 % jitter so that endpoints coming back are not hit all at once.
/// The Standard Webhooks headers of a message: `webhook-id`,
/// `webhook-timestamp` (now) and `webhook-signature` (HMAC-SHA256 under the
/// endpoint's `whsec_` secret). Webhooks and request hooks sign alike.
pub fn signed_headers(
    secret: &str,
    id: &str,
    payload: &[u8],
) -> Result<[(&'static str, String); 3], String> {
    let signer = standardwebhooks::Webhook::new(secret)
        .map_err(|e| format!("the endpoint's secret is unusable: {e}"))?;
    let timestamp = time::now() / 1_000_000;
    let signature = signer
        .sign(id, timestamp, payload)
        .map_err(|e| format!("signing failed: {e}"))?;
    Ok([
        (standardwebhooks::HEADER_WEBHOOK_ID, id.to_string()),
        (
            standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
            timestamp.to_string(),
        ),
        (standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature),
    ])
}

pub fn backoff(config: &DispatchConfig, attempts: u32) -> Duration {
    let exp = config
        .retry_base
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let capped = exp.min(config.retry_max);
    capped.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}

impl Dispatcher {
    pub fn new(svc: &Arc<Services>, config: DispatchConfig) -> Dispatcher {
        Dispatcher {
            svc: Arc::downgrade(svc),
            config,
            client: https_client(),
        }
    }

    pub async fn run(self) {
        let Some(mut changed) = self.svc.upgrade().map(|a| a.changed.subscribe()) else {
            return;
        };
        loop {
            let Some(svc) = self.svc.upgrade() else {
                return;
            };
            let busy = match self.round(&svc).await {
                Ok(busy) => busy,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook dispatch: storage unavailable");
                    false
                }
            };
            drop(svc);
            if !busy {
                // New events wake us at once; retries fall due with time.
                let _ = tokio::time::timeout(Duration::from_millis(250), changed.changed()).await;
            }
        }
    }

    /// One round; true when more work is waiting.
    ///
    /// New events are sent straight from the outbox, and their deliveries
    /// recorded afterwards together with the retries' results and the
    /// endpoints' cursors, in one transaction: one fsync per round, not
    /// per event. A crash before that transaction only means the round's
    /// events are sent again (at least once).
    async fn round(&self, svc: &Services) -> Result<bool, crate::store::StoreError> {
        if !svc.store.lead().await? {
            return Ok(false);
        }
        let now = time::now();
        let retries = svc.store.due_deliveries(now, PAGE).await?;
        let mut busy = retries.len() == PAGE as usize;
        let mut work: Vec<Vec<DueDelivery>> = retries.into_iter().map(|d| vec![d]).collect();
        let first_new = work.len();
        let mut held = Vec::new();
        let mut cursors = Vec::new();
        for w in svc.store.webhooks(None).await? {
            let events = svc.store.events_after(&w.tenant, w.cursor, PAGE).await?;
            let Some(last) = events.last().map(|e| e.seq) else {
                continue;
            };
            busy |= events.len() == PAGE as usize;
            cursors.push((w.tenant.clone(), w.id.clone(), last));
            let waiting: HashSet<String> = svc
                .store
                .pending_subjects(&w.tenant, &w.id)
                .await?
                .into_iter()
                .collect();
            // One chain per subject, in seq order.
            let mut chain_of: HashMap<String, usize> = HashMap::new();
            for e in events.into_iter().filter(|e| wants(&w, e)) {
                let d = DueDelivery {
                    tenant: w.tenant.clone(),
                    webhook: w.id.clone(),
                    seq: e.seq,
                    subject_uid: e.subject_uid,
                    attempts: 0,
                    created_at: now,
                    url: w.url.clone(),
                    secret: w.secret.clone(),
                    payload: e.payload,
                };
                if waiting.contains(&d.subject_uid) {
                    // Behind a queued delivery of the same subject.
                    held.push((d, None));
                } else if let Some(&i) = chain_of.get(&d.subject_uid) {
                    work[i].push(d);
                } else {
                    chain_of.insert(d.subject_uid.clone(), work.len());
                    work.push(vec![d]);
                }
            }
        }

        let mut sending = FuturesUnordered::new();
        let mut queue = work.into_iter().enumerate();
        let (mut new, mut retried) = (held, Vec::new());
        loop {
            while sending.len() < self.config.concurrency {
                let Some((i, chain)) = queue.next() else {
                    break;
                };
                sending.push(async move { (i >= first_new, self.send_chain(chain).await) });
            }
            let Some((is_new, results)) = sending.next().await else {
                break;
            };
            for (d, attempt) in results {
                if let Some(a) = &attempt {
                    svc.metrics.webhook_attempt(a.status);
                }
                match (is_new, attempt) {
                    (true, attempt) => new.push((d, attempt)),
                    (false, Some(a)) => retried.push((d, a)),
                    (false, None) => {}
                }
            }
        }
        svc.store.settle(&new, &retried, &cursors).await?;
        Ok(busy)
    }

    /// Send one subject's deliveries in order, stopping at the first that
    /// fails: the rest are not tried (`None`) and wait their turn.
    async fn send_chain(&self, chain: Vec<DueDelivery>) -> Vec<(DueDelivery, Option<Attempt>)> {
        let mut out = Vec::with_capacity(chain.len());
        let mut failed = false;
        for d in chain {
            if failed {
                out.push((d, None));
                continue;
            }
            let a = self.attempt(&d).await;
            failed = a.status != "delivered";
            out.push((d, Some(a)));
        }
        out
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
        let id = format!("evt_{}_{}", d.tenant, d.seq);
        let mut request = hyper::Request::post(&d.url)
            .header("content-type", "application/json")
            .header("user-agent", "yinyom-webhooks");
        for (name, value) in signed_headers(&d.secret, &id, d.payload.as_bytes())? {
            request = request.header(name, value);
        }
        let request = request
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
