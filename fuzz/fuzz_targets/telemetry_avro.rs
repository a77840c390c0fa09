//! Telemetry records off the bus: the in-place reader and the general Avro decoder must agree
//! on every input, and neither may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_schemas::TelemetryCodec;

fuzz_target!(|data: &[u8]| {
    let codec = TelemetryCodec::global();
    let _ = codec.decode(data);
    // Also behind a valid header, so that the datum readers see the input.
    let mut framed = codec.header().to_vec();
    framed.extend_from_slice(data);
    for bytes in [data, &framed[..]] {
        if let Ok(Some(record)) = codec.decode_ref(bytes) {
            assert_eq!(Some(record.to_owned()), codec.decode(bytes).ok());
        }
    }
});
