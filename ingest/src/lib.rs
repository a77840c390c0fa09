//! The weir cloud gateway: everything between a device and the `telemetry` topic.
//!
//! - [`registry`]: the devices weir knows, with their credentials and placement
//!   (tenant, building, floor, room).
//! - [`reading`]: the JSON reading format of `POST /v1/telemetry`, parsed and validated into
//!   the canonical [`weir_schemas::Telemetry`].
//! - [`gateway`]: the HTTP routes, device authentication, and producing to the bus.
//!
//! Invariant: a device is answered with success only after the bus acknowledged every record
//! of its request; every rejection names what was wrong.

pub mod gateway;
pub mod reading;
pub mod registry;

pub use gateway::{Gateway, GatewayConfig};
pub use registry::{Device, Registry};
