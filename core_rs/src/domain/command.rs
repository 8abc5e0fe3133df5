//! Commands as the engine sees them: borrowed from the decoded batch, so the
//! hot path allocates no strings.

use std::ops::Range;

use super::ids::is_valid_id;
use super::limits::{MAX_ID_LEN, MAX_REGION_LEN};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineIn<'a> {
    pub sku: &'a str,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub currency: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateIn<'a> {
    pub request_id: &'a str,
    pub customer_id: &'a str,
    pub region: &'a str,
    /// Indexes into [`Batch::lines`].
    pub lines: Range<u32>,
    pub policy: i32,
    /// True when the decoder found `request_id`, `customer_id` and every
    /// line's SKU valid identifiers of at most `MAX_ID_LEN` bytes and
    /// `region` one of at most `MAX_REGION_LEN` (it checks them instead of
    /// checking that they are UTF-8, for less than both checks cost), so
    /// that validation need not check them again. False says nothing:
    /// validation then checks them.
    pub ids_checked: bool,
}

impl CreateIn<'_> {
    /// Whether the request id, customer id, region and every SKU of `lines`
    /// (this create's lines) are valid identifiers: what
    /// [`CreateIn::ids_checked`] records when the decoder found it true.
    #[inline(always)]
    pub fn ids_valid(&self, lines: &[LineIn<'_>]) -> bool {
        is_valid_id(self.request_id, MAX_ID_LEN)
            & is_valid_id(self.customer_id, MAX_ID_LEN)
            & is_valid_id(self.region, MAX_REGION_LEN)
            & lines.iter().all(|l| is_valid_id(l.sku, MAX_ID_LEN))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocationIn<'a> {
    pub location_id: &'a str,
    pub region: &'a str,
    pub priority: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionIn<'a> {
    pub region: &'a str,
    pub strategy: i32,
    pub reservation_ttl_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// The `command` oneof was not set.
    Missing,
    /// The command's bytes are not a valid message (a caller sent garbage
    /// that the service spliced in without decoding it).
    Malformed,
    Create(CreateIn<'a>),
    BatchCreate {
        /// Indexes into [`Batch::creates`].
        requests: Range<u32>,
        error_policy: i32,
    },
    Cancel {
        order_id: &'a str,
        reason: &'a str,
    },
    Confirm {
        order_id: &'a str,
    },
    Ship {
        order_id: &'a str,
    },
    SetStock {
        sku: &'a str,
        location_id: &'a str,
        on_hand: i64,
    },
    AdjustStock {
        sku: &'a str,
        location_id: &'a str,
        delta: i64,
    },
    UpsertLocation(Option<LocationIn<'a>>),
    ConfigureRegion(Option<RegionIn<'a>>),
    Reconcile {
        region: &'a str,
        repair: bool,
    },
    ExpireReservations,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandIn<'a> {
    pub client_id: &'a str,
    /// True when the decoder found `client_id` a valid identifier of at
    /// most `MAX_ID_LEN` bytes (see [`CreateIn::ids_checked`]).
    pub client_id_checked: bool,
    pub command: Command<'a>,
}

/// One decoded `EngineBatch`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch<'a> {
    pub now_ms: i64,
    pub commands: Vec<CommandIn<'a>>,
    /// Lines of every create, referenced by range.
    pub lines: Vec<LineIn<'a>>,
    /// Items of every BatchCreateOrders, referenced by range.
    pub creates: Vec<CreateIn<'a>>,
}

impl<'a> Batch<'a> {
    pub fn lines_of(&self, create: &CreateIn<'a>) -> &[LineIn<'a>] {
        &self.lines[create.lines.start as usize..create.lines.end as usize]
    }
}
