//! IAB TCF v2.2 and GPP for the website banner.
//!
//! A tenant that sells ads turns TCF on with
//! `PATCH /v1/tenant {"banner": {"notice": KEY, "tcf": {"cmp_id": N, "vendor_list_url": URL}}}`.
//! The server fetches the Global Vendor List from that URL (checked, kept
//! per version in `tcf_vendor_lists`, refreshed daily) and serves it from
//! our own origin (`/sdk/v1/tcf/vendor-list`), as the framework requires of
//! CMPs. The banner then loads `/sdk/tcf.js` — only for these tenants, so
//! everyone else's banner stays small — which draws the two TCF layers,
//! answers `__tcfapi` and `__gpp`, writes `euconsent-v2`, and records the
//! choice with the TC string as evidence. Here the server checks that
//! string against the choice (`check_submission`): a tenant purpose mapped
//! from TCF purposes is granted exactly when the string consents to all of
//! them, so our decisions and what vendors are told never disagree.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use yinyom_core::consent::Action;
use yinyom_core::tcf::{self, TcString};
use yinyom_core::time;

use crate::api::extract::Query;
use crate::api::problem::{Problem, ProblemBody};
use crate::app::App;
use crate::model::BannerSite;
use crate::store::StoredVendorList;

/// The CMP script, as written: plain JS, no build step.
const TCF_JS: &str = include_str!("../../web/sdk/tcf.js");

/// Largest vendor list fetched (the real GVL is about 1 MB).
const MAX_VENDOR_LIST: usize = 8 * 1024 * 1024;

/// How old the newest stored list may get before it is fetched again (the
/// IAB publishes a new version weekly).
const REFRESH_AFTER: time::Micros = 24 * 3600 * 1_000_000;

/// A tenant's TCF settings (`banner.tcf`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TcfSettings {
    /// The CMP id the IAB registered (2-4095), written into every TC string.
    pub cmp_id: u16,
    /// The CMP version written into TC strings (1-4095).
    #[serde(default = "one")]
    pub cmp_version: u16,
    /// Where the server fetches the Global Vendor List (v3 format) from.
    pub vendor_list_url: String,
    /// The publisher's country (two letters; `AA` unknown).
    #[serde(default = "unknown_country")]
    pub publisher_cc: String,
    /// TCF purpose id (1-11) → the tenant's own purpose it stands for.
    /// A tenant purpose is granted exactly when every TCF purpose mapped to
    /// it has consent in the TC string.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub purposes: BTreeMap<u8, String>,
    /// The vendors the publisher works with (GVL ids); absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendors: Option<Vec<u16>>,
}

fn one() -> u16 {
    1
}

fn unknown_country() -> String {
    "AA".into()
}

/// GPP (`banner.gpp`): which sections the GPP string carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GppSettings {
    /// `tcfeuv2` and/or `usnat`.
    pub sections: Vec<String>,
}

pub const GPP_SECTIONS: [&str; 2] = ["tcfeuv2", "usnat"];

