//! The consent-gated messaging relay.
//!
//! A message is checked against the recipient's consent when it is asked
//! for (suppressed at once, with the reason, if not allowed) and again
//! right before each attempt to send it: a withdrawal that arrives while a
//! message waits in the queue (the SMTP server is down, an audience send is
//! under way) still stops it. Messages are sent by the leader node through
//! the tenant's connector for the channel:
//!
//! * **email** over SMTP (lettre), with RFC 8058 one-click unsubscribe
//!   (`List-Unsubscribe` + `List-Unsubscribe-Post`): the link withdraws the
//!   consent the message relied on, source `unsubscribe_link`;
//! * **sms** through an HTTP provider (`POST {url}` with JSON `to`, `text`);
//! * **line** shaped after the LINE Messaging API push call.
//!
//! A failed attempt is retried with exponential backoff until
//! `give_up_after`, then the message is dead. Recipient and content are
//! sealed with the subject's data key and dropped once a message is final.

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::body::Bytes;
use base64::Engine;
use futures_util::StreamExt;
use http_body_util::Full;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use ring::hmac;
use serde::{Deserialize, Serialize};
use yinyom_core::purpose::Channel;
use yinyom_core::time::{self, Micros};

use crate::dispatch::{DispatchConfig, HttpsClient, backoff, https_client};
use crate::model::{ConnectorRow, MessageRow};
use crate::services::Services;
use crate::store::StoreError;

const ROUND: u32 = 200;
const CONCURRENCY: usize = 16;
pub const LINE_PUSH_URL: &str = "https://api.line.me/v2/bot/message/push";

/// What is sealed with a message: the recipient's address as it was when
/// the message was asked for, and the content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Content {
    pub to: String,
    #[serde(default)]
    pub subject: Option<String>,
    pub text: String,
    #[serde(default)]
    pub html: Option<String>,
}

/// Settings of the relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Base URL at which this server is reachable by recipients (for
    /// unsubscribe links), without a trailing slash.
    pub public_url: String,
    pub retry: DispatchConfig,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            public_url: "http://127.0.0.1:8080".into(),
            retry: DispatchConfig::default(),
        }
    }
}

/// Signed, unguessable unsubscribe links: `base64url(tenant \0 message)`
/// `.` `base64url(HMAC-SHA-256)`, keyed from the master key so that every
/// node accepts every node's links.
pub struct Links {
    key: hmac::Key,
}

impl Links {
    pub fn new(key: hmac::Key) -> Self {
        Links { key }
    }

    pub fn token(&self, tenant: &str, message: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = b64.encode(format!("{tenant}\0{message}"));
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}.{}", b64.encode(tag.as_ref()))
    }

    /// (tenant, message) of a genuine token.
    pub fn verify(&self, token: &str) -> Option<(String, String)> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (payload, tag) = token.split_once('.')?;
        let tag = b64.decode(tag).ok()?;
        hmac::verify(&self.key, payload.as_bytes(), &tag).ok()?;
        let text = String::from_utf8(b64.decode(payload).ok()?).ok()?;
        let (t, m) = text.split_once('\0')?;
        Some((t.to_string(), m.to_string()))
    }
}

/// A tenant's connector, ready to send.
enum Connector {
    Email {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
        dkim: Option<Box<Dkim>>,
    },
    Http {
        url: String,
        authorization: Option<String>,
        sender: Option<String>,
        line: bool,
    },
}

/// The settings of a connector as given through the API (`secret`:
/// password, token or `Authorization` value; stored sealed).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSettings {
    /// email: `smtp://host:port`, `smtps://host:465` or
    /// `smtp://host:587?tls=required`; sms: the provider's endpoint;
    /// line: defaults to the Messaging API push endpoint.
    #[serde(default)]
    pub url: Option<String>,
    /// email: the `From` address (`Shop <news@shop.example>`).
    #[serde(default)]
    pub from: Option<String>,
    /// email: the SMTP user name.
    #[serde(default)]
    pub username: Option<String>,
    /// sms: the sender name or number.
    #[serde(default)]
    pub sender: Option<String>,
    /// email: SMTP password; sms: the `Authorization` header value; line:
    /// the channel access token. Never shown again.
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    /// email: sign outgoing mail with DKIM (RFC 6376).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<DkimSettings>,
}

