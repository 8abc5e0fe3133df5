//! Identifiers: validation, order-id derivation, ISO 4217 codes and the
//! string interner that turns SKU / location / region / client names into
//! dense `u32` indexes.

use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use super::hash_index::{prefetch, HashIndex};

/// True when `value` is a valid identifier of at most `max_len` bytes: the
/// check of [`id_violation`] without the description, cheap enough to run
/// inline on every identifier of every command.
#[inline(always)]
pub fn is_valid_id(value: &str, max_len: usize) -> bool {
    is_valid_id_bytes(value.as_bytes(), max_len)
}

/// [`is_valid_id`] on bytes not yet known to be UTF-8: an identifier is
/// ASCII, so the decoder checks its ids with this instead of a UTF-8 check.
#[inline(always)]
pub fn is_valid_id_bytes(value: &[u8], max_len: usize) -> bool {
    // Ids of 8 to 16 bytes (most of them) first, in one range check; the
    // limits are constants of 16 or more, so that test folds away.
    #[cfg(target_arch = "x86_64")]
    if max_len >= 16 && (8..=16).contains(&value.len()) {
        return is_id_16(words(value));
    }
    // `len - 1 < max_len` is `1 <= len <= max_len` in one compare (an empty
    // value wraps to `usize::MAX`).
    value.len().wrapping_sub(1) < max_len && is_id(value)
}

/// The description of a violated identifier rule, or `None` when `value` is a
/// valid identifier of at most `max_len` bytes.
#[inline]
pub fn id_violation(value: &str, max_len: usize) -> Option<String> {
    if is_valid_id(value, max_len) {
        None
    } else {
        invalid_id_violation(value, max_len)
    }
}

/// [`id_violation`] after its fast check failed (rare: out of line).
#[cold]
#[inline(never)]
pub(crate) fn invalid_id_violation(value: &str, max_len: usize) -> Option<String> {
    if value.is_empty() {
        Some("is required".to_owned())
    } else if value.len() > max_len {
        Some(format!("must be at most {max_len} bytes"))
    } else if !value.bytes().all(is_id_byte) {
        Some("must contain only the characters [A-Za-z0-9._:-]".to_owned())
    } else {
        None
    }
}

/// Identifier bytes `[A-Za-z0-9._:-]` as a lookup table.
const ID_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-');
        b += 1;
    }
    table
};

fn is_id_byte(b: u8) -> bool {
    ID_BYTES[b as usize]
}

/// True when every byte is an identifier byte (`is_id_byte`). A table
/// lookup per byte costs 3-5 instructions a byte; SSE2 (part of the x86_64
/// baseline) checks 16 bytes in about 20, and most ids are at most 16 bytes.
#[cfg(target_arch = "x86_64")]
#[inline]
fn is_id(bytes: &[u8]) -> bool {
    let n = bytes.len();
    if n > 16 {
        let last = &bytes[n - 16..];
        return bytes.chunks_exact(16).all(|chunk| is_id_16(words(chunk))) && is_id_16(words(last));
    }
    if n < 4 {
        // Short ids (regions such as "eu"): three table lookups cover bytes
        // 0, n/2 and n-1, every byte of a 1-3 byte id, for less than
        // gathering them into a vector.
        return n == 0
            || is_id_byte(bytes[0]) & is_id_byte(bytes[n / 2]) & is_id_byte(bytes[n - 1]);
    }
    is_id_16(words(bytes))
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn is_id(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| ok & is_id_byte(b))
}

/// Two little-endian words that together hold every byte of `bytes` (1 to
/// 16 of them) and no other byte: overlapping when `bytes` is not 16 long,
/// repeating some bytes when it is shorter than 8.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn words(bytes: &[u8]) -> (u64, u64) {
    let n = bytes.len();
    debug_assert!((1..=16).contains(&n));
    let load8 = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let load4 = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if n >= 8 {
        (load8(0), load8(n - 8))
    } else if n >= 4 {
        let w = u64::from(load4(0)) | u64::from(load4(n - 4)) << 32;
        (w, w)
    } else {
        // Bytes 0, n/2 and n-1 are every byte of a 1-3 byte string.
        let three =
            u64::from(bytes[0]) | u64::from(bytes[n / 2]) << 8 | u64::from(bytes[n - 1]) << 16;
        let w = three | three << 24 | three << 48;
        (w, w)
    }
}