/// Check `banner.tcf` and `banner.gpp` of a `PATCH /v1/tenant`, and fetch
/// and store the vendor list (a URL that does not answer with a v3 list is
/// refused now, not discovered by visitors).
pub async fn configure(
    app: &App,
    tenant: &str,
    tcf: Option<&TcfSettings>,
    gpp: Option<&GppSettings>,
) -> Result<(), Problem> {
    if let Some(g) = gpp {
        if g.sections.is_empty() {
            return Err(Problem::validation(
                "banner.gpp.sections",
                "list tcfeuv2 and/or usnat",
            ));
        }
        for (i, s) in g.sections.iter().enumerate() {
            if !GPP_SECTIONS.contains(&s.as_str()) {
                return Err(Problem::validation(
                    format!("banner.gpp.sections/{i}"),
                    "must be tcfeuv2 or usnat",
                ));
            }
        }
        if tcf.is_none() {
            return Err(Problem::validation(
                "banner.gpp",
                "GPP is served by the TCF script: configure banner.tcf too",
            ));
        }
    }
    let Some(t) = tcf else { return Ok(()) };
    let f = |k: &str| format!("banner.tcf.{k}");
    if !(2..=4095).contains(&t.cmp_id) {
        return Err(Problem::validation(
            f("cmp_id"),
            "must be the IAB's CMP id, 2-4095",
        ));
    }
    if !(1..=4095).contains(&t.cmp_version) {
        return Err(Problem::validation(f("cmp_version"), "must be 1-4095"));
    }
    if t.publisher_cc.len() != 2 || !t.publisher_cc.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Problem::validation(
            f("publisher_cc"),
            "must be two capital letters (ISO 3166-1 alpha-2, or AA)",
        ));
    }
    if !(t.vendor_list_url.starts_with("https://") || t.vendor_list_url.starts_with("http://"))
        || t.vendor_list_url.len() > 2000
    {
        return Err(Problem::validation(
            f("vendor_list_url"),
            "must be an http(s) URL",
        ));
    }
    let bad_purpose = app
        .view
        .read(tenant, |tv| {
            t.purposes.iter().find_map(|(id, key)| {
                if !(1..=11).contains(id) {
                    return Some((*id, "TCF v2.2 has purposes 1-11".to_string()));
                }
                match tv.purposes.get(key) {
                    Some(p) if p.banner.is_some() && p.requires_consent() => None,
                    _ => Some((
                        *id,
                        format!("{key:?} is not a consent category of the banner"),
                    )),
                }
            })
        })
        .flatten();
    if let Some((id, why)) = bad_purpose {
        return Err(Problem::validation(f(&format!("purposes.{id}")), why));
    }
    let list = fetch(&t.vendor_list_url)
        .await
        .map_err(|e| Problem::validation(f("vendor_list_url"), e))?;
    if let Some(vendors) = &t.vendors
        && let Some(v) = vendors
            .iter()
            .find(|v| list.1.vendors.binary_search(v).is_err())
    {
        return Err(Problem::validation(
            f("vendors"),
            format!("vendor {v} is not in the vendor list"),
        ));
    }
    app.store.put_vendor_list(tenant, &list.0).await?;
    forget(tenant);
    Ok(())
}

/// Fetch and check a vendor list.
async fn fetch(url: &str) -> Result<(StoredVendorList, tcf::VendorListSummary), String> {
    let uri: axum::http::Uri = url.parse().map_err(|_| "not a valid URL".to_string())?;
    let req = axum::http::Request::get(uri)
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "yinyom-cmp")
        .body(http_body_util::Full::new(axum::body::Bytes::new()))
        .map_err(|e| e.to_string())?;
    let client = crate::dispatch::https_client();
    let res = tokio::time::timeout(Duration::from_secs(15), client.request(req))
        .await
        .map_err(|_| "the vendor list did not answer within 15 s".to_string())?
        .map_err(|e| format!("could not fetch the vendor list: {e}"))?;
    if res.status() != StatusCode::OK {
        return Err(format!("the vendor list answered HTTP {}", res.status()));
    }
    let body = http_body_util::Limited::new(res.into_body(), MAX_VENDOR_LIST)
        .collect()
        .await
        .map_err(|e| format!("could not read the vendor list: {e}"))?
        .to_bytes();
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| format!("the vendor list is not JSON: {e}"))?;
    let summary =
        tcf::check_vendor_list(&value).map_err(|e| format!("not a v3 vendor list: {e}"))?;
    Ok((
        StoredVendorList {
            version: summary.version,
            url: url.to_string(),
            fetched_at: time::now(),
            // Stored as compact JSON: the list as fetched, less whitespace.
            body: value.to_string(),
        },
        summary,
    ))
}

