//! Limits of the engine, exactly as named in docs/engine.md ("Limits").

pub const MAX_LINES_PER_ORDER: usize = 100;
pub const MAX_QUANTITY_PER_LINE: i64 = 100_000;
pub const MAX_UNIT_PRICE_MINOR: i64 = 1_000_000_000_000;
pub const MAX_ORDER_TOTAL_MINOR: i64 = 1_000_000_000_000_000;
/// request_id, customer_id, order_id, client_id, sku, location_id.
pub const MAX_ID_LEN: usize = 64;
pub const MAX_REGION_LEN: usize = 32;
pub const MAX_REASON_LEN: usize = 256;
pub const MAX_ON_HAND: i64 = 1_000_000_000_000;
pub const MAX_BATCH_CREATE: usize = 1_000;
pub const DEFAULT_RESERVATION_TTL_SECONDS: i64 = 900;
pub const MAX_RESERVATION_TTL_SECONDS: i64 = 604_800;
pub const MAX_LOCATION_PRIORITY: i32 = 1_000_000;
