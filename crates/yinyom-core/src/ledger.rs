//! The consent ledger: append-only, hash-chained per tenant.
//!
//! `hash = SHA-256(canonical JSON of {v, seq, prev, body})`, where `prev` is
//! the previous entry's hash (64 zeros for the first). Changing, inserting,
//! deleting or reordering any entry breaks the chain at that entry, and
//! `Verifier` names the first one.
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

/// The head of one tenant's chain: the last entry's sequence number and hash.
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

    /// Seal `body` as the next entry and advance the head.
    pub fn append(&mut self, body: EntryBody) -> LedgerEntry {
        let seq = self.seq + 1;
        let hash = hash_entry(seq, &self.hash, &body);
        let entry = LedgerEntry {
            seq,
            body,
            prev_hash: std::mem::replace(&mut self.hash, hash.clone()),
            hash,
        };
        self.seq = seq;
        entry
    }
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
            prev_hash: entry.prev_hash.clone(),
            hash: entry.hash.clone(),
            content_ok: recomputed == entry.hash,
            evidence_ok: evidence.is_none_or(|ev| {
                entry.body.evidence_hash.as_deref() == Some(evidence_hash(ev).as_str())
            }),
        }
    }
}

/// Recomputes a chain entry by entry, in `seq` order, without holding it in
/// memory.
#[derive(Debug)]
pub struct Verifier {
    chain: Chain,
    checked: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            chain: Chain::genesis(),
            checked: 0,
        }
    }
}

impl Verifier {
    pub fn checked(&self) -> u64 {
        self.checked
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
    /// to the chain so far. Entries must come in `seq` order.
    pub fn link(&mut self, entry: &EntryCheck) -> Result<(), Broken> {
        let expected = self.chain.seq + 1;
        let broken = |problem: String| Broken {
            seq: entry.seq,
            problem,
        };
        if entry.seq != expected {
            return Err(Broken {
                seq: expected,
                problem: format!("entry {expected} is missing (found {} next)", entry.seq),
            });
        }
        if entry.prev_hash != self.chain.hash {
            // This entry is self-consistent but remembers a different
            // predecessor: the predecessor was rewritten (and re-hashed).
            if entry.content_ok && self.chain.seq > 0 {
                return Err(Broken {
                    seq: self.chain.seq,
                    problem: format!(
                        "entry {} was rewritten: its hash differs from the one entry {} recorded",
                        self.chain.seq, entry.seq
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
        self.chain = Chain {
            seq: entry.seq,
            hash: entry.hash.clone(),
        };
        self.checked += 1;
        Ok(())
    }

    /// Compare the end of the chain with the recorded head, which catches
    /// entries cut off the end.
    pub fn finish(self, head: &Chain) -> Result<u64, Broken> {
        let last = self.chain.seq;
        if head.seq > last {
            return Err(Broken {
                seq: last + 1,
                problem: format!("entries {} to {} are missing", last + 1, head.seq),
            });
        }
        if head.seq < last {
            return Err(Broken {
                seq: head.seq + 1,
                problem: format!(
                    "entries {} to {last} lie beyond the recorded head",
                    head.seq + 1
                ),
            });
        }
        if head.hash != self.chain.hash {
            return Err(Broken {
                seq: last,
                problem: format!(
                    "entry {last} was rewritten: its hash differs from the recorded head"
                ),
            });
        }
        Ok(self.checked)
    }
}
