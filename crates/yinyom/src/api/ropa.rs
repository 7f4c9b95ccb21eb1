//! The record of processing (PDPA s.39, GDPR Art. 30), exported from the
//! purpose registry as JSON or CSV, and the public transparency page of a
//! tenant (`/t/{tenant}`), in Thai and English.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use yinyom_core::purpose::{Lang, LawfulBasis, Purpose};
use yinyom_core::rights::Status;
use yinyom_core::time;

use super::auth::{Principal, STAFF};
use super::extract::Query;
use super::problem::{Problem, ProblemBody};
use crate::app::App;
use crate::model::{Dpo, Tenant};

/// Where a lawful basis is written in each law, in each language.
fn basis_label(b: LawfulBasis, lang: Lang) -> &'static str {
    use LawfulBasis::*;
    match (b, lang) {
        (Consent, Lang::Th) => "ความยินยอม (พ.ร.บ. มาตรา 19)",
        (Consent, Lang::En) => "Consent (PDPA s.19; GDPR Art. 6(1)(a))",
        (Contract, Lang::Th) => "การปฏิบัติตามสัญญา (มาตรา 24(3))",
        (Contract, Lang::En) => "Contract (PDPA s.24(3); GDPR Art. 6(1)(b))",
        (LegalObligation, Lang::Th) => "การปฏิบัติหน้าที่ตามกฎหมาย (มาตรา 24(6))",
        (LegalObligation, Lang::En) => "Legal obligation (PDPA s.24(6); GDPR Art. 6(1)(c))",
        (VitalInterest, Lang::Th) => "การป้องกันอันตรายต่อชีวิต ร่างกาย หรือสุขภาพ (มาตรา 24(2))",
        (VitalInterest, Lang::En) => "Vital interests (PDPA s.24(2); GDPR Art. 6(1)(d))",
        (PublicTask, Lang::Th) => "ภารกิจเพื่อประโยชน์สาธารณะ (มาตรา 24(4))",
        (PublicTask, Lang::En) => "Public task (PDPA s.24(4); GDPR Art. 6(1)(e))",
        (LegitimateInterest, Lang::Th) => "ประโยชน์โดยชอบด้วยกฎหมาย (มาตรา 24(5))",
        (LegitimateInterest, Lang::En) => "Legitimate interests (PDPA s.24(5); GDPR Art. 6(1)(f))",
        (ResearchStatistics, Lang::Th) => "การศึกษาวิจัยหรือสถิติ (มาตรา 24(1))",
        (ResearchStatistics, Lang::En) => "Research or statistics (PDPA s.24(1); GDPR Art. 89)",
    }
}

/// One processing activity: a purpose as the record shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Activity {
    pub purpose: String,
    pub name_th: String,
    pub name_en: String,
    pub description_en: String,
    pub basis: LawfulBasis,
    /// The personal data collected.
    pub data_categories: Vec<String>,
    /// Sensitive data (PDPA s.26, GDPR Art. 9).
    pub sensitive: bool,
    pub channels: Vec<String>,
    pub retention_days: u32,
    pub consent_validity_days: Option<u32>,
    pub recipients: Vec<String>,
}

/// A rights request the controller refused, with its reason (PDPA s.39(7)).
#[derive(Debug, Serialize, ToSchema)]
pub struct Rejection {
    pub request: String,
    pub kind: String,
    pub received_at: String,
    pub rejected_at: Option<String>,
    pub reason: String,
}

