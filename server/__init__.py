"""The order processing service: gRPC front end, Rust engine, CQL store, JetStream events."""
