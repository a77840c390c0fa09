//! `GET /v1/alerts?state=active|all&building=B&tenant=T&limit=N`: a tenant's alerts raised now
//! (`active`, the default, most recently raised first) or its latest events (`all`, newest
//! first), at most `limit` (default 100, at most 1000).
//!
//! A tenant's API key sees its own alerts only (naming another tenant finds nothing); the
//! operator's token sees every tenant's, or one tenant's with `?tenant=`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use weir_common::http::{ApiError, ApiQuery, Tokens, bearer_scope};
use weir_schemas::alerts::AlertEvent;

use super::event::time;
use super::view::{AlertView, Listing};

/// Most alerts one answer carries.
const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;

#[derive(Clone)]
struct Api {
    view: Arc<AlertView>,
    tokens: Arc<dyn Tokens>,
}

pub fn router(view: Arc<AlertView>, tokens: Arc<dyn Tokens>) -> Router {
    Router::new()
        .route("/v1/alerts", get(list))
        .with_state(Api { view, tokens })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    tenant: Option<String>,
    building: Option<String>,
    /// `active` or `all`.
    state: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct AlertList {
    pub alerts: Vec<AlertItem>,
}

/// An event as published, with its times also in RFC 3339.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct AlertItem {
    #[serde(flatten)]
    pub event: AlertEvent,
    pub since: String,
    pub at: String,
}

impl From<AlertEvent> for AlertItem {
    fn from(event: AlertEvent) -> Self {
        AlertItem {
            since: time(event.since_us),
            at: time(event.at_us),
            event,
        }
    }
}

async fn list(
    State(api): State<Api>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<AlertList>, ApiError> {
    let scope = bearer_scope(api.tokens.as_ref(), &headers)?;
    let listing = match query.state.as_deref() {
        None | Some("active") => Listing::Active,
        Some("all") => Listing::All,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_state",
                format!("state must be `active` or `all`, not `{other}`"),
            ));
        }
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let alerts = api.view.list(
        listing,
        &scope,
        query.tenant.as_deref(),
        query.building.as_deref(),
        limit,
    );
    Ok(Json(AlertList {
        alerts: alerts.into_iter().map(AlertItem::from).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;
    use weir_common::http::Scope;
    use weir_schemas::alerts::{AlertState, Severity, Subject};

    use super::*;

    struct TestTokens;

    impl Tokens for TestTokens {
        fn scope(&self, token: &str) -> Option<Scope> {
            match token {
                "op" => Some(Scope::Operator),
                "key-a" => Some(Scope::Tenant("a".into())),
                _ => None,
            }
        }
    }

    fn raised(tenant: &str, building: &str) -> AlertEvent {
        let mut e = AlertEvent {
            id: String::new(),
            tenant: tenant.into(),
            rule: "hot".into(),
            rule_name: "Hot".into(),
            severity: Severity::Critical,
            state: AlertState::Raised,
            subject: Subject {
                building: building.into(),
                ..Subject::default()
            },
            measure: Some("temperature".into()),
            value: Some(31.0),
            since_us: 1_764_000_000_000_000,
            at_us: 1_764_000_060_000_000,
            message: "Hot".into(),
        };
        e.id = super::super::event::event_id(&e.key(), e.since_us, e.state);
        e
    }

    async fn get(router: &Router, uri: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::get(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn alerts_are_listed_per_tenant() {
        let view = Arc::new(AlertView::default());
        view.apply(raised("a", "b1"));
        view.apply(raised("a", "b2"));
        view.apply(raised("b", "b1"));
        let router = router(view, Arc::new(TestTokens));

        let (status, body) = get(&router, "/v1/alerts", Some("key-a")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let list: AlertList = serde_json::from_str(&body).unwrap();
        assert_eq!(list.alerts.len(), 2);
        assert!(list.alerts.iter().all(|a| a.event.tenant == "a"));
        assert_eq!(list.alerts[0].since, "2025-11-24T16:00:00Z");
        assert!(body.contains(r#""state":"raised""#), "{body}");

        let (_, body) = get(&router, "/v1/alerts?tenant=b", Some("key-a")).await;
        let list: AlertList = serde_json::from_str(&body).unwrap();
        assert!(
            list.alerts.is_empty(),
            "another tenant's alerts are not seen"
        );

        let (_, body) = get(
            &router,
            "/v1/alerts?tenant=b&state=all&building=b1&limit=5",
            Some("op"),
        )
        .await;
        let list: AlertList = serde_json::from_str(&body).unwrap();
        assert_eq!(list.alerts.len(), 1);
        assert_eq!(list.alerts[0].event.tenant, "b");

        let (status, body) = get(&router, "/v1/alerts?state=open", Some("op")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("invalid_state"), "{body}");
        let (status, _) = get(&router, "/v1/alerts?colour=red", Some("op")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = get(&router, "/v1/alerts", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = get(&router, "/v1/alerts", Some("nope")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}
