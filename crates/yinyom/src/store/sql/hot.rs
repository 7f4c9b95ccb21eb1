//! The hot queries: the statements a request path runs, named so that the
//! store runs exactly these and `tests/queries.rs` can check that each one
//! seeks an index on both databases (SQLite's `EXPLAIN QUERY PLAN`,
//! PostgreSQL's `EXPLAIN` with sequential scans disabled). The audit, with
//! the plans, is in `docs/queries.md`.
//!
//! A query whose cost grows with the data does not belong here unless an
//! index bounds it; add a new hot query to [`HOT`] with sample arguments.

pub use super::requests::{
    ACQUISITIONS_ALL, ACQUISITIONS_PENDING, REQUEST, REQUESTS, REQUESTS_IN_STATUS,
    REQUESTS_OF_SUBJECT, REQUESTS_OPEN, SUBJECT_REQUESTS,
};

/// A sample argument, of the parameter's type (PostgreSQL plans need them).
#[derive(Debug, Clone, Copy)]
pub enum Arg {
    Int(i64),
    Text(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct HotQuery {
    pub name: &'static str,
    /// Which request path runs it.
    pub path: &'static str,
    pub sql: &'static str,
    /// The statement on SQLite, where it differs from `sql`.
    pub sqlite: Option<&'static str>,
    pub args: &'static [Arg],
    /// The indexes its plan may use (one of them) on both databases, when
    /// ours (rather than a primary key) serve it; empty otherwise.
    pub indexes: &'static [&'static str],
}

impl HotQuery {
    /// The statement the store runs on `dialect`.
    pub fn sql_on(&self, dialect: super::Dialect) -> &'static str {
        match (dialect, self.sqlite) {
            (super::Dialect::Sqlite, Some(sql)) => sql,
            _ => self.sql,
        }
    }
}

/// The evidence a ledger row `l` keeps (its JSON), if any: stored once per
/// distinct value and partition in `evidence`, keyed by the hash the entry
/// chains.
macro_rules! evidence_of_row {
    () => {
        "(SELECT e.body FROM evidence e
         WHERE e.tenant = l.tenant AND e.part = l.part AND e.hash = l.evidence_hash
           AND l.evidence_kept = 1)"
    };
}
pub(crate) use evidence_of_row;

/// The evidence column of an event row: a `subject.erased` entry keeps its
/// connected systems' outcomes there (no personal data); other events need
/// none, so the evidence table is read for those rows only.
macro_rules! erased_evidence {
    () => {
        concat!(
            "CASE WHEN l.action = 'erase_subject' THEN ",
            $crate::store::sql::hot::evidence_of_row!(),
            " END AS evidence"
        )
    };
}
pub(crate) use erased_evidence;

/// Tables that grow with subjects, consents, events or requests: a hot
/// query must never scan them. (Tenants, purposes, notices, webhooks,
/// sources, connectors, keys and staff stay small.) On SQLite `ledger`,
/// `consent_states` and `outbox` are views of the `…_rows` tables
/// (migration 0160), which its plans name.
pub const GROWING: &[&str] = &[
    "subjects",
    "subject_lookups",
    "ledger",
    "ledger_rows",
    "evidence",
    "choice_days",
    "consent_states",
    "consent_state_rows",
    "receipts",
    "idempotency_keys",
    "outbox",
    "outbox_rows",
    "webhook_deliveries",
    "events",
    "messages",
    "message_log",
    "audit_log",
    "rights_requests",
    "breaches",
    "acquisitions",
    "opt_ins",
];

/// A subject by the controller's id (subject read/put, decisions' fallback,
/// requests, relay, follow).
pub const SUBJECT: &str = "SELECT * FROM subjects WHERE tenant = $1 AND id = $2";
/// A subject's id by its uid.
pub const SUBJECT_ID: &str = "SELECT id FROM subjects WHERE tenant = $1 AND uid = $2";
/// Subjects by a contact point's keyed hash.
pub const SUBJECTS_BY_LOOKUP: &str = "SELECT s.* FROM subject_lookups l
     JOIN subjects s ON s.uid = l.uid
     WHERE l.tenant = $1 AND l.kind = $2 AND l.hash = $3 AND s.tenant = $1
     ORDER BY s.created_at, s.id";
