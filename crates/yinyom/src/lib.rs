//! Yinyom: the consent ledger service.
//!
//! Start reading at [`app`] (what runs), [`api`] (the HTTP surface) and
//! [`writer`] (how a consent becomes durable). The domain rules live in the
//! `yinyom-core` crate.

pub mod api;
pub mod app;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod collector;
pub mod deadlines;
pub mod dispatch;
pub mod events;
pub mod follow;
pub mod hooks;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod nats;
pub mod notices;
pub mod optin;
pub mod profiles;
pub mod receipts;
pub mod record;
pub mod relay;
pub mod rights;
pub mod segments;
pub mod services;
pub mod store;
pub mod systems;
pub mod transfer;
pub mod vault;
pub mod verification;
pub mod view;
pub mod web;
pub mod writer;
