//! The reported side of device twins, kept by the processor from the readings it consumes:
//! the latest value of every measurement with its time, when the device was last seen and
//! over which protocol, and whether it has gone silent.
//!
//! A device's usual interval is a moving average of the gaps between the event times of its
//! readings (event times, not arrival times: a gateway that forwards a batch must not make a
//! device look chatty). A device is silent once nothing has arrived from it for
//! `silent_factor` times its usual interval, and never sooner than `silent_min_us`; it is
//! well again with its next reading. Devices that have sent only one reading have no usual
//! interval and are not judged.

use weir_common::bus::Partition;
use weir_schemas::{Measure, Reading};

use crate::records::{Reported, TwinRecord};

/// Weight of the newest gap in the moving average of a device's interval.
const INTERVAL_WEIGHT: f64 = 0.2;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SilenceRule {
    /// A device is silent after this many of its usual intervals without a reading.
    pub factor: f64,
    /// ... and never before this long, in microseconds.
    pub min_us: i64,
}

impl Default for SilenceRule {
    fn default() -> Self {
        Self {
            factor: 3.0,
            min_us: 60_000_000,
        }
    }
}

/// Where a device stands in the registry, as far as its twin is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Enabled (or registered): judged, silent when it stops reporting.
    Active,
    /// Disabled or revoked: its twin is kept, but it is not expected to report, so never
    /// judged silent.
    Inactive,
    /// Deleted (or never registered): its twin goes.
    Gone,
}

/// The registry, as the processor asks it about devices.
pub trait Fleet: Send + Sync + 'static {
    fn standing(&self, tenant: &str, device: &str) -> Standing;
}

/// What a sweep of the twins against the registry changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    pub tenant: String,
    pub device: String,
    pub standing: Standing,
}

#[derive(Debug)]
struct Device {
    partition: Partition,
    /// Disabled or revoked when last looked up: not judged silent.
    inactive: bool,
    twin: TwinRecord,
    /// Moving average of the gap between readings, microseconds.
    interval_us: Option<f64>,
    /// Changed since it was last published.
    dirty: bool,
}

/// Twins of the devices whose readings this processor consumes, by tenant and device.
#[derive(Debug, Default)]
pub struct Twins {
    devices: foldhash::HashMap<String, foldhash::HashMap<String, Device>>,
}

impl Twins {
    /// Takes a reading into its device's twin. Values older than what the twin holds (a late
    /// reading) do not replace newer ones.
    pub fn observe(&mut self, record: &impl Reading, partition: Partition) {
        let tenant = match self.devices.get_mut(record.tenant()) {
            Some(tenant) => tenant,
            None => self.devices.entry(record.tenant().to_owned()).or_default(),
        };
        let device = match tenant.get_mut(record.device()) {
            Some(device) => device,
            None => tenant
                .entry(record.device().to_owned())
                .or_insert_with(|| Device {
                    partition,
                    inactive: false,
                    twin: TwinRecord {
                        tenant: record.tenant().to_owned(),
                        device: record.device().to_owned(),
                        building: record.building().to_owned(),
                        floor: record.floor().map(str::to_owned),
                        room: record.room().map(str::to_owned),
                        protocol: record.protocol().to_owned(),
                        last_seen_us: record.ingest_time(),
                        last_event_us: record.event_time(),
                        reported: Default::default(),
                        interval_us: None,
                        silent_since_us: None,
                    },
                    interval_us: None,
                    dirty: true,
                }),
        };
        device.observe(record, partition);
    }

    /// Marks devices silent that have been quiet too long at `now_us`, among those whose
    /// partition `owned` says this processor consumes.
    pub fn check_silence(
        &mut self,
        rule: &SilenceRule,
        now_us: i64,
        owned: impl Fn(Partition) -> bool,
    ) {
        for device in self.devices.values_mut().flat_map(|t| t.values_mut()) {
            if device.twin.silent_since_us.is_some() || device.inactive || !owned(device.partition)
            {
                continue;
            }
            let Some(interval) = device.interval_us else {
                continue;
            };
            let allowed = ((interval * rule.factor) as i64).max(rule.min_us);
            let quiet_since = device.twin.last_seen_us;
            if now_us.saturating_sub(quiet_since) > allowed {
                device.twin.silent_since_us = Some(quiet_since.saturating_add(allowed));
                device.dirty = true;
            }
        }
    }

