//! The weir cloud gateway: everything between a device and the `telemetry` topic.
//!
//! - [`registry`]: the devices weir knows, with their credentials and placement
//!   (tenant, building, floor, room).
//! - [`formats`]: the wire formats devices speak (weir JSON, IoT Hub messages, SenML,
//!   InfluxDB line protocol), each translated into the canonical [`weir_schemas::Telemetry`].
//! - [`lorawan`]: network servers' uplink webhooks and the payload drivers of device models.
//! - [`gateway`]: the doors (HTTP routes, the MQTT endpoint), device authentication, and the
//!   one path to the bus.
//!
//! Invariants: a device is answered with success only after the bus acknowledged every record
//! of its message; every rejection names what was wrong; a message from an authenticated
//! device that does not decode is kept on the dead-letter topic with the reason.

pub mod formats;
pub mod gateway;
pub mod lorawan;
pub mod registry;

pub use gateway::{Gateway, GatewayConfig};
pub use registry::{Device, Registry};
