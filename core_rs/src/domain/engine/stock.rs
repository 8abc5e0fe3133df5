//! SetStock / AdjustStock, UpsertLocation, ConfigureRegion.

use super::*;

impl Engine {
    /// SetStock (`set = Some(on_hand)`) or AdjustStock (`delta`).
    pub(super) fn change_stock<'a, S: Sink>(
        &mut self,
        sku_name: &str,
        location_id: &str,
        set: Option<i64>,
        delta: i64,
        now: i64,
        sink: &mut S,
    ) -> Result<Outcome<'a>, CommandError> {
        let loc = self
            .state
            .locations
            .get(location_id)
            .filter(|&l| self.state.location_row(l).is_some())
            .ok_or_else(|| CommandError::location_not_found(location_id))?;
        let existing = self
            .state
            .skus
            .get(sku_name)
            .and_then(|s| self.state.skus.value(s).cell(loc).copied());
        let (old_on_hand, reserved) = existing.map_or((0, 0), |c| (c.on_hand, c.reserved));
        let new_on_hand = match set {
            Some(v) => v,
            None => old_on_hand + delta,
        };
        if new_on_hand > MAX_ON_HAND {
            return Err(CommandError::invalid(vec![
                crate::domain::error::FieldViolation {
                    field: "delta".to_owned(),
                    description: format!("on_hand would exceed {MAX_ON_HAND}"),
                },
            ]));
        }
        if new_on_hand < reserved {
            return Err(CommandError::new(
                CODE_FAILED_PRECONDITION,
                "STOCK_BELOW_RESERVED",
                format!("on_hand {new_on_hand} would be below reserved {reserved}"),
            ));
        }
        let sku = self.state.skus.intern(sku_name);
        let cell = self.write_stock(sku, loc, |c| c.on_hand = new_on_hand);
        let reason = if set.is_some() {
            StockReason::Set
        } else {
            StockReason::Adjusted
        };
        sink.stock_event(&self.state, sku, &cell, reason, now);
        if new_on_hand > old_on_hand {
            self.serve_backorders(sku, loc, now, sink);
        }
        Ok(Outcome::Stock(sku, loc))
    }

    pub(super) fn upsert_location<'a>(
        &mut self,
        l: &LocationIn<'_>,
    ) -> Result<Outcome<'a>, CommandError> {
        let region = self
            .state
            .regions
            .get(l.region)
            .filter(|&r| self.state.region_row(r).is_some())
            .ok_or_else(|| CommandError::region_not_found(l.region))?;
        let loc = self.state.locations.intern(l.location_id);
        let prior = *self.state.locations.value(loc);
        if let Some(p) = prior {
            if p.region != region {
                return Err(CommandError::new(
                    CODE_FAILED_PRECONDITION,
                    "LOCATION_REGION_IMMUTABLE",
                    format!(
                        "location {} is in region {}; its region cannot change",
                        l.location_id,
                        self.state.regions.name(p.region)
                    ),
                ));
            }
        }
        self.touch_location(loc);
        let touch = match self.state.location_row(loc) {
            Some(r) => r.touch,
            None => self.fresh_touch(self.log.changed_locations.len()),
        };
        *self.state.locations.value_mut(loc) = Some(LocationRow {
            region,
            priority: l.priority,
            touch,
        });
        let ranked = &mut self.state.regions.value_mut(region).ranked_locs;
        if !ranked.contains(&loc) {
            ranked.push(loc);
        }
        self.state.rank_region_locations(region);
        Ok(Outcome::Location(loc))
    }

    pub(super) fn configure_region<'a>(&mut self, r: &RegionIn<'_>) -> Outcome<'a> {
        let region = self.state.regions.intern(r.region);
        self.touch_region(region);
        let touch = match self.state.region_row(region) {
            Some(row) => row.touch,
            None => self.fresh_touch(self.log.changed_regions.len()),
        };
        self.state.regions.value_mut(region).row = Some(RegionRow {
            strategy: r.strategy,
            ttl_seconds: r.reservation_ttl_seconds,
            touch,
        });
        Outcome::Region(region)
    }
}
