//! axum's extractors, with their rejections turned into problem+json.

use axum::extract::{FromRequest, FromRequestParts};

use super::problem::Problem;

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(Problem))]
pub struct Json<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Problem))]
pub struct Query<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Problem))]
pub struct Path<T>(pub T);

/// A time given as RFC 3339 in field `field`.
pub fn time_field(field: &str, v: &str) -> Result<yinyom_core::time::Micros, Problem> {
    yinyom_core::time::parse_rfc3339(v)
        .ok_or_else(|| Problem::validation(field, "must be an RFC 3339 time"))
}

/// A time that has already come (a minute of clock skew allowed).
pub fn past_time_field(
    field: &str,
    v: &str,
    now: yinyom_core::time::Micros,
) -> Result<yinyom_core::time::Micros, Problem> {
    let t = time_field(field, v)?;
    if t > now + 60_000_000 {
        return Err(Problem::validation(field, "is in the future"));
    }
    Ok(t)
}

/// For merge-patch fields where `null` means "remove": absent → `None`,
/// `null` → `Some(None)`, a value → `Some(Some(v))`.
pub fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}
