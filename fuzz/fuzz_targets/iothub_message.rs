//! IoT Hub messages: the MQTT property bag, the HTTPS batch, and the JSON body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_ingest::formats::iothub::{self, Message};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // The first line is the property bag of an MQTT topic, the rest the body.
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (bag, body) = data.split_at(split);
    let body = body.get(1..).unwrap_or_default();
    if let Ok(bag) = std::str::from_utf8(bag)
        && let Ok(message) = Message::from_property_bag(bag)
        && let Ok(drafts) = iothub::translate(body, &message, 1000)
    {
        common::build_all(drafts);
    }
    if let Ok(messages) = iothub::batch(data, 1000) {
        for (body, message) in messages {
            if let Ok(drafts) = iothub::translate(&body, &message, 1000) {
                common::build_all(drafts);
            }
        }
    }
});
