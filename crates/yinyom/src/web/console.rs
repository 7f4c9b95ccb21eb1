//! The admin console's pages. Each reads and writes through the API's own
//! handlers with the staff member as the principal, so roles, validation
//! and masking are the API's, not a second copy.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::extract::Query;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};
use yinyom_core::consent::ConsentState;
use yinyom_core::contact::ContactKind;
use yinyom_core::purpose::{CONSENT_MODE_SIGNALS, Channel, Lang, LawfulBasis, Purpose};
use yinyom_core::time;

use super::admin::{Fields, Staff, checked_form, csrf_field, failed, shell};
use super::page::{self, tr};
use crate::api::auth::MANAGERS;
use crate::api::extract::Json;
use crate::api::problem::Problem;
use crate::api::{
    admin as api_admin, breaches, notices, purposes, requests, subjects, systems as api_systems,
    webhooks,
};
use crate::app::App;

type FormResult =
    Result<axum::Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>;

const DAY: i64 = 86_400_000_000;

fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// A table of JSON objects: columns are (field, Thai, English).
fn table(
    lang: Lang,
    cols: &[(&str, &'static str, &'static str)],
    rows: &[Value],
    link: Option<(&str, &str)>,
) -> Markup {
    html! {
        table {
            thead { tr { @for (_, th, en) in cols { th scope="col" { (tr(lang, th, en)) } } } }
            tbody {
                @for r in rows {
                    tr {
                        @for (i, (f, _, _)) in cols.iter().enumerate() {
                            td {
                                @match (i, link) {
                                    (0, Some((prefix, key))) => a href={ (prefix) (text(&r[key])) } { (text(&r[*f])) },
                                    _ => (text(&r[*f])),
                                }
                            }
                        }
                    }
                }
                @if rows.is_empty() {
                    tr { td colspan=(cols.len()) .muted { (tr(lang, "ไม่มีรายการ", "Nothing here yet")) } }
                }
            }
        }
    }
}

fn to_json<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------
// Dashboard
// ---------------------------------------------------------------------------

const PALETTE: [&str; 8] = [
    "#0b5cad", "#b42318", "#1a7f37", "#8250df", "#bc4c00", "#0a7c86", "#6e7781", "#cf222e",
];

/// One line per series over `days` days: the share of choices that were
/// grants, per day with choices. (SVG elements are closed explicitly: in
/// HTML, a void-looking `<line>` would swallow what follows.)
fn line_chart(lang: Lang, days: i64, series: &[(String, Vec<Option<f64>>)]) -> Markup {
    let (w, h, left, bottom) = (640.0, 220.0, 36.0, 24.0);
    let x = |i: usize| left + (w - left - 8.0) * i as f64 / (days - 1).max(1) as f64;
    let y = |r: f64| 8.0 + (h - bottom - 8.0) * (1.0 - r);
    html! {
        svg role="img" aria-labelledby="rate-title" viewBox={ "0 0 " (w) " " (h) } width="100%" style="max-width:46rem" {
            title id="rate-title" { (tr(lang, "อัตราการให้ความยินยอมรายวัน 30 วันล่าสุด", "Daily consent rate, last 30 days")) }
            @for pct in [0, 50, 100] {
                line x1=(left) x2=(w - 8.0) y1=(y(pct as f64 / 100.0)) y2=(y(pct as f64 / 100.0)) stroke="#d3d8de" {}
                text x="2" y=(y(pct as f64 / 100.0) + 4.0) { (pct) "%" }
            }
            text x=(left) y=(h - 6.0) { "−29" } text x=(w - 40.0) y=(h - 6.0) { (tr(lang, "วันนี้", "today")) }
            @for (i, (_, points)) in series.iter().enumerate() {
                @let pts: Vec<String> = points.iter().enumerate().filter_map(|(d, r)| r.map(|r| format!("{:.1},{:.1}", x(d), y(r)))).collect();
                @let colour = PALETTE[i % PALETTE.len()];
                polyline fill="none" stroke=(colour) stroke-width="2" points=(pts.join(" ")) {}
                @for p in &pts {
                    @let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
                    circle cx=(px) cy=(py) r="3" fill=(colour) {}
                }
            }
        }
        ul.legend style="list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:1rem" {
            @for (i, (name, _)) in series.iter().enumerate() {
                li { span aria-hidden="true" style={ "display:inline-block;width:.9rem;height:.9rem;margin-right:.3rem;background:" (PALETTE[i % PALETTE.len()]) } {} (name) }
            }
        }
    }
}

fn bar(share: f64, colour: &str) -> Markup {
    let w = (share.clamp(0.0, 1.0) * 160.0).round();
    html! {
        svg width="164" height="14" aria-hidden="true" {
            rect x="0" y="1" width="160" height="12" fill="#eef1f4" {}
            rect x="0" y="1" width=(w) height="12" fill=(colour) {}
        }
    }
}