/// True when all 16 bytes of `(low, high)` are identifier bytes
/// `[A-Za-z0-9._:-]`. A byte is in `lo..=hi` iff `x - lo` (wrapping) is at
/// most `hi - lo` unsigned, i.e. iff `(x + 0x80 - lo) as i8 < hi - lo + 1 -
/// 0x80`: one add and one signed compare per range, exact for all 256 byte
/// values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn is_id_16((low, high): (u64, u64)) -> bool {
    use std::arch::x86_64::*;
    // Wrapping byte arithmetic on purpose: the casts only reinterpret bits.
    const fn shift(lo: u8) -> i8 {
        0x80u8.wrapping_sub(lo) as i8
    }
    const fn limit(lo: u8, hi: u8) -> i8 {
        (hi - lo + 1).wrapping_sub(0x80) as i8
    }
    #[allow(unused_unsafe)] // safe functions since Rust 1.87; unsafe before
    // SAFETY: SSE2 is enabled on every x86_64 target, and these intrinsics
    // only compute on values (no memory access).
    let mask = unsafe {
        let in_range = |v: __m128i, lo: u8, hi: u8| {
            _mm_cmplt_epi8(
                _mm_add_epi8(v, _mm_set1_epi8(shift(lo))),
                _mm_set1_epi8(limit(lo, hi)),
            )
        };
        let v = _mm_set_epi64x(high as i64, low as i64);
        // `| 0x20` folds A-Z onto a-z and maps no other byte into a-z.
        let letter = in_range(_mm_or_si128(v, _mm_set1_epi8(0x20)), b'a', b'z');
        let digit_or_colon = in_range(v, b'0', b':');
        let dash_or_dot = in_range(v, b'-', b'.');
        let underscore = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'_' as i8));
        _mm_movemask_epi8(_mm_or_si128(
            _mm_or_si128(letter, digit_or_colon),
            _mm_or_si128(dash_or_dot, underscore),
        ))
    };
    mask == 0xffff
}

/// The high bit of every byte of a word.
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// True when every byte is ASCII (< 0x80). Strings of at most 16 bytes
/// (nearly all of a batch's) without a loop: the OR of overlapping loads
/// that cover every byte.
#[inline(always)]
pub(crate) fn is_ascii(bytes: &[u8]) -> bool {
    let n = bytes.len();
    let any = if n >= 8 {
        if n > 16 {
            return bytes.is_ascii();
        }
        u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
            | u64::from_le_bytes(bytes[n - 8..].try_into().expect("8 bytes"))
    } else if n >= 4 {
        u64::from(
            u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"))
                | u32::from_le_bytes(bytes[n - 4..].try_into().expect("4 bytes")),
        )
    } else if n > 0 {
        // Bytes 0, n/2 and n-1 are every byte of a 1-3 byte string.
        u64::from(bytes[0] | bytes[n / 2] | bytes[n - 1])
    } else {
        0
    };
    any & HIGH_BITS == 0
}

/// `dst.copy_from_slice(src)` (so `dst` must be as long as `src`); names of
/// up to 16 bytes (most ids and names) as two overlapping fixed-size moves,
/// which cost less than a call to `memcpy`. The encoder's unchecked stores
/// use it too.
#[inline(always)]
pub fn copy_name(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if dst.len() != n {
        // The same panic as `copy_from_slice`: a caller's bug, not input.
        dst.copy_from_slice(src);
        return;
    }
    match n {
        8..=16 => {
            dst[..8].copy_from_slice(&src[..8]);
            dst[n - 8..].copy_from_slice(&src[n - 8..]);
        }
        4..=7 => {
            dst[..4].copy_from_slice(&src[..4]);
            dst[n - 4..].copy_from_slice(&src[n - 4..]);
        }
        1..=3 => {
            // Bytes 0, n/2 and n-1 are every byte of a 1-3 byte string.
            dst[0] = src[0];
            dst[n / 2] = src[n / 2];
            dst[n - 1] = src[n - 1];
        }
        _ => dst.copy_from_slice(src),
    }
}

