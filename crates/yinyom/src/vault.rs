//! Encryption of personal data at rest: envelope encryption in three tiers.
//!
//! * The **master key** (32 bytes) comes from a file or the environment and
//!   is never stored in the database.
//! * Each tenant has a random **tenant key**, stored wrapped by the master
//!   key. From it derive the key that wraps subject keys and the key of the
//!   keyed hashes (HMAC-SHA-256) by which contact points are looked up, so
//!   the database holds no searchable clear text.
//! * Each subject has a random **data key**, stored wrapped by its tenant
//!   key; the subject's profile is sealed with it. Destroying a subject's
//!   data key makes everything sealed with it unreadable (crypto-shredding).
//!
//! Sealing is AES-256-GCM with a random 96-bit nonce; the associated data
//! binds each ciphertext to its tenant and subject, so a blob copied onto
//! another row does not open. Blob layout: `1 | nonce (12) | ciphertext+tag`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rand::RngCore;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

const VERSION: u8 = 1;
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "the master key does not open tenant {0}'s key: this database was encrypted with another master key"
    )]
    WrongMasterKey(String),
    #[error("stored ciphertext does not open (altered, or sealed for another subject)")]
    Corrupt,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<VaultError> for StoreError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Store(e) => e,
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// A 256-bit AES-GCM key.
pub struct SealKey(LessSafeKey);

impl SealKey {
    fn new(bytes: &[u8; KEY_LEN]) -> Self {
        SealKey(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte key is an AES-256 key"),
        ))
    }

    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut buf = plain.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .expect("AES-GCM seals any input under 64 GiB");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        out
    }

    pub fn open(&self, aad: &[u8], blob: &[u8]) -> Result<Vec<u8>, VaultError> {
        if blob.len() < 1 + NONCE_LEN || blob[0] != VERSION {
            return Err(VaultError::Corrupt);
        }
        let nonce = Nonce::try_assume_unique_for_key(&blob[1..1 + NONCE_LEN])
            .map_err(|_| VaultError::Corrupt)?;
        let mut buf = blob[1 + NONCE_LEN..].to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| VaultError::Corrupt)?;
        Ok(plain.to_vec())
    }
}

fn random_key() -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    rand::thread_rng().fill_bytes(&mut k);
    k
}

/// The root of the key hierarchy.
#[derive(Clone)]
pub struct MasterKey([u8; KEY_LEN]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id())
    }
}

impl MasterKey {
    pub fn random() -> Self {
        MasterKey(random_key())
    }

    /// 32 bytes written as 64 hex digits or as base64 (surrounding
    /// whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, String> {
        use base64::Engine;
        let t = text.trim();
        let bytes = hex::decode(t)
            .ok()
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(t).ok())
            .or_else(|| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t)
                    .ok()
            })
            .ok_or("the master key must be 32 bytes written in hex or base64")?;
        let key: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| "the master key must be exactly 32 bytes (64 hex digits)")?;
        Ok(MasterKey(key))
    }

    /// Read the key file, creating it (mode 0600) with a new random key if
    /// it does not exist: the embedded default's zero-configuration start.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::random();
                write_private(path, &format!("{}\n", hex::encode(key.0)))
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                Ok(key)
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// A short fingerprint, stored beside wrapped keys so that a wrong
    /// master key is reported as such.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest([b"yinyom master key id".as_slice(), &self.0].concat())[..8])
    }

    /// The key that signs links this server hands out (unsubscribe links):
    /// the same on every node.
    pub fn link_key(&self) -> hmac::Key {
        let prk = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        hmac::Key::new(
            hmac::HMAC_SHA256,
            hmac::sign(&prk, b"yinyom links v1").as_ref(),
        )
    }

    /// The key that signs preference-center links: the same on every node.
    pub fn preference_link_key(&self) -> hmac::Key {
        let prk = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        hmac::Key::new(
            hmac::HMAC_SHA256,
            hmac::sign(&prk, b"yinyom preference links v1").as_ref(),
        )
    }

    fn seal_key(&self) -> SealKey {
        SealKey::new(&self.0)
    }

    /// Seal a server-wide secret (the receipt-signing key) under the master
    /// key; `name` binds the blob to what it is.
    pub fn seal_secret(&self, name: &str, plain: &[u8]) -> Vec<u8> {
        self.seal_key().seal(name.as_bytes(), plain)
    }

    pub fn open_secret(&self, name: &str, blob: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.seal_key().open(name.as_bytes(), blob)
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// A tenant's keys, unwrapped.
/// How an erased subject's pseudonym begins (no subject id may).
pub const ERASED_PREFIX: &str = "erased:";

pub struct TenantKeys {
    tenant: String,
    wrap: SealKey,
    lookup: hmac::Key,
}

/// A subject's data key, unwrapped, with the associated data that binds
/// what it seals to the subject.
pub struct DataKey {
    key: SealKey,
    aad: Vec<u8>,
}

impl DataKey {
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        self.key.seal(&self.aad, plain)
    }

    pub fn open(&self, blob: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.key.open(&self.aad, blob)
    }
}

