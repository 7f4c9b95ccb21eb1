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
//! A tenant's ledger is several chains (partitions); each has its own
//! tree, grown by position (`pseq`), and a checkpoint signs the root over
//! the partitions' roots. A ledger written before partitions is
//! partition 0, so earlier checkpoints (partition 0 only) stay valid.

use std::collections::{BTreeMap, HashMap, VecDeque};

use yinyom_core::merkle::{self, Frontier, Hash, STORED_LEVEL, Subtree};
use yinyom_core::proof::{
    CHECKPOINT_TYPE, CheckpointClaims, EntryProof, PartitionHead, ReceiptProof, SignedCheckpoint,
};
use yinyom_core::time;

use crate::receipts::Signer;
use crate::store::{CheckpointRow, Checkpoints, Store, StoreError};
use yinyom_core::ledger::Broken;

/// Blocks of 256 entries read per query while the tree grows.
const BLOCKS_PER_READ: u64 = 32;

type Result<T> = std::result::Result<T, StoreError>;

fn corrupt(what: String) -> StoreError {
    StoreError::Unavailable(format!("the ledger does not match its tree: {what}"))
}

/// The leaves of partition `part` at positions `(after, upto]`, with their
/// entries' `seq`, checked to be all there.
async fn leaves<S: Checkpoints + ?Sized>(
    store: &S,
    tenant: &str,
    part: u32,
    after: u64,
    upto: u64,
) -> Result<Vec<(u64, Hash)>> {
    let hashes = store.entry_hashes(tenant, part, after, upto).await?;
    if hashes.len() as u64 != upto - after {
        return Err(corrupt(format!(
            "partition {part}: entries {} to {upto} should be {} rows, found {}",
            after + 1,
            upto - after,
            hashes.len()
        )));
    }
    hashes
        .iter()
        .map(|(seq, h)| {
            merkle::leaf_of_hex(h)
                .map(|leaf| (*seq, leaf))
                .ok_or_else(|| corrupt(format!("hash {h} is not hex")))
        })
        .collect()
}

/// The hashes of `needs` in partition `part`'s tree of `n` leaves: stored
/// subtrees from `ledger_nodes`, lower ones from their block's leaves.
async fn subtrees(
    store: &dyn Store,
    tenant: &str,
    part: u32,
    n: u64,
    needs: &[Subtree],
) -> Result<HashMap<Subtree, Hash>> {
    let stored: Vec<Subtree> = needs
        .iter()
        .copied()
        .filter(|s| s.level >= STORED_LEVEL)
        .collect();
    let mut out = store.merkle_nodes(tenant, part, &stored).await?;
    if let Some(s) = stored.iter().find(|s| !out.contains_key(s)) {
        return Err(corrupt(format!(
            "partition {part}: subtree at level {} index {} is not stored",
            s.level, s.index
        )));
    }
    let mut blocks: HashMap<u64, Vec<Hash>> = HashMap::new();
    for s in needs.iter().filter(|s| s.level < STORED_LEVEL) {
        let block = s.start() >> STORED_LEVEL;
        if let std::collections::hash_map::Entry::Vacant(slot) = blocks.entry(block) {
            let from = block << STORED_LEVEL;
            let to = ((block + 1) << STORED_LEVEL).min(n);
            let read = leaves(store, tenant, part, from, to).await?;
            slot.insert(read.into_iter().map(|(_, leaf)| leaf).collect());
        }
        let base = block << STORED_LEVEL;
        let leaves = &blocks[&block];
        let range = (s.start() - base) as usize..(s.end() - base) as usize;
        let Some(slice) = leaves.get(range) else {
            return Err(corrupt(format!("partition {part}: block {block} is short")));
        };
        out.insert(*s, merkle::perfect_root(slice));
    }
    Ok(out)
}

