//! `GET /v1/stream`: consent events as server-sent events, read from the
//! outbox, so a client that reconnects with `Last-Event-ID` misses nothing.
//! Each event's `id` is its ledger seq, `event` its type, `data` the event
//! JSON (the same body webhooks receive).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Principal;
use super::extract::Query;
use super::problem::{Problem, ProblemBody};
use crate::app::App;
use crate::events;
use crate::model::Role;
use crate::store::OutboxEvent;
use yinyom_core::time;

const READERS: &[Role] = &[Role::Owner, Role::Admin, Role::Service];

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Comma-separated event types (`consent.withdrawn,…`); all when absent.
    pub types: Option<String>,
    /// Comma-separated purpose keys; all when absent.
    pub purposes: Option<String>,
    /// Start after this seq (as `Last-Event-ID` does); without either, only
    /// events from now on are sent.
    pub since: Option<u64>,
}

/// Parse a comma-separated filter; empty means everything.
pub fn list(raw: Option<&str>) -> Vec<String> {
    raw.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Refuse event types that do not exist (a typo would silently match nothing).
pub fn check_types(types: &[String], field: &str) -> Result<(), Problem> {
    match types.iter().find(|t| !events::TYPES.contains(&t.as_str())) {
        Some(t) => Err(Problem::validation(
            field,
            format!(
                "unknown event type {t:?}; known: {}",
                events::TYPES.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

struct Cursor {
    app: Arc<App>,
    tenant: String,
    seq: u64,
    types: Vec<String>,
    purposes: Vec<String>,
    ready: VecDeque<OutboxEvent>,
    changed: tokio::sync::watch::Receiver<u64>,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl Cursor {
    /// A restriction or objection of every purpose (`*`) concerns every purpose.
    fn wanted(&self, e: &OutboxEvent) -> bool {
        (self.types.is_empty() || self.types.contains(&e.kind))
            && crate::events::for_purposes(&self.purposes, &e.kind, &e.purpose)
    }

    async fn next(&mut self) -> Option<OutboxEvent> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(e);
            }
            // Mark before reading: a commit after this point wakes us.
            self.changed.borrow_and_update();
            match self
                .app
                .store
                .events_after(&self.tenant, self.seq, 500)
                .await
            {
                Ok(batch) if !batch.is_empty() => {
                    self.seq = batch.last().map_or(self.seq, |e| e.seq);
                    let wanted: Vec<_> = batch.into_iter().filter(|e| self.wanted(e)).collect();
                    self.ready.extend(wanted);
                }
                Ok(_) => {
                    if *self.closing.borrow() {
                        return None;
                    }
                    tokio::select! {
                        r = self.changed.changed() => r.ok()?,
                        // The server is shutting down: end the stream.
                        _ = self.closing.changed() => return None,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event stream: storage unavailable; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Consent events as they happen (server-sent events).
#[utoipa::path(get, path = "/v1/stream", tag = "events", params(StreamQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this event")),
    responses((status = 200, content_type = "text/event-stream", description = "server-sent events; data is a ConsentEvent"),
        (status = 400, body = ProblemBody),
        (status = 410, body = ProblemBody, description = "events after the given id are no longer kept")),
    security(("api_key" = [])))]
pub async fn stream(
    State(app): State<Arc<App>>,
    who: Principal,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    who.require(READERS)?;
    let types = list(q.types.as_deref());
    check_types(&types, "types")?;
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Problem::validation("Last-Event-ID", "must be the id (a number) of an event")
                })?,
        ),
    };
    let tenant = who.tenant.to_string();
    let seq = match resume.or(q.since) {
        Some(seq) => {
            // Events are kept for EVENT_RETENTION once every consumer has
            // them; a reader further behind has missed some.
            let pruned = app.store.events_pruned_upto(&tenant).await?;
            if seq < pruned {
                return Err(Problem::new(
                    axum::http::StatusCode::GONE,
                    "events-pruned",
                    format!(
                        "events up to {pruned} are no longer kept (they are kept {} days once \
                         every webhook and sink has them); read the current state from \
                         /v1/subjects and resume with since={pruned}",
                        crate::lifecycle::EVENT_RETENTION / time::MICROS_PER_DAY
                    ),
                ));
            }
            seq
        }
        None => app.store.last_event(&tenant).await?,
    };
    let cursor = Cursor {
        changed: app.changed.subscribe(),
        closing: app.closing.subscribe(),
        app,
        tenant,
        seq,
        types,
        purposes: list(q.purposes.as_deref()),
        ready: VecDeque::new(),
    };
    let events = futures_util::stream::unfold(cursor, |mut c| async move {
        let e = c.next().await?;
        let event = Event::default()
            .id(e.seq.to_string())
            .event(e.kind)
            .data(e.payload);
        Some((Ok(event), c))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
