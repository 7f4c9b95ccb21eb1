//! The consent ledger: append-only, hash-chained per partition of a tenant.
//!
//! A tenant's ledger is [`PARTITIONS`] independent chains (partitions); a
//! subject always lands in the same one ([`partition_of`], a hash of its
//! id keyed by the tenant, known before anything is written), so writers of
//! different subjects need not wait on each other, and a subject's own
//! history stays in order in its partition. Every entry has a `seq`, its
//! place in the tenant's order over all partitions (increasing, not always
//! dense), and a `pseq`, its position in its partition (1, 2, 3, …).
//!
//! `hash = SHA-256(canonical JSON of {v, seq, prev, body})`, where `prev` is
//! the hash of the previous entry *of the same partition* (64 zeros for the
//! first). Changing, inserting, deleting or reordering any entry breaks its
//! partition's chain at that entry, and `Verifier` names the first one.
//! A ledger written before partitions existed is partition 0, `pseq = seq`.
//!
//! Evidence (IP, user agent, …) is personal data that erasure must be able to
//! remove, so the chain covers its hash, not its content: the evidence can be
//! deleted later and the chain still verifies, but it cannot be *altered*.

use serde::{Deserialize, Serialize};

use crate::canonical;
use crate::consent::{Action, ConsentRecord, NoticeVersion};
use crate::notice::NoticeRef;
use crate::purpose::Channel;
use crate::time::Micros;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Version of the canonical encoding, hashed into every entry.
const ENCODING_VERSION: u8 = 1;

/// What happened, as recorded. `subject_uid` is the subject's random,
/// pseudonymous id, never the controller's identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EntryBody {
    pub tenant: String,
    pub subject_uid: String,
    pub purpose: String,
    pub channel: Option<Channel>,
    pub action: Action,
    pub notice: Option<NoticeRef>,
    pub source: String,
    /// Who recorded it: an API key id, `import`, `system`.
    pub actor: String,
    pub evidence_hash: Option<String>,
    pub occurred_at: Micros,
    pub recorded_at: Micros,
    /// For grants on purposes with a validity period: when it lapses.
    pub expires_at: Option<Micros>,
    /// For grants recorded through the API: the id of the signed receipt
    /// the subject was given, so the chain vouches for the receipt.
    pub receipt: Option<String>,
    /// The subject is a minor and the evidence names the guardian who gave
    /// or joined the consent (PDPA s.20). Absent (false) from the hashed
    /// body unless set, so earlier entries hash as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guardian: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerEntry {
    pub seq: u64,
    /// The partition (hash chain) the entry belongs to.
    #[serde(default)]
    pub partition: u32,
    /// The entry's position in its partition, from 1.
    #[serde(default)]
    pub pseq: u64,
    pub body: EntryBody,
    pub prev_hash: String,
    pub hash: String,
}

impl LedgerEntry {
    /// The consent record this entry sets, were it the latest; none for an
    /// entry that changes the subject's flags.
    pub fn record(&self) -> Option<ConsentRecord> {
        Some(ConsentRecord {
            purpose: self.body.purpose.as_str().into(),
            channel: self.body.channel,
            state: self.body.action.state()?,
            seq: self.seq,
            occurred_at: self.body.occurred_at,
            expires_at: self.body.expires_at,
            notice: self.body.notice.as_ref().map(|n| NoticeVersion {
                key: n.key.as_str().into(),
                version: n.version,
            }),
            source: self.body.source.as_str().into(),
            guardian: self.body.guardian,
        })
    }
}

/// `SHA-256(canonical JSON of {v, seq, prev, body})`. The canonical JSON
/// has every object's keys sorted; rather than build a `serde_json::Value`
/// (which sorts, at the cost of a map per object), the fields are written in
/// sorted order straight into the hasher: the same bytes, several times
/// faster, which is most of what verification costs. `hash_entry_generic`
/// is the reference it is tested against.
pub fn hash_entry(seq: u64, prev_hash: &str, body: &EntryBody) -> String {
    use sha2::{Digest, Sha256};
    #[derive(Serialize)]
    struct Notice<'a> {
        hash: &'a str,
        key: &'a str,
        version: u32,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        action: Action,
        actor: &'a str,
        channel: Option<Channel>,
        evidence_hash: &'a Option<String>,
        expires_at: Option<Micros>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        guardian: bool,
        notice: Option<Notice<'a>>,
        occurred_at: Micros,
        purpose: &'a str,
        receipt: &'a Option<String>,
        recorded_at: Micros,
        source: &'a str,
        subject_uid: &'a str,
        tenant: &'a str,
    }
    #[derive(Serialize)]
    struct Hashed<'a> {
        body: Body<'a>,
        prev: &'a str,
        seq: u64,
        v: u8,
    }
    struct Writer(Sha256);
    impl std::io::Write for Writer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let b = body;
    let hashed = Hashed {
        body: Body {
            action: b.action,
            actor: &b.actor,
            channel: b.channel,
            evidence_hash: &b.evidence_hash,
            expires_at: b.expires_at,
            guardian: b.guardian,
            notice: b.notice.as_ref().map(|n| Notice {
                hash: &n.hash,
                key: &n.key,
                version: n.version,
            }),
            occurred_at: b.occurred_at,
            purpose: &b.purpose,
            receipt: &b.receipt,
            recorded_at: b.recorded_at,
            source: &b.source,
            subject_uid: &b.subject_uid,
            tenant: &b.tenant,
        },
        prev: prev_hash,
        seq,
        v: ENCODING_VERSION,
    };
    let mut w = Writer(Sha256::new());
    serde_json::to_writer(&mut w, &hashed).expect("domain values always serialize");
    hex::encode(w.0.finalize())
}

