//! Signed checkpoints of the ledger and inclusion proofs of receipts.
//!
//! The Merkle tree (RFC 9162, see `yinyom_core::merkle`) over a tenant's
//! entry hashes grows with each checkpoint: the blocks of 256 entries
//! completed since the last one are hashed and every perfect subtree they
//! complete is stored (`ledger_nodes`), so a checkpoint costs O(new
//! entries) and a proof a few indexed reads, whatever the ledger's size.
//! The leader makes a checkpoint every minute when the ledger grew;
//! `POST /v1/ledger/checkpoints` makes one at once, and a proof asked for
//! a receipt newer than the latest checkpoint makes one first.
//!
//! Today a tenant's ledger is one chain, published as partition 0.

use std::collections::HashMap;

use yinyom_core::merkle::{self, Frontier, Hash, STORED_LEVEL, Subtree};
use yinyom_core::proof::{
    CHECKPOINT_TYPE, CheckpointClaims, EntryProof, PartitionHead, ReceiptProof, SignedCheckpoint,
};
use yinyom_core::time;

use crate::receipts::Signer;
use crate::store::{CheckpointRow, Checkpoints, Store, StoreError};
use yinyom_core::ledger::Broken;

/// The only partition a ledger has today.
pub const PART: u32 = 0;

/// Blocks of 256 entries read per query while the tree grows.
const BLOCKS_PER_READ: u64 = 32;

type Result<T> = std::result::Result<T, StoreError>;

fn corrupt(what: String) -> StoreError {
    StoreError::Unavailable(format!("the ledger does not match its tree: {what}"))
}

/// The leaves `(after, upto]` (1-based seqs), checked to be all there.
async fn leaves<S: Checkpoints + ?Sized>(
    store: &S,
    tenant: &str,
    after: u64,
    upto: u64,
) -> Result<Vec<Hash>> {
    let hashes = store.entry_hashes(tenant, after, upto).await?;
    if hashes.len() as u64 != upto - after {
        return Err(corrupt(format!(
            "entries {} to {upto} should be {} rows, found {}",
            after + 1,
            upto - after,
            hashes.len()
        )));
    }
    hashes
        .iter()
        .map(|h| merkle::leaf_of_hex(h).ok_or_else(|| corrupt(format!("hash {h} is not hex"))))
        .collect()
}

/// The hashes of `needs` in a tree of `n` leaves: stored subtrees from
/// `ledger_nodes`, lower ones from their block's leaves.
async fn subtrees(
    store: &dyn Store,
    tenant: &str,
    n: u64,
    needs: &[Subtree],
) -> Result<HashMap<Subtree, Hash>> {
    let stored: Vec<Subtree> = needs
        .iter()
        .copied()
        .filter(|s| s.level >= STORED_LEVEL)
        .collect();
    let mut out = store.merkle_nodes(tenant, PART, &stored).await?;
    if let Some(s) = stored.iter().find(|s| !out.contains_key(s)) {
        return Err(corrupt(format!(
            "subtree at level {} index {} is not stored",
            s.level, s.index
        )));
    }
    let mut blocks: HashMap<u64, Vec<Hash>> = HashMap::new();
    for s in needs.iter().filter(|s| s.level < STORED_LEVEL) {
        let block = s.start() >> STORED_LEVEL;
        if let std::collections::hash_map::Entry::Vacant(slot) = blocks.entry(block) {
            let from = block << STORED_LEVEL;
            let to = ((block + 1) << STORED_LEVEL).min(n);
            slot.insert(leaves(store, tenant, from, to).await?);
        }
        let base = block << STORED_LEVEL;
        let leaves = &blocks[&block];
        let range = (s.start() - base) as usize..(s.end() - base) as usize;
        let Some(slice) = leaves.get(range) else {
            return Err(corrupt(format!("block {block} is short")));
        };
        out.insert(*s, merkle::perfect_root(slice));
    }
    Ok(out)
}

