//! Hand-written protobuf encoding of the engine's outputs.
//!
//! Writing the bytes directly (instead of building prost structs with owned
//! strings) lets an order be serialised once per change, straight from the
//! interned state, and reused as response, persisted row and the embedded
//! `order` of its OrderEvent. Every writer here must produce exactly what
//! prost produces for the same message (proto3: default scalars omitted,
//! fields in number order); tests/encoding.rs checks that.

use std::ops::Range;

use crate::domain::engine::{ItemResult, Outcome, ReconcileReport, Sink};
use crate::domain::error::CommandError;
use crate::domain::ids::{copy_name, ORDER_ID_LEN};
use crate::domain::model::*;
use crate::domain::undo::BatchLog;

const VARINT: u32 = 0;
const LEN: u32 = 2;

pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
pub fn varint_len(v: u64) -> usize {
    if v < 0x80 {
        return 1;
    }
    // 1 byte per 7 bits, at least one: ceil(bits / 7), computed as
    // (bits * 9 + 64) / 64, which is exact for 1..=64 bits and needs no division.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    (bits * 9 + 64) / 64
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(buf, u64::from(field << 3 | wire));
}

/// int64 / int32 / enum / bool field (negative int32 are sign-extended, as prost does).
pub fn put_int(buf: &mut Vec<u8>, field: u32, v: i64) {
    if v != 0 {
        put_key(buf, field, VARINT);
        put_varint(buf, v as u64);
    }
}

fn int_len(field: u32, v: i64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(field) + varint_len(v as u64)
    }
}

fn key_len(field: u32) -> usize {
    varint_len(u64::from(field << 3))
}

pub fn put_bytes(buf: &mut Vec<u8>, field: u32, v: &[u8]) {
    if !v.is_empty() {
        put_key(buf, field, LEN);
        put_varint(buf, v.len() as u64);
        buf.extend_from_slice(v);
    }
}

fn bytes_len(field: u32, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        key_len(field) + varint_len(len as u64) + len
    }
}

/// An embedded message field: always written, even when empty.
pub fn put_message(buf: &mut Vec<u8>, field: u32, body: &[u8]) {
    put_key(buf, field, LEN);
    put_varint(buf, body.len() as u64);
    buf.extend_from_slice(body);
}

fn put_message_header(buf: &mut Vec<u8>, field: u32, len: usize) {
    put_key(buf, field, LEN);
    put_varint(buf, len as u64);
}

fn message_len(field: u32, len: usize) -> usize {
    key_len(field) + varint_len(len as u64) + len
}

/// google.protobuf.Timestamp from milliseconds since the epoch.
pub fn timestamp_parts(ms: i64) -> (i64, i64) {
    (ms.div_euclid(1000), ms.rem_euclid(1000) * 1_000_000)
}

/// A Timestamp body prefixed with its length byte, zero padded to a fixed
/// size so that it is copied as one block: `[len, body.., 0..]`. The
/// longest body (a negative `seconds` of 10 bytes, `nanos` of 5) is 17 bytes.
type TimestampBlock = [u8; TIMESTAMP_BLOCK];
const TIMESTAMP_BLOCK: usize = 24;

fn timestamp_block(ms: i64) -> TimestampBlock {
    let (s, n) = timestamp_parts(ms);
    let mut scratch = [0u8; TIMESTAMP_BLOCK + SLACK];
    let mut c = Cursor {
        buf: &mut scratch,
        pos: 1,
    };
    c.int(1, s);
    c.int(2, n);
    let body_len = c.pos - 1;
    let mut block = [0u8; TIMESTAMP_BLOCK];
    block[0] = body_len as u8;
    block[1..1 + body_len].copy_from_slice(&scratch[1..1 + body_len]);
    block
}

fn put_timestamp(buf: &mut Vec<u8>, field: u32, block: &TimestampBlock) {
    put_key(buf, field, LEN);
    buf.extend_from_slice(&block[..1 + usize::from(block[0])]);
}

/// The Timestamp blocks of the last two instants encoded. A created order
/// carries its batch's `now` three or four times (create and update time,
/// expiry when the TTL is 0, event time) and `now + ttl` otherwise, so two
/// entries hit almost always; div/rem and two varints cost more than that.
#[derive(Debug, Clone)]
struct TimestampMemo {
    ms: [i64; 2],
    blocks: [TimestampBlock; 2],
    /// The entry replaced on the next miss.
    next: usize,
}

impl Default for TimestampMemo {
    fn default() -> Self {
        // An all-zero block is the (empty) encoding of 0 ms.
        Self {
            ms: [0; 2],
            blocks: [[0; TIMESTAMP_BLOCK]; 2],
            next: 0,
        }
    }
}

impl TimestampMemo {
    #[inline(always)]
    fn get(&mut self, ms: i64) -> &TimestampBlock {
        if self.ms[0] == ms {
            return &self.blocks[0];
        }
        if self.ms[1] == ms {
            return &self.blocks[1];
        }
        self.miss(ms)
    }

    #[inline(never)]
    fn miss(&mut self, ms: i64) -> &TimestampBlock {
        let i = self.next;
        self.next ^= 1;
        self.ms[i] = ms;
        self.blocks[i] = timestamp_block(ms);
        &self.blocks[i]
    }

    /// Encoded size of a Timestamp field holding `ms`.
    fn field_len(&mut self, field: u32, ms: i64) -> usize {
        key_len(field) + 1 + usize::from(self.get(ms)[0])
    }
}

/// What fields 13 to 16 of an encoded order (create, update and expiry
/// time, status reason) depend on. Orders created in one batch mostly
/// share them: the same instants, the usual reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TailKey {
    /// The status reason, unless it is a custom one (never memoised: a
    /// fixed-size key cannot tell them apart).
    reason: u8,
    create_ms: i64,
    update_ms: i64,
    expire_ms: Option<i64>,
}

impl TailKey {
    /// `None` for an order whose tail is not memoised.
    #[inline(always)]
    fn of(o: &Order) -> Option<TailKey> {
        let reason = o.fixed_reason_code()?;
        Some(TailKey {
            reason,
            create_ms: o.create_ms,
            update_ms: o.update_ms,
            expire_ms: o.expire_ms(),
        })
    }
}

/// Most bytes of a memoised tail: three timestamps of a recent instant
/// (at most 13 bytes each) and the longest fixed reason (21).
const TAIL_BLOCK: usize = 64;

/// The encoding of fields 13 to 16 of the last order written, by their
/// [`TailKey`]: copied as one block, it replaces three timestamp lookups
/// and a reason (and their length checks) per order.
#[derive(Debug, Clone)]
struct TailMemo {
    key: Option<TailKey>,
    /// Bytes `..len` of `block` are the fields; the rest is padding, copied
    /// along and then overwritten (or left in the slack).
    len: usize,
    block: [u8; TAIL_BLOCK],
}

impl Default for TailMemo {
    fn default() -> Self {
        Self {
            key: None,
            len: 0,
            block: [0; TAIL_BLOCK],
        }
    }
}

impl TailMemo {
    /// Writes the memoised tail if `key` is memoised and the cursor's
    /// region has room for the whole block; says whether it did.
    #[inline(always)]
    fn copy_to(&self, c: &mut Cursor<'_>, key: &Option<TailKey>) -> bool {
        if key.is_none() || self.key != *key {
            return false;
        }
        let at = c.pos;
        match c.buf.get_mut(at..at + TAIL_BLOCK) {
            Some(out) => {
                out.copy_from_slice(&self.block);
                c.pos = at + self.len;
                true
            }
            None => false,
        }
    }

    /// Keeps `fields`, the tail written for `key`, if it fits the block.
    #[inline(never)]
    fn remember(&mut self, key: Option<TailKey>, fields: &[u8]) {
        if key.is_some() && fields.len() <= TAIL_BLOCK {
            self.key = key;
            self.len = fields.len();
            self.block[..fields.len()].copy_from_slice(fields);
        } else {
            self.key = None;
        }
    }
}

/// Writes protobuf fields into a region reserved in advance for what
/// follows (see [`append_bounded`]): a byte is a plain store and the
/// position stays in a register, where `Vec::push` checks the capacity
/// and writes the length back for every byte.
struct Cursor<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

/// Room after a sized region, so that a [`TimestampBlock`] or a word can
/// be stored whole even when its used bytes end the region.
const SLACK: usize = TIMESTAMP_BLOCK;

