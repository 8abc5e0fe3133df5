//! The engine's state: regions, locations, stock rows and orders, with the
//! derived indexes (region location ranking, backorder queues, expiry index).

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;
pub use thin_vec::ThinVec;

use super::hash_index::{prefetch_address_l1, HashIndex, CACHE_LINE};
use super::ids::{copy_name, Interner};

pub type SkuId = u32;
pub type LocId = u32;
pub type RegionId = u32;
pub type ClientId = u32;
/// The 128-bit value behind an order id ("o-" + hex).
pub type OrderKey = u128;

/// `orders.v1.OrderStatus`, same numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    Allocated = 1,
    Backordered = 2,
    Rejected = 3,
    Confirmed = 4,
    Shipped = 5,
    Cancelled = 6,
    Expired = 7,
}

impl Status {
    pub fn from_i32(v: i32) -> Option<Status> {
        Some(match v {
            1 => Status::Allocated,
            2 => Status::Backordered,
            3 => Status::Rejected,
            4 => Status::Confirmed,
            5 => Status::Shipped,
            6 => Status::Cancelled,
            7 => Status::Expired,
            _ => return None,
        })
    }

    /// The name used in error messages ("cannot ship an order in status ALLOCATED").
    pub fn name(self) -> &'static str {
        match self {
            Status::Allocated => "ALLOCATED",
            Status::Backordered => "BACKORDERED",
            Status::Rejected => "REJECTED",
            Status::Confirmed => "CONFIRMED",
            Status::Shipped => "SHIPPED",
            Status::Cancelled => "CANCELLED",
            Status::Expired => "EXPIRED",
        }
    }

    /// Live orders hold reservations and may still change.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            Status::Allocated | Status::Backordered | Status::Confirmed
        )
    }

    /// The event type (`orders.v1.OrderEventType`) of entering this status;
    /// same numbers as the status.
    pub fn event_subject(self) -> &'static str {
        match self {
            Status::Allocated => "orders.v1.allocated",
            Status::Backordered => "orders.v1.backordered",
            Status::Rejected => "orders.v1.rejected",
            Status::Confirmed => "orders.v1.confirmed",
            Status::Shipped => "orders.v1.shipped",
            Status::Cancelled => "orders.v1.cancelled",
            Status::Expired => "orders.v1.expired",
        }
    }
}

pub const POLICY_UNSPECIFIED: i32 = 0;
pub const POLICY_SINGLE_LOCATION: i32 = 1;
pub const POLICY_SPLIT: i32 = 2;
pub const POLICY_BACKORDER: i32 = 3;

pub const STRATEGY_UNSPECIFIED: i32 = 0;
pub const STRATEGY_PRIORITY: i32 = 1;
pub const STRATEGY_MOST_AVAILABLE: i32 = 2;

/// `orders.v1.StockEventReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum StockReason {
    Set = 1,
    Adjusted = 2,
    Reconciled = 3,
}

/// Quantity of a line, an allocation or a backorder. Validation bounds it
/// by MAX_QUANTITY_PER_LINE, so 32 bits hold it: a 16-byte `Line` and a
/// 12-byte `Allocation` keep every order 48 bytes smaller (state that is
/// written once per order, in fresh memory). Stock arithmetic is in i64.
pub type Quantity = i32;
const _: () = assert!(super::limits::MAX_QUANTITY_PER_LINE <= Quantity::MAX as i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub sku: SkuId,
    pub quantity: Quantity,
    pub unit_price_minor: i64,
}

/// Stock of one line reserved at one location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub line: u32,
    pub loc: LocId,
    pub quantity: Quantity,
}

/// Lines of an order kept inline, without an allocation of their own: most
/// orders have a few lines, and one fewer heap allocation per created order
/// saves more than the larger `Order` costs. Longer orders spill to the heap.
/// Five, not four: it makes `Order` exactly four cache lines (256 bytes), so
/// no slot of the order store straddles a fifth, and a 5-line order needs no
/// heap allocation (in fresh memory, a page fault in a provisioned engine).
/// Together 5-6 % less apply time per batch, provisioned and growing, for
/// +3 bytes per order on the standard workload (docs/engine.md, step 24).
pub const INLINE_LINES: usize = 5;
pub type OrderLines = SmallVec<[Line; INLINE_LINES]>;

/// Quantity of one line still waiting for stock (always > 0 while listed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backorder {
    pub line: u32,
    pub quantity: Quantity,
}

/// Why an order is in its status, as passed to and returned by
/// [`Order::new`] and [`Order::set_status_reason`]. An order stores the
/// well-known reasons as a [`ReasonCode`] and only custom text on the heap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusReason {
    None,
    InsufficientStock,
    CancelledByClient,
    ReservationExpired,
    Custom(Box<str>),
}

impl StatusReason {
    pub fn as_str(&self) -> &str {
        match self {
            StatusReason::Custom(s) => s,
            known => ReasonCode::of(known).as_str(),
        }
    }
}

/// The kind of an order's [`StatusReason`], one byte in the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum ReasonCode {
    None,
    InsufficientStock,
    CancelledByClient,
    ReservationExpired,
    /// The text is in `Order::reason_text`.
    Custom,
}

impl ReasonCode {
    fn of(reason: &StatusReason) -> ReasonCode {
        match reason {
            StatusReason::None => ReasonCode::None,
            StatusReason::InsufficientStock => ReasonCode::InsufficientStock,
            StatusReason::CancelledByClient => ReasonCode::CancelledByClient,
            StatusReason::ReservationExpired => ReasonCode::ReservationExpired,
            StatusReason::Custom(_) => ReasonCode::Custom,
        }
    }

    /// The text of a well-known reason ("" for `Custom`, whose text is elsewhere).
    fn as_str(self) -> &'static str {
        match self {
            ReasonCode::None | ReasonCode::Custom => "",
            ReasonCode::InsufficientStock => "INSUFFICIENT_STOCK",
            ReasonCode::CancelledByClient => "CANCELLED_BY_CLIENT",
            ReasonCode::ReservationExpired => "RESERVATION_EXPIRED",
        }
    }
}

/// Where a row was last touched: the batch and its position in that batch's
/// changed-rows list. Lets a batch record each row's undo image and output
/// row once, without a per-batch hash set.
///
/// Eight bytes, kept in every order and stock row: the epoch is 32 bits, and
/// the engine renumbers every touch before the counter could wrap (see
/// `Engine::renumber_epochs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Touch {
    pub epoch: u32,
    pub index: u32,
}

