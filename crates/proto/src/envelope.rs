//! The JSON envelope (version 1), [`classify`], and the typed errors of decoding.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::text::printable;
use crate::{
    ENVELOPE_VERSION, MAX_ID, MAX_PAYLOAD_V4, MAX_PAYLOAD_V6, UNFRAGMENTED_V4, UNFRAGMENTED_V6,
};

/// Largest UDP payload towards `ip`: [`MAX_PAYLOAD_V4`] or [`MAX_PAYLOAD_V6`]. An IPv4-mapped
/// IPv6 address travels as IPv4, so it gets the IPv4 limit.
pub fn max_payload(ip: IpAddr) -> usize {
    match ip.to_canonical() {
        IpAddr::V4(_) => MAX_PAYLOAD_V4,
        IpAddr::V6(_) => MAX_PAYLOAD_V6,
    }
}

/// Whether a datagram of `len` bytes to `ip` may be fragmented on the way: it is longer than
/// [`UNFRAGMENTED_V4`] / [`UNFRAGMENTED_V6`] and leaves this machine (loopback's MTU is 64 KiB).
pub fn may_fragment(ip: IpAddr, len: usize) -> bool {
    let ip = ip.to_canonical();
    let unfragmented = match ip {
        IpAddr::V4(_) => UNFRAGMENTED_V4,
        IpAddr::V6(_) => UNFRAGMENTED_V6,
    };
    !ip.is_loopback() && len > unfragmented
}

/// An envelope id: an integer in `1..=MAX_ID`, so that every JSON reader holds it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(u64);

impl Id {
    /// The smallest id.
    pub const MIN: Id = Id(1);

    /// `Some` when `value` is in `1..=MAX_ID`.
    pub fn new(value: u64) -> Option<Id> {
        (1..=MAX_ID).contains(&value).then_some(Id(value))
    }

    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The id after this one, wrapping from `MAX_ID` back to 1.
    pub fn next(self) -> Id {
        if self.0 == MAX_ID {
            Id::MIN
        } else {
            Id(self.0 + 1)
        }
    }

    /// The id `n` places after this one, wrapping as [`Id::next`] does.
    pub fn wrapping_add(self, n: u64) -> Id {
        // Ids live on a ring of MAX_ID values: 1..=MAX_ID, i.e. 0..MAX_ID shifted by one.
        Id((self.0 - 1 + n % MAX_ID) % MAX_ID + 1)
    }

    /// Whether this id comes before `other` in sequence-number order (RFC 1982): `other` is
    /// less than half the ring ahead. Ids start at a random point and wrap, so plain `<` is
    /// wrong near the wrap.
    pub fn precedes(self, other: Id) -> bool {
        let distance = (other.0 + MAX_ID - self.0) % MAX_ID;
        distance != 0 && distance < MAX_ID / 2
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The `code` of an error envelope: what a receiver found wrong with a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    /// The datagram is not valid UTF-8 (JSON mode only: in plain mode any bytes are a message).
    NotUtf8,
    /// The datagram is not a JSON object.
    BadJson,
    /// The `v` member is missing or is not 1.
    BadVersion,
    /// The `kind` member is missing or names no kind.
    UnknownKind,
    /// The `id` (or a request's `ack`) member is missing, not an integer, or outside `1..=MAX_ID`.
    BadId,
    /// A member the kind needs (`body`, `code`, `message`) is missing or not a string.
    MissingField,
    /// The datagram is longer than the receiver's buffer.
    TooLarge,
    /// The receiver is too busy to answer; try again later.
    Busy,
    /// A code this version does not know, kept as received.
    Other(String),
}

impl ErrorCode {
    /// The code as it travels on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::NotUtf8 => "not_utf8",
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadVersion => "bad_version",
            ErrorCode::UnknownKind => "unknown_kind",
            ErrorCode::BadId => "bad_id",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Busy => "busy",
            ErrorCode::Other(code) => code,
        }
    }

    /// The code for its wire text; unknown texts become [`ErrorCode::Other`].
    pub fn parse(text: &str) -> ErrorCode {
        match text {
            "not_utf8" => ErrorCode::NotUtf8,
            "bad_json" => ErrorCode::BadJson,
            "bad_version" => ErrorCode::BadVersion,
            "unknown_kind" => ErrorCode::UnknownKind,
            "bad_id" => ErrorCode::BadId,
            "missing_field" => ErrorCode::MissingField,
            "too_large" => ErrorCode::TooLarge,
            "busy" => ErrorCode::Busy,
            other => ErrorCode::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated version-1 envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// A message for the server; `id` is echoed in the answer.
    Request {
        /// Chosen by the client; repeated by every resend of the same request.
        id: Id,
        /// The message text.
        body: String,
        /// The lowest id the sender still awaits an answer for: it will never resend an id
        /// before this one, so the server may forget them (see docs/PROTOCOL.md). Never after
        /// `id` (the sender still awaits `id`): a decoder refuses such a request with `bad_id`.
        ack: Option<Id>,
    },
    /// The server's answer to the request with the same `id`.
    Reply {
        /// The id of the request answered.
        id: Id,
        /// The answer text.
        body: String,
    },
    /// The receiver could not accept a datagram.
    Error {
        /// The id of the datagram refused, or `None` when it could not be read.
        id: Option<Id>,
        /// What was wrong, for programs.
        code: ErrorCode,
        /// What was wrong, for people.
        message: String,
    },
}

/// The shape on the wire, in the member order the protocol documents.
#[derive(Serialize)]
struct Wire<'a> {
    v: u64,
    id: Option<u64>,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ack: Option<u64>,
}

impl Envelope {
    /// The envelope's id, if it has one.
    pub fn id(&self) -> Option<Id> {
        match self {
            Envelope::Request { id, .. } | Envelope::Reply { id, .. } => Some(*id),
            Envelope::Error { id, .. } => *id,
        }
    }

