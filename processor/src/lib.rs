//! The weir windowed processor: live aggregates by event time, device twins, alerts, and the
//! warm store that serves them.
//!
//! - [`window`]: the arithmetic of event-time panes and the windows made of them (pure,
//!   property-tested); [`zones`]: a building's panes at building, floor and room level.
//! - [`Processor`] ([`role`]): consumes `telemetry` in consumer group `weir-processor`, keeps
//!   panes, twins and alert states in state owned by its one task, and publishes [`records`]
//!   to compacted topics (rolling windows as they change, final minute windows, twins) and
//!   alert events to `alerts`.
//! - [`twins`]: the reported side of device twins and silent-device detection.
//! - [`view`]: the warm store of every API node, materialised from those topics; [`api`]: its
//!   read API, including live Server-Sent Events.
//! - [`alerts`]: tenants' alert rules judged on the stream (threshold for a duration, rate of
//!   change, device silent, battery low), raised and cleared once per episode on the `alerts`
//!   topic, listed by every API node and delivered to webhooks, signed, at least once.
//! - [`dead_letters`]: the latest dead letters of each tenant, and their read API.
//!
//! Invariant: a window is exact for the readings it includes: every reading applied once, in
//! the pane its event time falls in. Readings later than the allowed lateness are counted,
//! not applied (they still reach cold storage through the sink's own consumer group).

pub mod alerts;
pub mod api;
pub mod dead_letters;
pub mod records;
pub mod replay;
pub mod role;
#[cfg(test)]
mod tests;
pub mod twins;
pub mod view;
pub mod window;
pub mod zones;

pub use alerts::{AlertConfig, AlertView, MemoryAlertConfig, WebhookDelivery};
pub use role::{Processor, ProcessorConfig, ProcessorCounters, ProcessorError};
pub use view::WarmView;
