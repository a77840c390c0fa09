//! `POST /v1/telemetry`: weir's JSON readings ([`crate::formats::json`]) of one device.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use weir_schemas::protocol;

use super::{Accepted, read_body};
use crate::gateway::{Gateway, IngestError, Sender};

pub(super) async fn post(
    State(gateway): State<Gateway>,
    sender: Sender,
    request: Request,
) -> Result<(StatusCode, axum::Json<Accepted>), IngestError> {
    let body = read_body(request, gateway.config().max_body_bytes).await?;
    let accepted = gateway
        .ingest_json(&sender.device, protocol::HTTP_JSON, &body)
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Accepted { accepted })))
}
