//! A tenant's alerting: `/v1/alert-rules` (list, and per id create-or-replace, read, delete)
//! and `/v1/webhook` (where alerts are delivered, with the secret their signatures use).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_schemas::alerts::{AlertRule, Webhook};

use super::{ActingFor, AdminJson};
use crate::gateway::{Gateway, IngestError};
use crate::registry::{RegistryError, secrets};

#[derive(Serialize)]
pub struct Rules {
    rules: Vec<Arc<AlertRule>>,
}

pub async fn list(State(gateway): State<Gateway>, ActingFor(tenant): ActingFor) -> Json<Rules> {
    Json(Rules {
        rules: gateway.registry().alert_rules(Some(&tenant)),
    })
}

fn found(gateway: &Gateway, tenant: &str, id: String) -> Result<Arc<AlertRule>, IngestError> {
    gateway.registry().alert_rule(tenant, &id).ok_or_else(|| {
        RegistryError::NotFound {
            what: "alert rule",
            id,
        }
        .into()
    })
}

pub async fn get(
    State(gateway): State<Gateway>,
    ActingFor(tenant): ActingFor,
    Path(id): Path<String>,
) -> Result<Json<Arc<AlertRule>>, IngestError> {
    Ok(Json(found(&gateway, &tenant, id)?))
}

/// The body is the rule without `id` and `tenant` (which come from the path and the caller);
/// if it names them, they must agree.
pub async fn put(
    State(gateway): State<Gateway>,
    ActingFor(tenant): ActingFor,
    Path(id): Path<String>,
    AdminJson(body): AdminJson<serde_json::Map<String, Value>>,
) -> Result<Json<Arc<AlertRule>>, IngestError> {
    let mut body = body;
    for (field, value) in [("id", &id), ("tenant", &tenant)] {
        match body.get(field) {
            Some(Value::String(named)) if named == value => {}
            None => {}
            Some(other) => {
                return Err(IngestError::InvalidBody(format!(
                    "`{field}` is {other} in the body but `{value}` for this request"
                )));
            }
        }
        body.insert(field.into(), Value::String(value.clone()));
    }
    let rule: AlertRule = serde_json::from_value(Value::Object(body))
        .map_err(|e| IngestError::InvalidBody(e.to_string()))?;
    Ok(Json(gateway.registry().put_alert_rule(rule).await?))
}

pub async fn delete(
    State(gateway): State<Gateway>,
    ActingFor(tenant): ActingFor,
    Path(id): Path<String>,
) -> Result<StatusCode, IngestError> {
    gateway.registry().delete_alert_rule(&tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    url: String,
}

/// What `GET /v1/webhook` shows: the secret is shown once, when set.
#[derive(Serialize)]
pub struct WebhookView {
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// Sets the webhook with a fresh secret, returned once.
pub async fn put_webhook(
    State(gateway): State<Gateway>,
    ActingFor(tenant): ActingFor,
    AdminJson(WebhookBody { url }): AdminJson<WebhookBody>,
) -> Result<Json<WebhookView>, IngestError> {
    let secret = secrets::random_key();
    let webhook = Webhook {
        url: url.clone(),
        secret: secret.clone(),
    };
    gateway
        .registry()
        .set_webhook(&tenant, Some(webhook))
        .await?;
    Ok(Json(WebhookView {
        url,
        secret: Some(secret),
    }))
}

pub async fn get_webhook(
    State(gateway): State<Gateway>,
    ActingFor(tenant): ActingFor,
) -> Result<Json<WebhookView>, IngestError> {
    gateway
        .registry()
        .tenant(&tenant)
        .and_then(|t| t.webhook.clone())
        .map(|w| {
            Json(WebhookView {
                url: w.url,
                secret: None,
            })
        })
        .ok_or_else(|| {
            RegistryError::NotFound {
                what: "webhook of tenant",
                id: tenant,
            }
            .into()
        })
}

pub async fn delete_webhook(
    State(gateway): State<Gateway>,
    ActingFor(tenant): ActingFor,
) -> Result<StatusCode, IngestError> {
    gateway.registry().set_webhook(&tenant, None).await?;
    Ok(StatusCode::NO_CONTENT)
}
