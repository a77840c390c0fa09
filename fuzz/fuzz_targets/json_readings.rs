//! weir's JSON readings (`POST /v1/telemetry`, MQTT `weir/telemetry`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let device = common::device();
    let ctx = common::context(&device);
    if let Ok(records) = weir_ingest::formats::json::translate(data, &ctx, 1000) {
        // What is accepted must also encode.
        for record in &records {
            weir_schemas::TelemetryCodec::global()
                .encode(record)
                .expect("an accepted reading encodes");
        }
    }
});
