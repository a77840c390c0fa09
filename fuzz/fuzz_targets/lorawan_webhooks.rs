//! The uplink webhooks of ThingPark, The Things Stack and ChirpStack, then the payload driver
//! of every model on what they carry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_ingest::lorawan::{self, Network, drivers, webhook};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    for network in Network::ALL {
        if let Ok(uplink) = webhook::parse(network, data) {
            for (model, _) in drivers::models() {
                if let Ok(draft) = lorawan::draft(&uplink, Some(model)) {
                    common::build_all(vec![draft]);
                }
            }
        }
    }
});