/// `xxh3_128(client_id ‖ 0x00 ‖ request_id)`, seed 0. The separator makes
/// ("a", "bc") and ("ab", "c") different keys.
pub fn order_key(client_id: &str, request_id: &str) -> u128 {
    let mut buf = [0u8; 2 * 64 + 1];
    let total = client_id.len() + 1 + request_id.len();
    if total <= buf.len() {
        copy_name(&mut buf[..client_id.len()], client_id.as_bytes());
        buf[client_id.len()] = 0;
        copy_name(&mut buf[client_id.len() + 1..total], request_id.as_bytes());
        xxh3_128(&buf[..total])
    } else {
        let mut v = Vec::with_capacity(total);
        v.extend_from_slice(client_id.as_bytes());
        v.push(0);
        v.extend_from_slice(request_id.as_bytes());
        xxh3_128(&v)
    }
}

/// Length of a formatted order id: "o-" + 32 hex digits.
pub const ORDER_ID_LEN: usize = 34;

/// Writes "o-" + the 32 lower-case hex digits of `key` (big-endian).
pub fn write_order_id(key: u128, out: &mut [u8; ORDER_ID_LEN]) {
    /// Both hex digits of every byte value: one load per byte of the key
    /// instead of a 128-bit shift and mask per digit.
    const HEX_PAIRS: [[u8; 2]; 256] = {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut pairs = [[0u8; 2]; 256];
        let mut b = 0;
        while b < 256 {
            pairs[b] = [HEX[b >> 4], HEX[b & 0xf]];
            b += 1;
        }
        pairs
    };
    out[0] = b'o';
    out[1] = b'-';
    for (digits, byte) in out[2..].chunks_exact_mut(2).zip(key.to_be_bytes()) {
        digits.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
    }
}

pub fn format_order_id(key: u128) -> String {
    let mut buf = [0u8; ORDER_ID_LEN];
    write_order_id(key, &mut buf);
    buf.iter().map(|&b| b as char).collect()
}

/// Parses an id produced by [`format_order_id`]; anything else is `None`
/// (such an id cannot name an order of this engine).
pub fn parse_order_id(id: &str) -> Option<u128> {
    let hex = id.strip_prefix("o-")?;
    if hex.len() != 32 {
        return None;
    }
    let mut key = 0u128;
    for b in hex.bytes() {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        key = (key << 4) | u128::from(digit);
    }
    Some(key)
}

const ISO4217: &str = include_str!("../../data/iso4217.txt");

/// Number of possible three-letter upper-case codes.
const CURRENCY_CODES: usize = 26 * 26 * 26;

/// Index of a three-letter upper-case code in 0..26^3.
#[inline(always)]
const fn currency_index(code: &[u8]) -> Option<usize> {
    match code {
        [a, b, c] if a.is_ascii_uppercase() && b.is_ascii_uppercase() && c.is_ascii_uppercase() => {
            Some((*a - b'A') as usize * 676 + (*b - b'A') as usize * 26 + (*c - b'A') as usize)
        }
        _ => None,
    }
}

