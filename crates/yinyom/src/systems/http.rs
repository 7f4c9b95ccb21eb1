//! Declarative HTTP connectors (issue 14, part 3): a SaaS tool (a CRM, an
//! email platform, LINE) reached through its documented REST API, as a
//! connector file (TOML) says: how to authenticate (bearer, basic, OAuth2
//! client credentials), how to find the subject's records (method, path
//! template, query, body, pagination, a JSON pointer to the records), how
//! to erase them, and how to opt the subject out of / back into a purpose.
//!
//! Templates: `{email}`, `{email_md5}` (MD5 of the lowercase email, as
//! Mailchimp's subscriber hash), `{phone}`, `{customer_id}`, `{line_id}`,
//! `{subject}`, the system's parameters (`{list_id}`), `{record/id}` (a
//! JSON pointer into a found record) and `{cursor}` (pagination). Values are
//! percent-encoded in paths and bound as JSON strings in bodies.
//!
//! Outbound calls honour an allow-list (SSRF): the host of the system's base
//! URL and of the connector's token URL, plus hosts configured with
//! `--connector-hosts`; an address that is private, loopback or link-local
//! is refused unless listed in `--connector-allow-private` — for names,
//! checked on every resolution by the client's resolver, so a name cannot be
//! rebound to an inner address. Redirects are not followed.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use yinyom_core::purpose::Channel;
use yinyom_core::rights::Kind;
use yinyom_core::systems::IdentifierKind;

use super::{Payload, TableOutcome, TableRows};

/// The connectors shipped in the repository's `connectors/` directory.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "mailchimp",
        include_str!("../../../../connectors/mailchimp.toml"),
    ),
    (
        "hubspot",
        include_str!("../../../../connectors/hubspot.toml"),
    ),
];

/// A connector file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Connector {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The API's base URL (may name parameters: `https://{dc}.api.mailchimp.com`);
    /// a system's `connection.url` replaces it.
    #[serde(default)]
    pub base_url: String,
    /// Parameters a system must give (`list_id`).
    #[serde(default)]
    pub params: Vec<String>,
    /// The identifier the API finds people by.
    pub identifier: IdentifierKind,
    pub auth: Auth,
    pub find: Find,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erase: Option<Erase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<ConsentCalls>,
    /// Record field (JSON pointer) → data category, for the data map.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// How requests authenticate; the secrets are the system's `connection`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    None,
    /// `Authorization: Bearer <connection.token>`.
    Bearer,
    /// `Authorization: Basic` of `connection.username` (or this default) and
    /// `connection.password`.
    Basic {
        #[serde(default)]
        username: Option<String>,
    },
    /// OAuth2 client credentials (RFC 6749 §4.4): `connection.client_id` and
    /// `client_secret` exchanged at `token_url`; the token is cached until it
    /// expires.
    Oauth2 {
        token_url: String,
        #[serde(default)]
        scope: Option<String>,
    },
}

/// One HTTP call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Call {
    #[serde(default = "get")]
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// A JSON body (strings are templates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub body: Option<Value>,
    /// Statuses that mean "nobody here" (e.g. 404): nothing to do.
    #[serde(default)]
    pub not_found: Vec<u16>,
}

fn get() -> String {
    "GET".into()
}

/// How to find the subject's records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Find {
    #[serde(flatten)]
    pub call: Call,
    /// JSON pointer to the records: an array, or one object (`""`: the body).
    #[serde(default)]
    pub records: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
}

/// Pages of records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// The next page's cursor at `next` (JSON pointer) in the answer, given
    /// back as `{cursor}` in the call (query or body); stops when absent.
    Cursor {
        next: String,
        #[serde(default = "max_pages")]
        max_pages: u32,
    },
    /// `param` = 0, size, 2·size…; stops at a short page.
    Offset {
        param: String,
        size: u32,
        #[serde(default = "max_pages")]
        max_pages: u32,
    },
}

fn max_pages() -> u32 {
    50
}

/// How to erase the subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Erase {
    /// `delete` or `mask` (what the call does, for the request's result).
    #[serde(default = "delete")]
    pub action: String,
    /// Once per found record (`{record/…}` in the call), or once.
    #[serde(default = "yes")]
    pub per_record: bool,
    #[serde(flatten)]
    pub call: Call,
}

