//! The console's banner design page: a form and a preview drawn by the
//! server (the console's CSP runs no script; inline styles are allowed), so
//! "Preview" redraws it with the draft and "Save" stores it through the
//! API's own handler. A refused design shows the API's 422 next to the
//! field it names, and the draft stays in the form.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use yinyom_core::banner::{BannerDesign, Palette, Position, Texts};
use yinyom_core::purpose::Lang;

use super::admin::{Fields, Staff, checked_form, csrf_field, shell};
use super::page::{self, tr};
use crate::api::auth::MANAGERS;
use crate::api::design;
use crate::api::problem::Problem;
use crate::app::App;

type FormResult =
    Result<axum::Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>;

const COLOURS: [(&str, &str, &str); 7] = [
    ("background", "พื้นหลัง", "Background"),
    ("text", "ตัวอักษร", "Text"),
    ("accent", "ลิงก์และปุ่มตั้งค่า", "Links and settings button"),
    ("accept_background", "ปุ่มยอมรับ: พื้น", "Accept button: fill"),
    ("accept_text", "ปุ่มยอมรับ: ตัวอักษร", "Accept button: text"),
    ("reject_background", "ปุ่มปฏิเสธ: พื้น", "Reject button: fill"),
    ("reject_text", "ปุ่มปฏิเสธ: ตัวอักษร", "Reject button: text"),
];

fn colour(p: &Palette, k: &str) -> String {
    match k {
        "background" => &p.background,
        "text" => &p.text,
        "accent" => &p.accent,
        "accept_background" => &p.accept_background,
        "accept_text" => &p.accept_text,
        "reject_background" => &p.reject_background,
        "reject_text" => &p.reject_text,
        _ => "",
    }
    .to_string()
}

fn palette(f: &Fields, prefix: &str) -> Palette {
    let d = Palette::default();
    let get = |k: &str| {
        f.text(&format!("{prefix}.{k}"))
            .unwrap_or_else(|| colour(&d, k))
    };
    Palette {
        background: get("background"),
        text: get("text"),
        accent: get("accent"),
        accept_background: get("accept_background"),
        accept_text: get("accept_text"),
        reject_background: get("reject_background"),
        reject_text: get("reject_text"),
    }
}

fn number<T: std::str::FromStr>(f: &Fields, name: &str, default: T) -> Result<T, Problem> {
    match f.text(name) {
        None => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|_| Problem::validation(name, "must be a whole number")),
    }
}

/// The design a submitted form describes (checked afterwards by the API).
fn from_form(f: &Fields) -> Result<BannerDesign, Problem> {
    let d = BannerDesign::default();
    let mut texts = std::collections::BTreeMap::new();
    for (lang, code) in [(Lang::Th, "th"), (Lang::En, "en")] {
        let t = |k: &str| f.text(&format!("texts.{code}.{k}"));
        let x = Texts {
            title: t("title"),
            accept: t("accept"),
            reject: t("reject"),
            manage: t("manage"),
            save: t("save"),
        };
        if x != Texts::default() {
            texts.insert(lang, x);
        }
    }
    Ok(BannerDesign {
        position: match f.get("position") {
            Some("corner_box") => Position::CornerBox,
            Some("center_modal") => Position::CenterModal,
            _ => Position::BottomBar,
        },
        font_family: f.text("font_family").unwrap_or(d.font_family),
        font_size: number(f, "font_size", d.font_size)?,
        radius: number(f, "radius", d.radius)?,
        logo_url: f.text("logo_url"),
        colors: palette(f, "colors"),
        dark: f.checked("dark_on").then(|| palette(f, "dark")),
        accept: yinyom_core::banner::ButtonStyle {
            font_size: f.text("accept.font_size").map(|s| s.parse().unwrap_or(0)),
            font_weight: number(f, "accept.font_weight", 600)?,
            hidden: false,
        },
        reject: yinyom_core::banner::ButtonStyle {
            font_size: f.text("reject.font_size").map(|s| s.parse().unwrap_or(0)),
            font_weight: number(f, "reject.font_weight", 600)?,
            hidden: false,
        },
        texts,
    })
}

