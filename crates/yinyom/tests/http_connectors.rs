//! HTTP connectors end to end (issue 14, part 3): the shipped Mailchimp and
//! HubSpot templates against a loopback server that speaks the documented
//! requests of those APIs (it checks method, path, credentials and body and
//! keeps its own members and contacts), an OAuth2 client-credentials
//! connector written out through the API, and the outbound allow-list.
//! Yinyom's own store runs on SQLite and PostgreSQL.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use base64::Engine;
use serde_json::{Value, json};

use common::{Backend, TestApp, eventually};

const EMAIL: &str = "Malee.Saas@Example.com";
const OTHER: &str = "somchai.saas@example.com";
const LIST: &str = "list42";
const MC_KEY: &str = "mc-key-0123456789-us21";
const HS_TOKEN: &str = "pat-na1-secret";

/// What the fake SaaS holds and saw.
#[derive(Default)]
struct Saas {
    /// Mailchimp: subscriber hash → member.
    members: BTreeMap<String, Value>,
    /// HubSpot: contact id → contact.
    contacts: BTreeMap<String, Value>,
    /// HubSpot subscription (email, subscription id) → subscribed.
    subscriptions: BTreeMap<(String, String), bool>,
    /// Every call: "METHOD path".
    calls: Vec<String>,
    /// Refused calls (wrong credentials or body): the reason.
    refused: Vec<String>,
    tokens_issued: usize,
    /// While true, every call answers 503.
    down: bool,
}

type Shared = Arc<Mutex<Saas>>;

fn md5_hex(s: &str) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(s.to_lowercase().as_bytes()))
}

fn basic_ok(h: &HeaderMap) -> bool {
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("yinyom:{MC_KEY}"))
    );
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(want.as_str())
}

fn bearer(h: &HeaderMap) -> Option<String> {
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

fn refuse(s: &mut Saas, why: &str) -> axum::response::Response {
    s.refused.push(why.to_string());
    (StatusCode::UNAUTHORIZED, Json(json!({"title": why}))).into_response()
}

use axum::Json;

fn down(s: &Saas) -> Option<axum::response::Response> {
    s.down
        .then(|| (StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response())
}

// Mailchimp Marketing API v3 -------------------------------------------------

async fn mc_get(
    State(saas): State<Shared>,
    Path((list, hash)): Path<(String, String)>,
    h: HeaderMap,
) -> axum::response::Response {
    let mut s = saas.lock().unwrap();
    s.calls
        .push(format!("GET /3.0/lists/{list}/members/{hash}"));
    if let Some(r) = down(&s) {
        return r;
    }
    if !basic_ok(&h) {
        return refuse(&mut s, "mailchimp: bad basic auth");
    }
    match s.members.get(&hash).filter(|_| list == LIST) {
        Some(m) => Json(m.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"title": "Resource Not Found", "status": 404})),
        )
            .into_response(),
    }
}

