//! Publishing the outbox to NATS JetStream, on subjects
//! `yinyom.<tenant>.consent.<purpose>`, when `YINYOM_NATS_URL` is set.
//!
//! The leader node (see [`crate::dispatch`]) publishes each tenant's events
//! after a cursor kept in the database, waits for JetStream's
//! acknowledgements, then advances the cursor: at least once, in order.
//! Every message carries `Nats-Msg-Id` = the event id, so the stream drops
//! the duplicates a crash between publishing and saving the cursor could
//! cause. While NATS is down (at start or later) the server keeps serving
//! and the outbox keeps the events; publishing resumes where it stopped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, Context};

use crate::services::Services;

/// The stream that captures `yinyom.>`.
pub const STREAM: &str = "YINYOM";
const SINK: &str = "nats";
const PAGE: u32 = 500;

/// The subject of a tenant's events about a purpose (purpose keys may hold
/// dots: they become further subject tokens; empty tokens are avoided). A
/// restriction or objection of every purpose (`*`, a wildcard to NATS) goes
/// to `_all`, which no purpose key can be (keys start with a letter or digit).
pub fn subject(tenant: &str, purpose: &str) -> String {
    if purpose == "*" {
        return format!("yinyom.{tenant}.consent._all");
    }
    let purpose = if purpose.starts_with('.') || purpose.ends_with('.') || purpose.contains("..") {
        purpose.replace('.', "_")
    } else {
        purpose.to_string()
    };
    format!("yinyom.{tenant}.consent.{purpose}")
}

/// A server URL fit for logs: credentials (`nats://user:secret@host`) out.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

pub struct Publisher {
    svc: Weak<Services>,
    url: String,
}

impl Publisher {
    pub fn new(svc: &Arc<Services>, url: String) -> Publisher {
        Publisher {
            svc: Arc::downgrade(svc),
            url,
        }
    }

