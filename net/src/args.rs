//! Typed, length-prefixed argument encoding.
//!
//! A message body is a sequence of fields; each starts with a one-byte [`Tag`] followed by a value
//! whose size the tag fixes or a big-endian length prefix gives. Nothing is ever separated by
//! spaces or terminated by a sentinel, so no value can be mistaken for another.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use engine::NameError;

use crate::error::{DecodeError, EncodeError};
use crate::frame::MessageType;
use crate::limits::{ARGS_PER_MESSAGE_MAX, MESSAGE_BODY_BYTES_MAX};
use crate::message::Message;

/// The type tag that starts every field. Codes are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Tag {
    /// An absent optional value; no bytes follow.
    None = 0x00,
    /// One byte, `0x00` false or `0x01` true.
    Bool = 0x01,
    /// Two bytes, unsigned.
    U16 = 0x02,
    /// Eight bytes, unsigned.
    U64 = 0x03,
    /// Eight bytes, two's complement.
    I64 = 0x04,
    /// A u32 byte length, then that many bytes of UTF-8.
    Text = 0x05,
    /// A u32 byte length, then that many bytes.
    Bytes = 0x06,
    /// Exactly 16 bytes (a UUID).
    Id16 = 0x07,
    /// Exactly 32 bytes (a session id, a nonce).
    Id32 = 0x08,
    /// A family byte (4 or 6), then 4 or 16 address bytes.
    Ip = 0x09,
    /// A u32 item count and a u16 field count per item, then items × fields fields.
    List = 0x0A,
    /// A nested message: type u8, instruction u16, argument count u16, then its fields.
    Message = 0x0B,
}

impl Tag {
    /// Every tag, in code order.
    pub const ALL: [Tag; 12] = [
        Self::None,
        Self::Bool,
        Self::U16,
        Self::U64,
        Self::I64,
        Self::Text,
        Self::Bytes,
        Self::Id16,
        Self::Id32,
        Self::Ip,
        Self::List,
        Self::Message,
    ];

    /// The wire code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The tag of a wire code, if it is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// The name used in `docs/PROTOCOL.md`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Bool => "bool",
            Self::U16 => "u16",
            Self::U64 => "u64",
            Self::I64 => "i64",
            Self::Text => "text",
            Self::Bytes => "bytes",
            Self::Id16 => "id16",
            Self::Id32 => "id32",
            Self::Ip => "ip",
            Self::List => "list",
            Self::Message => "message",
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// Builds a message body field by field, counting top-level arguments. The first limit
/// violation is remembered and returned by [`ArgWriter::finish`], so encoders read straight.
#[derive(Debug)]
pub(crate) struct ArgWriter {
    body: Vec<u8>,
    args: u16,
    depth: u32,
    error: Option<EncodeError>,
}

impl ArgWriter {
    pub(crate) fn new() -> Self {
        Self { body: Vec::new(), args: 0, depth: 0, error: None }
    }