/// Appends what `write` writes, at most `max` bytes, through a cursor that
/// starts at the old end of `buf`; returns what `write` returns. For
/// messages whose size is only known once written: their length prefixes
/// are fixed up afterwards (see [`Cursor::open`]).
fn append_bounded<R>(buf: &mut Vec<u8>, max: usize, write: impl FnOnce(&mut Cursor<'_>) -> R) -> R {
    append_bounded_in(buf, &mut Initialized::default(), max, write)
}

/// [`append_bounded`] into a buffer whose initialized bytes past its end
/// are tracked by `initialized` (see [`Initialized`]): they are written
/// over rather than zeroed first.
#[inline(always)]
fn append_bounded_in<R>(
    buf: &mut Vec<u8>,
    initialized: &mut Initialized,
    max: usize,
    write: impl FnOnce(&mut Cursor<'_>) -> R,
) -> R {
    let start = buf.len();
    initialized.extend(buf, start + max + SLACK);
    let mut c = Cursor {
        buf: &mut buf[start..],
        pos: 0,
    };
    let r = write(&mut c);
    // Past `max`, the bound was wrong (the bounds checks of the cursor stop
    // it at the end of the slack): fail loudly.
    assert!(c.pos <= max, "encoded length exceeds the computed bound");
    let end = start + c.pos;
    buf.truncate(end);
    r
}

/// How far the allocation of a byte buffer is known to hold initialized
/// bytes, including past the buffer's length: bytes written through a
/// `Vec<u8>` stay in its allocation, initialized, when it is truncated or
/// cleared. Lengthening the arena over them, instead of zeroing the
/// region an order is written into (its size bound, about twice its
/// size), saves a memset per order.
#[derive(Debug, Default, Clone, Copy)]
struct Initialized {
    /// The allocation the bytes are in (address and capacity): another
    /// allocation, after a reallocation, has none of them. A buffer that
    /// only grows never has the same address and capacity again.
    addr: usize,
    capacity: usize,
    /// Bytes `..end` of the allocation are initialized (`end <= capacity`).
    end: usize,
}

impl Initialized {
    /// For `buf`, whose bytes `..buf.len()` are initialized.
    fn of(buf: &Vec<u8>) -> Self {
        Self {
            addr: buf.as_ptr() as usize,
            capacity: buf.capacity(),
            end: buf.len(),
        }
    }

    /// Bytes `..self.end` of `buf`'s allocation are initialized.
    #[inline(always)]
    fn covers(&self, buf: &Vec<u8>) -> bool {
        buf.as_ptr() as usize == self.addr && buf.capacity() == self.capacity
    }

    /// Lengthens `buf` to `len` bytes (at least its length): the new
    /// bytes are zeros, or what earlier writes left there.
    #[inline(always)]
    fn extend(&mut self, buf: &mut Vec<u8>, len: usize) {
        debug_assert!(len >= buf.len());
        if len <= self.end && self.covers(buf) {
            // SAFETY: `len <= self.end <= capacity`, and bytes `..self.end`
            // of this allocation are initialized (see `covers`).
            unsafe { buf.set_len(len) }
        } else {
            self.extend_zeroed(buf, len);
        }
    }

    #[inline(never)]
    fn extend_zeroed(&mut self, buf: &mut Vec<u8>, len: usize) {
        if self.covers(buf) && self.end > buf.len() {
            // SAFETY: `self.end <= capacity`, and bytes `..self.end` of
            // this allocation are initialized (see `covers`).
            unsafe { buf.set_len(self.end) }
        }
        buf.resize(len, 0);
        *self = Self::of(buf);
    }
}

/// `v` (< 2^21) as a varint in the low bytes of a word, and its length.
/// Lengths, quantities, prices, totals and versions are this short.
#[inline(always)]
fn short_varint(v: u64) -> (u64, usize) {
    debug_assert!(v < 1 << 21);
    if v < 1 << 7 {
        (v, 1)
    } else if v < 1 << 14 {
        ((v & 0x7f) | 0x80 | (v >> 7) << 8, 2)
    } else {
        (
            (v & 0x7f) | 0x80 | ((v >> 7) & 0x7f | 0x80) << 8 | (v >> 14) << 16,
            3,
        )
    }
}

/// An int field numbered 1 to 15 holding `v` < 2^21 in the low bytes of a
/// word, and how many (none for 0, which is omitted).
#[inline(always)]
fn small_int_field(field: u32, v: u64) -> (u64, usize) {
    debug_assert!(field < 16 && v < 1 << 21);
    if v == 0 {
        (0, 0)
    } else {
        let (word, n) = short_varint(v);
        (u64::from(field << 3) | word << 8, 1 + n)
    }
}

/// Key and one-byte length of a message field numbered 1 to 15 (`len` <
/// 128), in the low 2 bytes of a word.
#[inline(always)]
fn short_head(field: u32, len: usize) -> u64 {
    debug_assert!(field < 16 && len < 1 << 7);
    u64::from(field << 3 | LEN) | (len as u64) << 8
}

/// Stores all 8 bytes of `word` at `out[at..at + 8]`, without a bounds
/// check: for runs of stores whose extent was checked once (see
/// [`Cursor::framed`]).
///
/// # Safety
/// `at + 8 <= out.len()`.
#[inline(always)]
unsafe fn store_word(out: &mut [u8], at: usize, word: u64) {
    debug_assert!(at + 8 <= out.len());
    // SAFETY: the 8 bytes are inside `out` (the caller's contract), and
    // an unaligned write needs no alignment.
    unsafe {
        out.as_mut_ptr()
            .add(at)
            .cast::<[u8; 8]>()
            .write_unaligned(word.to_le_bytes())
    }
}

/// [`copy_name`] into `out[at..at + v.len()]`, without a bounds check.
///
/// # Safety
/// `at + v.len() <= out.len()`.
#[inline(always)]
unsafe fn store_short(out: &mut [u8], at: usize, v: &[u8]) {
    debug_assert!(at + v.len() <= out.len());
    // SAFETY: `out[at..at + v.len()]` is in bounds (the caller's contract);
    // `copy_name` then works on a slice exactly as long as `v`.
    copy_name(unsafe { out.get_unchecked_mut(at..at + v.len()) }, v);
}

impl Cursor<'_> {
    /// Stores the low `n` bytes of `word`. All 8 are written, in one
    /// store: the bytes past `n` are overwritten by what follows, or fall
    /// in the [`SLACK`] after the region.
    #[inline(always)]
    fn word(&mut self, word: u64, n: usize) {
        self.buf[self.pos..self.pos + 8].copy_from_slice(&word.to_le_bytes());
        self.pos += n;
    }

    /// The low bytes of two words, one after the other, as in
    /// [`Cursor::word`], with one bounds check.
    #[inline(always)]
    fn words(&mut self, first: (u64, usize), second: (u64, usize)) {
        let at = self.pos;
        let out = &mut self.buf[at..at + 16];
        let n = first.1.min(8);
        // SAFETY: `n` is at most 8, and `out` 16 bytes long.
        unsafe {
            store_word(out, 0, first.0);
            store_word(out, n, second.0);
        }
        self.pos = at + n + second.1.min(8);
    }

    #[inline(always)]
    fn varint(&mut self, v: u64) {
        if v < 1 << 21 {
            let (word, n) = short_varint(v);
            self.word(word, n);
        } else {
            self.long_varint(v);
        }
    }

    /// Out of line, and on the slice rather than on `self`: a cursor whose
    /// address is passed to a call has to live in memory, and its position
    /// would be stored and reloaded around every field.
    #[inline(never)]
    fn long_varint_at(buf: &mut [u8], mut pos: usize, mut v: u64) -> usize {
        while v >= 0x80 {
            buf[pos] = (v as u8) | 0x80;
            pos += 1;
            v >>= 7;
        }
        buf[pos] = v as u8;
        pos + 1
    }

    #[inline(always)]
    fn long_varint(&mut self, v: u64) {
        self.pos = Self::long_varint_at(self.buf, self.pos, v);
    }

    /// A key and a varint (after inlining, the key is a constant and
    /// fields up to 15 take one byte, so both are usually one store).
    #[inline(always)]
    fn key_varint(&mut self, field: u32, wire: u32, v: u64) {
        let key = u64::from(field << 3 | wire);
        if key < 1 << 7 && v < 1 << 21 {
            let (word, n) = short_varint(v);
            self.word(key | word << 8, 1 + n);
        } else {
            self.varint(key);
            self.varint(v);
        }
    }

    #[inline(always)]
    fn raw(&mut self, v: &[u8]) {
        let at = self.pos;
        copy_name(&mut self.buf[at..at + v.len()], v);
        self.pos = at + v.len();
    }

    #[inline(always)]
    fn int(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.key_varint(field, VARINT, v as u64);
        }
    }

    #[inline(always)]
    fn bytes(&mut self, field: u32, v: &[u8]) {
        let n = v.len();
        let key = u64::from(field << 3 | LEN);
        if n == 0 {
        } else if key < 1 << 7 && n < 1 << 7 {
            // The usual case, a one-byte key and length: one bounds check
            // for the whole field (the header word needs 8 bytes, the
            // string n + 2 of them).
            let at = self.pos;
            let out = &mut self.buf[at..at + n + 8];
            // SAFETY: both stores end within `n + 8` bytes, the length of `out`.
            unsafe {
                store_word(out, 0, key | (n as u64) << 8);
                store_short(out, 2, v);
            }
            self.pos = at + 2 + n;
        } else if key < 1 << 14 && n < 1 << 7 {
            // A two-byte key (fields 16 to 2047: the reason and client of
            // an order), as above.
            let at = self.pos;
            let out = &mut self.buf[at..at + n + 8];
            let head = (key & 0x7f | 0x80) | (key >> 7) << 8 | (n as u64) << 16;
            // SAFETY: both stores end within `n + 8` bytes, the length of `out`.
            unsafe {
                store_word(out, 0, head);
                store_short(out, 3, v);
            }
            self.pos = at + 3 + n;
        } else {
            self.header(field, n);
            self.raw(v);
        }
    }

    #[inline(always)]
    fn header(&mut self, field: u32, len: usize) {
        self.key_varint(field, LEN, len as u64);
    }

    /// The low `head_len` bytes of `head`, the string `v`, the low
    /// `tail_len` bytes of `tail` then of `tail2`: a run of keys, lengths
    /// and small ints around a short string, stored with one bounds check
    /// (each part is stored as a whole word, as in [`Cursor::word`]).
    #[inline(always)]
    fn framed(&mut self, head: (u64, usize), v: &[u8], tail: (u64, usize), tail2: (u64, usize)) {
        // Each length is at most 8 (a no-op that lets the compiler see it).
        let (h, t) = (head.1.min(8), tail.1.min(8));
        let n = v.len();
        let at = self.pos;
        let out = &mut self.buf[at..at + n + 24];
        // SAFETY: `h` and `t` are at most 8, so every store below ends by
        // `h + n + t + 8 <= n + 24`, the length of `out`.
        unsafe {
            store_word(out, 0, head.0);
            store_short(out, h, v);
            store_word(out, h + n, tail.0);
            store_word(out, h + n + t, tail2.0);
        }
        self.pos = at + h + n + t + tail2.1.min(8);
    }

    /// [`Cursor::framed`] with two strings: the low `head_len` bytes of
    /// `head`, `v`, the low `mid_len` bytes of `mid`, `w`, the low
    /// `tail_len` bytes of `tail`, with one bounds check for the run.
    #[inline(always)]
    fn framed2(
        &mut self,
        head: (u64, usize),
        v: &[u8],
        mid: (u64, usize),
        w: &[u8],
        tail: (u64, usize),
    ) {
        // Each length is at most 8 (a no-op that lets the compiler see it).
        let (h, m) = (head.1.min(8), mid.1.min(8));
        let (nv, nw) = (v.len(), w.len());
        let at = self.pos;
        let out = &mut self.buf[at..at + nv + nw + 24];
        let p = h + nv;
        let q = p + m + nw;
        // SAFETY: `h` and `m` are at most 8, so every store below ends by
        // `h + nv + m + nw + 8 <= nv + nw + 24`, the length of `out`.
        unsafe {
            store_word(out, 0, head.0);
            store_short(out, h, v);
            store_word(out, p, mid.0);
            store_short(out, p + m, w);
            store_word(out, q, tail.0);
        }
        self.pos = at + q + tail.1.min(8);
    }

    /// Field 1 of an OrderEvent, its id `"<order id>:<version>"`, where the
    /// version has `digits` decimal digits (see [`decimal_len`]; a
    /// negative version is written without its sign). At most 57 bytes:
    /// its key and length take one byte each.
    #[inline(always)]
    fn event_id(&mut self, id: &[u8; ORDER_ID_LEN], version: i64, digits: usize) {
        const COLON: usize = 2 + ORDER_ID_LEN;
        let digits = digits.min(DECIMAL_DIGITS_MAX);
        let at = self.pos;
        let out = &mut self.buf[at..at + COLON + 1 + DECIMAL_DIGITS_MAX];
        let head = short_head(1, ORDER_ID_LEN + 1 + digits);
        out[..8].copy_from_slice(&head.to_le_bytes());
        // A fixed-size copy: moves, not a call to memcpy.
        out[2..COLON].copy_from_slice(id);
        out[COLON] = b':';
        let mut v = version.unsigned_abs();
        for d in out[COLON + 1..COLON + 1 + digits].iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        self.pos = at + COLON + 1 + digits;
    }

    /// Starts an embedded message (or any length-delimited field) whose
    /// length is not known yet: writes the key and leaves `width` bytes for
    /// the length, which [`Cursor::close`] fills in. `width` must be at
    /// least the varint size of the final length: `varint_len` of a bound.
    /// Returns where the length goes.
    #[inline(always)]
    fn open(&mut self, field: u32, width: usize) -> usize {
        let key = u64::from(field << 3 | LEN);
        if key < 1 << 7 {
            // The bytes after the key are overwritten by `close`.
            self.word(key, 1 + width);
        } else {
            self.varint(key);
            self.pos += width;
        }
        self.pos - width
    }

    /// Ends the field opened at `at` with `width` bytes for its length:
    /// writes the length of what follows as a canonical varint. A length
    /// that takes fewer bytes than `width` moves the body back (rare:
    /// widths come from bounds that are close to the usual sizes). Returns
    /// where the body starts.
    #[inline(always)]
    fn close(&mut self, at: usize, width: usize) -> usize {
        let body = at + width;
        let len = self.pos - body;
        if width == 1 && len < 1 << 7 {
            self.buf[at] = len as u8;
            body
        } else if width == 2 && (1 << 7..1 << 14).contains(&len) {
            let prefix = [(len as u8) | 0x80, (len >> 7) as u8];
            self.buf[at..body].copy_from_slice(&prefix);
            body
        } else {
            let (body, end) = Self::close_moving(self.buf, at, width, self.pos);
            self.pos = end;
            body
        }
    }

    /// [`Cursor::close`] when the length does not fit the fast paths: moves
    /// the body from `at + width..end` back by what its length takes less
    /// than `width` (possibly nothing), and writes the length. Returns where the body starts
    /// and ends. (On the slice rather than on `self`: see `long_varint_at`.)
    #[inline(never)]
    #[cold]
    fn close_moving(buf: &mut [u8], at: usize, width: usize, end: usize) -> (usize, usize) {
        let body = at + width;
        let len = end - body;
        let n = varint_len(len as u64);
        assert!(n <= width, "message longer than its bound");
        let new_body = at + n;
        buf.copy_within(body..end, new_body);
        let prefix_end = Self::long_varint_at(buf, at, len as u64);
        debug_assert_eq!(prefix_end, new_body);
        (new_body, new_body + len)
    }

    /// A Timestamp field from its memoised block (needs [`SLACK`]).
    #[inline(always)]
    fn timestamp(&mut self, field: u32, block: &TimestampBlock) {
        let key = u64::from(field << 3 | LEN);
        if key < 1 << 7 {
            // A one-byte key and the block: one bounds check.
            let at = self.pos;
            let out = &mut self.buf[at..at + 1 + TIMESTAMP_BLOCK];
            out[0] = key as u8;
            out[1..].copy_from_slice(block);
            self.pos = at + 2 + usize::from(block[0]);
        } else {
            self.varint(key);
            self.buf[self.pos..self.pos + TIMESTAMP_BLOCK].copy_from_slice(block);
            self.pos += 1 + usize::from(block[0]);
        }
    }
}

