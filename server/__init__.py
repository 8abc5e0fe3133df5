"""The order processing service: gRPC front end, Rust allocation engine, CQL store, JetStream events."""