    /// The twins changed since the last call, marked published.
    pub fn take_changed(&mut self) -> Vec<TwinRecord> {
        let mut out = Vec::new();
        for device in self.devices.values_mut().flat_map(|t| t.values_mut()) {
            if std::mem::take(&mut device.dirty) {
                out.push(device.twin.clone());
            }
        }
        out
    }

    /// The twins of the devices whose partition `owned` says this processor consumes.
    pub fn owned(&self, owned: impl Fn(Partition) -> bool) -> impl Iterator<Item = &TwinRecord> {
        self.devices
            .values()
            .flat_map(|t| t.values())
            .filter(move |d| owned(d.partition))
            .map(|d| &d.twin)
    }

    /// Takes back twins published earlier (by this or another processor), so that a device
    /// that went quiet before a restart is still judged. A device seen since is left alone.
    pub fn restore(&mut self, twin: TwinRecord, partition: Partition) {
        let tenant = self.devices.entry(twin.tenant.clone()).or_default();
        tenant.entry(twin.device.clone()).or_insert_with(|| Device {
            partition,
            inactive: false,
            interval_us: twin.interval_us.map(|i| i as f64),
            twin,
            dirty: false,
        });
    }

    /// Looks every twin of an `owned` partition up in the registry: forgets deleted devices'
    /// twins, and stops judging disabled and revoked devices (their silent flag clears).
    /// Returns the devices whose standing changed so (a deleted device's twin is gone).
    pub fn sweep(
        &mut self,
        standing: impl Fn(&str, &str) -> Standing,
        owned: impl Fn(Partition) -> bool,
    ) -> Vec<Retired> {
        let mut out = Vec::new();
        for (tenant, devices) in &mut self.devices {
            devices.retain(|id, device| {
                if !owned(device.partition) {
                    return true;
                }
                let now = standing(tenant, id);
                let retired = |standing| Retired {
                    tenant: tenant.clone(),
                    device: id.clone(),
                    standing,
                };
                match now {
                    Standing::Gone => {
                        out.push(retired(Standing::Gone));
                        return false;
                    }
                    Standing::Inactive if !device.inactive => {
                        device.inactive = true;
                        if device.twin.silent_since_us.take().is_some() {
                            device.dirty = true;
                        }
                        out.push(retired(Standing::Inactive));
                    }
                    Standing::Active => device.inactive = false,
                    Standing::Inactive => {}
                }
                true
            });
        }
        self.devices.retain(|_, t| !t.is_empty());
        out
    }

    /// Forgets a device, as a tombstone on `device-twins` says.
    pub fn remove(&mut self, tenant: &str, device: &str) {
        if let Some(devices) = self.devices.get_mut(tenant) {
            devices.remove(device);
        }
    }

    /// Forgets the devices of partitions no longer consumed here.
    pub fn retain_partitions(&mut self, owned: impl Fn(Partition) -> bool) {
        for tenant in self.devices.values_mut() {
            tenant.retain(|_, d| owned(d.partition));
        }
        self.devices.retain(|_, t| !t.is_empty());
    }

