//! Receipts: the installation's Ed25519 keys, the signed receipt for a
//! request's grants, and the response a committed request returns.

use rand::RngCore;
use serde_json::json;
use yinyom_core::consent::Action;
use yinyom_core::ledger::{LedgerEntry, partition_of};
use yinyom_core::purpose::lang_str;
use yinyom_core::receipt::{Category, Choice, Controller, ReceiptInput, ReceiptKey, with_subject};
use yinyom_core::time;

use crate::store::{SigningKeyRow, Store, StoreError, StoredReceipt, WriteItem};
use crate::vault::MasterKey;
use crate::view::TenantView;

/// The receipt-signing keys: the newest signs, all are published.
pub struct Signer {
    keys: Vec<ReceiptKey>,
}

impl Signer {
    /// Load the keys, creating the first one on a new store. Secrets are
    /// stored sealed under the master key; one an earlier version stored in
    /// clear is sealed now.
    pub async fn load(store: &dyn Store, master: &MasterKey) -> Result<Signer, StoreError> {
        let name = |kid: &str| format!("signing_key:{kid}");
        let mut rows = store.signing_keys().await?;
        if rows.is_empty() {
            let mut secret = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut secret);
            let key = ReceiptKey::from_secret(secret);
            let row = SigningKeyRow {
                kid: key.kid().to_string(),
                secret: master.seal_secret(&name(key.kid()), &secret),
                created_at: time::now(),
            };
            store.insert_signing_key(&row).await?;
            rows.push(row);
        }
        let mut keys = Vec::with_capacity(rows.len());
        for r in &rows {
            let secret = if r.secret.len() == 32 {
                let sealed = master.seal_secret(&name(&r.kid), &r.secret);
                store.reseal_signing_key(&r.kid, &r.secret, &sealed).await?;
                r.secret.clone()
            } else {
                master.open_secret(&name(&r.kid), &r.secret).map_err(|_| {
                    StoreError::Unavailable(
                        "the receipt-signing key does not open with this master key: it is \
                         not the master key this database was sealed with. Every node of a \
                         cluster must start with the same key: set YINYOM_MASTER_KEY (or \
                         --master-key-file) to the key the first node was started with"
                            .into(),
                    )
                })?
            };
            if let Ok(s) = <[u8; 32]>::try_from(secret.as_slice()) {
                keys.push(ReceiptKey::from_secret(s));
            }
        }
        if keys.is_empty() {
            return Err(StoreError::Unavailable(
                "no usable receipt-signing key".into(),
            ));
        }
        Ok(Signer { keys })
    }

    pub fn current(&self) -> &ReceiptKey {
        self.keys.last().expect("load guarantees one key")
    }

    /// A stored receipt signed again with `principal` as its PII
    /// principal (an erased subject's pseudonym); none when no key of this
    /// installation signed it.
    pub fn with_principal(&self, jws: &str, principal: &str) -> Option<String> {
        let mut claims = self.keys.iter().find_map(|k| k.verify(jws))?;
        with_subject(&mut claims, principal);
        Some(self.current().sign(&claims))
    }

    pub fn jwks(&self) -> serde_json::Value {
        json!({ "keys": self.keys.iter().map(ReceiptKey::jwk).collect::<Vec<_>>() })
    }

    /// Sign the receipt for a request's grants and withdrawals, before it
    /// is written: it needs only what the request and the tenant's
    /// registry say, so it is made in the request's own task, in parallel,
    /// not in the writer. Grants need a notice (a request with grants but
    /// none gets no receipt); a request of withdrawals gets one without.
    /// Other actions (deny, restrict, …) get none.
    pub fn receipt(&self, tv: &TenantView, item: &WriteItem) -> Option<StoredReceipt> {
        let granted = item.actions.iter().any(|a| a.action == Action::Grant);
        let withdrawn = item.actions.iter().any(|a| a.action == Action::Withdraw);
        let notice = item.notice.clone();
        if !(granted || withdrawn) || (granted && notice.is_none()) {
            return None;
        }
        let t = &tv.tenant;
        let lang = item
            .evidence
            .as_ref()
            .and_then(|e| e.get("locale"))
            .and_then(|l| l.as_str())
            .map(|l| if l.starts_with("th") { "th" } else { "en" })
            .unwrap_or(lang_str(t.default_lang));
        let choices = item
            .actions
            .iter()
            .filter(|a| matches!(a.action, Action::Grant | Action::Withdraw))
            .filter_map(|a| {
                let p = tv.purposes.get(&a.purpose)?;
                let name = p
                    .names
                    .iter()
                    .find(|(l, _)| lang_str(**l) == lang)
                    .or_else(|| p.names.iter().next())
                    .map(|(_, n)| n.clone())
                    .unwrap_or_else(|| p.key.clone());
                Some(Choice {
                    purpose: p.key.clone(),
                    name,
                    channel: a.channel.map(|c| c.as_str().to_string()),
                    given: a.action == Action::Grant,
                    basis: p.basis,
                    categories: p
                        .categories
                        .iter()
                        .map(|c| Category {
                            name: c.name.clone(),
                            sensitivity: c.sensitivity,
                        })
                        .collect(),
                    retention_days: p.retention_days,
                    validity_days: p.validity_days,
                    recipients: p.recipients.clone(),
                })
            })
            .collect();
        let id = uuid::Uuid::now_v7().to_string();
        let now = time::now();
        let issuer = format!("urn:yinyom:tenant:{}", t.id);
        let notice_url = notice
            .as_ref()
            .and_then(|n| tv.notices.get(&(n.key.clone(), n.version)))
            .and_then(|m| m.url.clone());
        let input = ReceiptInput {
            id: id.clone(),
            issuer: issuer.clone(),
            issued_at: now,
            occurred_at: item.occurred_at,
            subject: item.subject_id.clone(),
            language: lang.into(),
            jurisdictions: t.jurisdictions.clone(),
            controller: Controller {
                id: issuer,
                name: t.name.clone(),
                contact: t.dpo.name.clone(),
                email: t.dpo.email.clone(),
                phone: t.dpo.phone.clone(),
                address: t.dpo.address.clone(),
            },
            policy_url: t.policy_url.clone(),
            notice,
            notice_url,
            method: item.source.clone(),
            by_guardian: item.guardian,
            choices,
            partition: Some(partition_of(&t.id, &item.subject_id, t.partitions)),
        };
        Some(StoredReceipt {
            id,
            jws: self.current().sign(&input.claims()),
            created_at: now,
        })
    }
}

/// The response to `POST /v1/consents`, built inside the write's
/// transaction and stored with its idempotency key.
pub fn response(item: &WriteItem, entries: &[LedgerEntry]) -> serde_json::Value {
    json!({
        "subject": item.subject_id,
        "events": entries.iter().map(|e| json!({
            "seq": e.seq,
            "partition": e.partition,
            "pseq": e.pseq,
            "purpose": e.body.purpose,
            "channel": e.body.channel,
            "action": e.body.action,
            "state": e.body.action.state(),
            "occurred_at": time::rfc3339(e.body.occurred_at),
            "recorded_at": time::rfc3339(e.body.recorded_at),
            "expires_at": e.body.expires_at.map(time::rfc3339),
            "receipt": e.body.receipt,
            "hash": e.hash,
        })).collect::<Vec<_>>(),
        "receipt": item.receipt.as_ref().map(|r| json!({ "id": r.id, "jws": r.jws })),
    })
}
