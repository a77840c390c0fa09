//! InfluxDB line protocol (`/api/v2/write`, `/write`), through to records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_ingest::formats::line_protocol::{self, Precision};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for precision in [Precision::Nanoseconds, Precision::Seconds, Precision::Hours] {
        if let Ok(drafts) = line_protocol::parse(text, precision, 1000) {
            common::build_all(drafts);
        }
    }
});
