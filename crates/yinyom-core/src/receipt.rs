//! Signed consent receipts: what the subject keeps as proof of a choice.
//!
//! The claims follow ISO/IEC TS 27560:2023 (consent record information
//! structure) as the W3C DPV community group's guide implements it
//! (`https://w3id.org/dpv/guides/consent-27560`): a `dpv:ConsentReceipt`
//! carrying `dpv:ConsentRecord`s, each with its processing (purposes,
//! personal data, lawful basis, storage, controller, jurisdiction, how to
//! withdraw), its parties and its consent event (`dpv:ConsentGiven` or
//! `dpv:ConsentWithdrawn`: a withdrawal gets a receipt too). The JWT
//! registered claims (`iss`, `iat`, `jti`) sit beside them, so generic JOSE
//! tooling reads them. The ledger entries of the request carry the
//! receipt's id, so the hash chain vouches for it. Receipts are JWS compact
//! serialisations signed with Ed25519 (`alg: EdDSA`), verifiable with the
//! key published at `/.well-known/jwks.json`.
//!
//! Receipts issued before 27560 used the Kantara Consent Receipt v1.1 shape
//! (`consentReceiptID`, `services`, `piiPrincipalId`); [`ReceiptView`]
//! reads both, so old receipts keep verifying.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signer, SigningKey, Verifier as _, VerifyingKey};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::notice::NoticeRef;
use crate::purpose::{LawfulBasis, Sensitivity};
use crate::time::{self, Micros};

/// `dct:conformsTo` of a receipt and of each record in it.
pub const RECEIPT_PROFILE: &str = "https://w3id.org/dpv/schema/dpv-27560#receipt";
pub const RECORD_PROFILE: &str = "https://w3id.org/dpv/schema/dpv-27560#record";

/// The controller (the tenant) and its privacy contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    /// A stable id (`urn:yinyom:tenant:<id>`).
    pub id: String,
    pub name: String,
    /// The DPO (or privacy contact) by name, email, phone and address.
    pub contact: String,
    pub email: String,
    pub phone: Option<String>,
    pub address: Option<String>,
}

/// A personal-data category a purpose processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub name: String,
    pub sensitivity: Sensitivity,
}

/// One choice the receipt attests: a purpose (and channel) granted or
/// withdrawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The purpose key.
    pub purpose: String,
    /// The purpose's name in the receipt's language.
    pub name: String,
    pub channel: Option<String>,
    /// Granted (`dpv:ConsentGiven`) or withdrawn (`dpv:ConsentWithdrawn`).
    pub given: bool,
    pub basis: LawfulBasis,
    pub categories: Vec<Category>,
    pub retention_days: u32,
    /// How long a grant stays valid; none: until withdrawn.
    pub validity_days: Option<u32>,
    pub recipients: Vec<String>,
}

/// Everything a receipt states, in plain Rust; [`ReceiptInput::claims`]
/// turns it into the signed JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptInput {
    pub id: String,
    /// `iss`: `urn:yinyom:tenant:<id>`.
    pub issuer: String,
    pub issued_at: Micros,
    /// When the subject made the choice.
    pub occurred_at: Micros,
    /// The subject's id at the controller (an erased subject's receipts
    /// are signed again with a pseudonym).
    pub subject: String,
    /// `th` or `en`.
    pub language: String,
    /// `TH`, `EU`, …
    pub jurisdictions: Vec<String>,
    pub controller: Controller,
    pub policy_url: Option<String>,
    /// The notice the grants answer (absent on withdrawals only).
    pub notice: Option<NoticeRef>,
    pub notice_url: Option<String>,
    /// How the choice was collected: the request's source (`web`,
    /// `banner`, `call-center`, …).
    pub method: String,
    /// A parent or guardian gave it (PDPA s.20, GDPR Art. 8).
    pub by_guardian: bool,
    pub choices: Vec<Choice>,
    /// The ledger partition (hash chain) the receipt's entries land in:
    /// known before the write, since a subject's partition follows from
    /// its id ([`crate::ledger::partition_of`]). The entries' positions
    /// there come with the inclusion proof.
    pub partition: Option<u32>,
}

fn basis_iri(basis: LawfulBasis) -> &'static str {
    match basis {
        LawfulBasis::Consent => "dpv:Consent",
        LawfulBasis::Contract => "dpv:Contract",
        LawfulBasis::LegalObligation => "dpv:LegalObligation",
        LawfulBasis::VitalInterest => "dpv:VitalInterest",
        LawfulBasis::PublicTask => "dpv:PublicInterest",
        LawfulBasis::LegitimateInterest => "dpv:LegitimateInterest",
        LawfulBasis::ResearchStatistics => "dpv:LegalBasis",
    }
}

