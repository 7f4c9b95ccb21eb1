//! Prometheus metrics, exposed at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use yinyom_core::ledger::LedgerEntry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: &'static str,
    pub route: &'static str,
    pub status: u16,
}

/// Route templates as `'static` labels, so counting a request allocates
/// nothing. Templates come from the route table, so the set is small.
pub fn intern(route: &str) -> &'static str {
    static ROUTES: std::sync::OnceLock<std::sync::RwLock<std::collections::HashSet<&'static str>>> =
        std::sync::OnceLock::new();
    let routes = ROUTES.get_or_init(Default::default);
    if let Some(r) = routes.read().unwrap_or_else(|e| e.into_inner()).get(route) {
        return r;
    }
    let mut w = routes.write().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = w.get(route) {
        return r;
    }
    let leaked: &'static str = Box::leak(route.to_string().into_boxed_str());
    w.insert(leaked);
    leaked
}

pub fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub allowed: &'static str,
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    events: Family<ActionLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    batch: Histogram,
    webhooks: Family<OutcomeLabels, Counter>,
    collected: Family<DecisionLabels, Counter>,
    messages: Family<OutcomeLabels, Counter>,
    forwarded: Family<OutcomeLabels, Counter>,
    view: Family<ViewLabels, prometheus_client::metrics::gauge::Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViewLabels {
    pub what: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("yinyom");
        let requests = Family::<RouteLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        let events = Family::<ActionLabels, Counter>::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        let batch = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        let webhooks = Family::<OutcomeLabels, Counter>::default();
        let collected = Family::<DecisionLabels, Counter>::default();
        let messages = Family::<OutcomeLabels, Counter>::default();
        let forwarded = Family::<OutcomeLabels, Counter>::default();
        let view = Family::<ViewLabels, prometheus_client::metrics::gauge::Gauge>::default();
        registry.register(
            "view",
            "The decision view: subjects and records held, bytes, budget (bounded mode), \
             subjects read from the store because the view did not hold them (misses)",
            view.clone(),
        );
        registry.register(
            "collector_forwarded",
            "Tracking events forwarded to NATS (published) or lost (queue full)",
            forwarded.clone(),
        );
        registry.register(
            "collector_events",
            "Tracking events received, by whether they were allowed and why",
            collected.clone(),
        );
        registry.register(
            "messages",
            "Messages by outcome (sent, suppressed, failed = will retry, dead)",
            messages.clone(),
        );
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by outcome (delivered, pending = will retry, dead)",
            webhooks.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        registry.register(
            "consent_events",
            "Consent events appended to the ledger",
            events.clone(),
        );
        registry.register("decisions", "Decisions answered", decisions.clone());
        registry.register(
            "write_batch_size",
            "Consent requests per committed transaction",
            batch.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            events,
            decisions,
            batch,
            webhooks,
            collected,
            messages,
            forwarded,
            view,
        }
    }
}

impl Metrics {
    pub fn request(&self, labels: RouteLabels, seconds: f64) {
        self.latency.get_or_create(&labels).observe(seconds);
        self.requests.get_or_create(&labels).inc();
    }

    pub fn decision(&self, allowed: bool, reason: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                allowed: if allowed { "true" } else { "false" },
                reason,
            })
            .inc();
    }

    pub fn consent_events(&self, entries: &[LedgerEntry]) {
        for e in entries {
            self.events
                .get_or_create(&ActionLabels {
                    action: e.body.action.as_str(),
                })
                .inc();
        }
    }

    pub fn webhook_attempt(&self, outcome: &'static str) {
        self.webhooks
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn collected(&self, allowed: bool, reason: &'static str, n: u64) {
        self.collected
            .get_or_create(&DecisionLabels {
                allowed: if allowed { "true" } else { "false" },
                reason,
            })
            .inc_by(n);
    }

    pub fn forwarded(&self, n: u64) {
        self.forwarded
            .get_or_create(&OutcomeLabels {
                outcome: "published",
            })
            .inc_by(n);
    }

    pub fn forward_lost(&self, n: u64) {
        self.forwarded
            .get_or_create(&OutcomeLabels { outcome: "lost" })
            .inc_by(n);
    }

    pub fn message(&self, outcome: &'static str) {
        self.messages
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn write_batch(&self, size: usize) {
        self.batch.observe(size as f64);
    }

    /// Record what the decision view holds (before rendering).
    pub fn view(&self, s: &crate::view::ViewStats) {
        for (what, v) in [
            ("subjects", s.subjects),
            ("records", s.records),
            ("bytes", s.bytes),
            ("budget_bytes", s.budget),
            ("misses", s.misses),
        ] {
            self.view.get_or_create(&ViewLabels { what }).set(v as i64);
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