fn delete() -> String {
    "delete".into()
}

fn yes() -> bool {
    true
}

/// Consent propagation: the purpose (and channel) the API's subscription
/// stands for, and the calls that opt out and back in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentCalls {
    /// The purpose; a system may name its own (`connector.purpose`).
    #[serde(default)]
    pub purpose: Option<String>,
    #[serde(default)]
    pub channel: Option<Channel>,
    pub opt_out: Call,
    pub opt_in: Call,
}

/// Parse a connector file.
pub fn parse(text: &str) -> Result<Connector, String> {
    let c: Connector = toml::from_str(text).map_err(|e| e.to_string())?;
    validate(&c)?;
    Ok(c)
}

/// Every placeholder is one the connector can fill.
pub fn validate(c: &Connector) -> Result<(), String> {
    if c.name.is_empty() || c.name.len() > 64 {
        return Err("name must be 1-64 characters".into());
    }
    let mut calls: Vec<(&str, &Call, bool)> = vec![("find", &c.find.call, false)];
    if let Some(e) = &c.erase {
        calls.push(("erase", &e.call, e.per_record));
        if !matches!(e.action.as_str(), "delete" | "mask") {
            return Err("erase.action must be delete or mask".into());
        }
    }
    if let Some(k) = &c.consent {
        calls.push(("consent.opt_out", &k.opt_out, false));
        calls.push(("consent.opt_in", &k.opt_in, false));
    }
    let known = |name: &str, record: bool| {
        identifier_kind(name).is_some()
            || name == "email_md5"
            || name == "cursor"
            || c.params.iter().any(|p| p == name)
            || (record && name.starts_with("record/"))
    };
    let mut texts: Vec<(&str, String, bool)> = vec![("base_url", c.base_url.clone(), false)];
    for (what, call, record) in calls {
        if !matches!(
            call.method.as_str(),
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE"
        ) {
            return Err(format!(
                "{what}.method must be GET, POST, PUT, PATCH or DELETE"
            ));
        }
        if !call.path.starts_with('/') {
            return Err(format!("{what}.path must start with /"));
        }
        texts.push((what, call.path.clone(), record));
        for v in call.query.values() {
            texts.push((what, v.clone(), record));
        }
        if let Some(b) = &call.body {
            texts.push((what, b.to_string(), record));
        }
    }
    for (what, text, record) in texts {
        for name in placeholders(&text) {
            if !known(name, record) {
                return Err(format!("{what}: unknown placeholder {{{name}}}"));
            }
        }
    }
    for (field, category) in &c.fields {
        if yinyom_core::systems::category(category).is_none() {
            return Err(format!(
                "fields.{field:?}: unknown data category {category:?}"
            ));
        }
    }
    if let Auth::Oauth2 { token_url, .. } = &c.auth {
        url::Url::parse(token_url).map_err(|e| format!("auth.token_url: {e}"))?;
    }
    Ok(())
}

fn identifier_kind(name: &str) -> Option<IdentifierKind> {
    IdentifierKind::ALL.into_iter().find(|k| k.as_str() == name)
}

fn placeholders(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else { break };
        let name = &after[..j];
        if !name.is_empty()
            && name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_/-~.".contains(ch))
        {
            out.push(name);
        }
        rest = &after[j + 1..];
    }
    out
}

/// A system's HTTP settings as stored (`systems.config.connector`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HttpConfig {
    /// The template it was made from (`mailchimp`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The connector, as resolved when the system was registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<Connector>,
    /// Non-secret parameters (`list_id`).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The base URL used.
    #[serde(default)]
    pub base_url: String,
    /// Hosts this system may call besides the configured allow-list: those
    /// of a template's own base URL and token URL (a connector written out
    /// through the API, or a base URL given in `connection.url`, reaches
    /// only hosts of the allow-list).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The purpose (and channel) the API's subscription stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
}

impl HttpConfig {
    /// The purpose the consent calls propagate, if any.
    pub fn consent_purpose(&self) -> Option<(String, Option<Channel>)> {
        let c = self.definition.as_ref()?.consent.as_ref()?;
        let purpose = self.purpose.clone().or_else(|| c.purpose.clone())?;
        Some((purpose, self.channel.or(c.channel)))
    }
}