    /// The `kind` member's text.
    pub fn kind(&self) -> &'static str {
        match self {
            Envelope::Request { .. } => "request",
            Envelope::Reply { .. } => "reply",
            Envelope::Error { .. } => "error",
        }
    }

    /// Appends the envelope's JSON to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.view().encode(out);
    }

    /// The envelope as a view borrowing its texts.
    pub fn view(&self) -> EnvelopeView<'_> {
        match self {
            Envelope::Request { id, body, ack } => EnvelopeView::Request {
                id: *id,
                body: Cow::Borrowed(body),
                ack: *ack,
            },
            Envelope::Reply { id, body } => EnvelopeView::Reply {
                id: *id,
                body: Cow::Borrowed(body),
            },
            Envelope::Error { id, code, message } => EnvelopeView::Error {
                id: *id,
                code: Cow::Borrowed(code.as_str()),
                message: Cow::Borrowed(message),
            },
        }
    }

    /// The envelope's JSON in a new buffer.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode(&mut out);
        out
    }

    /// Decodes `datagram`, every byte of which is taken as an envelope attempt (JSON mode).
    ///
    /// A datagram longer than `limit` is refused with [`DecodeError::TooLarge`], with its id when
    /// the id can be read. Never panics.
    pub fn decode(datagram: &[u8], limit: usize) -> Result<Envelope, Rejection> {
        EnvelopeView::decode(datagram, limit).map(EnvelopeView::into_owned)
    }
}

/// A validated version-1 envelope whose texts borrow from the datagram it was decoded from:
/// what a server decodes each datagram into, without copying its body or building a JSON tree.
///
/// A text with JSON escapes in it (`\"`, `\n`, `\u00e9`) cannot be borrowed and is unescaped
/// into a [`Cow::Owned`] string; everything else is [`Cow::Borrowed`]. It decodes and encodes
/// exactly as [`Envelope`] does (every error is the same, to the byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeView<'a> {
    /// See [`Envelope::Request`].
    Request {
        /// Chosen by the client; repeated by every resend of the same request.
        id: Id,
        /// The message text.
        body: Cow<'a, str>,
        /// The lowest id the sender still awaits an answer for.
        ack: Option<Id>,
    },
    /// See [`Envelope::Reply`].
    Reply {
        /// The id of the request answered.
        id: Id,
        /// The answer text.
        body: Cow<'a, str>,
    },
    /// See [`Envelope::Error`].
    Error {
        /// The id of the datagram refused, or `None` when it could not be read.
        id: Option<Id>,
        /// What was wrong, for programs, as on the wire ([`ErrorCode::parse`] reads it).
        code: Cow<'a, str>,
        /// What was wrong, for people.
        message: Cow<'a, str>,
    },
}

impl<'a> EnvelopeView<'a> {
    /// Decodes `datagram` as [`Envelope::decode`] does, borrowing the texts. Never panics.
    pub fn decode(datagram: &'a [u8], limit: usize) -> Result<EnvelopeView<'a>, Rejection> {
        if let Some(view) = decode_valid(datagram, limit) {
            return Ok(view);
        }
        match parse_members(datagram) {
            Some(members) => validate(&members, datagram.len(), limit),
            None => slow_path(datagram, limit, |_| true).unwrap_or_else(|| {
                Err(Rejection {
                    id: None,
                    error: DecodeError::NotJson {
                        detail: "found an object that could not be read".to_owned(),
                    },
                })
            }),
        }
    }

    /// The `kind` member's text.
    pub fn kind(&self) -> &'static str {
        match self {
            EnvelopeView::Request { .. } => "request",
            EnvelopeView::Reply { .. } => "reply",
            EnvelopeView::Error { .. } => "error",
        }
    }

    /// The envelope's id, if it has one.
    pub fn id(&self) -> Option<Id> {
        match self {
            EnvelopeView::Request { id, .. } | EnvelopeView::Reply { id, .. } => Some(*id),
            EnvelopeView::Error { id, .. } => *id,
        }
    }

    /// Appends the envelope's JSON to `out`, with no intermediate buffer: the reply a server
    /// writes straight into its answer buffer.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // The common case, a request or reply whose body JSON needs no escape in: written
        // directly, byte for byte what serde_json writes (a unit test compares the two).
        if let EnvelopeView::Request { id, body, .. } | EnvelopeView::Reply { id, body } = self
            && !body.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\')
        {
            let mut digits = itoa::Buffer::new();
            out.extend_from_slice(b"{\"v\":");
            out.extend_from_slice(digits.format(ENVELOPE_VERSION).as_bytes());
            out.extend_from_slice(b",\"id\":");
            out.extend_from_slice(digits.format(id.get()).as_bytes());
            out.extend_from_slice(b",\"kind\":\"");
            out.extend_from_slice(self.kind().as_bytes());
            out.extend_from_slice(b"\",\"body\":\"");
            out.extend_from_slice(body.as_bytes());
            out.push(b'"');
            if let EnvelopeView::Request { ack: Some(ack), .. } = self {
                out.extend_from_slice(b",\"ack\":");
                out.extend_from_slice(digits.format(ack.get()).as_bytes());
            }
            out.push(b'}');
            return;
        }
        self.encode_with_serde(out);
    }

    /// [`encode`](Self::encode) through serde_json, which escapes what JSON needs escaped.
    fn encode_with_serde(&self, out: &mut Vec<u8>) {
        let (body, code, message) = match self {
            EnvelopeView::Request { body, .. } | EnvelopeView::Reply { body, .. } => {
                (Some(body.as_ref()), None, None)
            }
            EnvelopeView::Error { code, message, .. } => {
                (None, Some(code.as_ref()), Some(message.as_ref()))
            }
        };
        let ack = match self {
            EnvelopeView::Request { ack, .. } => ack.map(Id::get),
            _ => None,
        };
        let wire = Wire {
            v: ENVELOPE_VERSION,
            id: self.id().map(Id::get),
            kind: self.kind(),
            body,
            code,
            message,
            ack,
        };
        // Writing into a Vec has no I/O to fail, and every member is a string, an integer or
        // null, which serde_json always serializes: this cannot return an error.
        let written = serde_json::to_writer(out, &wire);
        debug_assert!(
            written.is_ok(),
            "serializing an envelope failed: {written:?}"
        );
    }

    /// The envelope with texts of its own.
    pub fn into_owned(self) -> Envelope {
        match self {
            EnvelopeView::Request { id, body, ack } => Envelope::Request {
                id,
                body: body.into_owned(),
                ack,
            },
            EnvelopeView::Reply { id, body } => Envelope::Reply {
                id,
                body: body.into_owned(),
            },
            EnvelopeView::Error { id, code, message } => Envelope::Error {
                id,
                code: ErrorCode::parse(&code),
                message: message.into_owned(),
            },
        }
    }

    /// The same envelope, owning its texts, so that it outlives the datagram.
    fn into_static(self) -> EnvelopeView<'static> {
        let own = |text: Cow<'_, str>| Cow::Owned(text.into_owned());
        match self {
            EnvelopeView::Request { id, body, ack } => EnvelopeView::Request {
                id,
                body: own(body),
                ack,
            },
            EnvelopeView::Reply { id, body } => EnvelopeView::Reply {
                id,
                body: own(body),
            },
            EnvelopeView::Error { id, code, message } => EnvelopeView::Error {
                id,
                code: own(code),
                message: own(message),
            },
        }
    }
}

