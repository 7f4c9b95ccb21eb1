//! Property tests for the heart of Yinyom: consent state as a fold of the
//! ledger, the effective record a decision reads, the decision rules of
//! DESIGN.md ("Decision rules"), and tamper detection in the hash chain.
//!
//! Every property compares the crate with an independent model written here
//! (a replay, a match-based oracle), never with the crate's own helpers.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::json;

use yinyom_core::consent::{Action, ConsentRecord, ConsentState, NoticeVersion, SubjectConsents};
use yinyom_core::decision::{Decision, Facts, PurposeRule, Reason, decide};
use yinyom_core::ledger::{
    Broken, Chain, EntryBody, EntryCheck, Head, LedgerEntry, Verifier, evidence_hash, hash_entry,
    hash_entry_generic,
};
use yinyom_core::notice::NoticeRef;
use yinyom_core::purpose::{Channel, LawfulBasis};
use yinyom_core::subject::{AgeBand, SubjectFlags};
use yinyom_core::time::Micros;

const CASES: u32 = 512;

const PURPOSES: [&str; 3] = ["a", "b", "c"];
const CHANNELS: [Option<Channel>; 3] = [None, Some(Channel::Email), Some(Channel::Sms)];
const SOURCES: [&str; 3] = ["web", "crm", "import"];
const SUBJECTS: [&str; 3] = ["uid-1", "uid-2", "uid-3"];

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

fn purpose() -> impl Strategy<Value = &'static str> {
    prop::sample::select(PURPOSES.to_vec())
}

fn channel() -> impl Strategy<Value = Option<Channel>> {
    prop::sample::select(CHANNELS.to_vec())
}

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(Action::CONSENT.to_vec())
}

fn state() -> impl Strategy<Value = ConsentState> {
    prop::sample::select(vec![
        ConsentState::Unspecified,
        ConsentState::Granted,
        ConsentState::Denied,
        ConsentState::Withdrawn,
        ConsentState::Expired,
        ConsentState::Erased,
    ])
}

/// A small range, so that equal `occurred_at` (ties broken by `seq`) are common.
fn occurred_at() -> impl Strategy<Value = Micros> {
    0i64..8
}

fn notice_version() -> impl Strategy<Value = Option<NoticeVersion>> {
    prop::option::of((1u32..4).prop_map(|version| NoticeVersion {
        key: "n".into(),
        version,
    }))
}

/// Consent events in arrival order, as the ledger would produce them:
/// `seq` strictly increasing (with occasional gaps), `occurred_at` arbitrary.
fn events() -> impl Strategy<Value = Vec<ConsentRecord>> {
    let one = (
        purpose(),
        channel(),
        action(),
        occurred_at(),
        prop::option::of(0i64..16),
        notice_version(),
        prop::sample::select(SOURCES.to_vec()),
        1u64..3,
    );
    prop::collection::vec(one, 0..32).prop_map(|parts| {
        let mut seq = 0;
        parts
            .into_iter()
            .map(
                |(purpose, channel, action, occurred_at, expires_at, notice, source, gap)| {
                    seq += gap;
                    ConsentRecord {
                        purpose: purpose.into(),
                        channel,
                        state: action.state().unwrap(),
                        seq,
                        occurred_at,
                        expires_at,
                        notice,
                        source: source.into(),
                        guardian: false,
                    }
                },
            )
            .collect()
    })
}

/// The same events, plus the same events in a random order.
fn events_and_shuffled() -> impl Strategy<Value = (Vec<ConsentRecord>, Vec<ConsentRecord>)> {
    events().prop_flat_map(|ev| (Just(ev.clone()), Just(ev).prop_shuffle()))
}

fn fold(events: &[ConsentRecord]) -> SubjectConsents {
    let mut s = SubjectConsents::default();
    for e in events {
        s.apply(e.clone());
    }
    s
}

/// The independent replay: among `events` accepted by `keep`, the one with
/// the greatest `(occurred_at, seq)`.
fn latest(
    events: &[ConsentRecord],
    keep: impl Fn(&ConsentRecord) -> bool,
) -> Option<&ConsentRecord> {
    events
        .iter()
        .filter(|e| keep(e))
        .max_by(|x, y| (x.occurred_at, x.seq).cmp(&(y.occurred_at, y.seq)))
}

/// Who a restriction or objection names, relative to the purpose decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mark {
    Everything,
    ThisPurpose,
    OtherPurpose,
}