/// Store the subtrees of the blocks completed between a tree of `from`
/// leaves and one of `to`.
async fn grow(store: &dyn Store, tenant: &str, from: u64, to: u64) -> Result<()> {
    let (done, want) = (from >> STORED_LEVEL, to >> STORED_LEVEL);
    if want <= done {
        return Ok(());
    }
    let needs = Frontier::needs(done);
    let found = store.merkle_nodes(tenant, PART, &needs).await?;
    let resume = needs
        .iter()
        .map(|s| {
            found
                .get(s)
                .map(|h| (*s, *h))
                .ok_or_else(|| corrupt(format!("frontier subtree {s:?} is not stored")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut frontier = Frontier::resume(resume);
    let mut block = done;
    while block < want {
        let last = (block + BLOCKS_PER_READ).min(want);
        let hashes = leaves(store, tenant, block << STORED_LEVEL, last << STORED_LEVEL).await?;
        let mut nodes = Vec::new();
        for (i, chunk) in hashes.chunks_exact(1 << STORED_LEVEL).enumerate() {
            nodes.extend(frontier.push(block + i as u64, merkle::perfect_root(chunk)));
        }
        store.insert_merkle_nodes(tenant, PART, &nodes).await?;
        block = last;
    }
    Ok(())
}

/// The published form of a stored checkpoint.
pub fn signed(c: &CheckpointRow) -> SignedCheckpoint {
    SignedCheckpoint {
        number: c.number,
        size: c.size,
        root: c.root.clone(),
        jws: c.jws.clone(),
    }
}

/// A checkpoint of the tenant's ledger as it is now: the latest if the
/// ledger has not grown since (`new` false), else a new one, signed and
/// stored.
pub struct Made {
    pub row: CheckpointRow,
    pub new: bool,
}

pub async fn make(store: &dyn Store, signer: &Signer, tenant: &str) -> Result<Made> {
    let latest = store.checkpoint(tenant, None).await?;
    let head = store.ledger_head(tenant).await?;
    match latest {
        Some(l) if l.size >= head.seq => Ok(Made { row: l, new: false }),
        latest => Ok(Made {
            row: extend(store, signer, tenant, latest.as_ref(), &head).await?,
            new: true,
        }),
    }
}

/// A new checkpoint if the ledger grew since the latest (none for a
/// ledger still empty): the leader's minute job. Whether one was made.
pub async fn make_if_grown(store: &dyn Store, signer: &Signer, tenant: &str) -> Result<bool> {
    let latest = store.checkpoint(tenant, None).await?;
    let head = store.ledger_head(tenant).await?;
    if head.seq <= latest.as_ref().map_or(0, |l| l.size) {
        return Ok(false);
    }
    extend(store, signer, tenant, latest.as_ref(), &head).await?;
    Ok(true)
}

/// The checkpoint after `latest` covering the ledger up to `head`.
async fn extend(
    store: &dyn Store,
    signer: &Signer,
    tenant: &str,
    latest: Option<&CheckpointRow>,
    head: &yinyom_core::ledger::Chain,
) -> Result<CheckpointRow> {
    let from = latest.map_or(0, |l| l.size);
    let n = head.seq;
    grow(store, tenant, from, n).await?;
    let needs = merkle::decompose(0, n);
    let hashes = subtrees(store, tenant, n, &needs).await?;
    let part_root = merkle::root(n, &mut |s| hashes[&s]);
    let partitions = vec![PartitionHead {
        partition: PART,
        size: n,
        root: hex::encode(part_root),
        head: head.hash.clone(),
    }];
    let root = CheckpointClaims::root_of(&partitions)
        .ok_or_else(|| corrupt("a partition root is not hex".into()))?;
    let now = time::now();
    let claims = CheckpointClaims {
        typ: CHECKPOINT_TYPE.into(),
        iss: format!("urn:yinyom:tenant:{tenant}"),
        tenant: tenant.to_string(),
        number: latest.map_or(1, |l| l.number + 1),
        size: n,
        root: hex::encode(root),
        partitions,
        iat: now / 1_000_000,
    };
    let row = CheckpointRow {
        tenant: tenant.to_string(),
        number: claims.number,
        size: n,
        root: claims.root.clone(),
        jws: signer.current().sign(&claims),
        body: serde_json::to_value(&claims).map_err(|e| StoreError::Unavailable(e.to_string()))?,
        created_at: now,
    };
    if store.insert_checkpoint(&row).await? {
        Ok(row)
    } else {
        // Another node made this number first: theirs stands.
        store
            .checkpoint(tenant, Some(row.number))
            .await?
            .ok_or_else(|| StoreError::Unavailable("checkpoint vanished".into()))
    }
}

/// The audit path of `entry` in the tree of the first `n` entries (a
/// checkpoint's size).
pub async fn entry_proof(
    store: &dyn Store,
    tenant: &str,
    entry: yinyom_core::ledger::LedgerEntry,
    n: u64,
) -> Result<EntryProof> {
    let m = entry.seq - 1;
    let needs = merkle::inclusion_needs(m, n);
    let hashes = subtrees(store, tenant, n, &needs).await?;
    let path = merkle::inclusion_proof(m, n, &mut |s| hashes[&s])
        .ok_or_else(|| corrupt(format!("entry {} is beyond the checkpoint", entry.seq)))?;
    Ok(EntryProof {
        partition: PART,
        leaf_index: m,
        entry,
        path: path.iter().map(hex::encode).collect(),
    })
}

/// The proof of a receipt: its ledger entries and their audit paths to a
/// checkpoint that covers them (made now if none does yet). `None` for an
/// unknown receipt.
pub async fn prove(
    store: &dyn Store,
    signer: &Signer,
    tenant: &str,
    receipt_id: &str,
) -> Result<Option<(String, ReceiptProof)>> {
    let Some((uid, receipt)) = store.receipt(tenant, receipt_id).await? else {
        return Ok(None);
    };
    let entries: Vec<_> = store
        .history(tenant, &uid)
        .await?
        .into_iter()
        .filter(|e| e.body.receipt.as_deref() == Some(receipt_id))
        .collect();
    let last = entries.iter().map(|e| e.seq).max().unwrap_or(0);
    let mut cp = store.checkpoint(tenant, None).await?;
    if cp.as_ref().is_none_or(|c| c.size < last) {
        cp = Some(make(store, signer, tenant).await?.row);
    }
    let cp = cp.ok_or_else(|| StoreError::Unavailable("no checkpoint".into()))?;
    let mut proofs = Vec::with_capacity(entries.len());
    for entry in entries {
        proofs.push(entry_proof(store, tenant, entry, cp.size).await?);
    }
    Ok(Some((
        receipt.jws,
        ReceiptProof {
            receipt_id: receipt_id.to_string(),
            checkpoint: signed(&cp),
            entries: proofs,
        },
    )))
}

/// A ledger that no longer matches a signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The first checkpoint it contradicts.
    pub checkpoint: u64,
    /// The first entry that may differ: the start of the block of 256
    /// whose hash differs from the stored one, else the first entry that
    /// checkpoint added.
    pub seq: u64,
    pub problem: String,
}

impl From<Mismatch> for Broken {
    fn from(m: Mismatch) -> Broken {
        Broken {
            seq: m.seq,
            problem: m.problem,
        }
    }
}

/// Recompute the root of every stored checkpoint of the tenant from the
/// ledger's rows and compare it with the signed one: a ledger rewritten
/// and re-hashed after a checkpoint (which the chain alone cannot show) is
/// found here. Each block of 256 entries is also compared with its stored
/// subtree, which names the altered block. Returns the first mismatch.
pub async fn audit<S: Checkpoints + ?Sized>(store: &S, tenant: &str) -> Result<Option<Mismatch>> {
    Audit::start(store, tenant)
        .await?
        .finish(store, tenant)
        .await
}

/// The audit of [`audit`] fed the ledger's leaves in order, so that the
/// verification pass, which reads every entry anyway, audits the
/// checkpoints as it goes instead of reading the ledger a second time.
pub struct Audit {
    /// Checkpoints not yet reached, oldest first.
    pending: std::collections::VecDeque<CheckpointRow>,
    /// The newest checkpoint listed so far.
    listed: u64,
    /// The right edge of the perfect subtrees over the leaves so far.
    edge: Vec<(u32, Hash)>,
    /// Leaves folded so far.
    at: u64,
    /// Where the next checkpoint's new entries start.
    from: u64,
    /// Stored hashes of the blocks the coming leaves complete.
    stored: HashMap<Subtree, Hash>,
    found: Option<Mismatch>,
}

impl Audit {
    /// An audit of the tenant's checkpoints stored now, from the first leaf.
    pub async fn start<S: Checkpoints + ?Sized>(store: &S, tenant: &str) -> Result<Audit> {
        let mut audit = Audit {
            pending: Default::default(),
            listed: 0,
            edge: Vec::new(),
            at: 0,
            from: 0,
            stored: HashMap::new(),
            found: None,
        };
        audit.list(store, tenant).await?;
        audit.settle();
        Ok(audit)
    }

    /// Take in the checkpoints stored since the last look.
    async fn list<S: Checkpoints + ?Sized>(&mut self, store: &S, tenant: &str) -> Result<()> {
        let mut newer = Vec::new();
        let mut before = None;
        'pages: loop {
            let page = store.checkpoints(tenant, before, 500).await?;
            let Some(last) = page.last() else { break };
            before = Some(last.number);
            for cp in page {
                if cp.number <= self.listed {
                    break 'pages;
                }
                newer.push(cp);
            }
        }
        newer.reverse();
        if let Some(last) = newer.last() {
            self.listed = last.number;
        }
        self.pending.extend(newer);
        Ok(())
    }

    /// How many leaves the audit still needs: up to the last listed
    /// checkpoint's size (none once a mismatch is found).
    pub fn needs_upto(&self) -> u64 {
        match (&self.found, self.pending.back()) {
            (None, Some(cp)) => cp.size,
            _ => self.at,
        }
    }

    /// Read the stored block hashes the leaves up to `to` are checked
    /// against; call before pushing them.
    pub async fn prepare<S: Checkpoints + ?Sized>(
        &mut self,
        store: &S,
        tenant: &str,
        to: u64,
    ) -> Result<()> {
        let to = to.min(self.needs_upto());
        if to <= self.at {
            return Ok(());
        }
        let blocks: Vec<Subtree> = (self.at >> STORED_LEVEL..=to >> STORED_LEVEL)
            .map(|index| Subtree {
                level: STORED_LEVEL,
                index,
            })
            .collect();
        self.stored = store.merkle_nodes(tenant, PART, &blocks).await?;
        Ok(())
    }

    /// Fold the next leaf (of entry `at + 1`), within what [`prepare`]
    /// read; past what the audit needs, leaves are ignored.
    ///
    /// [`prepare`]: Audit::prepare
    pub fn push(&mut self, leaf: Hash) {
        if self.at >= self.needs_upto() {
            return;
        }
        let Some(cp) = self.pending.front() else {
            return;
        };
        let number = cp.number;
        let mut node = (0u32, leaf);
        while let Some(&(level, left)) = self.edge.last() {
            if level != node.0 {
                break;
            }
            self.edge.pop();
            node = (level + 1, merkle::node_hash(&left, &node.1));
            if level + 1 == STORED_LEVEL {
                let block = Subtree {
                    level: STORED_LEVEL,
                    index: self.at >> STORED_LEVEL,
                };
                if self.stored.get(&block).is_some_and(|h| *h != node.1) {
                    self.found = Some(Mismatch {
                        checkpoint: number,
                        seq: block.start() + 1,
                        problem: format!(
                            "entries {} to {} differ from the tree checkpoint {number} signed",
                            block.start() + 1,
                            block.end(),
                        ),
                    });
                    return;
                }
            }
        }
        self.edge.push(node);
        self.at += 1;
        self.settle();
    }

    /// Compare the root of every checkpoint the leaves have reached.
    fn settle(&mut self) {
        while self.found.is_none() {
            let Some(cp) = self.pending.front() else {
                return;
            };
            if cp.size > self.at {
                return;
            }
            let mut iter = self.edge.iter().rev();
            let part_root = match iter.next() {
                None => merkle::empty_root(),
                Some(&(_, first)) => iter.fold(first, |acc, (_, h)| merkle::node_hash(h, &acc)),
            };
            let stated = cp.body["partitions"][0]["root"]
                .as_str()
                .unwrap_or_default();
            if hex::encode(part_root) != stated || cp.root != cp.body["root"] {
                self.found = Some(Mismatch {
                    checkpoint: cp.number,
                    seq: self.from + 1,
                    problem: format!(
                        "the ledger's first {} entries no longer hash to the root checkpoint {} signed",
                        cp.size, cp.number
                    ),
                });
                return;
            }
            self.from = self.at;
            self.pending.pop_front();
        }
    }

    /// Audit the checkpoints stored since [`Audit::start`] too, reading the
    /// leaves not pushed yet; the first mismatch.
    pub async fn finish<S: Checkpoints + ?Sized>(
        mut self,
        store: &S,
        tenant: &str,
    ) -> Result<Option<Mismatch>> {
        if self.found.is_none() {
            self.list(store, tenant).await?;
            self.settle();
        }
        const PAGE: u64 = 64 << STORED_LEVEL;
        while self.found.is_none() && self.at < self.needs_upto() {
            let (at, to) = (self.at, (self.at + PAGE).min(self.needs_upto()));
            let leaves = match leaves(store, tenant, at, to).await {
                Ok(l) => l,
                Err(e) => {
                    let checkpoint = self.pending.front().map_or(0, |cp| cp.number);
                    return Ok(Some(Mismatch {
                        checkpoint,
                        seq: at + 1,
                        problem: e.to_string(),
                    }));
                }
            };
            self.prepare(store, tenant, to).await?;
            for leaf in leaves {
                self.push(leaf);
            }
        }
        Ok(self.found)
    }
}
