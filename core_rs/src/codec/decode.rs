//! EngineBatch bytes → borrowed domain commands.
//!
//! The fast path parses the wire format directly and borrows every string
//! from the input (no allocation per order). Anything it does not handle the
//! simple way — a sub-message or oneof field repeated (protobuf merges those),
//! groups, malformed input — falls back to prost, whose result is then
//! borrowed the same way; prost's error is the decode error.

use prost::Message;

use super::pb::orders::engine::v1 as epb;
use super::pb::orders::v1 as pb;
use crate::domain::command::{Batch, Command, CommandIn, CreateIn, LineIn, LocationIn, RegionIn};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Decodes `bytes`; `storage` keeps prost's owned decoding alive when the
/// fast path gives up.
pub fn decode_batch<'a>(
    bytes: &'a [u8],
    storage: &'a mut Option<epb::EngineBatch>,
) -> Result<Batch<'a>, DecodeError> {
    if let Ok(batch) = fast::batch(bytes) {
        return Ok(batch);
    }
    match epb::EngineBatch::decode(bytes) {
        Ok(decoded) => {
            let decoded: &'a epb::EngineBatch = storage.insert(decoded);
            Ok(from_prost(decoded))
        }
        Err(whole) => salvage(bytes, storage)
            .ok_or_else(|| DecodeError(format!("invalid EngineBatch: {whole}"))),
    }
}

/// A batch whose framing is sound but some of whose commands are not valid
/// messages: the service splices callers' request bytes into the batch
/// without decoding them, so one caller's garbage must fail only that
/// caller's command. Decodes command by command; a command that does not
/// decode becomes [`Command::Malformed`]. `None` if the framing itself is
/// broken.
fn salvage<'a>(bytes: &'a [u8], storage: &'a mut Option<epb::EngineBatch>) -> Option<Batch<'a>> {
    use prost::encoding::decode_varint;
    const WIRE_VARINT: u64 = 0;
    const WIRE_LEN: u64 = 2;
    let mut rest = bytes;
    let mut now_unix_ms = 0i64;
    let mut commands = Vec::new();
    let mut malformed = Vec::new();
    while !rest.is_empty() {
        let key = decode_varint(&mut rest).ok()?;
        match (key >> 3, key & 7) {
            (1, WIRE_VARINT) => now_unix_ms = decode_varint(&mut rest).ok()? as i64,
            (2, WIRE_LEN) => {
                let len = usize::try_from(decode_varint(&mut rest).ok()?).ok()?;
                if len > rest.len() {
                    return None;
                }
                let (command, tail) = rest.split_at(len);
                rest = tail;
                match epb::EngineCommand::decode(command) {
                    Ok(decoded) => commands.push(decoded),
                    Err(_) => {
                        malformed.push(commands.len());
                        commands.push(epb::EngineCommand::default());
                    }
                }
            }
            _ => return None,
        }
    }
    let decoded: &'a epb::EngineBatch = storage.insert(epb::EngineBatch {
        now_unix_ms,
        commands,
    });
    let mut batch = from_prost(decoded);
    for index in malformed {
        batch.commands[index].command = Command::Malformed;
    }
    Some(batch)
}