/// Most decimal digits of a u64.
const DECIMAL_DIGITS_MAX: usize = 20;

/// How many decimal digits `v` has.
#[inline(always)]
fn decimal_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 10 {
        v /= 10;
        n += 1;
    }
    n
}

/// The order id of `key`, "o-" and 32 lower-case hex digits: what
/// [`crate::domain::ids::write_order_id`] writes, 16 digits per SSE2 operation instead of a
/// table lookup and a store per byte.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn order_id(key: u128) -> [u8; ORDER_ID_LEN] {
    use std::arch::x86_64::*;
    let mut id = [0u8; ORDER_ID_LEN];
    id[0] = b'o';
    id[1] = b'-';
    let bytes = key.to_be_bytes();
    let (first, second) = id[2..].split_at_mut(16);
    #[allow(unused_unsafe)] // safe functions since Rust 1.87; unsafe before
    // SAFETY: SSE2 is enabled on every x86_64 target; the load reads the 16
    // bytes of `bytes` and each store writes the 16 bytes of `first` or
    // `second` (unaligned accesses).
    unsafe {
        let v = _mm_loadu_si128(bytes.as_ptr().cast());
        let nibble = _mm_set1_epi8(0x0f);
        let high = _mm_and_si128(_mm_srli_epi16::<4>(v), nibble);
        let low = _mm_and_si128(v, nibble);
        // A digit d is '0' + d, plus 'a' - '0' - 10 when it is over 9.
        let ascii = |d: __m128i| {
            let letter = _mm_cmpgt_epi8(d, _mm_set1_epi8(9));
            _mm_add_epi8(
                _mm_add_epi8(d, _mm_set1_epi8(b'0' as i8)),
                _mm_and_si128(letter, _mm_set1_epi8((b'a' - b'0' - 10) as i8)),
            )
        };
        // Each byte's high digit first.
        _mm_storeu_si128(
            first.as_mut_ptr().cast(),
            ascii(_mm_unpacklo_epi8(high, low)),
        );
        _mm_storeu_si128(
            second.as_mut_ptr().cast(),
            ascii(_mm_unpackhi_epi8(high, low)),
        );
    }
    id
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn order_id(key: u128) -> [u8; ORDER_ID_LEN] {
    let mut id = [0u8; ORDER_ID_LEN];
    crate::domain::ids::write_order_id(key, &mut id);
    id
}

/// Offsets inside an encoded Order that the persisted row needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderOffsets {
    pub customer_id: (usize, usize),
}

/// Appends `orders.v1.Order` for `o` to `buf`.
pub fn write_order(buf: &mut Vec<u8>, st: &State, o: &Order) -> OrderOffsets {
    write_order_memo(
        buf,
        st,
        o,
        &mut TimestampMemo::default(),
        &mut TailMemo::default(),
    )
}

fn write_order_memo(
    buf: &mut Vec<u8>,
    st: &State,
    o: &Order,
    times: &mut TimestampMemo,
    tail: &mut TailMemo,
) -> OrderOffsets {
    let id = order_id(o.key);
    let max = order_bound(st, o, times);
    append_bounded(buf, max, |c| write_order_fields(c, st, o, &id, times, tail))
}

/// The SKU of line `line` of `o` ("" for an index out of range).
fn line_sku<'a>(st: &'a State, o: &Order, line: u32) -> &'a [u8] {
    o.lines
        .get(line as usize)
        .map_or("", |l| st.skus.name(l.sku))
        .as_bytes()
}

/// The request id and customer id of `o` (as bytes: no UTF-8 boundary
/// checks).
fn order_text(o: &Order) -> (&[u8], &[u8]) {
    o.text.parts()
}

fn line_len(sku: &[u8], line: &Line, currency: &[u8]) -> usize {
    bytes_len(1, sku.len())
        + int_len(2, i64::from(line.quantity))
        + int_len(3, line.unit_price_minor)
        + bytes_len(4, currency.len())
}

fn allocation_len(sku: &[u8], loc: &[u8], a: &Allocation) -> usize {
    int_len(1, i64::from(a.line))
        + bytes_len(2, sku.len())
        + bytes_len(3, loc.len())
        + int_len(4, i64::from(a.quantity))
}

fn backorder_len(sku: &[u8], b: &Backorder) -> usize {
    int_len(1, i64::from(b.line)) + bytes_len(2, sku.len()) + int_len(3, i64::from(b.quantity))
}

/// The exact encoded size of `orders.v1.Order` for `o`: what
/// [`write_order_fields`] writes. Only for orders whose [`order_bound`]
/// would be too loose (names or reasons far beyond the limits).
#[inline(never)]
fn order_len(st: &State, o: &Order, times: &mut TimestampMemo) -> usize {
    let currency: &[u8] = &o.currency;
    let (request_id, customer_id) = order_text(o);
    let mut len = bytes_len(1, ORDER_ID_LEN)
        + bytes_len(2, request_id.len())
        + bytes_len(3, customer_id.len())
        + bytes_len(4, st.regions.name(o.region).len());
    for line in &o.lines {
        let sku = st.skus.name(line.sku).as_bytes();
        len += message_len(5, line_len(sku, line, currency));
    }
    len += int_len(6, i64::from(o.policy)) + int_len(7, o.status as i64) + int_len(8, o.version);
    for a in o.allocations() {
        let sku = line_sku(st, o, a.line);
        let loc = st.locations.name(a.loc).as_bytes();
        len += message_len(9, allocation_len(sku, loc, &a));
    }
    for b in &o.backorders {
        len += message_len(10, backorder_len(line_sku(st, o, b.line), b));
    }
    len += int_len(11, o.total_minor)
        + bytes_len(12, currency.len())
        + times.field_len(13, o.create_ms)
        + times.field_len(14, o.update_ms);
    if let Some(at) = o.expire_ms() {
        len += times.field_len(15, at);
    }
    len + bytes_len(16, o.status_reason().len()) + bytes_len(17, st.clients.name(o.client).len())
}

/// Most bytes of an int64 / int32 / enum field numbered 1 to 15: a key
/// byte and a varint of up to 10 bytes (negative values take 10).
const INT_FIELD_MAX: usize = 1 + 10;
/// Most bytes of a line index (uint32 held as i64, field 1): key and 5 bytes.
const INDEX_FIELD_MAX: usize = 1 + 5;
/// Most bytes of a Timestamp field numbered 1 to 15: key, length byte and
/// the longest body (see [`TimestampBlock`]).
const TIMESTAMP_FIELD_MAX: usize = 1 + 1 + 17;
/// Currencies are three letters.
const CURRENCY_LEN: usize = 3;

/// Most bytes of a string or message field whose content is at most `len` bytes.
#[inline(always)]
fn bytes_max(field: u32, len: usize) -> usize {
    key_len(field) + varint_len(len as u64) + len
}

/// Most bytes of an OrderLine body whose SKU has `sku` bytes.
#[inline(always)]
fn line_max(sku: usize) -> usize {
    bytes_max(1, sku) + 2 * INT_FIELD_MAX + bytes_max(4, CURRENCY_LEN)
}

/// Most bytes of an Allocation body with names of `sku` and `loc` bytes.
#[inline(always)]
fn allocation_max(sku: usize, loc: usize) -> usize {
    INDEX_FIELD_MAX + bytes_max(2, sku) + bytes_max(3, loc) + INT_FIELD_MAX
}

/// Most bytes of a Backorder body whose SKU has `sku` bytes.
#[inline(always)]
fn backorder_max(sku: usize) -> usize {
    INDEX_FIELD_MAX + bytes_max(2, sku) + INT_FIELD_MAX
}

/// Allocations whose SKU and location names together are shorter than
/// this have a body under 128 bytes (a one-byte length) when their line
/// index and quantity are under 2^21: two ints of at most 4 bytes and two
/// string heads of 2.
const SHORT_ALLOCATION_NAMES: usize = 128 - 2 * 4 - 2 * 2;
/// The same for a backorder's SKU (two ints, one string head).
const SHORT_BACKORDER_SKU: usize = 128 - 2 * 4 - 2;

/// Bounds above this are replaced by the exact size: reserving (and
/// zeroing) them would cost more than computing it, and it keeps the
/// length prefix of an order to at most 2 bytes on the bounded path.
const ORDER_BOUND_LIMIT: usize = (1 << 14) - 1;