/// Store the subtrees of the blocks of partition `part` completed between
/// a tree of `from` leaves and one of `to`.
async fn grow(store: &dyn Store, tenant: &str, part: u32, from: u64, to: u64) -> Result<()> {
    let (done, want) = (from >> STORED_LEVEL, to >> STORED_LEVEL);
    if want <= done {
        return Ok(());
    }
    let needs = Frontier::needs(done);
    let found = store.merkle_nodes(tenant, part, &needs).await?;
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
        let hashes: Vec<Hash> = leaves(
            store,
            tenant,
            part,
            block << STORED_LEVEL,
            last << STORED_LEVEL,
        )
        .await?
        .into_iter()
        .map(|(_, leaf)| leaf)
        .collect();
        let mut nodes = Vec::new();
        for (i, chunk) in hashes.chunks_exact(1 << STORED_LEVEL).enumerate() {
            nodes.extend(frontier.push(block + i as u64, merkle::perfect_root(chunk)));
        }
        store.insert_merkle_nodes(tenant, part, &nodes).await?;
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

/// The partitions a stored checkpoint states.
fn partitions_of(c: &CheckpointRow) -> Vec<PartitionHead> {
    serde_json::from_value::<CheckpointClaims>(c.body.clone())
        .map(|claims| claims.partitions)
        .unwrap_or_default()
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
    let heads = store.ledger_partitions(tenant).await?;
    let size: u64 = heads.iter().map(|h| h.chain.seq).sum();
    match latest {
        Some(l) if l.size >= size => Ok(Made { row: l, new: false }),
        latest => Ok(Made {
            row: extend(store, signer, tenant, latest.as_ref(), &heads).await?,
            new: true,
        }),
    }
}

/// A new checkpoint if the ledger grew since the latest (none for a
/// ledger still empty): the leader's minute job. Whether one was made.
pub async fn make_if_grown(store: &dyn Store, signer: &Signer, tenant: &str) -> Result<bool> {
    let latest = store.checkpoint(tenant, None).await?;
    let heads = store.ledger_partitions(tenant).await?;
    let size: u64 = heads.iter().map(|h| h.chain.seq).sum();
    if size <= latest.as_ref().map_or(0, |l| l.size) {
        return Ok(false);
    }
    extend(store, signer, tenant, latest.as_ref(), &heads).await?;
    Ok(true)
}

/// The checkpoint after `latest` covering the partitions up to `heads`
/// (read together, so each partition's entries up to its head are there).
async fn extend(
    store: &dyn Store,
    signer: &Signer,
    tenant: &str,
    latest: Option<&CheckpointRow>,
    heads: &[yinyom_core::ledger::Head],
) -> Result<CheckpointRow> {
    let before: HashMap<u32, u64> = latest
        .map(partitions_of)
        .unwrap_or_default()
        .iter()
        .map(|p| (p.partition, p.size))
        .collect();
    let mut partitions = Vec::with_capacity(heads.len());
    for h in heads {
        let (part, n) = (h.partition, h.chain.seq);
        grow(
            store,
            tenant,
            part,
            before.get(&part).copied().unwrap_or(0),
            n,
        )
        .await?;
        let needs = merkle::decompose(0, n);
        let hashes = subtrees(store, tenant, part, n, &needs).await?;
        let part_root = merkle::root(n, &mut |s| hashes[&s]);
        partitions.push(PartitionHead {
            partition: part,
            size: n,
            root: hex::encode(part_root),
            head: h.chain.hash.clone(),
        });
    }
    partitions.sort_by_key(|p| p.partition);
    let size = partitions.iter().map(|p| p.size).sum();
    let root = CheckpointClaims::root_of(&partitions)
        .ok_or_else(|| corrupt("a partition root is not hex".into()))?;
    let now = time::now();
    let claims = CheckpointClaims {
        typ: CHECKPOINT_TYPE.into(),
        iss: format!("urn:yinyom:tenant:{tenant}"),
        tenant: tenant.to_string(),
        number: latest.map_or(1, |l| l.number + 1),
        size,
        root: hex::encode(root),
        partitions,
        iat: now / 1_000_000,
    };
    let row = CheckpointRow {
        tenant: tenant.to_string(),
        number: claims.number,
        size,
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

/// The size checkpoint `cp` states for `part` (0 if it does not list it).
fn size_in(cp: &CheckpointRow, part: u32) -> u64 {
    partitions_of(cp)
        .iter()
        .find(|p| p.partition == part)
        .map_or(0, |p| p.size)
}

/// The audit path of `entry` in its partition's tree as checkpoint `cp`
/// states it.
pub async fn entry_proof(
    store: &dyn Store,
    tenant: &str,
    entry: yinyom_core::ledger::LedgerEntry,
    cp: &CheckpointRow,
) -> Result<EntryProof> {
    let part = entry.partition;
    let n = size_in(cp, part);
    let m = entry.pseq.saturating_sub(1);
    let needs = merkle::inclusion_needs(m, n);
    let hashes = subtrees(store, tenant, part, n, &needs).await?;
    let path = merkle::inclusion_proof(m, n, &mut |s| hashes[&s])
        .ok_or_else(|| corrupt(format!("entry {} is beyond the checkpoint", entry.seq)))?;
    Ok(EntryProof {
        partition: part,
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
    let covers = |cp: &CheckpointRow| entries.iter().all(|e| size_in(cp, e.partition) >= e.pseq);
    let mut cp = store.checkpoint(tenant, None).await?;
    if cp.as_ref().is_none_or(|c| !covers(c)) {
        cp = Some(make(store, signer, tenant).await?.row);
    }
    let cp = cp.ok_or_else(|| StoreError::Unavailable("no checkpoint".into()))?;
    let mut proofs = Vec::with_capacity(entries.len());
    for entry in entries {
        proofs.push(entry_proof(store, tenant, entry, &cp).await?);
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
    /// checkpoint added to the partition.
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

/// One partition's part of the [`Audit`].
#[derive(Default)]
struct PartAudit {
    /// (checkpoint number, size, root) stated for this partition by the
    /// checkpoints not yet reached, oldest first.
    pending: VecDeque<(u64, u64, String)>,
    /// The right edge of the perfect subtrees over the leaves so far.
    edge: Vec<(u32, Hash)>,
    /// Leaves folded so far.
    at: u64,
    /// The `seq` of the first entry after the last checkpoint reached.
    from_seq: Option<u64>,
    /// The `seq` of the first entry of the block being folded.
    block_seq: u64,
    /// Stored hashes of the blocks the coming leaves complete.
    stored: HashMap<Subtree, Hash>,
}

impl PartAudit {
    fn needs_upto(&self) -> u64 {
        self.pending.back().map_or(self.at, |(_, size, _)| *size)
    }
}

/// The audit of [`audit`] fed the ledger's leaves in order, so that the
/// verification pass, which reads every entry anyway, audits the
/// checkpoints as it goes instead of reading the ledger a second time.
pub struct Audit {
    parts: BTreeMap<u32, PartAudit>,
    /// The newest checkpoint listed so far.
    listed: u64,
    found: Option<Mismatch>,
}

impl Audit {
    /// An audit of the tenant's checkpoints stored now, from the first leaf.
    pub async fn start<S: Checkpoints + ?Sized>(store: &S, tenant: &str) -> Result<Audit> {
        let mut audit = Audit {
            parts: BTreeMap::new(),
            listed: 0,
            found: None,
        };
        audit.list(store, tenant).await?;
        for part in audit.parts.keys().copied().collect::<Vec<_>>() {
            audit.settle(part);
        }
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
        for cp in newer {
            self.listed = cp.number;
            let partitions = partitions_of(&cp);
            // The signed root must be the root over the stated partitions.
            let root = CheckpointClaims::root_of(&partitions).map(hex::encode);
            if self.found.is_none()
                && (root.as_deref() != Some(cp.root.as_str()) || cp.root != cp.body["root"])
            {
                self.found = Some(Mismatch {
                    checkpoint: cp.number,
                    seq: 1,
                    problem: format!(
                        "checkpoint {}'s root is not the root of the partitions it states",
                        cp.number
                    ),
                });
            }
            for p in partitions {
                self.parts
                    .entry(p.partition)
                    .or_default()
                    .pending
                    .push_back((cp.number, p.size, p.root));
            }
        }
        Ok(())
    }

    /// Whether the audit needs leaves at all (it has checkpoints to check
    /// and no mismatch yet).
    pub fn needs_leaves(&self) -> bool {
        self.found.is_none() && self.parts.values().any(|p| p.at < p.needs_upto())
    }

    /// Read the stored block hashes that the leaves of each partition up
    /// to the position in `upto` complete; call before pushing them.
    pub async fn prepare<S: Checkpoints + ?Sized>(
        &mut self,
        store: &S,
        tenant: &str,
        upto: &BTreeMap<u32, u64>,
    ) -> Result<()> {
        for (part, to) in upto {
            let Some(p) = self.parts.get_mut(part) else {
                continue;
            };
            let to = (*to).min(p.needs_upto());
            // Only when a block completes among these leaves.
            if to <= p.at || (to >> STORED_LEVEL) == (p.at >> STORED_LEVEL) {
                continue;
            }
            let blocks: Vec<Subtree> = (p.at >> STORED_LEVEL..=to >> STORED_LEVEL)
                .map(|index| Subtree {
                    level: STORED_LEVEL,
                    index,
                })
                .collect();
            p.stored = store.merkle_nodes(tenant, *part, &blocks).await?;
        }
        Ok(())
    }

    /// Fold the next leaf of partition `part` (its entry at position
    /// `at + 1`, `seq` in the ledger), within what [`prepare`] read; past
    /// what the audit needs, leaves are ignored.
    ///
    /// [`prepare`]: Audit::prepare
    pub fn push(&mut self, part: u32, seq: u64, leaf: Hash) {
        if self.found.is_some() {
            return;
        }
        let Some(p) = self.parts.get_mut(&part) else {
            return;
        };
        if p.at >= p.needs_upto() {
            return;
        }
        let Some(&(number, _, _)) = p.pending.front() else {
            return;
        };
        if p.at.is_multiple_of(1 << STORED_LEVEL) {
            p.block_seq = seq;
        }
        p.from_seq.get_or_insert(seq);
        let mut node = (0u32, leaf);
        while let Some(&(level, left)) = p.edge.last() {
            if level != node.0 {
                break;
            }
            p.edge.pop();
            node = (level + 1, merkle::node_hash(&left, &node.1));
            if level + 1 == STORED_LEVEL {
                let block = Subtree {
                    level: STORED_LEVEL,
                    index: p.at >> STORED_LEVEL,
                };
                if p.stored.get(&block).is_some_and(|h| *h != node.1) {
                    self.found = Some(Mismatch {
                        checkpoint: number,
                        seq: p.block_seq,
                        problem: format!(
                            "partition {part}: entries {} to {} (from entry {}) differ from the tree checkpoint {number} signed",
                            block.start() + 1,
                            block.end(),
                            p.block_seq,
                        ),
                    });
                    return;
                }
            }
        }
        p.edge.push(node);
        p.at += 1;
        self.settle(part);
    }

    /// Compare the partition's root of every checkpoint its leaves have
    /// reached.
    fn settle(&mut self, part: u32) {
        let Some(p) = self.parts.get_mut(&part) else {
            return;
        };
        while self.found.is_none() {
            let Some((number, size, stated)) = p.pending.front() else {
                return;
            };
            if *size > p.at {
                return;
            }
            let mut iter = p.edge.iter().rev();
            let part_root = match iter.next() {
                None => merkle::empty_root(),
                Some(&(_, first)) => iter.fold(first, |acc, (_, h)| merkle::node_hash(h, &acc)),
            };
            if hex::encode(part_root) != *stated {
                self.found = Some(Mismatch {
                    checkpoint: *number,
                    seq: p.from_seq.unwrap_or(1),
                    problem: format!(
                        "partition {part}: its first {size} entries no longer hash to the root checkpoint {number} signed"
                    ),
                });
                return;
            }
            p.from_seq = None;
            p.pending.pop_front();
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
            for part in self.parts.keys().copied().collect::<Vec<_>>() {
                self.settle(part);
            }
        }
        const PAGE: u64 = 64 << STORED_LEVEL;
        let parts: Vec<u32> = self.parts.keys().copied().collect();
        for part in parts {
            while let Some(p) = self.parts.get(&part)
                && self.found.is_none()
                && p.at < p.needs_upto()
            {
                let (at, to) = (p.at, (p.at + PAGE).min(p.needs_upto()));
                let leaves = match leaves(store, tenant, part, at, to).await {
                    Ok(l) => l,
                    Err(e) => {
                        let checkpoint = p.pending.front().map_or(0, |cp| cp.0);
                        return Ok(Some(Mismatch {
                            checkpoint,
                            seq: p.from_seq.unwrap_or(1),
                            problem: e.to_string(),
                        }));
                    }
                };
                self.prepare(store, tenant, &BTreeMap::from([(part, to)]))
                    .await?;
                for (seq, leaf) in leaves {
                    self.push(part, seq, leaf);
                }
            }
        }
        Ok(self.found)
    }
}