/// A subject's ledger entries (subject read with history).
pub const HISTORY: &str =
    "SELECT * FROM ledger WHERE tenant = $1 AND subject_uid = $2 ORDER BY seq";
/// A subject's stored evidence.
pub const EVIDENCE: &str = "SELECT l.seq, e.body AS evidence FROM ledger l
     JOIN evidence e ON e.tenant = l.tenant AND e.part = l.part AND e.hash = l.evidence_hash
     WHERE l.tenant = $1 AND l.subject_uid = $2 AND l.evidence_kept = 1";
/// The console's chart: choices per day from a day on (`choice_days`,
/// counted as the batches are written; summed over its partitions).
pub const DAILY_CHOICES: &str = "SELECT day, purpose, channel, action, CAST(SUM(n) AS BIGINT) AS n
     FROM choice_days WHERE tenant = $1 AND day >= $2
     GROUP BY day, purpose, channel, action
     ORDER BY day, purpose, channel, action";
/// A subject's receipts.
pub const RECEIPTS: &str = "SELECT id, jws, created_at FROM receipts
     WHERE tenant = $1 AND subject_uid = $2 ORDER BY created_at, id";
/// Ledger entries after a cursor (follow, export), below the horizon `$3`
/// (see `SqlStore::horizon`).
pub const LEDGER_AFTER: &str =
    "SELECT l.*, (SELECT s.id FROM subjects s WHERE s.uid = l.subject_uid
         AND s.tenant = l.tenant) AS subject_id
     FROM ledger l 
     WHERE l.tenant = $1 AND l.seq > $2 AND l.seq < $3 ORDER BY l.seq LIMIT $4";
/// Outbox events after a dispatcher's cursor (webhooks, NATS, stream),
/// below the horizon `$3` (see `SqlStore::horizon`).
/// The page of the outbox is taken first and the ledger read within its
/// seqs: bounded on both tables, whatever plan the database picks (joined
/// on the outbox's bounds alone, a generic PostgreSQL plan read the
/// tenant's whole ledger for every event).
pub const EVENTS_AFTER: &str = concat!(
    "WITH o AS (
         SELECT seq, before_state, after_state FROM outbox
         WHERE tenant = $1 AND seq > $2 AND seq < $3 ORDER BY seq LIMIT $4)
     SELECT o.before_state, o.after_state, l.*, ",
    erased_evidence!(),
    " FROM o JOIN ledger l ON l.tenant = $1 AND l.seq = o.seq
     WHERE l.seq > $2 AND l.seq <= (SELECT MAX(seq) FROM o)
     ORDER BY o.seq"
);
/// The newest outbox event committed: where a subscription "from now"
/// starts. (On PostgreSQL an event still being committed with a lower
/// `seq` is concurrent with the start, and not sent.)
pub const LAST_EVENT: &str = "SELECT MAX(seq) FROM outbox WHERE tenant = $1";
/// Subjects with a queued delivery to an endpoint (they wait their turn).
pub const PENDING_SUBJECTS: &str = "SELECT DISTINCT subject_uid FROM webhook_deliveries
     WHERE tenant = $1 AND webhook = $2 AND status = 'pending'";
/// Webhook retries due now, the oldest per subject first.
pub const DUE_DELIVERIES: &str = "SELECT d.tenant, d.webhook, d.seq, d.subject_uid, d.attempts,
         d.created_at, w.url, w.secret
     FROM webhook_deliveries d
     JOIN webhooks w ON w.tenant = d.tenant AND w.id = d.webhook
     WHERE d.status = 'pending' AND d.next_at <= $1 AND w.deleted_at IS NULL
       AND NOT EXISTS (
         SELECT 1 FROM webhook_deliveries e
         WHERE e.tenant = d.tenant AND e.webhook = d.webhook
           AND e.subject_uid = d.subject_uid AND e.seq < d.seq AND e.status = 'pending')
     ORDER BY d.next_at, d.seq LIMIT $2";
/// Subjects whose flags changed since a time (follow's resync).
pub const SUBJECTS_CHANGED_SINCE: &str =
    "SELECT tenant, id, flags FROM subjects WHERE updated_at >= $1";
