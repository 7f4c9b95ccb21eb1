//! Signed consent receipts: what the subject keeps as proof of a grant.
//!
//! Fields follow the Kantara Consent Receipt Specification v1.1 (the
//! vocabulary ISO/IEC TS 27560 builds on), plus the lawful basis and the
//! notice version and hash. The ledger entries of the grants carry the
//! receipt's id (`consentReceiptID`), so the hash chain vouches for it. Receipts
//! are JWS compact serialisations signed with Ed25519 (`alg: EdDSA`), so any
//! JOSE library verifies them with the key published at
//! `/.well-known/jwks.json`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signer, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::notice::NoticeRef;

pub const KANTARA_VERSION: &str = "KI-CR-v1.1.0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Controller {
    pub pii_controller: String,
    pub contact: String,
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePurpose {
    /// The purpose's name, in the receipt's language.
    pub purpose: String,
    pub purpose_category: Vec<String>,
    /// `EXPLICIT`: every grant is an affirmative act recorded with evidence.
    pub consent_type: String,
    pub pii_category: Vec<String>,
    pub primary_purpose: bool,
    pub termination: String,
    pub third_party_disclosure: bool,
    pub lawful_basis: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// The purpose key.
    pub service: String,
    pub purposes: Vec<ServicePurpose>,
}

/// A purpose (and channel) withdrawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Withdrawn {
    /// The purpose key.
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// The receipt's claims (the JWS payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub version: String,
    pub jurisdiction: String,
    /// Seconds since the epoch, as Kantara specifies.
    pub consent_timestamp: i64,
    pub collection_method: String,
    #[serde(rename = "consentReceiptID")]
    pub consent_receipt_id: String,
    pub language: String,
    pub pii_principal_id: String,
    pub pii_controllers: Vec<Controller>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_url: Option<String>,
    pub services: Vec<Service>,
    pub sensitive: bool,
    pub spi_cat: Vec<String>,
    /// The notice the grants answer; absent on a receipt of withdrawals
    /// only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<NoticeRef>,
    /// Purposes withdrawn by the same request: a withdrawal gets a receipt
    /// too, so the subject can prove they said no.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withdrawn: Vec<Withdrawn>,
    /// JWT registered claims, so generic JOSE tooling reads them.
    pub iss: String,
    pub iat: i64,
    pub jti: String,
}

/// An Ed25519 receipt-signing key.
pub struct ReceiptKey {
    signing: SigningKey,
    kid: String,
}

impl ReceiptKey {
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&secret);
        let kid = thumbprint(&signing.verifying_key());
        ReceiptKey { signing, kid }
    }

    pub fn secret(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// RFC 7638 JWK thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (RFC 8037).
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": B64.encode(self.signing.verifying_key().as_bytes()),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }

    /// JWS compact serialisation of `claims`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        let header = serde_json::json!({ "alg": "EdDSA", "typ": "JWT", "kid": self.kid });
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(serde_json::to_vec(claims).expect("claims serialize"))
        );
        let sig = self.signing.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(sig.to_bytes()))
    }

    /// Verify a JWS made by this key and return its payload.
    pub fn verify(&self, jws: &str) -> Option<serde_json::Value> {
        let (input, sig) = jws.rsplit_once('.')?;
        let sig = ed25519_dalek::Signature::from_slice(&B64.decode(sig).ok()?).ok()?;
        self.signing
            .verifying_key()
            .verify(input.as_bytes(), &sig)
            .ok()?;
        let payload = input.split_once('.')?.1;
        serde_json::from_slice(&B64.decode(payload).ok()?).ok()
    }
}

/// Verify a JWS against a published key set (`/.well-known/jwks.json`):
/// the key named by the header's `kid`, Ed25519 only. Returns the payload.
/// This is all a verifier outside our server needs.
pub fn verify_with_jwks(jws: &str, jwks: &serde_json::Value) -> Result<serde_json::Value, String> {
    let jws = jws.trim();
    let mut parts = jws.split('.');
    let (Some(header), Some(payload), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWS compact serialisation (three dot-separated parts)".into());
    };
    let header: serde_json::Value = B64
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or("the JWS header is not base64url JSON")?;
    if header["alg"] != "EdDSA" {
        return Err(format!("unsupported alg {}", header["alg"]));
    }
    let kid = header["kid"]
        .as_str()
        .ok_or("the JWS header names no kid")?;
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        .ok_or_else(|| format!("no key {kid} in the key set"))?;
    if jwk["kty"] != "OKP" || jwk["crv"] != "Ed25519" {
        return Err(format!("key {kid} is not an Ed25519 key"));
    }
    let x = jwk["x"]
        .as_str()
        .and_then(|x| B64.decode(x).ok())
        .and_then(|x| <[u8; 32]>::try_from(x.as_slice()).ok())
        .ok_or_else(|| format!("key {kid} has no valid x"))?;
    let key =
        VerifyingKey::from_bytes(&x).map_err(|_| format!("key {kid} is not a valid point"))?;
    if thumbprint(&key) != kid {
        return Err(format!("key {kid} does not match its thumbprint"));
    }
    let sig = B64
        .decode(sig)
        .ok()
        .and_then(|s| ed25519_dalek::Signature::from_slice(&s).ok())
        .ok_or("the signature is not base64url Ed25519")?;
    let (input, _) = jws.rsplit_once('.').ok_or("not a JWS")?;
    key.verify(input.as_bytes(), &sig)
        .map_err(|_| format!("the signature does not verify with key {kid}"))?;
    B64.decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or_else(|| "the JWS payload is not base64url JSON".into())
}

fn thumbprint(key: &VerifyingKey) -> String {
    // Members in lexicographic order, no whitespace (RFC 7638 §3).
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        B64.encode(key.as_bytes())
    );
    B64.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_does_not() {
        let key = ReceiptKey::from_secret([7; 32]);
        let jws = key.sign(&serde_json::json!({"a": 1}));
        assert_eq!(key.verify(&jws).unwrap()["a"], 1);
        let mut parts: Vec<&str> = jws.split('.').collect();
        let forged = B64.encode(br#"{"a":2}"#);
        parts[1] = &forged;
        assert!(key.verify(&parts.join(".")).is_none());
        let jwks = serde_json::json!({"keys": [key.jwk()]});
        assert_eq!(verify_with_jwks(&jws, &jwks).unwrap()["a"], 1);
        assert!(verify_with_jwks(&parts.join("."), &jwks).is_err());
        let other = ReceiptKey::from_secret([8; 32]);
        let other_set = serde_json::json!({"keys": [other.jwk()]});
        assert!(verify_with_jwks(&jws, &other_set).is_err());
    }
}