/// Borrows a prost-decoded batch as domain commands.
pub fn from_prost(b: &epb::EngineBatch) -> Batch<'_> {
    let mut batch = Batch {
        now_ms: b.now_unix_ms,
        ..Batch::default()
    };
    for c in &b.commands {
        use epb::engine_command::Command as C;
        let command = match &c.command {
            None => Command::Missing,
            Some(C::CreateOrder(r)) => Command::Create(push_create(&mut batch.lines, r)),
            Some(C::BatchCreateOrders(r)) => {
                let start = batch.creates.len() as u32;
                for item in &r.requests {
                    let create = push_create(&mut batch.lines, item);
                    batch.creates.push(create);
                }
                Command::BatchCreate {
                    requests: start..batch.creates.len() as u32,
                    error_policy: r.error_policy,
                }
            }
            Some(C::CancelOrder(r)) => Command::Cancel {
                order_id: &r.order_id,
                reason: &r.reason,
            },
            Some(C::ConfirmOrder(r)) => Command::Confirm {
                order_id: &r.order_id,
            },
            Some(C::ShipOrder(r)) => Command::Ship {
                order_id: &r.order_id,
            },
            Some(C::SetStock(r)) => Command::SetStock {
                sku: &r.sku,
                location_id: &r.location_id,
                on_hand: r.on_hand,
            },
            Some(C::AdjustStock(r)) => Command::AdjustStock {
                sku: &r.sku,
                location_id: &r.location_id,
                delta: r.delta,
            },
            Some(C::UpsertLocation(r)) => {
                Command::UpsertLocation(r.location.as_ref().map(|l| LocationIn {
                    location_id: &l.location_id,
                    region: &l.region,
                    priority: l.priority,
                }))
            }
            Some(C::ConfigureRegion(r)) => {
                Command::ConfigureRegion(r.region.as_ref().map(|g| RegionIn {
                    region: &g.region,
                    strategy: g.strategy,
                    reservation_ttl_seconds: g.reservation_ttl_seconds,
                }))
            }
            Some(C::Reconcile(r)) => Command::Reconcile {
                region: &r.region,
                repair: r.repair,
            },
            Some(C::ExpireReservations(_)) => Command::ExpireReservations,
        };
        batch.commands.push(CommandIn {
            client_id: &c.client_id,
            command,
        });
    }
    batch
}

fn push_create<'a>(lines: &mut Vec<LineIn<'a>>, r: &'a pb::CreateOrderRequest) -> CreateIn<'a> {
    let start = lines.len() as u32;
    lines.extend(r.lines.iter().map(|l| LineIn {
        sku: &l.sku,
        quantity: l.quantity,
        unit_price_minor: l.unit_price_minor,
        currency: &l.currency,
    }));
    CreateIn {
        request_id: &r.request_id,
        customer_id: &r.customer_id,
        region: &r.region,
        lines: start..lines.len() as u32,
        policy: r.policy,
    }
}

/// The zero-copy parser. `Err(())` means "let prost decide".
mod fast {
    use super::*;

    type R<T> = Result<T, ()>;

    const VARINT: u8 = 0;
    const I64: u8 = 1;
    const LEN: u8 = 2;
    const I32: u8 = 5;

    struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        fn new(buf: &'a [u8]) -> Self {
            Reader { buf, pos: 0 }
        }

        #[inline(always)]
        fn done(&self) -> bool {
            self.pos >= self.buf.len()
        }

