//! Validation of a create body (docs/engine.md, "Validation").

use super::*;
use crate::domain::ids::active_currency_index;

/// Validation of a create body, every violation in the spec's order.
///
/// Nearly every body is valid, so a check that only answers "valid" runs
/// first; the walk that describes each violation runs only when it says no
/// (and then decides everything on its own, so the violations are exactly
/// its own).
#[inline]
pub fn validate_create(v: &mut Violations, req: &CreateIn<'_>, lines: &[LineIn<'_>]) {
    if !create_is_valid(req, lines) {
        create_violations(v, req, lines);
    }
}

/// Longest order whose duplicate SKUs [`create_is_valid`] looks for (by
/// comparing every pair); longer ones go to [`create_violations`].
const PAIRWISE_DUPLICATE_CHECK_LINES: usize = 16;

// The order total of valid lines fits a u64: no overflow check is needed
// while summing it.
const _: () = assert!(
    (MAX_QUANTITY_PER_LINE as u128)
        * (MAX_UNIT_PRICE_MINOR as u128)
        * (MAX_LINES_PER_ORDER as u128)
        <= u64::MAX as u128
);

/// True when [`create_violations`] would find nothing. May say false for a
/// valid body (an order longer than [`PAIRWISE_DUPLICATE_CHECK_LINES`]),
/// never true for an invalid one. Each line's currency is compared with the
/// first line's bytes, so only the first one is looked up. The ids are
/// checked only when the decoder has not checked them
/// ([`CreateIn::ids_checked`]).
#[inline(always)]
fn create_is_valid(req: &CreateIn<'_>, lines: &[LineIn<'_>]) -> bool {
    let head_valid = (req.ids_checked || req.ids_valid(lines))
        & (0..=3).contains(&req.policy)
        & (lines.len().wrapping_sub(1) < PAIRWISE_DUPLICATE_CHECK_LINES);
    let Some(first) = lines.first() else {
        return false;
    };
    if !head_valid || active_currency_index(first.currency).is_none() {
        return false;
    }
    let Some(currency) = three_byte_code(first.currency.as_bytes()) else {
        return false;
    };
    // Amounts, currencies and the total first, then the SKUs: two short
    // loops keep fewer values live than one long one.
    let mut total: u64 = 0;
    for line in lines {
        let quantity_valid = (1..=MAX_QUANTITY_PER_LINE).contains(&line.quantity);
        let price_valid = (0..=MAX_UNIT_PRICE_MINOR).contains(&line.unit_price_minor);
        let same_currency = three_byte_code(line.currency.as_bytes()) == Some(currency);
        if !(quantity_valid & price_valid & same_currency) {
            return false;
        }
        // In range, so non-negative and the product fits (see above).
        total += line.quantity as u64 * line.unit_price_minor as u64;
    }
    if total > MAX_ORDER_TOTAL_MINOR as u64 {
        return false;
    }
    // Every pair once, as plain index loops: each pair costs a length
    // comparison, and two word comparisons for equal lengths.
    for j in 1..lines.len() {
        let sku = lines[j].sku;
        for earlier in &lines[..j] {
            if same_sku(earlier.sku, sku) {
                return false;
            }
        }
    }
    true
}

/// A three-byte currency code as one number (two loads), `None` for any
/// other length: comparing two codes is one comparison.
#[inline(always)]
fn three_byte_code(code: &[u8]) -> Option<u32> {
    match *code {
        [a, b, c] => Some(u32::from(u16::from_le_bytes([a, b])) | u32::from(c) << 16),
        _ => None,
    }
}

