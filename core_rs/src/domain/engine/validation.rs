//! Validation of a create body (docs/engine.md, "Validation").

use super::*;
use crate::domain::ids::active_currency_index;

/// Validation of a create body, every violation in the spec's order.
pub fn validate_create(v: &mut Violations, req: &CreateIn<'_>, lines: &[LineIn<'_>]) {
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
    if lines.len() <= 16 {
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

    proptest! {
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