/// Bytes of an [`OrderText`] kept inside the order. A request id and a
/// customer id are up to 64 bytes each, but usually far shorter: with both
/// inline, a created order needs no heap allocation of its own, so the
/// order store (which `OrderStore::reserve` sizes and faults in up front)
/// is all the fresh memory it takes. 45 makes the text 48 bytes.
pub const ORDER_TEXT_INLINE: usize = 45;

/// An order's request id followed by its customer id: inline when they fit
/// in [`ORDER_TEXT_INLINE`] bytes together, else in one heap allocation.
/// Built only from two `&str`, so each part is UTF-8.
#[derive(Clone, PartialEq, Eq)]
pub struct OrderText(TextRepr);

#[derive(Clone, PartialEq, Eq)]
enum TextRepr {
    Inline {
        request_id_len: u8,
        len: u8,
        bytes: [u8; ORDER_TEXT_INLINE],
    },
    Heap {
        request_id_len: u32,
        text: Box<str>,
    },
}

impl OrderText {
    pub fn new(request_id: &str, customer_id: &str) -> Self {
        let len = request_id.len() + customer_id.len();
        if len <= ORDER_TEXT_INLINE {
            let mut bytes = [0u8; ORDER_TEXT_INLINE];
            // Short ids: word copies, not two calls to memcpy per order.
            copy_name(&mut bytes[..request_id.len()], request_id.as_bytes());
            copy_name(&mut bytes[request_id.len()..len], customer_id.as_bytes());
            OrderText(TextRepr::Inline {
                request_id_len: request_id.len() as u8,
                len: len as u8,
                bytes,
            })
        } else {
            let mut text = String::with_capacity(len);
            text.push_str(request_id);
            text.push_str(customer_id);
            OrderText(TextRepr::Heap {
                request_id_len: request_id.len() as u32,
                text: text.into_boxed_str(),
            })
        }
    }

    /// The request id and the customer id, as bytes.
    #[inline]
    pub fn parts(&self) -> (&[u8], &[u8]) {
        match &self.0 {
            TextRepr::Inline {
                request_id_len,
                len,
                bytes,
            } => bytes[..usize::from(*len)].split_at(usize::from(*request_id_len)),
            TextRepr::Heap {
                request_id_len,
                text,
            } => text.as_bytes().split_at(*request_id_len as usize),
        }
    }

    /// Bytes of both ids.
    pub fn len(&self) -> usize {
        let (request_id, customer_id) = self.parts();
        request_id.len() + customer_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn request_id(&self) -> &str {
        utf8(self.parts().0)
    }

    pub fn customer_id(&self) -> &str {
        utf8(self.parts().1)
    }
}

/// Each part of an `OrderText` was a whole `&str`; the check is cheap for
/// ids this short and keeps the type free of `unsafe`.
fn utf8(bytes: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(bytes).is_ok());
    std::str::from_utf8(bytes).unwrap_or_default()
}

impl std::fmt::Debug for OrderText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderText")
            .field("request_id", &self.request_id())
            .field("customer_id", &self.customer_id())
            .finish()
    }
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<OrderText>() == 48);

/// An order. Written once into fresh memory (see `OrderStore::reserve`) and
/// kept: its size is most of the engine's memory per order, so the fields
/// whose usual value says little are packed (private, behind accessors with
/// the plain meaning):
///
/// - the allocations of an order allocated whole at one location (each line
///   its full quantity there, in line order: the usual create) are not
///   listed but read off the lines (`whole_loc`, see [`whole_location`]);
///   others are in a thin vector, one word and no heap allocation when empty;
/// - the expire time is a plain `i64` with a flag beside it, not an
///   `Option<i64>` (16 bytes);
/// - the status reason is a one-byte code, plus boxed text for custom ones.
///
/// Each packed field has one representation per meaning (allocations whole
/// whenever they can be, an absent expire time 0, no text unless custom),
/// so the derived equality is equality of meaning.
///
/// `lines` do not change once the order exists: allocations may mirror them.
/// The packed fields are visible to the domain (not the codec) only so that
/// `Engine::create` can write a new order's fields straight into its slot;
/// elsewhere they are changed through the setters, which keep the above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub key: OrderKey,
    pub client: ClientId,
    pub text: OrderText,
    pub region: RegionId,
    pub lines: OrderLines,
    pub currency: [u8; 3],
    /// As sent by the client (UNSPECIFIED is kept, and means SINGLE_LOCATION).
    pub policy: i32,
    pub status: Status,
    pub version: i64,
    /// By line index. Usually empty: a thin vector is one word, not three.
    pub backorders: ThinVec<Backorder>,
    pub total_minor: i64,
    pub create_ms: i64,
    pub update_ms: i64,
    /// Position in the backorder queues (orders queued earlier have smaller numbers).
    pub queue_seq: u64,
    pub touch: Touch,
    /// The allocations, when not whole (see [`Order::allocations`]).
    pub(super) listed: ThinVec<Allocation>,
    /// The location of allocations that are whole; meaningful if `whole`.
    pub(super) whole_loc: LocId,
    pub(super) whole: bool,
    /// The expire time; meaningful if `has_expire`, else 0.
    pub(super) expire_at: i64,
    pub(super) has_expire: bool,
    pub(super) reason: ReasonCode,
    /// The text of a `Custom` reason (boxed twice: a thin pointer).
    pub(super) reason_text: Option<Box<Box<str>>>,
}

/// Was 304 bytes (allocations and lines in two inline vectors, an
/// `Option<i64>` expire time, a 16-byte reason), and 272 plus a heap
/// allocation of the ids before they were kept inline, then 240 with four
/// inline lines. 256 is exactly four cache lines. The order store's chunks
/// are a few MB each, which mimalloc (the module's allocator) places at a
/// page boundary, so every slot starts on a line and no order spans five
/// (see [`INLINE_LINES`]). `repr(align(64))` would promise that under any
/// allocator, but measured ~2 % slower (docs/engine.md, step 24).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Order>() == 256);

/// An [`Order`]'s fields in their plain meaning, for [`Order::new`].
pub struct OrderInit<'a> {
    pub key: OrderKey,
    pub client: ClientId,
    pub text: OrderText,
    pub region: RegionId,
    pub lines: OrderLines,
    pub currency: [u8; 3],
    pub policy: i32,
    pub status: Status,
    pub version: i64,
    /// By line index, then in the order taken.
    pub allocations: &'a [Allocation],
    pub backorders: ThinVec<Backorder>,
    pub total_minor: i64,
    pub create_ms: i64,
    pub update_ms: i64,
    pub expire_ms: Option<i64>,
    pub status_reason: StatusReason,
    pub queue_seq: u64,
    pub touch: Touch,
}