/// Every violation of a create body, in the spec's order.
#[cold]
#[inline(never)]
fn create_violations(v: &mut Violations, req: &CreateIn<'_>, lines: &[LineIn<'_>]) {
    v.id("request_id", req.request_id, MAX_ID_LEN);
    v.id("customer_id", req.customer_id, MAX_ID_LEN);
    v.id("region", req.region, MAX_REGION_LEN);
    if lines.is_empty() {
        v.add("lines", "at least one line is required");
    } else if lines.len() > MAX_LINES_PER_ORDER {
        v.add("lines", format!("at most {MAX_LINES_PER_ORDER} lines"));
    }
    let mut amounts_valid = true;
    let first_currency = lines
        .first()
        .and_then(|l| active_currency_index(l.currency));
    // Whether some line has an active currency other than the first line's;
    // the violations themselves are added after the duplicate SKUs.
    let mut currencies_differ = false;
    for (i, line) in lines.iter().enumerate() {
        if let Some(d) = crate::domain::ids::id_violation(line.sku, MAX_ID_LEN) {
            v.add(format!("lines[{i}].sku"), d);
        }
        if !(1..=MAX_QUANTITY_PER_LINE).contains(&line.quantity) {
            amounts_valid = false;
            v.add(
                format!("lines[{i}].quantity"),
                format!("must be between 1 and {MAX_QUANTITY_PER_LINE}"),
            );
        }
        if !(0..=MAX_UNIT_PRICE_MINOR).contains(&line.unit_price_minor) {
            amounts_valid = false;
            v.add(
                format!("lines[{i}].unit_price_minor"),
                format!("must be between 0 and {MAX_UNIT_PRICE_MINOR}"),
            );
        }
        match active_currency_index(line.currency) {
            // Equal indexes are equal codes; an inactive first currency is
            // `None`, which differs from every active one, as its code does.
            Some(index) => currencies_differ |= first_currency != Some(index),
            None => v.add(
                format!("lines[{i}].currency"),
                "must be an active ISO 4217 currency code",
            ),
        }
    }
    // Duplicate SKUs (a map only for long orders: most have a few lines).
    if lines.len() <= PAIRWISE_DUPLICATE_CHECK_LINES {
        for j in 1..lines.len() {
            if let Some(i) = (0..j).find(|&i| same_sku(lines[i].sku, lines[j].sku)) {
                v.add(
                    format!("lines[{j}].sku"),
                    format!("duplicate sku, first at lines[{i}]"),
                );
            }
        }
    } else {
        let mut first: FxHashMap<&str, usize> = FxHashMap::default();
        for (j, line) in lines.iter().enumerate() {
            match first.get(line.sku) {
                Some(&i) => v.add(
                    format!("lines[{j}].sku"),
                    format!("duplicate sku, first at lines[{i}]"),
                ),
                None => {
                    first.insert(line.sku, j);
                }
            }
        }
    }
    if let (true, Some(first)) = (currencies_differ, lines.first()) {
        for (j, line) in lines.iter().enumerate().skip(1) {
            if is_active_currency(line.currency) && line.currency != first.currency {
                v.add(
                    format!("lines[{j}].currency"),
                    format!(
                        "all lines must use the currency of lines[0] ({})",
                        first.currency
                    ),
                );
            }
        }
    }
    if !(0..=3).contains(&req.policy) {
        v.add(
            "policy",
            format!("unknown allocation policy {}", req.policy),
        );
    }
    if amounts_valid {
        let total: i128 = lines
            .iter()
            .map(|l| i128::from(l.quantity) * i128::from(l.unit_price_minor))
            .sum();
        if total > i128::from(MAX_ORDER_TOTAL_MINOR) {
            v.add(
                "lines",
                format!("order total exceeds {MAX_ORDER_TOTAL_MINOR} minor units"),
            );
        }
    }
}