async fn mc_patch(
    State(saas): State<Shared>,
    Path((list, hash)): Path<(String, String)>,
    h: HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let mut s = saas.lock().unwrap();
    s.calls
        .push(format!("PATCH /3.0/lists/{list}/members/{hash}"));
    if !basic_ok(&h) {
        return refuse(&mut s, "mailchimp: bad basic auth");
    }
    let status = body["status"].as_str().unwrap_or_default().to_string();
    if !matches!(status.as_str(), "subscribed" | "unsubscribed") {
        return refuse(&mut s, "mailchimp: bad status");
    }
    match s.members.get_mut(&hash) {
        Some(m) => {
            m["status"] = json!(status);
            Json(m.clone()).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn mc_delete_permanent(
    State(saas): State<Shared>,
    Path((list, hash)): Path<(String, String)>,
    h: HeaderMap,
) -> axum::response::Response {
    let mut s = saas.lock().unwrap();
    s.calls.push(format!(
        "POST /3.0/lists/{list}/members/{hash}/actions/delete-permanent"
    ));
    if !basic_ok(&h) {
        return refuse(&mut s, "mailchimp: bad basic auth");
    }
    match s.members.remove(&hash) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

// HubSpot CRM v3 ---------------------------------------------------------------

/// One contact per page, to walk `paging.next.after`.
async fn hs_search(
    State(saas): State<Shared>,
    h: HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let mut s = saas.lock().unwrap();
    s.calls.push("POST /crm/v3/objects/contacts/search".into());
    if let Some(r) = down(&s) {
        return r;
    }
    if bearer(&h).as_deref() != Some(HS_TOKEN) {
        return refuse(&mut s, "hubspot: bad bearer");
    }
    let filter = &body["filterGroups"][0]["filters"][0];
    if filter["propertyName"] != "email" || filter["operator"] != "EQ" {
        return refuse(&mut s, "hubspot: bad filter");
    }
    let email = filter["value"].as_str().unwrap_or_default().to_lowercase();
    let after: usize = body["after"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let found: Vec<Value> = s
        .contacts
        .values()
        .filter(|c| c["properties"]["email"].as_str().map(str::to_lowercase) == Some(email.clone()))
        .cloned()
        .collect();
    let page: Vec<Value> = found.iter().skip(after).take(1).cloned().collect();
    let mut answer = json!({"total": found.len(), "results": page});
    if after + 1 < found.len() {
        answer["paging"] = json!({"next": {"after": (after + 1).to_string()}});
    }
    Json(answer).into_response()
}

async fn hs_delete(
    State(saas): State<Shared>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> axum::response::Response {
    let mut s = saas.lock().unwrap();
    s.calls
        .push(format!("DELETE /crm/v3/objects/contacts/{id}"));
    if bearer(&h).as_deref() != Some(HS_TOKEN) {
        return refuse(&mut s, "hubspot: bad bearer");
    }
    match s.contacts.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn hs_preference(
    State(saas): State<Shared>,
    Path(verb): Path<String>,
    h: HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let mut s = saas.lock().unwrap();
    s.calls
        .push(format!("POST /communication-preferences/v3/{verb}"));
    if bearer(&h).as_deref() != Some(HS_TOKEN) {
        return refuse(&mut s, "hubspot: bad bearer");
    }
    let (Some(email), Some(sub)) = (
        body["emailAddress"].as_str(),
        body["subscriptionId"].as_str(),
    ) else {
        return refuse(&mut s, "hubspot: bad preference body");
    };
    let on = match verb.as_str() {
        "subscribe" => true,
        "unsubscribe" => false,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    s.subscriptions
        .insert((email.to_string(), sub.to_string()), on);
    Json(json!({"id": sub, "status": if on { "SUBSCRIBED" } else { "NOT_SUBSCRIBED" }}))
        .into_response()
}

// An OAuth2 CRM of our own making ---------------------------------------------

async fn token(State(saas): State<Shared>, h: HeaderMap, body: String) -> axum::response::Response {
    let mut s = saas.lock().unwrap();
    s.calls.push("POST /oauth/token".into());
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("client-1:s3cret")
    );
    if h.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str())
        || !body.contains("grant_type=client_credentials")
    {
        return refuse(&mut s, "oauth: bad client credentials");
    }
    s.tokens_issued += 1;
    Json(json!({"access_token": format!("tok-{}", s.tokens_issued), "token_type": "bearer", "expires_in": 3600}))
        .into_response()
}

async fn people(
    State(saas): State<Shared>,
    h: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>,
) -> axum::response::Response {
    let mut s = saas.lock().unwrap();
    s.calls.push("GET /api/people".into());
    if !bearer(&h).is_some_and(|t| t.starts_with("tok-")) {
        return refuse(&mut s, "oauth crm: no token");
    }
    let phone = q.get("phone").cloned().unwrap_or_default();
    let hits: Vec<Value> = if phone == "+66898765432" {
        vec![json!({"id": 7, "phone": phone, "tier": "gold"})]
    } else {
        vec![]
    };
    Json(json!({"data": {"people": hits}})).into_response()
}

/// Start the fake SaaS on a loopback port: its base URL and state.
async fn saas() -> (String, Shared) {
    let shared: Shared = Arc::default();
    {
        let mut s = shared.lock().unwrap();
        for (email, name) in [(EMAIL, "Malee"), (OTHER, "Somchai")] {
            s.members.insert(
                md5_hex(email),
                json!({"id": md5_hex(email), "email_address": email.to_lowercase(),
                       "status": "subscribed", "merge_fields": {"FNAME": name, "LNAME": "Saas"}}),
            );
        }
        // Two contacts carry our subject's address (one in another case).
        for (id, email) in [
            ("101", EMAIL.to_lowercase()),
            ("102", EMAIL.to_string()),
            ("201", OTHER.to_string()),
        ] {
            s.contacts.insert(
                id.to_string(),
                json!({"id": id, "properties": {"email": email, "firstname": "x"}, "archived": false}),
            );
        }
    }
    let app = axum::Router::new()
        .route(
            "/3.0/lists/{list}/members/{hash}",
            get(mc_get).patch(mc_patch),
        )
        .route(
            "/3.0/lists/{list}/members/{hash}/actions/delete-permanent",
            post(mc_delete_permanent),
        )
        .route("/crm/v3/objects/contacts/search", post(hs_search))
        .route("/crm/v3/objects/contacts/{id}", delete(hs_delete))
        .route("/communication-preferences/v3/{verb}", post(hs_preference))
        .route("/oauth/token", post(token))
        .route("/api/people", get(people))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://127.0.0.1:{}", addr.port()), shared)
}

fn config(allow_hosts: &[&str], allow_private: &[&str]) -> yinyom::app::Config {
    yinyom::app::Config {
        systems: yinyom::systems::SystemsConfig {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(300),
            http: yinyom::systems::http::HttpSettings {
                allow_hosts: allow_hosts.iter().map(|s| s.to_string()).collect(),
                allow_private: allow_private.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

/// Loopback is allowed explicitly, as a test must.
async fn app(backend: Backend) -> TestApp {
    TestApp::with_config(backend, config(&["127.0.0.1"], &["127.0.0.1"])).await
}

fn mailchimp(base: &str) -> Value {
    json!({"key": "mailchimp", "name": "Mailchimp", "kind": "http",
        "connector": {"template": "mailchimp", "params": {"dc": "us21", "list_id": LIST},
                      "purpose": "marketing.email"},
        "connection": {"url": base, "password": MC_KEY}})
}

fn hubspot(base: &str) -> Value {
    json!({"key": "crm", "name": "HubSpot", "kind": "http",
        "connector": {"template": "hubspot", "params": {"subscription_id": "7001"},
                      "purpose": "marketing.email"},
        "connection": {"url": base, "token": HS_TOKEN}})
}

async fn setup(t: &TestApp) {
    t.post(
        "/v1/purposes",
        json!({
            "key": "marketing.email",
            "names": { "th": "การตลาดทางอีเมล", "en": "Email marketing" },
            "basis": "consent", "channels": ["email"], "retention_days": 365,
        }),
    )
    .await;
    let (status, _, body) = t
        .request(
            Method::PUT,
            "/v1/subjects/malee",
            &t.owner,
            Some(json!({ "identifiers": { "email": EMAIL, "phone": "089 876 5432" } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn request(t: &TestApp, kind: &str) -> String {
    let r = t
        .post("/v1/requests", json!({"subject": "malee", "kind": kind}))
        .await;
    let id = r["id"].as_str().unwrap().to_string();
    act(t, &id, "verify").await;
    id
}

async fn act(t: &TestApp, id: &str, action: &str) {
    let (status, _, r) = t
        .request(
            Method::POST,
            &format!("/v1/requests/{id}/actions"),
            &t.owner,
            Some(json!({ "action": action })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{action}: {r}");
}

fn system<'a>(r: &'a Value, key: &str) -> &'a Value {
    r["systems"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["key"] == key))
        .unwrap_or_else(|| panic!("no system {key} in {r}"))
}

async fn completed(t: &TestApp, id: &str) -> Value {
    let path = format!("/v1/requests/{id}");
    let ok = eventually(Duration::from_secs(20), || async {
        t.get(&path).await["status"] == "completed"
    })
    .await;
    let r = t.get(&path).await;
    assert!(ok, "never completed: {r}");
    r
}

async fn the_templates_test_plan_and_erase(backend: Backend) {
    let t = app(backend).await;
    let (base, saas) = saas().await;
    setup(&t).await;
    let created = t.post("/v1/systems", mailchimp(&base)).await;
    assert_eq!(created["kind"], "http");
    assert_eq!(created["connector"]["definition"]["name"], "mailchimp");
    assert_eq!(created["connection"]["sealed"], true);
    assert!(!created.to_string().contains(MC_KEY), "{created}");
    t.post("/v1/systems", hubspot(&base)).await;
    for key in ["mailchimp", "crm"] {
        let test = t
            .post_ok(&format!("/v1/systems/{key}/test"), json!({}))
            .await;
        assert_eq!(test["ok"], true, "{key}: {test}");
    }
    // Wrong credentials: the test says so.
    let mut wrong = hubspot(&base);
    wrong["connection"]["token"] = json!("nope");
    wrong.as_object_mut().unwrap().remove("key");
    let (status, _, body) = t
        .request(Method::PUT, "/v1/systems/crm", &t.owner, Some(wrong))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let test = t.post_ok("/v1/systems/crm/test", json!({})).await;
    assert_eq!(test["ok"], false, "{test}");
    assert!(test.to_string().contains("401"), "{test}");
    let mut right = hubspot(&base);
    right.as_object_mut().unwrap().remove("key");
    t.request(Method::PUT, "/v1/systems/crm", &t.owner, Some(right))
        .await;

    let id = request(&t, "erasure").await;
    let plan = t.get(&format!("/v1/requests/{id}/plan")).await;
    let rows = |key: &str| {
        plan["systems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == key)
            .map(|s| {
                (
                    s["action"].clone(),
                    s["tables"][0]["action"].clone(),
                    s["tables"][0]["rows"].clone(),
                )
            })
            .unwrap()
    };
    assert_eq!(
        rows("mailchimp"),
        (json!("run"), json!("delete"), json!(1)),
        "{plan}"
    );
    // Both HubSpot contacts, over two pages.
    assert_eq!(
        rows("crm"),
        (json!("run"), json!("delete"), json!(2)),
        "{plan}"
    );
    {
        let s = saas.lock().unwrap();
        assert_eq!(s.members.len(), 2, "the plan changed nothing");
        assert_eq!(s.contacts.len(), 3, "the plan changed nothing");
    }
    act(&t, &id, "complete").await;
    let r = completed(&t, &id).await;
    assert_eq!(system(&r, "mailchimp")["status"], "done");
    assert_eq!(system(&r, "mailchimp")["rows"], 1);
    assert_eq!(system(&r, "crm")["rows"], 2);
    let s = saas.lock().unwrap();
    assert!(
        s.refused.iter().all(|r| r.contains("bad bearer")),
        "{:?}",
        s.refused
    );
    assert!(!s.members.contains_key(&md5_hex(EMAIL)));
    assert!(
        s.members.contains_key(&md5_hex(OTHER)),
        "the other member stays"
    );
    assert_eq!(s.contacts.keys().collect::<Vec<_>>(), vec!["201"]);
    let hash = md5_hex(EMAIL);
    assert!(
        s.calls.contains(&format!(
            "POST /3.0/lists/{LIST}/members/{hash}/actions/delete-permanent"
        )),
        "{:?}",
        s.calls
    );
    assert!(
        s.calls
            .contains(&"DELETE /crm/v3/objects/contacts/101".to_string())
    );
    assert!(
        s.calls
            .contains(&"DELETE /crm/v3/objects/contacts/102".to_string())
    );
}

async fn access_bundle_holds_the_saas_records(backend: Backend) {
    let t = app(backend).await;
    let (base, _saas) = saas().await;
    setup(&t).await;
    t.post("/v1/systems", mailchimp(&base)).await;
    t.post("/v1/systems", hubspot(&base)).await;
    let id = request(&t, "access").await;
    act(&t, &id, "complete").await;
    completed(&t, &id).await;
    let (status, _, zip) = t
        .request_raw(
            Method::GET,
            &format!("/v1/requests/{id}/bundle"),
            Some(&t.owner),
            &[],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip.to_vec())).unwrap();
    let mut read = |name: &str| {
        let mut s = String::new();
        archive
            .by_name(name)
            .unwrap_or_else(|_| panic!("{name} missing"))
            .read_to_string(&mut s)
            .unwrap();
        s
    };
    let mc: Value = serde_json::from_str(&read("systems/mailchimp/mailchimp.json")).unwrap();
    assert_eq!(mc["rows"][0]["email_address"], EMAIL.to_lowercase());
    assert_eq!(mc["columns"]["/email_address"], "contact.email");
    let hs: Value = serde_json::from_str(&read("systems/crm/hubspot.json")).unwrap();
    assert_eq!(hs["rows"].as_array().unwrap().len(), 2, "{hs}");
    let csv = read("systems/crm/hubspot.csv");
    assert!(
        csv.contains("101") && csv.contains("102") && !csv.contains("201"),
        "{csv}"
    );
}

async fn consent_reaches_mailchimp_and_hubspot(backend: Backend) {
    let t = app(backend).await;
    let (base, saas) = saas().await;
    setup(&t).await;
    t.post("/v1/systems", mailchimp(&base)).await;
    t.post("/v1/systems", hubspot(&base)).await;
    t.post(
        "/v1/notices",
        json!({
            "key": "main",
            "texts": { "th": { "title": "ประกาศ", "body": "…" }, "en": { "title": "Notice", "body": "…" } },
            "purposes": ["marketing.email"],
        }),
    )
    .await;
    let record = |action: &str| {
        json!({"subject": "malee", "source": "web", "notice": { "key": "main", "version": 1 },
            "actions": [{"purpose": "marketing.email", "channel": "email", "action": action}]})
    };
    let hash = md5_hex(EMAIL);
    let state = |saas: &Shared| {
        let s = saas.lock().unwrap();
        (
            s.members[&hash]["status"].as_str().unwrap().to_string(),
            s.subscriptions
                .get(&(EMAIL.to_lowercase(), "7001".to_string()))
                .copied(),
        )
    };
    t.post("/v1/consents", record("grant")).await;
    let patched = format!("PATCH /3.0/lists/{LIST}/members/{hash}");
    // The grant reaches both: HubSpot subscribes, Mailchimp is patched.
    let ok = eventually(Duration::from_secs(10), || async {
        state(&saas) == ("subscribed".to_string(), Some(true))
            && saas.lock().unwrap().calls.contains(&patched)
    })
    .await;
    assert!(ok, "{:?} {:?}", state(&saas), saas.lock().unwrap().calls);
    t.post("/v1/consents", record("withdraw")).await;
    let ok = eventually(Duration::from_secs(10), || async {
        state(&saas) == ("unsubscribed".to_string(), Some(false))
    })
    .await;
    assert!(ok, "{:?} {:?}", state(&saas), saas.lock().unwrap().calls);
    let ok = eventually(Duration::from_secs(10), || async {
        let p = t.get("/v1/subjects/malee/systems").await;
        p.as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|x| x["status"] == "done"))
    })
    .await;
    assert!(ok, "{}", t.get("/v1/subjects/malee/systems").await);
    let s = saas.lock().unwrap();
    assert_eq!(s.members[&md5_hex(OTHER)]["status"], "subscribed");
    assert!(s.refused.is_empty(), "{:?}", s.refused);
}

const OAUTH_CONNECTOR: &str = r#"
name = "loyalty-crm"
base_url = "http://127.0.0.1:1"
identifier = "phone"

[auth]
type = "oauth2"
token_url = "TOKEN_URL"

[find]
path = "/api/people"
query = { phone = "{phone}" }
records = "/data/people"

[fields]
"/phone" = "contact.phone"
"/tier" = "behaviour.purchase"
"#;

async fn an_oauth2_connector_written_through_the_api(backend: Backend) {
    let t = app(backend).await;
    let (base, saas) = saas().await;
    setup(&t).await;
    let toml = OAUTH_CONNECTOR.replace("TOKEN_URL", &format!("{base}/oauth/token"));
    let body = json!({"key": "loyalty", "name": "Loyalty CRM", "kind": "http",
        "connector": {"toml": toml},
        "connection": {"url": base, "client_id": "client-1", "client_secret": "s3cret"}});
    t.post("/v1/systems", body).await;
    let test = t.post_ok("/v1/systems/loyalty/test", json!({})).await;
    assert_eq!(test["ok"], true, "{test}");
    let id = request(&t, "access").await;
    let plan = t.get(&format!("/v1/requests/{id}/plan")).await;
    assert_eq!(plan["systems"][0]["tables"][0]["rows"], 1, "{plan}");
    act(&t, &id, "complete").await;
    let r = completed(&t, &id).await;
    assert_eq!(system(&r, "loyalty")["rows"], 1);
    {
        let s = saas.lock().unwrap();
        // One token served the test, the plan and the run.
        assert_eq!(s.tokens_issued, 1, "{:?}", s.calls);
        assert!(s.refused.is_empty(), "{:?}", s.refused);
    }
    // A bad connector file is refused, naming what is wrong.
    let bad = json!({"key": "bad", "name": "Bad", "kind": "http",
        "connector": {"toml": OAUTH_CONNECTOR.replace("{phone}", "{passport}")}});
    let (status, _, body) = t
        .request(Method::POST, "/v1/systems", &t.owner, Some(bad))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("passport"), "{body}");
    let missing = json!({"key": "mc2", "name": "MC", "kind": "http",
        "connector": {"template": "mailchimp", "params": {"dc": "us21"}}});
    let (status, _, body) = t
        .request(Method::POST, "/v1/systems", &t.owner, Some(missing))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("list_id"), "{body}");
}

async fn outbound_calls_honour_the_allow_list(backend: Backend) {
    let (base, saas) = saas().await;
    // Loopback is listed as a host but not allowed as a private address.
    let t = TestApp::with_config(backend, config(&["127.0.0.1"], &[])).await;
    setup(&t).await;
    t.post("/v1/systems", hubspot(&base)).await;
    let test = t.post_ok("/v1/systems/crm/test", json!({})).await;
    assert_eq!(test["ok"], false, "{test}");
    assert!(test.to_string().contains("private or loopback"), "{test}");
    // Allowed as private, but not listed: a base URL given in place of the
    // template's is refused.
    let t = TestApp::with_config(backend, config(&[], &["127.0.0.1"])).await;
    setup(&t).await;
    t.post("/v1/systems", hubspot(&base)).await;
    let test = t.post_ok("/v1/systems/crm/test", json!({})).await;
    assert_eq!(test["ok"], false, "{test}");
    assert!(test.to_string().contains("allow-list"), "{test}");
    // A name that resolves to loopback is refused by the resolver too.
    let t = TestApp::with_config(backend, config(&["localhost"], &[])).await;
    setup(&t).await;
    let port = base.rsplit(':').next().unwrap();
    t.post("/v1/systems", hubspot(&format!("http://localhost:{port}")))
        .await;
    let test = t.post_ok("/v1/systems/crm/test", json!({})).await;
    assert_eq!(test["ok"], false, "{test}");
    assert!(test.to_string().contains("private or loopback"), "{test}");
    assert!(saas.lock().unwrap().calls.is_empty(), "no call went out");
}

async fn a_saas_that_is_down_is_retried(backend: Backend) {
    let t = app(backend).await;
    let (base, saas) = saas().await;
    setup(&t).await;
    t.post("/v1/systems", mailchimp(&base)).await;
    saas.lock().unwrap().down = true;
    let id = request(&t, "erasure").await;
    act(&t, &id, "complete").await;
    let path = format!("/v1/requests/{id}");
    let ok = eventually(Duration::from_secs(20), || async {
        system(&t.get(&path).await, "mailchimp")["attempts"]
            .as_i64()
            .unwrap_or(0)
            >= 2
    })
    .await;
    let r = t.get(&path).await;
    assert!(ok, "{r}");
    assert_eq!(r["status"], "in_progress");
    assert!(
        system(&r, "mailchimp")["error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{r}"
    );
    saas.lock().unwrap().down = false;
    let r = completed(&t, &id).await;
    assert_eq!(system(&r, "mailchimp")["rows"], 1);
    assert!(!saas.lock().unwrap().members.contains_key(&md5_hex(EMAIL)));
}

// The console ----------------------------------------------------------------

/// Log an admin in through the console's form: the session cookie.
async fn console_login(t: &TestApp) -> String {
    t.post(
        "/v1/staff",
        json!({ "email": "dpo@example.com", "name": "DPO", "role": "admin", "password": "a long enough secret" }),
    )
    .await;
    let (_, h, html) = t
        .request_raw(Method::GET, "/admin/login", None, &[], None)
        .await;
    let mut cookies = cookies_of(&h);
    let html = String::from_utf8_lossy(&html).into_owned();
    let body = format!(
        "csrf={}&email=dpo%40example.com&password=a+long+enough+secret",
        csrf_in(&html)
    );
    let (s, h, _) = t
        .request_raw(
            Method::POST,
            "/admin/login",
            None,
            &[FORM, ("cookie", &cookies.join("; "))],
            Some(body.into_bytes()),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    cookies.extend(cookies_of(&h));
    cookies.join("; ")
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

fn cookies_of(h: &HeaderMap) -> Vec<String> {
    h.get_all(axum::http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|c| !c.contains("Max-Age=0"))
        .map(|c| c.split(';').next().unwrap_or_default().to_string())
        .collect()
}

fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..at + 64].to_string()
}

async fn page(t: &TestApp, path: &str, cookie: &str) -> String {
    let (s, _, b) = t
        .request_raw(Method::GET, path, None, &[("cookie", cookie)], None)
        .await;
    assert_eq!(s, StatusCode::OK, "{path}");
    String::from_utf8_lossy(&b).into_owned()
}

async fn console_shows_systems_and_confirms_a_manual_one(backend: Backend) {
    let t = app(backend).await;
    let (base, _saas) = saas().await;
    setup(&t).await;
    t.post("/v1/systems", mailchimp(&base)).await;
    t.post(
        "/v1/systems",
        json!({"key": "callcenter", "name": "Call centre", "kind": "manual",
               "instructions": "Ask the call centre lead to remove the caller's notes."}),
    )
    .await;
    let cookie = console_login(&t).await;
    let html = page(&t, "/admin/systems?lang=en", &cookie).await;
    assert!(html.contains("not tested yet"), "{html}");
    // The data map: the connector's fields and their categories.
    assert!(
        html.contains("/email_address") && html.contains("Email address"),
        "{html}"
    );
    assert!(html.contains("Consent propagated here"), "{html}");
    // Test from the console (a CSRF-checked form): health shows.
    let csrf = csrf_in(&html);
    let (s, _, _) = t
        .request_raw(
            Method::POST,
            "/admin/systems/mailchimp/test",
            None,
            &[FORM, ("cookie", &cookie)],
            Some(format!("csrf={csrf}").into_bytes()),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let html = page(&t, "/admin/systems?lang=en", &cookie).await;
    assert!(html.contains("healthy · test"), "{html}");
    let th = page(&t, "/admin/systems?lang=th", &cookie).await;
    assert!(th.contains("ระบบที่เชื่อมต่อ") && th.contains("อีเมล"), "{th}");

    let id = request(&t, "erasure").await;
    act(&t, &id, "complete").await;
    let ok = eventually(Duration::from_secs(20), || async {
        system(&t.get(&format!("/v1/requests/{id}")).await, "mailchimp")["status"] == "done"
    })
    .await;
    assert!(ok);
    let html = page(&t, &format!("/admin/requests/{id}?lang=en"), &cookie).await;
    assert!(
        html.contains("Connected systems") && html.contains("mailchimp"),
        "{html}"
    );
    assert!(html.contains("Confirm the team has acted in"), "{html}");
    let form_at = format!("/admin/requests/{id}/systems/callcenter");
    assert!(html.contains(&form_at), "{html}");
    // Without the CSRF token: refused, nothing confirmed.
    let (s, _, _) = t
        .request_raw(
            Method::POST,
            &form_at,
            None,
            &[FORM, ("cookie", &cookie)],
            Some(b"note=done".to_vec()),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        system(&t.get(&format!("/v1/requests/{id}")).await, "callcenter")["status"],
        "manual"
    );
    let (s, _, _) = t
        .request_raw(
            Method::POST,
            &form_at,
            None,
            &[FORM, ("cookie", &cookie)],
            Some(format!("csrf={}&note=Notes+removed+by+Khun+Nok", csrf_in(&html)).into_bytes()),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let r = completed(&t, &id).await;
    assert_eq!(
        system(&r, "callcenter")["note"],
        "Notes removed by Khun Nok"
    );
    let html = page(&t, &format!("/admin/requests/{id}?lang=en"), &cookie).await;
    assert!(html.contains("Notes removed by Khun Nok"), "{html}");
    assert!(!html.contains("Confirm the team has acted in"), "{html}");
}

on_every_backend!(
    console_shows_systems_and_confirms_a_manual_one,
    the_templates_test_plan_and_erase,
    access_bundle_holds_the_saas_records,
    consent_reaches_mailchimp_and_hubspot,
    an_oauth2_connector_written_through_the_api,
    outbound_calls_honour_the_allow_list,
    a_saas_that_is_down_is_retried,
);