/// The banner as the script draws it, in HTML with inline styles.
fn preview(d: &BannerDesign, p: &Palette, lang: Lang, label: &str) -> Markup {
    let t = d.texts.get(&lang).cloned().unwrap_or_default();
    let (accept, reject, manage, title) = match lang {
        Lang::Th => ("ยอมรับทั้งหมด", "ปฏิเสธทั้งหมด", "ตั้งค่า", "คุกกี้"),
        Lang::En => ("Accept all", "Reject all", "Manage preferences", "Cookies"),
    };
    let body = match lang {
        Lang::Th => "ข้อความจากประกาศคุกกี้ของคุณ (ไม่เปลี่ยนตามการออกแบบ)",
        Lang::En => "The text of your cookie notice (a design never changes it).",
    };
    let size = |b: &yinyom_core::banner::ButtonStyle| b.font_size.unwrap_or(d.font_size);
    let (width, shadow) = match d.position {
        Position::BottomBar => ("100%", "0 -4px 24px rgba(0,0,0,.18)"),
        Position::CornerBox => ("26rem", "0 4px 24px rgba(0,0,0,.25)"),
        Position::CenterModal => ("30rem", "0 0 0 2rem rgba(17,24,39,.6)"),
    };
    let radius = if d.position == Position::BottomBar {
        0
    } else {
        d.radius
    };
    let frame = format!(
        "background:{};color:{};font-family:{},system-ui,sans-serif;font-size:{}px;line-height:1.5;\
         border-radius:{radius}px;box-shadow:{shadow};padding:16px;max-width:{width};margin:{};border:1px solid #6b7280",
        p.background,
        p.text,
        d.font_family,
        d.font_size,
        if d.position == Position::CornerBox {
            "0 0 0 auto"
        } else {
            "0 auto"
        },
    );
    let button = |bg: &str, fg: &str, b: &yinyom_core::banner::ButtonStyle| {
        format!(
            "background:{bg};color:{fg};border:2px solid {bg};border-radius:{}px;font:inherit;font-size:{}px;\
             font-weight:{};padding:8px 16px;min-height:44px;flex:1 1 10em",
            d.radius,
            size(b),
            b.font_weight
        )
    };
    html! {
        figure.card style="background:#e5e7eb;padding:24px 16px" {
            figcaption.muted { (label) }
            div lang=(page::code(lang)) style=(frame) {
                @if let Some(u) = &d.logo_url { img src=(u) alt="" style="max-height:2.5em;max-width:10em"; }
                h2 style="margin:0 0 8px;font-size:1.15em" { (t.title.clone().unwrap_or_else(|| title.into())) }
                p style="margin:0 0 12px" { (body) }
                div style="display:flex;flex-wrap:wrap;gap:8px" {
                    span role="presentation" style=(button(&p.accept_background, &p.accept_text, &d.accept)) { (t.accept.clone().unwrap_or_else(|| accept.into())) }
                    span role="presentation" style=(button(&p.reject_background, &p.reject_text, &d.reject)) { (t.reject.clone().unwrap_or_else(|| reject.into())) }
                    span role="presentation" style=(button(&p.background, &p.accent, &d.accept).replace(&format!("border:2px solid {}", p.background), &format!("border:2px solid {}", p.accent))) { (t.manage.clone().unwrap_or_else(|| manage.into())) }
                }
            }
        }
    }
}

