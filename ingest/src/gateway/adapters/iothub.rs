//! `POST /devices/{id}/messages/events?api-version=...`: Azure IoT Hub's device-to-cloud
//! endpoint over HTTPS, as the device SDKs call it, so that they send to weir by changing only
//! the host name. Success is 204, as from IoT Hub. The message's properties come from the
//! `iothub-*` headers ([`crate::formats::iothub`]); a batch
//! (`Content-Type: application/vnd.microsoft.iothub.json`) carries several messages.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use weir_schemas::protocol;

use super::read_body;
use crate::formats::iothub::{self, BATCH_CONTENT_TYPE, Message};
use crate::gateway::{Gateway, IngestError, Sender};

pub(super) async fn post(
    State(gateway): State<Gateway>,
    Path(device_id): Path<String>,
    sender: Sender,
    request: Request,
) -> Result<StatusCode, IngestError> {
    let device = &sender.device;
    if device.id != device_id {
        return Err(IngestError::PathMismatch {
            path: device_id,
            authenticated: device.id.clone(),
        });
    }
    let headers = request.headers().clone();
    let max = gateway.config().max_readings_per_request;
    let body = read_body(request, gateway.config().max_body_bytes).await?;
    let is_batch = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with(BATCH_CONTENT_TYPE));
    let drafts = if is_batch {
        iothub::batch(&body, max).and_then(|messages| {
            let mut drafts = Vec::new();
            for (body, message) in messages {
                drafts.extend(iothub::translate(&body, &message, max)?);
            }
            Ok(drafts)
        })
    } else {
        Message::from_headers(&headers).and_then(|m| iothub::translate(&body, &m, max))
    };
    gateway
        .ingest_drafts(
            device,
            protocol::IOTHUB_HTTP,
            &body,
            drafts.map_err(Into::into),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
