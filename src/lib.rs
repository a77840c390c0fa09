//! `weir`, the binary: composes the roles (gateway, processor, cold sink) into processes.
//!
//! - [`cli`]: the command line, every flag with its `WEIR_...` environment twin.
//! - [`pipeline`]: every role in one process on the embedded bus, one HTTP listener, and the
//!   order in which they stop.
//! - [`commands`]: `weir up`, `weir demo`, `weir simulate`, `weir sql`.

pub mod cli;
pub mod commands;
pub mod pipeline;
