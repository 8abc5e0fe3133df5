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
use crate::domain::ids::is_valid_id;
use crate::domain::limits::{MAX_ID_LEN, MAX_REGION_LEN};

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
            client_id_checked: is_valid_id(&c.client_id, MAX_ID_LEN),
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
    let mut create = CreateIn {
        request_id: &r.request_id,
        customer_id: &r.customer_id,
        region: &r.region,
        lines: start..lines.len() as u32,
        policy: r.policy,
        ids_checked: false,
    };
    // What the fast path finds while decoding it.
    create.ids_checked = create.ids_valid(&lines[start as usize..]);
    create
}

/// The zero-copy parser. `Err(())` means "let prost decide".
mod fast {
    use super::*;

    type R<T> = Result<T, ()>;

    const VARINT: u8 = 0;
    const I64: u8 = 1;
    const LEN: u8 = 2;
    const I32: u8 = 5;

    /// [`Reader::next_byte`] at the end of the message: no byte value, so
    /// no tag.
    const END: u32 = 0x100;

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

        /// The next byte, consumed, or [`END`] at the end of the message:
        /// a one-byte tag for the straight-line parses, which compare it
        /// with the tag they expect next (a longer tag matches none of
        /// them, and neither does `END`, so they give up on it).
        #[inline(always)]
        fn next_byte(&mut self) -> u32 {
            match self.buf.get(self.pos) {
                Some(&b) => {
                    self.pos += 1;
                    u32::from(b)
                }
                None => END,
            }
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

        /// [`Reader::string`] and whether it is a valid identifier of at
        /// most `max_len` bytes (see [`id_or_utf8`]).
        #[inline(always)]
        fn id(&mut self, wire: u8, max_len: usize) -> R<(&'a str, bool)> {
            expect(wire, LEN)?;
            id_or_utf8(self.bytes()?, max_len)
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

    /// `bytes` as a `str`, and whether it is a valid identifier of at most
    /// `max_len` bytes. Nearly every string the decoder checks this way is
    /// one, and an identifier is ASCII: one identifier check replaces both
    /// the UTF-8 check here and the identifier check of validation (see
    /// [`CreateIn::ids_checked`]).
    #[inline(always)]
    pub(super) fn id_or_utf8(bytes: &[u8], max_len: usize) -> R<(&str, bool)> {
        if crate::domain::ids::is_valid_id_bytes(bytes, max_len) {
            // SAFETY: identifier bytes are all in [A-Za-z0-9._:-], ASCII,
            // and a sequence of ASCII bytes is valid UTF-8.
            Ok((unsafe { std::str::from_utf8_unchecked(bytes) }, true))
        } else {
            not_an_id(bytes)
        }
    }

    /// [`id_or_utf8`] for a string that is not an identifier (rare: out
    /// of line).
    #[cold]
    #[inline(never)]
    fn not_an_id(bytes: &[u8]) -> R<(&str, bool)> {
        utf8(bytes).map(|s| (s, false))
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
        const NOW_UNIX_MS: u32 = tag(1, VARINT);
        const COMMAND: u32 = tag(2, LEN);
        let mut r = Reader::new(bytes);
        while !r.done() {
            // Dispatched on the whole tag, like the create parsers: the
            // expected (field, wire type) pairs cost one comparison each.
            match r.tag()? {
                NOW_UNIX_MS => batch.now_ms = r.varint()? as i64,
                COMMAND => {
                    let bytes = r.bytes()?;
                    let lines = batch.lines.len();
                    if create_command(bytes, &mut batch).is_err() {
                        batch.lines.truncate(lines);
                        let c = command(&mut Reader::new(bytes), &mut batch)?;
                        batch.commands.push(c);
                    }
                }
                other => r.unexpected(other, 2)?,
            }
        }
        Ok(batch)
    }

    /// The straight-line parse of the usual EngineCommand, a client id (if
    /// any) then a CreateOrderRequest, one-byte tags, pushed onto the
    /// batch's commands. `Err(())` for anything else; the caller then
    /// discards any lines pushed here and starts over with the general
    /// [`command`].
    #[inline(always)]
    fn create_command<'a>(bytes: &'a [u8], batch: &mut Batch<'a>) -> R<()> {
        const CLIENT_ID: u32 = tag(1, LEN);
        const CREATE_ORDER: u32 = tag(10, LEN);
        // A client id with a longer length is left to the general command.
        let ((client_id, client_id_checked), rest) = match short_len_field(bytes, CLIENT_ID as u8) {
            Some((client_id, rest)) => (id_or_utf8(client_id, MAX_ID_LEN)?, rest),
            None => (("", false), bytes),
        };
        let mut m = Reader::new(rest);
        if m.next_byte() != CREATE_ORDER {
            return Err(());
        }
        let request = m.bytes()?;
        // The request must be the command's last field; checked before
        // parsing it, so that the parse's result goes straight into the
        // vector.
        if !m.done() {
            return Err(());
        }
        // Pushed first and parsed in place: a parse result passed back by
        // value is copied several times on its way into the vector.
        let lines = batch.lines.len() as u32;
        batch.commands.push(CommandIn {
            client_id,
            client_id_checked,
            command: Command::Create(empty_create(lines)),
        });
        if let Some(CommandIn {
            command: Command::Create(c),
            ..
        }) = batch.commands.last_mut()
        {
            if create_into(request, &mut batch.lines, c).is_ok() {
                return Ok(());
            }
        }
        batch.commands.pop();
        Err(())
    }

    fn command<'a>(r: &mut Reader<'a>, batch: &mut Batch<'a>) -> R<CommandIn<'a>> {
        let (mut client_id, mut client_id_checked) = ("", false);
        let mut command: Option<Command<'a>> = None;
        while !r.done() {
            let (field, wire) = r.key()?;
            if field == 1 {
                (client_id, client_id_checked) = r.id(wire, MAX_ID_LEN)?;
                continue;
            }
            let parsed = match field {
                10 => {
                    expect(wire, LEN)?;
                    Command::Create(create(r.bytes()?, &mut batch.lines)?)
                }
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
            client_id_checked,
            command: command.unwrap_or(Command::Missing),
        })
    }

    fn batch_create<'a>(m: &mut Reader<'a>, batch: &mut Batch<'a>) -> R<Command<'a>> {
        let start = batch.creates.len() as u32;
        let mut error_policy = 0;
        while !m.done() {
            match m.key()? {
                (1, w) => {
                    expect(w, LEN)?;
                    let c = create(m.bytes()?, &mut batch.lines)?;
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

    const REQUEST_ID: u32 = tag(1, LEN);
    const CUSTOMER_ID: u32 = tag(2, LEN);
    const REGION: u32 = tag(3, LEN);
    const LINE: u32 = tag(4, LEN);
    const POLICY: u32 = tag(5, VARINT);

    const SKU: u32 = tag(1, LEN);
    const QUANTITY: u32 = tag(2, VARINT);
    const UNIT_PRICE_MINOR: u32 = tag(3, VARINT);
    const CURRENCY: u32 = tag(4, LEN);

    /// A CreateOrderRequest: the hot path of the decoder. Tries the
    /// straight-line parse of [`create_in_order`] and, if that gives up,
    /// starts over from the message start with the general loop of
    /// [`create_any_order`], so the result is always the general loop's.
    #[inline(always)]
    pub(super) fn create<'a>(bytes: &'a [u8], lines: &mut Vec<LineIn<'a>>) -> R<CreateIn<'a>> {
        let mut c = empty_create(0);
        create_into(bytes, lines, &mut c)?;
        Ok(c)
    }

    /// [`create`] into `out` (untouched when it fails).
    #[inline(never)]
    fn create_into<'a>(
        bytes: &'a [u8],
        lines: &mut Vec<LineIn<'a>>,
        out: &mut CreateIn<'a>,
    ) -> R<()> {
        let start = lines.len();
        *out = match create_in_order(bytes, lines) {
            Ok(c) => c,
            Err(()) => {
                lines.truncate(start);
                create_any_order(bytes, lines)?
            }
        };
        Ok(())
    }

    /// A CreateOrderRequest with every field at its default, whose lines
    /// will start at index `start` of the batch's lines.
    fn empty_create<'a>(start: u32) -> CreateIn<'a> {
        CreateIn {
            request_id: "",
            customer_id: "",
            region: "",
            lines: start..start,
            policy: 0,
            ids_checked: false,
        }
    }

    /// The straight-line parse of a CreateOrderRequest whose fields appear
    /// in ascending field-number order, each (but `lines`) at most once,
    /// every tag one byte, with the expected wire types and no unknown
    /// fields — what every encoder produces. Each expected tag costs one
    /// comparison. `Err(())` for anything else, including input the general
    /// loop would reject; the caller then starts over with the general loop
    /// (and discards any lines pushed here).
    #[inline(always)]
    pub(super) fn create_in_order<'a>(
        bytes: &'a [u8],
        lines: &mut Vec<LineIn<'a>>,
    ) -> R<CreateIn<'a>> {
        let mut m = Reader::new(bytes);
        let mut c = empty_create(lines.len() as u32);
        let mut tag;
        // Whether every id so far is a valid one (a missing one is not).
        let mut ids_valid;
        if let Some(head) = usual_head(bytes) {
            let (request_id, request_id_valid) = id_or_utf8(head.request_id, MAX_ID_LEN)?;
            let (customer_id, customer_id_valid) = id_or_utf8(head.customer_id, MAX_ID_LEN)?;
            let (region, region_valid) = id_or_utf8(head.region, MAX_REGION_LEN)?;
            (c.request_id, c.customer_id, c.region) = (request_id, customer_id, region);
            ids_valid = request_id_valid & customer_id_valid & region_valid;
            m.pos = bytes.len() - head.rest.len();
            tag = m.next_byte();
        } else {
            let (mut request_id_valid, mut customer_id_valid, mut region_valid) =
                (false, false, false);
            tag = m.next_byte();
            if tag == REQUEST_ID {
                (c.request_id, request_id_valid) = id_or_utf8(m.bytes()?, MAX_ID_LEN)?;
                tag = m.next_byte();
            }
            if tag == CUSTOMER_ID {
                (c.customer_id, customer_id_valid) = id_or_utf8(m.bytes()?, MAX_ID_LEN)?;
                tag = m.next_byte();
            }
            if tag == REGION {
                (c.region, region_valid) = id_or_utf8(m.bytes()?, MAX_REGION_LEN)?;
                tag = m.next_byte();
            }
            ids_valid = request_id_valid & customer_id_valid & region_valid;
        }
        while tag == LINE {
            let bytes = m.bytes()?;
            // Two pushes, so that the straight-line parse's fields go into
            // the vector from registers rather than through a merged result.
            match line_in_order(bytes) {
                Ok((line, sku_valid)) => {
                    lines.push(line);
                    ids_valid &= sku_valid;
                }
                Err(()) => {
                    let (line, sku_valid) = line_any_order(bytes)?;
                    lines.push(line);
                    ids_valid &= sku_valid;
                }
            }
            tag = m.next_byte();
        }
        if tag == POLICY {
            c.policy = m.varint()? as i32;
            tag = m.next_byte();
        }
        if tag != END {
            return Err(());
        }
        c.lines.end = lines.len() as u32;
        c.ids_checked = ids_valid;
        Ok(c)
    }

    /// The first three fields of the usual CreateOrderRequest, request_id,
    /// customer_id and region, each with a one-byte length, matched as a
    /// whole (one length check per field), and the bytes after them. `None`
    /// for anything else; `Some` holds what the field-by-field parse reads.
    #[inline(always)]
    fn usual_head(bytes: &[u8]) -> Option<UsualHead<'_>> {
        let (request_id, rest) = short_len_field(bytes, REQUEST_ID as u8)?;
        let (customer_id, rest) = short_len_field(rest, CUSTOMER_ID as u8)?;
        let (region, rest) = short_len_field(rest, REGION as u8)?;
        Some(UsualHead {
            request_id,
            customer_id,
            region,
            rest,
        })
    }

    /// What [`usual_head`] matched: three values (not yet checked as
    /// UTF-8) and the bytes after them.
    struct UsualHead<'a> {
        request_id: &'a [u8],
        customer_id: &'a [u8],
        region: &'a [u8],
        rest: &'a [u8],
    }