    pub async fn run(self) {
        let Some(mut changed) = self.svc.upgrade().map(|a| a.changed.subscribe()) else {
            return;
        };
        let mut js: Option<Context> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(svc) = self.svc.upgrade() else {
                return;
            };
            let result = match &js {
                None => self.connect().await.map(|c| {
                    tracing::info!(url = %redacted(&self.url), "publishing consent events to NATS");
                    js = Some(c);
                    true
                }),
                Some(c) => publish(svc.store.as_ref(), c).await,
            };
            drop(svc);
            match result {
                Ok(busy) => {
                    backoff = Duration::from_millis(100);
                    if !busy {
                        let _ = tokio::time::timeout(Duration::from_millis(250), changed.changed())
                            .await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "NATS: not published; the outbox keeps the events");
                    js = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn connect(&self) -> Result<Context, String> {
        connect(&self.url).await
    }
}

/// JetStream on the server at `url`, with the `YINYOM` stream made if missing.
pub async fn connect(url: &str) -> Result<Context, String> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(url)
        .await
        .map_err(|e| format!("connect to {url}: {e}"))?;
    let js = jetstream::new(client);
    js.get_or_create_stream(jetstream::stream::Config {
        name: STREAM.to_string(),
        subjects: vec!["yinyom.>".to_string()],
        duplicate_window: Duration::from_secs(600),
        // Subscribers have a week to catch up; the ledger keeps all.
        max_age: Duration::from_secs(7 * 24 * 3600),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("stream {STREAM}: {e}"))?;
    Ok(js)
}

/// A tracking event on its way to NATS.
pub struct Forward {
    pub subject: String,
    pub id: String,
    pub payload: String,
}

/// Forwarding allowed tracking events to NATS JetStream on
/// `yinyom.<tenant>.track.<source>` (`Nats-Msg-Id` = tenant and message
/// id). Stored events stay in the database whatever happens here; events of
/// sources that only forward are held in a bounded queue while NATS is
/// down, and counted as lost when it overflows.
#[derive(Clone)]
pub struct Forwarder {
    tx: tokio::sync::mpsc::Sender<Forward>,
}

const FORWARD_QUEUE: usize = 100_000;

impl Forwarder {
    pub fn start(url: String, metrics: Arc<crate::metrics::Metrics>) -> Forwarder {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Forward>(FORWARD_QUEUE);
        tokio::spawn(async move {
            let mut js: Option<Context> = None;
            let mut pending: Vec<Forward> = Vec::new();
            let mut backoff = Duration::from_millis(100);
            loop {
                if pending.is_empty() && rx.recv_many(&mut pending, 1000).await == 0 {
                    return;
                }
                let context = match &js {
                    Some(c) => c.clone(),
                    None => match connect(&url).await {
                        Ok(c) => {
                            js = Some(c.clone());
                            c
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "NATS: tracking events wait");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            continue;
                        }
                    },
                };
                match forward(&context, &pending).await {
                    Ok(()) => {
                        metrics.forwarded(pending.len() as u64);
                        pending.clear();
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "NATS: tracking events not forwarded yet");
                        js = None;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        Forwarder { tx }
    }

    /// Queue events; those that do not fit are lost (and counted).
    pub fn send(&self, events: Vec<Forward>, metrics: &crate::metrics::Metrics) {
        for e in events {
            if self.tx.try_send(e).is_err() {
                metrics.forward_lost(1);
            }
        }
    }
}

async fn forward(js: &Context, events: &[Forward]) -> Result<(), String> {
    let mut acks = Vec::with_capacity(events.len());
    for e in events {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", e.id.as_str());
        let ack = js
            .publish_with_headers(e.subject.clone(), headers, e.payload.clone().into())
            .await
            .map_err(|err| format!("publish: {err}"))?;
        acks.push(ack);
    }
    for ack in acks {
        ack.await.map_err(|e| format!("acknowledgement: {e}"))?;
    }
    Ok(())
}

/// Publish what is new for every tenant (leader only); true when more waits.
async fn publish(store: &dyn crate::store::Store, js: &Context) -> Result<bool, String> {
    if !store.lead().await.map_err(|e| e.to_string())? {
        return Ok(false);
    }
    let mut busy = false;
    for tenant in store.tenants().await.map_err(|e| e.to_string())? {
        let cursor = store
            .sink_cursor(SINK, &tenant.id)
            .await
            .map_err(|e| e.to_string())?;
        let events = store
            .events_after(&tenant.id, cursor, PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = events.last().map(|e| e.seq) else {
            continue;
        };
        busy |= events.len() == PAGE as usize;
        // Publish the page, then wait for every acknowledgement in order.
        let mut acks = Vec::with_capacity(events.len());
        for e in &events {
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                format!("evt_{}_{}", tenant.id, e.seq).as_str(),
            );
            let ack = js
                .publish_with_headers(
                    subject(&tenant.id, &e.purpose),
                    headers,
                    e.payload.clone().into(),
                )
                .await
                .map_err(|err| format!("publish: {err}"))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| format!("acknowledgement: {e}"))?;
        }
        store
            .set_sink_cursor(SINK, &tenant.id, last)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(busy)
}

#[cfg(test)]
mod tests {
    use super::subject;

    #[test]
    fn subjects_are_valid_nats_subjects() {
        assert_eq!(
            subject("t1", "marketing.email"),
            "yinyom.t1.consent.marketing.email"
        );
        assert_eq!(subject("t1", "a..b"), "yinyom.t1.consent.a__b");
        assert_eq!(subject("t1", "a."), "yinyom.t1.consent.a_");
        assert_eq!(subject("t1", "*"), "yinyom.t1.consent._all");
    }

    #[test]
    fn urls_in_logs_carry_no_credentials() {
        assert_eq!(
            super::redacted("nats://u:s3cret@127.0.0.1:4222"),
            "nats://***@127.0.0.1:4222"
        );
        assert_eq!(
            super::redacted("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
    }
}