fn days(d: u32) -> String {
    format!("P{d}D")
}

/// The signed claims of a receipt ([`ReceiptInput::claims`]), borrowed
/// from the input and serialised straight to JSON: a receipt is about
/// 3 KB, and building it as a `serde_json::Value` first cost a tenth of a
/// consent write. Every object's fields are declared in byte order of
/// their names, so the JSON is what a `Value` (whose objects are sorted)
/// gives: the same signed bytes as before.
#[derive(Serialize)]
pub struct Claims<'a> {
    #[serde(rename = "@context")]
    context: Context,
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "dct:audience")]
    audience: &'static str,
    #[serde(rename = "dct:conformsTo")]
    conforms_to: &'static str,
    #[serde(rename = "dct:created")]
    created: String,
    #[serde(rename = "dct:identifier")]
    identifier: &'a str,
    #[serde(rename = "dct:publisher")]
    publisher: &'a str,
    #[serde(rename = "dpv:hasRecordOfActivity")]
    records: Vec<Record<'a>>,
    iat: i64,
    iss: &'a str,
    jti: &'a str,
    #[serde(rename = "yinyom:partition", skip_serializing_if = "Option::is_none")]
    partition: Option<u32>,
}

#[derive(Serialize)]
struct Context {
    dct: &'static str,
    dpv: &'static str,
    #[serde(rename = "eu-gdpr")]
    eu_gdpr: &'static str,
    loc: &'static str,
    rdf: &'static str,
    schema: &'static str,
    yinyom: &'static str,
}

const CONTEXT: Context = Context {
    dct: "http://purl.org/dc/terms/",
    dpv: "https://w3id.org/dpv#",
    eu_gdpr: "https://w3id.org/dpv/legal/eu/gdpr#",
    loc: "https://w3id.org/dpv/loc#",
    rdf: "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    schema: "https://schema.org/",
    yinyom: "urn:yinyom:ns:",
};

/// `@type`: one IRI or several.
#[derive(Serialize, Clone, Copy)]
#[serde(untagged)]
enum Kind {
    One(&'static str),
    Many(&'static [&'static str]),
}

#[derive(Serialize)]
struct Record<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "dct:conformsTo")]
    conforms_to: &'static str,
    #[serde(rename = "dct:identifier")]
    identifier: String,
    #[serde(rename = "dct:language")]
    language: &'a str,
    #[serde(rename = "dpv:hasConsentStatus")]
    status: [Status<'a>; 1],
    #[serde(rename = "dpv:hasDataSubject")]
    subject: Identified<'a>,
    #[serde(rename = "dpv:hasEntity")]
    entity: [Entity<'a>; 1],
    #[serde(rename = "dpv:hasNotice", skip_serializing_if = "Option::is_none")]
    notice: Option<Notice<'a>>,
    #[serde(rename = "dpv:hasProcess")]
    processes: Vec<Process<'a>>,
}

/// `{"@type": …, "dct:identifier": …}`.
#[derive(Serialize)]
struct Identified<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "dct:identifier")]
    identifier: &'a str,
}

#[derive(Serialize)]
struct Status<'a> {
    #[serde(rename = "@type")]
    kind: Kind,
    #[serde(rename = "dpv:hasDuration", skip_serializing_if = "Option::is_none")]
    duration: Option<Validity>,
    #[serde(rename = "dpv:hasIndicationMethod")]
    method: &'a str,
    #[serde(rename = "dpv:isIndicatedAtTime")]
    at: String,
    #[serde(rename = "dpv:isIndicatedBy")]
    by: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Validity {
    Temporal {
        #[serde(rename = "@type")]
        kind: &'static str,
        #[serde(rename = "rdf:value")]
        value: String,
    },
    UntilEvent {
        #[serde(rename = "@type")]
        kind: &'static str,
        #[serde(rename = "dct:description")]
        description: &'static str,
    },
}

#[derive(Serialize, Clone)]
struct Entity<'a> {
    #[serde(rename = "@id")]
    id: &'a str,
    #[serde(rename = "@type")]
    kind: Kind,
    #[serde(rename = "dpv:hasIdentifier")]
    identifier: &'a str,
    #[serde(rename = "dpv:hasName")]
    name: &'a str,
    #[serde(rename = "schema:contactPoint")]
    contact: Vec<Contact<'a>>,
    #[serde(rename = "schema:url", skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
}