/// `GET /admin`: consent rates per purpose and channel, over time and
/// now; suppressions by reason; what needs attention.
pub async fn dashboard(State(app): State<Arc<App>>, staff: Staff) -> Response {
    let lang = staff.lang;
    let tenant = staff.who.tenant.to_string();
    let now = time::now();
    let today = now.div_euclid(DAY);
    let since = (today - 29) * DAY;
    let daily = match app.store.daily_choices(&tenant, since).await {
        Ok(d) => d,
        Err(e) => return failed(&staff, "/admin", e.into()),
    };
    let suppressions = app.store.suppressions(&tenant).await.unwrap_or_default();
    // Series: (purpose, channel) → per day (grants, choices).
    // (purpose, channel) → per day (grants, choices).
    type Series = BTreeMap<(String, Option<String>), Vec<(i64, i64)>>;
    let mut per: Series = BTreeMap::new();
    for d in &daily {
        let slot = per
            .entry((d.purpose.clone(), d.channel.clone()))
            .or_insert_with(|| vec![(0, 0); 30]);
        let i = (d.day - (today - 29)).clamp(0, 29) as usize;
        slot[i].1 += d.count;
        if d.action == "grant" {
            slot[i].0 += d.count;
        }
    }
    let names: BTreeMap<String, String> = app
        .view
        .read(&tenant, |tv| {
            tv.purposes
                .values()
                .map(|p| (p.key.clone(), page::in_lang(&p.names, lang)))
                .collect()
        })
        .unwrap_or_default();
    let series: Vec<(String, Vec<Option<f64>>)> = per
        .iter()
        .map(|((p, c), days)| {
            let label = format!(
                "{} · {}",
                names.get(p).cloned().unwrap_or_else(|| p.clone()),
                c.as_deref().unwrap_or(tr(lang, "ทุกช่องทาง", "all channels"))
            );
            let pts = days
                .iter()
                .map(|(g, n)| (*n > 0).then(|| *g as f64 / *n as f64))
                .collect();
            (label, pts)
        })
        .collect();
    // Current state from the view: per consent purpose and channel.
    type Counts = BTreeMap<(String, Option<Channel>), (u64, u64)>;
    let mut current: Counts = BTreeMap::new();
    let mut subjects = 0usize;
    if app.view.bounded() {
        let scanned = app
            .view
            .each_subject(app.store.as_ref(), &tenant, |_, _, sv| {
                subjects += 1;
                for r in &sv.consents.records {
                    let e = current
                        .entry((r.purpose.to_string(), r.channel))
                        .or_default();
                    e.1 += 1;
                    if r.state_at(now) == ConsentState::Granted {
                        e.0 += 1;
                    }
                }
            })
            .await;
        if let Err(e) = scanned {
            return Problem::from(e).into_response();
        }
    } else if let Some((n, tally)) = app.view.read(&tenant, |tv| tv.tally(now)) {
        subjects = n;
        current = tally;
    }
    let overdue_requests = requests::list(
        State(app.clone()),
        Principal(&staff),
        Query(requests::ListQuery {
            status: None,
            overdue: true,
            subject: None,
            limit: Some(crate::api::page::MAX_LIMIT),
            cursor: None,
        }),
    )
    .await
    .map(|j| j.0.requests.len())
    .unwrap_or(0);
    let overdue_breaches = breaches::list(
        State(app.clone()),
        Principal(&staff),
        Query(breaches::BreachQuery { overdue: true }),
    )
    .await
    .map(|j| j.0.breaches.len())
    .unwrap_or(0);
    let total_suppressed: i64 = suppressions.iter().map(|(_, n)| n).sum();
    let max_supp = suppressions
        .iter()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(1)
        .max(1);
    let body = html! {
        h1 { (tr(lang, "ภาพรวม", "Dashboard")) }
        div.row {
            div.card { div.big { (subjects) } div { (tr(lang, "เจ้าของข้อมูล", "subjects")) } }
            div.card { div.big { (total_suppressed) } div { (tr(lang, "ข้อความที่ถูกระงับ", "messages suppressed")) } }
            div.card { div.big.bad[overdue_requests > 0] { (overdue_requests) } div { a href="/admin/requests" { (tr(lang, "คำขอเกินกำหนด", "requests overdue")) } } }
            div.card { div.big.bad[overdue_breaches > 0] { (overdue_breaches) } div { a href="/admin/breaches" { (tr(lang, "เหตุละเมิดที่ยังไม่แจ้งเกิน 72 ชม.", "breaches past 72 h")) } } }
        }
        h2 { (tr(lang, "อัตราการให้ความยินยอมตามวัตถุประสงค์และช่องทาง", "Consent rate by purpose and channel")) }
        p.muted { (tr(lang, "สัดส่วนของการเลือกในแต่ละวันที่เป็นการให้ความยินยอม", "Share of each day's choices that were grants.")) }
        @if series.is_empty() {
            p.muted { (tr(lang, "ยังไม่มีการบันทึกใน 30 วันที่ผ่านมา", "No choices recorded in the last 30 days.")) }
        } @else {
            (line_chart(lang, 30, &series))
        }
        h2 { (tr(lang, "สถานะปัจจุบัน", "Standing now")) }
        table {
            thead { tr {
                th scope="col" { (tr(lang, "วัตถุประสงค์", "Purpose")) }
                th scope="col" { (tr(lang, "ช่องทาง", "Channel")) }
                th scope="col" { (tr(lang, "ยินยอม", "Consented")) }
                th scope="col" { (tr(lang, "ทั้งหมดที่เลือก", "Chose")) }
                th scope="col" { (tr(lang, "อัตรา", "Rate")) }
            } }
            tbody {
                @for ((p, c), (g, n)) in &current {
                    @let share = if *n > 0 { *g as f64 / *n as f64 } else { 0.0 };
                    tr {
                        td { (names.get(p).cloned().unwrap_or_else(|| p.clone())) }
                        td { (c.map_or(tr(lang, "ทุกช่องทาง", "all channels"), Channel::as_str)) }
                        td { (g) } td { (n) }
                        td { (bar(share, "#1a7f37")) " " (format!("{:.0}%", share * 100.0)) }
                    }
                }
            }
        }
        h2 { (tr(lang, "ข้อความที่ถูกระงับตามเหตุผล", "Suppressed messages by reason")) }
        @if suppressions.is_empty() {
            p.muted { (tr(lang, "ยังไม่มีข้อความที่ถูกระงับ", "No message has been suppressed.")) }
        } @else {
            table {
                thead { tr { th scope="col" { (tr(lang, "เหตุผล", "Reason")) } th scope="col" { (tr(lang, "จำนวน", "Count")) } th scope="col" { "" } } }
                tbody { @for (reason, n) in &suppressions {
                    tr { td { (reason) } td { (n) } td { (bar(*n as f64 / max_supp as f64, "#b42318")) } }
                } }
            }
        }
    };
    shell(&staff, "/admin", tr(lang, "ภาพรวม", "Dashboard"), body)
}

/// The staff member as the API's principal.
#[allow(non_snake_case)]
fn Principal(staff: &Staff) -> crate::api::auth::Principal {
    staff.who.clone()
}

// ---------------------------------------------------------------------------
// Purposes
// ---------------------------------------------------------------------------

fn basis_name(b: LawfulBasis, lang: Lang) -> &'static str {
    match b {
        LawfulBasis::Consent => tr(lang, "ความยินยอม", "Consent"),
        LawfulBasis::Contract => tr(lang, "สัญญา", "Contract"),
        LawfulBasis::LegalObligation => tr(lang, "หน้าที่ตามกฎหมาย", "Legal obligation"),
        LawfulBasis::VitalInterest => tr(lang, "ประโยชน์สำคัญต่อชีวิต", "Vital interest"),
        LawfulBasis::PublicTask => tr(lang, "ภารกิจเพื่อประโยชน์สาธารณะ", "Public task"),
        LawfulBasis::LegitimateInterest => {
            tr(lang, "ประโยชน์โดยชอบด้วยกฎหมาย", "Legitimate interest")
        }
        LawfulBasis::ResearchStatistics => tr(lang, "การวิจัยหรือสถิติ", "Research or statistics"),
    }
}