impl Order {
    /// An order from its fields in their plain meaning (restore, tests).
    /// `Engine::create` builds its orders' fields itself: through this
    /// argument struct, the order was copied on the way to its slot.
    pub fn new(init: OrderInit<'_>) -> Order {
        let mut order = Order {
            key: init.key,
            client: init.client,
            text: init.text,
            region: init.region,
            lines: init.lines,
            currency: init.currency,
            policy: init.policy,
            status: init.status,
            version: init.version,
            backorders: init.backorders,
            total_minor: init.total_minor,
            create_ms: init.create_ms,
            update_ms: init.update_ms,
            queue_seq: init.queue_seq,
            touch: init.touch,
            // The packed fields, set through their setters below.
            listed: ThinVec::new(),
            whole_loc: 0,
            whole: false,
            expire_at: 0,
            has_expire: false,
            reason: ReasonCode::None,
            reason_text: None,
        };
        order.set_allocations(init.allocations);
        order.set_expire_ms(init.expire_ms);
        order.set_status_reason(init.status_reason);
        order
    }

    pub fn request_id(&self) -> &str {
        self.text.request_id()
    }
    pub fn customer_id(&self) -> &str {
        self.text.customer_id()
    }
    pub fn currency_str(&self) -> &str {
        std::str::from_utf8(&self.currency).unwrap_or("")
    }
    /// `policy` with UNSPECIFIED read as SINGLE_LOCATION.
    pub fn effective_policy(&self) -> i32 {
        effective_policy(self.policy)
    }

    /// When the reservation expires (ALLOCATED orders).
    #[inline]
    pub fn expire_ms(&self) -> Option<i64> {
        self.has_expire.then_some(self.expire_at)
    }

    #[inline]
    pub fn set_expire_ms(&mut self, at: Option<i64>) {
        self.has_expire = at.is_some();
        self.expire_at = at.unwrap_or(0);
    }

    #[inline]
    pub fn status_reason(&self) -> &str {
        match &self.reason_text {
            Some(text) => text,
            None => self.reason.as_str(),
        }
    }

    /// The status reason as a one-byte code when it is one of the fixed
    /// reasons, `None` for a custom text (the encoder memoises by it).
    #[inline]
    pub fn fixed_reason_code(&self) -> Option<u8> {
        (self.reason != ReasonCode::Custom).then_some(self.reason as u8)
    }

    #[inline]
    pub fn set_status_reason(&mut self, reason: StatusReason) {
        (self.reason, self.reason_text) = stored_reason(reason);
    }

    /// The allocations: by line index, then in the order taken.
    #[inline]
    pub fn allocations(&self) -> Allocations<'_> {
        Allocations(if self.whole {
            AllocationsRepr::Whole {
                loc: self.whole_loc,
                lines: self.lines.iter().enumerate(),
            }
        } else {
            AllocationsRepr::Listed(self.listed.iter())
        })
    }

    /// Whether the packed fields are in their one representation per
    /// meaning (see [`Order`]); checked where they are written directly.
    pub fn is_canonical(&self) -> bool {
        let allocations = if self.whole {
            self.listed.is_empty() && !self.lines.is_empty()
        } else {
            self.whole_loc == 0 && whole_location(&self.lines, &self.listed).is_none()
        };
        allocations
            && (self.has_expire || self.expire_at == 0)
            && ((self.reason == ReasonCode::Custom) == self.reason_text.is_some())
    }

    /// `allocations().len()`, without making the iterator.
    #[inline]
    pub fn allocation_count(&self) -> usize {
        if self.whole {
            self.lines.len()
        } else {
            self.listed.len()
        }
    }

    /// Replaces the allocations (by line index, then in the order taken).
    #[inline]
    pub fn set_allocations(&mut self, allocations: &[Allocation]) {
        match whole_location(&self.lines, allocations) {
            Some(loc) => {
                self.whole = true;
                self.whole_loc = loc;
                if !self.listed.is_empty() {
                    self.listed = ThinVec::new();
                }
            }
            None => {
                self.whole = false;
                self.whole_loc = 0;
                self.listed = ThinVec::from(allocations);
            }
        }
    }

    /// Adds `quantity` of `line` at `loc`: to the existing allocation of that
    /// line and location, else as a new one after the line's others (the list
    /// stays ordered by line index).
    pub fn add_allocation(&mut self, line: u32, loc: LocId, quantity: Quantity) {
        let mut allocations: Vec<Allocation> = self.allocations().collect();
        if let Some(a) = allocations
            .iter_mut()
            .find(|a| a.line == line && a.loc == loc)
        {
            a.quantity += quantity;
        } else {
            let at = allocations
                .iter()
                .position(|a| a.line > line)
                .unwrap_or(allocations.len());
            allocations.insert(
                at,
                Allocation {
                    line,
                    loc,
                    quantity,
                },
            );
        }
        self.set_allocations(&allocations);
    }
}

/// A reason as an order keeps it: its code, and the text of a custom one.
#[inline]
fn stored_reason(reason: StatusReason) -> (ReasonCode, Option<Box<Box<str>>>) {
    let code = ReasonCode::of(&reason);
    match reason {
        StatusReason::Custom(text) => (code, Some(Box::new(text))),
        _ => (code, None),
    }
}

/// The location at which `allocations` are whole for `lines`: one per line,
/// in line order, each the line's full quantity, all at that location.
#[inline]
pub(super) fn whole_location(lines: &[Line], allocations: &[Allocation]) -> Option<LocId> {
    whole_location_of(lines.iter().map(|l| l.quantity), allocations)
}

/// [`whole_location`] over the lines' quantities, in line order.
pub(super) fn whole_location_of(
    quantities: impl ExactSizeIterator<Item = Quantity>,
    allocations: &[Allocation],
) -> Option<LocId> {
    let loc = allocations.first()?.loc;
    let whole = allocations.len() == quantities.len()
        && allocations
            .iter()
            .zip(quantities)
            .enumerate()
            .all(|(i, (a, q))| a.line as usize == i && a.loc == loc && a.quantity == q);
    whole.then_some(loc)
}

/// The allocations of an order ([`Order::allocations`]), by value. (A
/// struct of both slices, one empty, cost the encoder more; so did writing
/// whole allocations out into a slice.)
#[derive(Debug, Clone)]
pub struct Allocations<'a>(AllocationsRepr<'a>);

#[derive(Debug, Clone)]
enum AllocationsRepr<'a> {
    Whole {
        loc: LocId,
        lines: std::iter::Enumerate<std::slice::Iter<'a, Line>>,
    },
    Listed(std::slice::Iter<'a, Allocation>),
}