fn marks() -> impl Strategy<Value = BTreeSet<Mark>> {
    prop::collection::btree_set(
        prop::sample::select(vec![
            Mark::Everything,
            Mark::ThisPurpose,
            Mark::OtherPurpose,
        ]),
        0..=3,
    )
}

fn mark_set(marks: &BTreeSet<Mark>, purpose: &str) -> BTreeSet<String> {
    marks
        .iter()
        .map(|m| match m {
            Mark::Everything => "*".to_string(),
            Mark::ThisPurpose => purpose.to_string(),
            Mark::OtherPurpose => format!("{purpose}.other"),
        })
        .collect()
}

/// Owned inputs of one decision (`Facts` borrows).
#[derive(Debug, Clone)]
struct Case {
    purpose_key: &'static str,
    basis: LawfulBasis,
    sensitive: bool,
    flags: Option<SubjectFlags>,
    record: Option<ConsentRecord>,
    latest_material_version: Option<u32>,
    now: Micros,
}

impl Case {
    fn facts(&self) -> Facts<'_> {
        Facts {
            purpose_key: self.purpose_key,
            purpose: PurposeRule {
                basis: self.basis,
                sensitive: self.sensitive,
            },
            flags: self.flags.as_ref(),
            record: self.record.as_ref(),
            latest_material_version: self.latest_material_version,
            now: self.now,
        }
    }

    fn decide(&self) -> Decision {
        decide(&self.facts())
    }

    fn erased(&self) -> bool {
        self.flags.as_ref().is_some_and(|f| f.erased)
    }

    fn restricted(&self) -> bool {
        self.flags
            .as_ref()
            .is_some_and(|f| f.restricted.contains("*") || f.restricted.contains(self.purpose_key))
    }

    fn objected(&self) -> bool {
        self.flags
            .as_ref()
            .is_some_and(|f| f.objected.contains("*") || f.objected.contains(self.purpose_key))
    }

    fn needs_consent(&self) -> bool {
        self.basis == LawfulBasis::Consent || self.sensitive
    }

    /// Granted, not past its validity at `now`, and given to a notice no
    /// later material version has superseded.
    fn valid_grant(&self) -> bool {
        self.record.as_ref().is_some_and(|r| {
            let unexpired = r.expires_at.is_none_or(|exp| exp > self.now);
            let current_notice = match (&r.notice, self.latest_material_version) {
                (Some(n), Some(material)) => n.version >= material,
                _ => true,
            };
            r.state == ConsentState::Granted
                && unexpired
                && current_notice
                && (r.guardian || !self.minor())
        })
    }

    /// A minor (PDPA s.20): only a guardian's consent counts.
    fn minor(&self) -> bool {
        self.flags
            .as_ref()
            .and_then(|f| f.age_band)
            .is_some_and(|b| b != AgeBand::Adult)
    }
}

fn case() -> impl Strategy<Value = Case> {
    let flags = prop::option::of((
        any::<bool>(),
        marks(),
        marks(),
        prop::option::of(prop::sample::select(vec![
            AgeBand::Under10,
            AgeBand::From10To19,
            AgeBand::Adult,
        ])),
    ));
    let record = prop::option::of((
        (channel(), state(), occurred_at()),
        prop::option::of(0i64..24),
        notice_version(),
        1u64..100,
        any::<bool>(),
    ));
    (
        purpose(),
        prop::sample::select(LawfulBasis::ALL.to_vec()),
        any::<bool>(),
        flags,
        record,
        prop::option::of(1u32..5),
        0i64..24,
    )
        .prop_map(
            |(purpose_key, basis, sensitive, flags, record, latest_material_version, now)| Case {
                purpose_key,
                basis,
                sensitive,
                flags: flags.map(|(erased, restricted, objected, age_band)| SubjectFlags {
                    erased,
                    restricted: mark_set(&restricted, purpose_key),
                    objected: mark_set(&objected, purpose_key),
                    born_on: None,
                    age_band,
                }),
                record: record.map(
                    |((channel, state, occurred_at), expires_at, notice, seq, guardian)| {
                        ConsentRecord {
                            purpose: purpose_key.into(),
                            channel,
                            state,
                            seq,
                            occurred_at,
                            expires_at,
                            notice,
                            source: "web".into(),
                            guardian,
                        }
                    },
                ),
                latest_material_version,
                now,
            },
        )
}

