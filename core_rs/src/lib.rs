//! The allocation engine of the order service (see docs/engine.md).
//!
//! - [`domain`]: the deterministic state machine (no I/O).
//! - [`codec`]: protobuf wire format in and out.
//! - [`memory`]: hints to the OS on how memory is backed (no effect on results).
//! - `python` (feature "python"): the PyO3 module `server._engine`.

pub mod codec;
pub mod domain;
pub mod memory;
#[cfg(feature = "python")]
mod python;