/// What the banner's config says about TCF (`None`: not enabled).
pub fn banner_config(b: &BannerSite) -> Option<Value> {
    let t = b.tcf.as_ref()?;
    Some(json!({
        "cmp_id": t.cmp_id,
        "cmp_version": t.cmp_version,
        "publisher_cc": t.publisher_cc,
        "purposes": t.purposes,
        "script": "/sdk/tcf.js",
        "vendor_list": format!("/sdk/v1/tcf/vendor-list?site_key={}", b.site_key),
        "gpp": b.gpp.as_ref().map(|g| g.sections.clone()).unwrap_or_default(),
    }))
}

/// Check a banner submission's TC string against its actions (see the
/// module's doc). `ui` is the control used: GPC's automatic opt-out carries
/// no TC string.
pub fn check_submission(
    b: &BannerSite,
    actions: &[(String, Action)],
    tc_string: Option<&str>,
    gpp_string: Option<&str>,
    ui: Option<&str>,
) -> Result<(), Problem> {
    let Some(t) = &b.tcf else {
        let field = match (tc_string, gpp_string) {
            (Some(_), _) => "evidence.tc_string",
            (None, Some(_)) => "evidence.gpp_string",
            (None, None) => return Ok(()),
        };
        return Err(Problem::validation(
            field,
            "this banner does not use the IAB TCF or GPP",
        ));
    };
    if let Some(g) = gpp_string
        && (g.len() > 8192
            || !g
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.~".contains(&c)))
    {
        return Err(Problem::validation(
            "evidence.gpp_string",
            "must be a GPP string (base64url sections joined by ~)",
        ));
    }
    let mapped: BTreeMap<&str, Vec<u8>> =
        t.purposes.iter().fold(BTreeMap::new(), |mut m, (id, key)| {
            m.entry(key.as_str()).or_insert_with(Vec::new).push(*id);
            m
        });
    let Some(s) = tc_string else {
        let touches = actions.iter().any(|(p, _)| mapped.contains_key(p.as_str()));
        if touches && ui != Some("gpc") {
            return Err(Problem::validation(
                "evidence.tc_string",
                "purposes mapped to TCF purposes are recorded with the TC string",
            ));
        }
        return Ok(());
    };
    let tc = TcString::decode(s)
        .map_err(|e| Problem::validation("evidence.tc_string", e.to_string()))?;
    if tc.core.cmp_id != t.cmp_id {
        return Err(Problem::validation(
            "evidence.tc_string",
            format!(
                "the TC string names CMP {}, the banner is CMP {}",
                tc.core.cmp_id, t.cmp_id
            ),
        ));
    }
    for (key, ids) in &mapped {
        let consented = ids.iter().all(|id| tc.purpose_consent(*id));
        let Some((i, (_, action))) = actions.iter().enumerate().find(|(_, (p, _))| p == key) else {
            return Err(Problem::validation(
                "actions",
                format!("{key:?} stands for TCF purposes {ids:?}: record it with the TC string"),
            ));
        };
        if (*action == Action::Grant) != consented {
            return Err(Problem::validation(
                format!("actions/{i}/action"),
                format!(
                    "the TC string {} TCF purposes {ids:?}, which {key:?} stands for",
                    if consented {
                        "consents to"
                    } else {
                        "does not consent to all of"
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// A TC string names the vendor list it was made under: it must be one
/// this server fetched for the tenant (the banner only ever gets those).
/// Strings that do not decode are left to [`check_submission`].
pub async fn check_list_version(
    app: &App,
    tenant: &str,
    tc_string: Option<&str>,
) -> Result<(), Problem> {
    let Some(tc) = tc_string.and_then(|s| TcString::decode(s).ok()) else {
        return Ok(());
    };
    let v = tc.core.vendor_list_version;
    if app
        .store
        .vendor_list(tenant, Some(u32::from(v)))
        .await?
        .is_none()
    {
        return Err(Problem::validation(
            "evidence.tc_string",
            format!("the TC string names vendor list version {v}, which this banner never served"),
        ));
    }
    Ok(())
}

/// The subject's TCF state for `GET /v1/subjects/{id}`: the newest TC
/// string in their evidence, decoded, with the tenant purposes it grants.
/// Only for tenants with TCF on: others pay no extra read.
pub async fn subject_state(app: &App, tenant: &str, uid: &str) -> Result<Option<Value>, Problem> {
    let Some(map) = app
        .view
        .read(tenant, |tv| {
            tv.tenant
                .banner
                .as_ref()
                .and_then(|b| b.tcf.as_ref())
                .map(|t| t.purposes.clone())
        })
        .flatten()
    else {
        return Ok(None);
    };
    let evidence = app.store.evidence(tenant, uid).await?;
    let Some((seq, s)) = evidence.iter().rev().find_map(|(seq, e)| {
        e.get("tc_string")
            .and_then(Value::as_str)
            .map(|s| (*seq, s.to_string()))
    }) else {
        return Ok(None);
    };

    Ok(Some(match TcString::decode(&s) {
        Ok(tc) => {
            let mut purposes: BTreeMap<&str, bool> = BTreeMap::new();
            for (id, key) in &map {
                let e = purposes.entry(key.as_str()).or_insert(true);
                *e = *e && tc.purpose_consent(*id);
            }
            let gpp = evidence
                .get(&seq)
                .and_then(|e| e.get("gpp_string"))
                .cloned();
            json!({"seq": seq, "tc_string": s, "gpp_string": gpp, "decoded": tc, "purposes": purposes})
        }
        Err(e) => json!({"seq": seq, "tc_string": s, "error": e.to_string()}),
    }))
}

// ---- serving -------------------------------------------------------------

/// The newest list of each tenant as served (filtered to the tenant's
/// vendors), and the tenants whose refresh is under way.
#[derive(Default)]
struct Cache {
    lists: HashMap<String, Arc<Served>>,
    refreshing: HashSet<String>,
}

struct Served {
    fetched_at: time::Micros,
    vendors: Option<Vec<u16>>,
    json: axum::body::Bytes,
    etag: String,
}

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    static CACHE: std::sync::LazyLock<Mutex<Cache>> = std::sync::LazyLock::new(Default::default);
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

fn forget(tenant: &str) {
    cache().lists.remove(tenant);
}

/// The list as the banner gets it: the publisher's vendors only.
fn served(list: &StoredVendorList, vendors: Option<&Vec<u16>>) -> Result<Served, Problem> {
    let mut v: Value = serde_json::from_str(&list.body).map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "stored vendor list unreadable",
        )
    })?;
    if let (Some(keep), Some(all)) = (vendors, v.get_mut("vendors").and_then(Value::as_object_mut))
    {
        all.retain(|k, _| k.parse::<u16>().is_ok_and(|id| keep.contains(&id)));
    }
    let json = v.to_string();
    use sha2::Digest;
    let h = sha2::Sha256::digest(json.as_bytes());
    Ok(Served {
        fetched_at: list.fetched_at,
        vendors: vendors.cloned(),
        etag: format!("\"{}\"", hex::encode(&h[..12])),
        json: json.into(),
    })
}

#[derive(Deserialize, IntoParams)]
pub struct VendorListQuery {
    pub site_key: String,
    /// A stored version (default: the newest).
    pub version: Option<u32>,
}

/// The tenant's Global Vendor List, from our own origin.
#[utoipa::path(get, path = "/sdk/v1/tcf/vendor-list", tag = "banner", params(VendorListQuery),
    responses((status = 200, body = Object), (status = 404, body = ProblemBody)))]
pub async fn vendor_list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<VendorListQuery>,
) -> Response {
    let origin = headers.get(header::ORIGIN).cloned();
    let mut res = match vendor_list_body(&app, &headers, &q).await {
        Ok(s) => {
            let fresh = headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|t| t.trim() == s.etag));
            let etag =
                HeaderValue::from_str(&s.etag).unwrap_or(HeaderValue::from_static("\"gvl\""));
            let common = [
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=3600"),
                ),
                (header::ETAG, etag),
            ];
            if fresh {
                (StatusCode::NOT_MODIFIED, common).into_response()
            } else {
                (
                    common,
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    s.json.clone(),
                )
                    .into_response()
            }
        }
        Err(p) => p.into_response(),
    };
    super::sdk::cors(&mut res, origin.as_ref());
    res
}

