//! Authentication by API key (`Authorization: Bearer <key>`) and the role
//! rules each handler states.
//!
//! Keys are random 192-bit secrets, so a single SHA-256 is enough to store
//! them safely (no password stretching needed) and to look them up by hash,
//! which also makes the comparison independent of the key's bytes. Verified
//! keys are cached briefly so decisions do not pay a database round trip;
//! revoking through this node evicts at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::problem::Problem;
use crate::app::App;
use crate::model::{ApiKey, Role};

const CACHE_TTL: Duration = Duration::from_secs(10);
pub const KEY_PREFIX: &str = "yy_";

/// Who is calling. Cheap to clone: it is built once per key and cached.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: Arc<str>,
    pub role: Role,
    pub key_id: Arc<str>,
}

pub const MANAGERS: &[Role] = &[Role::Owner, Role::Admin];
pub const STAFF: &[Role] = &[Role::Owner, Role::Admin, Role::User];
pub const EVERYONE: &[Role] = &Role::ALL;
pub const OWNERS: &[Role] = &[Role::Owner];

impl Principal {
    pub fn require(&self, roles: &[Role]) -> Result<(), Problem> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "the {} role may not do this",
                self.role.as_str()
            )))
        }
    }

    /// The ledger's `actor` for writes made by this principal.
    pub fn actor(&self) -> String {
        format!("key:{}", self.key_id)
    }
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random API key: `yy_` and 48 hex digits.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// Verified keys by hash: the principal, whether the key is revoked, and
/// when it was looked up.
#[derive(Default)]
pub struct KeyCache {
    entries: RwLock<HashMap<String, (Principal, bool, Instant)>>,
}

impl KeyCache {
    fn get(&self, hash: &str) -> Option<(Principal, bool)> {
        let guard = self.entries.read().unwrap_or_else(|e| e.into_inner());
        guard
            .get(hash)
            .filter(|(_, _, at)| at.elapsed() < CACHE_TTL)
            .map(|(p, revoked, _)| (p.clone(), *revoked))
    }

    fn put(&self, key: &ApiKey) -> (Principal, bool) {
        let principal = Principal {
            tenant: key.tenant.as_str().into(),
            role: key.role,
            key_id: key.id.as_str().into(),
        };
        let revoked = key.revoked_at.is_some();
        let mut guard = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if guard.len() > 10_000 {
            guard.retain(|_, (_, _, at)| at.elapsed() < CACHE_TTL);
        }
        guard.insert(
            key.hash.clone(),
            (principal.clone(), revoked, Instant::now()),
        );
        (principal, revoked)
    }

    /// Forget every cached key (another node created or revoked one).
    pub fn clear(&self) {
        let mut guard = self.entries.write().unwrap_or_else(|e| e.into_inner());
        guard.clear();
    }

    pub fn evict(&self, hash: &str) {
        let mut guard = self.entries.write().unwrap_or_else(|e| e.into_inner());
        guard.remove(hash);
    }
}

impl FromRequestParts<Arc<App>> for Principal {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Problem> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            Problem::unauthorized("an API key is required: Authorization: Bearer <key>")
        })?;
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header must be 'Bearer <key>'")
            })?;
        let hash = hash_key(token);
        let (principal, revoked) = match app.keys.get(&hash) {
            Some(hit) => hit,
            None => {
                let k = app
                    .store
                    .api_key_by_hash(&hash)
                    .await?
                    .ok_or_else(|| Problem::unauthorized("the API key is not valid"))?;
                app.ensure_tenant(&k.tenant).await?;
                app.keys.put(&k)
            }
        };
        if revoked {
            return Err(Problem::unauthorized("the API key has been revoked"));
        }
        Ok(principal)
    }
}