impl Iterator for Allocations<'_> {
    type Item = Allocation;

    #[inline]
    fn next(&mut self) -> Option<Allocation> {
        match &mut self.0 {
            AllocationsRepr::Whole { loc, lines } => lines.next().map(|(i, l)| Allocation {
                line: i as u32,
                loc: *loc,
                quantity: l.quantity,
            }),
            AllocationsRepr::Listed(listed) => listed.next().copied(),
        }
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            AllocationsRepr::Whole { lines, .. } => lines.size_hint(),
            AllocationsRepr::Listed(listed) => listed.size_hint(),
        }
    }

    /// One loop per representation, not a branch per allocation (for
    /// `collect`, `for_each` and the like).
    #[inline]
    fn fold<B, F: FnMut(B, Allocation) -> B>(self, init: B, mut f: F) -> B {
        match self.0 {
            AllocationsRepr::Whole { loc, lines } => lines.fold(init, |acc, (i, l)| {
                f(
                    acc,
                    Allocation {
                        line: i as u32,
                        loc,
                        quantity: l.quantity,
                    },
                )
            }),
            AllocationsRepr::Listed(listed) => listed.fold(init, |acc, a| f(acc, *a)),
        }
    }
}

impl ExactSizeIterator for Allocations<'_> {}
pub fn effective_policy(policy: i32) -> i32 {
    if policy == POLICY_UNSPECIFIED {
        POLICY_SINGLE_LOCATION
    } else {
        policy
    }
}

/// One (sku, location) stock row, stored in its SKU's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockCell {
    pub on_hand: i64,
    pub reserved: i64,
    pub version: i64,
    pub touch: Touch,
    pub loc: LocId,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<StockCell>() == 40);

impl StockCell {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

#[derive(Debug, Clone, Default)]
pub struct SkuEntry {
    /// Rows of this SKU, in creation order (a SKU has a few locations).
    pub cells: Vec<StockCell>,
}

impl SkuEntry {
    /// Where the row of `loc` is in `cells`. Rows are usually created
    /// location by location, so a location's row is usually at its id's
    /// position: that row is tried before the search, which reads every row
    /// before it (one more cache miss per row, in `allocate`'s hottest loop
    /// and again when the row is written).
    #[inline]
    pub fn position(&self, loc: LocId) -> Option<usize> {
        match self.cells.get(loc as usize) {
            Some(c) if c.loc == loc => Some(loc as usize),
            _ => self.cells.iter().position(|c| c.loc == loc),
        }
    }
    pub fn cell(&self, loc: LocId) -> Option<&StockCell> {
        self.position(loc).map(|at| &self.cells[at])
    }
    pub fn cell_mut(&mut self, loc: LocId) -> Option<&mut StockCell> {
        self.position(loc).map(|at| &mut self.cells[at])
    }
    pub fn available(&self, loc: LocId) -> i64 {
        self.cell(loc).map_or(0, StockCell::available)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocationRow {
    pub region: RegionId,
    pub priority: i32,
    pub touch: Touch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionRow {
    pub strategy: i32,
    /// As configured; 0 means DEFAULT_RESERVATION_TTL_SECONDS.
    pub ttl_seconds: i64,
    pub touch: Touch,
}

impl RegionRow {
    pub fn effective_ttl_ms(&self) -> i64 {
        let ttl = if self.ttl_seconds == 0 {
            super::limits::DEFAULT_RESERVATION_TTL_SECONDS
        } else {
            self.ttl_seconds
        };
        ttl * 1000
    }
}

#[derive(Debug, Clone, Default)]
pub struct RegionEntry {
    pub row: Option<RegionRow>,
    /// The region's locations ranked by (priority, location_id).
    pub ranked_locs: Vec<LocId>,
}

/// Backorder queue of one (region, sku): (queue_seq, line index) → order.
pub type Queue = BTreeMap<(u64, u32), OrderKey>;

#[derive(Debug, Clone, Default)]
pub struct State {
    pub skus: Interner<SkuEntry>,
    pub locations: Interner<Option<LocationRow>>,
    pub regions: Interner<RegionEntry>,
    pub clients: Interner<()>,
    pub orders: OrderStore,
    /// ALLOCATED orders by expire time.
    pub expiry: ExpiryIndex,
    pub queues: FxHashMap<(RegionId, SkuId), Queue>,
    pub next_queue_seq: u64,
}

impl State {
    pub fn region_row(&self, region: RegionId) -> Option<&RegionRow> {
        self.regions.value(region).row.as_ref()
    }

    pub fn location_row(&self, loc: LocId) -> Option<&LocationRow> {
        self.locations.value(loc).as_ref()
    }

    /// Re-ranks a region's locations by (priority, location_id).
    pub fn rank_region_locations(&mut self, region: RegionId) {
        let mut locs = std::mem::take(&mut self.regions.value_mut(region).ranked_locs);
        let locations = &self.locations;
        locs.retain(|&l| locations.value(l).is_some_and(|r| r.region == region));
        locs.sort_by(|&a, &b| {
            let pa = locations.value(a).map_or(0, |r| r.priority);
            let pb = locations.value(b).map_or(0, |r| r.priority);
            pa.cmp(&pb)
                .then_with(|| locations.name(a).cmp(locations.name(b)))
        });
        locs.dedup();
        self.regions.value_mut(region).ranked_locs = locs;
    }
}

/// Writes a zeroed element into the spare capacity of `v` once per 4 KiB
/// page, so that its pages are faulted in now rather than when the vector is
/// filled (the length is unchanged: nothing is initialised for the caller).
pub fn pre_touch<T>(v: &mut Vec<T>) {
    const PAGE: usize = 4096;
    let spare = v.spare_capacity_mut();
    let per_page = (PAGE / std::mem::size_of::<T>().max(1)).max(1);
    for slot in spare.iter_mut().step_by(per_page) {
        *slot = std::mem::MaybeUninit::zeroed();
    }
    std::hint::black_box(v.spare_capacity_mut().as_ptr());
}

/// Orders waiting to expire, grouped by expire time.
///
/// Entries are only added (create, backorder served) and taken in bulk when
/// due; an order leaving ALLOCATED early (confirm, cancel) leaves its entry
/// behind. An entry is *live* while its order is ALLOCATED with that expire
/// time, and `ExpireReservations` skips the others. This keeps the per-order
/// cost of the hot path to a push: a sorted set paid a tree insert (about 600
/// instructions) for every created order, and a removal on every confirm.
///
/// Expire times mostly grow with the batch clock, so the newest bucket is kept
/// outside the map (`tail`) and appending to it needs no map lookup.
#[derive(Debug, Clone, Default)]
pub struct ExpiryIndex {
    buckets: BTreeMap<i64, Vec<OrderKey>>,
    tail_at: i64,
    tail: Vec<OrderKey>,
}

impl ExpiryIndex {
    /// Adds the entry (`at`, `key`). Inline: runs for every created order,
    /// nearly always a push onto the tail.
    #[inline]
    pub fn add(&mut self, at: i64, key: OrderKey) {
        if self.tail.is_empty() {
            self.tail_at = at;
        }
        if at == self.tail_at {
            self.tail.push(key);
        } else if at > self.tail_at {
            self.flush_tail();
            self.tail_at = at;
            self.tail.push(key);
        } else {
            self.buckets.entry(at).or_default().push(key);
        }
    }

    /// Removes the newest entry of `at` (undo of [`ExpiryIndex::add`]: undo
    /// runs newest first, so it is always the last entry of its bucket).
    pub fn remove_newest(&mut self, at: i64, key: OrderKey) {
        if !self.tail.is_empty() && at == self.tail_at {
            let removed = self.tail.pop();
            debug_assert_eq!(removed, Some(key));
            return;
        }
        if let Some(bucket) = self.buckets.get_mut(&at) {
            let removed = bucket.pop();
            debug_assert_eq!(removed, Some(key));
            if bucket.is_empty() {
                self.buckets.remove(&at);
            }
        }
    }

    /// Moves the tail into the map. The next tail is sized like this one, so
    /// a batch's entries are written once, into one allocation (regrowing
    /// and copying them would touch fresh memory, which is slow to fault in).
    #[inline(never)]
    fn flush_tail(&mut self) {
        if self.tail.is_empty() {
            return;
        }
        let size = self.tail.len();
        let tail = std::mem::replace(&mut self.tail, Vec::with_capacity(size));
        match self.buckets.entry(self.tail_at) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(tail);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().extend(tail),
        }
    }

    /// Removes and returns every bucket with an expire time at or before
    /// `now`, oldest first, each in insertion order (so that undo can put
    /// them back exactly). Includes stale entries.
    pub fn take_due(&mut self, now: i64) -> Vec<(i64, Vec<OrderKey>)> {
        self.flush_tail();
        let later = match now.checked_add(1) {
            Some(next) => self.buckets.split_off(&next),
            None => BTreeMap::new(),
        };
        std::mem::replace(&mut self.buckets, later)
            .into_iter()
            .collect()
    }

    /// Puts back buckets taken by [`ExpiryIndex::take_due`] (undo).
    pub fn restore_due(&mut self, due: Vec<(i64, Vec<OrderKey>)>) {
        self.flush_tail();
        for (at, keys) in due {
            self.buckets.entry(at).or_default().extend(keys);
        }
    }

    /// Every entry, live or stale, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (i64, OrderKey)> + '_ {
        let tail = self.tail.iter().map(|&k| (self.tail_at, k));
        self.buckets
            .iter()
            .flat_map(|(&at, keys)| keys.iter().map(move |&k| (at, k)))
            .chain(tail)
    }
}

/// Orders in a chunked slab plus a key → slot index: lookups touch a small
/// table, and growth never moves orders (chunks are allocated once, full size).
#[derive(Debug, Clone, Default)]
pub struct OrderStore {
    index: HashIndex,
    chunks: Vec<Vec<Order>>,
    len: usize,
}

/// Cache lines that the last bytes of an order slot span, counted back
/// from its last byte ([`OrderStore::prefetch_slot_ahead`]).
const ORDER_SLOT_LINES: usize = std::mem::size_of::<Order>().div_ceil(CACHE_LINE);

const CHUNK_BITS: u32 = 14;
const CHUNK: usize = 1 << CHUNK_BITS;

/// An empty chunk of the order store, backed by small pages (see
/// [`crate::memory::prefer_small_pages`]).
fn new_chunk() -> Vec<Order> {
    let chunk = Vec::with_capacity(CHUNK);
    crate::memory::prefer_small_pages(&chunk);
    chunk
}

fn split(slot: u32) -> (usize, usize) {
    ((slot >> CHUNK_BITS) as usize, slot as usize & (CHUNK - 1))
}

/// Order keys are already uniform hashes: the index uses their low half.
fn key_hash(key: &OrderKey) -> u64 {
    *key as u64
}

impl OrderStore {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot(&self, slot: u32) -> &Order {
        let (c, i) = split(slot);
        &self.chunks[c][i]
    }