fn page_for(
    staff: &Staff,
    d: &BannerDesign,
    version: u64,
    note: Option<Markup>,
    error: Option<&Problem>,
) -> Response {
    let lang = staff.lang;
    let manager = MANAGERS.contains(&staff.member.role);
    let dark = d.dark.clone();
    let field_error = |name: &str| -> Option<Markup> {
        let p = error?;
        (p.field.as_deref() == Some(name))
            .then(|| html! { p.error id={ "e-" (name) } { (p.detail) } })
    };
    let described = |name: &str| {
        error
            .filter(|p| p.field.as_deref() == Some(name))
            .map(|_| format!("e-{name}"))
    };
    let colour_inputs = |prefix: &str, p: &Palette| {
        html! {
            @for (k, th, en) in COLOURS {
                @let name = format!("{prefix}.{k}");
                div.field {
                    label for=(name) { (tr(lang, th, en)) }
                    input type="color" id=(name) name=(name) value=(colour(p, k)) aria-describedby=[described(&name)] aria-invalid=[described(&name).map(|_| "true")];
                    @if let Some(e) = field_error(&name) { (e) }
                }
            }
        }
    };
    let text = |name: &str, th: &'static str, en: &'static str, value: Option<String>| {
        html! {
            div.field {
                label for=(name) { (tr(lang, th, en)) }
                input type="text" id=(name) name=(name) value=[value] aria-describedby=[described(name)];
                @if let Some(e) = field_error(name) { (e) }
            }
        }
    };
    let num = |name: &str, th: &'static str, en: &'static str, value: String| {
        html! {
            div.field {
                label for=(name) { (tr(lang, th, en)) }
                input type="number" id=(name) name=(name) value=(value) aria-describedby=[described(name)];
                @if let Some(e) = field_error(name) { (e) }
            }
        }
    };
    let body = html! {
        h1 { (tr(lang, "หน้าตาแบนเนอร์", "Banner design")) }
        p.muted { (tr(lang, "ฉบับที่ ", "Version ")) (version)
            " · " (tr(lang, "การออกแบบไม่ใช่การเปลี่ยนประกาศ: ไม่มีใครถูกขอความยินยอมใหม่", "A design is not a notice change: nobody is asked again.")) }
        @if let Some(n) = note { (n) }
        @if let Some(p) = error {
            p.error role="alert" { (tr(lang, "ไม่บันทึก: ", "Not saved: ")) (p.detail) @if let Some(f) = &p.field { " (" code { (f) } ")" } }
        }
        // Only a design that passed the checks is drawn: its values go into
        // style attributes.
        @if d.validate().is_ok() {
            h2 { (tr(lang, "ตัวอย่าง", "Preview")) }
            (preview(d, &d.colors, Lang::Th, tr(lang, "ไทย", "Thai")))
            (preview(d, &d.colors, Lang::En, tr(lang, "อังกฤษ", "English")))
            @if let Some(p) = &dark { (preview(d, p, lang, tr(lang, "โหมดมืด", "Dark mode"))) }
        }
        @if manager {
            form method="post" action="/admin/banner" {
                (csrf_field(staff))
                div.field {
                    label for="position" { (tr(lang, "ตำแหน่ง", "Position")) }
                    select id="position" name="position" {
                        @for (v, pos, th, en) in [("bottom_bar", Position::BottomBar, "แถบด้านล่าง", "Bottom bar"), ("corner_box", Position::CornerBox, "กล่องมุมจอ", "Corner box"), ("center_modal", Position::CenterModal, "กล่องกลางจอ", "Centred modal")] {
                            option value=(v) selected[d.position == pos] { (tr(lang, th, en)) }
                        }
                    }
                }
                (text("font_family", "แบบอักษร", "Font", Some(d.font_family.clone())))
                (num("font_size", "ขนาดตัวอักษร (px)", "Font size (px)", d.font_size.to_string()))
                (num("radius", "ความโค้งมุม (px)", "Corner radius (px)", d.radius.to_string()))
                (text("logo_url", "โลโก้ (URL https)", "Logo (https URL)", d.logo_url.clone()))
                fieldset.field { legend { (tr(lang, "สี", "Colours")) } (colour_inputs("colors", &d.colors)) }
                label.switch { input type="checkbox" name="dark_on" checked[dark.is_some()]; (tr(lang, "ใช้สีโหมดมืดเมื่อระบบของผู้เข้าชมเป็นโหมดมืด", "Dark mode colours when the visitor's system is dark")) }
                fieldset.field { legend { (tr(lang, "สีโหมดมืด", "Dark mode colours")) } (colour_inputs("dark", dark.as_ref().unwrap_or(&Palette {
                    background: "#111827".into(), text: "#f9fafb".into(), accent: "#93c5fd".into(),
                    accept_background: "#93c5fd".into(), accept_text: "#111827".into(),
                    reject_background: "#93c5fd".into(), reject_text: "#111827".into() }))) }
                fieldset.field { legend { (tr(lang, "ปุ่มยอมรับและปฏิเสธ (ต้องเด่นเท่ากัน)", "Accept and Reject (equally prominent)")) }
                    (num("accept.font_weight", "ความหนา: ยอมรับ", "Weight: Accept", d.accept.font_weight.to_string()))
                    (num("reject.font_weight", "ความหนา: ปฏิเสธ", "Weight: Reject", d.reject.font_weight.to_string()))
                    (num("accept.font_size", "ขนาด: ยอมรับ (px)", "Size: Accept (px)", d.accept.font_size.unwrap_or(d.font_size).to_string()))
                    (num("reject.font_size", "ขนาด: ปฏิเสธ (px)", "Size: Reject (px)", d.reject.font_size.unwrap_or(d.font_size).to_string()))
                }
                @for (code, th, en) in [("th", "ข้อความภาษาไทย (เว้นว่าง: ค่าเริ่มต้น)", "Thai texts (empty: the defaults)"), ("en", "ข้อความภาษาอังกฤษ (เว้นว่าง: ค่าเริ่มต้น)", "English texts (empty: the defaults)")] {
                    @let l = if code == "th" { Lang::Th } else { Lang::En };
                    @let t = d.texts.get(&l).cloned().unwrap_or_default();
                    fieldset.field { legend { (tr(lang, th, en)) }
                        (text(&format!("texts.{code}.title"), "หัวข้อ", "Title", t.title))
                        (text(&format!("texts.{code}.accept"), "ปุ่มยอมรับ", "Accept button", t.accept))
                        (text(&format!("texts.{code}.reject"), "ปุ่มปฏิเสธ", "Reject button", t.reject))
                        (text(&format!("texts.{code}.manage"), "ปุ่มตั้งค่า", "Preferences button", t.manage))
                        (text(&format!("texts.{code}.save"), "ปุ่มบันทึก", "Save button", t.save))
                    }
                }
                p {
                    button.secondary type="submit" name="do" value="preview" { (tr(lang, "ดูตัวอย่าง", "Preview")) } " "
                    button type="submit" name="do" value="save" { (tr(lang, "บันทึก", "Save")) }
                }
            }
        }
    };
    shell(
        staff,
        "/admin/banner",
        tr(lang, "หน้าตาแบนเนอร์", "Banner design"),
        body,
    )
}

