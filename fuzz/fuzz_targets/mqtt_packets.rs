//! MQTT packets as the gateway reads them off a connection: framing, the CONNECT's version,
//! then each packet in both versions, and the topics of what is published.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_ingest::gateway::mqtt::codec::{self, Inbound, Version};
use weir_ingest::gateway::mqtt::topics;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some(n)) = codec::frame(rest, 64 * 1024) {
        let (packet, tail) = rest.split_at(n);
        let _ = codec::connect_version(packet);
        for version in [Version::V3, Version::V5] {
            if let Ok(Inbound::Publish(publish)) = codec::decode(version, packet) {
                let _ = topics::route(&publish.topic);
            }
        }
        rest = tail;
    }
});