    fn slot_mut(&mut self, slot: u32) -> &mut Order {
        let (c, i) = split(slot);
        &mut self.chunks[c][i]
    }

    fn find(&self, key: &OrderKey) -> Option<u32> {
        self.index.find(key_hash(key), |s| self.slot(s).key == *key)
    }

    /// Hints the CPU to load the index bucket of `key` (see `Engine::warm_window`).
    pub fn prefetch(&self, key: &OrderKey) {
        self.index.prefetch(key_hash(key));
    }

    pub fn get(&self, key: &OrderKey) -> Option<&Order> {
        self.find(key).map(|s| self.slot(s))
    }

    pub fn get_mut(&mut self, key: &OrderKey) -> Option<&mut Order> {
        let slot = self.find(key)?;
        Some(self.slot_mut(slot))
    }

    pub fn contains_key(&self, key: &OrderKey) -> bool {
        self.find(key).is_some()
    }

    /// Inserts or replaces; returns the replaced order.
    pub fn insert(&mut self, key: OrderKey, order: Order) -> Option<Order> {
        if let Some(slot) = self.find(&key) {
            return Some(std::mem::replace(self.slot_mut(slot), order));
        }
        self.insert_new(key, order);
        None
    }

    /// Inserts an order whose key the caller has just looked up and not
    /// found (skips the second lookup); returns its slot (see [`OrderStore::at`]).
    pub fn insert_new(&mut self, key: OrderKey, order: Order) -> u32 {
        self.insert_new_with(key, || order)
    }