async fn vendor_list_body(
    app: &Arc<App>,
    headers: &HeaderMap,
    q: &VendorListQuery,
) -> Result<Arc<Served>, Problem> {
    let tenant = super::sdk::site(app, &q.site_key, headers.get(header::ORIGIN))?;
    let settings = app
        .view
        .read(&tenant, |tv| {
            tv.tenant.banner.as_ref().and_then(|b| b.tcf.clone())
        })
        .flatten()
        .ok_or_else(|| Problem::not_found("this banner does not use the IAB TCF"))?;
    let none = || Problem::not_found("no vendor list has been fetched for this banner");
    if let Some(v) = q.version {
        let list = app
            .store
            .vendor_list(&tenant, Some(v))
            .await?
            .ok_or_else(none)?;
        return Ok(Arc::new(served(&list, settings.vendors.as_ref())?));
    }
    let hit = cache()
        .lists
        .get(&tenant)
        .filter(|s| s.vendors == settings.vendors)
        .cloned();
    let s = match hit {
        Some(s) => s,
        None => {
            let list = app
                .store
                .vendor_list(&tenant, None)
                .await?
                .ok_or_else(none)?;
            let s = Arc::new(served(&list, settings.vendors.as_ref())?);
            cache().lists.insert(tenant.clone(), s.clone());
            s
        }
    };
    if time::now() - s.fetched_at > REFRESH_AFTER && cache().refreshing.insert(tenant.clone()) {
        let app = app.clone();
        tokio::spawn(async move {
            match fetch(&settings.vendor_list_url).await {
                Ok((list, _)) => match app.store.put_vendor_list(&tenant, &list).await {
                    Ok(()) => forget(&tenant),
                    Err(e) => tracing::warn!(error = %e, "vendor list refresh: storage"),
                },
                Err(e) => tracing::warn!(tenant, error = %e, "vendor list refresh failed"),
            }
            cache().refreshing.remove(&tenant);
        });
    }
    Ok(s)
}

