//! LoRaWAN: uplinks pushed by network servers, and the payload drivers that decode them.
//!
//! - [`webhook`]: the uplink bodies of Actility ThingPark, The Things Stack v3 and
//!   ChirpStack v4, read into one [`Uplink`];
//! - [`drivers`]: payload decoders by device model (Cayenne LPP, Elsys ERS, Dragino LHT65,
//!   Milesight EM300-TH); adding one is one file;
//! - [`draft`]: an uplink and its device's model into a reading;
//! - [`Dedup`]: the same frame pushed twice (several gateways, a webhook retry) counts once.
//!
//! What an uplink becomes:
//!
//! | uplink                     | record                                                |
//! |----------------------------|-------------------------------------------------------|
//! | decoded payload            | measurements, as the driver names them                |
//! | frame counter (`FCntUp`)   | `seq`, and property `lorawan.f_cnt`                   |
//! | network server's time      | event time                                            |
//! | best gateway's RSSI, SNR   | extra `lorawan_rssi_dbm`, `lorawan_snr_db`            |
//! | best gateway's id          | property `lorawan.gateway`                            |
//! | gateways that heard it     | property `lorawan.gateways`                           |
//! | DevEUI, FPort, SF, freq.   | properties `lorawan.dev_eui`, `lorawan.f_port`, `lorawan.sf`, `lorawan.frequency_hz` |
//!
//! Nothing here panics on any input, and every output is bounded by the size of its input.
//!
//! A device that rejoins starts its frame counter again: its readings then repeat sequence
//! numbers, and are told apart by their event times.

pub mod drivers;
pub mod webhook;

use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

pub use webhook::{Network, Uplink};
use weir_schemas::protocol;

use crate::formats::Draft;
use crate::gateway::IngestError;

/// The record's `protocol` for uplinks of `network`.
pub fn protocol(network: Network) -> &'static str {
    match network {
        Network::ThingPark => protocol::LORAWAN_THINGPARK,
        Network::TheThingsStack => protocol::LORAWAN_TTS,
        Network::ChirpStack => protocol::LORAWAN_CHIRPSTACK,
    }
}

/// Decodes an uplink's payload with the driver of `model`, and keeps its radio metadata.
pub fn draft(uplink: &Uplink, model: Option<&str>) -> Result<Draft, IngestError> {
    let model = model.ok_or_else(|| IngestError::NoDriver {
        model: None,
        known: known_models(),
    })?;
    let driver = drivers::driver_for(model).ok_or_else(|| IngestError::NoDriver {
        model: Some(model.to_owned()),
        known: known_models(),
    })?;
    let mut values =
        driver
            .decode(uplink.f_port, &uplink.payload)
            .map_err(|e| IngestError::Undecodable {
                driver: driver.name(),
                reason: e.to_string(),
            })?;
    if let Some(rssi) = uplink.rssi {
        values.push(("lorawan_rssi_dbm".into(), rssi));
    }
    if let Some(snr) = uplink.snr {
        values.push(("lorawan_snr_db".into(), snr));
    }
    let mut properties = vec![
        ("lorawan.dev_eui".to_owned(), uplink.dev_eui.clone()),
        ("lorawan.f_cnt".to_owned(), uplink.f_cnt.to_string()),
        ("lorawan.f_port".to_owned(), uplink.f_port.to_string()),
        ("lorawan.gateways".to_owned(), uplink.gateways.to_string()),
    ];
    if let Some(gateway) = &uplink.gateway {
        properties.push(("lorawan.gateway".into(), gateway.clone()));
    }
    if let Some(sf) = uplink.spreading_factor {
        properties.push(("lorawan.sf".into(), sf.to_string()));
    }
    if let Some(hz) = uplink.frequency_hz {
        properties.push(("lorawan.frequency_hz".into(), hz.to_string()));
    }
    Ok(Draft {
        device: None,
        seq: Some(i64::from(uplink.f_cnt)),
        time_us: uplink.time_us,
        values,
        properties,
    })
}

fn known_models() -> String {
    drivers::models()
        .map(|(model, _)| model)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Frames seen lately, to store each once. Bounded: the oldest are forgotten first, which
/// is safe because repeats arrive within seconds of the original.
pub struct Dedup {
    seen: Mutex<(HashSet<u64>, VecDeque<u64>)>,
    capacity: usize,
}

impl Dedup {
    pub fn new(capacity: usize) -> Self {
        Dedup {
            seen: Mutex::new((HashSet::new(), VecDeque::new())),
            capacity: capacity.max(1),
        }
    }

    /// Whether `uplink` has not been seen (and remembers it). A frame is its DevEUI, frame
    /// counter and payload: after a rejoin the counter starts again with other payloads.
    pub fn first_time(&self, uplink: &Uplink) -> bool {
        let id = frame_id(uplink);
        let mut guard = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *guard;
        if !set.insert(id) {
            return false;
        }
        order.push_back(id);
        if order.len() > self.capacity
            && let Some(oldest) = order.pop_front()
        {
            set.remove(&oldest);
        }
        true
    }

    /// Forgets `uplink`, which was not stored after all, so that its retry is taken.
    pub fn forget(&self, uplink: &Uplink) {
        let id = frame_id(uplink);
        let mut guard = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *guard;
        if set.remove(&id) {
            order.retain(|x| *x != id);
        }
    }
}

fn frame_id(uplink: &Uplink) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        &uplink.dev_eui,
        uplink.f_cnt,
        uplink.f_port,
        &uplink.payload,
    )
        .hash(&mut hasher);
    hasher.finish()
}