/// [`hash_entry`] through the generic canonical encoding (a `Value`).
pub fn hash_entry_generic(seq: u64, prev_hash: &str, body: &EntryBody) -> String {
    #[derive(Serialize)]
    struct Hashed<'a> {
        v: u8,
        seq: u64,
        prev: &'a str,
        body: &'a EntryBody,
    }
    canonical::hash_of(&Hashed {
        v: ENCODING_VERSION,
        seq,
        prev: prev_hash,
        body,
    })
}

pub fn evidence_hash(evidence: &serde_json::Value) -> String {
    canonical::hash_of(evidence)
}

/// Partitions of a tenant's ledger, fixed when the tenant is created.
pub const PARTITIONS: u32 = 64;

/// The partition of a subject: a hash of its id keyed by the tenant, so the
/// subjects spread evenly and always land in the same partition. It is
/// known from the request alone, before anything is written, which lets a
/// writer lock its partitions first.
pub fn partition_of(tenant: &str, subject_id: &str, partitions: u32) -> u32 {
    use sha2::{Digest, Sha256};
    let d = Sha256::new()
        .chain_update(b"yinyom-partition\0")
        .chain_update(tenant.as_bytes())
        .chain_update(b"\0")
        .chain_update(subject_id.as_bytes())
        .finalize();
    let n = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    n % partitions.max(1)
}

/// The head of one chain (a partition): the number of entries in it (the
/// last entry's `pseq`) and the last entry's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub seq: u64,
    pub hash: String,
}

impl Chain {
    pub fn genesis() -> Self {
        Chain {
            seq: 0,
            hash: GENESIS.to_string(),
        }
    }

    /// Seal `body` as the next entry of a single-chain ledger (partition
    /// 0, where `seq = pseq`) and advance the head.
    pub fn append(&mut self, body: EntryBody) -> LedgerEntry {
        let seq = self.seq + 1;
        self.append_at(0, seq, body)
    }

    /// Seal `body` as the next entry of this chain, partition `partition`,
    /// at `seq` in the tenant's order, and advance the head.
    pub fn append_at(&mut self, partition: u32, seq: u64, body: EntryBody) -> LedgerEntry {
        let pseq = self.seq + 1;
        let hash = hash_entry(seq, &self.hash, &body);
        let entry = LedgerEntry {
            seq,
            partition,
            pseq,
            body,
            prev_hash: std::mem::replace(&mut self.hash, hash.clone()),
            hash,
        };
        self.seq = pseq;
        entry
    }
}

/// A partition's recorded head: its chain head and the `seq` of its last
/// entry (0 when not recorded), which names an entry cut off its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub partition: u32,
    pub chain: Chain,
    pub last_seq: u64,
}

/// Where and why verification failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Broken {
    pub seq: u64,
    pub problem: String,
}

/// What an entry says about itself, found without its neighbours: whether
/// its content still hashes to its recorded hash, and its evidence (if kept)
/// to the evidence hash it recorded. This is the costly part of
/// verification (SHA-256 over canonical JSON) and is independent per entry,
/// so it can run on many threads; [`Verifier::link`] then checks the links
/// between entries in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryCheck {
    pub seq: u64,
    pub partition: u32,
    pub pseq: u64,
    pub prev_hash: String,
    pub hash: String,
    pub content_ok: bool,
    pub evidence_ok: bool,
}

impl EntryCheck {
    pub fn of(entry: &LedgerEntry, evidence: Option<&serde_json::Value>) -> Self {
        let recomputed = hash_entry(entry.seq, &entry.prev_hash, &entry.body);
        EntryCheck {
            seq: entry.seq,
            partition: entry.partition,
            pseq: entry.pseq,
            prev_hash: entry.prev_hash.clone(),
            hash: entry.hash.clone(),
            content_ok: recomputed == entry.hash,
            evidence_ok: evidence.is_none_or(|ev| {
                entry.body.evidence_hash.as_deref() == Some(evidence_hash(ev).as_str())
            }),
        }
    }
}

/// Recomputes a ledger entry by entry, in `seq` order, without holding it
/// in memory: each entry is linked to the previous one of its partition.
#[derive(Debug, Default)]
pub struct Verifier {
    /// Per partition: its head so far and the `seq` of its last entry.
    heads: std::collections::BTreeMap<u32, (Chain, u64)>,
    last_seq: u64,
    checked: u64,
}