/// The script as served: (source, gzipped, ETag), made once per source.
fn script_bytes() -> super::sdk::Served {
    static CACHE: Mutex<Option<super::sdk::Served>> = Mutex::new(None);
    #[cfg(debug_assertions)]
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/web/sdk/tcf.js"))
        .unwrap_or_else(|_| TCF_JS.to_string());
    #[cfg(not(debug_assertions))]
    let src = TCF_JS.to_string();
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(hit) = c.as_ref().filter(|h| h.0 == src) {
        return hit.clone();
    }
    use sha2::Digest;
    let h = sha2::Sha256::digest(src.as_bytes());
    let gz = super::sdk::gzip(&src);
    let made = Arc::new((src, gz, format!("\"{}\"", hex::encode(&h[..12]))));
    *c = Some(made.clone());
    made
}

/// `GET /sdk/tcf.js`: the TCF/GPP part of the banner, loaded by
/// `yinyom.js` only for tenants that enable TCF.
pub async fn script(headers: HeaderMap) -> Response {
    super::sdk::serve_js(&headers, &script_bytes())
}

/// Gzipped size of the CMP script (for BENCHMARKS.md and its test).
pub fn script_gzipped_len() -> usize {
    script_bytes().1.len()
}

/// Routes of the TCF part of the banner.
pub fn routes() -> axum::Router<Arc<App>> {
    use axum::routing::{MethodFilter, get};
    axum::Router::new().route("/sdk/tcf.js", get(script)).route(
        "/sdk/v1/tcf/vendor-list",
        get(vendor_list).on(MethodFilter::OPTIONS, super::sdk::preflight),
    )
}