/// Most bytes of the key and length of a string or message field of an
/// order, provided the order is at most [`ORDER_BOUND_LIMIT`] bytes long
/// (then so is every part of it, and its length takes at most 2 bytes).
const FIELD_HEAD_MAX: usize = 2 + 2;

/// A bound on the encoded size of `orders.v1.Order` for `o`, from counts
/// and the longest name of each interner (not from the names themselves:
/// that would be a second pass over every lookup); the exact size when
/// the bound would exceed [`ORDER_BOUND_LIMIT`]. Usually within a few
/// hundred bytes of the size, and in the same varint width.
#[inline(always)]
fn order_bound(st: &State, o: &Order, times: &mut TimestampMemo) -> usize {
    const H: usize = FIELD_HEAD_MAX;
    let sku = st.skus.max_name_len();
    let loc = st.locations.max_name_len();
    // Each part below assumes it is shorter than the limit (at most `H`
    // bytes of key and length): if the sum is within it, so is each part.
    let line = H + (H + sku) + 2 * INT_FIELD_MAX + (H + CURRENCY_LEN);
    let allocation = H + INDEX_FIELD_MAX + (H + sku) + (H + loc) + INT_FIELD_MAX;
    let backorder = H + INDEX_FIELD_MAX + (H + sku) + INT_FIELD_MAX;
    // id, request and customer ids, region, currency, reason, client.
    let strings = 7 * H
        + ORDER_ID_LEN
        + o.text.len()
        + st.regions.max_name_len()
        + CURRENCY_LEN
        + o.status_reason().len()
        + st.clients.max_name_len();
    // policy, status, version, total; create, update, expire time.
    let scalars = 4 * INT_FIELD_MAX + 3 * TIMESTAMP_FIELD_MAX;
    let bound = strings
        + scalars
        + o.lines.len() * line
        + o.allocation_count() * allocation
        + o.backorders.len() * backorder;
    if bound <= ORDER_BOUND_LIMIT {
        bound
    } else {
        order_len(st, o, times)
    }
}

/// How many lines' SKU names [`write_order_fields`] keeps for the
/// allocations and backorders (orders have 1 to 5 lines, usually).
const CACHED_LINE_SKUS: usize = 8;

/// Writes the fields of `orders.v1.Order` for `o` (`id` is its formatted
/// order id); the offsets are relative to where the order starts. The
/// embedded lines, allocations and backorders get their lengths once
/// written ([`Cursor::open`]), in a width from a bound on their size.
fn write_order_fields(
    out: &mut Cursor<'_>,
    st: &State,
    o: &Order,
    id: &[u8; ORDER_ID_LEN],
    times: &mut TimestampMemo,
    tail: &mut TailMemo,
) -> OrderOffsets {
    // Works on a local cursor: through `out`, any store into the buffer
    // might (as far as the compiler knows) change the cursor itself, which
    // it would then reload and store back around every field.
    let mut cursor = Cursor {
        buf: std::mem::take(&mut out.buf),
        pos: out.pos,
    };
    let c = &mut cursor;
    let currency: &[u8] = &o.currency;
    let (request_id, customer) = order_text(o);
    let start = c.pos;
    c.bytes(1, id);
    c.bytes(2, request_id);
    c.bytes(3, customer);
    let customer_at = c.pos - customer.len();
    c.bytes(4, st.regions.name(o.region).as_bytes());
    // bytes(4, currency): key, length 3 and the letters.
    let currency_field = (
        u64::from(u32::from_le_bytes([
            4 << 3 | LEN as u8,
            3,
            currency[0],
            currency[1],
        ])) | u64::from(currency[2]) << 32,
        5,
    );
    // The SKU names of the first lines, for the allocations and backorders
    // that refer to them (by line index): one interner lookup per line,
    // not one more per allocation and backorder. Lines not reached stay "".
    let mut line_skus: [&[u8]; CACHED_LINE_SKUS] = [&[]; CACHED_LINE_SKUS];
    for (i, line) in o.lines.iter().enumerate() {
        let sku = st.skus.name(line.sku).as_bytes();
        if let Some(cached) = line_skus.get_mut(i) {
            *cached = sku;
        }
        let (q, p) = (line.quantity as u64, line.unit_price_minor as u64);
        if q < 1 << 21 && p < 1 << 21 && (1..128 - 2 - 13).contains(&sku.len()) {
            // The usual line: its size is known before it is written (a
            // body under 128 bytes), so it is one run of stores.
            let (qw, ql) = small_int_field(2, q);
            let (pw, pl) = small_int_field(3, p);
            let ints = (qw | pw << (8 * ql), ql + pl);
            let len = 2 + sku.len() + ints.1 + currency_field.1;
            let head = short_head(5, len) | short_head(1, sku.len()) << 16;
            c.framed((head, 4), sku, ints, currency_field);
            continue;
        }
        let width = varint_len(line_max(sku.len()) as u64);
        let at = c.open(5, width);
        c.bytes(1, sku);
        c.int(2, i64::from(line.quantity));
        c.int(3, line.unit_price_minor);
        c.bytes(4, currency);
        c.close(at, width);
    }
    let (policy, status, version) = (o.policy as u64, o.status as u64, o.version as u64);
    if policy < 1 << 7 && status < 1 << 7 && version < 1 << 21 {
        // Two fields of at most 2 bytes and one of at most 4: one store.
        let policy = small_int_field(6, policy);
        let status = small_int_field(7, status);
        let version = small_int_field(8, version);
        let word = policy.0 | status.0 << (8 * policy.1) | version.0 << (8 * (policy.1 + status.1));
        c.word(word, policy.1 + status.1 + version.1);
    } else {
        c.int(6, i64::from(o.policy));
        c.int(7, o.status as i64);
        c.int(8, o.version);
    }
    // The SKU of line `line`, as `line_sku` finds it.
    let sku_of = |line: u32| match line_skus.get(line as usize) {
        Some(&sku) => sku,
        None => line_sku(st, o, line),
    };
    for a in o.allocations() {
        let sku = sku_of(a.line);
        let loc = st.locations.name(a.loc).as_bytes();
        let (line, q) = (u64::from(a.line), a.quantity as u64);
        let names = sku.len() + loc.len();
        if line < 1 << 21
            && q < 1 << 21
            && !sku.is_empty()
            && !loc.is_empty()
            && names < SHORT_ALLOCATION_NAMES
        {
            // The usual allocation: a body under 128 bytes, of known size,
            // written as one run (as the usual line above). Both names are
            // there: their heads are 2 bytes each.
            let index = small_int_field(1, line);
            let sku_head = short_head(2, sku.len());
            let loc_head = short_head(3, loc.len());
            let quantity = small_int_field(4, q);
            let len = index.1 + 2 + names + 2 + quantity.1;
            let head = short_head(9, len) | (index.0 | sku_head << (8 * index.1)) << 16;
            c.framed2((head, 2 + index.1 + 2), sku, (loc_head, 2), loc, quantity);
            continue;
        }
        let width = varint_len(allocation_max(sku.len(), loc.len()) as u64);
        let at = c.open(9, width);
        c.int(1, i64::from(a.line));
        c.bytes(2, sku);
        c.bytes(3, loc);
        c.int(4, i64::from(a.quantity));
        c.close(at, width);
    }
    for b in &o.backorders {
        let sku = sku_of(b.line);
        let (line, q) = (u64::from(b.line), b.quantity as u64);
        if line < 1 << 21 && q < 1 << 21 && (1..SHORT_BACKORDER_SKU).contains(&sku.len()) {
            // As the usual allocation above, without a location.
            let index = small_int_field(1, line);
            let sku_head = short_head(2, sku.len());
            let quantity = small_int_field(3, q);
            let len = index.1 + 2 + sku.len() + quantity.1;
            let head = short_head(10, len) | (index.0 | sku_head << (8 * index.1)) << 16;
            c.framed((head, 2 + index.1 + 2), sku, quantity, (0, 0));
            continue;
        }
        let width = varint_len(backorder_max(sku.len()) as u64);
        let at = c.open(10, width);
        c.int(1, i64::from(b.line));
        c.bytes(2, sku);
        c.int(3, i64::from(b.quantity));
        c.close(at, width);
    }
    let total = o.total_minor as u64;
    if total < 1 << 21 {
        // The total (at most 4 bytes) and the currency field: one bounds check.
        // The lines' currency field (number 4), renumbered 12.
        let currency_12 = (currency_field.0 & !0xff | u64::from(12 << 3 | LEN), 5);
        c.words(small_int_field(11, total), currency_12);
    } else {
        c.int(11, o.total_minor);
        c.bytes(12, currency);
    }
    let key = TailKey::of(o);
    if !tail.copy_to(c, &key) {
        let tail_at = c.pos;
        c.timestamp(13, times.get(o.create_ms));
        c.timestamp(14, times.get(o.update_ms));
        if let Some(at) = o.expire_ms() {
            c.timestamp(15, times.get(at));
        }
        c.bytes(16, o.status_reason().as_bytes());
        tail.remember(key, &c.buf[tail_at..c.pos]);
    }
    c.bytes(17, st.clients.name(o.client).as_bytes());
    *out = cursor;
    OrderOffsets {
        customer_id: (customer_at - start, customer.len()),
    }
}

fn stock_level_body(buf: &mut Vec<u8>, sku: &str, loc: &str, cell: &StockCell) {
    put_bytes(buf, 1, sku.as_bytes());
    put_bytes(buf, 2, loc.as_bytes());
    put_int(buf, 3, cell.on_hand);
    put_int(buf, 4, cell.reserved);
    put_int(buf, 5, cell.available());
    put_int(buf, 6, cell.version);
}

fn stock_level_len(sku: &str, loc: &str, cell: &StockCell) -> usize {
    bytes_len(1, sku.len())
        + bytes_len(2, loc.len())
        + int_len(3, cell.on_hand)
        + int_len(4, cell.reserved)
        + int_len(5, cell.available())
        + int_len(6, cell.version)
}

pub fn write_stock_level(buf: &mut Vec<u8>, st: &State, sku: SkuId, loc: LocId) {
    let cell = st.skus.value(sku).cell(loc).copied().unwrap_or(StockCell {
        on_hand: 0,
        reserved: 0,
        version: 0,
        touch: Touch::default(),
        loc,
    });
    stock_level_body(buf, st.skus.name(sku), st.locations.name(loc), &cell);
}

pub fn write_location(buf: &mut Vec<u8>, st: &State, loc: LocId) {
    put_bytes(buf, 1, st.locations.name(loc).as_bytes());
    if let Some(row) = st.location_row(loc) {
        put_bytes(buf, 2, st.regions.name(row.region).as_bytes());
        put_int(buf, 3, i64::from(row.priority));
    }
}

pub fn write_region(buf: &mut Vec<u8>, st: &State, region: RegionId) {
    put_bytes(buf, 1, st.regions.name(region).as_bytes());
    if let Some(row) = st.region_row(region) {
        put_int(buf, 2, i64::from(row.strategy));
        put_int(buf, 3, row.ttl_seconds);
    }
}