/// A `schema:ContactPoint` (email, name, telephone) or a
/// `schema:PostalAddress` (street address).
#[derive(Serialize, Clone, Copy)]
struct Contact<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "schema:email", skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(rename = "schema:name", skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(
        rename = "schema:streetAddress",
        skip_serializing_if = "Option::is_none"
    )]
    street_address: Option<&'a str>,
    #[serde(rename = "schema:telephone", skip_serializing_if = "Option::is_none")]
    telephone: Option<&'a str>,
}

#[derive(Serialize, Clone, Copy)]
struct Notice<'a> {
    #[serde(rename = "@id", skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "dct:hasVersion")]
    version: u32,
    #[serde(rename = "dct:identifier")]
    identifier: &'a str,
    #[serde(rename = "dct:language")]
    language: &'a str,
    #[serde(rename = "schema:sha256")]
    sha256: &'a str,
}

#[derive(Serialize)]
struct Process<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "dpv:hasConsentControl")]
    control: Withdraw<'a>,
    #[serde(rename = "dpv:hasDataController")]
    controller: &'a str,
    #[serde(rename = "dpv:hasJurisdiction")]
    jurisdictions: Jurisdictions<'a>,
    #[serde(rename = "dpv:hasLegalBasis")]
    bases: Vec<&'static str>,
    #[serde(rename = "dpv:hasPersonalData")]
    data: Vec<PersonalData<'a>>,
    #[serde(rename = "dpv:hasPurpose")]
    purpose: Purpose<'a>,
    #[serde(rename = "dpv:hasRecipient", skip_serializing_if = "<[_]>::is_empty")]
    recipients: &'a [String],
    #[serde(rename = "dpv:hasStorageCondition")]
    storage: [Storage; 1],
    #[serde(rename = "yinyom:channel", skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
}

/// How to withdraw (27560 `withdrawal_method`): where it is done, the
/// policy's URL or the controller's email.
#[derive(Serialize, Clone, Copy)]
struct Withdraw<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "dpv:isExercisedAt")]
    at: WithdrawAt<'a>,
}

#[derive(Clone, Copy)]
enum WithdrawAt<'a> {
    Url(&'a str),
    Mail(&'a str),
}

impl Serialize for WithdrawAt<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WithdrawAt::Url(url) => s.serialize_str(url),
            WithdrawAt::Mail(email) => s.collect_str(&format_args!("mailto:{email}")),
        }
    }
}

/// `loc:TH`, `loc:EU`, … of the input's jurisdiction codes.
#[derive(Clone, Copy)]
struct Jurisdictions<'a>(&'a [String]);

impl Serialize for Jurisdictions<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|j| format_args!("loc:{j}").to_string()))
    }
}

#[derive(Serialize)]
struct PersonalData<'a> {
    #[serde(rename = "@type")]
    kind: Kind,
    #[serde(rename = "dct:title")]
    title: &'a str,
}

#[derive(Serialize)]
struct Purpose<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "dct:identifier")]
    identifier: &'a str,
    #[serde(rename = "dct:title")]
    title: &'a str,
}

#[derive(Serialize)]
struct Storage {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "dpv:hasDuration")]
    duration: String,
}