/// The decision rules of DESIGN.md as a reference model: one `match` over
/// the facts, in the order the rules are checked.
fn oracle(c: &Case) -> Decision {
    let allow = |reason| Decision {
        allowed: true,
        reason,
    };
    let deny = |reason| Decision {
        allowed: false,
        reason,
    };
    let needs_consent = c.basis == LawfulBasis::Consent || c.sensitive;
    let li = c.basis == LawfulBasis::LegitimateInterest;
    match (c.erased(), c.restricted(), needs_consent, c.objected(), li) {
        (true, _, _, _, _) => deny(Reason::Erased),
        (false, true, _, _, _) => deny(Reason::Restricted),
        (false, false, true, true, _) => deny(Reason::Objected),
        (false, false, true, false, _) => match &c.record {
            None => deny(Reason::NoConsent),
            Some(r) => {
                let lapsed = matches!(r.expires_at, Some(exp) if exp <= c.now);
                let outdated = matches!(
                    (&r.notice, c.latest_material_version),
                    (Some(n), Some(m)) if n.version < m
                );
                match (r.state, lapsed, outdated) {
                    (ConsentState::Granted, true, _) | (ConsentState::Expired, _, _) => {
                        deny(Reason::Expired)
                    }
                    (ConsentState::Granted, false, true) => deny(Reason::NoticeOutdated),
                    (ConsentState::Granted, false, false) if c.minor() && !r.guardian => {
                        deny(Reason::GuardianRequired)
                    }
                    (ConsentState::Granted, false, false) => allow(Reason::ConsentGranted),
                    (ConsentState::Withdrawn, _, _) => deny(Reason::Withdrawn),
                    (ConsentState::Erased, _, _) => deny(Reason::Erased),
                    (ConsentState::Denied | ConsentState::Unspecified, _, _) => {
                        deny(Reason::NoConsent)
                    }
                }
            }
        },
        (false, false, false, true, true) => deny(Reason::Objected),
        (false, false, false, _, _) => allow(Reason::LawfulBasis),
    }
}

// ---------------------------------------------------------------------------
// Ledger strategies and tampering
// ---------------------------------------------------------------------------

/// One entry body plus the evidence its `evidence_hash` covers.
fn body() -> impl Strategy<Value = (EntryBody, Option<serde_json::Value>)> {
    (
        (
            prop::sample::select(SUBJECTS.to_vec()),
            purpose(),
            channel(),
            action(),
            prop::option::of(1u32..4),
            prop::sample::select(SOURCES.to_vec()),
        ),
        (
            prop::option::of((0u8..255, "[a-z]{0,8}")),
            0i64..1_000,
            0i64..1_000,
            prop::option::of(0i64..2_000),
        ),
    )
        .prop_map(
            |(
                (subject_uid, purpose, channel, action, notice, source),
                (evidence, occurred_at, recorded_at, expires_at),
            )| {
                let evidence = evidence
                    .map(|(ip, ua)| json!({ "ip": format!("203.0.113.{ip}"), "user_agent": ua }));
                let body = EntryBody {
                    tenant: "t1".into(),
                    subject_uid: subject_uid.into(),
                    purpose: purpose.into(),
                    channel,
                    action,
                    notice: notice.map(|version| NoticeRef {
                        key: "n".into(),
                        version,
                        hash: format!("notice-hash-{version}"),
                    }),
                    source: source.into(),
                    actor: "key-1".into(),
                    evidence_hash: evidence.as_ref().map(evidence_hash),
                    occurred_at,
                    recorded_at,
                    expires_at,
                    guardian: false,
                    receipt: (action == Action::Grant).then(|| format!("receipt-{recorded_at}")),
                };
                (body, evidence)
            },
        )
}

/// A sealed chain: its entries, the evidence of each, and its head.
#[derive(Debug, Clone)]
struct Ledger {
    entries: Vec<LedgerEntry>,
    evidence: Vec<Option<serde_json::Value>>,
    head: Chain,
}

fn seal(bodies: Vec<(EntryBody, Option<serde_json::Value>)>) -> Ledger {
    let mut head = Chain::genesis();
    let mut entries = Vec::new();
    let mut evidence = Vec::new();
    for (b, ev) in bodies {
        entries.push(head.append(b));
        evidence.push(ev);
    }
    Ledger {
        entries,
        evidence,
        head,
    }
}

fn ledger(len: std::ops::Range<usize>) -> impl Strategy<Value = Ledger> {
    prop::collection::vec(body(), len).prop_map(seal)
}

/// Verify entries in order against `head`, as `yinyom ledger verify` does.
fn verify(
    entries: &[LedgerEntry],
    evidence: &[Option<serde_json::Value>],
    head: &Chain,
) -> Result<u64, Broken> {
    let mut v = Verifier::default();
    for (e, ev) in entries.iter().zip(evidence) {
        v.push(e, ev.as_ref())?;
    }
    v.finish(head)
}

