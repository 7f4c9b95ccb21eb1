//! Request hooks end to end (issue 14 part 5): a loopback HTTP server plays
//! the tenant's external system (a legal-hold check, an approval desk, a
//! ticketing tool) and answers calls in its response, later through the
//! reply endpoint, too slowly, or not at all. Also: `subject.erased` with
//! the connected systems' outcomes, retention erasure reaching systems, and
//! an erasure dropping the rows an earlier access request collected.
//! Yinyom's store runs on SQLite and PostgreSQL; the connected shop is a
//! throwaway PostgreSQL schema.

#[macro_use]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use sqlx::Connection;

use common::{Backend, TestApp, eventually};
use yinyom::store::scratch::{self, Scratch};

const EMAIL: &str = "malee.hooks@example.com";

/// How the external system answers.
#[derive(Debug, Clone)]
enum Answer {
    Approve,
    Deny(&'static str),
    /// 202: it will reply through the reply endpoint.
    Later,
    /// Answers after this long (longer than the hook's time limit).
    Slow(Duration),
    /// 503.
    Down,
}

struct External {
    answer: Answer,
    /// Every call: headers and body.
    calls: Vec<(HeaderMap, Bytes)>,
}

#[derive(Clone)]
struct Server {
    url: String,
    state: Arc<Mutex<External>>,
}

impl Server {
    async fn start(answer: Answer) -> Server {
        let state = Arc::new(Mutex::new(External {
            answer,
            calls: vec![],
        }));
        let shared = state.clone();
        let handler = move |headers: HeaderMap, body: Bytes| {
            let state = shared.clone();
            async move {
                let answer = {
                    let mut s = state.lock().unwrap();
                    s.calls.push((headers, body));
                    s.answer.clone()
                };
                match answer {
                    Answer::Approve => axum::Json(json!({ "decision": "approve" })).into_response(),
                    Answer::Deny(why) => {
                        axum::Json(json!({ "decision": "deny", "reason": why })).into_response()
                    }
                    Answer::Later => StatusCode::ACCEPTED.into_response(),
                    Answer::Slow(d) => {
                        tokio::time::sleep(d).await;
                        axum::Json(json!({ "decision": "approve" })).into_response()
                    }
                    Answer::Down => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                }
            }
        };
        let router = axum::Router::new().route("/hook", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Server {
            url: format!("http://127.0.0.1:{}/hook", addr.port()),
            state,
        }
    }

    fn set(&self, a: Answer) {
        self.state.lock().unwrap().answer = a;
    }

    fn calls(&self) -> Vec<(HeaderMap, Value)> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .map(|(h, b)| (h.clone(), serde_json::from_slice(b).unwrap()))
            .collect()
    }

