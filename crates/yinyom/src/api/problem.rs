//! RFC 9457 problem details: the one error type every handler returns.
//!
//! `type` is a stable URI per kind of problem (`…/problems/validation`), so
//! clients can branch on it; `detail` says what exactly was wrong, and
//! `field` points at the offending input when there is one.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::record::Rejected;
use crate::store::StoreError;

pub const TYPE_BASE: &str = "https://yinyom.dev/problems/";

#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub kind: &'static str,
    pub detail: String,
    pub field: Option<String>,
}

/// The problem+json body, as documented in the OpenAPI description.
#[derive(Serialize, ToSchema)]
pub struct ProblemBody {
    /// Stable URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            kind,
            detail: detail.into(),
            field: None,
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", detail).field(field)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    fn title(&self) -> String {
        let mut t = self.kind.replace('-', " ");
        if let Some(first) = t.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        t
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            kind: format!("{TYPE_BASE}{}", self.kind),
            title: self.title(),
            status: self.status.as_u16(),
            detail: self.detail,
            field: self.field,
        };
        let mut res = (self.status, axum::Json(body)).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Problem::conflict("it already exists"),
            StoreError::NotFound => Problem::not_found("it does not exist"),
            StoreError::Unavailable(msg) => {
                tracing::error!(error = %msg, "storage unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "storage is unavailable; nothing was written, retry later",
                )
            }
        }
    }
}

impl From<Rejected> for Problem {
    fn from(r: Rejected) -> Self {
        let status = match r.kind {
            "subject-erased" => StatusCode::CONFLICT,
            "guardian-required" => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Problem::new(status, r.kind, r.detail).field(r.field)
    }
}

impl From<yinyom_core::Invalid> for Problem {
    fn from(i: yinyom_core::Invalid) -> Self {
        Problem::validation(i.field, i.reason)
    }
}

pub fn body_problem(status: StatusCode, detail: String) -> Problem {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            status,
            "payload-too-large",
            "the request body is larger than allowed",
        )
    } else {
        Problem::bad_request(detail)
    }
}

impl From<BytesRejection> for Problem {
    fn from(r: BytesRejection) -> Self {
        body_problem(r.status(), r.body_text())
    }
}

impl From<JsonRejection> for Problem {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                e.body_text(),
            ),
            JsonRejection::JsonSyntaxError(e) => {
                Problem::new(StatusCode::BAD_REQUEST, "malformed-json", e.body_text())
            }
            JsonRejection::MissingJsonContentType(e) => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                e.body_text(),
            ),
            JsonRejection::BytesRejection(e) => body_problem(e.status(), e.body_text()),
            other => Problem::bad_request(other.body_text()),
        }
    }
}

impl From<QueryRejection> for Problem {
    fn from(r: QueryRejection) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "bad-query", r.body_text())
    }
}

impl From<PathRejection> for Problem {
    fn from(r: PathRejection) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "bad-path", r.body_text())
    }
}

/// Parse a JSON body given as bytes (for handlers that also hash the body).
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                e.to_string(),
            ),
            _ => Problem::new(StatusCode::BAD_REQUEST, "malformed-json", e.to_string()),
        }
    })
}