/// Verify as the service's parallel path does: each entry checked on its
/// own, chunk by chunk and the chunks in reverse order (as workers may
/// finish), then linked in `seq` order.
fn verify_in_chunks(
    entries: &[LedgerEntry],
    evidence: &[Option<serde_json::Value>],
    head: &Chain,
    chunk: usize,
) -> Result<u64, Broken> {
    let mut checks: Vec<Option<EntryCheck>> = vec![None; entries.len()];
    let starts: Vec<usize> = (0..entries.len()).step_by(chunk).collect();
    for &start in starts.iter().rev() {
        let end = (start + chunk).min(entries.len());
        for i in start..end {
            checks[i] = Some(EntryCheck::of(&entries[i], evidence[i].as_ref()));
        }
    }
    let mut v = Verifier::default();
    for c in checks {
        v.link(&c.expect("every entry was checked"))?;
    }
    v.finish(head)
}

/// One alteration of stored history.
#[derive(Debug, Clone)]
enum Tamper {
    Purpose(Index),
    Action(Index),
    OccurredAt(Index, i64),
    SubjectUid(Index),
    Source(Index),
    Hash(Index, Index),
    Delete(Index),
    SwapAdjacent(Index),
    Truncate(Index),
    Evidence(Index),
    /// A forger with write access: rewrites an entry and re-seals its hash.
    Rehash(Index),
}

fn tamper() -> impl Strategy<Value = Tamper> {
    let i = any::<Index>;
    prop_oneof![
        i().prop_map(Tamper::Purpose),
        i().prop_map(Tamper::Action),
        (i(), prop_oneof![-1_000i64..0, 1i64..1_000]).prop_map(|(i, d)| Tamper::OccurredAt(i, d)),
        i().prop_map(Tamper::SubjectUid),
        i().prop_map(Tamper::Source),
        (i(), i()).prop_map(|(i, at)| Tamper::Hash(i, at)),
        i().prop_map(Tamper::Delete),
        i().prop_map(Tamper::SwapAdjacent),
        i().prop_map(Tamper::Truncate),
        i().prop_map(Tamper::Evidence),
        i().prop_map(Tamper::Rehash),
    ]
}

/// The next value in `values` after `current` (so always a different one).
fn next_of<T: PartialEq + Copy>(values: &[T], current: T) -> T {
    let at = values.iter().position(|v| *v == current).unwrap_or(0);
    values[(at + 1) % values.len()]
}

/// Apply `t` to a copy of `l`; returns the altered entries and evidence, and
/// the seqs verification may report: exactly the altered entry's, except for
/// a re-sealed entry, whose own hash is consistent, so the break may show at
/// the link to the next entry (or at the head).
fn apply_tamper(
    l: &Ledger,
    t: &Tamper,
) -> (
    Vec<LedgerEntry>,
    Vec<Option<serde_json::Value>>,
    std::ops::RangeInclusive<u64>,
) {
    let mut entries = l.entries.clone();
    let mut evidence = l.evidence.clone();
    let n = entries.len();
    let expected = match t {
        Tamper::Purpose(i) => {
            let e = i.get_mut(&mut entries);
            e.body.purpose = next_of(&PURPOSES, e.body.purpose.as_str()).into();
            e.seq
        }
        Tamper::Action(i) => {
            let e = i.get_mut(&mut entries);
            e.body.action = next_of(&Action::ALL, e.body.action);
            e.seq
        }
        Tamper::OccurredAt(i, delta) => {
            let e = i.get_mut(&mut entries);
            e.body.occurred_at += delta;
            e.seq
        }
        Tamper::SubjectUid(i) => {
            let e = i.get_mut(&mut entries);
            e.body.subject_uid = next_of(&SUBJECTS, e.body.subject_uid.as_str()).into();
            e.seq
        }
        Tamper::Source(i) => {
            let e = i.get_mut(&mut entries);
            e.body.source = next_of(&SOURCES, e.body.source.as_str()).into();
            e.seq
        }
        Tamper::Hash(i, at) => {
            let e = i.get_mut(&mut entries);
            let mut chars: Vec<char> = e.hash.chars().collect();
            let c = at.get_mut(&mut chars);
            *c = if *c == '0' { '1' } else { '0' };
            e.hash = chars.into_iter().collect();
            e.seq
        }
        Tamper::Delete(i) => {
            let at = i.index(n);
            evidence.remove(at);
            entries.remove(at).seq
        }
        Tamper::SwapAdjacent(i) => {
            let at = i.index(n - 1);
            entries.swap(at, at + 1);
            evidence.swap(at, at + 1);
            l.entries[at].seq
        }
        Tamper::Truncate(i) => {
            let keep = i.index(n);
            entries.truncate(keep);
            evidence.truncate(keep);
            keep.checked_sub(1).map_or(0, |last| l.entries[last].seq) + 1
        }
        Tamper::Evidence(i) => {
            let at = i.index(n);
            // Evidence that cannot hash to what the entry recorded (a key
            // generated evidence never has), or evidence for an entry that
            // recorded none.
            evidence[at] = Some(json!({ "ip": "198.51.100.7", "tampered": true }));
            entries[at].seq
        }
        Tamper::Rehash(i) => {
            let e = i.get_mut(&mut entries);
            e.body.action = next_of(&Action::ALL, e.body.action);
            e.hash = hash_entry(e.seq, &e.prev_hash, &e.body);
            e.seq
        }
    };
    (entries, evidence, expected..=expected)
}

