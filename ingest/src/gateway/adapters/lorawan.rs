//! `POST /v1/lorawan/{network}`: uplinks pushed by a LoRaWAN network server's webhook, with
//! `network` one of `thingpark` (Actility ThingPark `DevEUI_uplink`), `tts` (The Things Stack
//! v3 uplink message) or `chirpstack` (ChirpStack v4 `up` event).
//!
//! The webhook authenticates with the tenant's API key (`Authorization: Bearer wtk_...`, a
//! header every one of these network servers can add). The device is the tenant's device
//! with the uplink's DevEUI; its payload is decoded by the driver of its model
//! ([`crate::lorawan::drivers`]); the frame counter is the reading's sequence number and the
//! radio metadata (RSSI, SNR, gateway, ...) its properties. The same frame heard by several
//! gateways, or pushed twice, is stored once ([`crate::lorawan::Dedup`]); a repeat is answered
//! 200 with `accepted: 0`.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use weir_common::http::{Scope, bearer_scope};

use super::{Accepted, read_body};
use crate::formats::Draft;
use crate::gateway::{Gateway, IngestError, error::bearer_error};
use crate::lorawan::{self, Network, webhook};
use crate::registry::DeviceState;

pub(super) async fn post(
    State(gateway): State<Gateway>,
    Path(network): Path<String>,
    request: Request,
) -> Result<(StatusCode, axum::Json<Accepted>), IngestError> {
    let network = Network::from_name(&network).ok_or(IngestError::UnknownNetwork(network))?;
    let _permit = gateway.permit()?;
    let tenant = match bearer_scope(gateway.tokens(), request.headers()).map_err(bearer_error)? {
        Scope::Tenant(tenant) => tenant,
        Scope::Operator => return Err(IngestError::OperatorCannotWrite),
    };
    let protocol = lorawan::protocol(network);
    let body = read_body(request, gateway.config().max_body_bytes).await?;
    let uplink = match webhook::parse(network, &body) {
        Ok(uplink) => uplink,
        Err(e) => {
            let e = IngestError::from(e);
            return Err(gateway.reject(&tenant, None, protocol, &body, e).await);
        }
    };
    let registry = gateway.registry();
    let device = registry
        .device_by_dev_eui(&tenant, &uplink.dev_eui)
        .ok_or_else(|| IngestError::UnknownDevEui(uplink.dev_eui.clone()))?;
    if device.state != DeviceState::Enabled {
        return Err(IngestError::DeviceNotEnabled {
            id: device.id.clone(),
            state: device.state,
        });
    }
    gateway.limits().device_request(&device.id)?;
    if !gateway.lorawan_dedup().first_time(&uplink) {
        return Ok((StatusCode::OK, axum::Json(Accepted { accepted: 0 })));
    }
    let draft = lorawan::draft(&uplink, device.model.as_deref());
    let accepted = gateway
        .ingest_drafts(
            &device,
            protocol,
            &uplink.payload,
            draft.map(|d: Draft| vec![d]),
        )
        .await;
    if accepted.is_err() {
        // Not stored: a retry by the network server must not be taken for a repeat.
        gateway.lorawan_dedup().forget(&uplink);
    }
    Ok((
        StatusCode::OK,
        axum::Json(Accepted {
            accepted: accepted?,
        }),
    ))
}
