//! Which protocol each simulated device speaks, and how a request of its readings looks in it.
//!
//! - `http`: `POST /v1/telemetry`, the readings as JSON (one object, or an array for a batch),
//!   with an IoT Hub SAS token in `Authorization`.
//! - `line`: `POST /api/v2/write?precision=us`, InfluxDB line protocol as Telegraf writes it,
//!   the SAS token as `Authorization: Token …`. Line protocol merges the lines of one device
//!   at one timestamp into one reading, so the lines of a request are kept a microsecond apart
//!   at least.
//!
//! A fleet's mix (`http=80,line=20`) gives each device one protocol for the whole run,
//! deterministically for the seed.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::str::FromStr;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::readings::Reading;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Line,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Http, Protocol::Line];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Line => "line",
        }
    }

    /// The gateway path readings go to.
    pub fn path(self) -> &'static str {
        match self {
            Protocol::Http => "v1/telemetry",
            Protocol::Line => "api/v2/write?precision=us",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::Http => "application/json",
            Protocol::Line => "text/plain; charset=utf-8",
        }
    }

    /// The `Authorization` header for a device's SAS token.
    pub fn authorization(self, token: &str) -> Cow<'_, str> {
        match self {
            Protocol::Http => Cow::Borrowed(token),
            Protocol::Line => Cow::Owned(format!("Token {token}")),
        }
    }

    /// The body of one request of `device`'s readings.
    pub fn body(self, device: &str, readings: &[Reading]) -> Vec<u8> {
        match self {
            Protocol::Http => match readings {
                [one] => serde_json::to_vec(one),
                many => serde_json::to_vec(many),
            }
            .unwrap_or_default(),
            Protocol::Line => {
                let mut out = String::new();
                let mut last_us = i64::MIN;
                for r in readings {
                    // Distinct timestamps, or the lines would merge into one reading.
                    let us = (r.time * 1000).max(last_us.saturating_add(1));
                    last_us = us;
                    line(&mut out, device, r, us);
                }
                out.into_bytes()
            }
        }
    }
}

/// `telemetry,device=ID temperature=21.5,…,seq=5i 1764000000000000`
fn line(out: &mut String, device: &str, r: &Reading, time_us: i64) {
    let _ = write!(out, "telemetry,device={device} seq={}i", r.seq);
    let floats = [
        ("temperature", r.temperature),
        ("humidity", r.humidity),
        ("co2", r.co2),
        ("light", r.light),
        ("battery", r.battery),
    ];
    for (name, value) in floats {
        if let Some(v) = value {
            let _ = write!(out, ",{name}={v}");
        }
    }
    if let Some(motion) = r.motion {
        let _ = write!(out, ",motion={motion}");
    }
    if let Some(occupancy) = r.occupancy {
        let _ = write!(out, ",occupancy={occupancy}i");
    }
    let _ = writeln!(out, " {time_us}");
}

/// Weights of each protocol in a fleet: `http=80,line=20`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolMix(Vec<(Protocol, u32)>);

impl Default for ProtocolMix {
    fn default() -> Self {
        ProtocolMix(vec![(Protocol::Http, 1)])
    }
}

impl FromStr for ProtocolMix {
    type Err = String;

    fn from_str(s: &str) -> Result<ProtocolMix, String> {
        let names: Vec<_> = Protocol::ALL.iter().map(|p| p.name()).collect();
        let mut mix = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
            let protocol = Protocol::ALL
                .into_iter()
                .find(|p| p.name() == name.trim())
                .ok_or_else(|| {
                    format!(
                        "unknown protocol {name:?} in {s:?}; one of {}",
                        names.join(", ")
                    )
                })?;
            let weight: u32 = weight.trim().parse().map_err(|_| {
                format!("the weight of {name} in {s:?} must be a whole number, not {weight:?}")
            })?;
            mix.push((protocol, weight));
        }
        if mix.iter().map(|(_, w)| u64::from(*w)).sum::<u64>() == 0 {
            return Err(format!(
                "{s:?} gives no protocol a weight; e.g. http=80,line=20 (protocols: {})",
                names.join(", ")
            ));
        }
        Ok(ProtocolMix(mix))
    }
}

impl ProtocolMix {
    /// Each of `devices` devices' protocol.
    pub fn assign(&self, devices: usize, seed: u64) -> Vec<Protocol> {
        let total: u64 = self.0.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x0050_0070_u64);
        (0..devices)
            .map(|_| {
                let mut draw = rng.random_range(0..total.max(1));
                for (protocol, weight) in &self.0 {
                    if draw < u64::from(*weight) {
                        return *protocol;
                    }
                    draw -= u64::from(*weight);
                }
                Protocol::Http
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(seq: i64, time: i64) -> Reading {
        Reading {
            seq,
            time,
            temperature: Some(21.5),
            humidity: None,
            co2: None,
            light: None,
            motion: Some(true),
            occupancy: Some(2),
            battery: None,
        }
    }

    #[test]
    fn line_protocol_keeps_each_reading_on_its_own_timestamp() {
        let body = Protocol::Line.body("dev-1", &[reading(4, 1000), reading(5, 1000)]);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "telemetry,device=dev-1 seq=4i,temperature=21.5,motion=true,occupancy=2i 1000000\n\
             telemetry,device=dev-1 seq=5i,temperature=21.5,motion=true,occupancy=2i 1000001\n"
        );
        let json = Protocol::Http.body("dev-1", &[reading(4, 1000)]);
        assert!(json.starts_with(b"{\"seq\":4"));
    }

    #[test]
    fn a_mix_is_parsed_checked_and_assigned_by_weight() {
        let mix: ProtocolMix = "http=3, line=1".parse().unwrap();
        let assigned = mix.assign(4000, 1);
        let line = assigned.iter().filter(|p| **p == Protocol::Line).count();
        assert!((800..1200).contains(&line), "{line}");
        assert_eq!(assigned, mix.assign(4000, 1));
        assert!(
            "mqtt=1"
                .parse::<ProtocolMix>()
                .unwrap_err()
                .contains("mqtt")
        );
        assert!(
            "http=x"
                .parse::<ProtocolMix>()
                .unwrap_err()
                .contains("whole number")
        );
        assert!("http=0".parse::<ProtocolMix>().is_err());
        assert_eq!(
            "line".parse::<ProtocolMix>().unwrap().assign(3, 1),
            [Protocol::Line; 3]
        );
    }
}