    pub(crate) fn fail(&mut self, error: EncodeError) {
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    /// Refuses (as [`EncodeError::TooManyItems`]) a list of `items` that promises at most `max`.
    pub(crate) fn at_most(&mut self, what: &'static str, items: usize, max: usize) {
        if items > max {
            self.fail(EncodeError::TooManyItems { what, items, max });
        }
    }

    fn start(&mut self, tag: Tag) {
        if self.depth == 0 {
            self.args = self.args.saturating_add(1);
        }
        self.body.push(tag.code());
    }

    fn length(&mut self, what: &'static str, len: usize) {
        match u32::try_from(len) {
            Ok(len) => self.body.extend_from_slice(&len.to_be_bytes()),
            Err(_) => {
                self.fail(EncodeError::FieldTooLong { what, len, max: MESSAGE_BODY_BYTES_MAX });
                self.body.extend_from_slice(&u32::MAX.to_be_bytes());
            }
        }
    }

    pub(crate) fn none(&mut self) {
        self.start(Tag::None);
    }

    pub(crate) fn bool(&mut self, value: bool) {
        self.start(Tag::Bool);
        self.body.push(u8::from(value));
    }

    pub(crate) fn u16(&mut self, value: u16) {
        self.start(Tag::U16);
        self.body.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.start(Tag::U64);
        self.body.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn i64(&mut self, value: i64) {
        self.start(Tag::I64);
        self.body.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn text(&mut self, what: &'static str, value: &str, max: usize) {
        if value.len() > max {
            self.fail(EncodeError::FieldTooLong { what, len: value.len(), max });
        }
        self.start(Tag::Text);
        self.length(what, value.len());
        self.body.extend_from_slice(value.as_bytes());
    }

    pub(crate) fn bytes(&mut self, what: &'static str, value: &[u8], min: usize, max: usize) {
        if value.len() > max {
            self.fail(EncodeError::FieldTooLong { what, len: value.len(), max });
        }
        if value.len() < min {
            self.fail(EncodeError::FieldTooShort { what, len: value.len(), min });
        }
        self.start(Tag::Bytes);
        self.length(what, value.len());
        self.body.extend_from_slice(value);
    }

    pub(crate) fn id16(&mut self, value: &[u8; 16]) {
        self.start(Tag::Id16);
        self.body.extend_from_slice(value);
    }

    pub(crate) fn id32(&mut self, value: &[u8; 32]) {
        self.start(Tag::Id32);
        self.body.extend_from_slice(value);
    }

    pub(crate) fn ip(&mut self, value: IpAddr) {
        self.start(Tag::Ip);
        match value {
            IpAddr::V4(v4) => {
                self.body.push(4);
                self.body.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                self.body.push(6);
                self.body.extend_from_slice(&v6.octets());
            }
        }
    }

    /// A list of `items.len()` items of `fields` fields each, written by `write_item`.
    pub(crate) fn list<T>(
        &mut self,
        what: &'static str,
        fields: u16,
        items: &[T],
        mut write_item: impl FnMut(&mut Self, &T),
    ) {
        self.start(Tag::List);
        self.length(what, items.len());
        self.body.extend_from_slice(&fields.to_be_bytes());
        self.depth += 1;
        for item in items {
            // Past the limit, or after an error, the message is refused anyway: building the
            // rest would only hold memory (a list of millions of items, say).
            if self.error.is_some() || self.body.len() > MESSAGE_BODY_BYTES_MAX {
                break;
            }
            write_item(self, item);
        }
        self.depth -= 1;
    }

    /// A nested message (one level only: a relayed request or response) written by `inner`.
    pub(crate) fn nest(&mut self, message_type: MessageType, instruction: u16, inner: ArgWriter) {
        if let Some(error) = inner.error {
            self.fail(error);
        }
        self.start(Tag::Message);
        self.body.push(message_type.code());
        self.body.extend_from_slice(&instruction.to_be_bytes());
        self.body.extend_from_slice(&inner.args.to_be_bytes());
        self.body.extend_from_slice(&inner.body);
    }

    /// The finished message, or the first limit it broke.
    pub(crate) fn finish(
        self,
        message_type: MessageType,
        instruction: u16,
    ) -> Result<Message, EncodeError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if self.body.len() > MESSAGE_BODY_BYTES_MAX {
            return Err(EncodeError::BodyTooLarge {
                body_bytes: self.body.len(),
                max: MESSAGE_BODY_BYTES_MAX,
            });
        }
        assert!(self.args <= ARGS_PER_MESSAGE_MAX, "an encoder wrote too many arguments");
        Ok(Message { message_type, instruction, arg_count: self.args, body: self.body })
    }
}

/// Reads a message body field by field, checking every tag, length and limit.
#[derive(Debug)]
pub(crate) struct ArgReader<'a> {
    body: &'a [u8],
    pos: usize,
    /// Index of the next field.
    next_field: u32,
}

impl<'a> ArgReader<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Self {
        Self { body, pos: 0, next_field: 0 }
    }

    /// Index of the next field, for errors about a field as a whole.
    pub(crate) fn next_field(&self) -> u32 {
        self.next_field
    }

    fn remaining(&self) -> usize {
        self.body.len() - self.pos
    }

