//! `/v1/devices/{id}/twin/desired`: the desired properties of a device's twin, which the
//! device receives over MQTT (IoT Hub's twin topics). `PATCH` merges (RFC 7386), `PUT`
//! replaces; `If-Match: "<$version>"` makes either conditional (412 when the document has
//! moved on). Responses carry the document's version as `ETag`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::{ActingFor, AdminJson, if_match};
use crate::gateway::{Gateway, IngestError};
use crate::registry::RegistryError;
use crate::registry::twin::{Properties, Side};

fn document(props: &Properties) -> Response {
    let mut response = Json(props.to_iothub()).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", props.version())) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

pub async fn get(
    State(gateway): State<Gateway>,
    ActingFor(tenant): ActingFor,
    Path(id): Path<String>,
) -> Result<Response, IngestError> {
    let device = gateway
        .registry()
        .device(&tenant, &id)
        .ok_or(RegistryError::NotFound { what: "device", id })?;
    Ok(document(&device.twin.desired))
}

async fn change(
    gateway: &Gateway,
    tenant: &str,
    id: &str,
    headers: &HeaderMap,
    patch: Map<String, Value>,
    replace: bool,
) -> Result<Response, IngestError> {
    let device = gateway
        .registry()
        .change_twin(
            tenant,
            id,
            Side::Desired,
            patch,
            replace,
            if_match(headers)?,
        )
        .await?;
    Ok(document(&device.twin.desired))
}

pub async fn patch(
    State(gateway): State<Gateway>,
    ActingFor(tenant): ActingFor,
    Path(id): Path<String>,
    headers: HeaderMap,
    AdminJson(patch): AdminJson<Map<String, Value>>,
) -> Result<Response, IngestError> {
    change(&gateway, &tenant, &id, &headers, patch, false).await
}

pub async fn put(
    State(gateway): State<Gateway>,
    ActingFor(tenant): ActingFor,
    Path(id): Path<String>,
    headers: HeaderMap,
    AdminJson(document): AdminJson<Map<String, Value>>,
) -> Result<Response, IngestError> {
    change(&gateway, &tenant, &id, &headers, document, true).await
}