/// What a received datagram is, decided by [`classify_view`]: [`Datagram`] with a borrowing
/// envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatagramView<'a> {
    /// Plain text: the payload is the message.
    Plain,
    /// An envelope attempt, valid or not.
    Envelope(Result<EnvelopeView<'a>, Rejection>),
}

/// Sorts a datagram as [`classify`] does, decoding an envelope attempt into a borrowing
/// [`EnvelopeView`]. Never panics.
pub fn classify_view(datagram: &[u8], limit: usize) -> DatagramView<'_> {
    // Most plain text does not start with '{': skip the JSON parser for it.
    if datagram.trim_ascii_start().first() != Some(&b'{') {
        return DatagramView::Plain;
    }
    if let Some(view) = decode_valid(datagram, limit) {
        return DatagramView::Envelope(Ok(view));
    }
    match parse_members(datagram) {
        Some(members) if members.v.is_some() => {
            DatagramView::Envelope(validate(&members, datagram.len(), limit))
        }
        Some(_) => DatagramView::Plain,
        None => match slow_path(datagram, limit, |object| {
            object.is_some_and(|object| object.contains_key("v"))
        }) {
            Some(decoded) => DatagramView::Envelope(decoded),
            None => DatagramView::Plain,
        },
    }
}

/// The members of an envelope attempt the protocol reads, each as a `T`: its raw JSON text
/// (`&RawValue`, borrowed from the datagram, `null` included, so that a null `id` is told from
/// a missing one), or a [`Scalar`] read in the same pass. Other members are skipped without
/// being kept; a member given twice counts by its last value, as in a JSON object read into a
/// map.
#[derive(Debug)]
struct Members<T> {
    v: Option<T>,
    id: Option<T>,
    kind: Option<T>,
    body: Option<T>,
    code: Option<T>,
    message: Option<T>,
    ack: Option<T>,
}

impl<T> Default for Members<T> {
    fn default() -> Members<T> {
        Members {
            v: None,
            id: None,
            kind: None,
            body: None,
            code: None,
            message: None,
            ack: None,
        }
    }
}

/// A member's value as far as a valid envelope needs it, read without keeping its text: what
/// [`decode_valid`] reads, in one pass over the datagram.
#[derive(Debug)]
enum Scalar<'a> {
    /// An unsigned integer (as `u64` reads one: `-0` too, not `1.0`).
    Uint(u64),
    /// A string, borrowed when it has no escapes.
    Text(Cow<'a, str>),
    /// `null`.
    Null,
    /// Anything else: a negative or fractional number, a boolean, an array or an object.
    Other,
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Scalar<'de>, D::Error> {
        struct Values;
        impl<'de> Visitor<'de> for Values {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Uint(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar<'de>, E> {
                Ok(u64::try_from(n).map_or(Scalar::Other, Scalar::Uint))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Owned(text)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Null)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        deserializer.deserialize_any(Values)
    }
}