impl ReceiptInput {
    /// The JWS payload: a DPV-27560 consent receipt with one consent
    /// record per kind of event (the grants, the withdrawals).
    pub fn claims(&self) -> Claims<'_> {
        let controller = &self.controller;
        let mut contact = vec![Contact {
            kind: "schema:ContactPoint",
            email: Some(&controller.email),
            name: Some(&controller.contact),
            street_address: None,
            telephone: controller.phone.as_deref(),
        }];
        if let Some(address) = &controller.address {
            contact.push(Contact {
                kind: "schema:PostalAddress",
                email: None,
                name: None,
                street_address: Some(address),
                telephone: None,
            });
        }
        let entity = Entity {
            id: &controller.id,
            kind: Kind::Many(&["dpv:Organisation", "dpv:DataController"]),
            identifier: &controller.id,
            name: &controller.name,
            contact,
            url: self.policy_url.as_deref(),
        };
        let gdpr = self.jurisdictions.iter().any(|j| j == "EU");
        let withdraw = Withdraw {
            kind: "dpv:WithdrawConsent",
            at: match &self.policy_url {
                Some(url) => WithdrawAt::Url(url),
                None => WithdrawAt::Mail(&controller.email),
            },
        };
        let notice = self.notice.as_ref().map(|n| Notice {
            id: self.notice_url.as_deref(),
            kind: "dpv:ConsentNotice",
            version: n.version,
            identifier: &n.key,
            language: &self.language,
            sha256: &n.hash,
        });
        let by = if self.by_guardian {
            "dpv:ParentOfDataSubject"
        } else {
            "dpv:DataSubject"
        };
        let records = [true, false]
            .into_iter()
            .filter_map(|given| {
                let choices: Vec<&Choice> =
                    self.choices.iter().filter(|c| c.given == given).collect();
                if choices.is_empty() {
                    return None;
                }
                let processes = choices
                    .iter()
                    .map(|c| {
                        let sensitive = c
                            .categories
                            .iter()
                            .any(|k| k.sensitivity == Sensitivity::Sensitive);
                        let mut bases = vec![basis_iri(c.basis)];
                        if gdpr && c.basis == LawfulBasis::Consent {
                            bases.push(if sensitive {
                                "eu-gdpr:A9-2-a"
                            } else {
                                "eu-gdpr:A6-1-a"
                            });
                        }
                        Process {
                            kind: "dpv:Process",
                            control: withdraw,
                            controller: &controller.id,
                            jurisdictions: Jurisdictions(&self.jurisdictions),
                            bases,
                            data: c
                                .categories
                                .iter()
                                .map(|k| PersonalData {
                                    kind: if k.sensitivity == Sensitivity::Sensitive {
                                        Kind::Many(&[
                                            "dpv:PersonalData",
                                            "dpv:SensitivePersonalData",
                                        ])
                                    } else {
                                        Kind::One("dpv:PersonalData")
                                    },
                                    title: &k.name,
                                })
                                .collect(),
                            purpose: Purpose {
                                kind: "dpv:Purpose",
                                identifier: &c.purpose,
                                title: &c.name,
                            },
                            recipients: &c.recipients,
                            storage: [Storage {
                                kind: "dpv:StorageDuration",
                                duration: days(c.retention_days),
                            }],
                            channel: c.channel.as_deref(),
                        }
                    })
                    .collect();
                // One validity for the record: the shortest of its purposes
                // (each purpose's own is in its process).
                let duration =
                    given.then(
                        || match choices.iter().filter_map(|c| c.validity_days).min() {
                            Some(d) => Validity::Temporal {
                                kind: "dpv:TemporalDuration",
                                value: days(d),
                            },
                            None => Validity::UntilEvent {
                                kind: "dpv:UntilEventDuration",
                                description: "until withdrawn",
                            },
                        },
                    );
                Some(Record {
                    kind: "dpv:ConsentRecord",
                    conforms_to: RECORD_PROFILE,
                    identifier: format!(
                        "{}/{}",
                        self.id,
                        if given { "given" } else { "withdrawn" }
                    ),
                    language: &self.language,
                    status: [Status {
                        kind: if given {
                            Kind::Many(&["dpv:ConsentGiven", "dpv:ExplicitlyExpressedConsent"])
                        } else {
                            Kind::One("dpv:ConsentWithdrawn")
                        },
                        duration,
                        method: &self.method,
                        at: time::rfc3339(self.occurred_at),
                        by,
                    }],
                    subject: Identified {
                        kind: "dpv:DataSubject",
                        identifier: &self.subject,
                    },
                    entity: [entity.clone()],
                    notice,
                    processes,
                })
            })
            .collect();
        Claims {
            context: CONTEXT,
            kind: "dpv:ConsentReceipt",
            audience: "dpv:DataSubject",
            conforms_to: RECEIPT_PROFILE,
            created: time::rfc3339(self.issued_at),
            identifier: &self.id,
            publisher: &controller.id,
            records,
            iat: self.issued_at.div_euclid(1_000_000),
            iss: &self.issuer,
            jti: &self.id,
            partition: self.partition,
        }
    }
}

/// What a verifier needs from a receipt's claims, in either shape (ISO/IEC
/// TS 27560 or the earlier Kantara v1.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiptView {
    pub id: String,
    pub issuer: String,
    /// The subject's id as the receipt states it.
    pub subject: String,
    /// Purpose keys granted.
    pub granted: Vec<String>,
    /// Purpose keys withdrawn.
    pub withdrawn: Vec<String>,
    /// The ledger partition the receipt names (receipts issued before
    /// partitioned chains name none).
    pub partition: Option<u32>,
}

