//! `POST /v1/sql`: a read-only SQL query over the lake, over HTTP.
//!
//! ```json
//! {"sql": "SELECT building, avg(temperature) FROM telemetry GROUP BY building", "max_rows": 100}
//! ```
//!
//! A tenant's API key runs it over that tenant's rows only: the scope is a filter in the plan,
//! not text added to the query ([`crate::sql`]). The operator token runs it over every
//! tenant's rows, or one tenant's with `"tenant"`. The answer is
//! `{"columns": [...], "rows": [{...}, ...], "truncated": false}`, at most `max_rows` rows
//! (default 10,000, at most 100,000), within [`QUERY_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use weir_common::http::{ApiError, Scope, Tokens, bearer_scope};

use crate::lake::Lake;
use crate::sql::{self, QueryOptions, SqlError};

/// How long one query may run.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_ROWS: usize = 10_000;
const MAX_ROWS: usize = 100_000;

#[derive(Clone)]
struct Api {
    lake: Lake,
    tokens: Arc<dyn Tokens>,
}

pub fn router(lake: Lake, tokens: Arc<dyn Tokens>) -> Router {
    Router::new()
        .route("/v1/sql", post(run))
        .with_state(Api { lake, tokens })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
    #[serde(default)]
    max_rows: Option<usize>,
    /// The operator's choice of tenant; a tenant's key is always its own.
    #[serde(default)]
    tenant: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct SqlResponse {
    pub columns: Vec<String>,
    pub rows: Vec<serde_json::Value>,
    pub truncated: bool,
}

async fn run(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SqlResponse>, ApiError> {
    let scope = bearer_scope(api.tokens.as_ref(), &headers)?;
    let request: SqlRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the body must be {{\"sql\": \"...\", \"max_rows\": N}}: {e}"),
        )
    })?;
    let tenant = match (scope, request.tenant) {
        (Scope::Tenant(own), Some(named)) if named != own => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "operator_only",
                "only the operator may query another tenant's rows",
            ));
        }
        (Scope::Tenant(own), _) => Some(own),
        (Scope::Operator, named) => named,
    };
    let options = QueryOptions {
        tenant,
        max_rows: Some(request.max_rows.unwrap_or(DEFAULT_ROWS).min(MAX_ROWS)),
        timeout: Some(QUERY_TIMEOUT),
    };
    let result = sql::query_with(&api.lake, &request.sql, &options)
        .await
        .map_err(|e| match e {
            SqlError::Query(e) => ApiError::bad_request("invalid_sql", e.to_string()),
            SqlError::Timeout(_) => {
                ApiError::new(StatusCode::REQUEST_TIMEOUT, "query_timeout", e.to_string())
            }
            other => ApiError::internal(other.to_string()),
        })?;
    let columns = result
        .batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default();
    let json = sql::format(&result.batches, sql::OutputFormat::Json)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let rows = serde_json::from_str(&json).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(SqlResponse {
        columns,
        rows,
        truncated: result.truncated,
    }))
}
