//! Request hooks: endpoints of the tenant's own systems that a rights
//! request calls at three stages, and whose answers can hold it.
//!
//! ```text
//! received ─▶ pre_approval hooks ─▶ (verify, start, complete allowed)
//! complete ─▶ pre_execution hooks ─▶ carried out (here and in systems)
//! completed ─▶ post_execution hooks (told the outcome; never undo it)
//! ```
//!
//! A pre-stage hook answers `approve` or `deny`, in its HTTP response or
//! later through the reply endpoint; a denial rejects the request with the
//! hook's reason. The rules here: which answers hold, release or reject a
//! request, and how a hook's HTTP answer reads.

use serde::{Deserialize, Serialize};

/// When a hook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// When the request is received: it may not be verified, started or
    /// completed until every such hook approved.
    PreApproval,
    /// When staff complete it: nothing is carried out (here or in a
    /// connected system) until every such hook approved.
    PreExecution,
    /// When it completed: told the outcome; its answer changes nothing.
    PostExecution,
}

impl Stage {
    pub const ALL: [Stage; 3] = [
        Stage::PreApproval,
        Stage::PreExecution,
        Stage::PostExecution,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::PreApproval => "pre_approval",
            Stage::PreExecution => "pre_execution",
            Stage::PostExecution => "post_execution",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the hook's answer decides (holds the request).
    pub fn decides(self) -> bool {
        self != Stage::PostExecution
    }
}

/// Where one call of a hook for one request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// Not answered yet: to be called, or called and awaiting a reply.
    Pending,
    Approved,
    Denied,
    /// The last attempt failed (no answer, an error status); retried.
    Failed,
    /// A post-execution hook took the outcome.
    Delivered,
    /// The hook was removed before it answered: it holds nothing.
    Skipped,
}

impl CallStatus {
    pub const ALL: [CallStatus; 6] = [
        CallStatus::Pending,
        CallStatus::Approved,
        CallStatus::Denied,
        CallStatus::Failed,
        CallStatus::Delivered,
        CallStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Pending => "pending",
            CallStatus::Approved => "approved",
            CallStatus::Denied => "denied",
            CallStatus::Failed => "failed",
            CallStatus::Delivered => "delivered",
            CallStatus::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<CallStatus> {
        CallStatus::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Answered for good: nothing more is sent, no reply is taken.
    pub fn settled(self) -> bool {
        !matches!(self, CallStatus::Pending | CallStatus::Failed)
    }
}

/// What a stage's calls mean for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// No call holds it (none, or every one approved or skipped).
    Open,
    /// This many calls are not answered yet.
    Held(usize),
    /// The call at this index denied it.
    Denied(usize),
}

/// The gate of a stage, from its calls' statuses (a denial wins).
pub fn gate(calls: &[CallStatus]) -> Gate {
    if let Some(i) = calls.iter().position(|c| *c == CallStatus::Denied) {
        return Gate::Denied(i);
    }
    match calls
        .iter()
        .filter(|c| !matches!(c, CallStatus::Approved | CallStatus::Skipped))
        .count()
    {
        0 => Gate::Open,
        n => Gate::Held(n),
    }
}

/// A hook's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    pub fn status(self) -> CallStatus {
        match self {
            Decision::Approve => CallStatus::Approved,
            Decision::Deny => CallStatus::Denied,
        }
    }
}

/// Longest reason kept.
pub const REASON_MAX: usize = 2000;

/// How a hook answered one HTTP call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It decided in its response (pre stages), or took the outcome
    /// (post-execution: `Decided(Approve, _)`).
    Decided(Decision, Option<String>),
    /// It took the call and will reply through the reply endpoint.
    Later,
    /// No usable answer: retried.
    Failed(String),
}

/// Read a hook's HTTP answer. A 2xx whose JSON body names a `decision`
/// (`approve` or `deny`, with an optional `reason`) decides; any other 2xx
/// (202 Accepted, an empty body) means the reply comes later; a
/// post-execution hook only has to answer 2xx. Anything else failed.
pub fn read_answer(stage: Stage, status: u16, body: &[u8]) -> Answer {
    if !(200..300).contains(&status) {
        return Answer::Failed(format!("the hook answered HTTP {status}"));
    }
    if !stage.decides() {
        return Answer::Decided(Decision::Approve, None);
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Answer::Later;
    };
    let reason = v
        .get("reason")
        .and_then(|r| r.as_str())
        .map(|r| truncate(r.trim()))
        .filter(|r| !r.is_empty());
    match v.get("decision") {
        None | Some(serde_json::Value::Null) => Answer::Later,
        Some(serde_json::Value::String(d)) if d == "approve" => {
            Answer::Decided(Decision::Approve, reason)
        }
        Some(serde_json::Value::String(d)) if d == "deny" => {
            Answer::Decided(Decision::Deny, reason)
        }
        Some(serde_json::Value::String(d)) if d == "pending" => Answer::Later,
        Some(other) => Answer::Failed(format!(
            "the hook's decision {other} is not approve, deny or pending"
        )),
    }
}

/// A reason cut to [`REASON_MAX`] bytes on a character boundary, without
/// control characters other than newlines.
pub fn truncate(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() + c.len_utf8() > REASON_MAX {
            break;
        }
        if !c.is_control() || c == '\n' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use CallStatus::*;

    #[test]
    fn a_denial_wins_and_only_approvals_and_skips_open_the_gate() {
        assert_eq!(gate(&[]), Gate::Open);
        assert_eq!(gate(&[Approved, Skipped]), Gate::Open);
        assert_eq!(gate(&[Approved, Pending, Failed]), Gate::Held(2));
        assert_eq!(gate(&[Pending, Denied, Approved]), Gate::Denied(1));
        assert!(!Failed.settled() && !Pending.settled() && Denied.settled());
    }

    #[test]
    fn answers_read_as_documented() {
        let pre = Stage::PreApproval;
        assert_eq!(
            read_answer(pre, 200, br#"{"decision":"approve"}"#),
            Answer::Decided(Decision::Approve, None)
        );
        assert_eq!(
            read_answer(pre, 200, br#"{"decision":"deny","reason":" legal hold "}"#),
            Answer::Decided(Decision::Deny, Some("legal hold".into()))
        );
        assert_eq!(read_answer(pre, 202, b""), Answer::Later);
        assert_eq!(
            read_answer(pre, 200, br#"{"decision":"pending"}"#),
            Answer::Later
        );
        assert!(matches!(
            read_answer(pre, 200, br#"{"decision":"maybe"}"#),
            Answer::Failed(_)
        ));
        assert!(matches!(read_answer(pre, 500, b""), Answer::Failed(_)));
        assert_eq!(
            read_answer(Stage::PostExecution, 204, b""),
            Answer::Decided(Decision::Approve, None)
        );
        assert!(matches!(
            read_answer(Stage::PostExecution, 503, b""),
            Answer::Failed(_)
        ));
        let long = "ก".repeat(REASON_MAX);
        assert!(truncate(&long).len() <= REASON_MAX);
        assert_eq!(truncate("a\u{7}b\nc"), "ab\nc");
    }
}