impl ReceiptView {
    pub fn of(claims: &Value) -> Result<ReceiptView, String> {
        let id = claims["dct:identifier"]
            .as_str()
            .or_else(|| claims["consentReceiptID"].as_str())
            .or_else(|| claims["jti"].as_str())
            .ok_or("receipt: no identifier (dct:identifier)")?
            .to_string();
        let issuer = claims["iss"].as_str().unwrap_or_default().to_string();
        let keys = |v: &Value, field: &str| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s[field].as_str().map(str::to_string))
                .collect()
        };
        if let Some(records) = claims["dpv:hasRecordOfActivity"].as_array() {
            let mut view = ReceiptView {
                id,
                issuer,
                partition: claims["yinyom:partition"]
                    .as_u64()
                    .and_then(|p| u32::try_from(p).ok()),
                ..ReceiptView::default()
            };
            for r in records {
                let status = &r["dpv:hasConsentStatus"][0]["@type"];
                let given = status == "dpv:ConsentGiven"
                    || status
                        .as_array()
                        .is_some_and(|t| t.iter().any(|t| t == "dpv:ConsentGiven"));
                let purposes = r["dpv:hasProcess"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["dpv:hasPurpose"]["dct:identifier"].as_str())
                    .map(str::to_string);
                if given {
                    view.granted.extend(purposes);
                } else {
                    view.withdrawn.extend(purposes);
                }
                if let Some(s) = r["dpv:hasDataSubject"]["dct:identifier"].as_str() {
                    view.subject = s.to_string();
                }
            }
            return Ok(view);
        }
        Ok(ReceiptView {
            id,
            issuer,
            subject: claims["piiPrincipalId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            granted: keys(&claims["services"], "service"),
            withdrawn: keys(&claims["withdrawn"], "service"),
            partition: None,
        })
    }
}