/// The secrets of an HTTP system (sealed whole).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
}

/// Settings of outbound calls.
#[derive(Debug, Clone, Default)]
pub struct HttpSettings {
    /// Directory of connector files (`*.toml`), besides the built-in ones.
    pub connectors_dir: Option<std::path::PathBuf>,
    /// Hosts any connector may call, besides its own base and token URLs.
    pub allow_hosts: Vec<String>,
    /// Private, loopback or link-local addresses (or names resolving to
    /// them) that may nonetheless be called, e.g. `127.0.0.1`.
    pub allow_private: Vec<String>,
    /// Per-call time limit (default 10 s).
    pub timeout: Option<Duration>,
}

/// The host of a URL, without IPv6 brackets.
pub fn host_of(raw: &str) -> Option<String> {
    let u = url::Url::parse(raw).ok()?;
    let h = u.host_str()?;
    Some(
        h.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
    )
}

/// The connector named `name`: from the directory, else built in.
pub fn template(settings: &HttpSettings, name: &str) -> Result<Connector, String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        return Err("must be 1-64 characters of a-z, 0-9, '_' or '-'".into());
    }
    if let Some(dir) = &settings.connectors_dir {
        let path = dir.join(format!("{name}.toml"));
        if let Ok(text) = std::fs::read_to_string(&path) {
            return parse(&text).map_err(|e| format!("{}: {e}", path.display()));
        }
    }
    BUILT_IN
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| format!("no connector {name:?} (built in: mailchimp, hubspot)"))
        .and_then(|(_, t)| parse(t))
}

/// The connectors available: the directory's, then the built-in ones.
pub fn templates(settings: &HttpSettings) -> Vec<(String, Result<Connector, String>)> {
    let mut out: Vec<(String, Result<Connector, String>)> = Vec::new();
    if let Some(dir) = &settings.connectors_dir
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".toml"))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        for n in names {
            let t = template(settings, &n);
            out.push((n, t));
        }
    }
    for (n, _) in BUILT_IN {
        if !out.iter().any(|(x, _)| x == n) {
            out.push((n.to_string(), template(settings, n)));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Outbound calls, guarded.

/// Whether an address is one an SSRF would aim at.
fn inner(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            v.is_private()
                || v.is_loopback()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.is_documentation()
                || v.octets()[0] == 100 && (v.octets()[1] & 0xc0) == 64 // CGNAT
                || v.octets()[0] == 0
        }
        IpAddr::V6(v) => {
            if let Some(m) = v.to_ipv4_mapped() {
                return inner(IpAddr::V4(m));
            }
            v.is_loopback()
                || v.is_unspecified()
                || (v.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v.segments()[0] & 0xffc0) == 0xfe80 // link local
        }
    }
}

#[derive(Clone)]
struct Guard {
    allow_private: Arc<Vec<String>>,
}

impl Guard {
    fn permits(&self, host: &str, ip: IpAddr) -> bool {
        !inner(ip)
            || self
                .allow_private
                .iter()
                .any(|a| a.eq_ignore_ascii_case(host) || a.parse::<IpAddr>().ok() == Some(ip))
    }
}

/// The client's resolver: drops addresses the guard refuses, so a name
/// cannot lead to an inner address.
#[derive(Clone)]
struct GuardedResolver(Guard);

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| guard.permits(&host, a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{host} resolves to a private or loopback address, which is not allowed"
                    ),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

/// (tenant, system, the system's `updated_at`).
type TokenKey = (String, String, i64);

type GuardedClient =
    Client<hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// The HTTP side of the systems task: a guarded client and cached tokens.
pub struct Http {
    settings: HttpSettings,
    guard: Guard,
    client: GuardedClient,
    /// OAuth2 tokens by (tenant, system, updated_at): token, valid until.
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
}