/// One bit per possible code, built at compile time from data/iso4217.txt
/// (one code per line, surrounding ASCII whitespace ignored, other lines
/// skipped): membership is a load, a shift and a mask, with no lazy
/// initialisation to check on every lookup.
static ACTIVE_CURRENCIES: [u64; CURRENCY_CODES / 64 + 1] = {
    let text = ISO4217.as_bytes();
    let mut bits = [0u64; CURRENCY_CODES / 64 + 1];
    let mut at = 0;
    while at < text.len() {
        let mut end = at;
        while end < text.len() && text[end] != b'\n' {
            end += 1;
        }
        let (mut first, mut last) = (at, end);
        while first < last && text[first].is_ascii_whitespace() {
            first += 1;
        }
        while last > first && text[last - 1].is_ascii_whitespace() {
            last -= 1;
        }
        if last - first == 3 {
            if let Some(i) = currency_index(&[text[first], text[first + 1], text[first + 2]]) {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        at = end + 1;
    }
    bits
};

/// True for an active ISO 4217 alphabetic code listed in data/iso4217.txt.
pub fn is_active_currency(code: &str) -> bool {
    active_currency_index(code).is_some()
}

/// A number for each active currency code (see [`is_active_currency`]);
/// two active codes are equal iff their numbers are.
#[inline]
pub fn active_currency_index(code: &str) -> Option<usize> {
    currency_index(code.as_bytes()).filter(|&i| ACTIVE_CURRENCIES[i / 64] & (1 << (i % 64)) != 0)
}

/// A name, stored inline when short (almost every id), so that comparing or
/// reading it does not chase a pointer to another cache line.
#[derive(Debug, Clone)]
enum Name {
    Inline { len: u8, bytes: [u8; INLINE_NAME] },
    Heap(Box<str>),
}

const INLINE_NAME: usize = 30;

impl Name {
    fn new(s: &str) -> Name {
        if s.len() <= INLINE_NAME {
            let mut bytes = [0u8; INLINE_NAME];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Name::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            Name::Heap(s.into())
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Name::Inline { len, bytes } => {
                let used = &bytes[..usize::from(*len)];
                // SAFETY: `used` is an exact copy of the bytes of a `&str`
                // (see `Name::new`), so it is valid UTF-8. This is read for
                // every name of every encoded order, where re-validating
                // would cost more than the rest of the lookup.
                unsafe { std::str::from_utf8_unchecked(used) }
            }
            Name::Heap(s) => s,
        }
    }
}

/// `a == b` for names: most are 8 to 16 bytes, which two overlapping 8-byte
/// loads per side compare without a call to `memcmp` (measurably cheaper in
/// the per-line SKU lookups); shorter ones (regions) by smaller loads.
#[inline]
pub fn name_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (8..=16).contains(&n) {
        let word = |s: &[u8], at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&s[at..at + 8]);
            u64::from_le_bytes(w)
        };
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    if (4..8).contains(&n) {
        // Region names and short ids: two overlapping 4-byte loads.
        let word = |s: &[u8], at: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&s[at..at + 4]);
            u32::from_le_bytes(w)
        };
        return word(a, 0) == word(b, 0) && word(a, n - 4) == word(b, n - 4);
    }
    if n < 4 {
        // Bytes 0, n / 2 and n - 1 are every byte of a 1-3 byte name.
        return n == 0 || (a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1]);
    }
    a == b
}

/// Maps names to dense indexes and keeps a value per name. Names are never
/// forgotten (an index stays valid for the engine's lifetime), so undoing a
/// batch only has to reset the values, never the indexes.
#[derive(Debug, Clone, Default)]
pub struct Interner<T> {
    index: HashIndex,
    entries: Vec<Entry<T>>,
    /// Length of the longest name interned: a bound on every name that the
    /// encoder can rely on, whatever path (validated command or restored
    /// snapshot) brought the name in.
    max_name_len: usize,
}

/// A name and its value, aligned to a cache line: an entry of 56 bytes at
/// a 56-byte stride crossed a line boundary three times in four, so the
/// one line the warm-up prefetches often missed the value (for a SKU, the
/// pointer to its stock rows, the next address in the chain of loads).
/// Entries whose value is at most 32 bytes take exactly one line.
#[derive(Debug, Clone)]
#[repr(C, align(64))]
struct Entry<T> {
    name: Name,
    value: T,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Entry<crate::domain::model::SkuEntry>>() == 64);