/// DKIM signing of a tenant's email: the public key is published in DNS at
/// `<selector>._domainkey.<domain>`; the private key is stored sealed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DkimSettings {
    /// The signing domain (`d=`), normally the From address's domain.
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// An RSA private key as PEM (PKCS#1 `BEGIN RSA PRIVATE KEY` or PKCS#8
    /// `BEGIN PRIVATE KEY`; at least 1024 bits, 2048 advised): signs
    /// `rsa-sha256`; or an Ed25519 key as the base64 of its 32-byte seed:
    /// signs `ed25519-sha256` (RFC 8463). Never shown again.
    #[serde(default, skip_serializing)]
    pub private_key: Option<String>,
}

/// What DKIM signs: the headers a reader sees and RFC 8058 asks to cover
/// (`List-Unsubscribe`, `List-Unsubscribe-Post`).
const DKIM_HEADERS: [&str; 9] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// A connector's DKIM signer, ready to sign.
struct Dkim {
    domain: String,
    selector: String,
    key: String,
    rsa: bool,
}

impl Dkim {
    /// Parse the key as given through the API (checked again when it is
    /// opened to send).
    fn new(settings: &DkimSettings, key: &str) -> Result<Dkim, (&'static str, String)> {
        let label = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.split('.').all(|p| {
                    !p.is_empty()
                        && !p.starts_with('-')
                        && !p.ends_with('-')
                        && p.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        };
        if !label(&settings.domain, 253) || !settings.domain.contains('.') {
            return Err(("dkim.domain", "must be a domain name (shop.example)".into()));
        }
        if !label(&settings.selector, 63) {
            return Err((
                "dkim.selector",
                "must be a DNS label (letters, digits, - and _)".into(),
            ));
        }
        let key = key.trim();
        let bad = |why: &str| ("dkim.private_key", why.to_string());
        let (key, rsa) = if key.starts_with("-----BEGIN") {
            use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
            use rsa::pkcs8::DecodePrivateKey;
            use rsa::traits::PublicKeyParts;
            let k = rsa::RsaPrivateKey::from_pkcs1_pem(key)
                .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(key))
                .map_err(|_| bad("is not an RSA private key in PEM (PKCS#1 or PKCS#8)"))?;
            if k.n().bits() < 1024 {
                return Err(bad(
                    "an RSA key of at least 1024 bits is needed (2048 advised)",
                ));
            }
            let pem = k
                .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
                .map_err(|_| bad("the RSA key could not be read"))?;
            (pem.to_string(), true)
        } else {
            (key.to_string(), false)
        };
        let d = Dkim {
            domain: settings.domain.clone(),
            selector: settings.selector.clone(),
            key,
            rsa,
        };
        d.config().map_err(|e| bad(&e))?;
        Ok(d)
    }

    fn config(&self) -> Result<lettre::message::dkim::DkimConfig, String> {
        use lettre::message::dkim::{
            DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
            DkimSigningKey,
        };
        let algorithm = if self.rsa {
            DkimSigningAlgorithm::Rsa
        } else {
            DkimSigningAlgorithm::Ed25519
        };
        let key = DkimSigningKey::new(&self.key, algorithm).map_err(|_| {
            if self.rsa {
                "is not a usable RSA key".to_string()
            } else {
                "is neither a PEM RSA key nor the base64 of a 32-byte Ed25519 seed".to_string()
            }
        })?;
        Ok(DkimConfig::new(
            self.selector.clone(),
            self.domain.clone(),
            key,
            DKIM_HEADERS
                .iter()
                .map(|h| HeaderName::new_from_ascii_str(h))
                .collect(),
            DkimCanonicalization {
                header: DkimCanonicalizationType::Relaxed,
                body: DkimCanonicalizationType::Relaxed,
            },
        ))
    }
}

/// Check a connector's DKIM settings and key; the key to seal, normalised.
pub fn dkim_key(s: &ConnectorSettings) -> Result<Option<String>, (&'static str, String)> {
    let Some(d) = &s.dkim else {
        return Ok(None);
    };
    let key = d
        .private_key
        .as_deref()
        .filter(|k| !k.trim().is_empty())
        .ok_or((
            "dkim.private_key",
            "the DKIM private key is required".to_string(),
        ))?;
    Ok(Some(Dkim::new(d, key)?.key))
}