    /// A length-delimited field with one-byte tag `tag` and a one-byte
    /// length at the start of `bytes`: its value and the bytes after it.
    #[inline(always)]
    fn short_len_field(bytes: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let [first, len, rest @ ..] = bytes else {
            return None;
        };
        let len = usize::from(*len);
        if *first != tag || len >= 0x80 || len > rest.len() {
            return None;
        }
        Some(rest.split_at(len))
    }

    /// The general loop for a CreateOrderRequest (and its lines): any field
    /// order, repeated fields (last one wins), unknown fields. Fields are dispatched on the
    /// whole tag, so that the expected (field, wire type) pairs cost one
    /// comparison.
    #[inline(never)]
    pub(super) fn create_any_order<'a>(
        bytes: &'a [u8],
        lines: &mut Vec<LineIn<'a>>,
    ) -> R<CreateIn<'a>> {
        let mut m = Reader::new(bytes);
        let mut c = empty_create(lines.len() as u32);
        // Per field, whether its value (the last one) is a valid id.
        let (mut request_id_valid, mut customer_id_valid, mut region_valid) = (false, false, false);
        let mut skus_valid = true;
        while !m.done() {
            match m.tag()? {
                REQUEST_ID => (c.request_id, request_id_valid) = m.id(LEN, MAX_ID_LEN)?,
                CUSTOMER_ID => (c.customer_id, customer_id_valid) = m.id(LEN, MAX_ID_LEN)?,
                REGION => (c.region, region_valid) = m.id(LEN, MAX_REGION_LEN)?,
                LINE => {
                    let (line, sku_valid) = line_any_order(m.bytes()?)?;
                    lines.push(line);
                    skus_valid &= sku_valid;
                }
                POLICY => c.policy = m.varint()? as i32,
                other => m.unexpected(other, 5)?,
            }
        }
        c.lines.end = lines.len() as u32;
        c.ids_checked = request_id_valid & customer_id_valid & region_valid & skus_valid;
        Ok(c)
    }

    /// An OrderLine with every field at its default.
    const EMPTY_LINE: LineIn<'static> = LineIn {
        sku: "",
        quantity: 0,
        unit_price_minor: 0,
        currency: "",
    };

    /// The last five bytes of the usual OrderLine: the currency's tag, its
    /// length (3) and its code.
    const CURRENCY_TAG_AND_LEN: [u8; 2] = [CURRENCY as u8, 3];

    /// [`create_in_order`] for an OrderLine.
    ///
    /// The usual line ends with a three-byte currency; when its last five
    /// bytes look like one, they are taken as it and the fields before them
    /// parsed on their own, which must then end exactly where the currency
    /// starts. That is the sequential parse's answer too: it would read the
    /// same fields up to there and then the currency. (If they only look
    /// like one, the fields before them do not parse to that end and the
    /// general loop decides.)
    ///
    /// With the line, whether its SKU is a valid id (see [`id_or_utf8`]).
    #[inline(always)]
    pub(super) fn line_in_order(bytes: &[u8]) -> R<(LineIn<'_>, bool)> {
        let mut line = EMPTY_LINE;
        let mut body = bytes;
        if let [head @ .., tag, len, c0, c1, c2] = bytes {
            if [*tag, *len] == CURRENCY_TAG_AND_LEN && (c0 | c1 | c2) < 0x80 {
                let code = &bytes[bytes.len() - 3..];
                // SAFETY: three bytes below 0x80 are ASCII, so valid UTF-8.
                line.currency = unsafe { std::str::from_utf8_unchecked(code) };
                body = head;
            }
        }
        if let Some(line) = sku_and_amounts(body, line) {
            return line;
        }
        let mut l = Reader::new(body);
        let mut tag = l.next_byte();
        let mut sku_valid = false;
        if tag == SKU {
            (line.sku, sku_valid) = id_or_utf8(l.bytes()?, MAX_ID_LEN)?;
            tag = l.next_byte();
        }
        if tag == QUANTITY {
            line.quantity = l.varint()? as i64;
            tag = l.next_byte();
        }
        if tag == UNIT_PRICE_MINOR {
            line.unit_price_minor = l.varint()? as i64;
            tag = l.next_byte();
        }
        // Only when the currency was not taken from the end: a second one
        // is left to the general loop.
        if tag == CURRENCY && body.len() == bytes.len() {
            line.currency = utf8(l.bytes()?)?;
            tag = l.next_byte();
        }
        if tag != END {
            return Err(());
        }
        Ok((line, sku_valid))
    }

    /// The usual fields of a line before its currency, matched as a whole:
    /// the SKU (one-byte length) then a one-byte quantity and a price of at
    /// most four bytes (below 2^28 minor units; the standard workload's
    /// take three), nothing else. `None` when
    /// `body` is not exactly that; `Some` holds the answer of the
    /// sequential parse, which reads the same three fields.
    #[inline(always)]
    fn sku_and_amounts<'a>(body: &'a [u8], mut line: LineIn<'a>) -> Option<R<(LineIn<'a>, bool)>> {
        const QUANTITY_TAG: u8 = QUANTITY as u8;
        const PRICE_TAG: u8 = UNIT_PRICE_MINOR as u8;
        let (sku, amounts) = short_len_field(body, SKU as u8)?;
        let [QUANTITY_TAG, quantity, PRICE_TAG, ref price @ ..] = *amounts else {
            return None;
        };
        if quantity >= 0x80 {
            return None;
        }
        let price = short_varint(price)?;
        Some(id_or_utf8(sku, MAX_ID_LEN).map(|(sku, sku_valid)| {
            line.sku = sku;
            line.quantity = i64::from(quantity);
            line.unit_price_minor = price as i64;
            (line, sku_valid)
        }))
    }

    /// `bytes` as exactly one varint of one to four bytes, decoded from
    /// one little-endian word without a loop; `None` for anything
    /// else. Non-canonical encodings (such as `80 00`) decode to the value
    /// the sequential reader gives them.
    #[inline(always)]
    pub(super) fn short_varint(bytes: &[u8]) -> Option<u64> {
        // The bytes as a little-endian word (no copy call for a variable
        // length) and the continuation bits they must have: set on every
        // byte but the last.
        let (word, continuation) = match *bytes {
            [b0] => (u32::from(b0), 0),
            [b0, b1] => (u32::from_le_bytes([b0, b1, 0, 0]), 0x80),
            [b0, b1, b2] => (u32::from_le_bytes([b0, b1, b2, 0]), 0x8080),
            [b0, b1, b2, b3] => (u32::from_le_bytes([b0, b1, b2, b3]), 0x80_8080),
            _ => return None,
        };
        if word & 0x8080_8080 != continuation {
            return None;
        }
        let value = (word & 0x7f)
            | (word >> 1) & (0x7f << 7)
            | (word >> 2) & (0x7f << 14)
            | (word >> 3) & (0x7f << 21);
        Some(u64::from(value))
    }

    /// [`create_any_order`] for an OrderLine.
    #[inline(never)]
    pub(super) fn line_any_order(bytes: &[u8]) -> R<(LineIn<'_>, bool)> {
        let mut l = Reader::new(bytes);
        let mut line = EMPTY_LINE;
        let mut sku_valid = false;
        while !l.done() {
            match l.tag()? {
                SKU => (line.sku, sku_valid) = l.id(LEN, MAX_ID_LEN)?,
                QUANTITY => line.quantity = l.varint()? as i64,
                UNIT_PRICE_MINOR => line.unit_price_minor = l.varint()? as i64,
                CURRENCY => line.currency = utf8(l.bytes()?)?,
                other => l.unexpected(other, 4)?,
            }
        }
        Ok((line, sku_valid))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::sample::Index;
    use prost::Message;

    use super::pb;
    use crate::domain::command::{CreateIn, LineIn};

    fn arb_line() -> impl Strategy<Value = pb::OrderLine> {
        (
            "\\PC{0,6}",
            prop_oneof![0i64..300, any::<i64>()],
            prop_oneof![0i64..100_000, any::<i64>()],
            "\\PC{0,4}",
        )
            .prop_map(
                |(sku, quantity, unit_price_minor, currency)| pb::OrderLine {
                    sku,
                    quantity,
                    unit_price_minor,
                    currency,
                },
            )
    }

    fn arb_create() -> impl Strategy<Value = pb::CreateOrderRequest> {
        (
            "\\PC{0,6}",
            "\\PC{0,6}",
            "\\PC{0,4}",
            prop::collection::vec(arb_line(), 0..4),
            prop_oneof![0i32..3, any::<i32>()],
        )
            .prop_map(|(request_id, customer_id, region, lines, policy)| {
                pb::CreateOrderRequest {
                    request_id,
                    customer_id,
                    region,
                    lines,
                    policy,
                }
            })
    }

    /// The fields of a prost encoding (varint and length-delimited only),
    /// each with its tag.
    fn fields(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        use prost::encoding::decode_varint;
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let whole = bytes;
            let key = decode_varint(&mut bytes).unwrap();
            let value = decode_varint(&mut bytes).unwrap();
            if key & 7 == 2 {
                bytes = &bytes[value as usize..];
            }
            out.push(whole[..whole.len() - bytes.len()].to_vec());
        }
        out
    }

    fn len_field(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        prost::encoding::encode_varint(value.len() as u64, &mut out);
        out.extend_from_slice(value);
        out
    }

    type Decoded<'a> = (Result<CreateIn<'a>, ()>, Vec<LineIn<'a>>);

    fn decode_with<'a>(
        bytes: &'a [u8],
        f: impl FnOnce(&'a [u8], &mut Vec<LineIn<'a>>) -> Result<CreateIn<'a>, ()>,
    ) -> Decoded<'a> {
        // A line already there, so that line ranges start past 0.
        let mut lines = vec![LineIn {
            sku: "x",
            quantity: 1,
            unit_price_minor: 2,
            currency: "y",
        }];
        let c = f(bytes, &mut lines);
        (c, lines)
    }

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

        /// Every prost encoding takes the straight-line path, and it
        /// decodes like the general loop.
        #[test]
        fn in_order_decodes_prost_encodings(c in arb_create()) {
            let bytes = c.encode_to_vec();
            let fast = decode_with(&bytes, super::fast::create_in_order);
            let general = decode_with(&bytes, super::fast::create_any_order);
            prop_assert!(fast.0.is_ok());
            prop_assert_eq!(&fast, &general);
            let decoded = fast.0.unwrap();
            prop_assert_eq!(decoded.request_id, c.request_id.as_str());
            prop_assert_eq!(decoded.customer_id, c.customer_id.as_str());
            prop_assert_eq!(decoded.region, c.region.as_str());
            prop_assert_eq!(decoded.policy, c.policy);
            prop_assert_eq!(decoded.lines.len(), c.lines.len());
            for (l, want) in fast.1[decoded.lines.start as usize..].iter().zip(&c.lines) {
                prop_assert_eq!(l.sku, want.sku.as_str());
                prop_assert_eq!(l.quantity, want.quantity);
                prop_assert_eq!(l.unit_price_minor, want.unit_price_minor);
                prop_assert_eq!(l.currency, want.currency.as_str());
            }
        }

        /// On reordered, repeated, unknown, mistyped, non-canonical or
        /// broken fields, the straight-line path either gives up or
        /// agrees with the general loop, and `create` always agrees with
        /// the general loop.
        #[test]
        fn in_order_agrees_with_general_loop(
            c in arb_create(),
            picks in prop::collection::vec(any::<Index>(), 0..10),
            sorted in any::<bool>(),
        ) {
            // Prost's fields, in ascending order, then odd variants.
            let mut pool = fields(&c.encode_to_vec());
            for line in &c.lines {
                // The line's fields reversed, and one repeated.
                let mut line_fields = fields(&line.encode_to_vec());
                line_fields.reverse();
                let reversed = line_fields.concat();
                pool.push(len_field(0x22, &reversed));
                if let Some(first) = line_fields.last() {
                    let repeated = [first.clone(), line_fields.concat()].concat();
                    pool.push(len_field(0x22, &repeated));
                }
                // An unknown field in the line; a mistyped one.
                pool.push(len_field(0x22, &[0x48, 0x01, 0x08, 0x05]));
                pool.push(len_field(0x22, &[0x0a, 0x01, 0x61, 0x10, 0x01]));
                pool.push(len_field(0x22, &[0x12, 0x01, 0x61]));
            }
            pool.extend([
                vec![0x48, 0x07],                    // unknown varint field 9
                vec![0x52, 0x02, 0x61, 0x62],        // unknown bytes field 10
                vec![0x08, 0x01],                    // request_id as a varint
                vec![0x8a, 0x00, 0x01, 0x61],        // two-byte tag of request_id
                vec![0x12, 0x01, 0xff],              // customer_id not UTF-8
                vec![0x1a, 0x05, 0x61],              // region truncated
                vec![0x28, 0xff, 0xff, 0xff, 0xff, 0x0f], // policy, long varint
                vec![0x00],                          // field 0
                len_field(0x0a, &[b'r'; 130]),       // request_id, two-byte length
                len_field(0x1a, &[b'g'; 200]),       // region, two-byte length
                vec![0x12, 0x05, 0x61],              // customer_id truncated
                vec![0x12, 0x01],                    // customer_id, no byte
                len_field(0x22, &[]),                // an empty line
            ]);
            let mut picked: Vec<usize> = picks.iter().map(|i| i.index(pool.len())).collect();
            if sorted {
                picked.sort_unstable();
            }
            let bytes: Vec<u8> = picked.iter().flat_map(|&i| pool[i].iter().copied()).collect();
            let general = decode_with(&bytes, super::fast::create_any_order);
            let fast = decode_with(&bytes, super::fast::create_in_order);
            if fast.0.is_ok() {
                prop_assert_eq!(&fast, &general);
            }
            prop_assert_eq!(&decode_with(&bytes, super::fast::create), &general);
        }

        /// A create command laid out the usual way (client id, then the
        /// request) or not (request first, an unknown field after it, the
        /// request twice, which prost merges): decodes like prost, so the
        /// straight-line command path falls back where it must, and the
        /// lines it pushed before giving up are discarded.
        #[test]
        fn create_commands_decode_like_prost(
            c in arb_create(),
            other in arb_create(),
            client_id in "\\PC{0,4}",
            layout in 0..6u8,
        ) {
            let client = if client_id.is_empty() {
                Vec::new()
            } else {
                len_field(0x0a, client_id.as_bytes())
            };
            let create = [vec![0x52], {
                let mut v = Vec::new();
                prost::encoding::encode_varint(c.encoded_len() as u64, &mut v);
                v
            }, c.encode_to_vec()].concat();
            let create2 = len_field(0x52, &other.encode_to_vec());
            let command = match layout {
                0 => [client.clone(), create.clone()].concat(),
                1 => [create.clone(), client.clone()].concat(),
                2 => [client.clone(), create.clone(), vec![0x48, 0x01]].concat(),
                3 => [client.clone(), create.clone(), create2].concat(),
                // An unknown group in the request: only prost skips those,
                // so the fast path pushes the command and takes it back.
                4 => [
                    client.clone(),
                    len_field(0x52, &[c.encode_to_vec(), vec![0x4b, 0x4c]].concat()),
                ]
                .concat(),
                _ => [vec![0xd2, 0x00], create[1..].to_vec(), client.clone()].concat(),
            };
            // Two commands, so that a discarded line would shift the next.
            let batch = [
                len_field(0x12, &command),
                len_field(0x12, &[client, create].concat()),
            ]
            .concat();
            let prost = super::epb::EngineBatch::decode(batch.as_slice()).unwrap();
            let mut storage = None;
            let ours = super::decode_batch(&batch, &mut storage);
            prop_assert_eq!(ours, Ok(super::from_prost(&prost)));
        }
    }

    /// Strings around the identifier rules: valid ids, empty, too long
    /// for a region or for any id, a byte outside the charset, non-ASCII.
    fn arb_id_like() -> impl Strategy<Value = String> {
        prop_oneof![
            20 => "[a-z0-9._:-]{1,16}",
            2 => "[A-Z0-9]{17,40}",
            1 => Just(String::new()),
            1 => "[a-z]{31,33}",
            1 => "[a-z]{63,66}",
            1 => "[a-c]{0,4}[ /@#é€][a-c]{0,12}",
            1 => "\\PC{1,6}",
        ]
    }

    fn arb_id_like_create() -> impl Strategy<Value = pb::CreateOrderRequest> {
        (
            arb_id_like(),
            arb_id_like(),
            arb_id_like(),
            prop::collection::vec(
                (arb_id_like(), 1i64..50, 0i64..3_000_000).prop_map(
                    |(sku, quantity, unit_price_minor)| pb::OrderLine {
                        sku,
                        quantity,
                        unit_price_minor,
                        currency: "EUR".to_owned(),
                    },
                ),
                0..5,
            ),
        )
            .prop_map(
                |(request_id, customer_id, region, lines)| pb::CreateOrderRequest {
                    request_id,
                    customer_id,
                    region,
                    lines,
                    policy: 1,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// The decoder's "ids checked" flags are set exactly when the ids
        /// are valid, on every path: the straight-line parse, the general
        /// loop (fields reordered) and a batch create's items.
        #[test]
        fn ids_checked_exactly_when_the_ids_are_valid(
            c in arb_id_like_create(),
            client_id in arb_id_like(),
            reversed in any::<bool>(),
        ) {
            use crate::domain::command::Command;
            use crate::domain::ids::is_valid_id;
            use crate::domain::limits::{MAX_ID_LEN, MAX_REGION_LEN};
            let ids_valid = is_valid_id(&c.request_id, MAX_ID_LEN)
                && is_valid_id(&c.customer_id, MAX_ID_LEN)
                && is_valid_id(&c.region, MAX_REGION_LEN)
                && c.lines.iter().all(|l| is_valid_id(&l.sku, MAX_ID_LEN));
            let mut request = c.encode_to_vec();
            if reversed {
                let mut fields = fields(&request);
                fields.reverse();
                request = fields.concat();
            }
            let client = if client_id.is_empty() {
                Vec::new()
            } else {
                len_field(0x0a, client_id.as_bytes())
            };
            let create = [client.clone(), len_field(0x52, &request)].concat();
            let batch_create = [client, len_field(0x5a, &len_field(0x0a, &request))].concat();
            let batch = [len_field(0x12, &create), len_field(0x12, &batch_create)].concat();
            let decoded = super::fast::batch(&batch);
            prop_assert!(decoded.is_ok(), "the fast path decodes it");
            let decoded = decoded.unwrap();
            let client_valid = is_valid_id(&client_id, MAX_ID_LEN);
            prop_assert_eq!(decoded.commands.len(), 2);
            for command in &decoded.commands {
                prop_assert_eq!(command.client_id, client_id.as_str());
                prop_assert_eq!(command.client_id_checked, client_valid);
            }
            match &decoded.commands[0].command {
                Command::Create(req) => {
                    prop_assert_eq!(req.request_id, c.request_id.as_str());
                    prop_assert_eq!(req.ids_checked, ids_valid);
                }
                other => prop_assert!(false, "{:?}", other),
            }
            prop_assert_eq!(decoded.creates.len(), 1);
            prop_assert_eq!(decoded.creates[0].ids_checked, ids_valid);
            // And prost's path (the fallback) agrees.
            let prost = super::epb::EngineBatch::decode(batch.as_slice()).unwrap();
            prop_assert_eq!(&decoded, &super::from_prost(&prost));
        }
    }

    /// Every combination of a few encodings of each line field (missing,
    /// short, long, non-canonical, truncated, mistyped), in order: the
    /// straight-line parse gives up or agrees with the general loop, and
    /// takes the usual ones.
    #[test]
    fn line_in_order_on_a_grid_of_field_encodings() {
        let skus: Vec<Vec<u8>> = vec![
            vec![],
            len_field(0x0a, b"sku-000001"),
            len_field(0x0a, b""),
            len_field(0x0a, b"\x22\x03EUR"),
            vec![0x0a, 0x01, 0xff],
            vec![0x0a, 0x80, 0x01, b'a'],
            vec![0x0a, 0x05, b'a'],
            len_field(0x0a, &[b'a'; 130]), // a two-byte length
        ];
        let quantities: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x10, 0x01],
            vec![0x10, 0x7f],
            vec![0x10, 0x00],
            vec![0x10, 0x80, 0x01],
            vec![0x10, 0x80],
            vec![0x12, 0x00],
        ];
        let prices: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x18, 0x05],
            vec![0x18, 0x83],
            vec![0x18, 0x83, 0x01],
            vec![0x18, 0x80, 0x00],
            vec![0x18, 0xff, 0x7f],
            vec![0x18, 0x80, 0x80, 0x01],
            vec![0x18, 0x83, 0x22],
            vec![0x18, 0xd0, 0xf9, 0x17], // three bytes, as in the standard workload
            vec![0x18, 0x80, 0x80, 0x00], // non-canonical three-byte 0
            vec![0x18, 0xff, 0xff, 0xff, 0x7f], // largest four-byte price
            vec![0x18, 0x80, 0x80, 0x80, 0x80, 0x01],
            vec![0x18, 0x80, 0x80], // truncated
            vec![0x1a, 0x00],
        ];
        let currencies: Vec<Vec<u8>> = vec![
            vec![],
            len_field(0x22, b"EUR"),
            len_field(0x22, b"EU"),
            len_field(0x22, b"EURO"),
            vec![0x22, 0x03, b'E', b'U', 0xff],
            [len_field(0x22, b"USD"), len_field(0x22, b"EUR")].concat(),
            [len_field(0x22, b"EUR"), vec![0x48, 0x01]].concat(),
        ];
        let mut fast_paths = 0;
        for sku in &skus {
            for quantity in &quantities {
                for price in &prices {
                    for currency in &currencies {
                        let bytes = [
                            sku.clone(),
                            quantity.clone(),
                            price.clone(),
                            currency.clone(),
                        ]
                        .concat();
                        let general = super::fast::line_any_order(&bytes);
                        if let Ok(fast) = super::fast::line_in_order(&bytes) {
                            fast_paths += 1;
                            assert_eq!(Ok(fast), general, "{bytes:x?}");
                        }
                    }
                }
            }
        }
        assert!(fast_paths > 100, "{fast_paths}");
    }

    proptest! {
        /// The one-word varint reader takes exactly the one- to four-byte
        /// varints and reads them as prost does.
        #[test]
        fn short_varint_agrees_with_prost(
            bytes in prop::collection::vec(
                prop_oneof![any::<u8>(), 0x80u8..=0xff, Just(0x80u8), Just(0u8)],
                0..7,
            ),
        ) {
            let mut buf = bytes.as_slice();
            let prost = prost::encoding::decode_varint(&mut buf).ok().filter(|_| buf.is_empty());
            match super::fast::short_varint(&bytes) {
                Some(value) => prop_assert_eq!(Some(value), prost),
                None => prop_assert!(prost.is_none() || bytes.len() > 4),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// OrderLines made of fields in any order, repeated, mistyped or
        /// truncated, and strings whose last bytes look like a currency
        /// field: the straight-line parse either gives up or agrees with
        /// the general loop, and takes every prost encoding.
        #[test]
        fn line_in_order_agrees_with_general_loop(
            line in arb_line(),
            picks in prop::collection::vec(any::<Index>(), 0..7),
            sorted in any::<bool>(),
        ) {
            let prost = line.encode_to_vec();
            prop_assert_eq!(
                super::fast::line_in_order(&prost),
                super::fast::line_any_order(&prost)
            );
            let mut pool = fields(&prost);
            pool.extend([
                len_field(0x0a, b"ab\x22\x03EUR"),   // a sku ending like a currency
                len_field(0x0a, b"\x22\x03EUR"),
                vec![0x0a, 0x05, 0x22, 0x03],          // truncated sku around one
                len_field(0x22, b"EUR"),
                len_field(0x22, b"USD"),
                len_field(0x22, b"EU"),
                len_field(0x22, "€UR".as_bytes()),
                vec![0x22, 0x03, 0x45, 0x55, 0xff],    // not UTF-8
                vec![0x10, 0x22],                      // quantity 0x22
                vec![0x18, 0x83, 0x22],                // price ending in 0x22
                vec![0x10, 0x80, 0x80, 0x01],          // long varint
                vec![0x10, 0x80, 0x01],                // two-byte quantity
                vec![0x18, 0x80, 0x00],                // non-canonical price 0
                vec![0x18, 0xff, 0x7f],                // largest two-byte price
                vec![0x18, 0xd0, 0xf9, 0x17],          // three-byte price
                vec![0x18, 0xff, 0xff, 0xff, 0x7f],    // largest four-byte price
                vec![0x18, 0x80, 0x80, 0x80, 0x80, 0x01], // five-byte price
                vec![0x18, 0x7f],
                vec![0x18, 0x83],                      // truncated price
                vec![0x10, 0x00],                      // quantity 0, explicit
                vec![0x0a, 0x01, 0xff],                // sku not UTF-8
                vec![0x0a, 0x80, 0x01],                // sku with a long length
                vec![0x48, 0x03],                      // unknown field 9
                vec![0x20, 0x03],                      // currency as a varint
            ]);
            let mut picked: Vec<usize> = picks.iter().map(|i| i.index(pool.len())).collect();
            if sorted {
                picked.sort_unstable();
            }
            let bytes: Vec<u8> = picked.iter().flat_map(|&i| pool[i].iter().copied()).collect();
            let general = super::fast::line_any_order(&bytes);
            if let Ok(fast) = super::fast::line_in_order(&bytes) {
                prop_assert_eq!(Ok(fast), general);
            }
        }
    }
}