pub fn write_error(buf: &mut Vec<u8>, e: &CommandError) {
    put_int(buf, 1, i64::from(e.code));
    put_bytes(buf, 2, e.message.as_bytes());
    put_bytes(buf, 3, e.reason.as_bytes());
    for v in &e.violations {
        let len = bytes_len(1, v.field.len()) + bytes_len(2, v.description.len());
        put_message_header(buf, 4, len);
        put_bytes(buf, 1, v.field.as_bytes());
        put_bytes(buf, 2, v.description.as_bytes());
    }
}

fn write_reconcile(buf: &mut Vec<u8>, st: &State, r: &ReconcileReport) {
    put_int(buf, 1, r.rows_checked);
    for d in &r.drifts {
        let sku = st.skus.name(d.sku).as_bytes();
        let loc = st.locations.name(d.loc).as_bytes();
        let len = bytes_len(1, sku.len())
            + bytes_len(2, loc.len())
            + int_len(3, d.recorded_reserved)
            + int_len(4, d.computed_reserved);
        put_message_header(buf, 2, len);
        put_bytes(buf, 1, sku);
        put_bytes(buf, 2, loc);
        put_int(buf, 3, d.recorded_reserved);
        put_int(buf, 4, d.computed_reserved);
    }
    put_int(buf, 3, i64::from(r.repaired));
}

// ---------------------------------------------------------------- results

/// `CommandResult.response` oneof field numbers.
pub mod response_field {
    pub const ORDER: u32 = 10;
    pub const BATCH_CREATE_ORDERS: u32 = 11;
    pub const STOCK: u32 = 12;
    pub const LOCATION: u32 = 13;
    pub const REGION: u32 = 14;
    pub const RECONCILE: u32 = 15;
    pub const EXPIRE_RESERVATIONS: u32 = 16;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRec {
    pub code: i32,
    pub replayed: bool,
    /// For code 0: the `CommandResult.response` field of the payload.
    pub field: u32,
    /// Response message (code 0) or OrderError, in the arena.
    pub payload: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRowRec {
    pub order_id: Range<usize>,
    pub customer_id: Range<usize>,
    pub status: i32,
    pub version: i64,
    pub create_ms: i64,
    pub update_ms: i64,
    pub order: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockRowRec {
    pub sku: Range<usize>,
    pub location_id: Range<usize>,
    pub on_hand: i64,
    pub reserved: i64,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRec {
    pub subject: &'static str,
    pub event_id: Range<usize>,
    pub payload: Range<usize>,
}

/// Everything one batch produced; byte fields are ranges of `arena`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutput {
    pub batch_seq: u64,
    pub arena: Vec<u8>,
    pub responses: Vec<ResponseRec>,
    pub order_rows: Vec<OrderRowRec>,
    pub stock_rows: Vec<StockRowRec>,
    pub location_rows: Vec<Range<usize>>,
    pub region_rows: Vec<Range<usize>>,
    pub events: Vec<EventRec>,
}

/// The buffers of a dropped [`BatchOutput`] (emptied, capacity kept), and
/// the writer's per-batch scratch, kept for the next batch of this thread.
/// Every batch writes a few MB of output; in fresh memory, the kernel's
/// page zeroing of those bytes cost about as much as encoding them.
#[derive(Default)]
struct Spare {
    outputs: Vec<Buffers>,
    latest: Vec<Option<OrderRowRec>>,
    scratch: Vec<u8>,
}

/// The vectors of a [`BatchOutput`], without its `Drop`.
#[derive(Default)]
struct Buffers {
    arena: Vec<u8>,
    /// The initialized bytes of `arena`'s allocation (emptied, not zeroed).
    arena_initialized: Initialized,
    responses: Vec<ResponseRec>,
    order_rows: Vec<OrderRowRec>,
    stock_rows: Vec<StockRowRec>,
    location_rows: Vec<Range<usize>>,
    region_rows: Vec<Range<usize>>,
    events: Vec<EventRec>,
}

/// Spare outputs kept per thread (one in use by the caller, one being filled).
const SPARE_OUTPUTS: usize = 2;
/// Larger arenas are released rather than kept.
const SPARE_MAX_ARENA: usize = 64 << 20;

thread_local! {
    static SPARE: std::cell::RefCell<Spare> = std::cell::RefCell::default();
}

impl Drop for BatchOutput {
    fn drop(&mut self) {
        if self.arena.capacity() == 0 || self.arena.capacity() > SPARE_MAX_ARENA {
            return;
        }
        let arena_initialized = Initialized::of(&self.arena);
        let mut spare = Buffers {
            arena: std::mem::take(&mut self.arena),
            arena_initialized,
            responses: std::mem::take(&mut self.responses),
            order_rows: std::mem::take(&mut self.order_rows),
            stock_rows: std::mem::take(&mut self.stock_rows),
            location_rows: std::mem::take(&mut self.location_rows),
            region_rows: std::mem::take(&mut self.region_rows),
            events: std::mem::take(&mut self.events),
        };
        spare.arena.clear();
        spare.responses.clear();
        spare.order_rows.clear();
        spare.stock_rows.clear();
        spare.location_rows.clear();
        spare.region_rows.clear();
        spare.events.clear();
        // During thread teardown the pool may be gone: then `spare` is
        // simply freed (`Buffers` has no `Drop` of its own).
        let _ = SPARE.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                if s.outputs.len() < SPARE_OUTPUTS {
                    s.outputs.push(spare);
                }
            }
        });
    }
}

impl BatchOutput {
    pub fn bytes(&self, r: &Range<usize>) -> &[u8] {
        &self.arena[r.clone()]
    }

    /// ASCII text stored in the arena (ids, names).
    pub fn text(&self, r: &Range<usize>) -> &str {
        std::str::from_utf8(self.bytes(r)).unwrap_or("")
    }

    /// The whole `EngineBatchResult`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.arena.len() + 64 * self.responses.len());
        let seq = self.batch_seq as i64;
        put_int(&mut out, 1, seq);
        for r in &self.responses {
            let payload = self.bytes(&r.payload);
            let len = if r.code == 0 {
                int_len(3, i64::from(r.replayed)) + message_len(r.field, payload.len())
            } else {
                int_len(1, i64::from(r.code))
                    + message_len(2, payload.len())
                    + int_len(3, i64::from(r.replayed))
            };
            put_message_header(&mut out, 2, len);
            if r.code == 0 {
                put_int(&mut out, 3, i64::from(r.replayed));
                put_message(&mut out, r.field, payload);
            } else {
                put_int(&mut out, 1, i64::from(r.code));
                put_message(&mut out, 2, payload);
                put_int(&mut out, 3, i64::from(r.replayed));
            }
        }
        for o in &self.order_rows {
            put_message(&mut out, 3, self.bytes(&o.order));
        }
        self.put_changed_rows(&mut out);
        for e in &self.events {
            self.put_envelope(&mut out, 7, e);
        }
        out
    }

    /// `JournalEntry { batch_seq, events, changed_stock, changed_locations,
    /// changed_regions }`: the outbox and redo log of the batch. Orders are
    /// not repeated: every changed order's final state is in its last event.
    /// (`write_time_us`, field 3, is appended by the service.)
    pub fn journal(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_int(&mut out, 1, self.batch_seq as i64);
        for e in &self.events {
            self.put_envelope(&mut out, 2, e);
        }
        self.put_changed_rows(&mut out);
        out
    }

    /// Fields 4, 5 and 6 — `changed_stock`, `changed_locations`,
    /// `changed_regions` — which have the same numbers in `EngineBatchResult`
    /// and in `JournalEntry`.
    fn put_changed_rows(&self, out: &mut Vec<u8>) {
        let mut level = Vec::new();
        for s in &self.stock_rows {
            level.clear();
            let cell = StockCell {
                on_hand: s.on_hand,
                reserved: s.reserved,
                version: s.version,
                touch: Touch::default(),
                loc: 0,
            };
            stock_level_body(
                &mut level,
                self.text(&s.sku),
                self.text(&s.location_id),
                &cell,
            );
            put_message(out, 4, &level);
        }
        for l in &self.location_rows {
            put_message(out, 5, self.bytes(l));
        }
        for g in &self.region_rows {
            put_message(out, 6, self.bytes(g));
        }
    }

    fn put_envelope(&self, out: &mut Vec<u8>, field: u32, e: &EventRec) {
        let id = self.bytes(&e.event_id);
        let payload = self.bytes(&e.payload);
        let len =
            bytes_len(1, e.subject.len()) + bytes_len(2, id.len()) + bytes_len(3, payload.len());
        put_message_header(out, field, len);
        put_bytes(out, 1, e.subject.as_bytes());
        put_bytes(out, 2, id);
        put_bytes(out, 3, payload);
    }
}

/// The codec's [`Sink`]: encodes while the engine applies a batch.
#[derive(Debug, Default)]
pub struct ResultWriter {
    out: BatchOutput,
    scratch: Vec<u8>,
    /// Latest encoding of each changed order, by its changed-list index.
    latest: Vec<Option<OrderRowRec>>,
    /// The order carried by the current command's first order event.
    command_order: Option<Range<usize>>,
    times: TimestampMemo,
    tail: TailMemo,
    /// The initialized bytes of `out.arena`'s allocation.
    arena_initialized: Initialized,
}

