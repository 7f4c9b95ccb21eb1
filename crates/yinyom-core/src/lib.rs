//! The Yinyom domain: purposes, notices, subjects, the consent ledger, consent
//! state, decisions and receipts.
//!
//! Everything here is plain Rust with no IO, so the rules that matter most
//! (who may be processed for what, and whether history was altered) can be
//! tested exhaustively without a database or a network.

pub mod banner;
pub mod breach;
pub mod consent;
pub mod contact;
pub mod decision;
pub mod hooks;
pub mod ledger;
pub mod merkle;
pub mod notice;
pub mod proof;
pub mod purpose;
pub mod receipt;
pub mod rights;
pub mod segment;
pub mod subject;
pub mod systems;
pub mod tcf;
pub mod time;

mod canonical;
mod validate;

pub use validate::Invalid;