/// The record of processing.
#[derive(Debug, Serialize, ToSchema)]
pub struct Record {
    pub controller: String,
    pub dpo: Dpo,
    pub jurisdictions: Vec<String>,
    pub security_measures: Vec<String>,
    pub generated_at: String,
    pub activities: Vec<Activity>,
    pub rejections: Vec<Rejection>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RecordQuery {
    /// `json` (default) or `csv`.
    #[serde(default)]
    pub format: Option<String>,
    /// For CSV: `activities` (default) or `rejections`.
    #[serde(default)]
    pub table: Option<String>,
}

fn activity(p: &Purpose) -> Activity {
    Activity {
        purpose: p.key.clone(),
        name_th: p.names.get(&Lang::Th).cloned().unwrap_or_default(),
        name_en: p.names.get(&Lang::En).cloned().unwrap_or_default(),
        description_en: p.descriptions.get(&Lang::En).cloned().unwrap_or_default(),
        basis: p.basis,
        data_categories: p.categories.iter().map(|c| c.name.clone()).collect(),
        sensitive: p.is_sensitive(),
        channels: p.channels.iter().map(|c| c.as_str().to_string()).collect(),
        retention_days: p.retention_days,
        consent_validity_days: p.validity_days,
        recipients: p.recipients.clone(),
    }
}

async fn record(app: &App, tenant: &str) -> Result<Record, Problem> {
    app.ensure_tenant(tenant).await?;
    let (t, mut purposes) = app
        .view
        .read(tenant, |tv| {
            (
                tv.tenant.clone(),
                tv.purposes.values().cloned().collect::<Vec<_>>(),
            )
        })
        .ok_or_else(|| Problem::not_found("the tenant does not exist"))?;
    purposes.sort_by(|a, b| a.key.cmp(&b.key));
    let rejections = app
        .store
        .requests(
            tenant,
            &crate::store::RequestFilter {
                status: Some(Status::Rejected),
                ..Default::default()
            },
            None,
            10_000,
        )
        .await?
        .into_iter()
        .map(|r| Rejection {
            reason: r
                .steps
                .iter()
                .rev()
                .find(|s| s.action == "reject")
                .and_then(|s| s.reason.clone())
                .unwrap_or_default(),
            request: r.id,
            kind: r.kind.as_str().into(),
            received_at: time::rfc3339(r.received_at),
            rejected_at: r.closed_at.map(time::rfc3339),
        })
        .collect();
    Ok(Record {
        controller: t.name,
        dpo: t.dpo,
        jurisdictions: t.jurisdictions,
        security_measures: t.security_measures,
        generated_at: time::rfc3339(time::now()),
        activities: purposes.iter().map(activity).collect(),
        rejections,
    })
}

pub(crate) fn csv_bytes(header: &[&str], rows: Vec<Vec<String>>) -> Result<Vec<u8>, Problem> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| Problem::bad_request(format!("csv: {e}"));
    w.write_record(header).map_err(fail)?;
    for r in rows {
        w.write_record(&r).map_err(fail)?;
    }
    w.into_inner()
        .map_err(|e| Problem::bad_request(format!("csv: {e}")))
}

/// The record of processing activities (PDPA s.39, GDPR Art. 30): every
/// purpose with its data, basis, retention and recipients, the security
/// measures, and the rights requests refused with their reasons.
#[utoipa::path(get, path = "/v1/records-of-processing", tag = "tenant", params(RecordQuery),
    responses((status = 200, description = "The record, as JSON or (`format=csv`) CSV",
            content((Record = "application/json"), (String = "text/csv"))),
        (status = 422, body = ProblemBody)), security(("api_key" = [])))]
pub async fn export(
    State(app): State<Arc<App>>,
    who: Principal,
    Query(q): Query<RecordQuery>,
) -> Result<Response, Problem> {
    who.require(STAFF)?;
    let r = record(&app, &who.tenant).await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(axum::Json(r).into_response()),
        "csv" => {
            let join = |v: &[String]| v.join("; ");
            let body = match q.table.as_deref().unwrap_or("activities") {
                "activities" => csv_bytes(
                    &[
                        "controller",
                        "dpo",
                        "purpose",
                        "name_th",
                        "name_en",
                        "basis",
                        "data_categories",
                        "sensitive",
                        "channels",
                        "retention_days",
                        "consent_validity_days",
                        "recipients",
                        "security_measures",
                    ],
                    r.activities
                        .iter()
                        .map(|a| {
                            vec![
                                r.controller.clone(),
                                format!("{} <{}>", r.dpo.name, r.dpo.email),
                                a.purpose.clone(),
                                a.name_th.clone(),
                                a.name_en.clone(),
                                a.basis.as_str().into(),
                                join(&a.data_categories),
                                a.sensitive.to_string(),
                                join(&a.channels),
                                a.retention_days.to_string(),
                                a.consent_validity_days
                                    .map(|d| d.to_string())
                                    .unwrap_or_default(),
                                join(&a.recipients),
                                join(&r.security_measures),
                            ]
                        })
                        .collect(),
                )?,
                "rejections" => csv_bytes(
                    &["request", "kind", "received_at", "rejected_at", "reason"],
                    r.rejections
                        .iter()
                        .map(|x| {
                            vec![
                                x.request.clone(),
                                x.kind.clone(),
                                x.received_at.clone(),
                                x.rejected_at.clone().unwrap_or_default(),
                                x.reason.clone(),
                            ]
                        })
                        .collect(),
                )?,
                _ => {
                    return Err(Problem::validation("table", "use activities or rejections"));
                }
            };
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"records-of-processing.csv\"",
                    ),
                ],
                body,
            )
                .into_response())
        }
        _ => Err(Problem::validation("format", "use json or csv")),
    }
}

/// Text safe inside HTML elements and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    pub lang: Option<String>,
}