    /// [`OrderStore::insert_new`] of the order `build` returns, built
    /// straight into its slot: the slot is known before the order is built,
    /// so the order is not first built elsewhere and then copied (an order
    /// is a few hundred bytes, and this runs for every created order).
    #[inline(always)]
    pub fn insert_new_with(&mut self, key: OrderKey, build: impl FnOnce() -> Order) -> u32 {
        debug_assert!(self.find(&key).is_none());
        let slot = u32::try_from(self.len).expect("fewer than 2^32 orders");
        // Slots fill the chunks in order; chunks past the one in use may be
        // reserved (allocated, empty).
        let (chunk, _) = split(slot);
        if chunk == self.chunks.len() {
            self.chunks.push(new_chunk());
        }
        let orders = &mut self.chunks[chunk];
        // A chunk is allocated with room for CHUNK orders and never holds
        // more, so the slot is always in its spare capacity.
        let Some(place) = orders.spare_capacity_mut().first_mut() else {
            unreachable!("an order chunk is never full when its slot is free");
        };
        place.write(build());
        // SAFETY: the first spare element, the one at `len`, was just
        // initialised, and it is within the capacity.
        unsafe { orders.set_len(orders.len() + 1) };
        self.len += 1;
        self.index.insert(key_hash(&key), slot);
        slot
    }

    /// The order in `slot`, as returned by [`OrderStore::insert_new`] (valid
    /// until the next removal).
    pub fn at(&self, slot: u32) -> &Order {
        self.slot(slot)
    }

    /// Hints the CPU to fetch the slot that the order created `ahead`
    /// creates from now will take, if its chunk is allocated. A new order
    /// is written into cache lines that nothing has read: without the hint,
    /// its stores waited for those lines to arrive from memory.
    #[inline]
    pub fn prefetch_slot_ahead(&self, ahead: usize) {
        let Ok(slot) = u32::try_from(self.len.saturating_add(ahead)) else {
            return;
        };
        let (chunk, index) = split(slot);
        if let Some(orders) = self.chunks.get(chunk).filter(|o| index < o.capacity()) {
            // Slots are taken in order, so the line where this one starts is
            // the previous slot's last line, prefetched one create earlier:
            // the slot's lines are counted back from its last byte.
            let last = orders.as_ptr().wrapping_add(index + 1).cast::<u8>();
            for k in 0..ORDER_SLOT_LINES {
                prefetch_address_l1(last.wrapping_sub(1 + k * CACHE_LINE));
            }
        }
    }

    /// The order in `slot`, to finish building it in place. Its key must
    /// not change: the index finds it by its key.
    pub fn at_mut(&mut self, slot: u32) -> &mut Order {
        self.slot_mut(slot)
    }

    /// Removes `key`; the last order moves into its slot.
    pub fn remove(&mut self, key: &OrderKey) -> Option<Order> {
        let slot = self.find(key)?;
        self.index.remove(key_hash(key), slot);
        // The order in the last used slot fills the hole (emptied chunks are
        // kept, like reserved ones).
        let (last_chunk, _) = split(u32::try_from(self.len - 1).ok()?);
        let last = self.chunks[last_chunk].pop()?;
        self.len -= 1;
        if slot as usize == self.len {
            return Some(last);
        }
        let moved = last.key;
        let removed = std::mem::replace(self.slot_mut(slot), last);
        self.index.replace(key_hash(&moved), self.len as u32, slot);
        Some(removed)
    }

    /// Makes room for `additional` more orders and touches that memory now,
    /// so that creating them does not fault in fresh pages on the hot path
    /// (the kernel zeroing new memory is a large share of an order's cost,
    /// the same trade as the JVM's AlwaysPreTouch).
    /// (chunks whose first slot starts on a cache line, chunks): with
    /// 256-byte orders, such a chunk has no slot that spans five lines.
    /// Depends on the allocator (see the size assertion on [`Order`]);
    /// `bench_engine` prints it.
    pub fn line_aligned_chunks(&self) -> (usize, usize) {
        let aligned = self
            .chunks
            .iter()
            .filter(|c| c.as_ptr() as usize % CACHE_LINE == 0)
            .count();
        (aligned, self.chunks.len())
    }

    pub fn reserve(&mut self, additional: usize) {
        let want = self.len + additional;
        self.index.reserve(want);
        let mut capacity: usize = self.chunks.iter().map(Vec::capacity).sum();
        while capacity < want {
            let mut chunk = new_chunk();
            pre_touch(&mut chunk);
            capacity += chunk.capacity();
            self.chunks.push(chunk);
        }
    }

    /// In storage order (not meaningful: sort before output).
    pub fn values(&self) -> impl Iterator<Item = &Order> {
        self.chunks.iter().flatten()
    }