/// The same claims naming another subject (an erased subject's pseudonym),
/// in either shape.
pub fn with_subject(claims: &mut Value, subject: &str) {
    if let Some(records) = claims
        .get_mut("dpv:hasRecordOfActivity")
        .and_then(Value::as_array_mut)
    {
        for r in records {
            r["dpv:hasDataSubject"]["dct:identifier"] = json!(subject);
        }
    } else if let Some(c) = claims.as_object_mut() {
        c.insert("piiPrincipalId".into(), json!(subject));
    }
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

    fn input() -> ReceiptInput {
        let choice = |purpose: &str, given: bool, validity: Option<u32>| Choice {
            purpose: purpose.into(),
            name: format!("{purpose} name"),
            channel: Some("email".into()),
            given,
            basis: LawfulBasis::Consent,
            categories: vec![
                Category {
                    name: "contact".into(),
                    sensitivity: Sensitivity::General,
                },
                Category {
                    name: "health".into(),
                    sensitivity: Sensitivity::Sensitive,
                },
            ],
            retention_days: 365,
            validity_days: validity,
            recipients: vec!["Mailer Co.".into()],
        };
        ReceiptInput {
            id: "0190-r".into(),
            issuer: "urn:yinyom:tenant:acme".into(),
            issued_at: 1_700_000_001_000_000,
            occurred_at: 1_700_000_000_000_000,
            subject: "cust-42".into(),
            language: "th".into(),
            jurisdictions: vec!["TH".into(), "EU".into()],
            controller: Controller {
                id: "urn:yinyom:tenant:acme".into(),
                name: "Acme".into(),
                contact: "DPO".into(),
                email: "dpo@acme.example".into(),
                phone: None,
                address: Some("1 Silom Rd, Bangkok".into()),
            },
            policy_url: Some("https://acme.example/privacy".into()),
            notice: Some(NoticeRef {
                key: "marketing".into(),
                version: 3,
                hash: "ab".into(),
            }),
            notice_url: None,
            method: "web".into(),
            by_guardian: false,
            choices: vec![
                choice("marketing", true, Some(730)),
                choice("analytics", true, None),
                choice("profiling", false, None),
            ],
            partition: Some(7),
        }
    }

    #[test]
    /// The claims are serialised from typed structs; their bytes are what a
    /// `serde_json::Value` (sorted objects) gives, as receipts always were
    /// signed: each case's JSON reads back to a `Value` that writes the
    /// same bytes.
    fn signed_claims_are_written_as_sorted_json() {
        let mut cases = vec![input()];
        let mut c = input();
        c.controller.phone = Some("+66 2 000 0000".into());
        c.controller.address = None;
        c.policy_url = None;
        c.notice_url = Some("https://acme.example/n/3".into());
        c.by_guardian = true;
        c.jurisdictions = vec!["TH".into()];
        c.partition = None;
        c.subject = "o'brien \"q\" ไทย".into();
        cases.push(c);
        let mut c = input();
        c.notice = None;
        c.choices.retain(|x| !x.given);
        c.choices[0].channel = None;
        c.choices[0].recipients.clear();
        c.choices[0].categories.clear();
        cases.push(c);
        let mut c = input();
        c.choices.retain(|x| x.given);
        for x in &mut c.choices {
            x.validity_days = None;
            x.basis = LawfulBasis::Contract;
        }
        cases.push(c);
        for c in &cases {
            let written = serde_json::to_string(&c.claims()).unwrap();
            let value: Value = serde_json::from_str(&written).unwrap();
            assert_eq!(written, value.to_string());
        }
    }

    #[test]
    fn a_27560_receipt_states_each_choice_and_reads_back() {
        let claims = serde_json::to_value(input().claims()).unwrap();
        assert_eq!(claims["@type"], "dpv:ConsentReceipt");
        assert_eq!(claims["dct:conformsTo"], RECEIPT_PROFILE);
        assert_eq!(claims["dct:identifier"], claims["jti"]);
        let records = claims["dpv:hasRecordOfActivity"].as_array().unwrap();
        assert_eq!(records.len(), 2, "one record of grants, one of withdrawals");
        let given = &records[0];
        assert_eq!(given["dct:conformsTo"], RECORD_PROFILE);
        assert_eq!(given["dpv:hasDataSubject"]["dct:identifier"], "cust-42");
        assert_eq!(given["dpv:hasNotice"]["dct:hasVersion"], 3);
        let status = &given["dpv:hasConsentStatus"][0];
        assert_eq!(status["@type"][0], "dpv:ConsentGiven");
        assert_eq!(status["dpv:isIndicatedAtTime"], "2023-11-14T22:13:20Z");
        assert_eq!(status["dpv:hasDuration"]["rdf:value"], "P730D");
        let process = &given["dpv:hasProcess"][0];
        assert_eq!(
            process["dpv:hasLegalBasis"],
            json!(["dpv:Consent", "eu-gdpr:A9-2-a"])
        );
        assert_eq!(
            process["dpv:hasPersonalData"][1]["@type"][1],
            "dpv:SensitivePersonalData"
        );
        assert_eq!(
            process["dpv:hasStorageCondition"][0]["dpv:hasDuration"],
            "P365D"
        );
        assert_eq!(
            process["dpv:hasConsentControl"]["@type"],
            "dpv:WithdrawConsent"
        );
        assert_eq!(process["yinyom:channel"], "email");
        assert_eq!(
            records[1]["dpv:hasConsentStatus"][0]["@type"],
            "dpv:ConsentWithdrawn"
        );
        let view = ReceiptView::of(&claims).unwrap();
        assert_eq!(view.id, "0190-r");
        assert_eq!(view.subject, "cust-42");
        assert_eq!(view.granted, ["marketing", "analytics"]);
        assert_eq!(view.withdrawn, ["profiling"]);
        assert_eq!(claims["yinyom:partition"], 7);
        assert_eq!(view.partition, Some(7));

        let mut renamed = claims.clone();
        with_subject(&mut renamed, "erased:xyz");
        assert_eq!(ReceiptView::of(&renamed).unwrap().subject, "erased:xyz");
        assert!(!renamed.to_string().contains("cust-42"));
    }

    #[test]
    fn kantara_receipts_issued_before_still_read() {
        let old = json!({
            "version": "KI-CR-v1.1.0", "consentReceiptID": "old-1", "iss": "urn:x",
            "piiPrincipalId": "cust-1", "services": [{"service": "marketing"}],
            "withdrawn": [{"service": "sms"}], "jti": "old-1",
        });
        let view = ReceiptView::of(&old).unwrap();
        assert_eq!(
            (view.id.as_str(), view.subject.as_str()),
            ("old-1", "cust-1")
        );
        assert_eq!(
            (view.granted, view.withdrawn),
            (vec!["marketing".to_string()], vec!["sms".to_string()])
        );
        let mut renamed = old.clone();
        with_subject(&mut renamed, "erased:1");
        assert_eq!(renamed["piiPrincipalId"], "erased:1");
    }
}
