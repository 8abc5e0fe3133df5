"""Storage adapters. The service depends on `OrderStore` (base.py); cql.py implements it."""
