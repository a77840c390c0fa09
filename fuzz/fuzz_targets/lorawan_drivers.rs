//! Every payload driver on arbitrary frames: the first byte is the port, the rest the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_ingest::lorawan::drivers;

fuzz_target!(|data: &[u8]| {
    let Some((&port, payload)) = data.split_first() else {
        return;
    };
    for (model, _) in drivers::models() {
        if let Some(driver) = drivers::driver_for(model) {
            let _ = driver.decode(port, payload);
        }
    }
});
