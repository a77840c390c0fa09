//! The JSON error body of every weir HTTP route: `{"error": {"code": "...", "message": "..."}}`.
//!
//! Each module keeps its own error enum and maps it to an [`ApiError`] in one exhaustive
//! `From` impl, so the status of every failure is decided in one place per module.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error as an HTTP client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable code, `snake_case`.
    pub code: &'static str,
    /// What was wrong, for a human.
    pub message: String,
    /// Set on retryable errors (503): seconds after which the client should try again.
    pub retry_after_secs: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A 503 that tells the client when to retry.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u32) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// Answers every unknown route with the standard body instead of axum's empty 404.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found("no_route", format!("no route for {}", uri.path()))
}

/// `axum::extract::Query` whose rejection is an [`ApiError`] (`400 invalid_query`).
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// What the bearer of an API token may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The operator: every tenant.
    Operator,
    /// One tenant, and nothing of any other.
    Tenant(String),
}

impl Scope {
    /// Whether this scope covers `tenant`'s data.
    pub fn covers(&self, tenant: &str) -> bool {
        match self {
            Scope::Operator => true,
            Scope::Tenant(own) => own == tenant,
        }
    }
}

/// Resolves API tokens (tenant API keys, the operator token) to what they may read. The
/// registry implements it; read APIs of other roles take it, so they share one notion of who
/// a caller is.
pub trait Tokens: Send + Sync {
    fn scope(&self, token: &str) -> Option<Scope>;
}

/// Why a request's bearer token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// No `Authorization: Bearer …`, or an unreadable one.
    Missing,
    /// A token that is neither a tenant API key nor the operator token.
    Wrong,
}

impl From<BearerError> for ApiError {
    fn from(error: BearerError) -> Self {
        match error {
            BearerError::Missing => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_credentials",
                "missing or unreadable `Authorization: Bearer` token (a tenant API key or the \
                 operator token)",
            ),
            BearerError::Wrong => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "wrong_token",
                "the bearer token is not a valid tenant API key or operator token",
            ),
        }
    }
}

/// The scope of a request's `Authorization: Bearer …` token.
pub fn bearer_scope(
    tokens: &dyn Tokens,
    headers: &axum::http::HeaderMap,
) -> Result<Scope, BearerError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(BearerError::Missing)?;
    tokens.scope(token).ok_or(BearerError::Wrong)
}
