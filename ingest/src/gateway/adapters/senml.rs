//! `POST /v1/senml`: a SenML JSON pack (RFC 8428, `application/senml+json`) of one device,
//! authenticated as for `/v1/telemetry`; mapped as [`crate::formats::senml`] describes.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use weir_schemas::protocol;

use super::{Accepted, read_body};
use crate::formats::senml;
use crate::gateway::{Gateway, IngestError, Sender, now_micros};

pub(super) async fn post(
    State(gateway): State<Gateway>,
    sender: Sender,
    request: Request,
) -> Result<(StatusCode, axum::Json<Accepted>), IngestError> {
    let body = read_body(request, gateway.config().max_body_bytes).await?;
    // A pack has several records per reading, so the record limit is a multiple of the
    // readings limit.
    let max_records = gateway.config().max_readings_per_request.saturating_mul(16);
    let drafts = senml::parse(&body, now_micros(), max_records).map_err(IngestError::from);
    let accepted = gateway
        .ingest_drafts(&sender.device, protocol::SENML, &body, drafts)
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Accepted { accepted })))
}
