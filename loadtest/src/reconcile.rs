//! What the lake holds, counted with SQL, and checked reading by reading against a run.


use arrow::array::AsArray;
use arrow::datatypes::{DataType, Int64Type};
use weir_simulator::{Fleet, LoadReport};
use weir_sinks::Lake;
use weir_sinks::sql::{self, SqlError};

/// Readings in the telemetry table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LakeCount {
    /// Rows.
    pub stored: u64,
    /// Distinct `(device, seq)`: rows minus duplicates.
    pub distinct: u64,
}

pub async fn count(lake: &Lake) -> Result<LakeCount, SqlError> {
    // Grouping by the two columns is vectorised; count(DISTINCT (device, seq)) hashes a struct
    // per row and is two orders of magnitude slower.
    let batches = sql::query(
        lake,
        "SELECT (SELECT count(*) FROM telemetry) AS stored, \
                (SELECT count(*) FROM (SELECT device, seq FROM telemetry GROUP BY device, seq)) AS distinct_readings",
    )
    .await?;
    let value = |column: usize| {
        batches
            .first()
            .map(|b| b.column(column).as_primitive::<Int64Type>().value(0) as u64)
            .unwrap_or(0)
    };
    Ok(LakeCount {
        stored: value(0),
        distinct: value(1),
    })
}

/// `WHERE` only devices whose id starts with `prefix` (quoted as an SQL literal).
fn devices_filter(prefix: &str) -> String {
    let literal = prefix.replace('\'', "''");
    format!("WHERE starts_with(CAST(device AS VARCHAR), '{literal}')")
}

/// Rows of devices whose id starts with `prefix`.
pub async fn count_devices(lake: &Lake, prefix: &str) -> Result<u64, SqlError> {
    let query = format!("SELECT count(*) FROM telemetry {}", devices_filter(prefix));
    let batches = sql::query(lake, &query).await?;
    Ok(batches
        .first()
        .map(|b| b.column(0).as_primitive::<Int64Type>().value(0) as u64)
        .unwrap_or(0))
}

/// Every acknowledged reading of a run looked up in the lake, one by one.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reconciliation {
    /// Rows in the lake.
    pub stored: u64,
    /// Acknowledged readings found nowhere in the lake.
    pub lost: u64,
    /// Rows beyond the first copy of a reading.
    pub duplicated: u64,
    /// Readings in the lake that the device was never told were accepted: a request that
    /// timed out or was answered 503 after its reading was written. Not a fault: the device
    /// sent it again or gave up, and it is stored once.
    pub stored_unacknowledged: u64,
    /// Rows that are no reading of this run (another run's, or corrupted).
    pub foreign: u64,
    /// Up to five lost readings, `tenant/device#seq`.
    pub lost_examples: Vec<String>,
}

impl Reconciliation {
    pub fn is_exact(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.foreign == 0
    }
}

