//! The pure domain: no I/O, no protobuf, no Python.

pub mod command;
pub mod engine;
pub mod error;
pub mod hash_index;
pub mod ids;
pub mod limits;
pub mod model;
pub mod restore;
pub mod undo;