impl ResultWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sized for a batch of `input_len` bytes and `commands` commands, so the
    /// arena is not regrown (and copied) while the batch is applied.
    pub fn with_capacity(input_len: usize, commands: usize) -> Self {
        let mut w = Self::default();
        // Reuse the buffers of an earlier batch of this thread, if any.
        let _ = SPARE.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                if let Some(b) = s.outputs.pop() {
                    w.out = BatchOutput {
                        batch_seq: 0,
                        arena: b.arena,
                        responses: b.responses,
                        order_rows: b.order_rows,
                        stock_rows: b.stock_rows,
                        location_rows: b.location_rows,
                        region_rows: b.region_rows,
                        events: b.events,
                    };
                    w.arena_initialized = b.arena_initialized;
                }
                w.latest = std::mem::take(&mut s.latest);
                w.scratch = std::mem::take(&mut s.scratch);
            }
        });
        w.out.arena.reserve(input_len * 4 + 4096);
        w.out.responses.reserve(commands);
        w.out.events.reserve(commands);
        w.out.order_rows.reserve(commands);
        w.latest.reserve(commands);
        w
    }

    pub fn finish(mut self, batch_seq: u64) -> BatchOutput {
        let mut latest = std::mem::take(&mut self.latest);
        latest.clear();
        let scratch = std::mem::take(&mut self.scratch);
        let _ = SPARE.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                if latest.capacity() > s.latest.capacity() {
                    s.latest = latest;
                }
                if scratch.capacity() > s.scratch.capacity() {
                    s.scratch = scratch;
                }
            }
        });
        let mut out = std::mem::take(&mut self.out);
        out.batch_seq = batch_seq;
        out
    }

    fn encode_order_row(&mut self, st: &State, o: &Order) -> OrderRowRec {
        let start = self.out.arena.len();
        let offsets = write_order_memo(&mut self.out.arena, st, o, &mut self.times, &mut self.tail);
        let len = self.out.arena.len() - start;
        self.order_row(o, start, len, offsets)
    }

    fn order_row(&self, o: &Order, start: usize, len: usize, offsets: OrderOffsets) -> OrderRowRec {
        // order_id is field 1, always first: key byte, length byte, 34 bytes.
        let id_at = start + 2;
        let (c_at, c_len) = offsets.customer_id;
        OrderRowRec {
            order_id: id_at..id_at + ORDER_ID_LEN,
            customer_id: start + c_at..start + c_at + c_len,
            status: o.status as i32,
            version: o.version,
            create_ms: o.create_ms,
            update_ms: o.update_ms,
            order: start..start + len,
        }
    }

    fn respond(&mut self, code: i32, field: u32, replayed: bool, payload: Range<usize>) {
        self.out.responses.push(ResponseRec {
            code,
            replayed,
            field,
            payload,
        });
    }

    fn respond_with<F: FnOnce(&mut Vec<u8>)>(&mut self, field: u32, replayed: bool, write: F) {
        let start = self.out.arena.len();
        write(&mut self.out.arena);
        let end = self.out.arena.len();
        self.respond(0, field, replayed, start..end);
    }

    fn write_batch_create(&mut self, st: &State, items: &[ItemResult<'_>]) {
        let start = self.out.arena.len();
        let mut item = std::mem::take(&mut self.scratch);
        for it in items {
            let request_id = it.request_id.as_bytes();
            if let Ok(key) = &it.result {
                if let Some(o) = st.orders.get(key) {
                    // The order is written in place (see `order_event`).
                    let id = order_id(o.key);
                    let (times, tail) = (&mut self.times, &mut self.tail);
                    let order_max = order_bound(st, o, times);
                    let order_width = varint_len(order_max as u64);
                    let item_max = bytes_max(1, request_id.len()) + bytes_max(2, order_max);
                    let item_width = varint_len(item_max as u64);
                    let (arena, initialized) = (&mut self.out.arena, &mut self.arena_initialized);
                    append_bounded_in(arena, initialized, bytes_max(1, item_max), |c| {
                        let item_at = c.open(1, item_width);
                        c.bytes(1, request_id);
                        let order_at = c.open(2, order_width);
                        write_order_fields(c, st, o, &id, times, tail);
                        c.close(order_at, order_width);
                        c.close(item_at, item_width);
                    });
                    continue;
                }
            }
            item.clear();
            put_bytes(&mut item, 1, request_id);
            match &it.result {
                Ok(_) => {}
                Err(e) => {
                    let mut body = Vec::new();
                    write_error(&mut body, e);
                    put_message(&mut item, 3, &body);
                }
            }
            put_message(&mut self.out.arena, 1, &item);
        }
        self.scratch = item;
        let end = self.out.arena.len();
        self.respond(0, response_field::BATCH_CREATE_ORDERS, false, start..end);
    }
}

impl Sink for ResultWriter {
    fn order_event(&mut self, st: &State, o: &Order, now_ms: i64) {
        // OrderEvent { event_id = 1, type = 2, order = 3, event_time = 4 },
        // written around the order's bytes so they serve as row and response
        // too. The order is written in place, after room for its length
        // prefix (sized from a bound), which is filled in afterwards.
        let id = order_id(o.key);
        let digits = decimal_len(o.version.unsigned_abs());
        let id_len = ORDER_ID_LEN + 1 + digits;

        let (times, tail) = (&mut self.times, &mut self.tail);
        let order_max = order_bound(st, o, times);
        let order_width = varint_len(order_max as u64);
        let status = o.status as i64;
        let payload_max =
            bytes_max(1, id_len) + INT_FIELD_MAX + bytes_max(3, order_max) + TIMESTAMP_FIELD_MAX;
        let arena = &mut self.out.arena;
        let payload_start = arena.len();
        let initialized = &mut self.arena_initialized;
        let (order_at, order_len, offsets) =
            append_bounded_in(arena, initialized, payload_max, |c| {
                c.event_id(&id, o.version, digits);
                c.int(2, status);
                let prefix_at = c.open(3, order_width);
                let offsets = write_order_fields(c, st, o, &id, times, tail);
                let order_at = c.close(prefix_at, order_width);
                let order_len = c.pos - order_at;
                c.timestamp(4, times.get(now_ms));
                (order_at, order_len, offsets)
            });
        // The event id is short: its key and length are one byte each.
        let id_range = payload_start + 2..payload_start + 2 + id_len;
        let payload = payload_start..arena.len();

        let row = self.order_row(o, payload_start + order_at, order_len, offsets);
        if self.command_order.is_none() {
            self.command_order = Some(row.order.clone());
        }
        let index = o.touch.index as usize;
        if index == self.latest.len() {
            // An order's first change in the batch (the usual case).
            self.latest.push(Some(row));
        } else {
            if self.latest.len() < index {
                self.latest.resize(index + 1, None);
            }
            self.latest[index] = Some(row);
        }
        self.out.events.push(EventRec {
            subject: o.status.event_subject(),
            event_id: id_range,
            payload,
        });
    }

    fn stock_event(
        &mut self,
        st: &State,
        sku: SkuId,
        cell: &StockCell,
        reason: StockReason,
        now_ms: i64,
    ) {
        let sku_name = st.skus.name(sku);
        let loc_name = st.locations.name(cell.loc);
        let event_id = format!("stock:{sku_name}@{loc_name}:{}", cell.version);
        let arena = &mut self.out.arena;
        let start = arena.len();
        put_bytes(arena, 1, event_id.as_bytes());
        // The id can be longer than 127 bytes (two 64-byte names), so its
        // length prefix may take two bytes.
        let id_start = start + key_len(1) + varint_len(event_id.len() as u64);
        put_int(arena, 2, reason as i64);
        put_message_header(arena, 3, stock_level_len(sku_name, loc_name, cell));
        stock_level_body(arena, sku_name, loc_name, cell);
        put_timestamp(arena, 4, self.times.get(now_ms));
        let end = arena.len();
        self.out.events.push(EventRec {
            subject: "inventory.v1.stock_changed",
            event_id: id_start..id_start + event_id.len(),
            payload: start..end,
        });
    }

    fn command_done(&mut self, st: &State, outcome: Outcome<'_>) {
        use response_field as f;
        let command_order = self.command_order.take();
        match outcome {
            Outcome::OrderEvent => {
                let payload = command_order.unwrap_or(0..0);
                self.respond(0, f::ORDER, false, payload);
            }
            Outcome::Replay(key) => match st.orders.get(&key) {
                Some(o) => {
                    let row = self.encode_order_row(st, o);
                    self.respond(0, f::ORDER, true, row.order);
                }
                None => self.respond(0, f::ORDER, true, 0..0),
            },
            Outcome::BatchCreate(items) => self.write_batch_create(st, &items),
            Outcome::Stock(sku, loc) => {
                self.respond_with(f::STOCK, false, |b| write_stock_level(b, st, sku, loc))
            }
            Outcome::Location(loc) => {
                self.respond_with(f::LOCATION, false, |b| write_location(b, st, loc))
            }
            Outcome::Region(region) => {
                self.respond_with(f::REGION, false, |b| write_region(b, st, region))
            }
            Outcome::Reconcile(report) => {
                self.respond_with(f::RECONCILE, false, |b| write_reconcile(b, st, &report))
            }
            Outcome::Expired(n) => {
                self.respond_with(f::EXPIRE_RESERVATIONS, false, |b| put_int(b, 1, n))
            }
            Outcome::Error(e) => {
                let start = self.out.arena.len();
                write_error(&mut self.out.arena, &e);
                let end = self.out.arena.len();
                self.respond(e.code, 0, false, start..end);
            }
        }
    }

    fn mark(&self) -> usize {
        self.out.events.len()
    }

    fn rollback_to(&mut self, mark: usize) {
        // The arena keeps the abandoned bytes (nothing refers to them);
        // only the events are forgotten.
        self.out.events.truncate(mark);
        self.command_order = None;
    }

