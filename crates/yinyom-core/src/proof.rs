//! Signed checkpoints and receipts that prove themselves.
//!
//! A *checkpoint* (a signed tree head, as Certificate Transparency
//! publishes them) states, for each partition (chain) of a tenant's ledger,
//! how many entries it has, the Merkle root over their hashes and the chain's
//! head hash; its `root` is the Merkle tree over the partitions' roots
//! (each partition's leaf is `leaf_hash(partition root)`, in partition
//! order). The claims are signed with the receipt key, so anyone holding the
//! published JWKS can check them.
//!
//! A *receipt proof* gives, for each ledger entry that carries a receipt's
//! id, the entry itself and its audit path to the partition's root in a
//! checkpoint. [`verify_receipt`] checks all of it offline: both
//! signatures, that each entry hashes to its recorded hash and names the
//! receipt, that the audit path leads to the signed root, and that every
//! purpose the receipt lists was granted (or, for a withdrawal, withdrawn)
//! by one of those entries.

use serde::{Deserialize, Serialize};

use crate::consent::Action;
use crate::ledger::{LedgerEntry, hash_entry};
use crate::merkle::{self, Hash};
use crate::receipt::{ReceiptView, verify_with_jwks};

/// What a checkpoint's `typ` claim says.
pub const CHECKPOINT_TYPE: &str = "yinyom-checkpoint/1";

/// One partition (hash chain) of the ledger, as a checkpoint states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartitionHead {
    pub partition: u32,
    /// Entries in the partition (the Merkle tree's size).
    pub size: u64,
    /// Hex: the Merkle root over the partition's entry hashes.
    pub root: String,
    /// Hex: the hash of the partition's last entry (the chain head).
    pub head: String,
}

/// The signed claims of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckpointClaims {
    pub typ: String,
    pub iss: String,
    pub tenant: String,
    /// 1, 2, … per tenant.
    pub number: u64,
    /// Entries covered, over all partitions.
    pub size: u64,
    /// Hex: the Merkle root over the partitions' roots.
    pub root: String,
    pub partitions: Vec<PartitionHead>,
    /// Seconds since the epoch.
    pub iat: i64,
}

impl CheckpointClaims {
    /// The root over the partitions' roots; `None` if one is not hex.
    pub fn root_of(partitions: &[PartitionHead]) -> Option<Hash> {
        let leaves = partitions
            .iter()
            .map(|p| merkle::hash_from_hex(&p.root).map(|r| merkle::leaf_hash(&r)))
            .collect::<Option<Vec<_>>>()?;
        Some(merkle::root_of_leaves(&leaves))
    }
}

/// One ledger entry of a receipt and its audit path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EntryProof {
    pub partition: u32,
    /// The entry's position in its partition's tree (its `pseq` − 1).
    pub leaf_index: u64,
    pub entry: LedgerEntry,
    /// Hex hashes, from the leaf up (RFC 9162 §2.1.3).
    pub path: Vec<String>,
}

/// A checkpoint as it is published: its number and signed claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedCheckpoint {
    pub number: u64,
    pub size: u64,
    pub root: String,
    /// The claims signed with the receipt key (JWS compact, EdDSA).
    pub jws: String,
}

/// What `GET /v1/receipts/{id}/proof` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReceiptProof {
    pub receipt_id: String,
    pub checkpoint: SignedCheckpoint,
    pub entries: Vec<EntryProof>,
}

/// What a verified receipt (and proof) showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    pub receipt_id: String,
    pub issuer: String,
    /// The purposes (service keys) the receipt lists as granted.
    pub purposes: Vec<String>,
    /// The purposes it lists as withdrawn.
    pub withdrawn: Vec<String>,
    /// The ledger partition the receipt names (none on receipts issued
    /// before partitioned chains).
    pub partition: Option<u32>,
    /// With a proof: the checkpoint it was proven against, and where the
    /// entries are.
    pub checkpoint: Option<u64>,
    pub tenant: Option<String>,
    pub subject_uid: Option<String>,
    pub positions: Vec<(u32, u64)>,
}