    pub fn len(&self) -> usize {
        self.devices.values().map(|t| t.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn silent(&self) -> usize {
        self.devices
            .values()
            .flat_map(|t| t.values())
            .filter(|d| d.twin.silent_since_us.is_some())
            .count()
    }
}

impl Device {
    fn observe(&mut self, record: &impl Reading, partition: Partition) {
        let twin = &mut self.twin;
        self.dirty = true;
        self.partition = partition;
        twin.silent_since_us = None;
        twin.last_seen_us = twin.last_seen_us.max(record.ingest_time());
        let newer = record.event_time() > twin.last_event_us;
        if newer {
            let gap = (record.event_time() - twin.last_event_us) as f64;
            self.interval_us = Some(match self.interval_us {
                Some(average) => average + INTERVAL_WEIGHT * (gap - average),
                None => gap,
            });
            twin.interval_us = self.interval_us.map(|i| i.round() as i64);
            twin.last_event_us = record.event_time();
        }
        if newer || twin.reported.is_empty() {
            // Where the device is and what it spoke follow its newest reading.
            set_if_changed(&mut twin.building, record.building());
            set_option_if_changed(&mut twin.floor, record.floor());
            set_option_if_changed(&mut twin.room, record.room());
            set_if_changed(&mut twin.protocol, record.protocol());
        }
        let values = record
            .measurements()
            .map(|(m, v)| (Measure::name(m), v))
            .chain(record.extra());
        for (name, value) in values {
            let reported = Reported {
                value,
                time_us: record.event_time(),
            };
            twin.reported.observe(name, reported);
        }
    }
}

fn set_if_changed(field: &mut String, value: &str) {
    if field != value {
        value.clone_into(field);
    }
}

fn set_option_if_changed(field: &mut Option<String>, value: Option<&str>) {
    if field.as_deref() != value {
        *field = value.map(str::to_owned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_schemas::Telemetry;

    const SEC: i64 = 1_000_000;

    fn reading(device: &str, t: i64, temperature: f64) -> Telemetry {
        let mut r = Telemetry::new("fabrikam", "b1", device, 0, t, "mqtt");
        r.temperature = Some(temperature);
        r
    }

    #[test]
    fn the_twin_keeps_the_newest_value_of_each_measurement() {
        let mut twins = Twins::default();
        let mut first = reading("d1", 100 * SEC, 20.0);
        first.humidity = Some(40.0);
        twins.observe(&first, 0);
        twins.observe(&reading("d1", 160 * SEC, 21.0), 0);
        // A late reading: older than what the twin has.
        let mut late = reading("d1", 130 * SEC, 99.0);
        late.co2 = Some(500.0);
        twins.observe(&late, 0);
        let twin = twins.take_changed().pop().unwrap();
        assert_eq!(twin.reported["temperature"].value, 21.0);
        assert_eq!(twin.reported["humidity"].time_us, 100 * SEC);
        assert_eq!(twin.reported["co2"].value, 500.0, "nothing newer of it");
        assert_eq!(twin.last_event_us, 160 * SEC);
        assert_eq!(twin.interval_us, Some(60 * SEC));
        assert!(twins.take_changed().is_empty(), "published once");
    }

    #[test]
    fn a_device_is_silent_after_missing_its_usual_readings_and_well_when_it_reports() {
        let rule = SilenceRule {
            factor: 3.0,
            min_us: 10 * SEC,
        };
        let mut twins = Twins::default();
        for minute in 0..5 {
            let mut r = reading("d1", minute * 60 * SEC, 20.0);
            r.ingest_time = r.event_time;
            twins.observe(&r, 0);
        }
        twins.observe(&reading("once", 0, 20.0), 0);
        twins.take_changed();
        let last = 4 * 60 * SEC;
        twins.check_silence(&rule, last + 179 * SEC, |_| true);
        assert_eq!(twins.silent(), 0);
        twins.check_silence(&rule, last + 181 * SEC, |_| false);
        assert_eq!(
            twins.silent(),
            0,
            "only devices of owned partitions are judged"
        );
        twins.check_silence(&rule, last + 181 * SEC, |_| true);
        assert_eq!(twins.silent(), 1, "a device seen once is not judged");
        let silent = twins.take_changed();
        assert_eq!(silent.len(), 1);
        assert_eq!(silent[0].silent_since_us, Some(last + 180 * SEC));
        let mut back = reading("d1", last + 300 * SEC, 20.0);
        back.ingest_time = back.event_time;
        twins.observe(&back, 0);
        assert_eq!(twins.silent(), 0);
        assert_eq!(twins.take_changed()[0].silent_since_us, None);
    }
}
