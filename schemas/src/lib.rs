//! The canonical weir records.
//!
//! `avro/*.avsc` are the source of truth. This crate holds, for each record:
//! - its Rust type ([`Telemetry`]), whose serde shape matches the Avro schema field for field;
//! - its codec ([`TelemetryCodec`]): Avro single-object encoding (`C3 01`, the schema's
//!   CRC-64-AVRO fingerprint, then the datum), decided once here for every topic. The schema is
//!   parsed and resolved once per process, never per message;
//! - its Arrow schema ([`arrow::telemetry_schema`]), derived from the Avro schema, and the batch
//!   builder that turns records into Arrow columns for the lake;
//! - a reader that decodes a record in place, borrowing its strings ([`view`]), and the
//!   [`Reading`] trait over both forms.
//!
//! Beside it, the JSON records of the control plane's alerting: [`alerts`].
//!
//! Invariant: `decode(encode(r)) == r` for every record (checked by a property test), and the
//! Arrow batches built here always have exactly the derived schema.

pub mod alerts;
pub mod arrow;
pub(crate) mod codec;
pub mod dead_letter;
mod telemetry;
pub mod view;

pub use codec::{CodecError, TelemetryCodec};
pub use dead_letter::DeadLetter;
pub use telemetry::{Measure, Telemetry, protocol};
pub use view::{Reading, TelemetryRef};

/// The Avro schema of [`Telemetry`], as JSON.
pub const TELEMETRY_AVSC: &str = include_str!("../avro/telemetry.avsc");
