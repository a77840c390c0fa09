//! Plumbing shared by every weir role.
//!
//! - [`bus`]: the trait over a partitioned, offset-addressed log that every role talks to, and
//!   its embedded `memory` backend. The Kafka backend implements the same trait.
//! - [`http`]: the one JSON error body every HTTP route answers with.
//! - [`shutdown`]: waiting for SIGINT/SIGTERM.
//!
//! Nothing here knows about telemetry: records on the bus are opaque keyed bytes.

pub mod bus;
pub mod http;
pub mod shutdown;

/// Topic names, fixed by the design so that separately deployed roles agree on them.
pub mod topics {
    /// Canonical `Telemetry` records, Avro single-object encoded, key = `tenant/building`.
    pub const TELEMETRY: &str = "telemetry";
    /// Records the gateway accepted but could not translate, with the reason.
    pub const TELEMETRY_DLQ: &str = "telemetry-dlq";
}