/// Checks the lake against what the simulator was told: each acknowledged event of `loads`
/// (the steps of one run, one schedule) must be stored exactly once. Independent of the
/// pipeline's counters: it knows only the fleet, the schedule of the run, and the rows.
///
/// `only_devices`: in a lake other devices write to as well, only the rows of devices whose
/// id starts with it are looked at (see [`weir_simulator::FleetConfig::id_prefix`]).
pub async fn exact(
    lake: &Lake,
    fleet: &Fleet,
    loads: &[LoadReport],
    only_devices: Option<&str>,
) -> Result<Reconciliation, SqlError> {
    let Some(first) = loads.first() else {
        return Ok(Reconciliation::default());
    };
    let schedule = &first.schedule;
    let events = loads
        .iter()
        .map(|l| l.first_event + l.events)
        .max()
        .unwrap_or(0);
    // Whether event `k` of the run was acknowledged, whichever step sent it.
    let acked = |k: u64| {
        loads.iter().any(|l| {
            (l.first_event..l.first_event + l.events).contains(&k)
                && l.acks.contains(k - l.first_event)
        })
    };
    let index = fleet.index();
    let positions = schedule.positions();
    let mut found = vec![0u64; events.div_ceil(64) as usize];
    let mut out = Reconciliation::default();
    let filter = only_devices.map(devices_filter).unwrap_or_default();
    let batches = sql::query(
        lake,
        &format!("SELECT tenant, device, seq, count(*) FROM telemetry {filter} GROUP BY 1, 2, 3"),
    )
    .await?;
    for batch in &batches {
        // Whatever string type the plan chose (dictionary, view): as plain strings.
        let text = |c: usize| arrow::compute::cast(batch.column(c), &DataType::Utf8);
        let (tenant, device) = (text(0)?, text(1)?);
        let (tenant, device) = (tenant.as_string::<i32>(), device.as_string::<i32>());
        let seq = batch.column(2).as_primitive::<Int64Type>();
        let rows = batch.column(3).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let copies = rows.value(i) as u64;
            out.stored += copies;
            out.duplicated += copies - 1;
            let event = index
                .get(&(tenant.value(i), device.value(i)))
                .and_then(|d| schedule.index(positions[*d], seq.value(i)))
                .filter(|k| *k < events);
            match event {
                Some(k) if acked(k) => found[(k / 64) as usize] |= 1 << (k % 64),
                Some(_) => out.stored_unacknowledged += 1,
                None => out.foreign += copies,
            }
        }
    }
    for k in 0..events {
        if acked(k) && found[(k / 64) as usize] & (1 << (k % 64)) == 0 {
            out.lost += 1;
            if out.lost_examples.len() < 5 {
                let (d, seq) = schedule.event(k);
                let device = &fleet.devices[d];
                out.lost_examples
                    .push(format!("{}/{}#{seq}", device.tenant, device.id));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use weir_common::shutdown::CancellationToken;
    use weir_schemas::Telemetry;
    use weir_simulator::{Acks, FleetConfig, LatencySummary, Schedule};
    use weir_sinks::testing::{produce, telemetry_bus};
    use weir_sinks::{ColdSink, ColdSinkConfig};

    use super::*;

    /// A run of 30 events over 10 devices where the lake lost one acknowledged reading, holds
    /// another twice, holds one the device was not told was accepted, and one that is no
    /// reading of the run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_acknowledged_reading_is_looked_up() {
        let fleet = Fleet::generate(&FleetConfig {
            devices: 10,
            seed: 7,
            ..FleetConfig::default()
        })
        .unwrap();
        let schedule = Schedule::new(10, 7, 1);
        let acks = Acks::new(30);
        for k in (0..30).filter(|k| *k != 5) {
            acks.set(k);
        }
        let row = |k: u64| {
            let (d, seq) = schedule.event(k);
            let device = &fleet.devices[d];
            Telemetry::new(
                &device.tenant,
                &device.building,
                &device.id,
                seq,
                1_000 + k as i64,
                "test",
            )
        };
        let mut rows: Vec<Telemetry> = (0..30).filter(|k| *k != 3).map(row).collect();
        rows.push(Telemetry::new("nobody", "b", "ghost", 1, 1_000, "test"));

        let lake = Lake::parse("memory://reconcile-each").unwrap();
        let bus = telemetry_bus(1).await;
        // Two sink runs, the second with event 7 again: a batch drops repeats of a reading,
        // so a duplicate takes a second commit.
        for rows in [rows, vec![row(7)]] {
            produce(&bus, &rows).await;
            let sink = ColdSink::start(
                ColdSinkConfig {
                    batch_max_age: Duration::from_millis(10),
                    ..ColdSinkConfig::new(lake.clone())
                },
                Arc::new(bus.clone()),
            )
            .await
            .unwrap();
            let stop = CancellationToken::new();
            stop.cancel();
            sink.run(stop).await.unwrap();
        }

        let load = LoadReport {
            sent: 30,
            accepted: 29,
            rejected: 0,
            failed: 1,
            retried: 0,
            elapsed_secs: 1.0,
            latency_ms: LatencySummary {
                p50: 1.0,
                p99: 1.0,
                p999: 1.0,
                max: 1.0,
            },
            sample_errors: Vec::new(),
            timeline: Vec::new(),
            first_event: 0,
            events: 30,
            schedule: Arc::new(schedule.clone()),
            acks: Arc::new(acks),
            rejects: Arc::new(Acks::new(30)),
            rate: 30.0,
            started_ms: 0,
        };
        let found = exact(&lake, &fleet, &[load], None).await.unwrap();
        let (d, seq) = schedule.event(3);
        let lost = format!("{}/{}#{seq}", fleet.devices[d].tenant, fleet.devices[d].id);
        assert_eq!(
            found,
            Reconciliation {
                stored: 31,
                lost: 1,
                duplicated: 1,
                stored_unacknowledged: 1,
                foreign: 1,
                lost_examples: vec![lost],
            }
        );
        assert!(!found.is_exact());
    }
}
