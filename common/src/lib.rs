//! Plumbing shared by every weir role.
//!
//! - [`bus`]: the trait over a partitioned, offset-addressed log that every role talks to, and
//!   its embedded `memory` backend. The Kafka backend implements the same trait.
//! - [`http`]: the one JSON error body every HTTP route answers with.
//! - [`listener`]: the HTTP listener, plain or TLS, with a per-address connection limit.
//! - [`sas`]: IoT Hub shared access signature tokens, made by devices and tools, checked by
//!   gateways.
//! - [`shutdown`]: waiting for SIGINT/SIGTERM.
//!
//! Nothing here knows about telemetry: records on the bus are opaque keyed bytes.

pub mod bus;
pub mod http;
pub mod listener;
pub mod sas;
pub mod shutdown;

/// Topic and consumer-group names, fixed by the design so that separately deployed roles agree
/// on them, under an optional prefix so that several deployments (or test runs) can share one
/// Kafka cluster.
pub mod topics {
    /// Canonical `Telemetry` records, Avro single-object encoded, key = `tenant/building`.
    pub const TELEMETRY: &str = "telemetry";
    /// Records that could not be processed, with the reason.
    pub const TELEMETRY_DLQ: &str = "telemetry-dlq";
    /// Per-building windows (rolling and final minutes), compacted, key =
    /// `tenant/building/kind[/window end]`.
    pub const BUILDING_AGGREGATES: &str = "building-aggregates";
    /// The reported side of device twins, compacted, key = `tenant/device`.
    pub const DEVICE_TWINS: &str = "device-twins";
    /// How far each processor group has let go of each `telemetry` partition, compacted, key =
    /// `group/partition`: where a processor that takes a partition over starts.
    pub const PROCESSOR_PROGRESS: &str = "processor-progress";
    /// Alerts raised and cleared, JSON, key = `tenant/rule/subject`.
    pub const ALERTS: &str = "alerts";
    /// Registry changes (tenants, buildings, devices), compacted, key = `kind/id`.
    pub const REGISTRY: &str = "registry";

    /// The names one deployment uses.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Topics {
        prefix: String,
    }

    impl Topics {
        pub fn with_prefix(prefix: impl Into<String>) -> Topics {
            Topics {
                prefix: prefix.into(),
            }
        }

        pub fn telemetry(&self) -> String {
            format!("{}{TELEMETRY}", self.prefix)
        }

        pub fn telemetry_dlq(&self) -> String {
            format!("{}{TELEMETRY_DLQ}", self.prefix)
        }

        pub fn building_aggregates(&self) -> String {
            format!("{}{BUILDING_AGGREGATES}", self.prefix)
        }

        pub fn device_twins(&self) -> String {
            format!("{}{DEVICE_TWINS}", self.prefix)
        }

        pub fn processor_progress(&self) -> String {
            format!("{}{PROCESSOR_PROGRESS}", self.prefix)
        }

        pub fn alerts(&self) -> String {
            format!("{}{ALERTS}", self.prefix)
        }

        pub fn registry(&self) -> String {
            format!("{}{REGISTRY}", self.prefix)
        }

        /// The consumer group of a role, e.g. `weir-processor`.
        pub fn group(&self, name: &str) -> String {
            format!("{}{name}", self.prefix)
        }
    }
}