    fn raw_calls(&self) -> Vec<(HeaderMap, Bytes)> {
        self.state.lock().unwrap().calls.clone()
    }
}

/// Loopback allowed explicitly (as a deployment must), fast retries.
async fn app(backend: Backend) -> TestApp {
    TestApp::with_config(
        backend,
        yinyom::app::Config {
            systems: yinyom::systems::SystemsConfig {
                retry_base: Duration::from_millis(100),
                retry_max: Duration::from_millis(300),
                http: yinyom::systems::http::HttpSettings {
                    allow_private: vec!["127.0.0.1".into()],
                    ..Default::default()
                },
            },
            ..Default::default()
        },
    )
    .await
}

async fn subject(t: &TestApp, id: &str, email: &str) {
    let (s, _, b) = t
        .request(
            Method::PUT,
            &format!("/v1/subjects/{id}"),
            &t.owner,
            Some(json!({ "identifiers": { "email": email } })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

async fn hook(
    t: &TestApp,
    url: &str,
    stage: &str,
    kinds: Value,
    timeout_ms: u32,
) -> (String, String) {
    let h = t
        .post(
            "/v1/hooks",
            json!({ "name": format!("{stage} check"), "url": url, "stage": stage,
                    "kinds": kinds, "timeout_ms": timeout_ms }),
        )
        .await;
    (
        h["id"].as_str().unwrap().to_string(),
        h["secret"].as_str().unwrap().to_string(),
    )
}

async fn act(t: &TestApp, id: &str, action: &str) -> (StatusCode, Value) {
    let (s, _, r) = t
        .request(
            Method::POST,
            &format!("/v1/requests/{id}/actions"),
            &t.owner,
            Some(json!({ "action": action, "reason": "checked" })),
        )
        .await;
    (s, r)
}

fn call_of<'a>(r: &'a Value, hook: &str) -> &'a Value {
    r["hooks"]
        .as_array()
        .and_then(|h| h.iter().find(|c| c["id"] == hook))
        .unwrap_or_else(|| panic!("no call of {hook} in {r}"))
}

/// Wait until `check` holds of the request; the request then.
async fn wait(t: &TestApp, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/v1/requests/{id}");
    let ok = eventually(Duration::from_secs(20), || async {
        check(&t.get(&path).await)
    })
    .await;
    let r = t.get(&path).await;
    assert!(ok, "{what}: {r}");
    r
}

/// Reply as the external system does: to the call's reply URL with its
/// token.
async fn reply(t: &TestApp, call: &Value, token: &str, body: Value) -> (StatusCode, Value) {
    let url = call["reply"]["url"].as_str().unwrap();
    let path = &url[url.find("/v1/").unwrap()..];
    let (s, _, b) = t
        .request_raw(
            Method::POST,
            path,
            Some(token),
            &[],
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await;
    (s, common::json_of(&b))
}

/// Log an admin in through the console's form: the session cookie.
async fn console_login(t: &TestApp) -> String {
    t.post(
        "/v1/staff",
        json!({ "email": "dpo@example.com", "name": "DPO", "role": "admin",
                "password": "a long enough secret" }),
    )
    .await;
    let cookies_of = |h: &HeaderMap| -> Vec<String> {
        h.get_all(axum::http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|c| !c.contains("Max-Age=0"))
            .map(|c| c.split(';').next().unwrap_or_default().to_string())
            .collect()
    };
    let (_, h, html) = t
        .request_raw(Method::GET, "/admin/login", None, &[], None)
        .await;
    let mut cookies = cookies_of(&h);
    let html = String::from_utf8_lossy(&html).into_owned();
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    let body = format!(
        "csrf={}&email=dpo%40example.com&password=a+long+enough+secret",
        &html[at..at + 64]
    );
    let (s, h, _) = t
        .request_raw(
            Method::POST,
            "/admin/login",
            None,
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &cookies.join("; ")),
            ],
            Some(body.into_bytes()),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    cookies.extend(cookies_of(&h));
    cookies.join("; ")
}

async fn page(t: &TestApp, path: &str, cookie: &str) -> String {
    let (s, _, b) = t
        .request_raw(Method::GET, path, None, &[("cookie", cookie)], None)
        .await;
    assert_eq!(s, StatusCode::OK, "{path}");
    String::from_utf8_lossy(&b).into_owned()
}

async fn approve_in_the_response_and_deny_with_a_reason(backend: Backend) {
    let t = app(backend).await;
    let ext = Server::start(Answer::Approve).await;
    let (hk, secret) = hook(
        &t,
        &ext.url,
        "pre_approval",
        json!(["erasure", "access"]),
        2000,
    )
    .await;
    subject(&t, "malee", EMAIL).await;

    let started = std::time::Instant::now();
    let r = t
        .post(
            "/v1/requests",
            json!({ "subject": "malee", "kind": "erasure" }),
        )
        .await;
    let id = r["id"].as_str().unwrap().to_string();
    // Approved, and the decision in the request's steps.
    let r = wait(&t, &id, "approved in the hook's response", |r| {
        call_of(r, &hk)["status"] == "approved"
            && r["steps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["action"] == "hook_approved" && s["actor"] == format!("hook:{hk}"))
    })
    .await;
    eprintln!(
        "pre-approval hook called and its answer recorded {:?} after the request",
        started.elapsed()
    );
    assert_eq!(call_of(&r, &hk)["stage"], "pre_approval");
    // The call was signed like our webhooks and names the request.
    let (headers, body) = ext.raw_calls().remove(0);
    standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(&body, &headers)
        .expect("a valid Standard Webhooks signature");
    let call: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(call["type"], "request.pre_approval");
    assert_eq!(call["request"]["id"], id.as_str());
    assert_eq!(call["request"]["kind"], "erasure");
    assert!(call["reply"]["token"].as_str().unwrap().starts_with("yhr_"));
    let (s, _) = act(&t, &id, "verify").await;
    assert_eq!(s, StatusCode::OK);

    // A kind it is not registered for is not held.
    let r = t
        .post(
            "/v1/requests",
            json!({ "subject": "malee", "kind": "objection" }),
        )
        .await;
    let other = r["id"].as_str().unwrap().to_string();
    assert_eq!(act(&t, &other, "verify").await.0, StatusCode::OK);
    assert_eq!(
        t.get(&format!("/v1/requests/{other}")).await["hooks"],
        json!([])
    );

    // A denial rejects the request with the hook's reason.
    ext.set(Answer::Deny("legal hold: litigation 2026-17"));
    let r = t
        .post(
            "/v1/requests",
            json!({ "subject": "malee", "kind": "access" }),
        )
        .await;
    let denied = r["id"].as_str().unwrap().to_string();
    let r = wait(&t, &denied, "rejected by the hook", |r| {
        r["status"] == "rejected"
    })
    .await;
    assert_eq!(call_of(&r, &hk)["status"], "denied");
    assert_eq!(call_of(&r, &hk)["reason"], "legal hold: litigation 2026-17");
    let last = r["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "reject");
    assert_eq!(last["actor"], format!("hook:{hk}"));
    assert_eq!(last["reason"], "legal hold: litigation 2026-17");
    assert!(r["closed_at"].is_string());
}

async fn a_hook_replies_later_through_the_callback(backend: Backend) {
    let t = app(backend).await;
    let ext = Server::start(Answer::Later).await;
    let (hk, _) = hook(&t, &ext.url, "pre_approval", json!([]), 2000).await;
    subject(&t, "malee", EMAIL).await;
    let r = t
        .post(
            "/v1/requests",
            json!({ "subject": "malee", "kind": "access" }),
        )
        .await;
    let id = r["id"].as_str().unwrap().to_string();
    let r = wait(&t, &id, "called, awaiting the reply", |r| {
        call_of(r, &hk)["awaiting_reply"] == true
    })
    .await;
    assert_eq!(call_of(&r, &hk)["status"], "pending");
    // The console shows the call, in English and Thai.
    let cookie = console_login(&t).await;
    let html = page(&t, &format!("/admin/requests/{id}?lang=en"), &cookie).await;
    assert!(
        html.contains("Request hooks") && html.contains(&hk) && html.contains("awaiting its reply"),
        "{html}"
    );
    let th = page(&t, &format!("/admin/requests/{id}?lang=th"), &cookie).await;
    assert!(th.contains("ฮุกของคำขอ") && th.contains("รอคำตอบ"), "{th}");
    // Held: nothing but rejecting or extending moves it.
    let (s, p) = act(&t, &id, "verify").await;
    assert_eq!(s, StatusCode::CONFLICT, "{p}");
    assert_eq!(
        p["type"].as_str().unwrap().rsplit('/').next(),
        Some("held-by-hooks")
    );
    assert_eq!(act(&t, &id, "extend").await.0, StatusCode::OK);

    let call = ext.calls().remove(0).1;
    let token = call["reply"]["token"].as_str().unwrap().to_string();
    // Without the token, with an API key, with another call's: refused.
    for bad in ["", t.owner.as_str(), "yhr_0000"] {
        let (s, b) = reply(&t, &call, bad, json!({ "decision": "approve" })).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{bad}: {b}");
    }
    let (s, b) = reply(&t, &call, &token, json!({ "decision": "maybe" })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let (s, b) = reply(
        &t,
        &call,
        &token,
        json!({ "decision": "approve", "reason": "identity matched in CRM" }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "approved");
    // The same answer again is fine; another is a conflict.
    let (s, _) = reply(&t, &call, &token, json!({ "decision": "approve" })).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = reply(&t, &call, &token, json!({ "decision": "deny" })).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let r = t.get(&format!("/v1/requests/{id}")).await;
    assert_eq!(call_of(&r, &hk)["reason"], "identity matched in CRM");
    assert_eq!(act(&t, &id, "verify").await.0, StatusCode::OK);

    // Denied through the callback: rejected with the reason.
    let r = t
        .post(
            "/v1/requests",
            json!({ "subject": "malee", "kind": "erasure" }),
        )
        .await;
    let id2 = r["id"].as_str().unwrap().to_string();
    let ok = eventually(Duration::from_secs(20), || async { ext.calls().len() == 2 }).await;
    assert!(ok);
    let call = ext.calls().remove(1).1;
    assert_eq!(call["request"]["id"], id2.as_str());
    let token2 = call["reply"]["token"].as_str().unwrap().to_string();
    assert_ne!(token, token2);
    // One call's token does not answer another.
    let first = ext.calls().remove(0).1;
    let mut wrong = call.clone();
    wrong["reply"]["url"] = first["reply"]["url"].clone();
    assert_eq!(
        reply(&t, &wrong, &token2, json!({ "decision": "approve" }))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (s, _) = reply(
        &t,
        &call,
        &token2,
        json!({ "decision": "deny", "reason": "duplicate of an earlier request" }),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let r = t.get(&format!("/v1/requests/{id2}")).await;
    assert_eq!(r["status"], "rejected");
    assert_eq!(
        r["steps"].as_array().unwrap().last().unwrap()["reason"],
        "duplicate of an earlier request"
    );
}

async fn a_hook_too_slow_fails_and_is_retried(backend: Backend) {
    let t = app(backend).await;
    let ext = Server::start(Answer::Slow(Duration::from_millis(1500))).await;
    let (hk, _) = hook(&t, &ext.url, "pre_approval", json!([]), 200).await;
    subject(&t, "malee", EMAIL).await;
    let r = t
        .post(
            "/v1/requests",
            json!({ "subject": "malee", "kind": "access" }),
        )
        .await;
    let id = r["id"].as_str().unwrap().to_string();
    let r = wait(&t, &id, "failed after its time limit", |r| {
        call_of(r, &hk)["status"] == "failed"
    })
    .await;
    let c = call_of(&r, &hk);
    assert!(
        c["error"].as_str().unwrap().contains("no answer within"),
        "{c}"
    );
    assert!(c["retry_at"].is_string(), "{c}");
    assert_eq!(act(&t, &id, "verify").await.0, StatusCode::CONFLICT);
    // Down, then back: retried with backoff until it answers.
    ext.set(Answer::Down);
    wait(&t, &id, "an error status fails too", |r| {
        call_of(r, &hk)["error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 503"))
    })
    .await;
    ext.set(Answer::Approve);
    // Approved, and the decision recorded in the steps.
    let r = wait(&t, &id, "approved on a retry", |r| {
        call_of(r, &hk)["status"] == "approved"
            && r["steps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["action"] == "hook_approved")
    })
    .await;
    assert!(call_of(&r, &hk)["attempts"].as_i64().unwrap() >= 3, "{r}");
    assert_eq!(act(&t, &id, "verify").await.0, StatusCode::OK);
}

/// The shop: one PostgreSQL table holding our subject and another person.
async fn shop() -> (Scratch, sqlx::PgConnection) {
    let s = Scratch::create(&scratch::postgres_url()).await.unwrap();
    let mut c = sqlx::PgConnection::connect(&s.url()).await.unwrap();
    sqlx::query(
        "CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL, full_name text)",
    )
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query("INSERT INTO customers (email, full_name) VALUES ($1, 'มาลี'), ('other@example.com', 'Somchai')")
        .bind(EMAIL)
        .execute(&mut c)
        .await
        .unwrap();
    (s, c)
}

fn shop_system(url: &str) -> Value {
    json!({"key": "shop", "name": "Shop", "kind": "postgres", "connection": {"url": url},
        "tables": [{"name": "customers", "identity": {"column": "email", "identifier": "email"},
                    "columns": {"email": "contact.email", "full_name": "user.name"},
                    "on_erasure": "delete"}]})
}

async fn customers(c: &mut sqlx::PgConnection, email: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM customers WHERE email = $1")
        .bind(email)
        .fetch_one(c)
        .await
        .unwrap()
}

async fn pre_execution_holds_systems_and_post_execution_is_told(backend: Backend) {
    let t = app(backend).await;
    let (db, mut pg) = shop().await;
    t.post("/v1/systems", shop_system(&db.url())).await;
    t.post(
        "/v1/systems",
        json!({"key": "callcenter", "name": "Call centre", "kind": "manual"}),
    )
    .await;
    let desk = Server::start(Answer::Later).await;
    let (pre, _) = hook(&t, &desk.url, "pre_execution", json!(["erasure"]), 2000).await;
    let told = Server::start(Answer::Down).await;
    let (post, post_secret) = hook(&t, &told.url, "post_execution", json!([]), 2000).await;
    subject(&t, "malee", EMAIL).await;
    let r = t
        .post(
            "/v1/requests",
            json!({ "subject": "malee", "kind": "erasure" }),
        )
        .await;
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(act(&t, &id, "verify").await.0, StatusCode::OK);

    // Complete: held, nothing carried out, no system job exists.
    let (s, r) = act(&t, &id, "complete").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "in_progress");
    assert_eq!(r["systems"], json!([]), "{r}");
    assert_eq!(call_of(&r, &pre)["status"], "pending");
    let ok = eventually(Duration::from_secs(20), || async {
        !desk.calls().is_empty()
    })
    .await;
    assert!(ok, "the pre-execution hook is called");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        customers(&mut pg, EMAIL).await,
        1,
        "nothing erased while held"
    );
    assert_eq!(
        t.get("/v1/subjects/malee").await["identifiers"]["email"],
        EMAIL
    );
    assert_eq!(act(&t, &id, "complete").await.0, StatusCode::CONFLICT);

    // Approved: carried out, here and in the systems.
    let call = desk.calls().remove(0).1;
    assert_eq!(call["type"], "request.pre_execution");
    let token = call["reply"]["token"].as_str().unwrap().to_string();
    let (s, b) = reply(&t, &call, &token, json!({ "decision": "approve" })).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let r = wait(&t, &id, "the shop's job done", |r| {
        r["systems"].as_array().is_some_and(|s| {
            s.iter()
                .any(|x| x["key"] == "shop" && x["status"] == "done")
        })
    })
    .await;
    assert_eq!(customers(&mut pg, EMAIL).await, 0);
    assert_eq!(customers(&mut pg, "other@example.com").await, 1);
    assert!(
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["action"] == "execute"),
        "{r}"
    );
    // The post-execution hook is not told before the request completes.
    assert!(told.calls().is_empty());

    // No subject.erased before every system finished.
    let erased = |t: &TestApp| {
        let store = t.app.store.clone();
        let tenant = t.tenant.clone();
        async move {
            store
                .events_after(&tenant, 0, 1_000)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.kind == "subject.erased")
                .map(|e| serde_json::from_str::<Value>(&e.payload).unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert!(erased(&t).await.is_empty());
    let (s, _, b) = t
        .request(
            Method::POST,
            &format!("/v1/requests/{id}/systems/callcenter/confirm"),
            &t.owner,
            Some(json!({ "note": "recordings deleted" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let r = t.get(&format!("/v1/requests/{id}")).await;
    assert_eq!(r["status"], "completed", "{r}");

    // subject.erased, once, with each system's outcome and no personal data.
    // (Readers of events see a commit once no earlier transaction that may
    // still write is running: on PostgreSQL, other tests' writers can hold
    // that back for a moment.)
    let ok = eventually(Duration::from_secs(10), || async {
        let all = t.app.store.events_after(&t.tenant, 0, 1_000).await.unwrap();
        all.last().is_some_and(|e| e.kind == "request.completed")
    })
    .await;
    assert!(ok, "the request's events are readable");
    let events = erased(&t).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["request"], id.as_str());
    let mut systems = e["systems"].as_array().unwrap().clone();
    systems.sort_by_key(|s| s["key"].as_str().unwrap().to_string());
    assert_eq!(
        systems,
        vec![
            json!({"key": "callcenter", "status": "manual", "rows": 0}),
            json!({"key": "shop", "status": "done", "rows": 1}),
        ]
    );
    assert!(!e.to_string().contains(EMAIL) && !e.to_string().contains("malee"));
    let all = t.app.store.events_after(&t.tenant, 0, 1_000).await.unwrap();
    let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        &kinds[kinds.len() - 2..],
        ["subject.erased", "request.completed"]
    );

    // Post-execution: failing at first, retried, told the outcome; the
    // request stays completed all along.
    let r = wait(&t, &id, "the post-execution call failing", |r| {
        call_of(r, &post)["status"] == "failed"
    })
    .await;
    assert_eq!(r["status"], "completed");
    told.set(Answer::Approve);
    let r = wait(&t, &id, "delivered on a retry", |r| {
        call_of(r, &post)["status"] == "delivered"
    })
    .await;
    assert_eq!(r["status"], "completed");
    let (headers, body) = told.raw_calls().pop().unwrap();
    standardwebhooks::Webhook::new(&post_secret)
        .unwrap()
        .verify(&body, &headers)
        .expect("signed");
    let told_body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(told_body["type"], "request.post_execution");
    assert!(told_body.get("reply").is_none());
    assert_eq!(told_body["outcome"]["status"], "completed");
    let shop_part = told_body["outcome"]["systems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "shop")
        .unwrap()
        .clone();
    assert_eq!(shop_part["status"], "done");
    assert_eq!(shop_part["rows"], 1);
    assert_eq!(shop_part["tables"][0]["action"], "delete");
    assert!(!body.windows(EMAIL.len()).any(|w| w == EMAIL.as_bytes()));
}

async fn a_denial_before_execution_rejects_and_removing_a_hook_releases(backend: Backend) {
    let t = app(backend).await;
    let (db, mut pg) = shop().await;
    t.post("/v1/systems", shop_system(&db.url())).await;
    let desk = Server::start(Answer::Deny("the customer has an open order dispute")).await;
    let (pre, _) = hook(&t, &desk.url, "pre_execution", json!([]), 2000).await;
    subject(&t, "malee", EMAIL).await;
    let r = t
        .post(
            "/v1/requests",
            json!({ "subject": "malee", "kind": "erasure" }),
        )
        .await;
    let id = r["id"].as_str().unwrap().to_string();
    act(&t, &id, "verify").await;
    act(&t, &id, "complete").await;
    let r = wait(&t, &id, "rejected before execution", |r| {
        r["status"] == "rejected"
    })
    .await;
    assert_eq!(call_of(&r, &pre)["status"], "denied");
    assert_eq!(
        r["steps"].as_array().unwrap().last().unwrap()["reason"],
        "the customer has an open order dispute"
    );
    assert_eq!(r["systems"], json!([]));
    assert_eq!(customers(&mut pg, EMAIL).await, 1);
    assert_eq!(
        t.get("/v1/subjects/malee").await["identifiers"]["email"],
        EMAIL
    );

    // A hook removed while its reply is awaited holds nothing any more.
    desk.set(Answer::Later);
    let r = t
        .post(
            "/v1/requests",
            json!({ "subject": "malee", "kind": "erasure" }),
        )
        .await;
    let id = r["id"].as_str().unwrap().to_string();
    act(&t, &id, "verify").await;
    act(&t, &id, "complete").await;
    wait(&t, &id, "awaiting the reply", |r| {
        call_of(r, &pre)["awaiting_reply"] == true
    })
    .await;
    let (s, _, _) = t
        .request(Method::DELETE, &format!("/v1/hooks/{pre}"), &t.owner, None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let r = wait(&t, &id, "released and carried out", |r| {
        r["status"] == "completed"
    })
    .await;
    assert_eq!(call_of(&r, &pre)["status"], "skipped");
    assert_eq!(customers(&mut pg, EMAIL).await, 0);
}

async fn hooks_are_managed_and_bad_input_is_a_problem(backend: Backend) {
    let t = app(backend).await;
    let (hk, secret) = hook(
        &t,
        "https://hold.example/check",
        "pre_approval",
        json!(["erasure"]),
        5000,
    )
    .await;
    assert!(secret.starts_with("whsec_"));
    let list = t.get("/v1/hooks").await;
    assert_eq!(list["hooks"][0]["id"], hk.as_str());
    assert!(list["hooks"][0].get("secret").is_none(), "{list}");
    let one = t.get(&format!("/v1/hooks/{hk}")).await;
    assert_eq!(one["kinds"], json!(["erasure"]));
    assert_eq!(one["timeout_ms"], 5000);
    let (s, _, b) = t
        .request(
            Method::PUT,
            &format!("/v1/hooks/{hk}"),
            &t.owner,
            Some(json!({ "name": "After", "url": "https://hold.example/after", "stage": "post_execution" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["stage"], "post_execution");
    assert_eq!(b["timeout_ms"], 10000);
    assert_eq!(b["kinds"], json!([]));

    let bad = [
        (
            json!({ "name": "x", "url": "ftp://hold.example", "stage": "pre_approval" }),
            "url",
        ),
        (
            json!({ "name": "x", "url": "http://10.1.2.3/hook", "stage": "pre_approval" }),
            "url",
        ),
        (
            json!({ "name": "", "url": "https://hold.example", "stage": "pre_approval" }),
            "name",
        ),
        (
            json!({ "name": "x", "url": "https://hold.example", "stage": "pre_approval", "timeout_ms": 5 }),
            "timeout_ms",
        ),
        (
            json!({ "name": "x", "url": "https://hold.example", "stage": "sometime" }),
            "",
        ),
        (
            json!({ "name": "x", "url": "https://hold.example", "stage": "pre_approval", "kinds": ["nap"] }),
            "",
        ),
        (
            json!({ "name": "x", "url": "https://hold.example", "stage": "pre_approval", "extra": 1 }),
            "",
        ),
    ];
    for (body, field) in bad {
        let (s, h, p) = t
            .request(Method::POST, "/v1/hooks", &t.owner, Some(body.clone()))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {p}");
        assert_eq!(h["content-type"], "application/problem+json", "{body}");
        if !field.is_empty() {
            assert!(p.to_string().contains(field), "{body}: {p}");
        }
    }
    let (s, _, _) = t
        .request(Method::GET, "/v1/hooks/hk_nope", &t.owner, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = t
        .request(Method::DELETE, &format!("/v1/hooks/{hk}"), &t.owner, None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(t.get("/v1/hooks").await["hooks"], json!([]));
    // A service key may not manage hooks.
    let service = t.key(yinyom::model::Role::Service).await;
    let (s, _, _) = t.request(Method::GET, "/v1/hooks", &service, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

async fn retention_erasure_reaches_connected_systems(backend: Backend) {
    let t = app(backend).await;
    let (db, mut pg) = shop().await;
    t.post("/v1/systems", shop_system(&db.url())).await;
    // Pre stages do not hold the retention job's requests; post is told.
    let ext = Server::start(Answer::Deny("never")).await;
    hook(&t, &ext.url, "pre_execution", json!([]), 2000).await;
    let told = Server::start(Answer::Approve).await;
    hook(&t, &told.url, "post_execution", json!([]), 2000).await;
    t.post(
        "/v1/purposes",
        json!({ "key": "newsletter", "names": { "en": "Newsletter" }, "basis": "consent",
                "channels": ["email"], "validity_days": 1, "retention_days": 2 }),
    )
    .await;
    t.post(
        "/v1/notices",
        json!({ "key": "nl", "texts": { "en": { "title": "Newsletter", "body": "…" } },
                "purposes": ["newsletter"] }),
    )
    .await;
    subject(&t, "malee", EMAIL).await;
    let four_days_ago = yinyom_core::time::rfc3339(
        yinyom_core::time::now() - 4 * yinyom_core::time::MICROS_PER_DAY,
    );
    t.post(
        "/v1/consents",
        json!({ "subject": "malee", "source": "web", "notice": { "key": "nl", "version": 1 },
                "occurred_at": four_days_ago,
                "actions": [{ "purpose": "newsletter", "channel": "email", "action": "grant" }] }),
    )
    .await;

    let report = yinyom::lifecycle::run_once(&t.app, yinyom_core::time::now())
        .await
        .unwrap();
    assert_eq!(report.erased, 1, "{report:?}");
    // Erased at home, and a request tracks the systems' part.
    let (_, _, home) = t
        .request(Method::GET, "/v1/subjects/malee", &t.owner, None)
        .await;
    assert!(!home.to_string().contains(EMAIL), "{home}");
    let list = t.get("/v1/requests").await;
    let r = &list["requests"][0];
    assert_eq!(r["kind"], "erasure");
    assert_eq!(r["via"], "retention");
    let id = r["id"].as_str().unwrap().to_string();
    let r = wait(&t, &id, "retention erasure completed in the shop", |r| {
        r["status"] == "completed"
    })
    .await;
    assert_eq!(r["systems"][0]["status"], "done");
    assert_eq!(r["systems"][0]["rows"], 1);
    assert_eq!(customers(&mut pg, EMAIL).await, 0);
    assert_eq!(customers(&mut pg, "other@example.com").await, 1);
    assert!(ext.calls().is_empty(), "pre stages are not asked");
    assert!(
        r["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["stage"] == "post_execution"),
        "{r}"
    );
    let ok = eventually(Duration::from_secs(20), || async {
        !told.calls().is_empty()
    })
    .await;
    assert!(ok, "post-execution told of the retention erasure");
    let events = t.app.store.events_after(&t.tenant, 0, 1_000).await.unwrap();
    let e = events.iter().find(|e| e.kind == "subject.erased").unwrap();
    let e: Value = serde_json::from_str(&e.payload).unwrap();
    assert_eq!(
        e["systems"],
        json!([{"key": "shop", "status": "done", "rows": 1}])
    );
    // A second run makes no second request.
    let again = yinyom::lifecycle::run_once(&t.app, yinyom_core::time::now())
        .await
        .unwrap();
    assert_eq!(again.erased, 0);
    assert_eq!(
        t.get("/v1/requests").await["requests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

async fn an_erasure_drops_rows_an_access_request_collected(backend: Backend) {
    let t = app(backend).await;
    let (db, _pg) = shop().await;
    t.post("/v1/systems", shop_system(&db.url())).await;
    subject(&t, "malee", EMAIL).await;
    let r = t
        .post(
            "/v1/requests",
            json!({ "subject": "malee", "kind": "access" }),
        )
        .await;
    let access = r["id"].as_str().unwrap().to_string();
    act(&t, &access, "verify").await;
    act(&t, &access, "complete").await;
    wait(&t, &access, "access done", |r| r["status"] == "completed").await;
    let jobs = t
        .app
        .store
        .request_system_jobs(&t.tenant, &access)
        .await
        .unwrap();
    assert!(
        jobs[0].result.is_some(),
        "the shop's rows are kept for the bundle"
    );
    assert!(jobs[0].payload.is_none(), "identifiers dropped once done");

    let r = t
        .post(
            "/v1/requests",
            json!({ "subject": "malee", "kind": "erasure" }),
        )
        .await;
    let erasure = r["id"].as_str().unwrap().to_string();
    act(&t, &erasure, "verify").await;
    act(&t, &erasure, "complete").await;
    wait(&t, &erasure, "erasure done", |r| r["status"] == "completed").await;
    let jobs = t
        .app
        .store
        .request_system_jobs(&t.tenant, &access)
        .await
        .unwrap();
    assert!(
        jobs[0].result.is_none(),
        "the collected rows outlived the subject"
    );
    // The access request's record (statuses, counts) stays.
    assert_eq!(jobs[0].status, "done");
    for j in t
        .app
        .store
        .request_system_jobs(&t.tenant, &erasure)
        .await
        .unwrap()
    {
        assert!(j.payload.is_none() && j.result.is_none());
    }
}

on_every_backend!(
    approve_in_the_response_and_deny_with_a_reason,
    a_hook_replies_later_through_the_callback,
    a_hook_too_slow_fails_and_is_retried,
    pre_execution_holds_systems_and_post_execution_is_told,
    a_denial_before_execution_rejects_and_removing_a_hook_releases,
    hooks_are_managed_and_bad_input_is_a_problem,
    retention_erasure_reaches_connected_systems,
    an_erasure_drops_rows_an_access_request_collected,
);