impl TenantKeys {
    fn derive(tenant: &str, root: &[u8; KEY_LEN]) -> Self {
        let prk = hmac::Key::new(hmac::HMAC_SHA256, root);
        let sub = |label: &[u8]| -> [u8; KEY_LEN] {
            hmac::sign(&prk, label)
                .as_ref()
                .try_into()
                .expect("HMAC-SHA-256 is 32 bytes")
        };
        TenantKeys {
            tenant: tenant.to_string(),
            wrap: SealKey::new(&sub(b"yinyom subject key wrapping v1")),
            lookup: hmac::Key::new(hmac::HMAC_SHA256, &sub(b"yinyom lookup v1")),
        }
    }

    fn aad(&self, what: &str, uid: &str) -> Vec<u8> {
        format!("{what}\0{}\0{uid}", self.tenant).into_bytes()
    }

    /// The keyed hash by which a normalised identifier is found.
    pub fn lookup_hash(&self, kind: &str, normalized: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.lookup);
        ctx.update(kind.as_bytes());
        ctx.update(b"\0");
        ctx.update(normalized.as_bytes());
        hex::encode(ctx.sign().as_ref())
    }

    /// The keyed pseudonym that replaces an erased subject's id wherever it
    /// was stored: the same id always gives the same pseudonym (so the
    /// subject stays erased when asked for by its old id), and without the
    /// tenant key it cannot be traced back to the id.
    pub fn pseudonym(&self, subject_id: &str) -> String {
        format!(
            "{ERASED_PREFIX}{}",
            self.lookup_hash("erased subject", subject_id)
        )
    }

    /// A new data key for subject `uid`, and its wrapped form to store.
    pub fn new_data_key(&self, uid: &str) -> (DataKey, Vec<u8>) {
        let raw = random_key();
        let wrapped = self.wrap.seal(&self.aad("dk", uid), &raw);
        (self.data_key(uid, &raw), wrapped)
    }

    pub fn unwrap_data_key(&self, uid: &str, wrapped: &[u8]) -> Result<DataKey, VaultError> {
        let raw: [u8; KEY_LEN] = self
            .wrap
            .open(&self.aad("dk", uid), wrapped)?
            .try_into()
            .map_err(|_| VaultError::Corrupt)?;
        Ok(self.data_key(uid, &raw))
    }

    fn data_key(&self, uid: &str, raw: &[u8; KEY_LEN]) -> DataKey {
        DataKey {
            key: SealKey::new(raw),
            aad: self.aad("profile", uid),
        }
    }

    /// Seal a tenant-level secret (a connector's password) for storage.
    pub fn seal_secret(&self, name: &str, plain: &[u8]) -> Vec<u8> {
        self.wrap.seal(&self.aad("secret", name), plain)
    }

    pub fn open_secret(&self, name: &str, blob: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.wrap.open(&self.aad("secret", name), blob)
    }
}

