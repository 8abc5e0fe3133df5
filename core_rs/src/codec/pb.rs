//! Generated protobuf types (prost-build, from proto/ via protox in build.rs).
//! Do not edit: regenerate by changing the .proto files.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod orders {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/orders.v1.rs"));
    }
    pub mod engine {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/orders.engine.v1.rs"));
        }
    }
}