/// `GET /admin/banner`.
pub async fn design_page(State(app): State<Arc<App>>, staff: Staff) -> Response {
    match design::get(State(app), staff.who.clone()).await {
        Ok(v) => page_for(&staff, &v.0.design, v.0.version, None, None),
        Err(p) => super::admin::failed(&staff, "/admin", p),
    }
}

/// `POST /admin/banner`: `do=preview` redraws with the draft, `do=save`
/// stores it; a refused design comes back 422 with the draft and the reason.
pub async fn save_design(State(app): State<Arc<App>>, staff: Staff, form: FormResult) -> Response {
    let f = match checked_form(&staff, form) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let current = design::get(State(app.clone()), staff.who.clone())
        .await
        .map(|v| v.0.version)
        .unwrap_or(0);
    let draft = match from_form(&f) {
        Ok(d) => d,
        Err(p) => return refused(&staff, &BannerDesign::default(), current, p),
    };
    if let Err(p) = design::check(&draft) {
        return refused(&staff, &draft, current, p);
    }
    if f.get("do") != Some("save") {
        let lang = staff.lang;
        let note = html! { p role="status" { (tr(lang, "ตัวอย่างยังไม่ได้บันทึก", "Preview only: not saved yet.")) } };
        return page_for(&staff, &draft, current, Some(note), None);
    }
    let who = staff.who.clone();
    if let Err(p) = who.require(MANAGERS) {
        return refused(&staff, &draft, current, p);
    }
    match design::save(&app, &who, draft.clone()).await {
        Ok(_) => Redirect::to("/admin/banner").into_response(),
        Err(p) => refused(&staff, &draft, current, p),
    }
}

fn refused(staff: &Staff, d: &BannerDesign, version: u64, p: Problem) -> Response {
    let status = if p.status.is_client_error() {
        p.status
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let mut res = page_for(staff, d, version, None, Some(&p));
    *res.status_mut() = status;
    res
}
