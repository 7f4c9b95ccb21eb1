//! Deadlines that act (issue 14, part 6), on SQLite and PostgreSQL through
//! the real router: the leader's minute job (`lifecycle::run_once`) is run
//! with the clock moved; reminders reach the DPO by email (a real SMTP
//! server, aiosmtpd) and as `deadline.approaching` / `deadline.missed`
//! events (a real webhook receiver, the event store), each once, at the
//! hours set, and none once the deadline is met.

#[macro_use]
mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use common::{Backend, Receiver, SmtpSink, TestApp, eventually, free_port};

const H: i64 = 3_600_000_000;
const DPO: &str = "dpo@shop.example";

async fn setup(t: &TestApp) -> (SmtpSink, Receiver) {
    let port = free_port();
    let sink = SmtpSink::start(port);
    let (status, _, body) = t
        .request(
            Method::PUT,
            "/v1/connectors/email",
            &t.owner,
            Some(json!({ "url": format!("smtp://127.0.0.1:{port}"), "from": "Yinyom <yinyom@shop.example>" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = t
        .request(
            Method::PATCH,
            "/v1/tenant",
            &t.owner,
            Some(json!({ "dpo": { "name": "Somchai DPO", "email": DPO } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let receiver = Receiver::start().await;
    t.post(
        "/v1/webhooks",
        json!({ "url": receiver.url, "description": "DPO desk" }),
    )
    .await;
    (sink, receiver)
}

async fn run(t: &TestApp, now: i64) -> yinyom::lifecycle::Report {
    yinyom::lifecycle::run_once(&t.app, now).await.unwrap()
}

/// The deadline events in the event store, in order.
async fn deadline_events(t: &TestApp) -> Vec<Value> {
    t.app
        .store
        .events_after(&t.tenant, 0, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind.starts_with("deadline."))
        .map(|e| serde_json::from_str(&e.payload).unwrap())
        .collect()
}

fn summary(events: &[Value]) -> Vec<(String, String, String, i64)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["deadline"]["kind"].as_str().unwrap().to_string(),
                e["deadline"]["id"].as_str().unwrap().to_string(),
                e["deadline"]["remaining"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn breach(t: &TestApp, discovered_at: i64) -> String {
    let b = t
        .post(
            "/v1/breaches",
            json!({
                "discovered_at": yinyom_core::time::rfc3339(discovered_at),
                "description": "A laptop with the customer list was stolen",
                "categories": ["contact"], "affected_subjects": 1200,
                "risk": "risk", "risk_assessment": "Names and emails only",
            }),
        )
        .await;
    b["id"].as_str().expect("a breach id").to_string()
}

async fn breach_reminders_go_out_once_each_and_stop_once_the_regulator_is_told(backend: Backend) {
    let t = TestApp::new(backend).await;
    let (sink, receiver) = setup(&t).await;
    let d = yinyom_core::time::now() - H;
    let told = breach(&t, d).await;
    let silent = breach(&t, d).await;

    // 47 hours in: nothing is due yet.
    let r = run(&t, d + 47 * H).await;
    assert_eq!((r.reminders, r.missed), (0, 0));
    // 48 hours in (24 hours left): one reminder per breach, once.
    let r = run(&t, d + 48 * H + 60_000_000).await;
    assert_eq!(
        (r.reminders, r.missed, r.reminder_emails),
        (2, 0, 2),
        "{r:?}"
    );
    let r = run(&t, d + 48 * H + 120_000_000).await;
    assert_eq!(
        (r.reminders, r.missed, r.reminder_emails),
        (0, 0, 0),
        "{r:?}"
    );

    // The regulator is told of one: its reminders stop.
    let (status, _, body) = t
        .request(
            Method::POST,
            &format!("/v1/breaches/{told}/notifications"),
            &t.owner,
            Some(json!({ "to": "regulator", "reference": "PDPC-2026-001" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = run(&t, d + 66 * H + 60_000_000).await;
    assert_eq!(
        (r.reminders, r.missed),
        (1, 0),
        "6 hours left: the other only"
    );
    let r = run(&t, d + 72 * H + 60_000_000).await;
    assert_eq!((r.reminders, r.missed), (0, 1), "the deadline passed");
    let r = run(&t, d + 80 * H).await;
    assert_eq!((r.reminders, r.missed), (0, 0), "missed once");

    let events = deadline_events(&t).await;
    let mut got = summary(&events);
    got.sort();
    let mut want = vec![
        (
            "deadline.approaching".to_string(),
            "breach".to_string(),
            told.clone(),
            24 * 3600 - 60,
        ),
        (
            "deadline.approaching".into(),
            "breach".into(),
            silent.clone(),
            24 * 3600 - 60,
        ),
        (
            "deadline.approaching".into(),
            "breach".into(),
            silent.clone(),
            6 * 3600 - 60,
        ),
        (
            "deadline.missed".into(),
            "breach".into(),
            silent.clone(),
            -60,
        ),
    ];
    want.sort();
    assert_eq!(got, want);
    for e in &events {
        assert_eq!(e["purpose"], "*");
        assert_eq!(
            e["deadline"]["due_at"],
            yinyom_core::time::rfc3339(d + 72 * H)
        );
    }

    // The DPO's emails, through the email connector: four.
    assert!(
        eventually(Duration::from_secs(5), || async {
            sink.received().len() >= 4
        })
        .await,
        "{:?}",
        sink.received()
    );
    let mails = sink.received();
    assert_eq!(mails.len(), 4, "{mails:?}");
    assert!(mails.iter().all(|m| m["to"] == json!([DPO])), "{mails:?}");
    let about_silent = mails
        .iter()
        .filter(|m| m["data"].as_str().unwrap().contains(&silent))
        .count();
    assert_eq!(about_silent, 3);
    assert!(
        mails
            .iter()
            .any(|m| m["data"].as_str().unwrap().contains("Deadline missed")),
        "{mails:?}"
    );

    // The webhook carries the same four events.
    assert!(
        eventually(Duration::from_secs(10), || async {
            receiver
                .received()
                .iter()
                .filter(|(_, b)| String::from_utf8_lossy(b).contains("\"deadline."))
                .count()
                >= 4
        })
        .await
    );
    let hooked: Vec<Value> = receiver
        .received()
        .iter()
        .map(|(_, b)| serde_json::from_slice(b).unwrap())
        .filter(|e: &Value| e["type"].as_str().unwrap().starts_with("deadline."))
        .collect();
    let mut hooked = summary(&hooked);
    hooked.sort();
    assert_eq!(hooked, want);
}

async fn request_and_s25_reminders_follow_the_tenants_hours(backend: Backend) {
    let t = TestApp::new(backend).await;
    let (sink, _receiver) = setup(&t).await;
    // Reminders 72 and 24 hours before requests and s.25 notices.
    let (status, _, body) = t
        .request(
            Method::PATCH,
            "/v1/tenant",
            &t.owner,
            Some(json!({ "reminders": { "requests": [72, 24], "notices": [72, 24] } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reminders"]["breaches"], json!([24, 6]), "{body}");
    let (status, _, body) = t
        .request(
            Method::PATCH,
            "/v1/tenant",
            &t.owner,
            Some(json!({ "reminders": { "breaches": [80] } })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "reminders.breaches");

    for s in ["cust-1", "cust-2"] {
        let (status, _, body) = t
            .request(
                Method::PUT,
                &format!("/v1/subjects/{s}"),
                &t.owner,
                Some(json!({ "identifiers": { "email": format!("{s}@example.com") } })),
            )
            .await;
        assert!(status.is_success(), "{body}");
    }
    let req = t
        .post(
            "/v1/requests",
            json!({ "subject": "cust-1", "kind": "access" }),
        )
        .await;
    let req_id = req["id"].as_str().unwrap().to_string();
    let due = yinyom_core::time::parse_rfc3339(req["due_at"].as_str().unwrap()).unwrap();
    let acquired = yinyom_core::time::now() - 10 * 24 * H;
    let a = t
        .request(
            Method::PUT,
            "/v1/subjects/cust-2/acquisition",
            &t.owner,
            Some(json!({ "source": "Partner list", "acquired_at": yinyom_core::time::rfc3339(acquired) })),
        )
        .await;
    assert_eq!(a.0, StatusCode::OK, "{}", a.2);
    let notice_due = yinyom_core::time::parse_rfc3339(a.2["due_at"].as_str().unwrap()).unwrap();

    // s.25: 72 hours before, then 24; told before the deadline: no miss.
    let r = run(&t, notice_due - 72 * H).await;
    assert_eq!(r.reminders, 1, "{r:?}");
    let r = run(&t, notice_due - 24 * H).await;
    assert_eq!(r.reminders, 1, "{r:?}");
    let (status, _, body) = t
        .request(
            Method::POST,
            "/v1/subjects/cust-2/acquisition/notice",
            &t.owner,
            Some(json!({ "method": "email" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = run(&t, notice_due + H).await;
    assert_eq!((r.reminders, r.missed), (0, 0), "{r:?}");

    // A run that finds both reminder times passed at once (the server was
    // down) sends only the later one.
    let r = run(&t, due - 24 * H + 60_000_000).await;
    assert_eq!((r.reminders, r.missed), (1, 0), "{r:?}");
    let reminders = t
        .app
        .store
        .reminders(&t.tenant, "request", &req_id)
        .await
        .unwrap();
    let states: Vec<(&str, &str)> = reminders
        .iter()
        .map(|r| (r.reminder.as_str(), r.email_status.as_str()))
        .collect();
    assert!(
        states.contains(&("259200", "skipped")) && states.contains(&("86400", "sent")),
        "{states:?}"
    );
    // The request is answered: no more reminders, no `missed`.
    for step in ["verify", "complete"] {
        let (status, _, body) = t
            .request(
                Method::POST,
                &format!("/v1/requests/{req_id}/actions"),
                &t.owner,
                Some(json!({ "action": step })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let r = run(&t, due + H).await;
    assert_eq!((r.reminders, r.missed), (0, 0), "{r:?}");

    let events = deadline_events(&t).await;
    let day = &yinyom_core::time::rfc3339(notice_due)[..10];
    assert_eq!(
        summary(&events),
        vec![
            (
                "deadline.approaching".to_string(),
                "notice".to_string(),
                format!("s25:{day}"),
                72 * 3600
            ),
            (
                "deadline.approaching".into(),
                "notice".into(),
                format!("s25:{day}"),
                24 * 3600
            ),
            (
                "deadline.approaching".into(),
                "request".into(),
                req_id.clone(),
                24 * 3600 - 60
            ),
        ]
    );
    // No personal data: neither subject's id nor email is in an event.
    for e in &events {
        let text = e.to_string();
        assert!(
            !text.contains("cust-") && !text.contains("example.com"),
            "{text}"
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            sink.received().len() >= 3
        })
        .await
    );
    let mails = sink.received();
    assert_eq!(mails.len(), 3, "{mails:?}");
    assert!(mails.iter().all(|m| {
        let d = m["data"].as_str().unwrap();
        !d.contains("cust-") && !d.contains("List-Unsubscribe")
    }));
}

async fn breach_and_s25_notices_reach_each_subject_through_the_relay(backend: Backend) {
    let t = TestApp::new(backend).await;
    let (sink, _receiver) = setup(&t).await;
    for i in 1..=5 {
        let (status, _, body) = t
            .request(
                Method::PUT,
                &format!("/v1/subjects/s{i}"),
                &t.owner,
                Some(json!({ "identifiers": { "email": format!("s{i}@example.com") } })),
            )
            .await;
        assert!(status.is_success(), "{body}");
    }
    let (status, _, body) = t
        .request(
            Method::PUT,
            "/v1/subjects/s6",
            &t.owner,
            Some(json!({ "identifiers": { "phone": "+66812345678" } })),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let b = t
        .post(
            "/v1/breaches",
            json!({
                "discovered_at": yinyom_core::time::rfc3339(yinyom_core::time::now() - H),
                "description": "Customer database exposed", "affected_subjects": 6,
                "risk": "high", "risk_assessment": "Emails and phone numbers",
            }),
        )
        .await;
    let id = b["id"].as_str().unwrap().to_string();
    let (status, _, added) = t
        .request(
            Method::POST,
            &format!("/v1/breaches/{id}/recipients"),
            &t.owner,
            Some(json!({ "subjects": ["s1", "s2", "s3", "s4", "s5", "s6", "s1", "nobody"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{added}");
    assert_eq!(added, json!({ "added": 6, "unknown": ["nobody"] }));
    // Only a notification to the subjects carries a message.
    let message = json!({ "channel": "email", "subject": "Security incident",
                          "text": "Your email address was exposed on 3 December. Change your password." });
    let (status, _, body) = t
        .request(
            Method::POST,
            &format!("/v1/breaches/{id}/notifications"),
            &t.owner,
            Some(json!({ "to": "regulator", "message": message })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _, body) = t
        .request(
            Method::POST,
            &format!("/v1/breaches/{id}/notifications"),
            &t.owner,
            Some(json!({ "to": "subjects", "message": message })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["subjects_notified_at"].is_string(), "{body}");
    // Queued by the leader (at once, and by the minute job after that).
    run(&t, yinyom_core::time::now()).await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            let v = t.get(&format!("/v1/breaches/{id}")).await;
            v["subject_notice"]["sent"] == 5 && v["subject_notice"]["failed"] == 1
        })
        .await,
        "{}",
        t.get(&format!("/v1/breaches/{id}")).await
    );
    let v = t.get(&format!("/v1/breaches/{id}")).await;
    let n = &v["subject_notice"];
    assert_eq!(
        (
            n["recipients"].clone(),
            n["pending"].clone(),
            n["queued"].clone()
        ),
        (json!(6), json!(0), json!(0)),
        "{v}"
    );
    assert_eq!(n["message"]["channel"], "email");
    let mails = sink.received();
    let mut to: Vec<String> = mails
        .iter()
        .map(|m| m["to"][0].as_str().unwrap().to_string())
        .collect();
    to.sort();
    assert_eq!(
        to,
        (1..=5)
            .map(|i| format!("s{i}@example.com"))
            .collect::<Vec<_>>()
    );
    assert!(mails.iter().all(|m| {
        let d = m["data"].as_str().unwrap();
        d.contains("Security incident") && !d.contains("List-Unsubscribe")
    }));

    // Per subject, a page at a time.
    let page = t
        .get(&format!("/v1/breaches/{id}/recipients?limit=4"))
        .await;
    let first = page["recipients"].as_array().unwrap().clone();
    assert_eq!(first.len(), 4, "{page}");
    let cursor = page["next_cursor"].as_str().unwrap();
    let page = t
        .get(&format!(
            "/v1/breaches/{id}/recipients?limit=4&cursor={cursor}"
        ))
        .await;
    let rest = page["recipients"].as_array().unwrap().clone();
    assert_eq!(rest.len(), 2, "{page}");
    assert!(page.get("next_cursor").is_none());
    let all: Vec<&Value> = first.iter().chain(rest.iter()).collect();
    let s6 = all.iter().find(|r| r["subject"] == "s6").unwrap();
    assert_eq!(s6["status"], "failed");
    assert_eq!(s6["error"], "the subject has no email");
    assert_eq!(all.iter().filter(|r| r["status"] == "sent").count(), 5);

    // Once only.
    let (status, _, body) = t
        .request(
            Method::POST,
            &format!("/v1/breaches/{id}/notifications"),
            &t.owner,
            Some(json!({ "to": "subjects", "message": message })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // A PDPA s.25 notice through the relay, its message on the record.
    let (status, _, body) = t
        .request(
            Method::PUT,
            "/v1/subjects/s2/acquisition",
            &t.owner,
            Some(json!({ "source": "Partner Bank",
                         "acquired_at": yinyom_core::time::rfc3339(yinyom_core::time::now() - H) })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, a) = t
        .request(
            Method::POST,
            "/v1/subjects/s2/acquisition/notice",
            &t.owner,
            Some(json!({ "method": "email", "message": {
                "channel": "email", "subject": "Where we got your data",
                "text": "Partner Bank gave us your email address on 3 December." } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert!(
        a["notified_at"].is_string() && a["message_id"].is_string(),
        "{a}"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            sink.received().len() == 6
        })
        .await
    );
    let last = sink.received().pop().unwrap();
    assert_eq!(last["to"], json!(["s2@example.com"]));
    let path = format!("/v1/messages/{}", a["message_id"].as_str().unwrap());
    assert!(
        eventually(Duration::from_secs(10), || async {
            t.get(&path).await["status"] == "sent"
        })
        .await,
        "{}",
        t.get(&path).await
    );
    // s6 has no email: refused, nothing recorded.
    t.request(
        Method::PUT,
        "/v1/subjects/s6/acquisition",
        &t.owner,
        Some(json!({ "source": "Partner Bank",
                     "acquired_at": yinyom_core::time::rfc3339(yinyom_core::time::now() - H) })),
    )
    .await;
    let (status, _, body) = t
        .request(
            Method::POST,
            "/v1/subjects/s6/acquisition/notice",
            &t.owner,
            Some(json!({ "method": "email", "message": { "channel": "email", "text": "…" } })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

on_every_backend!(
    breach_reminders_go_out_once_each_and_stop_once_the_regulator_is_told,
    request_and_s25_reminders_follow_the_tenants_hours,
    breach_and_s25_notices_reach_each_subject_through_the_relay,
);
