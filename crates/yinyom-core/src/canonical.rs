//! Canonical encoding for hashing: JSON with object keys sorted (serde_json's
//! default map is ordered), no insignificant whitespace. The same value always
//! gives the same bytes, on every node and after every storage round trip.

use serde::Serialize;
use sha2::{Digest, Sha256};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 over the canonical JSON of `value`.
pub fn hash_of<T: Serialize>(value: &T) -> String {
    // Going through `Value` sorts every object's keys, including nested ones
    // supplied by clients (evidence).
    let v = serde_json::to_value(value).expect("domain values always serialize");
    sha256_hex(&serde_json::to_vec(&v).expect("a Value always serializes"))
}
