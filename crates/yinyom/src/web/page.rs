//! What every server-rendered page shares: the layout, the two languages,
//! and the headers (a strict CSP, no referrer: links in pages carry
//! capabilities in their paths).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use yinyom_core::purpose::Lang;

/// The styles of every page: inline in `<style>`, allowed by its hash-free
/// `'unsafe-inline'` for styles only; scripts are never inline.
pub const STYLE: &str = r#"
:root{--fg:#1b1f24;--muted:#4d5661;--bg:#fff;--line:#d3d8de;--accent:#0b5cad;--ok:#1a7f37;--bad:#b42318;--soft:#f3f5f8}
*{box-sizing:border-box}
body{font-family:system-ui,"Noto Sans Thai","Sarabun",sans-serif;color:var(--fg);background:var(--bg);margin:0;line-height:1.55}
header.top{display:flex;gap:1rem;align-items:center;justify-content:space-between;padding:.7rem 1.2rem;border-bottom:1px solid var(--line);background:var(--soft)}
header.top nav a{margin-right:.9rem}
main{max-width:64rem;margin:1.5rem auto;padding:0 1.2rem}
main.narrow{max-width:44rem}
a{color:var(--accent)}
a:focus,button:focus,input:focus,select:focus,textarea:focus{outline:3px solid #f5a623;outline-offset:2px}
h1{font-size:1.6rem;margin:.2rem 0 1rem}h2{font-size:1.2rem;margin:1.6rem 0 .6rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}
th,td{text-align:left;padding:.45rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--soft);font-weight:600}
.muted{color:var(--muted)}
.ok{color:var(--ok);font-weight:600}.bad{color:var(--bad);font-weight:600}
.card{border:1px solid var(--line);border-radius:.5rem;padding:1rem 1.1rem;margin:0 0 1rem}
.row{display:flex;flex-wrap:wrap;gap:1rem}
.row>.card{flex:1 1 14rem}
.big{font-size:1.8rem;font-weight:700}
button,.button{font:inherit;padding:.5rem 1rem;border-radius:.4rem;border:1px solid var(--accent);background:var(--accent);color:#fff;cursor:pointer;text-decoration:none;display:inline-block}
button.secondary{background:#fff;color:var(--accent)}
input[type=text],input[type=email],input[type=password],input[type=number],select,textarea{font:inherit;padding:.4rem .5rem;border:1px solid #8a939e;border-radius:.3rem;max-width:100%}
textarea{width:100%;min-height:6rem}
label{font-weight:600}
.field{margin:0 0 .8rem}.field label{display:block;margin-bottom:.2rem}
.switch{display:flex;align-items:center;gap:.5rem;font-weight:400}
.switch input{width:1.2rem;height:1.2rem}
.notice{padding:.6rem .9rem;border-radius:.4rem;background:#e6f4ea;border:1px solid #a6d8b5;margin:0 0 1rem}
.error{padding:.6rem .9rem;border-radius:.4rem;background:#fdecea;border:1px solid #f1aeb5;margin:0 0 1rem}
.lang{font-size:.95rem}
svg text{font-family:inherit;font-size:11px;fill:var(--muted)}
"#;

/// Say it in the page's language.
pub fn tr(lang: Lang, th: &'static str, en: &'static str) -> &'static str {
    match lang {
        Lang::Th => th,
        Lang::En => en,
    }
}

pub fn code(lang: Lang) -> &'static str {
    match lang {
        Lang::Th => "th",
        Lang::En => "en",
    }
}

/// A text in the page's language, else in the other one.
pub fn in_lang(m: &std::collections::BTreeMap<Lang, String>, lang: Lang) -> String {
    m.get(&lang)
        .or_else(|| m.values().next())
        .cloned()
        .unwrap_or_default()
}

/// `?lang=` first, then the browser's `Accept-Language`, then the tenant's.
pub fn choose_lang(query: Option<&str>, headers: &HeaderMap, default: Lang) -> Lang {
    match query {
        Some("th") => return Lang::Th,
        Some("en") => return Lang::En,
        _ => {}
    }
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    for part in accept.split(',') {
        let tag = part
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if tag.starts_with("th") {
            return Lang::Th;
        }
        if tag.starts_with("en") {
            return Lang::En;
        }
    }
    default
}

/// A whole page.
pub fn layout(lang: Lang, title: &str, top: Markup, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(code(lang)) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Yinyom" }
                style { (PreEscaped(STYLE)) }
            }
            body { (top) (body) }
        }
    }
}

/// A page response with the headers every page carries.
pub fn respond(status: StatusCode, page: Markup) -> Response {
    let mut res = (status, page).into_response();
    secure(res.headers_mut());
    res
}

pub fn secure(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// A page that says something went wrong, in both languages.
pub fn message(status: StatusCode, th: &str, en: &str) -> Response {
    respond(
        status,
        layout(
            Lang::Th,
            en,
            html! {},
            html! {
                main.narrow {
                    h1 { (th) }
                    p lang="en" { (en) }
                }
            },
        ),
    )
}

/// A date as people read it (UTC), from microseconds.
pub fn date(us: i64) -> String {
    let t = yinyom_core::time::rfc3339(us);
    // 2026-12-01T19:07:19.123456Z → 2026-12-01 19:07 UTC
    match (t.get(..10), t.get(11..16)) {
        (Some(d), Some(h)) => format!("{d} {h} UTC"),
        _ => t,
    }
}