/// The names of [`Members`], read from a key without keeping it.
enum Member {
    V,
    Id,
    Kind,
    Body,
    Code,
    Message,
    Ack,
    Other,
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Member, D::Error> {
        struct Names;
        impl Visitor<'_> for Names {
            type Value = Member;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Member, E> {
                Ok(match name {
                    "v" => Member::V,
                    "id" => Member::Id,
                    "kind" => Member::Kind,
                    "body" => Member::Body,
                    "code" => Member::Code,
                    "message" => Member::Message,
                    "ack" => Member::Ack,
                    _ => Member::Other,
                })
            }
        }
        deserializer.deserialize_identifier(Names)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Members<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Members<T>, D::Error> {
        struct Object<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
            type Value = Members<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<T>, A::Error> {
                let mut members = Members::default();
                while let Some(name) = map.next_key::<Member>()? {
                    let slot = match name {
                        Member::V => &mut members.v,
                        Member::Id => &mut members.id,
                        Member::Kind => &mut members.kind,
                        Member::Body => &mut members.body,
                        Member::Code => &mut members.code,
                        Member::Message => &mut members.message,
                        Member::Ack => &mut members.ack,
                        Member::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(members)
            }
        }
        deserializer.deserialize_map(Object(std::marker::PhantomData))
    }
}

/// A JSON string's text, borrowed when it has no escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// The members of `datagram`, or `None` when it is not UTF-8, not JSON or not an object (then
/// [`slow_path`] says which).
fn parse_members<'a, T: Deserialize<'a>>(datagram: &'a [u8]) -> Option<Members<T>> {
    if datagram.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let text = std::str::from_utf8(datagram).ok()?;
    serde_json::from_str(text).ok()
}

/// A valid envelope, read in one pass over the datagram, or `None` for anything else: not
/// UTF-8, not a JSON object, too long, or refused for any reason. Then [`parse_members`] and
/// [`validate`] read it again, to say exactly what is wrong (refusals quote the raw values, so
/// they need the members' text, which this pass does not keep). Decides as [`validate`] does
/// on every datagram it accepts (a property test compares the two).
fn decode_valid(datagram: &[u8], limit: usize) -> Option<EnvelopeView<'_>> {
    if datagram.len() > limit {
        return None;
    }
    let mut members: Members<Scalar<'_>> = parse_members(datagram)?;
    if !matches!(members.v, Some(Scalar::Uint(ENVELOPE_VERSION))) {
        return None;
    }
    let id = |member: &Option<Scalar<'_>>| match member {
        Some(Scalar::Uint(n)) => Id::new(*n),
        _ => None,
    };
    fn text<'a>(member: &mut Option<Scalar<'a>>) -> Option<Cow<'a, str>> {
        match member.take() {
            Some(Scalar::Text(text)) => Some(text),
            _ => None,
        }
    }
    let view = match text(&mut members.kind)?.as_ref() {
        "request" => {
            let request = id(&members.id)?;
            let ack = match members.ack {
                None | Some(Scalar::Null) => None,
                Some(_) => Some(id(&members.ack)?),
            };
            if ack.is_some_and(|ack| request.precedes(ack)) {
                return None;
            }
            EnvelopeView::Request {
                id: request,
                body: text(&mut members.body)?,
                ack,
            }
        }
        "reply" => EnvelopeView::Reply {
            id: id(&members.id)?,
            body: text(&mut members.body)?,
        },
        "error" => EnvelopeView::Error {
            id: match members.id {
                None | Some(Scalar::Null) => None,
                Some(_) => Some(id(&members.id)?),
            },
            code: text(&mut members.code)?,
            message: text(&mut members.message)?,
        },
        _ => return None,
    };
    Some(view)
}

/// The rare datagrams [`parse_members`] could not read, through a full JSON tree: the rejection
/// that says why, or, should the tree hold an object after all, its decoding (then `None` when
/// `is_attempt` says the object is not an envelope attempt). `is_attempt` gets `None` when the
/// datagram is not a JSON object.
fn slow_path(
    datagram: &[u8],
    limit: usize,
    is_attempt: impl FnOnce(Option<&Map<String, Value>>) -> bool,
) -> Option<Result<EnvelopeView<'static>, Rejection>> {
    match parse_object(datagram) {
        Ok(object) => {
            if !is_attempt(Some(&object)) {
                return None;
            }
            // The object's own text, written again, reads: decode that.
            let text = Value::Object(object).to_string();
            let members: Members<&RawValue> = serde_json::from_str(&text).ok()?;
            Some(validate(&members, datagram.len(), limit).map(EnvelopeView::into_static))
        }
        Err(error) => {
            if !is_attempt(None) {
                return None;
            }
            let error = if datagram.len() > limit {
                DecodeError::TooLarge {
                    len: datagram.len(),
                    limit,
                }
            } else {
                error
            };
            Some(Err(Rejection { id: None, error }))
        }
    }
}

/// What a received datagram is, decided by [`classify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram {
    /// Plain text: the payload is the message.
    Plain,
    /// An envelope attempt, valid or not.
    Envelope(Result<Envelope, Rejection>),
}

/// Sorts a datagram into plain text or an envelope attempt (a JSON object with a `v` member),
/// decoding the attempt as [`Envelope::decode`] does. Never panics.
pub fn classify(datagram: &[u8], limit: usize) -> Datagram {
    match classify_view(datagram, limit) {
        DatagramView::Plain => Datagram::Plain,
        DatagramView::Envelope(decoded) => {
            Datagram::Envelope(decoded.map(EnvelopeView::into_owned))
        }
    }
}

/// An envelope attempt refused, with the id to answer to when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The attempt's id, if it had a valid one.
    pub id: Option<Id>,
    /// Why it was refused.
    pub error: DecodeError,
}

impl Rejection {
    /// The error envelope that answers this rejection.
    pub fn to_envelope(&self) -> Envelope {
        Envelope::Error {
            id: self.id,
            code: self.error.code(),
            message: self.error.to_string(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error.code(), self.error)
    }
}

impl std::error::Error for Rejection {}

/// Why an envelope attempt was refused.
///
/// Texts quoted from the datagram are cut to a few dozen characters, so that an error reply is
/// never much larger than a short request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Occurs when the datagram is not valid UTF-8.
    NotUtf8 {
        /// Offset of the first byte that is not UTF-8.
        valid_up_to: usize,
    },
    /// Occurs when the datagram is not JSON, or is JSON but not an object.
    NotJson {
        /// The parser's account of the problem.
        detail: String,
    },
    /// Occurs when `v` is missing or is not 1.
    BadVersion {
        /// The `v` found, as JSON, or `missing`.
        found: String,
    },
    /// Occurs when `kind` is missing or not one of `request`, `reply`, `error`.
    UnknownKind {
        /// The `kind` found, as JSON, or `missing`.
        found: String,
    },
    /// Occurs when `id` is missing where the kind needs one, or `id` or `ack` is not an integer
    /// in `1..=MAX_ID`.
    BadId {
        /// Which member: `id` or `ack`.
        member: &'static str,
        /// The value found, as JSON (escaped with [`Printable`](crate::text::Printable)), or
        /// `missing`.
        found: String,
    },
    /// Occurs when a request's `ack` comes after its own `id` (in sequence-number order): `ack`
    /// is the lowest id its sender still awaits, and the sender still awaits this one.
    AckAfterId {
        /// The request's id.
        id: Id,
        /// Its `ack`.
        ack: Id,
    },
    /// Occurs when a member the kind needs is missing or is not a string.
    MissingField {
        /// The envelope's kind.
        kind: &'static str,
        /// The member missing.
        field: &'static str,
    },
    /// Occurs when the datagram is longer than the receiver accepts.
    TooLarge {
        /// The datagram's length.
        len: usize,
        /// The receiver's limit.
        limit: usize,
    },
}