fn purpose_form(staff: &Staff, p: Option<&Purpose>) -> Markup {
    let lang = staff.lang;
    let name = |l: Lang| p.and_then(|p| p.names.get(&l).cloned()).unwrap_or_default();
    let desc = |l: Lang| {
        p.and_then(|p| p.descriptions.get(&l).cloned())
            .unwrap_or_default()
    };
    let action = p.map_or("/admin/purposes".to_string(), |p| {
        format!("/admin/purposes/{}", p.key)
    });
    let banner = p.and_then(|p| p.banner.clone());
    html! {
        form method="post" action=(action) {
            (csrf_field(staff))
            @if p.is_none() {
                div.field { label for="key" { (tr(lang, "รหัส (เช่น marketing.email)", "Key (e.g. marketing.email)")) }
                    input type="text" id="key" name="key" required pattern="[a-z0-9][a-z0-9._-]*"; }
            }
            div.field { label for="name_th" { (tr(lang, "ชื่อ (ไทย)", "Name (Thai)")) } input type="text" id="name_th" name="name_th" value=(name(Lang::Th)); }
            div.field { label for="name_en" { (tr(lang, "ชื่อ (อังกฤษ)", "Name (English)")) } input type="text" id="name_en" name="name_en" value=(name(Lang::En)); }
            div.field { label for="desc_th" { (tr(lang, "คำอธิบาย (ไทย)", "Description (Thai)")) } textarea id="desc_th" name="desc_th" { (desc(Lang::Th)) } }
            div.field { label for="desc_en" { (tr(lang, "คำอธิบาย (อังกฤษ)", "Description (English)")) } textarea id="desc_en" name="desc_en" { (desc(Lang::En)) } }
            div.field { label for="basis" { (tr(lang, "ฐานทางกฎหมาย", "Lawful basis")) }
                select id="basis" name="basis" {
                    @for b in LawfulBasis::ALL { option value=(b.as_str()) selected[p.is_some_and(|p| p.basis == b)] { (basis_name(b, lang)) } }
                }
            }
            fieldset.field { legend { (tr(lang, "ช่องทาง", "Channels")) }
                @for c in Channel::ALL {
                    label.switch { input type="checkbox" name="channels" value=(c.as_str()) checked[p.is_some_and(|p| p.channels.contains(&c))]; (c.as_str()) }
                }
            }
            div.field { label for="retention_days" { (tr(lang, "ระยะเวลาเก็บรักษา (วัน)", "Retention (days)")) }
                input type="number" min="1" id="retention_days" name="retention_days" required value=(p.map_or(365, |p| p.retention_days)); }
            div.field { label for="validity_days" { (tr(lang, "อายุความยินยอม (วัน, เว้นว่าง = จนกว่าจะถอน)", "Consent validity (days; empty: until withdrawn)")) }
                input type="number" min="1" id="validity_days" name="validity_days" value=[p.and_then(|p| p.validity_days)]; }
            fieldset.field { legend { (tr(lang, "แบนเนอร์คุกกี้", "Cookie banner")) }
                label.switch { input type="checkbox" name="banner" checked[banner.is_some()]; (tr(lang, "แสดงเป็นหมวดคุกกี้ในแบนเนอร์", "Show as a cookie category in the banner")) }
                @for s in CONSENT_MODE_SIGNALS {
                    label.switch { input type="checkbox" name="consent_mode" value=(s) checked[banner.as_ref().is_some_and(|b| b.consent_mode.iter().any(|x| x == s))]; code { (s) } }
                }
                label.switch { input type="checkbox" name="sale_or_sharing" checked[banner.as_ref().is_some_and(|b| b.sale_or_sharing)]; (tr(lang, "เป็นการขายหรือแบ่งปันข้อมูล (GPC ปฏิเสธ)", "Sale or sharing of data (Global Privacy Control opts out)")) }
                div.field { label for="cookies" { (tr(lang, "คุกกี้ที่ลบเมื่อถอนความยินยอม (คั่นด้วยช่องว่าง)", "Cookies cleared on withdrawal (space separated)")) }
                    input type="text" id="cookies" name="cookies" value=(banner.as_ref().map(|b| b.cookies.join(" ")).unwrap_or_default()); }
            }
            button type="submit" { (tr(lang, "บันทึก", "Save")) }
        }
    }
}

/// The purpose fields of a form, as the API's JSON.
fn purpose_json(f: &Fields) -> Result<Value, Problem> {
    let mut names = serde_json::Map::new();
    let mut descriptions = serde_json::Map::new();
    for (l, n, d) in [("th", "name_th", "desc_th"), ("en", "name_en", "desc_en")] {
        if let Some(v) = f.text(n) {
            names.insert(l.into(), v.into());
        }
        if let Some(v) = f.text(d) {
            descriptions.insert(l.into(), v.into());
        }
    }
    let number = |name: &str| -> Result<Option<u32>, Problem> {
        f.text(name)
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| Problem::validation(name, "must be a whole number of days"))
            })
            .transpose()
    };
    let banner = f.checked("banner").then(|| {
        json!({
            "consent_mode": f.all("consent_mode"),
            "sale_or_sharing": f.checked("sale_or_sharing"),
            "cookies": f.text("cookies").unwrap_or_default().split_whitespace().collect::<Vec<_>>(),
        })
    });
    Ok(json!({
        "names": names,
        "descriptions": descriptions,
        "basis": f.text("basis").unwrap_or_else(|| "consent".into()),
        "channels": f.all("channels"),
        "retention_days": number("retention_days")?.unwrap_or(0),
        "validity_days": number("validity_days")?,
        "banner": banner,
    }))
}