    fn batch_done(&mut self, st: &State, log: &BatchLog) {
        for (index, key) in log.changed_orders.iter().enumerate() {
            let row = self.latest.get_mut(index).and_then(Option::take);
            let row = match row {
                Some(r) => r,
                None => match st.orders.get(key) {
                    Some(o) => self.encode_order_row(st, o),
                    None => continue,
                },
            };
            self.out.order_rows.push(row);
        }
        // The SKU entries were last read early in the batch and are likely
        // out of the cache by now: load them a few rows ahead.
        const AHEAD: usize = 16;
        for &(sku, _) in log.changed_stock.iter().take(AHEAD) {
            st.skus.prefetch_entry(sku);
        }
        // The rows' names, written as one run into room reserved for the
        // longest names (a short copy per name instead of a `memcpy` call
        // and a capacity check).
        let names_max =
            log.changed_stock.len() * (st.skus.max_name_len() + st.locations.max_name_len());
        let base = self.out.arena.len();
        let rows = &mut self.out.stock_rows;
        let (arena, initialized) = (&mut self.out.arena, &mut self.arena_initialized);
        append_bounded_in(arena, initialized, names_max, |c| {
            for (i, (&(sku, loc), cell)) in
                log.changed_stock.iter().zip(&log.stock_values).enumerate()
            {
                if let Some(&(ahead, _)) = log.changed_stock.get(i + AHEAD) {
                    st.skus.prefetch_entry(ahead);
                }
                let sku_at = base + c.pos;
                c.raw(st.skus.name(sku).as_bytes());
                let loc_at = base + c.pos;
                c.raw(st.locations.name(loc).as_bytes());
                rows.push(StockRowRec {
                    sku: sku_at..loc_at,
                    location_id: loc_at..base + c.pos,
                    on_hand: cell.on_hand,
                    reserved: cell.reserved,
                    version: cell.version,
                });
            }
        });
        for &loc in &log.changed_locations {
            let start = self.out.arena.len();
            write_location(&mut self.out.arena, st, loc);
            let end = self.out.arena.len();
            self.out.location_rows.push(start..end);
        }
        for &region in &log.changed_regions {
            let start = self.out.arena.len();
            write_region(&mut self.out.arena, st, region);
            let end = self.out.arena.len();
            self.out.region_rows.push(start..end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::write_order_id;

    #[test]
    fn varint_len_matches_the_encoding() {
        let mut values = vec![0u64, u64::MAX, (-1i64) as u64];
        for bits in 0..64 {
            values.extend([(1u64 << bits) - 1, 1u64 << bits, (1u64 << bits) + 1]);
        }
        for v in values {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(varint_len(v), buf.len(), "{v}");
        }
    }

    #[test]
    fn order_id_is_o_dash_and_32_lowercase_hex_digits() {
        let mut keys = vec![0u128, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210];
        let mut x = 0x9e37_79b9_7f4a_7c15_u128;
        for _ in 0..1000 {
            x = x.wrapping_mul(0x2545_f491_4f6c_dd1d_2545_f491_4f6c_dd1d) ^ (x >> 61);
            keys.push(x);
        }
        for key in keys {
            let mut id = [0u8; ORDER_ID_LEN];
            write_order_id(key, &mut id);
            assert_eq!(std::str::from_utf8(&id).unwrap(), format!("o-{key:032x}"));
            assert_eq!(order_id(key), id, "{key:x}");
        }
    }

    #[test]
    fn cursor_fields_match_the_vec_writers() {
        let text: Vec<u8> = (0..300u32).map(|i| b'a' + (i % 26) as u8).collect();
        for field in [1, 2, 15, 16, 17, 300] {
            for n in 0..text.len() {
                let v = &text[..n];
                let mut expected = Vec::new();
                put_bytes(&mut expected, field, v);
                assert_eq!(bytes_len(field, n), expected.len());
                let mut got = Vec::new();
                append_bounded(&mut got, expected.len(), |c| c.bytes(field, v));
                assert_eq!(got, expected, "field {field}, {n} bytes");
            }
            let mut ints = vec![0, 1, -1, i64::MIN, i64::MAX];
            for bits in 0..63 {
                ints.extend([(1i64 << bits) - 1, 1i64 << bits, -(1i64 << bits)]);
            }
            for v in ints {
                let mut expected = Vec::new();
                put_int(&mut expected, field, v);
                assert_eq!(int_len(field, v), expected.len());
                let mut got = Vec::new();
                append_bounded(&mut got, expected.len(), |c| c.int(field, v));
                assert_eq!(got, expected, "field {field}, {v}");
            }
        }
    }

    /// The straightforward encoding the memo replaces.
    fn timestamp_field(field: u32, ms: i64) -> Vec<u8> {
        let (s, n) = timestamp_parts(ms);
        let mut body = Vec::new();
        put_int(&mut body, 1, s);
        put_int(&mut body, 2, n);
        let mut out = Vec::new();
        put_message(&mut out, field, &body);
        out
    }

    #[test]
    fn memoised_timestamps_match_the_direct_encoding() {
        let instants = [
            0,
            1,
            -1,
            999,
            1000,
            -999,
            -1000,
            -1001,
            1_700_000_000_123,
            1_700_000_000_000,
            -1_234_567,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ];
        let mut memo = TimestampMemo::default();
        // Every instant after every other, so that hits and misses (and
        // both entries) are exercised.
        for &a in &instants {
            for &b in &instants {
                for ms in [a, b, a, a, b] {
                    let expected = timestamp_field(13, ms);
                    assert_eq!(memo.field_len(13, ms), expected.len(), "{ms}");
                    let mut cursor_out = Vec::new();
                    append_bounded(&mut cursor_out, expected.len(), |c| {
                        c.timestamp(13, memo.get(ms))
                    });
                    assert_eq!(cursor_out, expected, "{ms}");
                    let mut vec_out = Vec::new();
                    put_timestamp(&mut vec_out, 13, memo.get(ms));
                    assert_eq!(vec_out, expected, "{ms}");
                }
            }
        }
    }

    #[test]
    fn open_and_close_write_canonical_lengths_at_every_width() {
        // Bodies around each varint width boundary, in placeholders of
        // every width that can hold their length.
        let lens = [
            0usize,
            1,
            126,
            127,
            128,
            129,
            16382,
            16383,
            16384,
            16385,
            1 << 21,
        ];
        for &len in &lens {
            let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut expected = Vec::new();
            put_bytes(&mut expected, 1, b"x");
            put_message(&mut expected, 9, &body);
            put_int(&mut expected, 2, 7);
            for width in varint_len(len as u64)..=4 {
                let mut got = Vec::new();
                let max = 3 + 1 + width + len + 2;
                let body_at = append_bounded(&mut got, max, |c| {
                    c.bytes(1, b"x");
                    let at = c.open(9, width);
                    c.raw(&body);
                    let body_at = c.close(at, width);
                    c.int(2, 7);
                    body_at
                });
                assert_eq!(got, expected, "{len} bytes in {width}");
                assert_eq!(&got[body_at..body_at + len], &body[..], "{len} in {width}");
            }
        }
    }

    /// A state with a region, a client, `skus` and `locations`.
    fn state(skus: &[String], locations: &[String]) -> State {
        let mut st = State::default();
        st.regions.intern("eu");
        st.clients.intern("client-a");
        for s in skus {
            st.skus.intern(s);
        }
        for l in locations {
            st.locations.intern(l);
        }
        st
    }

    /// An order of `lines` lines (SKU `i` on line `i`), each allocated at
    /// location `i % locations` and backordered by one unit.
    fn order(st: &State, lines: usize, customer: &str, reason: &str) -> Order {
        let locations = st.locations.len() as u32;
        let allocations: Vec<Allocation> = (0..lines as u32)
            .map(|i| Allocation {
                line: i,
                loc: i % locations,
                quantity: 2,
            })
            .collect();
        Order::new(OrderInit {
            key: 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            client: 0,
            text: OrderText::new("req-1", customer),
            region: 0,
            lines: (0..lines as u32)
                .map(|i| Line {
                    sku: i,
                    quantity: 3 + i as i32 * 1000,
                    unit_price_minor: 250,
                })
                .collect(),
            currency: *b"EUR",
            policy: 3,
            status: Status::Allocated,
            version: 2,
            allocations: &allocations,
            backorders: (0..lines as u32)
                .map(|i| Backorder {
                    line: i,
                    quantity: 1,
                })
                .collect(),
            total_minor: 750,
            create_ms: 1_700_000_000_123,
            update_ms: 1_700_000_000_456,
            expire_ms: Some(1_700_000_900_123),
            status_reason: match reason {
                "" => StatusReason::None,
                r => StatusReason::Custom(r.into()),
            },
            queue_seq: 0,
            touch: Touch::default(),
        })
    }

    /// The straightforward encoding of `o`: every embedded message built
    /// in its own buffer, then copied in after its length.
    fn reference_order(st: &State, o: &Order) -> Vec<u8> {
        let mut id = [0u8; ORDER_ID_LEN];
        write_order_id(o.key, &mut id);
        let currency: &[u8] = &o.currency;
        let mut out = Vec::new();
        put_bytes(&mut out, 1, &id);
        put_bytes(&mut out, 2, o.request_id().as_bytes());
        put_bytes(&mut out, 3, o.customer_id().as_bytes());
        put_bytes(&mut out, 4, st.regions.name(o.region).as_bytes());
        for line in &o.lines {
            let mut m = Vec::new();
            put_bytes(&mut m, 1, st.skus.name(line.sku).as_bytes());
            put_int(&mut m, 2, i64::from(line.quantity));
            put_int(&mut m, 3, line.unit_price_minor);
            put_bytes(&mut m, 4, currency);
            put_message(&mut out, 5, &m);
        }
        put_int(&mut out, 6, i64::from(o.policy));
        put_int(&mut out, 7, o.status as i64);
        put_int(&mut out, 8, o.version);
        for a in o.allocations() {
            let mut m = Vec::new();
            put_int(&mut m, 1, i64::from(a.line));
            put_bytes(&mut m, 2, line_sku(st, o, a.line));
            put_bytes(&mut m, 3, st.locations.name(a.loc).as_bytes());
            put_int(&mut m, 4, i64::from(a.quantity));
            put_message(&mut out, 9, &m);
        }
        for b in &o.backorders {
            let mut m = Vec::new();
            put_int(&mut m, 1, i64::from(b.line));
            put_bytes(&mut m, 2, line_sku(st, o, b.line));
            put_int(&mut m, 3, i64::from(b.quantity));
            put_message(&mut out, 10, &m);
        }
        put_int(&mut out, 11, o.total_minor);
        put_bytes(&mut out, 12, currency);
        out.extend(timestamp_field(13, o.create_ms));
        out.extend(timestamp_field(14, o.update_ms));
        if let Some(at) = o.expire_ms() {
            out.extend(timestamp_field(15, at));
        }
        put_bytes(&mut out, 16, o.status_reason().as_bytes());
        put_bytes(&mut out, 17, st.clients.name(o.client).as_bytes());
        out
    }

    /// Checks every writer of an order against [`reference_order`]:
    /// alone (the row), in an OrderEvent and in a BatchCreateOrders item.
    /// Returns the size of the order and of the item body.
    fn check_order(st: &mut State, o: Order) -> (usize, usize) {
        let now = 1_700_000_000_999;
        let expected = reference_order(st, &o);
        let mut got = Vec::new();
        let offsets = write_order(&mut got, st, &o);
        assert_eq!(got, expected, "order");
        let (c_at, c_len) = offsets.customer_id;
        assert_eq!(&got[c_at..c_at + c_len], o.customer_id().as_bytes());

        let event = reference_event(st, &o, now);
        let event_id = reference_event_id(&o);
        let mut item = Vec::new();
        put_bytes(&mut item, 1, o.request_id().as_bytes());
        put_message(&mut item, 2, &expected);
        let mut batch = Vec::new();
        put_message(&mut batch, 1, &item);

        let key = o.key;
        st.orders.insert(key, o);
        let o = st.orders.get(&key).unwrap();
        let mut w = ResultWriter::new();
        w.order_event(st, o, now);
        w.command_done(st, Outcome::OrderEvent);
        let items = vec![ItemResult {
            request_id: o.request_id(),
            result: Ok(key),
        }];
        w.write_batch_create(st, &items);
        let out = w.finish(1);
        let e = &out.events[0];
        assert_eq!(out.bytes(&e.payload), &event[..], "event");
        assert_eq!(out.text(&e.event_id), event_id);
        assert_eq!(out.bytes(&out.responses[0].payload), &expected[..], "row");
        assert_eq!(out.bytes(&out.responses[1].payload), &batch[..], "item");
        (expected.len(), item.len())
    }

    /// `make(n)` for the smallest `n` whose order (`.0`) or item body
    /// (`.1`) of [`check_order`] is `target` bytes, checking every order
    /// on the way; panics if no `n` up to `max` hits it.
    fn hit(target: usize, item: bool, max: usize, mut make: impl FnMut(usize) -> (State, Order)) {
        for n in 0..=max {
            let (mut st, o) = make(n);
            let (order, body) = check_order(&mut st, o);
            let size = if item { body } else { order };
            if size == target {
                return;
            }
            assert!(size < target, "{target} skipped at {n}: {size}");
        }
        panic!("{target} not reached");
    }

    #[test]
    fn orders_at_the_varint_boundaries_match_the_straightforward_encoding() {
        let skus: Vec<String> = (0..100).map(|i| format!("sku-{i:03}")).collect();
        let locations = vec!["loc-a".to_owned(), "loc-b".to_owned()];
        let short = state(&skus, &locations);
        // An order of one line without allocations, and a customer id of
        // n bytes: 127 / 128 bytes of order and of batch item.
        let small = |n: usize| {
            let mut o = order(&short, 1, &"c".repeat(n), "");
            o.set_allocations(&[]);
            o.backorders.clear();
            o.set_expire_ms(None);
            // Empty timestamps, so that the smallest is under 126 bytes.
            o.create_ms = 0;
            o.update_ms = 0;
            (short.clone(), o)
        };
        for target in [126, 127, 128, 129] {
            hit(target, false, 200, small);
            hit(target, true, 200, small);
        }
        // 16383 / 16384 bytes: 100 lines of 64-byte SKUs, 40 of them
        // allocated at 64-byte locations, and a status reason of n bytes.
        let long_skus: Vec<String> = (0..100).map(|i| format!("{i:0>64}")).collect();
        let long_locations = vec!["l".repeat(64), "m".repeat(64)];
        let long = state(&long_skus, &long_locations);
        let big = |n: usize| {
            let mut o = order(&long, 100, "cust", &"r".repeat(n));
            let first: Vec<Allocation> = o.allocations().take(40).collect();
            o.set_allocations(&first);
            o.backorders.clear();
            (long.clone(), o)
        };
        let base = reference_order(&long, &big(0).1).len();
        assert!(base < 16383 - 200, "{base}");
        let from = 16383 - 200 - base;
        for target in [16382, 16383, 16384, 16385] {
            hit(target, false, 400, |n| big(from + n));
            hit(target, true, 400, |n| big(from + n));
        }
        // Orders whose bound is just within the limit (their item's bound
        // needs a 3-byte length: the item is moved back) or just past it
        // (the exact size is used).
        let mut times = TimestampMemo::default();
        let few = |n: usize| {
            let mut o = order(&long, 50, "cust", &"r".repeat(n));
            let first: Vec<Allocation> = o.allocations().take(30).collect();
            o.set_allocations(&first);
            o.backorders.truncate(5);
            o
        };
        let mut bounds = Vec::new();
        for n in 0..20_000 {
            let o = few(n);
            let bound = order_bound(&long, &o, &mut times);
            if (ORDER_BOUND_LIMIT - 4..=ORDER_BOUND_LIMIT + 4).contains(&bound) {
                bounds.push(bound);
                check_order(&mut long.clone(), o);
            }
        }
        assert!(bounds.contains(&ORDER_BOUND_LIMIT), "{bounds:?}");
        assert!(bounds.iter().any(|&b| b > ORDER_BOUND_LIMIT), "{bounds:?}");
    }

    /// Small values (the fast paths) and any value (their fallbacks).
    fn mixed_i64() -> impl proptest::strategy::Strategy<Value = i64> {
        use proptest::prelude::*;
        prop_oneof![0i64..200, 0i64..(1 << 22), any::<i64>()]
    }

    fn mixed_i32() -> impl proptest::strategy::Strategy<Value = i32> {
        use proptest::prelude::*;
        prop_oneof![0i32..200, 0i32..(1 << 22), any::<i32>()]
    }

    use proptest::prelude::prop_oneof;

    /// `"<order id>:<version>"`.
    fn reference_event_id(o: &Order) -> String {
        let mut id = [0u8; ORDER_ID_LEN];
        write_order_id(o.key, &mut id);
        format!("{}:{}", std::str::from_utf8(&id).unwrap(), o.version)
    }

    /// The OrderEvent of `o` at `now`, from [`reference_order`].
    fn reference_event(st: &State, o: &Order, now: i64) -> Vec<u8> {
        let mut event = Vec::new();
        put_bytes(&mut event, 1, reference_event_id(o).as_bytes());
        put_int(&mut event, 2, o.status as i64);
        put_message(&mut event, 3, &reference_order(st, o));
        event.extend(timestamp_field(4, now));
        event
    }

    #[test]
    fn a_memoised_tail_is_not_copied_into_a_region_without_room_for_its_block() {
        let key = TailKey::of(&order(&state(&[], &[]), 0, "c", ""));
        let mut memo = TailMemo::default();
        memo.remember(key, &[1, 2, 3]);
        for room in [0, 1, TAIL_BLOCK - 1, TAIL_BLOCK, TAIL_BLOCK + 1] {
            let mut buf = vec![0u8; room];
            let mut c = Cursor {
                buf: &mut buf,
                pos: 0,
            };
            let copied = memo.copy_to(&mut c, &key);
            assert_eq!(copied, room >= TAIL_BLOCK, "{room}");
            assert_eq!(c.pos, if copied { 3 } else { 0 }, "{room}");
        }
        // Another key, or none, is not copied even with room.
        let mut buf = vec![0u8; 2 * TAIL_BLOCK];
        let mut c = Cursor {
            buf: &mut buf,
            pos: 0,
        };
        let mut other = key.unwrap();
        other.update_ms += 1;
        assert!(!memo.copy_to(&mut c, &Some(other)));
        assert!(!memo.copy_to(&mut c, &None));
        // A tail longer than the block is forgotten, not kept.
        memo.remember(key, &[7; TAIL_BLOCK + 1]);
        assert!(!memo.copy_to(&mut c, &key));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Every fast path of [`write_order_fields`] (short lines,
        /// allocations and backorders; the scalar runs) against the
        /// straightforward encoding, on names and values on both sides of
        /// their limits.
        #[test]
        fn fast_paths_match_the_straightforward_encoding(
            sku_lens in proptest::collection::vec(0usize..140, 1..4),
            loc_lens in proptest::collection::vec(1usize..140, 1..3),
            lines in proptest::collection::vec((0u32..4, mixed_i32(), mixed_i64()), 1..5),
            allocations in proptest::collection::vec((0u32..6, 0u32..3, mixed_i32()), 0..5),
            backorders in proptest::collection::vec((0u32..6, mixed_i32()), 0..3),
            policy in mixed_i32(),
            status in 1i32..=7,
            // Not negative: the event id holds the version's digits
            // without a sign (as it always has), where the reference
            // event id above would have one.
            version in prop_oneof![0i64..200, 0i64..(1 << 22), 0..i64::MAX],
            total in mixed_i64(),
        ) {
            // Distinct names: the SKU index in front of its padding.
            let skus: Vec<String> =
                sku_lens.iter().enumerate().map(|(i, &n)| format!("{i}{}", "s".repeat(n))).collect();
            let locations: Vec<String> =
                loc_lens.iter().enumerate().map(|(i, &n)| format!("{i}{}", "l".repeat(n))).collect();
            let mut st = state(&skus, &locations);
            let mut o = order(&st, 0, "cust", "");
            let sku_count = skus.len() as u32;
            o.lines = lines
                .iter()
                .map(|&(sku, quantity, unit_price_minor)| Line {
                    sku: sku % sku_count,
                    quantity,
                    unit_price_minor,
                })
                .collect();
            let loc_count = locations.len() as u32;
            let allocations: Vec<Allocation> = allocations
                .iter()
                .map(|&(line, loc, quantity)| Allocation { line, loc: loc % loc_count, quantity })
                .collect();
            o.set_allocations(&allocations);
            o.backorders = backorders
                .iter()
                .map(|&(line, quantity)| Backorder { line, quantity })
                .collect();
            o.policy = policy;
            o.status = Status::from_i32(status).unwrap();
            o.version = version;
            o.total_minor = total;
            check_order(&mut st, o);
        }

        /// Orders written one after another by one writer, whose tails
        /// (times, status reason) repeat or change, and whose clients
        /// and sizes vary: memoised tails (copied) and written ones match
        /// the straightforward encoding, in the events and in the items.
        #[test]
        fn memoised_order_tails_match_the_straightforward_encoding(
            // Few instants, so that consecutive orders often share them.
            orders in proptest::collection::vec(
                (0usize..2, 0usize..2, 0usize..3, 0usize..6, 0u32..3, 0usize..4),
                1..16,
            ),
        ) {
            let instants = [1_700_000_000_000i64, -5];
            let skus: Vec<String> = (0..4).map(|i| format!("sku-{i}")).collect();
            let mut st = state(&skus, &["loc-a".to_owned(), "loc-b".to_owned()]);
            st.clients.intern("client-b");
            st.clients.intern(&"k".repeat(130));
            let now = 1_700_000_000_999;
            let mut w = ResultWriter::new();
            let mut expected = Vec::new();
            let mut keys = Vec::new();
            for (i, &(create, update, expire, reason, client, lines)) in orders.iter().enumerate() {
                let mut o = order(&st, lines, "cust", "");
                o.key = i as u128 + 1;
                o.create_ms = instants[create];
                o.update_ms = instants[update];
                o.set_expire_ms(expire.checked_sub(1).map(|e| instants[e]));
                o.set_status_reason(match reason {
                    0 => StatusReason::None,
                    1 => StatusReason::InsufficientStock,
                    2 => StatusReason::CancelledByClient,
                    3 => StatusReason::ReservationExpired,
                    4 => StatusReason::Custom("x".into()),
                    _ => StatusReason::Custom("r".repeat(200).into()),
                });
                o.client = client;
                expected.push((reference_event(&st, &o, now), reference_order(&st, &o)));
                keys.push(o.key);
                st.orders.insert(o.key, o);
                w.order_event(&st, st.orders.get(&(i as u128 + 1)).unwrap(), now);
            }
            let items: Vec<ItemResult<'_>> = keys
                .iter()
                .map(|&key| ItemResult {
                    request_id: st.orders.get(&key).unwrap().request_id(),
                    result: Ok(key),
                })
                .collect();
            w.write_batch_create(&st, &items);
            let out = w.finish(1);
            let mut batch = Vec::new();
            for (i, (event, order)) in expected.iter().enumerate() {
                proptest::prop_assert_eq!(out.bytes(&out.events[i].payload), &event[..], "event {}", i);
                let mut item = Vec::new();
                put_bytes(&mut item, 1, b"req-1");
                put_message(&mut item, 2, order);
                put_message(&mut batch, 1, &item);
            }
            proptest::prop_assert_eq!(out.bytes(&out.responses[0].payload), &batch[..]);
        }
    }

    #[test]
    fn orders_with_names_beyond_the_limits_match_the_straightforward_encoding() {
        // Names only restored snapshots can bring in: the bound grows with
        // the longest name, or gives way to the exact size.
        for len in [98, 99, 127, 128, 300, 20_000] {
            let skus: Vec<String> = (0..3).map(|i| format!("{i}{}", "s".repeat(len))).collect();
            let locations = vec!["x".to_owned(), "y".repeat(len)];
            let mut st = state(&skus, &locations);
            st.clients.intern(&"k".repeat(len));
            for lines in [1, 3] {
                for reason in ["", "CANCELLED", &"r".repeat(len)] {
                    let mut o = order(&st, lines, &"c".repeat(len), reason);
                    o.client = 1;
                    check_order(&mut st, o.clone());
                    // A free line, and lines past the short-int fast path.
                    o.lines[0].unit_price_minor = 0;
                    if lines > 1 {
                        o.lines[1].quantity = 1 << 21;
                        o.lines[2].unit_price_minor = -5;
                    }
                    check_order(&mut st, o.clone());
                    o.client = 0;
                    let mut allocations: Vec<Allocation> = o.allocations().collect();
                    allocations[0].loc = 0;
                    allocations[0].line = 7; // out of range: no SKU
                    o.set_allocations(&allocations);
                    check_order(&mut st, o);
                }
            }
        }
    }
}