/// Check a receipt (a JWS) and, when given, its proof, with nothing but the
/// published key set. The error says which check failed.
pub fn verify_receipt(
    receipt_jws: &str,
    proof: Option<&ReceiptProof>,
    jwks: &serde_json::Value,
) -> Result<Verified, String> {
    let claims = verify_with_jwks(receipt_jws, jwks).map_err(|e| format!("receipt: {e}"))?;
    let view = ReceiptView::of(&claims)?;
    let receipt_id = view.id.clone();
    let purposes = view.granted.clone();
    let mut verified = Verified {
        receipt_id: receipt_id.clone(),
        issuer: view.issuer.clone(),
        purposes: purposes.clone(),
        withdrawn: Vec::new(),
        partition: view.partition,
        checkpoint: None,
        tenant: None,
        subject_uid: None,
        positions: Vec::new(),
    };
    let Some(proof) = proof else {
        return Ok(verified);
    };
    if proof.receipt_id != receipt_id {
        return Err(format!(
            "proof: it is for receipt {}, not {receipt_id}",
            proof.receipt_id
        ));
    }
    let cp: CheckpointClaims = serde_json::from_value(
        verify_with_jwks(&proof.checkpoint.jws, jwks).map_err(|e| format!("checkpoint: {e}"))?,
    )
    .map_err(|e| format!("checkpoint: unexpected claims: {e}"))?;
    if cp.typ != CHECKPOINT_TYPE {
        return Err(format!("checkpoint: unknown type {}", cp.typ));
    }
    let root = CheckpointClaims::root_of(&cp.partitions).ok_or("checkpoint: a root is not hex")?;
    if hex::encode(root) != cp.root {
        return Err("checkpoint: its root is not the root of its partitions".into());
    }
    if proof.entries.is_empty() {
        return Err("proof: no ledger entry carries the receipt".into());
    }
    let withdrawn = view.withdrawn;
    let mut granted = Vec::new();
    let mut withdrawals = Vec::new();
    for e in &proof.entries {
        let seq = e.entry.seq;
        let body = &e.entry.body;
        if hash_entry(seq, &e.entry.prev_hash, body) != e.entry.hash {
            return Err(format!("entry {seq}: its content does not match its hash"));
        }
        if body.receipt.as_deref() != Some(receipt_id.as_str()) {
            return Err(format!(
                "entry {seq}: it does not name receipt {receipt_id}"
            ));
        }
        if body.tenant != cp.tenant {
            return Err(format!("entry {seq}: it belongs to another tenant"));
        }
        if verified
            .subject_uid
            .as_ref()
            .is_some_and(|s| *s != body.subject_uid)
        {
            return Err(format!("entry {seq}: it is about another subject"));
        }
        let part = cp
            .partitions
            .iter()
            .find(|p| p.partition == e.partition)
            .ok_or_else(|| {
                format!(
                    "entry {seq}: the checkpoint has no partition {}",
                    e.partition
                )
            })?;
        // Its position in its partition (a proof made before partitions
        // existed names no `pseq`: there, the position was `seq`).
        let (position, in_partition) = match e.entry.pseq {
            0 => (seq, 0),
            pseq => (pseq, e.entry.partition),
        };
        if in_partition != e.partition {
            return Err(format!(
                "entry {seq}: it belongs to partition {in_partition}, not {}",
                e.partition
            ));
        }
        if view.partition.is_some_and(|p| p != e.partition) {
            return Err(format!(
                "entry {seq}: it is in partition {}, but the receipt names partition {}",
                e.partition,
                view.partition.unwrap_or_default()
            ));
        }
        if e.leaf_index + 1 != position {
            return Err(format!(
                "entry {seq}: leaf index {} is not its position",
                e.leaf_index
            ));
        }
        let path = e
            .path
            .iter()
            .map(|h| merkle::hash_from_hex(h))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("entry {seq}: a path hash is not hex"))?;
        let leaf = merkle::leaf_of_hex(&e.entry.hash)
            .ok_or_else(|| format!("entry {seq}: its hash is not hex"))?;
        let part_root = merkle::hash_from_hex(&part.root)
            .ok_or_else(|| format!("partition {}: root not hex", part.partition))?;
        if !merkle::verify_inclusion(e.leaf_index, part.size, &leaf, &path, &part_root) {
            return Err(format!(
                "entry {seq}: it is not in checkpoint {} (the audit path does not lead to its root)",
                cp.number
            ));
        }
        match body.action {
            Action::Grant => granted.push(body.purpose.clone()),
            Action::Withdraw => withdrawals.push(body.purpose.clone()),
            _ => {}
        }
        verified.subject_uid = Some(body.subject_uid.clone());
        verified.positions.push((e.partition, e.leaf_index));
    }
    if let Some(missing) = purposes.iter().find(|p| !granted.contains(p)) {
        return Err(format!(
            "receipt: it lists purpose {missing}, which no proven entry grants"
        ));
    }
    if let Some(missing) = withdrawn.iter().find(|p| !withdrawals.contains(p)) {
        return Err(format!(
            "receipt: it lists the withdrawal of {missing}, which no proven entry records"
        ));
    }
    verified.withdrawn = withdrawn;
    verified.checkpoint = Some(cp.number);
    verified.tenant = Some(cp.tenant);
    Ok(verified)
}