// ---------------------------------------------------------------------------
// 1. State is a replay of the ledger
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Folding events in arrival order keeps, per (purpose, channel), exactly
    /// the event with the greatest (occurred_at, seq), and nothing else.
    #[test]
    fn state_equals_a_replay_of_the_ledger(events in events()) {
        let state = fold(&events);
        let mut keys = 0;
        for p in PURPOSES {
            for ch in CHANNELS {
                let want = latest(&events, |e| &*e.purpose == p && e.channel == ch);
                prop_assert_eq!(state.get(p, ch), want, "purpose {} channel {:?}", p, ch);
                keys += usize::from(want.is_some());
            }
        }
        prop_assert_eq!(state.records.len(), keys, "one record per key that has events");
    }

    /// `apply` reports a change exactly when the event supersedes every
    /// earlier event for its key.
    #[test]
    fn apply_reports_a_change_iff_the_event_is_the_newest_so_far(events in events()) {
        let mut state = SubjectConsents::default();
        for (i, e) in events.iter().enumerate() {
            let earlier = latest(&events[..i], |x| x.purpose == e.purpose && x.channel == e.channel);
            let supersedes =
                earlier.is_none_or(|x| (e.occurred_at, e.seq) > (x.occurred_at, x.seq));
            prop_assert_eq!(state.apply(e.clone()), supersedes, "event #{}: {:?}", i, e);
        }
    }

    /// Arrival order does not matter (seq is unique): any permutation of the
    /// same events folds to the same state.
    #[test]
    fn state_is_independent_of_arrival_order((events, shuffled) in events_and_shuffled()) {
        let a = fold(&events);
        let b = fold(&shuffled);
        prop_assert_eq!(a.records.len(), b.records.len());
        for p in PURPOSES {
            for ch in CHANNELS {
                prop_assert_eq!(a.get(p, ch), b.get(p, ch), "purpose {} channel {:?}", p, ch);
            }
        }
        // Re-applying any already-applied event changes nothing.
        let mut again = a.clone();
        for e in &shuffled {
            prop_assert!(!again.apply(e.clone()), "re-applied {:?}", e);
        }
        prop_assert_eq!(again, a);
    }
}

// ---------------------------------------------------------------------------
// 2. The effective record
// ---------------------------------------------------------------------------