        /// One- and two-byte varints (tags, string lengths, quantities,
        /// most prices) inline; longer ones out of line. Nothing on the
        /// hot path takes `&mut self` out of line, so that the reader can
        /// live in registers.
        #[inline(always)]
        fn varint(&mut self) -> R<u64> {
            let b0 = *self.buf.get(self.pos).ok_or(())?;
            if b0 < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b0));
            }
            match self.buf.get(self.pos + 1) {
                Some(&b1) if b1 < 0x80 => {
                    self.pos += 2;
                    Ok(u64::from(b0 & 0x7f) | u64::from(b1) << 7)
                }
                _ => {
                    let (value, end) = varint_at(self.buf, self.pos)?;
                    self.pos = end;
                    Ok(value)
                }
            }
        }

        #[inline(always)]
        fn key(&mut self) -> R<(u32, u8)> {
            let k = u32::try_from(self.varint()?).map_err(|_| ())?;
            let field = k >> 3;
            if field == 0 {
                return Err(());
            }
            Ok((field, (k & 7) as u8))
        }

        /// The tag of the next field: `field << 3 | wire type`.
        #[inline(always)]
        fn tag(&mut self) -> R<u32> {
            let tag = u32::try_from(self.varint()?).map_err(|_| ())?;
            if tag >> 3 == 0 {
                return Err(());
            }
            Ok(tag)
        }

        /// After a tag that is not one of the message's expected (field,
        /// wire type) pairs: fields `1..=last_field` are the message's own
        /// (so a different wire type is left to prost); others are skipped.
        #[inline(always)]
        fn unexpected(&mut self, tag: u32, last_field: u32) -> R<()> {
            if tag >> 3 <= last_field {
                return Err(());
            }
            self.skip((tag & 7) as u8)
        }

        #[inline(always)]
        fn bytes(&mut self) -> R<&'a [u8]> {
            let len = usize::try_from(self.varint()?).map_err(|_| ())?;
            // `pos <= buf.len()` always holds, so this cannot fail.
            let rest = self.buf.get(self.pos..).ok_or(())?;
            let slice = rest.get(..len).ok_or(())?;
            self.pos += len;
            Ok(slice)
        }

        #[inline(always)]
        fn string(&mut self, wire: u8) -> R<&'a str> {
            expect(wire, LEN)?;
            utf8(self.bytes()?)
        }

        #[inline(always)]
        fn i64(&mut self, wire: u8) -> R<i64> {
            expect(wire, VARINT)?;
            Ok(self.varint()? as i64)
        }

        #[inline(always)]
        fn i32(&mut self, wire: u8) -> R<i32> {
            Ok(self.i64(wire)? as i32)
        }

        #[inline(always)]
        fn message(&mut self, wire: u8) -> R<Reader<'a>> {
            expect(wire, LEN)?;
            Ok(Reader::new(self.bytes()?))
        }

        /// Skips an unknown field (rare: out of line).
        #[inline(always)]
        fn skip(&mut self, wire: u8) -> R<()> {
            self.pos = skip_at(self.buf, self.pos, wire)?;
            Ok(())
        }
    }

    /// The varint at `pos` and the position after it.
    #[inline(never)]
    fn varint_at(buf: &[u8], mut pos: usize) -> R<(u64, usize)> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = *buf.get(pos).ok_or(())?;
            pos += 1;
            if shift == 63 && b > 1 {
                return Err(());
            }
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok((value, pos));
            }
        }
        Err(())
    }

    /// The position after the value of wire type `wire` at `pos`.
    #[inline(never)]
    fn skip_at(buf: &[u8], pos: usize, wire: u8) -> R<usize> {
        let end = match wire {
            VARINT => return varint_at(buf, pos).map(|(_, end)| end),
            I64 => pos.checked_add(8).ok_or(())?,
            LEN => {
                let (len, start) = varint_at(buf, pos)?;
                start
                    .checked_add(usize::try_from(len).map_err(|_| ())?)
                    .ok_or(())?
            }
            I32 => pos.checked_add(4).ok_or(())?,
            _ => return Err(()),
        };
        if end > buf.len() {
            return Err(());
        }
        Ok(end)
    }

    /// `bytes` as a `str`. Nearly every string of a batch is a short ASCII
    /// id, for which a word-at-a-time ASCII check is several times cheaper
    /// than std's UTF-8 validation; anything else gets the full validation.
    #[inline(always)]
    pub(super) fn utf8(bytes: &[u8]) -> R<&str> {
        if crate::domain::ids::is_ascii(bytes) {
            // SAFETY: every byte is below 0x80, and a sequence of ASCII
            // bytes is valid UTF-8.
            Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
        } else {
            std::str::from_utf8(bytes).map_err(|_| ())
        }
    }

    fn expect(wire: u8, want: u8) -> R<()> {
        if wire == want {
            Ok(())
        } else {
            Err(())
        }
    }

    pub(super) fn batch(bytes: &[u8]) -> R<Batch<'_>> {
        let mut batch = Batch::default();
        // Rough sizes (a create is ~100 bytes, a line ~30) to avoid regrowth.
        batch.commands.reserve(bytes.len() / 96);
        batch.lines.reserve(bytes.len() / 32);
        let mut r = Reader::new(bytes);
        while !r.done() {
            let (field, wire) = r.key()?;
            match field {
                1 => batch.now_ms = r.i64(wire)?,
                2 => {
                    let c = command(&mut r.message(wire)?, &mut batch)?;
                    batch.commands.push(c);
                }
                _ => r.skip(wire)?,
            }
        }
        Ok(batch)
    }

    fn command<'a>(r: &mut Reader<'a>, batch: &mut Batch<'a>) -> R<CommandIn<'a>> {
        let mut client_id = "";
        let mut command: Option<Command<'a>> = None;
        while !r.done() {
            let (field, wire) = r.key()?;
            if field == 1 {
                client_id = r.string(wire)?;
                continue;
            }
            let parsed = match field {
                10 => Command::Create(create(&mut r.message(wire)?, &mut batch.lines)?),
                11 => batch_create(&mut r.message(wire)?, batch)?,
                12 => {
                    let mut m = r.message(wire)?;
                    let (mut order_id, mut reason) = ("", "");
                    while !m.done() {
                        match m.key()? {
                            (1, w) => order_id = m.string(w)?,
                            (2, w) => reason = m.string(w)?,
                            (_, w) => m.skip(w)?,
                        }
                    }
                    Command::Cancel { order_id, reason }
                }
                13 | 14 => {
                    let mut m = r.message(wire)?;
                    let mut order_id = "";
                    while !m.done() {
                        match m.key()? {
                            (1, w) => order_id = m.string(w)?,
                            (_, w) => m.skip(w)?,
                        }
                    }
                    if field == 13 {
                        Command::Confirm { order_id }
                    } else {
                        Command::Ship { order_id }
                    }
                }
                20 | 21 => {
                    let mut m = r.message(wire)?;
                    let (mut sku, mut location_id, mut amount) = ("", "", 0i64);
                    while !m.done() {
                        match m.key()? {
                            (1, w) => sku = m.string(w)?,
                            (2, w) => location_id = m.string(w)?,
                            (3, w) => amount = m.i64(w)?,
                            (_, w) => m.skip(w)?,
                        }
                    }
                    if field == 20 {
                        Command::SetStock {
                            sku,
                            location_id,
                            on_hand: amount,
                        }
                    } else {
                        Command::AdjustStock {
                            sku,
                            location_id,
                            delta: amount,
                        }
                    }
                }
                22 => {
                    let mut m = r.message(wire)?;
                    let mut location = None;
                    while !m.done() {
                        match m.key()? {
                            (1, w) => {
                                if location.is_some() {
                                    return Err(()); // repeated: protobuf merges
                                }
                                let mut l = m.message(w)?;
                                let mut loc = LocationIn {
                                    location_id: "",
                                    region: "",
                                    priority: 0,
                                };
                                while !l.done() {
                                    match l.key()? {
                                        (1, w) => loc.location_id = l.string(w)?,
                                        (2, w) => loc.region = l.string(w)?,
                                        (3, w) => loc.priority = l.i32(w)?,
                                        (_, w) => l.skip(w)?,
                                    }
                                }
                                location = Some(loc);
                            }
                            (_, w) => m.skip(w)?,
                        }
                    }
                    Command::UpsertLocation(location)
                }
                23 => {
                    let mut m = r.message(wire)?;
                    let mut region = None;
                    while !m.done() {
                        match m.key()? {
                            (1, w) => {
                                if region.is_some() {
                                    return Err(());
                                }
                                let mut g = m.message(w)?;
                                let mut reg = RegionIn {
                                    region: "",
                                    strategy: 0,
                                    reservation_ttl_seconds: 0,
                                };
                                while !g.done() {
                                    match g.key()? {
                                        (1, w) => reg.region = g.string(w)?,
                                        (2, w) => reg.strategy = g.i32(w)?,
                                        (3, w) => reg.reservation_ttl_seconds = g.i64(w)?,
                                        (_, w) => g.skip(w)?,
                                    }
                                }
                                region = Some(reg);
                            }
                            (_, w) => m.skip(w)?,
                        }
                    }
                    Command::ConfigureRegion(region)
                }
                24 => {
                    let mut m = r.message(wire)?;
                    let (mut region, mut repair) = ("", false);
                    while !m.done() {
                        match m.key()? {
                            (1, w) => region = m.string(w)?,
                            (2, w) => repair = m.i64(w)? != 0,
                            (_, w) => m.skip(w)?,
                        }
                    }
                    Command::Reconcile { region, repair }
                }
                30 => {
                    let mut m = r.message(wire)?;
                    while !m.done() {
                        let (_, w) = m.key()?;
                        m.skip(w)?;
                    }
                    Command::ExpireReservations
                }
                _ => {
                    r.skip(wire)?;
                    continue;
                }
            };
            if command.is_some() {
                // A second oneof member (or the same one again, which
                // protobuf merges): leave it to prost.
                return Err(());
            }
            command = Some(parsed);
        }
        Ok(CommandIn {
            client_id,
            command: command.unwrap_or(Command::Missing),
        })
    }

    fn batch_create<'a>(m: &mut Reader<'a>, batch: &mut Batch<'a>) -> R<Command<'a>> {
        let start = batch.creates.len() as u32;
        let mut error_policy = 0;
        while !m.done() {
            match m.key()? {
                (1, w) => {
                    let c = create(&mut m.message(w)?, &mut batch.lines)?;
                    batch.creates.push(c);
                }
                (2, w) => error_policy = m.i32(w)?,
                (_, w) => m.skip(w)?,
            }
        }
        Ok(Command::BatchCreate {
            requests: start..batch.creates.len() as u32,
            error_policy,
        })
    }

    const fn tag(field: u32, wire: u8) -> u32 {
        field << 3 | wire as u32
    }

    /// A CreateOrderRequest. The hot path of the decoder: fields are
    /// dispatched on the whole tag, so that the expected (field, wire type)
    /// pairs cost one comparison.
    fn create<'a>(m: &mut Reader<'a>, lines: &mut Vec<LineIn<'a>>) -> R<CreateIn<'a>> {
        const REQUEST_ID: u32 = tag(1, LEN);
        const CUSTOMER_ID: u32 = tag(2, LEN);
        const REGION: u32 = tag(3, LEN);
        const LINE: u32 = tag(4, LEN);
        const POLICY: u32 = tag(5, VARINT);
        let start = lines.len() as u32;
        let mut c = CreateIn {
            request_id: "",
            customer_id: "",
            region: "",
            lines: start..start,
            policy: 0,
        };
        while !m.done() {
            match m.tag()? {
                REQUEST_ID => c.request_id = utf8(m.bytes()?)?,
                CUSTOMER_ID => c.customer_id = utf8(m.bytes()?)?,
                REGION => c.region = utf8(m.bytes()?)?,
                LINE => lines.push(line(&mut Reader::new(m.bytes()?))?),
                POLICY => c.policy = m.varint()? as i32,
                other => m.unexpected(other, 5)?,
            }
        }
        c.lines.end = lines.len() as u32;
        Ok(c)
    }

    /// An OrderLine.
    #[inline(always)]
    fn line<'a>(l: &mut Reader<'a>) -> R<LineIn<'a>> {
        const SKU: u32 = tag(1, LEN);
        const QUANTITY: u32 = tag(2, VARINT);
        const UNIT_PRICE_MINOR: u32 = tag(3, VARINT);
        const CURRENCY: u32 = tag(4, LEN);
        let mut line = LineIn {
            sku: "",
            quantity: 0,
            unit_price_minor: 0,
            currency: "",
        };
        while !l.done() {
            match l.tag()? {
                SKU => line.sku = utf8(l.bytes()?)?,
                QUANTITY => line.quantity = l.varint()? as i64,
                UNIT_PRICE_MINOR => line.unit_price_minor = l.varint()? as i64,
                CURRENCY => line.currency = utf8(l.bytes()?)?,
                other => l.unexpected(other, 4)?,
            }
        }
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn utf8_accepts_exactly_what_std_accepts(
            bytes in prop::collection::vec(prop_oneof![4 => 0u8..0x80, 1 => any::<u8>()], 0..40)
        ) {
            prop_assert_eq!(super::fast::utf8(&bytes).ok(), std::str::from_utf8(&bytes).ok());
        }

        #[test]
        fn utf8_of_strings(s in "\\PC{0,20}") {
            prop_assert_eq!(super::fast::utf8(s.as_bytes()), Ok(s.as_str()));
        }
    }
}
