//! Compiles the wire contract in ../proto with the pure-Rust `protox` compiler
//! (no protoc on the build machines) and generates prost types from it.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("..").join("proto");
    let files = [
        "orders/v1/orders.proto",
        "orders/v1/events.proto",
        "orders/engine/v1/engine.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }
    let descriptors = protox::compile(files, [&proto_root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