/// Messages due for a delivery attempt (relay).
pub const DUE_MESSAGES: &str =
    "SELECT m.*, (SELECT s.id FROM subjects s WHERE s.uid = m.subject_uid
         AND s.tenant = m.tenant) AS subject_id
     FROM messages m 
     WHERE m.status IN ('queued', 'retrying') AND m.next_at <= $1
     ORDER BY m.next_at, m.id LIMIT $2";
/// A subject's messages (access bundle, erasure).
pub const SUBJECT_MESSAGES: &str =
    "SELECT m.*, (SELECT s.id FROM subjects s WHERE s.uid = m.subject_uid
         AND s.tenant = m.tenant) AS subject_id
     FROM messages m 
     WHERE m.tenant = $1 AND m.subject_uid = $2 ORDER BY m.created_at, m.id";
/// A subject's tracked events, newest first.
pub const SUBJECT_EVENTS: &str = "SELECT * FROM events WHERE tenant = $1 AND subject_uid = $2
     ORDER BY occurred_at DESC, id DESC LIMIT $3";
/// Events past their retention (collector's expiry).
pub const EXPIRE_EVENTS: &str = "DELETE FROM events WHERE expires_at < $1";
/// Grants past their validity (the minute job).
pub const DUE_EXPIRIES: &str = "SELECT c.tenant, s.id, c.purpose, c.channel, c.expires_at
     FROM consent_states c
     JOIN subjects s ON s.tenant = c.tenant AND s.uid = c.subject_uid
     WHERE c.state = 'granted' AND c.expires_at IS NOT NULL AND c.expires_at <= $1
     ORDER BY c.expires_at LIMIT $2";
/// [`DUE_EXPIRIES`] on SQLite, where `consent_states` is a view that joins
/// the rows with their tenant's number (migration 0160). Through the view
/// the planner may start from the tenant (one row) and read all its
/// states by key, then sort them, instead of taking the due ones from
/// `consent_states_expiry`; which it picks changed with the statistics at
/// hand (1 run in 5 of tests/queries.rs). `CROSS JOIN` makes SQLite take
/// the rows first, so only the expiry index can serve them.
/// (Since migration 0170 the rows name purpose, channel and state by their
/// number in `terms`, where 2 is 'granted', as in the index's condition.)
pub const DUE_EXPIRIES_SQLITE: &str = "SELECT t.id AS tenant, s.id,
         COALESCE(p.term, c.purpose) AS purpose, COALESCE(ch.term, c.channel) AS channel,
         c.expires_at
     FROM consent_state_rows c CROSS JOIN tenant_numbers t ON t.no = c.tenant_no
     JOIN subjects s ON s.no = c.subject_no
     LEFT JOIN terms p ON p.no = c.purpose LEFT JOIN terms ch ON ch.no = c.channel
     WHERE c.state = 2 AND c.expires_at IS NOT NULL AND c.expires_at <= $1
     ORDER BY c.expires_at LIMIT $2";

/// Subjects joined with their current states, the columns as
/// [`push_state_row`] reads them, followed by the rest of the statement.
/// On SQLite the rows are joined by the subject's number (migration 0170)
/// rather than through the `consent_states` view, which would look the
/// subject up a second time by its uid; purpose, channel and state are
/// numbers in `terms`. On PostgreSQL each subject's rows
/// are a subquery of their own (`OFFSET 0` keeps it from being merged into
/// the join): a generic plan, made without statistics, otherwise read the
/// tenant's states by tenant alone and filtered them by subject.
macro_rules! states {
    (postgres, $rest:literal) => {
        concat!(
            "SELECT s.id, s.uid, c.purpose, c.channel, c.state, c.seq,
                c.occurred_at, c.expires_at, c.notice_key, c.notice_version, c.source, c.guardian
             FROM subjects s CROSS JOIN LATERAL (SELECT * FROM consent_states c
                 WHERE c.tenant = $1 AND c.subject_uid = s.uid OFFSET 0) c
             WHERE s.tenant = $1 AND ",
            $rest
        )
    };
    (sqlite, $rest:literal) => {
        concat!(
            "SELECT s.id, s.uid, COALESCE(p.term, c.purpose), COALESCE(ch.term, c.channel),
                COALESCE(st.term, c.state), c.seq,
                c.occurred_at, c.expires_at, c.notice_key, c.notice_version, c.source, c.guardian
             FROM subjects s JOIN consent_state_rows c
                 ON c.tenant_no = (SELECT no FROM tenant_numbers WHERE id = $1)
                 AND c.subject_no = s.no
             LEFT JOIN terms p ON p.no = c.purpose LEFT JOIN terms ch ON ch.no = c.channel
             LEFT JOIN terms st ON st.no = c.state
             WHERE s.tenant = $1 AND ",
            $rest
        )
    };
}
/// A page of subjects after an id: `$2` is the id, `$3` the page's size
/// in rows.
pub const STATES_AFTER: &str = states!(postgres, "s.id > $2 ORDER BY s.id LIMIT $3");
/// [`STATES_AFTER`] on SQLite.
pub const STATES_AFTER_SQLITE: &str = states!(sqlite, "s.id > $2 ORDER BY s.id LIMIT $3");
/// One subject's current states: `$2` is its id.
pub const STATES_OF: &str = states!(postgres, "s.id = $2");
/// [`STATES_OF`] on SQLite.
pub const STATES_OF_SQLITE: &str = states!(sqlite, "s.id = $2");