/// The hash the interners use for names.
pub fn name_hash(name: &str) -> u64 {
    xxh3_64(name.as_bytes())
}

impl<T: Default> Interner<T> {
    pub fn new() -> Self {
        Self {
            index: HashIndex::default(),
            entries: Vec::new(),
            max_name_len: 0,
        }
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.get_hashed(name, name_hash(name))
    }

    /// [`Interner::get`] with the hash already computed.
    pub fn get_hashed(&self, name: &str, hash: u64) -> Option<u32> {
        self.index.find(hash, |i| {
            name_eq(self.entries[i as usize].name.as_str(), name)
        })
    }

    pub fn intern(&mut self, name: &str) -> u32 {
        let hash = name_hash(name);
        if let Some(i) = self.get_hashed(name, hash) {
            return i;
        }
        let index = u32::try_from(self.entries.len()).expect("fewer than 2^32 names");
        self.entries.push(Entry {
            name: Name::new(name),
            value: T::default(),
        });
        self.index.insert(hash, index);
        self.max_name_len = self.max_name_len.max(name.len());
        index
    }

    /// No name of this interner is longer (names are never removed, so
    /// this only grows).
    pub fn max_name_len(&self) -> usize {
        self.max_name_len
    }

    /// Prefetch stage 1: the bucket of `hash`.
    pub fn prefetch_bucket(&self, hash: u64) {
        self.index.prefetch(hash);
    }

    /// Prefetch stage 2: the first entry whose tag matches (unconfirmed), prefetched.
    pub fn prefetch_candidate(&self, hash: u64) -> Option<u32> {
        let candidate = self.index.find(hash, |_| true)?;
        prefetch(&self.entries[candidate as usize]);
        Some(candidate)
    }

    /// Hints the CPU to load entry `index` (name and value), if it exists.
    pub fn prefetch_entry(&self, index: u32) {
        if let Some(e) = self.entries.get(index as usize) {
            prefetch(e);
        }
    }

    /// Confirms a candidate of [`Interner::prefetch_candidate`].
    pub fn is(&self, index: u32, name: &str) -> bool {
        self.entries
            .get(index as usize)
            .is_some_and(|e| name_eq(e.name.as_str(), name))
    }

    pub fn name(&self, index: u32) -> &str {
        self.entries[index as usize].name.as_str()
    }

    pub fn value(&self, index: u32) -> &T {
        &self.entries[index as usize].value
    }

    pub fn value_mut(&mut self, index: u32) -> &mut T {
        &mut self.entries[index as usize].value
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &str, &T)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u32, e.name.as_str(), &e.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_id_round_trips_and_is_lowercase_big_endian() {
        let key = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128;
        let id = format_order_id(key);
        assert_eq!(id, "o-0123456789abcdeffedcba9876543210");
        assert_eq!(parse_order_id(&id), Some(key));
        assert_eq!(parse_order_id("o-0123456789ABCDEFfedcba9876543210"), None);
        assert_eq!(parse_order_id("x-0123456789abcdeffedcba9876543210"), None);
        assert_eq!(parse_order_id("o-01"), None);
    }

    #[test]
    fn order_key_matches_hashing_the_joined_bytes() {
        assert_eq!(order_key("client", "req-1"), xxh3_128(b"client\x00req-1"));
        let long = "a".repeat(100);
        let mut joined = long.clone().into_bytes();
        joined.push(0);
        joined.extend_from_slice(long.as_bytes());
        assert_eq!(order_key(&long, &long), xxh3_128(&joined));
        // Every pair of lengths up to the limit and a little past it, with
        // distinct bytes (the 8-to-16-byte copies overlap).
        let text: String = (0..70u8).map(|i| char::from(b'0' + i % 75)).collect();
        for a in 0..=66 {
            for b in 0..=66 {
                let (client, request) = (&text[..a], &text[70 - b..]);
                let joined = [client.as_bytes(), &[0], request.as_bytes()].concat();
                assert_eq!(order_key(client, request), xxh3_128(&joined), "{a} {b}");
            }
        }
    }