/// Check settings for a channel; the problem's field and reason if wrong.
pub fn validate_settings(
    channel: Channel,
    s: &ConnectorSettings,
) -> Result<(), (&'static str, String)> {
    let http_url = |u: &str| u.starts_with("https://") || u.starts_with("http://");
    match channel {
        Channel::Email => {
            let url = s
                .url
                .as_deref()
                .ok_or(("url", "the SMTP server URL is required".to_string()))?;
            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                return Err((
                    "url",
                    "must be smtp://host:port or smtps://host:port".into(),
                ));
            }
            AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                .map_err(|e| ("url", e.to_string()))?;
            let from = s
                .from
                .as_deref()
                .ok_or(("from", "the From address is required".to_string()))?;
            from.parse::<Mailbox>()
                .map_err(|e| ("from", format!("is not a mailbox: {e}")))?;
            dkim_key(s)?;
        }
        Channel::Sms => {
            let url = s
                .url
                .as_deref()
                .ok_or(("url", "the provider's endpoint is required".to_string()))?;
            if !http_url(url) {
                return Err(("url", "must be an http(s) URL".into()));
            }
        }
        Channel::Line => {
            if s.url.as_deref().is_some_and(|u| !http_url(u)) {
                return Err(("url", "must be an http(s) URL".into()));
            }
            if s.secret.as_deref().is_none_or(str::is_empty) {
                return Err(("secret", "the channel access token is required".into()));
            }
        }
        _ => return Err(("channel", "the relay sends email, sms and line".into())),
    }
    if channel != Channel::Email && s.dkim.is_some() {
        return Err(("dkim", "DKIM signs email only".into()));
    }
    Ok(())
}

fn connector(
    channel: Channel,
    s: &ConnectorSettings,
    secret: Option<String>,
    dkim_key: Option<String>,
    timeout: Duration,
) -> Result<Connector, String> {
    match channel {
        Channel::Email => {
            let url = s.url.as_deref().unwrap_or_default();
            let mut b = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                .map_err(|e| e.to_string())?
                .timeout(Some(timeout));
            if let (Some(user), Some(pass)) = (&s.username, secret) {
                b = b.credentials(lettre::transport::smtp::authentication::Credentials::new(
                    user.clone(),
                    pass,
                ));
            }
            let from = s
                .from
                .as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(|e| format!("{e}"))?;
            let dkim = match (&s.dkim, dkim_key) {
                (Some(d), Some(key)) => Some(Box::new(
                    Dkim::new(d, &key).map_err(|(_, why)| format!("DKIM private key {why}"))?,
                )),
                _ => None,
            };
            Ok(Connector::Email {
                transport: b.build(),
                from,
                dkim,
            })
        }
        Channel::Sms => Ok(Connector::Http {
            url: s.url.clone().unwrap_or_default(),
            authorization: secret,
            sender: s.sender.clone(),
            line: false,
        }),
        Channel::Line => Ok(Connector::Http {
            url: s.url.clone().unwrap_or_else(|| LINE_PUSH_URL.into()),
            authorization: secret.map(|t| format!("Bearer {t}")),
            sender: None,
            line: true,
        }),
        _ => Err("no connector for this channel".into()),
    }
}

pub struct Relay {
    svc: Weak<Services>,
    config: RelayConfig,
    client: HttpsClient,
}

impl Relay {
    pub fn new(svc: &Arc<Services>, config: RelayConfig) -> Relay {
        Relay {
            svc: Arc::downgrade(svc),
            config,
            client: https_client(),
        }
    }

    pub async fn run(self) {
        let Some(wake) = self.svc.upgrade().map(|a| a.relay_wake.clone()) else {
            return;
        };
        loop {
            let Some(svc) = self.svc.upgrade() else {
                return;
            };
            let busy = match self.round(&svc).await {
                Ok(busy) => busy,
                Err(e) => {
                    tracing::warn!(error = %e, "message relay: storage unavailable");
                    false
                }
            };
            drop(svc);
            if !busy {
                let _ = tokio::time::timeout(Duration::from_millis(500), wake.notified()).await;
            }
        }
    }

