//! Helpers for tests that put readings on an embedded bus and look at the lake they become,
//! here and in the crates above.

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use weir_common::bus::{Bus, MemoryBus, Record, TopicSpec};
use weir_common::topics;
use weir_schemas::{Telemetry, TelemetryCodec};

use crate::{Lake, sql};

/// An embedded bus with a `telemetry` topic of `partitions` partitions.
pub async fn telemetry_bus(partitions: u32) -> MemoryBus {
    let bus = MemoryBus::default();
    bus.ensure_topic(&TopicSpec {
        name: topics::TELEMETRY.into(),
        partitions,
        compacted: false,
        retention: None,
    })
    .await
    .expect("a valid topic");
    bus
}

/// Puts `records` on `telemetry`, as a gateway does.
pub async fn produce(bus: &MemoryBus, records: &[Telemetry]) {
    let codec = TelemetryCodec::global();
    let records = records
        .iter()
        .map(|r| Record {
            key: r.bus_key().into(),
            value: codec.encode(r).expect("a valid reading").into(),
            timestamp_ms: 0,
        })
        .collect();
    bus.produce(topics::TELEMETRY, records)
        .await
        .expect("the bus takes them");
}

/// The one integer a query like `SELECT count(*) ...` answers.
pub async fn count(lake: &Lake, sql_text: &str) -> i64 {
    let batches = sql::query(lake, sql_text).await.expect("the query runs");
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}