    #[test]
    fn xxh3_128_of_empty_input_matches_the_reference_vector() {
        // Published test vector of XXH3_128bits(empty, seed 0).
        assert_eq!(
            format!("{:032x}", xxh3_128(b"")),
            "99aa06d3014798d86001c324468d497f"
        );
    }

    #[test]
    fn identifiers() {
        assert_eq!(id_violation("abc-1.2_3:4", 64), None);
        assert_eq!(id_violation("", 64).as_deref(), Some("is required"));
        assert_eq!(
            id_violation(&"a".repeat(65), 64).as_deref(),
            Some("must be at most 64 bytes")
        );
        assert!(id_violation("a b", 64).is_some());
        assert!(id_violation("é", 64).is_some());
    }

    #[test]
    fn name_eq_matches_string_equality() {
        let names = [
            "",
            "a",
            "b",
            "eu",
            "us",
            "apa",
            "eur",
            "wh-1",
            "wh-2",
            "sku-1",
            "cust-1",
            "cust-12",
            "sku-0000",
            "sku-00001",
            "sku-000001",
            "bench-client",
            "sku-00000000001",
            "sku-000000000001",
            "sku-0000000000001",
            "x".repeat(40).leak(),
        ];
        for a in names {
            for b in names {
                assert_eq!(name_eq(a, b), a == b, "{a:?} {b:?}");
            }
            // Same length, one byte different at every position.
            for i in 0..a.len() {
                let mut other = a.as_bytes().to_vec();
                other[i] ^= 1;
                let other = String::from_utf8(other).unwrap();
                assert!(!name_eq(a, &other), "{a:?} {other:?}");
            }
        }
    }

    #[test]
    fn words_cover_every_byte_of_every_length() {
        for len in 0..40 {
            assert!(is_ascii(&vec![b'a'; len]));
            for at in 0..len {
                let mut bytes = vec![b'a'; len];
                bytes[at] = 0x80;
                assert!(!is_ascii(&bytes), "len {len}, non-ASCII at {at}");
            }
        }
    }