/// `GET /admin/purposes`.
pub async fn purposes_page(State(app): State<Arc<App>>, staff: Staff) -> Response {
    let lang = staff.lang;
    let list = match purposes::list(State(app.clone()), Principal(&staff)).await {
        Ok(l) => l.0.purposes,
        Err(p) => return failed(&staff, "/admin", p),
    };
    let manager = MANAGERS.contains(&staff.member.role);
    let body = html! {
        h1 { (tr(lang, "วัตถุประสงค์", "Purposes")) }
        table {
            thead { tr {
                th scope="col" { (tr(lang, "รหัส", "Key")) } th scope="col" { (tr(lang, "ชื่อ", "Name")) }
                th scope="col" { (tr(lang, "ฐานทางกฎหมาย", "Basis")) } th scope="col" { (tr(lang, "ช่องทาง", "Channels")) }
                th scope="col" { (tr(lang, "เก็บรักษา", "Retention")) } th scope="col" { (tr(lang, "แบนเนอร์", "Banner")) }
            } }
            tbody { @for p in &list { tr {
                td { @if manager { a href={ "/admin/purposes/" (p.key) } { (p.key) } } @else { (p.key) } }
                td { (page::in_lang(&p.names, lang)) }
                td { (basis_name(p.basis, lang)) @if p.is_sensitive() { " · " span.bad { (tr(lang, "ข้อมูลอ่อนไหว", "sensitive")) } } }
                td { (p.channels.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")) }
                td { (p.retention_days) " " (tr(lang, "วัน", "days")) }
                td { @if p.banner.is_some() { "✓" } }
            } } }
        }
        @if manager {
            h2 { (tr(lang, "เพิ่มวัตถุประสงค์", "Add a purpose")) }
            (purpose_form(&staff, None))
        }
    };
    shell(
        &staff,
        "/admin/purposes",
        tr(lang, "วัตถุประสงค์", "Purposes"),
        body,
    )
}

/// `POST /admin/purposes`.
pub async fn create_purpose(
    State(app): State<Arc<App>>,
    staff: Staff,
    form: FormResult,
) -> Response {
    let f = match checked_form(&staff, form) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let made = async {
        let mut v = purpose_json(&f)?;
        v["key"] = f.text("key").unwrap_or_default().into();
        let p: Purpose =
            serde_json::from_value(v).map_err(|e| Problem::validation("purpose", e.to_string()))?;
        purposes::create(State(app.clone()), Principal(&staff), Json(p)).await
    };
    match made.await {
        Ok(_) => Redirect::to("/admin/purposes").into_response(),
        Err(p) => failed(&staff, "/admin/purposes", p),
    }
}

/// `GET /admin/purposes/{key}`.
pub async fn purpose_page(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(key): Path<String>,
) -> Response {
    let lang = staff.lang;
    let p = match purposes::get(
        State(app.clone()),
        Principal(&staff),
        crate::api::extract::Path(key),
    )
    .await
    {
        Ok(p) => p.0,
        Err(p) => return failed(&staff, "/admin/purposes", p),
    };
    let body = html! {
        h1 { (page::in_lang(&p.names, lang)) " " code { (p.key) } }
        (purpose_form(&staff, Some(&p)))
    };
    shell(
        &staff,
        "/admin/purposes",
        tr(lang, "แก้ไขวัตถุประสงค์", "Edit purpose"),
        body,
    )
}

/// `POST /admin/purposes/{key}`.
pub async fn update_purpose(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(key): Path<String>,
    form: FormResult,
) -> Response {
    let f = match checked_form(&staff, form) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let done = async {
        let v = purpose_json(&f)?;
        let body = axum::body::Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
        purposes::patch(
            State(app.clone()),
            Principal(&staff),
            crate::api::extract::Path(key.clone()),
            body,
        )
        .await
    };
    match done.await {
        Ok(_) => Redirect::to("/admin/purposes").into_response(),
        Err(p) => failed(&staff, &format!("/admin/purposes/{key}"), p),
    }
}

// ---------------------------------------------------------------------------
// Notices
// ---------------------------------------------------------------------------

/// `GET /admin/notices`.
pub async fn notices_page(State(app): State<Arc<App>>, staff: Staff) -> Response {
    let lang = staff.lang;
    let list = match notices::list(State(app.clone()), Principal(&staff)).await {
        Ok(l) => l.0.notices,
        Err(p) => return failed(&staff, "/admin", p),
    };
    let purposes: Vec<(String, String)> = app
        .view
        .read(&staff.who.tenant, |tv| {
            let mut v: Vec<(String, String)> = tv
                .purposes
                .values()
                .map(|p| (p.key.clone(), page::in_lang(&p.names, lang)))
                .collect();
            v.sort();
            v
        })
        .unwrap_or_default();
    let manager = MANAGERS.contains(&staff.member.role);
    let body = html! {
        h1 { (tr(lang, "ประกาศความเป็นส่วนตัว", "Privacy notices")) }
        @for n in &list {
            section.card {
                h2 { (n.texts.get(&lang).or_else(|| n.texts.values().next()).map(|t| t.title.clone()).unwrap_or_default()) " " code { (n.key) } }
                p { (tr(lang, "ฉบับที่ ", "Version ")) (n.version) " · " (page::date(n.published_at))
                    @if n.material { " · " span.bad { (tr(lang, "เปลี่ยนแปลงสาระสำคัญ", "material change")) } } }
                p.muted { (tr(lang, "วัตถุประสงค์: ", "Purposes: ")) (n.purposes.join(", ")) }
                p.muted { "SHA-256 " code { (n.content_hash) } }
            }
        }
        @if list.is_empty() { p.muted { (tr(lang, "ยังไม่มีประกาศ", "No notice yet.")) } }
        @if manager {
            h2 { (tr(lang, "เผยแพร่ฉบับใหม่", "Publish a version")) }
            form method="post" action="/admin/notices" {
                (csrf_field(&staff))
                div.field { label for="key" { (tr(lang, "รหัสประกาศ (ฉบับใหม่ของรหัสเดิม หรือรหัสใหม่)", "Notice key (a new version of an existing key, or a new key)")) }
                    input type="text" id="key" name="key" required list="notice-keys";
                    datalist id="notice-keys" { @for n in &list { option value=(n.key) {} } } }
                div.field { label for="title_th" { (tr(lang, "หัวข้อ (ไทย)", "Title (Thai)")) } input type="text" id="title_th" name="title_th"; }
                div.field { label for="body_th" { (tr(lang, "เนื้อหา (ไทย)", "Text (Thai)")) } textarea id="body_th" name="body_th" {} }
                div.field { label for="title_en" { (tr(lang, "หัวข้อ (อังกฤษ)", "Title (English)")) } input type="text" id="title_en" name="title_en"; }
                div.field { label for="body_en" { (tr(lang, "เนื้อหา (อังกฤษ)", "Text (English)")) } textarea id="body_en" name="body_en" {} }
                fieldset.field { legend { (tr(lang, "วัตถุประสงค์ที่ขอความยินยอม", "Purposes it asks for")) }
                    @for (k, name) in &purposes { label.switch { input type="checkbox" name="purposes" value=(k); (name) " " code { (k) } } } }
                label.switch { input type="checkbox" name="material"; (tr(lang, "เปลี่ยนแปลงสาระสำคัญ: ความยินยอมเดิมต้องขอใหม่", "Material change: earlier consents need renewal")) }
                p { button type="submit" { (tr(lang, "เผยแพร่", "Publish")) } }
            }
        }
    };
    shell(
        &staff,
        "/admin/notices",
        tr(lang, "ประกาศ", "Notices"),
        body,
    )
}

/// `POST /admin/notices`.
pub async fn publish_notice(
    State(app): State<Arc<App>>,
    staff: Staff,
    form: FormResult,
) -> Response {
    let f = match checked_form(&staff, form) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let done = async {
        let mut texts = serde_json::Map::new();
        for (l, t, b) in [("th", "title_th", "body_th"), ("en", "title_en", "body_en")] {
            if let (Some(t), Some(b)) = (f.text(t), f.text(b)) {
                texts.insert(l.into(), json!({ "title": t, "body": b }));
            }
        }
        let draft = serde_json::from_value(json!({
            "key": f.text("key").unwrap_or_default(),
            "texts": texts,
            "purposes": f.all("purposes"),
            "material": f.checked("material"),
        }))
        .map_err(|e| Problem::validation("notice", e.to_string()))?;
        notices::publish(State(app.clone()), Principal(&staff), Json(draft)).await
    };
    match done.await {
        Ok(_) => Redirect::to("/admin/notices").into_response(),
        Err(p) => failed(&staff, "/admin/notices", p),
    }
}

// ---------------------------------------------------------------------------
// Subjects
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct Search {
    pub q: Option<String>,
}

/// `GET /admin/subjects?q=`: by id, email or phone number.
pub async fn subjects_page(
    State(app): State<Arc<App>>,
    staff: Staff,
    axum::extract::Query(s): axum::extract::Query<Search>,
) -> Response {
    let lang = staff.lang;
    let q = s.q.as_deref().map(str::trim).unwrap_or("");
    let mut found: Vec<String> = Vec::new();
    if !q.is_empty() && q.len() <= 200 {
        if let Ok(Some(r)) = app.store.subject(&staff.who.tenant, q).await {
            found.push(r.id);
        }
        for kind in [ContactKind::Email, ContactKind::Phone, ContactKind::LineId] {
            if let Ok(v) = kind.normalize(q)
                && let Ok(hits) =
                    crate::profiles::find(&app, &staff.who.tenant, kind.as_str(), &v).await
            {
                found.extend(hits.into_iter().map(|h| h.record.id));
            }
        }
        found.sort();
        found.dedup();
        if found.len() == 1 {
            return Redirect::to(&format!("/admin/subjects/{}", urlencode(&found[0])))
                .into_response();
        }
    }
    let body = html! {
        h1 { (tr(lang, "ค้นหาเจ้าของข้อมูล", "Find a subject")) }
        form method="get" action="/admin/subjects" role="search" {
            div.field {
                label for="q" { (tr(lang, "รหัสลูกค้า อีเมล หรือเบอร์โทรศัพท์", "Customer id, email or phone number")) }
                input type="text" id="q" name="q" value=(q);
            }
            button type="submit" { (tr(lang, "ค้นหา", "Search")) }
        }
        @if !q.is_empty() {
            @if found.is_empty() { p.muted role="status" { (tr(lang, "ไม่พบ", "No subject found.")) } }
            ul { @for id in &found { li { a href={ "/admin/subjects/" (urlencode(id)) } { (id) } } } }
        }
    };
    shell(
        &staff,
        "/admin/subjects",
        tr(lang, "เจ้าของข้อมูล", "Subjects"),
        body,
    )
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /admin/subjects/{id}`: the profile, masked for the role (reads in
/// clear are audited), consents, history with receipts and evidence.
pub async fn subject_page(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> Response {
    let lang = staff.lang;
    let path = "/admin/subjects";
    let view = match crate::profiles::read(&app, &staff.who.tenant, &id).await {
        Ok(Some(s)) => {
            match subjects::present(&app, &staff.who, s, "admin console /admin/subjects/{id}").await
            {
                Ok(v) => Some(to_json(v)),
                Err(p) => return failed(&staff, path, p),
            }
        }
        Ok(None) => None,
        Err(e) => return failed(&staff, path, e.into()),
    };
    let history = match subjects::consents(
        State(app.clone()),
        Principal(&staff),
        crate::api::extract::Path(id.clone()),
        crate::api::extract::Query(subjects::HistoryQuery { history: true }),
    )
    .await
    {
        Ok(h) => to_json(h.0),
        Err(p) => return failed(&staff, path, p),
    };
    let empty = vec![];
    let contacts = view
        .as_ref()
        .and_then(|v| v["contacts"].as_array())
        .unwrap_or(&empty);
    let body = html! {
        h1 { (tr(lang, "เจ้าของข้อมูล", "Subject")) " " code { (id) } }
        @if let Some(v) = &view {
            h2 { (tr(lang, "ช่องทางติดต่อ", "Contact points")) }
            table {
                thead { tr { th scope="col" { (tr(lang, "ประเภท", "Kind")) } th scope="col" { (tr(lang, "ค่า", "Value")) } th scope="col" { (tr(lang, "ความยินยอมตามช่องทาง", "Consent per channel")) } } }
                tbody { @for c in contacts { tr {
                    td { (text(&c["kind"])) }
                    td.contact data-masked=(c["masked"].as_bool().unwrap_or(true)) { (text(&c["value"])) @if c["masked"].as_bool() == Some(true) { " " span.muted { (tr(lang, "(ปิดบัง)", "(masked)")) } } }
                    td { @if let Some(ch) = c["channels"].as_object() { @for (k, s) in ch { (k) ": " (text(&s["status"])) " " } } }
                } } }
            }
            @if let Some(attrs) = v["attributes"].as_object() && !attrs.is_empty() {
                h2 { (tr(lang, "ข้อมูลประกอบ", "Attributes")) }
                table { tbody { @for (k, a) in attrs { tr { th scope="row" { (k) } td { (text(a)) } } } } }
            }
            @let flags = &v["flags"];
            @if flags["erased"].as_bool() == Some(true) { p.bad { (tr(lang, "ลบข้อมูลแล้ว", "Erased")) } }
            @if flags["restricted"].as_array().is_some_and(|a| !a.is_empty()) { p.bad { (tr(lang, "ระงับการประมวลผล: ", "Restricted: ")) (text(&flags["restricted"])) } }
            @if flags["objected"].as_array().is_some_and(|a| !a.is_empty()) { p.bad { (tr(lang, "คัดค้าน: ", "Objected: ")) (text(&flags["objected"])) } }
        } @else {
            p.muted { (tr(lang, "ไม่มีโปรไฟล์ (เช่น ผู้เยี่ยมชมแบบไม่ระบุตัวตน)", "No profile (an anonymous visitor, for example).")) }
        }
        h2 { (tr(lang, "ความยินยอมปัจจุบัน", "Current consents")) }
        (table(lang, &[("purpose", "วัตถุประสงค์", "Purpose"), ("channel", "ช่องทาง", "Channel"), ("state", "สถานะ", "State"), ("occurred_at", "เมื่อ", "When"), ("source", "ที่มา", "Source")],
            history["consents"].as_array().unwrap_or(&empty), None))
        h2 { (tr(lang, "ประวัติในบัญชีความยินยอม", "Ledger history")) }
        p { a href="/admin/ledger" { (tr(lang, "ตรวจสอบห่วงโซ่แฮชของบัญชี", "Verify the ledger's hash chain")) } }
        table {
            thead { tr {
                th scope="col" { "#" } th scope="col" { (tr(lang, "การกระทำ", "Action")) } th scope="col" { (tr(lang, "วัตถุประสงค์", "Purpose")) }
                th scope="col" { (tr(lang, "เมื่อ", "When")) } th scope="col" { (tr(lang, "ที่มา", "Source")) } th scope="col" { (tr(lang, "ใบรับรอง", "Receipt")) }
                th scope="col" { (tr(lang, "หลักฐาน", "Evidence")) } th scope="col" { (tr(lang, "แฮช", "Hash")) }
            } }
            tbody { @for e in history["history"].as_array().unwrap_or(&empty) { tr {
                td { (text(&e["seq"])) } td { (text(&e["action"])) }
                td { (text(&e["purpose"])) @if !e["channel"].is_null() { " · " (text(&e["channel"])) } }
                td { (text(&e["occurred_at"])) } td { (text(&e["source"])) }
                td { @if !e["receipt"].is_null() { code { (text(&e["receipt"])) } } }
                td { @if let Some(ev) = e["evidence"].as_object() { @for (k, x) in ev { @if !x.is_null() { span { (k) ": " (text(x)) } br; } } } @else { span.muted { (tr(lang, "(เฉพาะผู้ดูแล)", "(managers only)")) } } }
                td { code title=(text(&e["hash"])) { (text(&e["hash"]).chars().take(12).collect::<String>()) "…" } }
            } } }
        }
        @if let Some(rs) = history["receipts"].as_array() && !rs.is_empty() {
            h2 { (tr(lang, "ใบรับรองที่ลงนาม", "Signed receipts")) }
            ul { @for r in rs { li { code { (text(&r["id"])) } " · " (text(&r["created_at"])) } } }
        }
    };
    shell(&staff, path, tr(lang, "เจ้าของข้อมูล", "Subject"), body)
}

// ---------------------------------------------------------------------------
// Ledger, requests, breaches, webhooks, audit
// ---------------------------------------------------------------------------

/// `GET /admin/ledger`: recompute the chain now.
pub async fn ledger_page(State(app): State<Arc<App>>, staff: Staff) -> Response {
    let lang = staff.lang;
    let r = match api_admin::verify(State(app.clone()), Principal(&staff)).await {
        Ok(r) => r.0,
        Err(p) => return failed(&staff, "/admin", p),
    };
    let body = html! {
        h1 { (tr(lang, "ตรวจสอบบัญชีความยินยอม", "Ledger verification")) }
        @if r.ok {
            p.notice role="status" { span.ok { (tr(lang, "ถูกต้อง", "Intact")) } " — " (r.checked) (tr(lang, " รายการ คำนวณแฮชใหม่แล้วตรงกันทั้งหมด", " entries recomputed, every hash matches.")) }
        } @else {
            p.error role="alert" { span.bad { (tr(lang, "พบการแก้ไข", "Altered")) } " — " (serde_json::to_string(&r.broken).unwrap_or_default()) }
        }
        p.muted { (tr(lang, "ตรวจเมื่อ ", "Checked at ")) (page::date(time::now())) }
    };
    shell(&staff, "/admin/ledger", tr(lang, "บัญชี", "Ledger"), body)
}

/// `GET /admin/requests`: the queue, soonest due first.
pub async fn requests_page(State(app): State<Arc<App>>, staff: Staff) -> Response {
    let lang = staff.lang;
    let mut list = match requests::list(
        State(app.clone()),
        Principal(&staff),
        Query(requests::ListQuery {
            status: None,
            overdue: false,
            subject: None,
            limit: Some(crate::api::page::MAX_LIMIT),
            cursor: None,
        }),
    )
    .await
    {
        Ok(l) => l.0.requests,
        Err(p) => return failed(&staff, "/admin", p),
    };
    list.sort_by(|a, b| {
        (a.closed_at.is_some(), &a.due_at).cmp(&(b.closed_at.is_some(), &b.due_at))
    });
    let body = html! {
        h1 { (tr(lang, "คำขอใช้สิทธิ", "Rights requests")) }
        table {
            thead { tr {
                th scope="col" { (tr(lang, "เลขที่", "Number")) } th scope="col" { (tr(lang, "ประเภท", "Kind")) }
                th scope="col" { (tr(lang, "เจ้าของข้อมูล", "Subject")) } th scope="col" { (tr(lang, "สถานะ", "Status")) }
                th scope="col" { (tr(lang, "ได้รับ", "Received")) } th scope="col" { (tr(lang, "ครบกำหนด", "Due")) }
            } }
            tbody { @for r in &list { tr {
                td { a href={ "/admin/requests/" (r.id) } { (r.id) } }
                td { (r.kind.as_str()) } td { (r.subject.clone().unwrap_or_else(|| "—".into())) }
                td { (r.status.as_str()) } td { (r.received_at) }
                td { @if r.overdue { span.bad { (r.due_at) " " (tr(lang, "(เกินกำหนด)", "(overdue)")) } } @else { (r.due_at) } }
            } }
            @if list.is_empty() { tr { td colspan="6" .muted { (tr(lang, "ไม่มีคำขอ", "No request.")) } } } }
        }
    };
    shell(
        &staff,
        "/admin/requests",
        tr(lang, "คำขอใช้สิทธิ", "Requests"),
        body,
    )
}

/// `GET /admin/requests/{id}`.
pub async fn request_page(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> Response {
    let lang = staff.lang;
    let r = match requests::get(
        State(app.clone()),
        Principal(&staff),
        crate::api::extract::Path(id),
    )
    .await
    {
        Ok(r) => r.0,
        Err(p) => return failed(&staff, "/admin/requests", p),
    };
    let open = r.closed_at.is_none();
    let body = html! {
        h1 { (tr(lang, "คำขอ ", "Request ")) code { (r.id) } }
        table { tbody {
            tr { th scope="row" { (tr(lang, "ประเภท", "Kind")) } td { (r.kind.as_str()) } }
            tr { th scope="row" { (tr(lang, "เจ้าของข้อมูล", "Subject")) } td { @if let Some(s) = &r.subject { a href={ "/admin/subjects/" (urlencode(s)) } { (s) } } } }
            tr { th scope="row" { (tr(lang, "สถานะ", "Status")) } td { (r.status.as_str()) } }
            tr { th scope="row" { (tr(lang, "ช่องทางที่ได้รับ", "Arrived via")) } td { (r.via) } }
            tr { th scope="row" { (tr(lang, "ครบกำหนด", "Due")) } td.bad[r.overdue] { (r.due_at) @if r.extended { " " (tr(lang, "(ขยายแล้ว)", "(extended)")) } } }
        } }
        @if let Some(systems) = r.systems.as_ref().filter(|s| !s.is_empty()) {
            h2 { (tr(lang, "ระบบที่เชื่อมต่อ", "Connected systems")) }
            table.systems {
                thead { tr {
                    th scope="col" { (tr(lang, "ระบบ", "System")) } th scope="col" { (tr(lang, "สถานะ", "Status")) }
                    th scope="col" { (tr(lang, "แถว", "Rows")) } th scope="col" { (tr(lang, "ครั้งที่ลอง", "Attempts")) }
                    th scope="col" { (tr(lang, "ข้อผิดพลาด", "Error")) } th scope="col" { (tr(lang, "เสร็จเมื่อ", "Finished")) }
                } }
                tbody { @for s in systems { tr {
                    td { a href={ "/admin/systems#system-" (s.key) } { code { (s.key) } } }
                    td.bad[s.status == "failed"] { (s.status)
                        @if let Some(at) = &s.retry_at { br; span.muted { (tr(lang, "ลองใหม่ ", "retry at ")) (at) } } }
                    td { (s.rows) } td { (s.attempts) }
                    td { (s.error.clone().unwrap_or_else(|| "—".into())) @if let Some(n) = &s.note { (tr(lang, "บันทึก: ", "Note: ")) (n) } }
                    td { (s.finished_at.clone().unwrap_or_else(|| "—".into())) }
                } } }
            }
            @for s in systems.iter().filter(|s| s.status == "manual") {
                form.confirm method="post" action={ "/admin/requests/" (r.id) "/systems/" (s.key) } {
                    (csrf_field(&staff))
                    div.field { label for={ "note-" (s.key) } { (tr(lang, "ยืนยันว่าทีมดำเนินการใน ", "Confirm the team has acted in ")) code { (s.key) } (tr(lang, " แล้ว: บันทึก", ": note")) }
                        textarea id={ "note-" (s.key) } name="note" required {} }
                    button type="submit" { (tr(lang, "ยืนยัน", "Confirm")) }
                }
            }
        }
        @if let Some(hooks) = r.hooks.as_ref().filter(|h| !h.is_empty()) {
            h2 { (tr(lang, "ฮุกของคำขอ", "Request hooks")) }
            table.hooks {
                thead { tr {
                    th scope="col" { (tr(lang, "ฮุก", "Hook")) } th scope="col" { (tr(lang, "ขั้น", "Stage")) }
                    th scope="col" { (tr(lang, "สถานะ", "Status")) } th scope="col" { (tr(lang, "ครั้งที่ลอง", "Attempts")) }
                    th scope="col" { (tr(lang, "เหตุผล / ข้อผิดพลาด", "Reason / error")) }
                } }
                tbody { @for h in hooks { tr {
                    td { code { (h.id) } } td { (h.stage.as_str()) }
                    td.bad[matches!(h.status.as_str(), "failed" | "denied")] { (h.status.as_str())
                        @if h.awaiting_reply { br; span.muted { (tr(lang, "รอคำตอบ", "awaiting its reply")) } }
                        @if let Some(at) = &h.retry_at { br; span.muted { (tr(lang, "ลองใหม่ ", "retry at ")) (at) } } }
                    td { (h.attempts) }
                    td { (h.reason.clone().or_else(|| h.error.clone()).unwrap_or_else(|| "—".into())) }
                } } }
            }
        }
        h2 { (tr(lang, "ขั้นตอน", "Steps")) }
        (table(lang, &[("at", "เมื่อ", "When"), ("action", "การกระทำ", "Action"), ("actor", "โดย", "By"), ("reason", "เหตุผล", "Reason"), ("outcome", "ผล", "Outcome")],
            to_json(&r.steps).as_array().map(Vec::as_slice).unwrap_or(&[]), None))
        @if open {
            h2 { (tr(lang, "ดำเนินการ", "Move it on")) }
            form method="post" action={ "/admin/requests/" (r.id) } {
                (csrf_field(&staff))
                div.field { label for="action" { (tr(lang, "การกระทำ", "Action")) }
                    select id="action" name="action" {
                        option value="verify" { (tr(lang, "ยืนยันตัวตนแล้ว", "Identity verified")) }
                        option value="start" { (tr(lang, "เริ่มดำเนินการ", "Start")) }
                        option value="complete" { (tr(lang, "ดำเนินการให้เสร็จ", "Carry out and complete")) }
                        option value="reject" { (tr(lang, "ปฏิเสธ (ต้องระบุเหตุผล)", "Reject (give the reason)")) }
                        option value="extend" { (tr(lang, "ขยายเวลา (ต้องระบุเหตุผล)", "Extend (give the reason)")) }
                    } }
                div.field { label for="reason" { (tr(lang, "เหตุผล", "Reason")) } textarea id="reason" name="reason" {} }
                button type="submit" { (tr(lang, "บันทึก", "Record")) }
            }
        }
    };
    shell(&staff, "/admin/requests", tr(lang, "คำขอ", "Request"), body)
}

/// `POST /admin/requests/{id}`.
pub async fn act_on_request(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    form: FormResult,
) -> Response {
    let f = match checked_form(&staff, form) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let back = format!("/admin/requests/{id}");
    let input: Result<requests::ActionInput, _> = serde_json::from_value(json!({
        "action": f.text("action").unwrap_or_default(),
        "reason": f.text("reason"),
    }));
    let input = match input {
        Ok(i) => i,
        Err(e) => return failed(&staff, &back, Problem::validation("action", e.to_string())),
    };
    match requests::act(
        State(app.clone()),
        Principal(&staff),
        crate::api::extract::Path(id),
        Json(input),
    )
    .await
    {
        Ok(_) => Redirect::to(&back).into_response(),
        Err(p) => failed(&staff, &back, p),
    }
}

/// `GET /admin/breaches`.
pub async fn breaches_page(State(app): State<Arc<App>>, staff: Staff) -> Response {
    let lang = staff.lang;
    let list = match breaches::list(
        State(app.clone()),
        Principal(&staff),
        Query(breaches::BreachQuery { overdue: false }),
    )
    .await
    {
        Ok(l) => to_json(l.0.breaches),
        Err(p) => return failed(&staff, "/admin", p),
    };
    let rows = list.as_array().cloned().unwrap_or_default();
    let body = html! {
        h1 { (tr(lang, "ทะเบียนเหตุละเมิดข้อมูล", "Breach register")) }
        p.muted { (tr(lang, "ต้องแจ้งสำนักงานคณะกรรมการฯ ภายใน 72 ชั่วโมงนับแต่ทราบเหตุ (มาตรา 37(4))", "The regulator must be told within 72 hours of discovery (PDPA s.37(4), GDPR Art. 33).")) }
        (table(lang, &[("id", "เลขที่", "Number"), ("discovered_at", "ทราบเหตุ", "Discovered"), ("description", "รายละเอียด", "Description"),
            ("risk", "ความเสี่ยง", "Risk"), ("affected_subjects", "ผู้ได้รับผลกระทบ", "People affected"), ("regulator_due_at", "ต้องแจ้งภายใน", "Regulator due"),
            ("overdue", "เกินกำหนด", "Overdue")], &rows, None))
    };
    shell(
        &staff,
        "/admin/breaches",
        tr(lang, "เหตุละเมิด", "Breaches"),
        body,
    )
}

/// `GET /admin/webhooks`.
pub async fn webhooks_page(State(app): State<Arc<App>>, staff: Staff) -> Response {
    let lang = staff.lang;
    let list = match webhooks::list(State(app.clone()), Principal(&staff)).await {
        Ok(l) => to_json(l.0.webhooks),
        Err(p) => return failed(&staff, "/admin", p),
    };
    let rows = list.as_array().cloned().unwrap_or_default();
    let body = html! {
        h1 { "Webhooks" }
        (table(lang, &[("id", "รหัส", "Id"), ("url", "ปลายทาง", "URL"), ("events", "เหตุการณ์", "Events"), ("purposes", "วัตถุประสงค์", "Purposes"), ("description", "คำอธิบาย", "Description")],
            &rows, Some(("/admin/webhooks/", "id"))))
    };
    shell(&staff, "/admin/webhooks", "Webhooks", body)
}

/// `GET /admin/webhooks/{id}`: its deliveries, newest first.
pub async fn webhook_page(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> Response {
    let lang = staff.lang;
    let list = match webhooks::deliveries(
        State(app.clone()),
        Principal(&staff),
        crate::api::extract::Path(id.clone()),
        crate::api::extract::Query(webhooks::DeliveryQuery {
            status: None,
            limit: Some(200),
        }),
    )
    .await
    {
        Ok(l) => to_json(l.0.deliveries),
        Err(p) => return failed(&staff, "/admin/webhooks", p),
    };
    let mut rows = list.as_array().cloned().unwrap_or_default();
    for r in &mut rows {
        if let Some(t) = r["updated_at"].as_i64() {
            r["updated_at"] = page::date(t).into();
        }
    }
    let body = html! {
        h1 { "Webhook " code { (id) } }
        (table(lang, &[("seq", "ลำดับ", "Seq"), ("status", "สถานะ", "Status"), ("attempts", "ครั้ง", "Attempts"), ("last_code", "รหัสตอบกลับ", "Last code"),
            ("last_error", "ข้อผิดพลาด", "Last error"), ("updated_at", "ล่าสุด", "Updated")], &rows, None))
    };
    shell(&staff, "/admin/webhooks", "Webhook", body)
}

/// `GET /admin/audit`: every read of personal data in clear.
pub async fn audit_page(State(app): State<Arc<App>>, staff: Staff) -> Response {
    let lang = staff.lang;
    let list = match api_admin::audit(
        State(app.clone()),
        Principal(&staff),
        crate::api::extract::Query(api_admin::AuditQuery {
            before: None,
            limit: Some(200),
        }),
    )
    .await
    {
        Ok((_, l)) => to_json(l.0),
        Err(p) => return failed(&staff, "/admin", p),
    };
    let mut rows = list.as_array().cloned().unwrap_or_default();
    for r in &mut rows {
        if let Some(t) = r["at"].as_i64() {
            r["at"] = page::date(t).into();
        }
    }
    let body = html! {
        h1 { (tr(lang, "บันทึกการเข้าถึงข้อมูลส่วนบุคคล", "Audit log of personal data read in clear")) }
        (table(lang, &[("at", "เมื่อ", "When"), ("actor", "ผู้อ่าน", "Who"), ("subject", "ของใคร", "Whose"), ("fields", "ข้อมูล", "Fields"), ("context", "ที่", "Where")], &rows, None))
    };
    shell(
        &staff,
        "/admin/audit",
        tr(lang, "บันทึกการเข้าถึง", "Audit log"),
        body,
    )
}

// ---------------------------------------------------------------------------
// Connected systems
// ---------------------------------------------------------------------------

fn health_cell(lang: Lang, h: Option<&crate::systems::Health>) -> Markup {
    html! {
        @match h {
            None => span.muted { (tr(lang, "ยังไม่ได้ทดสอบ", "not tested yet")) },
            Some(h) if h.ok => span.ok { (tr(lang, "ใช้งานได้", "healthy")) " · " (h.source) " " (page::date(h.at)) },
            Some(h) => span.bad { (tr(lang, "มีปัญหา", "failing")) " · " (h.source) " " (page::date(h.at)) ": " (h.error.clone().unwrap_or_default()) },
        }
    }
}

/// `GET /admin/systems`: each connected system with its health and data map.
pub async fn systems_page(State(app): State<Arc<App>>, staff: Staff) -> Response {
    let lang = staff.lang;
    let list = match api_systems::list(State(app.clone()), Principal(&staff)).await {
        Ok(l) => l.0.systems,
        Err(p) => return failed(&staff, "/admin", p),
    };
    let manager = MANAGERS.contains(&staff.member.role);
    let tenant = staff.who.tenant.clone();
    let body = html! {
        h1 { (tr(lang, "ระบบที่เชื่อมต่อ", "Connected systems")) }
        p.muted { (tr(lang, "คำขอใช้สิทธิและความยินยอมจะถูกดำเนินการในระบบเหล่านี้ด้วย ลงทะเบียนผ่าน API: POST /v1/systems",
            "Rights requests and consent changes are carried out in these systems too. Register them through the API: POST /v1/systems.")) }
        table {
            thead { tr {
                th scope="col" { (tr(lang, "รหัส", "Key")) } th scope="col" { (tr(lang, "ชื่อ", "Name")) }
                th scope="col" { (tr(lang, "ชนิด", "Kind")) } th scope="col" { (tr(lang, "การเชื่อมต่อ", "Connection")) }
                th scope="col" { (tr(lang, "สถานะ", "Health")) }
                @if manager { th scope="col" { (tr(lang, "ทดสอบ", "Test")) } }
            } }
            tbody {
                @for s in &list { tr {
                    td { a href={ "#system-" (s.key) } { code { (s.key) } } } td { (s.name) } td { (s.kind.as_str()) }
                    td { (s.connection.as_ref().and_then(|c| c.display.clone()).unwrap_or_else(|| "—".into())) }
                    td.health { (health_cell(lang, app.systems.health_of(&tenant, &s.key).as_ref())) }
                    @if manager { td { @if s.kind.as_str() != "manual" {
                        form method="post" action={ "/admin/systems/" (s.key) "/test" } {
                            (csrf_field(&staff))
                            button type="submit" { (tr(lang, "ทดสอบ", "Test")) }
                        }
                    } } }
                } }
                @if list.is_empty() { tr { td colspan="6" .muted { (tr(lang, "ยังไม่มีระบบ", "No system yet.")) } } }
            }
        }
        h2 { (tr(lang, "แผนผังข้อมูล", "Data map")) }
        @for s in &list {
            section id={ "system-" (s.key) } {
                h3 { (s.name) " " code { (s.key) } }
                @if let Some(i) = &s.instructions { p { (tr(lang, "ทีมดำเนินการเอง: ", "A team acts by hand: ")) (i) } }
                @if !s.tables.is_empty() {
                    table.datamap {
                        thead { tr {
                            th scope="col" { (tr(lang, "ตาราง", "Table")) } th scope="col" { (tr(lang, "คอลัมน์", "Column")) }
                            th scope="col" { (tr(lang, "หมวดข้อมูล", "Category")) } th scope="col" { (tr(lang, "เมื่อลบ", "On erasure")) }
                        } }
                        tbody { @for t in &s.tables {
                            @let identity = format!("{} ({})", t.identity.column, t.identity.identifier.as_str());
                            @let action = match &t.reason { Some(r) => format!("{} — {r}", t.on_erasure.as_str()), None => t.on_erasure.as_str().to_string() };
                            @for (col, cat) in &t.columns { tr {
                                td { code { (t.name) } " " span.muted { "(" (tr(lang, "ระบุตัวด้วย ", "found by ")) (identity) ")" } }
                                td { code { (col) } } td { (category_name(lang, cat)) } td { (action) }
                            } }
                        } }
                    }
                }
                @if let Some(c) = &s.connector { @if let Some(d) = &c.definition {
                    p { (tr(lang, "ตัวเชื่อมต่อ HTTP: ", "HTTP connector: ")) code { (d.name) }
                        @if let Some(desc) = &d.description { " — " (desc) } }
                    table.datamap {
                        thead { tr { th scope="col" { (tr(lang, "ฟิลด์", "Field")) } th scope="col" { (tr(lang, "หมวดข้อมูล", "Category")) } th scope="col" { (tr(lang, "เมื่อลบ", "On erasure")) } } }
                        tbody {
                            @for (field, cat) in &d.fields { tr {
                                td { code { (field) } } td { (category_name(lang, cat)) }
                                td { (d.erase.as_ref().map_or("none", |e| e.action.as_str())) }
                            } }
                        }
                    }
                    @if let Some((purpose, _)) = c.consent_purpose() {
                        p { (tr(lang, "ความยินยอมส่งต่อไปยังระบบนี้: ", "Consent propagated here: ")) code { (purpose) } }
                    }
                } }
            }
        }
    };
    shell(
        &staff,
        "/admin/systems",
        tr(lang, "ระบบที่เชื่อมต่อ", "Systems"),
        body,
    )
}

fn category_name(lang: Lang, key: &str) -> Markup {
    match yinyom_core::systems::category(key) {
        Some(c) => {
            html! { (tr(lang, c.th, c.en)) " " span.muted { "(" (key) ")" } @if c.sensitive { " " span.bad { (tr(lang, "อ่อนไหว ม.26", "sensitive, s.26")) } } }
        }
        None => html! { (key) },
    }
}

/// `POST /admin/systems/{key}/test`.
pub async fn test_system(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(key): Path<String>,
    form: FormResult,
) -> Response {
    if let Err(r) = checked_form(&staff, form) {
        return r;
    }
    match api_systems::test(
        State(app.clone()),
        Principal(&staff),
        crate::api::extract::Path(key),
    )
    .await
    {
        Ok(_) => Redirect::to("/admin/systems").into_response(),
        Err(p) => failed(&staff, "/admin/systems", p),
    }
}

/// `POST /admin/requests/{id}/systems/{key}`: confirm a manual system's part.
pub async fn confirm_system(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path((id, key)): Path<(String, String)>,
    form: FormResult,
) -> Response {
    let f = match checked_form(&staff, form) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let back = format!("/admin/requests/{id}");
    match api_systems::confirm(
        State(app.clone()),
        Principal(&staff),
        crate::api::extract::Path((id, key)),
        Json(api_systems::ConfirmInput {
            note: f.text("note").unwrap_or_default(),
        }),
    )
    .await
    {
        Ok(_) => Redirect::to(&back).into_response(),
        Err(p) => failed(&staff, &back, p),
    }
}

/// Routes of the console.
pub fn routes() -> axum::Router<Arc<App>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/admin", get(dashboard))
        .route(
            "/admin/login",
            get(super::admin::login_form).post(super::admin::login),
        )
        .route("/admin/logout", post(super::admin::logout))
        .route("/admin/purposes", get(purposes_page).post(create_purpose))
        .route(
            "/admin/purposes/{key}",
            get(purpose_page).post(update_purpose),
        )
        .route("/admin/notices", get(notices_page).post(publish_notice))
        .route("/admin/subjects", get(subjects_page))
        .route("/admin/subjects/{id}", get(subject_page))
        .route("/admin/ledger", get(ledger_page))
        .route("/admin/requests", get(requests_page))
        .route(
            "/admin/requests/{id}",
            get(request_page).post(act_on_request),
        )
        .route("/admin/breaches", get(breaches_page))
        .route(
            "/admin/banner",
            get(super::design::design_page).post(super::design::save_design),
        )
        .route("/admin/webhooks", get(webhooks_page))
        .route("/admin/webhooks/{id}", get(webhook_page))
        .route("/admin/audit", get(audit_page))
        .route("/admin/systems", get(systems_page))
        .route("/admin/systems/{key}/test", post(test_system))
        .route("/admin/requests/{id}/systems/{key}", post(confirm_system))
        .layer(axum::middleware::from_fn(super::admin::remember_lang))
}