fn transparency_html(t: &Tenant, purposes: &[Purpose], lang: Lang) -> String {
    let th = lang == Lang::Th;
    let l = |a: &'static str, b: &'static str| if th { a } else { b };
    let mut rows = String::new();
    for p in purposes {
        let cats: Vec<String> = p.categories.iter().map(|c| esc(&c.name)).collect();
        rows.push_str(&format!(
            "<section><h2>{name}</h2><p>{desc}</p><dl>\
             <dt>{basis_l}</dt><dd>{basis}</dd>\
             <dt>{data_l}</dt><dd>{cats}</dd>\
             <dt>{ret_l}</dt><dd>{ret} {days}</dd>{validity}{recipients}</dl></section>",
            name = esc(&crate::web::page::in_lang(&p.names, lang)),
            desc = esc(&crate::web::page::in_lang(&p.descriptions, lang)),
            basis_l = l("ฐานทางกฎหมาย", "Lawful basis"),
            basis = esc(basis_label(p.basis, lang)),
            data_l = l("ข้อมูลที่เก็บ", "Data collected"),
            cats = if cats.is_empty() {
                "—".into()
            } else {
                cats.join(", ")
            },
            ret_l = l("ระยะเวลาเก็บรักษา", "Kept for"),
            ret = p.retention_days,
            days = l("วัน", "days"),
            validity = p.validity_days.map_or(String::new(), |d| format!(
                "<dt>{}</dt><dd>{d} {}</dd>",
                l("ความยินยอมมีอายุ", "Consent valid for"),
                l("วัน", "days")
            )),
            recipients = if p.recipients.is_empty() {
                String::new()
            } else {
                format!(
                    "<dt>{}</dt><dd>{}</dd>",
                    l("ผู้รับข้อมูล", "Recipients"),
                    p.recipients
                        .iter()
                        .map(|r| esc(r))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        ));
    }
    let dpo = &t.dpo;
    let other = if th {
        ("en", "English")
    } else {
        ("th", "ภาษาไทย")
    };
    format!(
        "<!doctype html><html lang=\"{code}\"><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title} — {name}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;line-height:1.6}}\
         dt{{font-weight:600}}dd{{margin:0 0 .5rem}}section{{border-top:1px solid #ddd;padding-top:.5rem}}</style>\
         <main><p><a href=\"?lang={ocode}\" lang=\"{ocode}\">{olabel}</a></p>\
         <h1>{title}</h1><p>{name}</p>\
         <h2>{dpo_l}</h2><p>{dpo_name}<br><a href=\"mailto:{dpo_email}\">{dpo_email}</a>{dpo_phone}</p>\
         {policy}{rows}\
         <section><h2>{rights_l}</h2><p>{rights}</p></section></main></html>",
        code = if th { "th" } else { "en" },
        title = l("การประมวลผลข้อมูลส่วนบุคคล", "How we process personal data"),
        name = esc(&t.name),
        ocode = other.0,
        olabel = other.1,
        dpo_l = l("เจ้าหน้าที่คุ้มครองข้อมูลส่วนบุคคล", "Data protection officer"),
        dpo_name = esc(&dpo.name),
        dpo_email = esc(&dpo.email),
        dpo_phone = dpo
            .phone
            .as_deref()
            .map_or(String::new(), |p| format!("<br>{}", esc(p))),
        policy = t.policy_url.as_deref().map_or(String::new(), |u| format!(
            "<p><a href=\"{}\">{}</a></p>",
            esc(u),
            l("นโยบายความเป็นส่วนตัว", "Privacy policy")
        )),
        rights_l = l("สิทธิของคุณ", "Your rights"),
        rights = l(
            "คุณมีสิทธิขอเข้าถึง ขอรับสำเนา ขอให้โอน ขอแก้ไข ขอลบ ขอระงับการใช้ คัดค้าน และถอนความยินยอมได้ตลอดเวลา \
             โดยติดต่อเจ้าหน้าที่คุ้มครองข้อมูลส่วนบุคคลข้างต้น เราจะตอบภายใน 30 วัน",
            "You may ask for access to and a copy of your data, have it moved, corrected or erased, \
             restrict or object to its use, and withdraw consent at any time, by contacting the data \
             protection officer above. We answer within 30 days."
        ),
    )
}

/// The public transparency page of a tenant: purposes, retention, DPO
/// contact, in Thai or English (`?lang=`, else the browser's language).
pub async fn transparency(
    State(app): State<Arc<App>>,
    axum::extract::Path(tenant): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let found = if tenant.len() <= 100 && app.ensure_tenant(&tenant).await.is_ok() {
        app.view.read(&tenant, |tv| {
            let mut p: Vec<Purpose> = tv.purposes.values().cloned().collect();
            p.sort_by(|a, b| a.key.cmp(&b.key));
            (tv.tenant.clone(), p)
        })
    } else {
        None
    };
    let csp = (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'",
    );
    match found {
        Some((t, purposes)) => {
            let lang = crate::web::page::choose_lang(q.lang.as_deref(), &headers, t.default_lang);
            ([csp], Html(transparency_html(&t, &purposes, lang))).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            [csp],
            Html("<!doctype html><meta charset=\"utf-8\"><title>Not found</title><p>ไม่พบหน้านี้ · Not found</p>".to_string()),
        )
            .into_response(),
    }
}