    /// Send what is due; whether there may be more.
    async fn round(&self, svc: &Arc<Services>) -> Result<bool, StoreError> {
        if !svc.store.lead().await? {
            return Ok(false);
        }
        let due = svc.store.due_messages(time::now(), ROUND).await?;
        let busy = due.len() == ROUND as usize;
        let results: Vec<Result<(), StoreError>> = futures_util::stream::iter(due)
            .map(|m| self.attempt(svc, m))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect::<Result<(), _>>()?;
        Ok(busy)
    }

    /// One attempt: consent checked again, then sent; the outcome settled.
    async fn attempt(&self, svc: &Arc<Services>, mut m: MessageRow) -> Result<(), StoreError> {
        let now = time::now();
        m.updated_at = now;
        let channel = Channel::parse(&m.channel).unwrap_or(Channel::Email);
        let Some(subject) = m.subject_id.clone() else {
            m.status = "suppressed".into();
            m.reason = Some("erased".into());
            svc.metrics.message("suppressed");
            return svc
                .store
                .settle_message(&m, Some("the subject was erased before sending"))
                .await;
        };
        let decision = if is_system(&m.purpose) {
            // Identity checks and opt-in confirmations: sent whatever the
            // subject consented to (they are how consent and rights work).
            Some(yinyom_core::decision::Decision {
                allowed: true,
                reason: yinyom_core::decision::Reason::LawfulBasis,
            })
        } else {
            svc.view
                .read(&m.tenant, |tv| {
                    tv.decide(&subject, &m.purpose, Some(channel), now)
                        .ok()
                        .map(|a| a.decision)
                })
                .flatten()
        };
        match decision {
            Some(d) if d.allowed => {}
            other => {
                let reason = other.map_or("unknown_purpose", |d| d.reason.as_str());
                m.status = "suppressed".into();
                m.reason = Some(reason.into());
                svc.metrics.message("suppressed");
                return svc
                    .store
                    .settle_message(
                        &m,
                        Some(&format!("consent changed before sending: {reason}")),
                    )
                    .await;
            }
        }
        let outcome = match self.open(svc, &m).await? {
            Err(e) => Err(e),
            Ok(content) => self.send(svc, &m, channel, &content).await,
        };
        let detail = match outcome {
            Ok(detail) => {
                m.status = "sent".into();
                m.reason = None;
                m.attempts += 1;
                svc.metrics.message("sent");
                detail
            }
            Err(e) => {
                m.attempts += 1;
                let age = Duration::from_micros((now - m.created_at).max(0) as u64);
                if age >= self.config.retry.give_up_after {
                    m.status = "dead".into();
                    svc.metrics.message("dead");
                } else {
                    m.status = "retrying".into();
                    m.next_at = now + backoff(&self.config.retry, m.attempts).as_micros() as Micros;
                    svc.metrics.message("retrying");
                }
                m.reason = Some(e.clone());
                e
            }
        };
        svc.store.settle_message(&m, Some(&detail)).await
    }

    /// The sealed recipient and content.
    async fn open(
        &self,
        svc: &Services,
        m: &MessageRow,
    ) -> Result<Result<Content, String>, StoreError> {
        let keys = svc.vault.tenant(svc.store.as_ref(), &m.tenant).await?;
        let Some(id) = &m.subject_id else {
            return Ok(Err("the subject was erased".into()));
        };
        let record = svc.store.subject(&m.tenant, id).await?;
        let (Some(record), Some(blob)) = (record, &m.content) else {
            return Ok(Err("the message content is gone".into()));
        };
        let Some(wrapped) = &record.data_key else {
            return Ok(Err("the subject's key is gone".into()));
        };
        let opened = keys
            .unwrap_data_key(&record.uid, wrapped)
            .and_then(|dk| dk.open(blob))
            .ok()
            .and_then(|plain| serde_json::from_slice(&plain).ok());
        Ok(opened.ok_or_else(|| "the message content does not open".to_string()))
    }

