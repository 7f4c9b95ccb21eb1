//! Rate limits per client address: failed authentications (each 401 spends
//! a token; with none left, requests that carry credentials get 429 until
//! the bucket refills) and the public endpoints (the banner's calls,
//! analytics.js's settings, signed links, the console's login form).
//!
//! The client is the connection's peer, or — when the peer is one of
//! `YINYOM_TRUSTED_PROXIES` — the nearest address in `X-Forwarded-For` that
//! is not a trusted proxy, so that one client behind a proxy cannot use up
//! everyone's allowance. Requests without a known peer (in-process tests)
//! are not limited.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use crate::app::App;

/// A token bucket per address: `capacity` tokens, refilled at `per_minute`.
pub struct Buckets {
    capacity: f64,
    per_second: f64,
    state: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    /// How many addresses `state` holds.
    tracked: std::sync::atomic::AtomicUsize,
}

impl Buckets {
    pub fn new(capacity: u32, per_minute: u32) -> Self {
        Buckets {
            capacity: f64::from(capacity),
            per_second: f64::from(per_minute) / 60.0,
            state: Mutex::default(),
            tracked: Default::default(),
        }
    }

    fn with<R>(&self, ip: IpAddr, f: impl FnOnce(&mut f64) -> R) -> R {
        let now = Instant::now();
        let mut m = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 100_000 {
            // Full buckets carry no information: forget them.
            let (cap, rate) = (self.capacity, self.per_second);
            m.retain(|_, (t, at)| *t + now.duration_since(*at).as_secs_f64() * rate < cap);
        }
        let (tokens, at) = m.entry(ip).or_insert((self.capacity, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.capacity);
        *at = now;
        let r = f(tokens);
        self.tracked
            .store(m.len(), std::sync::atomic::Ordering::Relaxed);
        r
    }

    /// Whether a token is left (without spending it). An address that never
    /// spent one has them all: nothing is stored for it, and with no
    /// address stored at all no lock is taken (every authenticated request
    /// asks this).
    pub fn has(&self, ip: IpAddr) -> bool {
        if self.tracked.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return true;
        }
        let m = self.state.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&ip)
            .is_none_or(|(tokens, at)| tokens + at.elapsed().as_secs_f64() * self.per_second >= 1.0)
    }

    /// Spend a token; false when there was none.
    pub fn take(&self, ip: IpAddr) -> bool {
        self.with(ip, |t| {
            if *t >= 1.0 {
                *t -= 1.0;
                true
            } else {
                false
            }
        })
    }

    /// Seconds until a token is back.
    fn retry_after(&self, ip: IpAddr) -> u64 {
        self.with(ip, |t| {
            ((1.0 - *t).max(0.0) / self.per_second).ceil() as u64
        })
        .max(1)
    }
}

/// The limits of one server.
pub struct Limits {
    pub auth_failures: Buckets,
    pub public: Buckets,
    pub trusted_proxies: Vec<IpAddr>,
}

impl Limits {
    /// Defaults: 20 failed authentications a minute (in a burst, then one
    /// every 3 s); 300 public calls a minute (the banner, links, login).
    pub fn new(trusted_proxies: Vec<IpAddr>, auth: Option<u32>, public: Option<u32>) -> Self {
        let auth = auth.unwrap_or(20).max(1);
        let public = public.unwrap_or(300).max(1);
        Limits {
            auth_failures: Buckets::new(auth, auth),
            public: Buckets::new(public, public),
            trusted_proxies,
        }
    }

    /// The client behind a request.
    fn client(&self, req: &Request) -> Option<IpAddr> {
        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>()?.0.ip();
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        Some(
            forwarded
                .into_iter()
                .rev()
                .find(|a| !self.trusted_proxies.contains(a))
                .unwrap_or(peer),
        )
    }
}

fn is_public(req: &Request) -> bool {
    let p = req.uri().path();
    p.starts_with("/sdk/v1/")
        // analytics.js settings: an unknown write key there is a 404, not
        // a failed authentication, so guesses are limited here.
        || p.starts_with("/v1/projects/")
        || p.starts_with("/p/")
        || p.starts_with("/u/")
        || p.starts_with("/c/")
        || (p == "/admin/login" && req.method() == axum::http::Method::POST)
}

fn too_many(retry_after: u64) -> Response {
    let mut res = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-requests",
        "too many requests from this address; try again later",
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

/// The middleware.
pub async fn limit(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let limits = &app.limits;
    let Some(ip) = limits.client(&req) else {
        return next.run(req).await;
    };
    if is_public(&req) && !limits.public.take(ip) {
        return too_many(limits.public.retry_after(ip));
    }
    let credentials = req.headers().contains_key(header::AUTHORIZATION);
    if credentials && !limits.auth_failures.has(ip) {
        return too_many(limits.auth_failures.retry_after(ip));
    }
    let res = next.run(req).await;
    if res.status() == StatusCode::UNAUTHORIZED {
        limits.auth_failures.take(ip);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_empty_then_refill() {
        let b = Buckets::new(3, 60);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let other: IpAddr = "203.0.113.10".parse().unwrap();
        assert!(b.take(ip) && b.take(ip) && b.take(ip));
        assert!(!b.take(ip) && !b.has(ip));
        assert!(b.has(other), "addresses are apart");
        assert!(b.retry_after(ip) >= 1);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(b.take(ip), "one a second comes back");
    }
}
