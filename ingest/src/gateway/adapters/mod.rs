//! The gateway's HTTP doors, one module per wire format. Each authenticates its sender its
//! own way, decodes its format, and hands records to [`Gateway::deliver`].
//!
//! | route                                   | format                 | sender                 |
//! |-----------------------------------------|------------------------|------------------------|
//! | `POST /v1/telemetry`                    | weir JSON readings     | device (SAS or key)    |
//! | `POST /devices/{id}/messages/events`    | Azure IoT Hub message  | device (SAS)           |
//! | `POST /v1/senml`                        | SenML JSON (RFC 8428)  | device (SAS or key)    |
//! | `POST /api/v2/write`, `POST /write`     | InfluxDB line protocol | device or tenant key   |
//! | `POST /v1/lorawan/{network}`            | network-server uplink  | tenant API key         |
//!
//! Bodies may be gzip-compressed (`Content-Encoding: gzip`); the size limit applies to the
//! body as sent and again once it is inflated.

mod influx;
mod iothub;
mod lorawan;
mod senml;
mod telemetry;

use std::io::Read;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{HeaderMap, header};
use axum::routing::post;
use serde::Serialize;

use super::{Gateway, GatewayConfig, IngestError, body_error};

/// How long a client may take to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The answer to a message taken: how many readings went to the bus.
#[derive(Serialize)]
pub(crate) struct Accepted {
    pub accepted: usize,
}

pub(super) fn router(config: &GatewayConfig) -> Router<Gateway> {
    // axum checks the limit before the body is buffered: one byte more answers 413 without
    // reading the rest. Inflated bodies are held to the same limit by `read_body`.
    let limit = DefaultBodyLimit::max(config.max_body_bytes);
    Router::new()
        .route("/v1/telemetry", post(telemetry::post))
        .route("/devices/{id}/messages/events", post(iothub::post))
        .route("/v1/senml", post(senml::post))
        .route("/api/v2/write", post(influx::post_v2))
        .route("/write", post(influx::post_v1))
        .route("/v1/lorawan/{network}", post(lorawan::post))
        .layer(limit)
}

/// Reads a request's body within [`BODY_TIMEOUT`] and the size limit, inflating gzip.
pub(crate) async fn read_body(request: Request, max_bytes: usize) -> Result<Bytes, IngestError> {
    let gzip = is_gzip(request.headers())?;
    // A body that trickles in is cut off rather than hold its place among the requests in
    // flight; the size limit (DefaultBodyLimit) applies as it is read.
    let body = tokio::time::timeout(BODY_TIMEOUT, Bytes::from_request(request, &()))
        .await
        .map_err(|_| {
            IngestError::InvalidBody(format!("the body did not arrive within {BODY_TIMEOUT:?}"))
        })?
        .map_err(|r| body_error(r, max_bytes))?;
    if gzip {
        gunzip(&body, max_bytes)
    } else {
        Ok(body)
    }
}

fn is_gzip(headers: &HeaderMap) -> Result<bool, IngestError> {
    match headers.get(header::CONTENT_ENCODING) {
        None => Ok(false),
        Some(value) => match value.to_str().map(str::trim) {
            Ok(v) if v.eq_ignore_ascii_case("gzip") => Ok(true),
            Ok(v) if v.eq_ignore_ascii_case("identity") || v.is_empty() => Ok(false),
            _ => Err(IngestError::UnsupportedEncoding(
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )),
        },
    }
}

/// Inflates a gzip body, refusing one that inflates past `max_bytes` (a small bomb must not
/// become a large allocation).
pub(crate) fn gunzip(body: &[u8], max_bytes: usize) -> Result<Bytes, IngestError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max_bytes));
    let mut decoder = flate2::read::GzDecoder::new(body).take(max_bytes as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| IngestError::InvalidBody(format!("the gzip body does not inflate: {e}")))?;
    if out.len() > max_bytes {
        return Err(IngestError::BodyTooLarge { max_bytes });
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod gzip_tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gzip_bodies_inflate_within_the_limit() {
        assert_eq!(&gunzip(&gzip(b"hello"), 10).unwrap()[..], b"hello");
        let bomb = gzip(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 16 * 1024);
        assert!(matches!(
            gunzip(&bomb, 4096),
            Err(IngestError::BodyTooLarge { max_bytes: 4096 })
        ));
        assert!(matches!(
            gunzip(b"not gzip", 4096),
            Err(IngestError::InvalidBody(_))
        ));
    }
}
