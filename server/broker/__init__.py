"""Event broker adapters. The service depends on `EventPublisher` (base.py)."""