impl Verifier {
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// The `seq` of the last entry linked.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Partition heads so far.
    pub fn heads(&self) -> impl Iterator<Item = (u32, &Chain)> {
        self.heads.iter().map(|(p, (c, _))| (*p, c))
    }

    /// Check `entry` and link it to the chain so far: [`EntryCheck::of`]
    /// then [`Verifier::link`].
    pub fn push(
        &mut self,
        entry: &LedgerEntry,
        evidence: Option<&serde_json::Value>,
    ) -> Result<(), Broken> {
        self.link(&EntryCheck::of(entry, evidence))
    }

    /// Link the next entry, checked beforehand (possibly on another thread),
    /// to its partition's chain so far. Entries must come in `seq` order.
    pub fn link(&mut self, entry: &EntryCheck) -> Result<(), Broken> {
        let broken = |problem: String| Broken {
            seq: entry.seq,
            problem,
        };
        if entry.seq <= self.last_seq {
            return Err(broken(format!(
                "entry {} comes after entry {} in the ledger's order",
                entry.seq, self.last_seq
            )));
        }
        let (chain, last) = self
            .heads
            .entry(entry.partition)
            .or_insert_with(|| (Chain::genesis(), 0));
        let expected = chain.seq + 1;
        if entry.pseq != expected {
            // In a dense chain (one partition, `seq = pseq`) the missing
            // entry's seq is known; otherwise the entry after the gap is
            // the first that no longer links.
            let seq = if entry.seq == entry.pseq {
                *last + 1
            } else {
                entry.seq
            };
            return Err(Broken {
                seq,
                problem: format!(
                    "entry {expected} of partition {} is missing (found {} next)",
                    entry.partition, entry.pseq
                ),
            });
        }
        if entry.prev_hash != chain.hash {
            // This entry is self-consistent but remembers a different
            // predecessor: the predecessor was rewritten (and re-hashed).
            if entry.content_ok && chain.seq > 0 {
                return Err(Broken {
                    seq: *last,
                    problem: format!(
                        "entry {} was rewritten: its hash differs from the one entry {} recorded",
                        last, entry.seq
                    ),
                });
            }
            return Err(broken("prev_hash does not match the previous entry".into()));
        }
        if !entry.content_ok {
            return Err(broken("content does not match its hash".into()));
        }
        if !entry.evidence_ok {
            return Err(broken("evidence does not match its hash".into()));
        }
        *chain = Chain {
            seq: entry.pseq,
            hash: entry.hash.clone(),
        };
        *last = entry.seq;
        self.last_seq = entry.seq;
        self.checked += 1;
        Ok(())
    }

    /// Compare the end of a single-chain ledger (partition 0) with its
    /// recorded head.
    pub fn finish(self, head: &Chain) -> Result<u64, Broken> {
        self.finish_partitions(&[Head {
            partition: 0,
            chain: head.clone(),
            last_seq: 0,
        }])
    }

    /// Compare the end of each partition with its recorded head, which
    /// catches entries cut off the end. A partition not listed must have
    /// no entries.
    pub fn finish_partitions(self, heads: &[Head]) -> Result<u64, Broken> {
        let recorded: std::collections::BTreeMap<u32, &Head> =
            heads.iter().map(|h| (h.partition, h)).collect();
        let genesis = Chain::genesis();
        for (p, (chain, last)) in &self.heads {
            if !recorded.contains_key(p) && chain.seq > 0 {
                return Err(Broken {
                    seq: *last,
                    problem: format!("partition {p} has entries but no recorded head"),
                });
            }
        }
        for (p, recorded) in recorded {
            let head = &recorded.chain;
            let (chain, last) = self
                .heads
                .get(&p)
                .map(|(c, l)| (c, *l))
                .unwrap_or((&genesis, 0));
            let n = chain.seq;
            let at = |k: u64| if p == 0 && last == n { k } else { last + 1 };
            if head.seq > n {
                // One entry cut off: the head names it.
                let first = if head.seq == n + 1 && recorded.last_seq > 0 {
                    recorded.last_seq
                } else {
                    at(n + 1)
                };
                return Err(Broken {
                    seq: first,
                    problem: if p == 0 && last == n {
                        format!("entries {} to {} are missing", n + 1, head.seq)
                    } else {
                        format!(
                            "partition {p}: entries {} to {} are missing",
                            n + 1,
                            head.seq
                        )
                    },
                });
            }
            if head.seq < n {
                let seq = if p == 0 && last == n {
                    head.seq + 1
                } else {
                    last
                };
                return Err(Broken {
                    seq,
                    problem: format!("entry {seq} lies beyond its partition's recorded head"),
                });
            }
            if head.hash != chain.hash {
                return Err(Broken {
                    seq: last,
                    problem: format!(
                        "entry {last} was rewritten: its hash differs from the recorded head"
                    ),
                });
            }
        }
        Ok(self.checked)
    }
}