    /// In storage order, for changes that do not touch the key.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Order> {
        self.chunks.iter_mut().flatten()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&OrderKey, &Order)> {
        self.values().map(|o| (&o.key, o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(key: OrderKey) -> Order {
        Order::new(OrderInit {
            key,
            client: 0,
            text: OrderText::new("", ""),
            region: 0,
            lines: OrderLines::new(),
            currency: *b"EUR",
            policy: 0,
            status: Status::Allocated,
            version: 1,
            allocations: &[],
            backorders: ThinVec::new(),
            total_minor: 0,
            create_ms: 0,
            update_ms: 0,
            expire_ms: None,
            status_reason: StatusReason::None,
            queue_seq: 0,
            touch: Touch::default(),
        })
    }

    fn order_with_lines(quantities: &[Quantity]) -> Order {
        let mut o = order(7);
        o.lines = quantities
            .iter()
            .enumerate()
            .map(|(i, &quantity)| Line {
                sku: i as SkuId,
                quantity,
                unit_price_minor: 100,
            })
            .collect();
        o
    }

    fn whole(quantities: &[Quantity], loc: LocId) -> Vec<Allocation> {
        quantities
            .iter()
            .enumerate()
            .map(|(i, &quantity)| Allocation {
                line: i as u32,
                loc,
                quantity,
            })
            .collect()
    }

    /// The list `add_allocation` keeps, on a plain vector.
    fn add_to_list(list: &mut Vec<Allocation>, line: u32, loc: LocId, quantity: Quantity) {
        if let Some(a) = list.iter_mut().find(|a| a.line == line && a.loc == loc) {
            a.quantity += quantity;
            return;
        }
        let at = list
            .iter()
            .position(|a| a.line > line)
            .unwrap_or(list.len());
        list.insert(
            at,
            Allocation {
                line,
                loc,
                quantity,
            },
        );
    }

    #[test]
    fn expire_time_round_trips_at_the_edges() {
        let mut o = order(1);
        assert_eq!(o.expire_ms(), None);
        let fresh = o.clone();
        for at in [
            Some(0),
            Some(-1),
            Some(1),
            Some(i64::MIN),
            Some(i64::MAX),
            None,
            Some(0),
        ] {
            o.set_expire_ms(at);
            assert_eq!(o.expire_ms(), at);
        }
        // Absent after having been set: the same order as never set.
        o.set_expire_ms(None);
        assert_eq!(o, fresh);
        o.set_expire_ms(Some(0));
        assert_ne!(o, fresh);
    }

    #[test]
    fn status_reasons_round_trip_known_and_custom() {
        let long = "r".repeat(crate::domain::limits::MAX_REASON_LEN);
        let reasons = [
            StatusReason::None,
            StatusReason::InsufficientStock,
            StatusReason::CancelledByClient,
            StatusReason::ReservationExpired,
            StatusReason::Custom("".into()),
            StatusReason::Custom("damaged in transit".into()),
            StatusReason::Custom("CANCELLED_BY_CLIENT".into()),
            StatusReason::Custom(long.as_str().into()),
            StatusReason::Custom("déjà vu".into()),
        ];
        let mut o = order(1);
        assert_eq!(o.status_reason(), "");
        let fresh = o.clone();
        for reason in reasons {
            let text = reason.as_str().to_owned();
            o.set_status_reason(reason);
            assert_eq!(o.status_reason(), text);
        }
        // A custom text is dropped when a known reason replaces it.
        o.set_status_reason(StatusReason::None);
        assert_eq!(o, fresh);
        assert_eq!(
            StatusReason::InsufficientStock.as_str(),
            "INSUFFICIENT_STOCK"
        );
        assert_eq!(
            StatusReason::CancelledByClient.as_str(),
            "CANCELLED_BY_CLIENT"
        );
        assert_eq!(
            StatusReason::ReservationExpired.as_str(),
            "RESERVATION_EXPIRED"
        );
        assert_eq!(StatusReason::None.as_str(), "");
    }

    #[test]
    fn whole_allocations_are_read_off_the_lines() {
        // Up to and past the lines' inline capacity.
        for n in 1..=INLINE_LINES + 3 {
            let quantities: Vec<Quantity> = (1..=n as Quantity).map(|q| q * 1000).collect();
            let mut o = order_with_lines(&quantities);
            let list = whole(&quantities, 9);
            o.set_allocations(&list);
            assert!(o.whole && o.listed.is_empty(), "{n} lines");
            assert_eq!((o.allocations().len(), o.allocation_count()), (n, n));
            assert_eq!(o.allocations().collect::<Vec<_>>(), list);
            // Not whole: a short quantity, a missing line, two locations.
            let mut short = list.clone();
            short[n - 1].quantity -= 1;
            let mut missing = list.clone();
            missing.pop();
            let mut two = list.clone();
            two[0].loc = 8;
            // (One line at one location is whole wherever it is.)
            let others = if n == 1 {
                vec![short, missing]
            } else {
                vec![short, missing, two]
            };
            for other in others {
                o.set_allocations(&other);
                assert!(!o.whole && o.whole_loc == 0);
                assert_eq!(o.allocations().collect::<Vec<_>>(), other);
                assert_eq!(o.allocation_count(), other.len());
            }
            // Back to whole: the list is dropped (one representation).
            o.set_allocations(&list);
            assert_eq!(o, {
                let mut fresh = order_with_lines(&quantities);
                fresh.set_allocations(&list);
                fresh
            });
            o.set_allocations(&[]);
            assert!(!o.whole && o.allocations().next().is_none());
            assert_eq!(o, order_with_lines(&quantities));
        }
    }

    #[test]
    fn packed_fields_off_their_representation_are_not_canonical() {
        let mut o = order_with_lines(&[5, 3]);
        o.set_allocations(&whole(&[5, 3], 1));
        o.set_expire_ms(Some(9));
        o.set_status_reason(StatusReason::Custom("x".into()));
        assert!(o.is_canonical());
        let mut listed_whole = o.clone();
        listed_whole.whole = false;
        listed_whole.whole_loc = 0;
        listed_whole.listed = ThinVec::from(whole(&[5, 3], 1).as_slice());
        let mut stale_expire = o.clone();
        stale_expire.has_expire = false;
        let mut lost_text = o.clone();
        lost_text.reason_text = None;
        let mut whole_without_lines = order(1);
        whole_without_lines.whole = true;
        for broken in [listed_whole, stale_expire, lost_text, whole_without_lines] {
            assert!(!broken.is_canonical(), "{broken:?}");
        }
    }

    #[test]
    fn allocations_completed_by_backorders_become_whole() {
        let mut o = order_with_lines(&[5, 3]);
        o.set_allocations(&[Allocation {
            line: 0,
            loc: 2,
            quantity: 5,
        }]);
        o.add_allocation(1, 2, 1);
        assert!(!o.whole);
        o.add_allocation(1, 2, 2);
        assert!(o.whole && o.whole_loc == 2 && o.listed.is_empty());
        assert_eq!(o.allocations().collect::<Vec<_>>(), whole(&[5, 3], 2));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// Whatever the allocations, an order gives back exactly the list it
        /// was given (whole or listed), and adding to it keeps the list the
        /// plain vector keeps.
        #[test]
        fn allocations_round_trip_and_add_like_a_list(
            quantities in proptest::collection::vec(1..4 as Quantity, 1..7),
            list in proptest::collection::vec((0u32..7, 0u32..3, 1..4 as Quantity), 0..9),
            loc in 0u32..3,
            adds in proptest::collection::vec((0u32..7, 0u32..3, 1..3 as Quantity), 0..12),
            start_whole in proptest::bool::ANY,
        ) {
            let mut o = order_with_lines(&quantities);
            let mut expected: Vec<Allocation> = if start_whole {
                whole(&quantities, loc)
            } else {
                list.iter()
                    .map(|&(line, loc, quantity)| Allocation { line, loc, quantity })
                    .collect()
            };
            o.set_allocations(&expected);
            proptest::prop_assert_eq!(o.allocations().collect::<Vec<_>>(), expected.clone());
            proptest::prop_assert_eq!(o.whole, whole_location(&o.lines, &expected).is_some());
            for (line, loc, quantity) in adds {
                add_to_list(&mut expected, line, loc, quantity);
                o.add_allocation(line, loc, quantity);
                proptest::prop_assert_eq!(o.allocation_count(), expected.len());
                proptest::prop_assert_eq!(o.allocations().collect::<Vec<_>>(), expected.clone());
                let mut same = order_with_lines(&quantities);
                same.set_allocations(&expected);
                proptest::prop_assert_eq!(&o, &same);
            }
        }
    }

    fn sorted_entries(index: &ExpiryIndex) -> Vec<(i64, OrderKey)> {
        let mut all: Vec<_> = index.entries().collect();
        all.sort_unstable();
        all
    }

    #[test]
    fn expiry_index_takes_due_buckets_sorted_and_undoes_exactly() {
        let mut index = ExpiryIndex::default();
        // Times out of order: tail, older bucket, newer tail, same time again.
        for (at, key) in [(20, 5), (20, 1), (10, 9), (30, 2), (10, 3), (20, 4)] {
            index.add(at, key);
        }
        let before = sorted_entries(&index);
        assert_eq!(before.len(), 6);
        // Undo of the last add removes exactly that entry.
        index.remove_newest(20, 4);
        index.add(20, 4);
        assert_eq!(sorted_entries(&index), before);

        let due = index.take_due(20);
        assert_eq!(due, vec![(10, vec![9, 3]), (20, vec![5, 1, 4])]);
        assert_eq!(sorted_entries(&index), vec![(30, 2)]);
        index.add(40, 7);
        index.remove_newest(40, 7);
        index.restore_due(due);
        assert_eq!(sorted_entries(&index), before);
        assert!(index.take_due(i64::MIN).is_empty());
        assert_eq!(index.take_due(i64::MAX).len(), 3);
        assert_eq!(index.entries().count(), 0);
    }

    #[test]
    fn order_text_keeps_both_ids_inline_or_on_the_heap() {
        // Every split of lengths around the inline capacity, with multi-byte
        // characters so that a part ending mid-character would show.
        for total in 0..=ORDER_TEXT_INLINE + 3 {
            for request_len in 0..=total {
                let request_id: String = "é".repeat(request_len / 2) + &"r".repeat(request_len % 2);
                let customer_len = total - request_len;
                let customer_id: String =
                    "ü".repeat(customer_len / 2) + &"c".repeat(customer_len % 2);
                let text = OrderText::new(&request_id, &customer_id);
                assert_eq!(text.request_id(), request_id);
                assert_eq!(text.customer_id(), customer_id);
                assert_eq!(text.len(), total);
                let inline = matches!(text.0, TextRepr::Inline { .. });
                assert_eq!(inline, total <= ORDER_TEXT_INLINE, "{total} bytes");
                assert_eq!(text.clone(), text);
            }
        }
        // Equal ids in the other split are a different text.
        assert_ne!(OrderText::new("ab", "c"), OrderText::new("a", "bc"));
    }

    #[test]
    fn order_store_inserts_replaces_and_removes_across_chunks() {
        check_order_store(OrderStore::default());
    }

    #[test]
    fn a_stock_row_is_found_wherever_it_is_stored() {
        let row = |loc: LocId| StockCell {
            on_hand: i64::from(loc) * 10,
            reserved: 0,
            version: 1,
            touch: Touch::default(),
            loc,
        };
        // At their ids' positions, out of order, sparse, and past the end.
        for locs in [vec![0, 1, 2], vec![2, 0, 1], vec![7, 3], vec![1, 0, 9, 2]] {
            let mut entry = SkuEntry::default();
            entry.cells.extend(locs.iter().map(|&l| row(l)));
            for loc in 0..12 {
                let expected = locs.contains(&loc).then(|| row(loc));
                assert_eq!(entry.position(loc), locs.iter().position(|&l| l == loc));
                assert_eq!(entry.cell(loc).copied(), expected, "{locs:?} {loc}");
                assert_eq!(
                    entry.available(loc),
                    i64::from(loc) * 10 * i64::from(expected.is_some())
                );
                let found = entry.cell_mut(loc).map(|c| {
                    c.reserved = 1;
                    c.loc
                });
                assert_eq!(found, expected.map(|c| c.loc));
            }
            assert!(entry.cells.iter().all(|c| c.reserved == 1));
        }
    }

    #[test]
    fn reserved_order_store_behaves_the_same() {
        let mut store = OrderStore::default();
        store.reserve(3 * CHUNK + 1);
        assert_eq!(store.chunks.len(), 4);
        assert!(store.index.is_empty() && store.is_empty());
        check_order_store(store);
        // Reserving with orders present keeps them.
        let mut store = OrderStore::default();
        for k in 0..10u128 {
            store.insert_new(k, order(k));
        }
        store.reserve(2 * CHUNK);
        assert_eq!(store.len(), 10);
        assert!((0..10u128).all(|k| store.get(&k).is_some_and(|o| o.key == k)));
    }

    /// The slot prefetch is a hint: for slots in an allocated chunk, past
    /// the last chunk, past the end of a reserved store and past the 2^32
    /// slots, it neither panics nor changes the store.
    #[test]
    fn slot_prefetch_ahead_is_only_a_hint() {
        let mut store = OrderStore::default();
        store.prefetch_slot_ahead(0);
        store.reserve(CHUNK + 1);
        for k in 0..(CHUNK as u128 + 3) {
            for ahead in [0, 1, 8, CHUNK, 2 * CHUNK, usize::MAX] {
                store.prefetch_slot_ahead(ahead);
            }
            store.insert_new(k, order(k));
        }
        assert_eq!(store.len(), CHUNK + 3);
        assert!((0..(CHUNK as u128 + 3)).all(|k| store.get(&k).is_some_and(|o| o.key == k)));
    }

    /// The order store's chunks, grown or reserved, are backed by small
    /// pages (`memory::prefer_small_pages`).
    #[cfg(target_os = "linux")]
    #[test]
    fn order_store_chunks_prefer_small_pages() {
        use crate::memory::tests::{kernel_has_huge_pages, marked_for_small_pages};
        if !kernel_has_huge_pages() {
            return; // Nothing to mark (see `memory::tests`).
        }
        let inside =
            |chunk: &Vec<Order>| chunk.as_ptr() as usize + CHUNK / 2 * std::mem::size_of::<Order>();
        let mut grown = OrderStore::default();
        grown.insert_new(1, order(1));
        assert!(marked_for_small_pages(inside(&grown.chunks[0])));
        let mut reserved = OrderStore::default();
        reserved.reserve(2 * CHUNK);
        assert!(reserved
            .chunks
            .iter()
            .all(|c| marked_for_small_pages(inside(c))));
    }

    fn check_order_store(mut store: OrderStore) {
        let n = CHUNK as u128 + 10;
        for k in 0..n {
            assert!(store.insert(k, order(k)).is_none());
        }
        assert_eq!(store.len(), n as usize);
        assert!(store.insert(5, order(5)).is_some());
        assert_eq!(store.remove(&3).map(|o| o.key), Some(3));
        assert_eq!(store.get(&(n - 1)).map(|o| o.key), Some(n - 1));
        assert!(store.get(&3).is_none());
        for k in (0..n).filter(|&k| k != 3) {
            assert_eq!(store.remove(&k).map(|o| o.key), Some(k));
        }
        assert!(store.is_empty());
        assert_eq!(store.values().count(), 0);
    }
}