    fn take(&mut self, field: u32, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated { field });
        }
        let bytes = &self.body[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self, field: u32) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    /// Reads the tag of the next field, which must be `expected`; returns the field index.
    fn tag(&mut self, what: &'static str, expected: Tag) -> Result<u32, DecodeError> {
        let field = self.next_field;
        let code = self.take(field, 1)?[0];
        let got = Tag::from_code(code).ok_or(DecodeError::UnknownTag { field, tag: code })?;
        if got != expected {
            return Err(DecodeError::WrongType { field, what, expected, got });
        }
        self.next_field = self.next_field.saturating_add(1);
        Ok(field)
    }

    /// True when the next field is `none` (consumed); false when it is something else.
    pub(crate) fn none_next(&mut self) -> Result<bool, DecodeError> {
        let field = self.next_field;
        let code = *self.body.get(self.pos).ok_or(DecodeError::Truncated { field })?;
        if code == Tag::None.code() {
            self.pos += 1;
            self.next_field = self.next_field.saturating_add(1);
            return Ok(true);
        }
        Ok(false)
    }

    fn length(&mut self, field: u32) -> Result<usize, DecodeError> {
        let len = u32::from_be_bytes(self.take_array(field)?);
        Ok(usize::try_from(len).unwrap_or(usize::MAX))
    }

    pub(crate) fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        let field = self.tag(what, Tag::Bool)?;
        match self.take(field, 1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(DecodeError::BadBool { field, byte }),
        }
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let field = self.tag(what, Tag::U16)?;
        Ok(u16::from_be_bytes(self.take_array(field)?))
    }

    /// A u16 code, mapped through `from_code`; an undefined code is an error.
    pub(crate) fn code<T>(
        &mut self,
        what: &'static str,
        from_code: impl Fn(u16) -> Option<T>,
    ) -> Result<T, DecodeError> {
        let field = self.next_field;
        let code = self.u16(what)?;
        from_code(code).ok_or(DecodeError::UnknownCode { field, what, code })
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let field = self.tag(what, Tag::U64)?;
        Ok(u64::from_be_bytes(self.take_array(field)?))
    }

    pub(crate) fn opt_u64(&mut self, what: &'static str) -> Result<Option<u64>, DecodeError> {
        if self.none_next()? { Ok(None) } else { self.u64(what).map(Some) }
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        let field = self.tag(what, Tag::I64)?;
        Ok(i64::from_be_bytes(self.take_array(field)?))
    }

    pub(crate) fn text(&mut self, what: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        let field = self.tag(what, Tag::Text)?;
        let len = self.length(field)?;
        if len > max {
            return Err(DecodeError::TooLong { field, what, len, max });
        }
        let bytes = self.take(field, len)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::BadUtf8 { field, what })
    }

    /// Text validated by an engine newtype constructor (username, email, symbol). The byte length
    /// is first bounded by four bytes per allowed character, so the newtype reports the precise
    /// error (such as a 25-character username) and nothing large is ever validated.
    pub(crate) fn name<T>(
        &mut self,
        what: &'static str,
        chars_max: usize,
        new: impl Fn(&str) -> Result<T, NameError>,
    ) -> Result<T, DecodeError> {
        let field = self.next_field;
        let text = self.text(what, chars_max.saturating_mul(4))?;
        new(text).map_err(|source| DecodeError::BadName { field, source })
    }

    pub(crate) fn bytes(
        &mut self,
        what: &'static str,
        min: usize,
        max: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let field = self.tag(what, Tag::Bytes)?;
        let len = self.length(field)?;
        if len > max {
            return Err(DecodeError::TooLong { field, what, len, max });
        }
        if len < min {
            return Err(DecodeError::TooShort { field, what, len, min });
        }
        self.take(field, len)
    }

    pub(crate) fn id16(&mut self, what: &'static str) -> Result<[u8; 16], DecodeError> {
        let field = self.tag(what, Tag::Id16)?;
        self.take_array(field)
    }

    pub(crate) fn id32(&mut self, what: &'static str) -> Result<[u8; 32], DecodeError> {
        let field = self.tag(what, Tag::Id32)?;
        self.take_array(field)
    }

    pub(crate) fn opt_id32(&mut self, what: &'static str) -> Result<Option<[u8; 32]>, DecodeError> {
        if self.none_next()? { Ok(None) } else { self.id32(what).map(Some) }
    }

    pub(crate) fn ip(&mut self, what: &'static str) -> Result<IpAddr, DecodeError> {
        let field = self.tag(what, Tag::Ip)?;
        match self.take(field, 1)?[0] {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.take_array::<4>(field)?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.take_array::<16>(field)?))),
            family => Err(DecodeError::BadIpFamily { field, family }),
        }
    }

    /// A list header: checks the item shape and that the declared items can fit in the bytes
    /// left (every field is at least one byte). Returns the item count; the caller then reads
    /// the items' fields into a vector from [`ArgReader::vec_for`].
    pub(crate) fn list(&mut self, what: &'static str, fields: u16) -> Result<usize, DecodeError> {
        let field = self.tag(what, Tag::List)?;
        let items = self.length(field)?;
        let got = u16::from_be_bytes(self.take_array(field)?);
        if got != fields {
            return Err(DecodeError::WrongListShape { field, expected: fields, got });
        }
        let min_bytes = items.saturating_mul(usize::from(fields));
        if min_bytes > self.remaining() {
            return Err(DecodeError::Truncated { field });
        }
        Ok(items)
    }

    /// A list header, as [`ArgReader::list`], that declares at most `max` items (a promise of
    /// the payload): more is [`DecodeError::TooManyItems`], before any item is read.
    pub(crate) fn list_at_most(
        &mut self,
        what: &'static str,
        fields: u16,
        max: usize,
    ) -> Result<usize, DecodeError> {
        let field = self.next_field();
        let items = self.list(what, fields)?;
        if items > max {
            return Err(DecodeError::TooManyItems { field, what, items, max });
        }
        Ok(items)
    }

    /// A vector for the `items` a list header declared, with room reserved up front only for as
    /// many values of `T` as the bytes left could hold: an item takes more memory than its
    /// smallest encoding (a 64-byte worker entry can be 3 bytes on the wire), so reserving the
    /// declared count could make a forged count allocate many times the body's size. Items
    /// beyond that room are real (each was decoded from its own bytes) and grow the vector.
    pub(crate) fn vec_for<T>(&self, items: usize) -> Vec<T> {
        Vec::with_capacity(items.min(self.remaining() / std::mem::size_of::<T>().max(1)))
    }

    /// A nested message header: its type, instruction number and argument count.
    pub(crate) fn message(
        &mut self,
        what: &'static str,
    ) -> Result<(MessageType, u16, u16), DecodeError> {
        let field = self.tag(what, Tag::Message)?;
        let type_code = self.take(field, 1)?[0];
        let message_type = MessageType::from_code(type_code).ok_or(DecodeError::UnknownCode {
            field,
            what: "message type",
            code: u16::from(type_code),
        })?;
        let instruction = u16::from_be_bytes(self.take_array(field)?);
        let arg_count = u16::from_be_bytes(self.take_array(field)?);
        Ok((message_type, instruction, arg_count))
    }

    /// Succeeds when every byte of the body was read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra_bytes => Err(DecodeError::TrailingBytes { extra_bytes }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list too large for a message stops being written once the body passes the limit: an
    /// answer of millions of items costs one message's memory, not the whole list's.
    #[test]
    fn a_list_past_the_message_limit_stops_growing_the_body() {
        let items = vec![7u64; MESSAGE_BODY_BYTES_MAX]; // 9 bytes each on the wire
        let mut w = ArgWriter::new();
        w.list("items", 1, &items, |w, item| w.u64(*item));
        assert!(w.body.len() <= MESSAGE_BODY_BYTES_MAX + 9, "{} bytes", w.body.len());
        assert!(matches!(
            w.finish(MessageType::ServerReturn, 1),
            Err(EncodeError::BodyTooLarge { max: MESSAGE_BODY_BYTES_MAX, .. })
        ));
    }

    /// A declared count reserves no more memory than the bytes left could hold.
    #[test]
    fn a_forged_count_reserves_at_most_the_bytes_left() {
        let body = [0u8; 300];
        let reader = ArgReader::new(&body);
        let items: Vec<[u8; 64]> = reader.vec_for(5_600_000);
        assert!(items.capacity() * 64 <= body.len(), "{}", items.capacity());
        let small: Vec<[u8; 64]> = reader.vec_for(2);
        assert!(small.capacity() >= 2);
    }
}