    async fn send(
        &self,
        svc: &Services,
        m: &MessageRow,
        channel: Channel,
        c: &Content,
    ) -> Result<String, String> {
        let rows = svc
            .store
            .connectors(&m.tenant)
            .await
            .map_err(|e| e.to_string())?;
        let Some(row) = rows.into_iter().find(|r| r.channel == channel.as_str()) else {
            return Err(format!("no {} connector is configured", channel.as_str()));
        };
        let (settings, secret, dkim_key) =
            open_connector(svc, &row).await.map_err(|e| e.to_string())?;
        let connector = connector(
            channel,
            &settings,
            secret,
            dkim_key,
            self.config.retry.timeout,
        )?;
        match connector {
            Connector::Email {
                transport,
                from,
                dkim,
            } => {
                let link = format!(
                    "{}/u/{}",
                    self.config.public_url,
                    svc.links.token(&m.tenant, &m.id)
                );
                let to: Mailbox = c.to.parse().map_err(|e| format!("bad recipient: {e}"))?;
                let mut builder = lettre::Message::builder()
                    .from(from)
                    .to(to)
                    .subject(c.subject.clone().unwrap_or_default())
                    .message_id(Some(format!("<{}@yinyom>", m.id)));
                if !is_system(&m.purpose) {
                    builder = builder
                        .raw_header(HeaderValue::new(
                            HeaderName::new_from_ascii_str("List-Unsubscribe"),
                            format!("<{link}>"),
                        ))
                        .raw_header(HeaderValue::new(
                            HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                            "List-Unsubscribe=One-Click".into(),
                        ));
                }
                let mut email = match &c.html {
                    Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                        c.text.clone(),
                        html.clone(),
                    )),
                    None => builder.header(ContentType::TEXT_PLAIN).body(c.text.clone()),
                }
                .map_err(|e| format!("could not build the email: {e}"))?;
                if let Some(d) = dkim {
                    email.sign(&d.config()?);
                }
                let response = transport
                    .send(email)
                    .await
                    .map_err(|e| format!("SMTP: {e}"))?;
                Ok(format!("SMTP {}", response.code()))
            }
            Connector::Http {
                url,
                authorization,
                sender,
                line,
            } => {
                let body = if line {
                    serde_json::json!({ "to": c.to, "messages": [{ "type": "text", "text": c.text }] })
                } else {
                    serde_json::json!({ "to": c.to, "text": c.text, "sender": sender, "reference": m.id })
                };
                let mut req = hyper::Request::post(&url)
                    .header("content-type", "application/json")
                    .header("user-agent", "yinyom-relay");
                if let Some(a) = authorization {
                    req = req.header("authorization", a);
                }
                if line {
                    // LINE accepts a retry key (a UUID) to send a push once.
                    let key = uuid::Uuid::parse_str(m.id.trim_start_matches("msg_"))
                        .unwrap_or_else(|_| uuid::Uuid::new_v4());
                    req = req.header("x-line-retry-key", key.to_string());
                }
                let req = req
                    .body(Full::new(Bytes::from(body.to_string())))
                    .map_err(|e| format!("bad request: {e}"))?;
                match tokio::time::timeout(self.config.retry.timeout, self.client.request(req))
                    .await
                {
                    Err(_) => Err("the provider did not answer in time".into()),
                    Ok(Err(e)) => Err(format!("could not reach the provider: {e}")),
                    // LINE answers 409 to a retry of a push it already accepted.
                    Ok(Ok(r))
                        if r.status().is_success() || (line && r.status().as_u16() == 409) =>
                    {
                        Ok(format!("HTTP {}", r.status().as_u16()))
                    }
                    Ok(Ok(r)) => Err(format!(
                        "the provider answered HTTP {}",
                        r.status().as_u16()
                    )),
                }
            }
        }
    }
}

/// A stored connector's settings with its secret and DKIM key opened.
pub async fn open_connector(
    svc: &Services,
    row: &ConnectorRow,
) -> Result<(ConnectorSettings, Option<String>, Option<String>), StoreError> {
    let settings: ConnectorSettings = serde_json::from_value(row.config.clone())
        .map_err(|e| StoreError::Unavailable(format!("stored connector is unreadable: {e}")))?;
    if row.secret.is_none() && row.dkim_key.is_none() {
        return Ok((settings, None, None));
    }
    let keys = svc.vault.tenant(svc.store.as_ref(), &row.tenant).await?;
    let open = |label: String, blob: &Option<Vec<u8>>| -> Result<Option<String>, StoreError> {
        Ok(match blob {
            None => None,
            Some(blob) => {
                Some(String::from_utf8_lossy(&keys.open_secret(&label, blob)?).into_owned())
            }
        })
    };
    let secret = open(format!("connector:{}", row.channel), &row.secret)?;
    let dkim = open(format!("connector:{}:dkim", row.channel), &row.dkim_key)?;
    Ok((settings, secret, dkim))
}