    #[test]
    fn is_id_sees_every_byte_of_every_length() {
        for len in 0..40 {
            assert!(is_id(&vec![b'a'; len]));
            for at in 0..len {
                for bad in [b' ', b'/', b'@', b'[', b'`', b'{', 0x7f, 0x80, 0xff] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = bad;
                    assert!(!is_id(&bytes), "len {len}, {bad:#x} at {at}");
                }
            }
        }
    }

    #[test]
    fn is_id_agrees_with_the_table_for_every_byte_at_every_position() {
        for b in 0..=255u8 {
            for filler in [b'a', b'Z', b'0', b'-', b'_', b':', b'.'] {
                for len in 1..=17 {
                    for at in 0..len {
                        let mut bytes = vec![filler; len];
                        bytes[at] = b;
                        assert_eq!(is_id(&bytes), is_id_byte(b), "{b:#x} at {at} of {len}");
                    }
                }
            }
        }
    }

    /// Bytes that are mostly identifier bytes, with the bytes around the
    /// charset's range boundaries and non-ASCII ones mixed in.
    fn id_like_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let byte = prop_oneof![
            8 => proptest::sample::select(
                b"abcxyzABCXYZ0189-._:".to_vec()
            ),
            2 => proptest::sample::select(
                b",/;@[`{ \x00\x7f".to_vec()
            ),
            1 => any::<u8>(),
        ];
        proptest::collection::vec(byte, 0..80)
    }

    proptest::proptest! {
        #[test]
        fn is_id_is_every_byte_an_id_byte(bytes in id_like_bytes()) {
            proptest::prop_assert_eq!(is_id(&bytes), bytes.iter().all(|&b| is_id_byte(b)));
        }

        #[test]
        fn is_id_of_arbitrary_bytes(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)
        ) {
            proptest::prop_assert_eq!(is_id(&bytes), bytes.iter().all(|&b| is_id_byte(b)));
        }

        /// The decoder's check, on bytes that need not be UTF-8.
        #[test]
        fn is_valid_id_bytes_is_length_and_charset(
            bytes in id_like_bytes(),
            max_len in proptest::prop_oneof![0usize..70, proptest::strategy::Just(16usize)],
        ) {
            let expected = (1..=max_len).contains(&bytes.len())
                && bytes.iter().all(|&b| is_id_byte(b));
            proptest::prop_assert_eq!(is_valid_id_bytes(&bytes, max_len), expected);
        }

        #[test]
        fn id_violation_is_the_first_rule_broken(bytes in id_like_bytes(), max_len in 0usize..70) {
            let value = String::from_utf8_lossy(&bytes);
            let expected = if value.is_empty() {
                Some("is required".to_owned())
            } else if value.len() > max_len {
                Some(format!("must be at most {max_len} bytes"))
            } else if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)) {
                Some("must contain only the characters [A-Za-z0-9._:-]".to_owned())
            } else {
                None
            };
            proptest::prop_assert_eq!(is_valid_id(&value, max_len), expected.is_none());
            proptest::prop_assert_eq!(id_violation(&value, max_len), expected);
        }

        #[test]
        fn is_ascii_is_every_byte_below_0x80(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)
        ) {
            proptest::prop_assert_eq!(is_ascii(&bytes), bytes.iter().all(|&b| b < 0x80));
        }

        #[test]
        fn is_ascii_of_mostly_ascii_bytes(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![9 => 0u8..0x80, 1 => 0x80u8..=0xff], 0..40)
        ) {
            proptest::prop_assert_eq!(is_ascii(&bytes), bytes.iter().all(|&b| b < 0x80));
        }
    }

    #[test]
    fn currencies_are_loaded() {
        assert!(is_active_currency("USD"));
        assert!(is_active_currency("EUR"));
        assert!(is_active_currency("JPY"));
        assert!(!is_active_currency("usd"));
        assert!(!is_active_currency("XXX"));
        assert!(!is_active_currency("US"));
        assert_eq!(active_currency_index("EUR"), active_currency_index("EUR"));
        assert_ne!(active_currency_index("EUR"), active_currency_index("USD"));
        assert_eq!(active_currency_index("XXX"), None);
        let count: u32 = ACTIVE_CURRENCIES.iter().map(|w| w.count_ones()).sum();
        assert!(count > 150);
    }

    /// The compile-time table holds exactly the codes that parsing the
    /// file line by line at run time finds.
    #[test]
    fn currency_table_matches_the_file() {
        let mut bits = vec![0u64; CURRENCY_CODES / 64 + 1];
        for i in ISO4217
            .lines()
            .filter_map(|l| currency_index(l.trim().as_bytes()))
        {
            bits[i / 64] |= 1 << (i % 64);
        }
        assert_eq!(bits, ACTIVE_CURRENCIES.to_vec());
        let listed: std::collections::HashSet<&str> = ISO4217.lines().map(str::trim).collect();
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                for c in b'A'..=b'Z' {
                    let code = String::from_utf8(vec![a, b, c]).unwrap();
                    let active = is_active_currency(&code);
                    assert_eq!(active, listed.contains(code.as_str()), "{code}");
                }
            }
        }
    }

    #[test]
    fn interner_is_dense_and_stable() {
        let mut names: Interner<u8> = Interner::new();
        assert_eq!(names.intern("b"), 0);
        assert_eq!(names.intern("a"), 1);
        assert_eq!(names.intern("b"), 0);
        assert_eq!(names.get("a"), Some(1));
        assert_eq!(names.get("c"), None);
        assert_eq!(names.name(1), "a");
        let long = "x".repeat(200);
        let i = names.intern(&long);
        assert_eq!(names.name(i), long);
        assert_eq!(names.get(&long), Some(i));
    }
}