/// `a == b`, without a call to memcmp for the SKUs of 8 to 16 bytes that
/// most orders have: two overlapping 8-byte words hold all their bytes.
#[inline(always)]
fn same_sku(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (8..=16).contains(&n) {
        let word =
            |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    a == b
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{
        create_is_valid, create_violations, CreateIn, LineIn, Violations, MAX_ORDER_TOTAL_MINOR,
        MAX_QUANTITY_PER_LINE, MAX_UNIT_PRICE_MINOR, PAIRWISE_DUPLICATE_CHECK_LINES,
    };

    /// Identifiers: mostly valid, sometimes empty, too long or with a byte
    /// outside the charset.
    fn arb_id() -> impl Strategy<Value = String> {
        prop_oneof![
            40 => "[a-c0-2:._-]{1,12}",
            1 => Just(String::new()),
            1 => "[a-z]{30,70}",
            1 => "[a-z]{31,33}",
            1 => "[a-c]{0,3}[ /@é][a-c]{0,3}",
        ]
    }

    fn arb_amount(max: i64) -> impl Strategy<Value = i64> {
        prop_oneof![
            150 => 1..=1000i64,
            10 => 1..=max,
            1 => Just(max),
            1 => Just(max + 1),
            1 => -2i64..=0,
            1 => any::<i64>(),
        ]
    }

    fn arb_line() -> impl Strategy<Value = (String, i64, i64, String)> {
        (
            prop_oneof![4 => "sku-[0-9]{1,2}", 1 => arb_id()],
            arb_amount(MAX_QUANTITY_PER_LINE),
            arb_amount(MAX_UNIT_PRICE_MINOR),
            prop_oneof![
                150 => Just("EUR".to_owned()),
                1 => Just("USD".to_owned()),
                1 => Just("XXX".to_owned()),
                1 => "[A-Z]{0,4}",
            ],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The quick check says "valid" exactly when the full walk finds
        /// nothing (for the orders it checks pairwise; longer ones always
        /// take the walk).
        #[test]
        fn quick_check_agrees_with_the_violations(
            request_id in arb_id(),
            customer_id in arb_id(),
            region in arb_id(),
            policy in prop_oneof![20 => 0i32..=3, 1 => any::<i32>()],
            lines in prop_oneof![
                3 => prop::collection::vec(arb_line(), 1..5),
                1 => prop::collection::vec(arb_line(), 0..18),
            ],
            long_lines in prop_oneof![
                9 => Just(Vec::new()),
                1 => prop::collection::vec(arb_line(), 1..3),
            ],
            big_total in prop::bool::weighted(0.2),
        ) {
            let mut lines = lines;
            if lines.len() > 1 && big_total {
                // Totals near MAX_ORDER_TOTAL_MINOR.
                for line in &mut lines {
                    line.1 = MAX_QUANTITY_PER_LINE;
                    line.2 = MAX_ORDER_TOTAL_MINOR / MAX_QUANTITY_PER_LINE / 2;
                }
            }
            if !long_lines.is_empty() {
                lines.extend(long_lines.iter().cycle().take(120).cloned());
            }
            let lines: Vec<LineIn<'_>> = lines
                .iter()
                .map(|(sku, quantity, unit_price_minor, currency)| LineIn {
                    sku,
                    quantity: *quantity,
                    unit_price_minor: *unit_price_minor,
                    currency,
                })
                .collect();
            let mut req = CreateIn {
                request_id: &request_id,
                customer_id: &customer_id,
                region: &region,
                lines: 0..lines.len() as u32,
                policy,
                ids_checked: false,
            };
            let mut v = Violations::default();
            create_violations(&mut v, &req, &lines);
            let quick = create_is_valid(&req, &lines);
            if quick {
                prop_assert!(v.is_empty(), "{:?}", v);
            } else if lines.len() <= PAIRWISE_DUPLICATE_CHECK_LINES {
                prop_assert!(!v.is_empty());
            }
            // What the decoder sets when it found every id valid: the same
            // answer, without checking them again.
            req.ids_checked = req.ids_valid(&lines);
            prop_assert_eq!(create_is_valid(&req, &lines), quick);
        }

        #[test]
        fn same_sku_is_string_equality(
            a in "[ab]{0,20}",
            b in "[ab]{0,20}",
        ) {
            prop_assert_eq!(super::same_sku(&a, &b), a == b);
            prop_assert!(super::same_sku(&a, &a.clone()));
        }
    }
}