use Arg::{Int, Text};

const T: Arg = Text("t1");
const UID: Arg = Text("0190b3c1-7c2e-7000-8000-000000000001");

/// Every hot query, with sample arguments.
pub const HOT: &[HotQuery] = &[
    HotQuery {
        name: "subject",
        path: "subject read/put, consent write, requests, relay, follow",
        sql: SUBJECT,
        sqlite: None,
        args: &[T, Text("s1")],
        indexes: &[],
    },
    HotQuery {
        name: "subject_id",
        path: "events, messages",
        sql: SUBJECT_ID,
        sqlite: None,
        args: &[T, UID],
        indexes: &[],
    },
    HotQuery {
        name: "subjects_by_lookup",
        path: "subject find by contact",
        sql: SUBJECTS_BY_LOOKUP,
        sqlite: None,
        args: &[T, Text("email"), Text("abc")],
        indexes: &[],
    },
    HotQuery {
        name: "history",
        path: "subject read (history)",
        sql: HISTORY,
        sqlite: None,
        args: &[T, UID],
        indexes: &["ledger_by_subject"],
    },
    HotQuery {
        name: "evidence",
        path: "subject read (evidence)",
        sql: EVIDENCE,
        sqlite: None,
        args: &[T, UID],
        indexes: &["ledger_by_subject"],
    },
    HotQuery {
        name: "daily_choices",
        path: "GET /admin (the console's chart)",
        sql: DAILY_CHOICES,
        sqlite: None,
        args: &[T, Int(19_700)],
        indexes: &[],
    },
    HotQuery {
        name: "receipts",
        path: "subject read (receipts)",
        sql: RECEIPTS,
        sqlite: None,
        args: &[T, UID],
        indexes: &["receipts_by_subject"],
    },
    HotQuery {
        name: "ledger_after",
        path: "follow",
        sql: LEDGER_AFTER,
        sqlite: None,
        args: &[T, Int(10), Int(1 << 40), Int(500)],
        indexes: &[],
    },
    HotQuery {
        name: "events_after",
        path: "webhooks dispatch, NATS, stream",
        sql: EVENTS_AFTER,
        sqlite: None,
        args: &[T, Int(10), Int(1 << 40), Int(500)],
        indexes: &[],
    },
    HotQuery {
        name: "last_event",
        path: "stream",
        sql: LAST_EVENT,
        sqlite: None,
        args: &[T],
        indexes: &[],
    },
    HotQuery {
        name: "pending_subjects",
        path: "webhooks dispatch",
        sql: PENDING_SUBJECTS,
        sqlite: None,
        args: &[T, Text("wh_1")],
        indexes: &["deliveries_pending"],
    },
    HotQuery {
        name: "due_deliveries",
        path: "webhooks dispatch",
        sql: DUE_DELIVERIES,
        sqlite: None,
        args: &[Int(1_700_000_000_000_000), Int(500)],
        indexes: &["deliveries_due"],
    },
    HotQuery {
        name: "subjects_changed_since",
        path: "follow (resync)",
        sql: SUBJECTS_CHANGED_SINCE,
        sqlite: None,
        args: &[Int(1_700_000_000_000_000)],
        indexes: &["subjects_by_updated"],
    },
    HotQuery {
        name: "due_messages",
        path: "relay",
        sql: DUE_MESSAGES,
        sqlite: None,
        args: &[Int(1_700_000_000_000_000), Int(100)],
        indexes: &["messages_due"],
    },
    HotQuery {
        name: "subject_messages",
        path: "access bundle, erasure",
        sql: SUBJECT_MESSAGES,
        sqlite: None,
        args: &[T, UID],
        indexes: &["messages_by_subject"],
    },
    HotQuery {
        name: "subject_events",
        path: "collector (subject's events)",
        sql: SUBJECT_EVENTS,
        sqlite: None,
        args: &[T, UID, Int(100)],
        indexes: &["events_by_subject"],
    },
    HotQuery {
        name: "expire_events",
        path: "collector (expiry)",
        sql: EXPIRE_EVENTS,
        sqlite: None,
        args: &[Int(1_700_000_000_000_000)],
        indexes: &["events_by_expiry"],
    },
    HotQuery {
        name: "states_after",
        path: "decision view (load without a snapshot)",
        sql: STATES_AFTER,
        sqlite: Some(STATES_AFTER_SQLITE),
        args: &[T, Text("s1"), Int(1000)],
        indexes: &[],
    },
    HotQuery {
        name: "states_of",
        path: "decision view (a miss in bounded mode)",
        sql: STATES_OF,
        sqlite: Some(STATES_OF_SQLITE),
        args: &[T, Text("s1")],
        indexes: &[],
    },
    HotQuery {
        name: "due_expiries",
        path: "lifecycle (consent expiry)",
        sql: DUE_EXPIRIES,
        sqlite: Some(DUE_EXPIRIES_SQLITE),
        args: &[Int(1_700_000_000_000_000), Int(5000)],
        indexes: &["consent_states_expiry"],
    },
    HotQuery {
        name: "request",
        path: "GET /v1/requests/{id}",
        sql: REQUEST,
        sqlite: None,
        args: &[T, Text("req_1")],
        indexes: &[],
    },
    HotQuery {
        name: "subject_requests",
        path: "POST /v1/requests (duplicate check), access bundle, retention",
        sql: SUBJECT_REQUESTS,
        sqlite: None,
        args: &[T, UID],
        indexes: &["rights_requests_by_subject"],
    },
    HotQuery {
        name: "requests",
        path: "GET /v1/requests",
        sql: REQUESTS,
        sqlite: None,
        args: &[T, Int(0), Text(""), Int(101), Text(""), Text(""), Int(-1)],
        indexes: &["rights_requests_by_due"],
    },
    HotQuery {
        name: "requests_in_status",
        path: "GET /v1/requests?status=",
        sql: REQUESTS_IN_STATUS,
        sqlite: None,
        args: &[
            T,
            Int(0),
            Text(""),
            Int(101),
            Text("received"),
            Text("received"),
            Int(-1),
        ],
        // For an open status PostgreSQL may prefer the open requests'
        // partial index: bounded by the open requests, not by all of them.
        indexes: &["rights_requests_by_status", "rights_requests_open"],
    },
    HotQuery {
        name: "requests_open",
        path: "GET /v1/requests?overdue=true",
        sql: REQUESTS_OPEN,
        sqlite: None,
        args: &[
            T,
            Int(0),
            Text(""),
            Int(101),
            Text(""),
            Text(""),
            Int(1_700_000_000_000_000),
        ],
        indexes: &["rights_requests_open"],
    },
    HotQuery {
        name: "requests_of_subject",
        path: "GET /v1/requests?subject=",
        sql: REQUESTS_OF_SUBJECT,
        sqlite: None,
        args: &[T, Int(0), Text(""), Int(101), UID, Text(""), Int(-1)],
        indexes: &["rights_requests_by_subject"],
    },
    HotQuery {
        name: "acquisitions",
        path: "GET /v1/acquisitions",
        sql: ACQUISITIONS_ALL,
        sqlite: None,
        args: &[T, Int(0), Text(""), Int(101), Int(-1)],
        indexes: &["acquisitions_by_due"],
    },
    HotQuery {
        name: "acquisitions_pending",
        path: "GET /v1/acquisitions?pending=true|overdue=true, lifecycle",
        sql: ACQUISITIONS_PENDING,
        sqlite: None,
        args: &[T, Int(0), Text(""), Int(101), Int(1_700_000_000_000_000)],
        indexes: &["acquisitions_pending"],
    },
];