/// Purposes of messages Yinyom itself sends for consent and rights to work
/// (`system:verification`, `system:opt_in`): not marketing, so no consent
/// is asked and no unsubscribe link is added.
pub const SYSTEM_PREFIX: &str = "system:";

pub fn is_system(purpose: &str) -> bool {
    purpose.starts_with(SYSTEM_PREFIX)
}

/// Queue a system message to a subject's contact point on `channel`;
/// returns the message id. The content is sealed with the subject's key.
pub async fn queue_system(
    svc: &Services,
    tenant: &str,
    subject_id: &str,
    channel: Channel,
    purpose: &str,
    content: (Option<String>, String),
) -> Result<String, crate::api::problem::Problem> {
    use crate::api::problem::Problem;
    debug_assert!(is_system(purpose));
    let kind = yinyom_core::contact::ContactKind::for_channel(channel)
        .ok_or_else(|| Problem::validation("channel", "use email, sms or line"))?;
    if !svc
        .store
        .connectors(tenant)
        .await?
        .iter()
        .any(|c| c.channel == channel.as_str())
    {
        return Err(Problem::validation(
            "channel",
            format!("no {} connector is configured", channel.as_str()),
        ));
    }
    let subject = crate::profiles::read(svc, tenant, subject_id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("subject {subject_id:?} does not exist")))?;
    let (Some(to), Some(wrapped)) = (
        subject.profile.contacts.get(&kind),
        subject.record.data_key.as_ref(),
    ) else {
        return Err(Problem::validation(
            "channel",
            format!("the subject has no {} to send to", kind.as_str()),
        ));
    };
    let keys = svc
        .vault
        .tenant(svc.store.as_ref(), tenant)
        .await
        .map_err(StoreError::from)?;
    let dk = keys
        .unwrap_data_key(&subject.record.uid, wrapped)
        .map_err(StoreError::from)?;
    let body = Content {
        to: to.clone(),
        subject: content.0,
        text: content.1,
        html: None,
    };
    let now = time::now();
    let mut row = MessageRow::queued(tenant, &subject.record, channel.as_str(), purpose, now);
    row.content = Some(dk.seal(&serde_json::to_vec(&body).expect("content serialises")));
    svc.store
        .insert_messages(std::slice::from_ref(&row))
        .await?;
    svc.relay_wake.notify_one();
    Ok(row.id)
}

/// Send an email to the controller's own staff (the DPO's reminders of
/// deadlines) through the tenant's email connector, on the same SMTP path
/// as subjects' messages (lettre, DKIM-signed when the connector has a key)
/// but with no unsubscribe link: it is not marketing and goes to no
/// subject. The caller keeps the outcome and retries.
pub async fn send_staff_email(
    svc: &Services,
    tenant: &str,
    to: &str,
    message_id: &str,
    subject: &str,
    text: &str,
) -> Result<String, String> {
    let rows = svc
        .store
        .connectors(tenant)
        .await
        .map_err(|e| e.to_string())?;
    let Some(row) = rows
        .into_iter()
        .find(|r| r.channel == Channel::Email.as_str())
    else {
        return Err("no email connector is configured".into());
    };
    let (settings, secret, dkim_key) =
        open_connector(svc, &row).await.map_err(|e| e.to_string())?;
    let Connector::Email {
        transport,
        from,
        dkim,
    } = connector(
        Channel::Email,
        &settings,
        secret,
        dkim_key,
        DispatchConfig::default().timeout,
    )?
    else {
        return Err("the email connector is not SMTP".into());
    };
    let to: Mailbox = to.parse().map_err(|e| format!("bad recipient: {e}"))?;
    let mut email = lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .message_id(Some(format!("<{message_id}@yinyom>")))
        .header(ContentType::TEXT_PLAIN)
        .body(text.to_string())
        .map_err(|e| format!("could not build the email: {e}"))?;
    if let Some(d) = dkim {
        email.sign(&d.config()?);
    }
    let response = transport
        .send(email)
        .await
        .map_err(|e| format!("SMTP: {e}"))?;
    Ok(format!("SMTP {}", response.code()))
}