/// Replay for a question without a channel: the current record of every
/// (purpose, channel) key; those not older than the purpose-wide record are
/// in force; the latest refusal among them answers, else the latest grant.
fn purpose_wide_answer<'a>(events: &'a [ConsentRecord], p: &str) -> Option<&'a ConsentRecord> {
    let keys = [None, Some(Channel::Email), Some(Channel::Sms)];
    let current: Vec<&ConsentRecord> = keys
        .iter()
        .filter_map(|k| latest(events, |e| &*e.purpose == p && e.channel == *k))
        .collect();
    let wide = current
        .iter()
        .find(|r| r.channel.is_none())
        .map(|r| r.order());
    let in_force: Vec<&ConsentRecord> = current
        .into_iter()
        .filter(|r| wide.is_none_or(|w| r.order() >= w))
        .collect();
    let newest = |grants: bool| {
        in_force
            .iter()
            .filter(|r| (r.state == ConsentState::Granted) == grants)
            .max_by_key(|r| r.order())
            .copied()
    };
    newest(false).or_else(|| newest(true))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// With a channel: the latest of that channel's record and the
    /// purpose-wide one. Without: the most restrictive choice in force.
    #[test]
    fn effective_is_the_latest_of_the_channel_and_purpose_wide_records(events in events()) {
        let state = fold(&events);
        for p in PURPOSES.into_iter().chain(["d"]) {
            let whole = purpose_wide_answer(&events, p);
            prop_assert_eq!(state.effective(p, None), whole, "purpose {} without channel", p);
            // Phone never carries an event here: only purpose-wide records count.
            for ch in [Channel::Email, Channel::Sms, Channel::Phone] {
                let want = latest(&events, |e| {
                    &*e.purpose == p && (e.channel.is_none() || e.channel == Some(ch))
                });
                prop_assert_eq!(state.effective(p, Some(ch)), want, "purpose {} channel {:?}", p, ch);
            }
        }
    }

    /// End to end on the consent basis: a decision over the effective record
    /// allows exactly when the newest applicable event is a live grant.
    #[test]
    fn consent_decisions_follow_the_newest_applicable_event(
        events in events(),
        material in prop::option::of(1u32..5),
        now in 0i64..16,
    ) {
        let state = fold(&events);
        for p in PURPOSES {
            for ch in [None, Some(Channel::Email), Some(Channel::Sms)] {
                let newest = match ch {
                    None => purpose_wide_answer(&events, p),
                    Some(_) => latest(&events, |e| {
                        &*e.purpose == p && (e.channel.is_none() || e.channel == ch)
                    }),
                };
                let live = newest.is_some_and(|e| {
                    e.state == ConsentState::Granted
                        && e.expires_at.is_none_or(|exp| exp > now)
                        && match (&e.notice, material) {
                            (Some(n), Some(m)) => n.version >= m,
                            _ => true,
                        }
                });
                let d = decide(&Facts {
                    purpose_key: p,
                    purpose: PurposeRule { basis: LawfulBasis::Consent, sensitive: false },
                    flags: None,
                    record: state.effective(p, ch),
                    latest_material_version: material,
                    now,
                });
                prop_assert_eq!(d.allowed, live, "purpose {} channel {:?}: {:?}", p, ch, d);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 3. Decision rules
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn decide_matches_the_reference_model(c in case()) {
        prop_assert_eq!(c.decide(), oracle(&c), "{:?}", c);
    }

    #[test]
    fn an_erased_subject_is_denied_everything(mut c in case()) {
        let flags = c.flags.get_or_insert_with(SubjectFlags::default);
        flags.erased = true;
        prop_assert_eq!(c.decide(), Decision { allowed: false, reason: Reason::Erased }, "{:?}", c);
    }

    #[test]
    fn restricted_processing_is_denied_whatever_the_basis(mut c in case()) {
        let restrict = if c.now % 2 == 0 { "*".to_string() } else { c.purpose_key.to_string() };
        c.flags.get_or_insert_with(SubjectFlags::default).restricted.insert(restrict);
        let d = c.decide();
        prop_assert!(!d.allowed, "{:?} allowed {:?}", d, c);
        if !c.erased() {
            prop_assert_eq!(d.reason, Reason::Restricted, "{:?}", c);
        }
    }

    #[test]
    fn consent_or_sensitive_requires_a_valid_unobjected_grant(mut c in case()) {
        if !c.needs_consent() {
            c.sensitive = true;
        }
        let d = c.decide();
        let want = !c.erased() && !c.restricted() && !c.objected() && c.valid_grant();
        prop_assert_eq!(d.allowed, want, "{:?} for {:?}", d, c);
        if d.allowed {
            prop_assert_eq!(d.reason, Reason::ConsentGranted);
        }
    }

    #[test]
    fn sensitive_data_needs_consent_even_under_another_basis(mut c in case()) {
        c.sensitive = true;
        let with_sensitive = c.decide();
        c.basis = LawfulBasis::Consent;
        c.sensitive = false;
        prop_assert_eq!(with_sensitive, c.decide(), "{:?}", c);
    }

    #[test]
    fn other_bases_are_allowed_unless_restricted_or_erased(mut c in case()) {
        c.sensitive = false;
        if matches!(c.basis, LawfulBasis::Consent | LawfulBasis::LegitimateInterest) {
            c.basis = LawfulBasis::Contract;
        }
        let d = c.decide();
        if c.erased() || c.restricted() {
            prop_assert!(!d.allowed, "{:?}", c);
        } else {
            // Objection, the consent record and notices are irrelevant here.
            prop_assert_eq!(d, Decision { allowed: true, reason: Reason::LawfulBasis }, "{:?}", c);
        }
    }

    #[test]
    fn legitimate_interest_yields_to_objection_and_restriction(mut c in case()) {
        c.basis = LawfulBasis::LegitimateInterest;
        c.sensitive = false;
        let d = c.decide();
        prop_assert_eq!(d.allowed, !c.erased() && !c.restricted() && !c.objected(), "{:?}", c);
        if d.allowed {
            prop_assert_eq!(d.reason, Reason::LawfulBasis);
        } else if !c.erased() && !c.restricted() {
            prop_assert_eq!(d.reason, Reason::Objected);
        }
    }

    #[test]
    fn the_reason_agrees_with_the_verdict(c in case()) {
        let d = c.decide();
        let allowing = matches!(d.reason, Reason::ConsentGranted | Reason::LawfulBasis);
        prop_assert_eq!(d.allowed, allowing, "{:?} for {:?}", d, c);
        if d.reason == Reason::ConsentGranted {
            prop_assert!(c.needs_consent() && c.valid_grant(), "{:?}", c);
        }
        if d.reason == Reason::LawfulBasis {
            prop_assert!(!c.needs_consent(), "{:?}", c);
        }
    }
}

// ---------------------------------------------------------------------------
// 4. The hash-chained ledger
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// An untouched chain verifies to its length, with or without its
    /// evidence (evidence may be erased; the chain still verifies).
    #[test]
    fn an_untouched_chain_verifies(l in ledger(0..16), erase in prop::collection::vec(any::<bool>(), 16)) {
        let n = l.entries.len() as u64;
        prop_assert_eq!(l.head.seq, n);
        for (i, e) in l.entries.iter().enumerate() {
            prop_assert_eq!(e.seq, i as u64 + 1);
        }
        prop_assert_eq!(verify(&l.entries, &l.evidence, &l.head), Ok(n));

        let mut v = Verifier::default();
        for (i, e) in l.entries.iter().enumerate() {
            let ev = if erase[i] { None } else { l.evidence[i].as_ref() };
            prop_assert_eq!(v.push(e, ev), Ok(()), "entry {}", e.seq);
            prop_assert_eq!(v.checked(), i as u64 + 1);
        }
        prop_assert_eq!(v.finish(&l.head), Ok(n));
    }

    /// The fast entry hash is byte for byte the generic canonical one.
    #[test]
    fn the_entry_hash_is_the_canonical_one(l in ledger(1..8), guardian in any::<bool>()) {
        for e in &l.entries {
            let mut body = e.body.clone();
            prop_assert_eq!(hash_entry(e.seq, &e.prev_hash, &body), hash_entry_generic(e.seq, &e.prev_hash, &body));
            body.guardian = guardian;
            body.tenant = "t\u{e9}\"\n<>".into();
            prop_assert_eq!(hash_entry(e.seq, &e.prev_hash, &body), hash_entry_generic(e.seq, &e.prev_hash, &body));
        }
    }

    /// Checking entries apart (in chunks, out of order) and linking them in
    /// order finds exactly what checking them one by one finds, on intact
    /// and altered chains alike.
    #[test]
    fn checking_in_chunks_agrees_with_checking_in_order(
        l in ledger(2..24), t in tamper(), chunk in 1usize..6, alter in any::<bool>(),
    ) {
        let (entries, evidence) = if alter {
            let (e, ev, _) = apply_tamper(&l, &t);
            (e, ev)
        } else {
            (l.entries.clone(), l.evidence.clone())
        };
        prop_assert_eq!(
            verify_in_chunks(&entries, &evidence, &l.head, chunk),
            verify(&entries, &evidence, &l.head)
        );
    }

    /// Any single alteration of history fails verification, and the failure
    /// names the altered entry.
    #[test]
    fn any_single_alteration_is_detected_and_located(l in ledger(2..16), t in tamper()) {
        let (entries, evidence, expected) = apply_tamper(&l, &t);
        match verify(&entries, &evidence, &l.head) {
            Ok(n) => prop_assert!(false, "{:?} went undetected ({} entries verified)", t, n),
            Err(b) => prop_assert!(
                expected.contains(&b.seq),
                "{:?}: reported seq {} ({}), expected {:?}",
                t,
                b.seq,
                b.problem,
                expected
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// 5. Partitioned ledgers
// ---------------------------------------------------------------------------

/// A ledger of up to four partitions: each entry in a random partition, its
/// `seq` increasing with gaps (as PostgreSQL numbers them), and the
/// partitions' recorded heads.
fn partitioned(
    len: std::ops::Range<usize>,
) -> impl Strategy<Value = (Vec<LedgerEntry>, Vec<Option<serde_json::Value>>, Vec<Head>)> {
    prop::collection::vec((body(), 0u32..4, 1u64..5), len).prop_map(|items| {
        let mut heads: std::collections::BTreeMap<u32, (Chain, u64)> = Default::default();
        let (mut entries, mut evidence, mut seq) = (Vec::new(), Vec::new(), 0);
        for ((b, ev), part, gap) in items {
            seq += gap;
            let (chain, last) = heads.entry(part).or_insert((Chain::genesis(), 0));
            entries.push(chain.append_at(part, seq, b));
            *last = seq;
            evidence.push(ev);
        }
        let heads = heads
            .into_iter()
            .map(|(partition, (chain, last_seq))| Head {
                partition,
                chain,
                last_seq,
            })
            .collect();
        (entries, evidence, heads)
    })
}

fn verify_partitioned(
    entries: &[LedgerEntry],
    evidence: &[Option<serde_json::Value>],
    heads: &[Head],
) -> Result<u64, Broken> {
    let mut v = Verifier::default();
    for (e, ev) in entries.iter().zip(evidence) {
        v.push(e, ev.as_ref())?;
    }
    v.finish_partitions(heads)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// An untouched partitioned ledger verifies to its length; each
    /// partition's positions run 1, 2, 3, … and link within it.
    #[test]
    fn an_untouched_partitioned_ledger_verifies((entries, evidence, heads) in partitioned(0..24)) {
        prop_assert_eq!(verify_partitioned(&entries, &evidence, &heads), Ok(entries.len() as u64));
        for h in &heads {
            let mine: Vec<&LedgerEntry> = entries.iter().filter(|e| e.partition == h.partition).collect();
            prop_assert_eq!(mine.len() as u64, h.chain.seq);
            for (k, e) in mine.iter().enumerate() {
                prop_assert_eq!(e.pseq, k as u64 + 1);
            }
        }
    }

    /// Any alteration of one entry's content, deleting one, swapping two
    /// of one partition or cutting a partition's end is found; a content
    /// alteration at the altered entry, a deletion at the entry after it
    /// in its partition or, for the last, the one its head names.
    #[test]
    fn any_alteration_of_a_partitioned_ledger_is_found(
        (entries, evidence, heads) in partitioned(2..24),
        kind in 0u8..4,
        at in any::<prop::sample::Index>(),
    ) {
        let mut altered = entries.clone();
        let mut ev = evidence.clone();
        let i = at.index(entries.len());
        let target = entries[i].clone();
        let same: Vec<usize> = (0..entries.len()).filter(|&k| entries[k].partition == target.partition).collect();
        let next_in_part = same.iter().copied().find(|&k| k > i);
        let expected: Option<u64> = match kind {
            0 => {
                altered[i].body.purpose = next_of(&PURPOSES, altered[i].body.purpose.as_str()).into();
                Some(target.seq)
            }
            1 => {
                altered.remove(i);
                ev.remove(i);
                // Where seq and position agree (a dense chain) the gap
                // names the entry after the partition's previous one.
                let prev = same.iter().copied().rfind(|&k| k < i).map_or(0, |k| entries[k].seq);
                Some(match next_in_part {
                    None => target.seq,
                    Some(k) if entries[k].seq == entries[k].pseq => prev + 1,
                    Some(k) => entries[k].seq,
                })
            }
            2 => {
                // Two entries of one partition trade places (their seqs too).
                let Some(k) = next_in_part else { return Ok(()); };
                let (a, b) = (altered[i].clone(), altered[k].clone());
                altered[i] = LedgerEntry { seq: a.seq, ..b.clone() };
                altered[k] = LedgerEntry { seq: b.seq, ..a };
                ev.swap(i, k);
                None
            }
            _ => {
                // The partition's end is cut off from entry i on.
                let cut: std::collections::HashSet<usize> = same.iter().copied().filter(|&k| k >= i).collect();
                let keep: Vec<usize> = (0..entries.len()).filter(|k| !cut.contains(k)).collect();
                altered = keep.iter().map(|&k| entries[k].clone()).collect();
                ev = keep.iter().map(|&k| evidence[k].clone()).collect();
                None
            }
        };
        match verify_partitioned(&altered, &ev, &heads) {
            Ok(n) => prop_assert!(false, "kind {} at {} went undetected ({} verified)", kind, i, n),
            Err(b) => {
                if let Some(seq) = expected {
                    prop_assert_eq!(b.seq, seq, "kind {}: {}", kind, b.problem);
                }
            }
        }
    }
}