impl Http {
    pub fn new(settings: HttpSettings) -> Http {
        let guard = Guard {
            allow_private: Arc::new(settings.allow_private.clone()),
        };
        let mut http = HttpConnector::new_with_resolver(GuardedResolver(guard.clone()));
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Http {
            settings,
            guard,
            client: Client::builder(TokioExecutor::new()).build(https),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    /// Refuse a URL outside the allow-list, or an inner address literal.
    fn check(&self, url: &url::Url, own: &[String]) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{url}: only http and https are called"));
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let listed = own
            .iter()
            .chain(self.settings.allow_hosts.iter())
            .any(|h| h.eq_ignore_ascii_case(bare));
        if !listed {
            return Err(format!(
                "host {bare} is not in the allow-list of outbound hosts (--connector-hosts)"
            ));
        }
        if let Ok(ip) = bare.parse::<IpAddr>()
            && !self.guard.permits(bare, ip)
        {
            return Err(format!(
                "{bare} is a private or loopback address; allow it with --connector-allow-private"
            ));
        }
        Ok(())
    }

    /// POST a JSON body to a request hook (`crate::hooks`) under the same
    /// guard as connectors: the hook's own host is allowed (as a system's
    /// base URL is), an inner address only if `--connector-allow-private`
    /// lists it; `limit` bounds the whole call. The status and body.
    pub async fn post_hook(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        limit: Duration,
    ) -> Result<(u16, Bytes), String> {
        let u = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        let own: Vec<String> = host_of(url).into_iter().collect();
        tokio::time::timeout(
            limit,
            self.send("POST", &u, &own, headers, Some((body, "application/json"))),
        )
        .await
        .map_err(|_| format!("POST {}: no answer within {limit:?}", u.path()))?
    }

    /// Whether a hook's URL may be called at all (an inner address literal
    /// not allowed is refused when the hook is registered).
    pub fn check_hook_url(&self, url: &str) -> Result<(), String> {
        let u = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        let own: Vec<String> = host_of(url).into_iter().collect();
        self.check(&u, &own)
    }

    async fn send(
        &self,
        method: &str,
        url: &url::Url,
        own: &[String],
        headers: &[(String, String)],
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<(u16, Bytes), String> {
        self.check(url, own)?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header("accept", "application/json")
            .header("user-agent", "yinyom");
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let bytes = match body {
            Some((b, ct)) => {
                req = req.header("content-type", ct);
                Bytes::from(b)
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| format!("{method} {}: {e}", url.path()))?;
        let limit = self.settings.timeout.unwrap_or(Duration::from_secs(10));
        let call = async {
            let res = self.client.request(req).await.map_err(|e| {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg = format!("{msg}: {s}");
                    src = s.source();
                }
                msg
            })?;
            let status = res.status().as_u16();
            let body = res
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        tokio::time::timeout(limit, call)
            .await
            .map_err(|_| format!("{method} {}: no answer within {limit:?}", url.path()))?
            .map_err(|e| format!("{method} {}: {e}", url.path()))
    }
}

// ---------------------------------------------------------------------------
// A system's calls.

/// What one system needs for its calls.
pub struct Target<'a> {
    pub http: &'a Http,
    pub tenant: &'a str,
    pub key: &'a str,
    pub version: i64,
    pub config: &'a HttpConfig,
    pub connector: &'a Connector,
    pub credentials: Credentials,
}

impl Target<'_> {
    /// Hosts this system may call besides the allow-list.
    fn own_hosts(&self) -> Vec<String> {
        self.config.hosts.clone()
    }

    async fn authorization(&self) -> Result<Option<String>, String> {
        let c = &self.credentials;
        match &self.connector.auth {
            Auth::None => Ok(None),
            Auth::Bearer => {
                let t = c.token.as_deref().ok_or("connection.token is not set")?;
                Ok(Some(format!("Bearer {t}")))
            }
            Auth::Basic { username } => {
                let user = c.username.as_deref().or(username.as_deref()).unwrap_or("");
                let pass = c
                    .password
                    .as_deref()
                    .or(c.token.as_deref())
                    .ok_or("connection.password is not set")?;
                let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                Ok(Some(format!("Basic {b}")))
            }
            Auth::Oauth2 { token_url, scope } => {
                let cache_key = (self.tenant.to_string(), self.key.to_string(), self.version);
                if let Ok(tokens) = self.http.tokens.lock()
                    && let Some((t, until)) = tokens.get(&cache_key)
                    && *until > Instant::now()
                {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let id = c
                    .client_id
                    .as_deref()
                    .ok_or("connection.client_id is not set")?;
                let secret = c
                    .client_secret
                    .as_deref()
                    .ok_or("connection.client_secret is not set")?;
                let url = url::Url::parse(token_url).map_err(|e| e.to_string())?;
                let form = {
                    let mut form = url::form_urlencoded::Serializer::new(String::new());
                    form.append_pair("grant_type", "client_credentials");
                    if let Some(s) = scope {
                        form.append_pair("scope", s);
                    }
                    form.finish()
                };
                let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    form_encode(id),
                    form_encode(secret)
                ));
                let (status, body) = self
                    .http
                    .send(
                        "POST",
                        &url,
                        &self.own_hosts(),
                        &[("authorization".into(), format!("Basic {basic}"))],
                        Some((form.into_bytes(), "application/x-www-form-urlencoded")),
                    )
                    .await
                    .map_err(|e| format!("token: {e}"))?;
                if !(200..300).contains(&status) {
                    return Err(format!(
                        "token: the token endpoint answered {status}: {}",
                        snippet(&body)
                    ));
                }
                let v: Value =
                    serde_json::from_slice(&body).map_err(|e| format!("token: not JSON: {e}"))?;
                let token = v["access_token"]
                    .as_str()
                    .ok_or("token: no access_token in the answer")?
                    .to_string();
                let lifetime = v["expires_in"].as_u64().unwrap_or(300);
                let until =
                    Instant::now() + Duration::from_secs(lifetime.saturating_sub(30).max(1));
                if let Ok(mut tokens) = self.http.tokens.lock() {
                    tokens.retain(|_, (_, u)| *u > Instant::now());
                    tokens.insert(cache_key, (token.clone(), until));
                }
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Make one call; `Ok(None)`: a `not_found` status.
    async fn call(
        &self,
        call: &Call,
        vars: &Vars<'_>,
        record: Option<&Value>,
    ) -> Result<Option<Value>, String> {
        let base = fill(&self.config.base_url, vars, record, false)?;
        let path = fill(&call.path, vars, record, true)?;
        let mut url = url::Url::parse(&format!("{}{path}", base.trim_end_matches('/')))
            .map_err(|e| format!("{}: {e}", call.path))?;
        if !call.query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in &call.query {
                let v = fill(v, vars, record, false)?;
                if !v.is_empty() {
                    q.append_pair(k, &v);
                }
            }
        }
        let body = match &call.body {
            Some(b) => Some((
                serde_json::to_vec(&fill_json(b, vars, record)?).map_err(|e| e.to_string())?,
                "application/json",
            )),
            None => None,
        };
        let mut headers = Vec::new();
        if let Some(a) = self.authorization().await? {
            headers.push(("authorization".to_string(), a));
        }
        let (status, bytes) = self
            .http
            .send(&call.method, &url, &self.own_hosts(), &headers, body)
            .await?;
        if call.not_found.contains(&status) {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            if matches!(status, 401 | 403)
                && let Ok(mut t) = self.http.tokens.lock()
            {
                t.remove(&(self.tenant.to_string(), self.key.to_string(), self.version));
            }
            return Err(format!(
                "{} {} answered {status}: {}",
                call.method,
                url.path(),
                snippet(&bytes)
            ));
        }
        if bytes.is_empty() {
            return Ok(Some(Value::Null));
        }
        Ok(Some(serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// The subject's records (every page).
    pub async fn find(&self, vars: &Vars<'_>) -> Result<Vec<Value>, String> {
        let find = &self.connector.find;
        let mut out = Vec::new();
        let mut vars = vars.clone();
        let (limit, size) = match &find.pagination {
            None => (1, 0),
            Some(Pagination::Cursor { max_pages, .. }) => (*max_pages, 0),
            Some(Pagination::Offset {
                size, max_pages, ..
            }) => (*max_pages, *size),
        };
        let mut call = find.call.clone();
        for page in 0..limit.max(1) {
            if let Some(Pagination::Offset { param, .. }) = &find.pagination {
                call.query
                    .insert(param.clone(), (page as u64 * size as u64).to_string());
            }
            let Some(answer) = self.call(&call, &vars, None).await? else {
                break;
            };
            let found = if find.records.is_empty() {
                Some(&answer)
            } else {
                answer.pointer(&find.records)
            };
            let n = match found {
                Some(Value::Array(a)) => {
                    out.extend(a.iter().cloned());
                    a.len()
                }
                Some(Value::Null) | None => 0,
                Some(v) => {
                    out.push(v.clone());
                    1
                }
            };
            match &find.pagination {
                Some(Pagination::Cursor { next, .. }) => match answer.pointer(next) {
                    Some(Value::String(s)) if !s.is_empty() => vars.cursor = Some(s.clone()),
                    Some(Value::Number(n)) => vars.cursor = Some(n.to_string()),
                    _ => break,
                },
                Some(Pagination::Offset { .. }) if n < size as usize => break,
                Some(Pagination::Offset { .. }) => {}
                None => break,
            }
        }
        Ok(out)
    }
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn snippet(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.chars().take(200).collect()
}

/// The values placeholders take.
#[derive(Clone)]
pub struct Vars<'a> {
    pub identifiers: &'a BTreeMap<IdentifierKind, String>,
    pub params: &'a BTreeMap<String, String>,
    pub cursor: Option<String>,
}

impl Vars<'_> {
    fn get(&self, name: &str, record: Option<&Value>) -> Result<String, String> {
        if let Some(pointer) = name.strip_prefix("record") {
            let v = record
                .and_then(|r| r.pointer(pointer))
                .ok_or_else(|| format!("the record has no {pointer}"))?;
            return Ok(match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        if name == "cursor" {
            return Ok(self.cursor.clone().unwrap_or_default());
        }
        if name == "email_md5" {
            let e = self
                .identifiers
                .get(&IdentifierKind::Email)
                .ok_or("the subject has no email")?;
            return Ok(hex::encode(Md5::digest(e.trim().to_lowercase().as_bytes())));
        }
        if let Some(k) = identifier_kind(name) {
            return self
                .identifiers
                .get(&k)
                .cloned()
                .ok_or_else(|| format!("the subject has no {name}"));
        }
        self.params
            .get(name)
            .cloned()
            .ok_or_else(|| format!("parameter {name} is not set"))
    }
}

/// Fill a template; in a path, each value is one percent-encoded segment.
fn fill(text: &str, vars: &Vars<'_>, record: Option<&Value>, path: bool) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            out.push_str(&rest[i..]);
            rest = "";
            break;
        };
        let name = &after[..j];
        if placeholders(&rest[i..i + j + 2]).is_empty() {
            out.push('{');
            rest = after;
            continue;
        }
        let v = vars.get(name, record)?;
        if path {
            out.extend(url::form_urlencoded::byte_serialize(v.as_bytes()).map(|s| {
                // A path segment: spaces as %20, not +.
                if s == "+" { "%20" } else { s }
            }));
        } else {
            out.push_str(&v);
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn fill_json(v: &Value, vars: &Vars<'_>, record: Option<&Value>) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(fill(s, vars, record, false)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| fill_json(x, vars, record))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => {
            let mut m = serde_json::Map::new();
            for (k, x) in o {
                // A cursor field is left out of the first page.
                if let Value::String(s) = x
                    && s == "{cursor}"
                    && vars.cursor.is_none()
                {
                    continue;
                }
                m.insert(k.clone(), fill_json(x, vars, record)?);
            }
            Value::Object(m)
        }
        other => other.clone(),
    })
}

/// What a request does in an HTTP system (or, `dry`, would do).
pub async fn run(
    target: &Target<'_>,
    kind: Kind,
    payload: &Payload,
    dry: bool,
) -> Result<(Vec<TableOutcome>, Vec<TableRows>), String> {
    let c = target.connector;
    let vars = Vars {
        identifiers: &payload.identifiers,
        params: &target.config.params,
        cursor: None,
    };
    let table = c.name.clone();
    if !payload.identifiers.contains_key(&c.identifier) {
        return Ok((
            vec![TableOutcome {
                table,
                action: "none".into(),
                note: Some(format!("the subject has no {}", c.identifier.as_str())),
                ..Default::default()
            }],
            vec![],
        ));
    }
    let records = target.find(&vars).await?;
    let n = records.len() as i64;
    let mut outcome = TableOutcome {
        table: table.clone(),
        rows: n,
        ..Default::default()
    };
    let mut collected = Vec::new();
    match kind {
        Kind::Access | Kind::Portability => {
            outcome.action = "read".into();
            if !dry {
                collected.push(TableRows {
                    table,
                    columns: c.fields.clone(),
                    rows: records,
                });
            }
        }
        Kind::Erasure => {
            let Some(erase) = &c.erase else {
                outcome.action = "none".into();
                outcome.note = Some("the connector does not erase".into());
                return Ok((vec![outcome], collected));
            };
            outcome.action = erase.action.clone();
            if !dry && n > 0 {
                if erase.per_record {
                    for r in &records {
                        target.call(&erase.call, &vars, Some(r)).await?;
                    }
                } else {
                    target.call(&erase.call, &vars, None).await?;
                }
            }
        }
        _ => {
            outcome.action = "none".into();
            outcome.rows = 0;
            outcome.note = Some("not carried out through this connector".into());
        }
    }
    Ok((vec![outcome], collected))
}

/// Set the subject's consent in the system: opt in (`granted`) or out.
pub async fn set_consent(
    target: &Target<'_>,
    identifiers: &BTreeMap<IdentifierKind, String>,
    granted: bool,
) -> Result<i64, String> {
    let Some(k) = &target.connector.consent else {
        return Err("the connector sets no consent".into());
    };
    if !identifiers.contains_key(&target.connector.identifier) {
        return Ok(0);
    }
    let vars = Vars {
        identifiers,
        params: &target.config.params,
        cursor: None,
    };
    let call = if granted { &k.opt_in } else { &k.opt_out };
    Ok(target.call(call, &vars, None).await?.map_or(0, |_| 1))
}

/// Check a system: it answers, the credentials are taken, and finding a
/// person nobody has registered works (nothing found is fine).
pub async fn test(target: &Target<'_>) -> Result<usize, String> {
    let probe: BTreeMap<IdentifierKind, String> = [
        (
            IdentifierKind::Email,
            "yinyom-probe@example.invalid".to_string(),
        ),
        (IdentifierKind::Phone, "+66000000000".to_string()),
        (IdentifierKind::CustomerId, "yinyom-probe".to_string()),
        (IdentifierKind::LineId, "Uyinyomprobe".to_string()),
        (IdentifierKind::Subject, "yinyom-probe".to_string()),
    ]
    .into();
    for p in &target.connector.params {
        if !target.config.params.contains_key(p) {
            return Err(format!("parameter {p} is not set"));
        }
    }
    let vars = Vars {
        identifiers: &probe,
        params: &target.config.params,
        cursor: None,
    };
    target.find(&vars).await.map(|r| r.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_templates_parse() {
        for (n, t) in BUILT_IN {
            let c = parse(t).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(&c.name, n);
        }
    }

    #[test]
    fn unknown_placeholders_are_refused() {
        let t = BUILT_IN[0].1.replace("{email_md5}", "{email_sha}");
        assert!(parse(&t).unwrap_err().contains("email_sha"));
    }

    #[test]
    fn paths_encode_values_and_md5_is_mailchimps_hash() {
        let ids = BTreeMap::from([(
            IdentifierKind::Email,
            "Urist.McVankab@FreddieMacSendsMail.com".into(),
        )]);
        let params = BTreeMap::from([("list_id".to_string(), "a/b".to_string())]);
        let vars = Vars {
            identifiers: &ids,
            params: &params,
            cursor: None,
        };
        let p = fill("/lists/{list_id}/members/{email_md5}", &vars, None, true).unwrap();
        // MD5 of the lower-case address.
        assert_eq!(p, "/lists/a%2Fb/members/22856b5dcec586bbd84af3e6b855f6cb");
    }

    #[test]
    fn inner_addresses() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(inner(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "2606:4700::1111"] {
            assert!(!inner(a.parse().unwrap()), "{a}");
        }
    }
}
