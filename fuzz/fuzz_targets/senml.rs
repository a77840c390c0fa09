//! SenML JSON packs (`POST /v1/senml`, MQTT `weir/senml`), through to records.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(drafts) = weir_ingest::formats::senml::parse(data, common::NOW_US, 16_000) {
        common::build_all(drafts);
    }
});