/// The master key and the tenant keys unwrapped so far.
pub struct Vault {
    master: MasterKey,
    tenants: RwLock<HashMap<String, Arc<TenantKeys>>>,
}

impl Vault {
    pub fn new(master: MasterKey) -> Self {
        Vault {
            master,
            tenants: RwLock::default(),
        }
    }

    /// The tenant's keys, created on first use. Two nodes creating them at
    /// once agree: the first insert wins and both read it back.
    pub async fn tenant(
        &self,
        store: &dyn Store,
        tenant: &str,
    ) -> Result<Arc<TenantKeys>, VaultError> {
        if let Some(k) = self.tenants.read().expect("vault lock").get(tenant) {
            return Ok(k.clone());
        }
        let stored = match store.tenant_key(tenant).await? {
            Some(s) => s,
            None => {
                let wrapped = self
                    .master
                    .seal_key()
                    .seal(format!("tk\0{tenant}").as_bytes(), &random_key());
                store
                    .insert_tenant_key(tenant, &self.master.id(), &wrapped)
                    .await?;
                store
                    .tenant_key(tenant)
                    .await?
                    .ok_or(StoreError::NotFound)?
            }
        };
        let root: [u8; KEY_LEN] = self
            .master
            .seal_key()
            .open(format!("tk\0{tenant}").as_bytes(), &stored)
            .map_err(|_| VaultError::WrongMasterKey(tenant.to_string()))?
            .try_into()
            .map_err(|_| VaultError::Corrupt)?;
        let keys = Arc::new(TenantKeys::derive(tenant, &root));
        self.tenants
            .write()
            .expect("vault lock")
            .insert(tenant.to_string(), keys.clone());
        Ok(keys)
    }

    /// Check at start-up that the master key opens every stored tenant key.
    pub async fn check(&self, store: &dyn Store) -> Result<(), VaultError> {
        for t in store.tenants().await? {
            if store.tenant_key(&t.id).await?.is_some() {
                self.tenant(store, &t.id).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_for_its_subject() {
        let keys = TenantKeys::derive("t1", &random_key());
        let (dk, wrapped) = keys.new_data_key("uid-1");
        let blob = dk.seal(b"somchai@example.com");
        assert!(!blob.windows(7).any(|w| w == b"somchai"));
        let again = keys.unwrap_data_key("uid-1", &wrapped).unwrap();
        assert_eq!(again.open(&blob).unwrap(), b"somchai@example.com");
        assert!(keys.unwrap_data_key("uid-2", &wrapped).is_err());
        let (other, _) = keys.new_data_key("uid-2");
        assert!(other.open(&blob).is_err());
        let mut tampered = blob.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(again.open(&tampered).is_err());
    }

    #[test]
    fn lookup_hashes_are_keyed_per_tenant() {
        let root = random_key();
        let a = TenantKeys::derive("a", &root);
        let b = TenantKeys::derive("b", &random_key());
        assert_eq!(
            a.lookup_hash("email", "x@example.com"),
            TenantKeys::derive("a", &root).lookup_hash("email", "x@example.com")
        );
        assert_ne!(
            a.lookup_hash("email", "x@example.com"),
            b.lookup_hash("email", "x@example.com")
        );
        assert_ne!(
            a.lookup_hash("email", "x@example.com"),
            a.lookup_hash("phone", "x@example.com")
        );
    }

    #[test]
    fn master_keys_parse_from_hex_and_base64() {
        let k = MasterKey::random();
        let hex = hex::encode(k.0);
        assert_eq!(MasterKey::parse(&hex).unwrap().id(), k.id());
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(k.0);
        assert_eq!(MasterKey::parse(&format!(" {b64}\n")).unwrap().id(), k.id());
        assert!(MasterKey::parse("abcd").is_err());
        assert!(MasterKey::parse("").is_err());
    }
}