impl DecodeError {
    /// The error envelope code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::NotUtf8 { .. } => ErrorCode::NotUtf8,
            DecodeError::NotJson { .. } => ErrorCode::BadJson,
            DecodeError::BadVersion { .. } => ErrorCode::BadVersion,
            DecodeError::UnknownKind { .. } => ErrorCode::UnknownKind,
            DecodeError::BadId { .. } | DecodeError::AckAfterId { .. } => ErrorCode::BadId,
            DecodeError::MissingField { .. } => ErrorCode::MissingField,
            DecodeError::TooLarge { .. } => ErrorCode::TooLarge,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::NotUtf8 { valid_up_to } => write!(
                f,
                "the datagram is not valid UTF-8 (first bad byte at offset {valid_up_to}); \
                 an envelope is JSON text, so send UTF-8"
            ),
            DecodeError::NotJson { detail } => write!(
                f,
                "the datagram is not a JSON object ({detail}); send an envelope such as \
                 {{\"v\":1,\"id\":1,\"kind\":\"request\",\"body\":\"hi\"}}"
            ),
            DecodeError::BadVersion { found } => {
                write!(f, "envelope version {found} is not supported; send \"v\":1")
            }
            DecodeError::UnknownKind { found } => write!(
                f,
                "envelope kind {found} is unknown; use \"request\", \"reply\" or \"error\""
            ),
            DecodeError::BadId { member, found } => write!(
                f,
                "envelope {member} {found} is not an integer from 1 to {MAX_ID}; send such an {member}"
            ),
            DecodeError::AckAfterId { id, ack } => write!(
                f,
                "request {id} carries ack {ack}, which comes after its own id; ack is the lowest \
                 id the sender still awaits, so send an ack no later than the id"
            ),
            DecodeError::MissingField { kind, field } => write!(
                f,
                "a {kind} envelope needs a string member \"{field}\"; add it"
            ),
            DecodeError::TooLarge { len, limit } => write!(
                f,
                "the datagram is {len} bytes, over the receiver's limit of {limit} bytes; \
                 send a shorter body or raise the receiver's --buffer"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Longest quotation of a datagram's value in an error message.
const QUOTE_MAX: usize = 40;

/// A member's value as JSON, cut to [`QUOTE_MAX`] characters and escaped as
/// [`Printable`](crate::text::Printable) escapes a peer's text (JSON leaves C1 controls, DEL and
/// format characters such as U+202E as they are), or `missing`. The value is written as a JSON
/// tree writes it (compact, numbers normalised): only refusals quote, so the tree's cost is
/// paid only by them.
fn quote(value: Option<&RawValue>) -> String {
    let Some(value) = value else {
        return "missing".to_owned();
    };
    let text = match serde_json::from_str::<Value>(value.get()) {
        Ok(value) => value.to_string(),
        Err(_) => value.get().to_owned(),
    };
    match text.char_indices().nth(QUOTE_MAX) {
        Some((cut, _)) => format!("{}…", printable(&text[..cut])),
        None => printable(&text),
    }
}

fn parse_object(datagram: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    let text = std::str::from_utf8(datagram).map_err(|e| DecodeError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(DecodeError::NotJson {
            detail: format!("found {}", json_type(&other)),
        }),
        Err(e) => Err(DecodeError::NotJson {
            detail: e.to_string(),
        }),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether a member is absent or JSON `null`.
fn is_null(value: Option<&RawValue>) -> bool {
    value.is_none_or(|value| value.get() == "null")
}

/// A member's value as an unsigned integer (`1.0`, `-1` and `"1"` are not), as a JSON tree's
/// `as_u64` reads it.
fn as_u64(value: Option<&RawValue>) -> Option<u64> {
    serde_json::from_str(value?.get()).ok()
}

/// A member's value as a string, borrowed when it has no escapes.
fn as_str(value: Option<&RawValue>) -> Option<Cow<'_, str>> {
    serde_json::from_str::<Text<'_>>(value?.get())
        .ok()
        .map(|text| text.0)
}

fn parse_id(member: &'static str, value: Option<&RawValue>) -> Result<Id, DecodeError> {
    as_u64(value)
        .and_then(Id::new)
        .ok_or_else(|| DecodeError::BadId {
            member,
            found: quote(value),
        })
}

fn string_member<'a>(
    value: Option<&'a RawValue>,
    kind: &'static str,
    field: &'static str,
) -> Result<Cow<'a, str>, DecodeError> {
    as_str(value).ok_or(DecodeError::MissingField { kind, field })
}

/// Checks a parsed attempt, in the order that gives the most useful answer: the id first (so even
/// a refusal can name it), then size, version, kind and the kind's members.
fn validate<'a>(
    object: &Members<&'a RawValue>,
    len: usize,
    limit: usize,
) -> Result<EnvelopeView<'a>, Rejection> {
    let id = parse_id("id", object.id);
    let known_id = id.as_ref().ok().copied();
    let reject = |error| Rejection {
        id: known_id,
        error,
    };

    if len > limit {
        return Err(reject(DecodeError::TooLarge { len, limit }));
    }
    if as_u64(object.v) != Some(ENVELOPE_VERSION) {
        return Err(reject(DecodeError::BadVersion {
            found: quote(object.v),
        }));
    }
    match as_str(object.kind).as_deref() {
        Some("request") => {
            let id = id.map_err(reject)?;
            let body = string_member(object.body, "request", "body").map_err(reject)?;
            let ack = if is_null(object.ack) {
                None
            } else {
                Some(parse_id("ack", object.ack).map_err(reject)?)
            };
            if let Some(ack) = ack
                && id.precedes(ack)
            {
                return Err(reject(DecodeError::AckAfterId { id, ack }));
            }
            Ok(EnvelopeView::Request { id, body, ack })
        }
        Some("reply") => Ok(EnvelopeView::Reply {
            id: id.map_err(reject)?,
            body: string_member(object.body, "reply", "body").map_err(reject)?,
        }),
        Some("error") => {
            // An error names no id when the refused datagram had none that could be read.
            let id = if is_null(object.id) {
                None
            } else {
                Some(id.map_err(reject)?)
            };
            Ok(EnvelopeView::Error {
                id,
                code: string_member(object.code, "error", "code").map_err(reject)?,
                message: string_member(object.message, "error", "message").map_err(reject)?,
            })
        }
        _ => Err(reject(DecodeError::UnknownKind {
            found: quote(object.kind),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Values that sit on the edges of what each member accepts.
    const VALUES: [&str; 22] = [
        "1",
        "0",
        "-0",
        "-1",
        "1.0",
        "1e0",
        "2",
        "9007199254740991",
        "9007199254740992",
        "18446744073709551616",
        "1e400",
        "\"1\"",
        "null",
        "true",
        "[1,{}]",
        "{\"v\":1}",
        "\"request\"",
        "\"reply\"",
        "\"error\"",
        "\"a\\u00e9\\\"\"",
        "\"x\"",
        "\"\"",
    ];
    const NAMES: [&str; 9] = [
        "v", "id", "kind", "body", "code", "message", "ack", "other", "ID",
    ];

    /// A valid envelope's members (or none), then a few members of any name and value, which
    /// may replace them (the last of a name counts).
    fn object() -> impl Strategy<Value = String> {
        let start = prop_oneof![
            Just(r#""v":1,"id":7,"kind":"request","body":"x","ack":7"#),
            Just(r#""v":1,"id":7,"kind":"reply","body":"x""#),
            Just(r#""v":1,"id":null,"kind":"error","code":"busy","message":"m""#),
            Just(""),
        ];
        let member = (0..NAMES.len(), 0..VALUES.len());
        (start, proptest::collection::vec(member, 0..5)).prop_map(|(start, members)| {
            let mut members: Vec<String> = members
                .into_iter()
                .map(|(name, value)| format!("\"{}\": {}", NAMES[name], VALUES[value]))
                .collect();
            if !start.is_empty() {
                members.insert(0, start.to_owned());
            }
            format!(" {{{}}} ", members.join(","))
        })
    }

    proptest! {
        /// The one-pass decoder accepts only what the two-pass one accepts, and reads it the
        /// same; what it passes on, the two-pass decoder reads alone.
        #[test]
        fn one_pass_decoding_agrees_with_validation(text in object(), limit in 40..200_usize) {
            let datagram = text.as_bytes();
            let two_pass = parse_members(datagram)
                .map(|members| validate(&members, datagram.len(), limit));
            if let Some(view) = decode_valid(datagram, limit) {
                prop_assert_eq!(two_pass, Some(Ok(view)));
            }
        }

        #[test]
        fn one_pass_decoding_never_accepts_what_validation_refuses(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let two_pass = parse_members(&bytes).map(|members| validate(&members, bytes.len(), 64));
            if let Some(view) = decode_valid(&bytes, 64) {
                prop_assert_eq!(two_pass, Some(Ok(view)));
            }
        }
    }

    #[test]
    fn one_pass_decoding_reads_the_common_envelopes() {
        for datagram in [
            &br#"{"v":1,"id":7,"kind":"request","body":"Hello Server!!","ack":7}"#[..],
            br#"{"v":1,"id":7,"kind":"request","body":"Hello Server!!"}"#,
            br#"{"v":1,"id":7,"kind":"reply","body":"Access count: 1"}"#,
            br#"{"v":1,"id":null,"kind":"error","code":"bad_id","message":"m"}"#,
        ] {
            let view = decode_valid(datagram, 1024);
            assert!(view.is_some(), "{}", String::from_utf8_lossy(datagram));
            let two_pass =
                parse_members(datagram).map(|members| validate(&members, datagram.len(), 1024));
            assert_eq!(view.map(Ok), two_pass);
        }
    }

    #[test]
    fn the_direct_encoding_is_what_serde_json_writes() {
        let id = Id::new(9_007_199_254_740_991).unwrap_or(Id::MIN);
        for body in [
            "",
            "Access count: 18446744073709551615",
            "Hello Client!!",
            "こんにちは　世界",
            "seq 1.........",
            "del \u{7f} and / and \u{202e}",
            "quote \" backslash \\ newline \n tab \t",
        ] {
            for view in [
                EnvelopeView::Reply {
                    id,
                    body: Cow::Borrowed(body),
                },
                EnvelopeView::Request {
                    id,
                    body: Cow::Borrowed(body),
                    ack: None,
                },
                EnvelopeView::Request {
                    id,
                    body: Cow::Borrowed(body),
                    ack: Some(Id::MIN),
                },
            ] {
                let (mut direct, mut serde) = (Vec::new(), Vec::new());
                view.encode(&mut direct);
                view.encode_with_serde(&mut serde);
                assert_eq!(
                    String::from_utf8_lossy(&direct),
                    String::from_utf8_lossy(&serde)
                );
            }
        }
    }
    use expect_test::expect;

    const BIG: usize = crate::MAX_BUFFER;

    fn encoded(envelope: &Envelope) -> String {
        String::from_utf8(envelope.encode_to_vec()).unwrap()
    }

    #[test]
    fn encodes_the_documented_shapes() {
        let id = Id::new(7).unwrap();
        let request = Envelope::Request {
            id,
            body: "Hello Server!!".into(),
            ack: None,
        };
        expect![[r#"{"v":1,"id":7,"kind":"request","body":"Hello Server!!"}"#]]
            .assert_eq(&encoded(&request));
        let reply = Envelope::Reply {
            id,
            body: "Access count: 3".into(),
        };
        expect![[r#"{"v":1,"id":7,"kind":"reply","body":"Access count: 3"}"#]]
            .assert_eq(&encoded(&reply));
        let error = Rejection {
            id: None,
            error: DecodeError::NotUtf8 { valid_up_to: 3 },
        }
        .to_envelope();
        expect![[r#"{"v":1,"id":null,"kind":"error","code":"not_utf8","message":"the datagram is not valid UTF-8 (first bad byte at offset 3); an envelope is JSON text, so send UTF-8"}"#]]
            .assert_eq(&encoded(&error));
    }

    #[test]
    fn classify_tells_plain_from_envelope_attempts() {
        assert_eq!(classify(b"Hello Server!!", BIG), Datagram::Plain);
        assert_eq!(classify(b"", BIG), Datagram::Plain);
        assert_eq!(classify(b"\xff{", BIG), Datagram::Plain);
        assert_eq!(classify(br#"{"x":1}"#, BIG), Datagram::Plain);
        assert_eq!(classify(br#"{"v":1"#, BIG), Datagram::Plain);
        assert_eq!(classify(br#"[{"v":1}]"#, BIG), Datagram::Plain);
        let Datagram::Envelope(Err(rejection)) = classify(br#" {"v":2,"id":9}"#, BIG) else {
            panic!("a JSON object with v is an envelope attempt");
        };
        assert_eq!(rejection.id, Id::new(9));
        assert_eq!(rejection.error.code(), ErrorCode::BadVersion);
    }

    #[test]
    fn decode_names_each_fault() {
        let cases: &[(&[u8], ErrorCode, Option<u64>)] = &[
            (b"\xff", ErrorCode::NotUtf8, None),
            (b"hello", ErrorCode::BadJson, None),
            (b"[1]", ErrorCode::BadJson, None),
            (br#"{"id":3}"#, ErrorCode::BadVersion, Some(3)),
            (br#"{"v":"1","id":3}"#, ErrorCode::BadVersion, Some(3)),
            (
                br#"{"v":1,"id":3,"kind":"ask"}"#,
                ErrorCode::UnknownKind,
                Some(3),
            ),
            (br#"{"v":1,"id":3}"#, ErrorCode::UnknownKind, Some(3)),
            (
                br#"{"v":1,"id":0,"kind":"request","body":""}"#,
                ErrorCode::BadId,
                None,
            ),
            (
                br#"{"v":1,"id":-1,"kind":"request","body":""}"#,
                ErrorCode::BadId,
                None,
            ),
            (
                br#"{"v":1,"id":1.5,"kind":"request","body":""}"#,
                ErrorCode::BadId,
                None,
            ),
            (
                br#"{"v":1,"id":"7","kind":"request","body":""}"#,
                ErrorCode::BadId,
                None,
            ),
            (
                br#"{"v":1,"id":9007199254740992,"kind":"request","body":""}"#,
                ErrorCode::BadId,
                None,
            ),
            (
                br#"{"v":1,"kind":"request","body":""}"#,
                ErrorCode::BadId,
                None,
            ),
            (
                br#"{"v":1,"id":3,"kind":"request","body":"","ack":0}"#,
                ErrorCode::BadId,
                Some(3),
            ),
            (
                br#"{"v":1,"id":3,"kind":"request","body":"","ack":4}"#,
                ErrorCode::BadId,
                Some(3),
            ),
            (
                br#"{"v":1,"id":3,"kind":"request"}"#,
                ErrorCode::MissingField,
                Some(3),
            ),
            (
                br#"{"v":1,"id":3,"kind":"request","body":5}"#,
                ErrorCode::MissingField,
                Some(3),
            ),
            (
                br#"{"v":1,"id":3,"kind":"error","code":"x"}"#,
                ErrorCode::MissingField,
                Some(3),
            ),
        ];
        for (bytes, code, id) in cases {
            let rejection = Envelope::decode(bytes, BIG).unwrap_err();
            assert_eq!(
                &rejection.error.code(),
                code,
                "{}",
                String::from_utf8_lossy(bytes)
            );
            assert_eq!(
                rejection.id.map(Id::get),
                *id,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn too_large_keeps_the_id() {
        let bytes = br#"{"v":1,"id":12,"kind":"request","body":"0123456789"}"#;
        let rejection = Envelope::decode(bytes, 20).unwrap_err();
        assert_eq!(rejection.id, Id::new(12));
        expect![[r#"the datagram is 52 bytes, over the receiver's limit of 20 bytes; send a shorter body or raise the receiver's --buffer"#]]
            .assert_eq(&rejection.error.to_string());
        let cut = Envelope::decode(&bytes[..20], 10).unwrap_err();
        assert_eq!(cut.error.code(), ErrorCode::TooLarge);
    }

    #[test]
    fn error_envelopes_may_have_no_id_and_unknown_codes() {
        let decoded = Envelope::decode(
            br#"{"v":1,"id":null,"kind":"error","code":"later","message":"m"}"#,
            BIG,
        );
        assert_eq!(
            decoded,
            Ok(Envelope::Error {
                id: None,
                code: ErrorCode::Other("later".into()),
                message: "m".into()
            })
        );
    }

    #[test]
    fn an_ack_may_equal_or_precede_its_id_across_the_wrap() {
        for (id, ack) in [(3, 3), (3, 1), (1, crate::MAX_ID)] {
            let bytes = format!(r#"{{"v":1,"id":{id},"kind":"request","body":"","ack":{ack}}}"#);
            assert!(Envelope::decode(bytes.as_bytes(), BIG).is_ok(), "{bytes}");
        }
        let after = Envelope::decode(
            br#"{"v":1,"id":10,"kind":"request","body":"","ack":12}"#,
            BIG,
        )
        .unwrap_err();
        expect![[r#"bad_id: request 10 carries ack 12, which comes after its own id; ack is the lowest id the sender still awaits, so send an ack no later than the id"#]]
            .assert_eq(&after.to_string());
    }

    #[test]
    fn quoted_values_are_escaped() {
        let hostile = "{\"v\":\"\u{9b}2J\u{7f}\u{202e}\",\"id\":1}";
        let rejection = Envelope::decode(hostile.as_bytes(), BIG).unwrap_err();
        expect![[r#"envelope version "\u{9b}2J\x7f\u{202e}" is not supported; send "v":1"#]]
            .assert_eq(&rejection.error.to_string());
    }

    #[test]
    fn quotes_are_short() {
        let long = format!(r#"{{"v":"{}","id":1}}"#, "x".repeat(1000));
        let rejection = Envelope::decode(long.as_bytes(), BIG).unwrap_err();
        assert!(
            rejection.error.to_string().len() < 120,
            "{}",
            rejection.error
        );
    }

    #[test]
    fn ids_compare_across_the_wrap() {
        let last = Id::new(crate::MAX_ID).unwrap();
        assert!(last.precedes(Id::MIN));
        assert!(!Id::MIN.precedes(last));
        assert!(Id::new(5).unwrap().precedes(Id::new(6).unwrap()));
        assert!(!Id::new(6).unwrap().precedes(Id::new(6).unwrap()));
        assert_eq!(last.wrapping_add(2), Id::new(2).unwrap());
        assert_eq!(Id::MIN.wrapping_add(crate::MAX_ID), Id::MIN);
    }

    #[test]
    fn ids_wrap_within_range() {
        assert_eq!(Id::new(crate::MAX_ID).unwrap().next(), Id::MIN);
        assert_eq!(Id::new(0), None);
        assert_eq!(Id::new(crate::MAX_ID + 1), None);
    }

    #[test]
    fn fragmentation_is_only_feared_off_loopback() {
        assert!(!may_fragment("127.0.0.1".parse().unwrap(), 65_000));
        assert!(!may_fragment("::1".parse().unwrap(), 65_000));
        assert!(!may_fragment("::ffff:127.0.0.1".parse().unwrap(), 65_000));
        assert!(!may_fragment("192.0.2.1".parse().unwrap(), 1_472));
        assert!(may_fragment("192.0.2.1".parse().unwrap(), 1_473));
        assert!(!may_fragment("2001:db8::1".parse().unwrap(), 1_232));
        assert!(may_fragment("2001:db8::1".parse().unwrap(), 1_233));
    }

    #[test]
    fn payload_limits_follow_the_family() {
        assert_eq!(max_payload("127.0.0.1".parse().unwrap()), 65_507);
        assert_eq!(max_payload("::1".parse().unwrap()), 65_527);
        assert_eq!(max_payload("::ffff:127.0.0.1".parse().unwrap()), 65_507);
    }

    #[test]
    fn views_borrow_their_texts_unless_escaped() {
        let plain = br#"{"v":1,"id":7,"kind":"request","body":"Hello Server!!","ack":7}"#;
        let Ok(EnvelopeView::Request { body, ack, .. }) = EnvelopeView::decode(plain, BIG) else {
            panic!("a request");
        };
        assert!(matches!(body, Cow::Borrowed("Hello Server!!")));
        assert_eq!(ack, Id::new(7));
        let escaped = br#"{"v":1,"id":7,"kind":"request","body":"a\"b\u00e9"}"#;
        let Ok(EnvelopeView::Request { body, .. }) = EnvelopeView::decode(escaped, BIG) else {
            panic!("a request");
        };
        assert!(matches!(&body, Cow::Owned(text) if text == "a\"b\u{e9}"));
    }

    #[test]
    fn views_read_as_a_json_tree_would() {
        // Unknown members (nested too) are skipped, a member given twice counts by its last
        // value, escaped names are read, whitespace anywhere.
        let cases: &[(&[u8], Result<Envelope, ErrorCode>)] = &[
            (
                br#" { "x" : [ {"y":[1,{"z":null}]} ], "v" : 1 , "id":3, "kind":"request", "body":"b" } "#,
                Ok(Envelope::Request { id: Id(3), body: "b".into(), ack: None }),
            ),
            (
                br#"{"v":1,"id":3,"id":4,"kind":"reply","body":"a","body":"b"}"#,
                Ok(Envelope::Reply { id: Id(4), body: "b".into() }),
            ),
            (
                br#"{"v":1,"\u0069d":5,"kind":"req\u0075est","body":"x","ack":null}"#,
                Ok(Envelope::Request { id: Id(5), body: "x".into(), ack: None }),
            ),
            (br#"{"v":1,"id":null,"kind":"request","body":"x"}"#, Err(ErrorCode::BadId)),
            (br#"{"v":1.0,"id":1,"kind":"request","body":"x"}"#, Err(ErrorCode::BadVersion)),
            (br#"{"v":1,"id":1,"kind":"request","body":"x"} x"#, Err(ErrorCode::BadJson)),
            (b"{\"v\":1,\"id\":1,\"x\":\"\xff\"}", Err(ErrorCode::NotUtf8)),
        ];
        for (bytes, expected) in cases {
            let decoded = Envelope::decode(bytes, BIG).map_err(|r| r.error.code());
            assert_eq!(&decoded, expected, "{}", String::from_utf8_lossy(bytes));
        }
        // A null id is quoted as null, a missing one as missing.
        let null = Envelope::decode(br#"{"v":1,"id":null,"kind":"request","body":""}"#, BIG);
        assert!(
            null.unwrap_err()
                .error
                .to_string()
                .contains("envelope id null is not")
        );
        let missing = Envelope::decode(br#"{"v":1,"kind":"request","body":""}"#, BIG);
        assert!(
            missing
                .unwrap_err()
                .error
                .to_string()
                .contains("envelope id missing is not")
        );
        // Quotes are written as a JSON tree writes them: compact.
        let spaced = Envelope::decode(br#"{"v":[1, 2.50],"id":1}"#, BIG).unwrap_err();
        expect![[r#"envelope version [1,2.5] is not supported; send "v":1"#]]
            .assert_eq(&spaced.error.to_string());
    }
}
