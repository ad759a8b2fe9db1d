//! What `ping` and `bench` put on the wire and how they read what comes back: [`Requests`]
//! writes each request into a reused buffer (a probe `seq N....`, in a JSON envelope with
//! `--encoding json`, or fixed bytes from `--payload-hex`), and [`read_reply`] says which
//! request a reply names ([`Key`]) and what it tells (`Access count: N`).

use proto::probe::{MIN_PROBE_SIZE, probe_seq, write_probe};
use proto::text::ACCESS_COUNT_PREFIX;
use proto::{Envelope, Id, MAX_ID, RECV_BUFFER};

use crate::{Encoding, Key};

/// The bytes of a JSON request around its id, body and ack, as [`Requests`] writes it.
const JSON_HEAD: &str = r#"{"v":1,"id":"#;
const JSON_KIND: &str = r#","kind":"request","body":""#;
const JSON_ACK: &str = r#"","ack":"#;
const JSON_TAIL: &str = "}";

/// Digits of the largest id, [`MAX_ID`] (9007199254740991).
const MAX_ID_DIGITS: usize = 16;

/// The smallest `--size` that carries every sequence number below 10^10 with `encoding`: 14
/// plain, and the envelope around it (with ids and acks of the most digits) in JSON.
pub fn min_size(encoding: Encoding) -> usize {
    match encoding {
        Encoding::Plain => MIN_PROBE_SIZE,
        Encoding::Json => {
            JSON_HEAD.len()
                + JSON_KIND.len()
                + JSON_ACK.len()
                + JSON_TAIL.len()
                + 2 * MAX_ID_DIGITS
                + MIN_PROBE_SIZE
        }
    }
}

/// What each request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A probe with its sequence number, `size` bytes on the wire.
    Probe {
        /// Bytes on the wire, envelope included.
        size: usize,
    },
    /// These bytes, every time (plain only).
    Fixed(Vec<u8>),
}

/// Writes requests; see the module's documentation.
#[derive(Debug, Clone)]
pub struct Requests {
    encoding: Encoding,
    payload: Payload,
}

impl Requests {
    /// Requests of `payload` sent with `encoding`. The caller has checked the size against
    /// [`min_size`] and that fixed bytes go plain.
    pub fn new(encoding: Encoding, payload: Payload) -> Requests {
        Requests { encoding, payload }
    }

    /// Bytes on the wire per request.
    pub fn size(&self) -> usize {
        match &self.payload {
            Payload::Probe { size } => *size,
            Payload::Fixed(bytes) => bytes.len(),
        }
    }

    /// Whether replies can name their request (by probe number or id); with fixed bytes they
    /// are matched in order.
    pub fn numbered(&self) -> bool {
        matches!(self.payload, Payload::Probe { .. })
    }

    /// Writes request `seq` (id `id`, acknowledging every id before `ack`) into `out`,
    /// reusing its allocation.
    pub fn write(&self, seq: u64, id: Id, ack: Id, out: &mut Vec<u8>) {
        match (&self.payload, self.encoding) {
            (Payload::Fixed(bytes), _) => {
                out.clear();
                out.extend_from_slice(bytes);
            }
            (Payload::Probe { size }, Encoding::Plain) => write_probe(seq, *size, out),
            (Payload::Probe { size }, Encoding::Json) => {
                // The probe is ASCII digits and dots: no escaping, so the envelope is written
                // directly, without a serializer or an allocation.
                let mut id_digits = itoa::Buffer::new();
                let id = id_digits.format(id.get());
                let mut ack_digits = itoa::Buffer::new();
                let ack = ack_digits.format(ack.get());
                let around = JSON_HEAD.len()
                    + id.len()
                    + JSON_KIND.len()
                    + JSON_ACK.len()
                    + ack.len()
                    + JSON_TAIL.len();
                out.clear();
                out.extend_from_slice(JSON_HEAD.as_bytes());
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(JSON_KIND.as_bytes());
                let start = out.len();
                let mut digits = itoa::Buffer::new();
                out.extend_from_slice(proto::probe::PROBE_TAG);
                out.extend_from_slice(digits.format(seq).as_bytes());
                let body = size.saturating_sub(around);
                if out.len() - start < body {
                    out.resize(start + body, proto::probe::PROBE_PAD);
                }
                out.extend_from_slice(JSON_ACK.as_bytes());
                out.extend_from_slice(ack.as_bytes());
                out.extend_from_slice(JSON_TAIL.as_bytes());
            }
        }
    }
}

/// What a reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyInfo {
    /// Which request it names.
    pub key: Key,
    /// `N` when it says `Access count: N`.
    pub access: Option<u64>,
}

/// Reads `datagram`, a reply to requests of `requests`. A JSON client matches a reply or an
/// error envelope by id (an error without one, and anything that is not an envelope, to the
/// oldest request); a plain client matches an echoed probe by its number, anything else to the
/// oldest request.
pub fn read_reply(requests: &Requests, datagram: &[u8]) -> ReplyInfo {
    match requests.encoding {
        Encoding::Plain => ReplyInfo {
            key: match probe_seq(datagram) {
                Some(seq) if requests.numbered() => Key::Seq(seq),
                _ => Key::Oldest,
            },
            access: access_count(datagram),
        },
        Encoding::Json => match Envelope::decode(datagram, RECV_BUFFER) {
            Ok(Envelope::Reply { id, body }) => ReplyInfo {
                key: Key::Id(id),
                access: access_count(body.as_bytes()),
            },
            Ok(Envelope::Error { id: Some(id), .. }) => ReplyInfo {
                key: Key::Id(id),
                access: None,
            },
            _ => ReplyInfo {
                key: Key::Oldest,
                access: access_count(datagram),
            },
        },
    }
}

/// `N` of a reply `Access count: N`.
fn access_count(reply: &[u8]) -> Option<u64> {
    let digits = reply.strip_prefix(ACCESS_COUNT_PREFIX.as_bytes())?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A random first id, like TCP's initial sequence number.
pub fn random_first_id() -> Id {
    Id::new(rand::random_range(1..=MAX_ID)).unwrap_or(Id::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_probes_are_exactly_the_size_asked_and_decode() {
        let requests = Requests::new(
            Encoding::Json,
            Payload::Probe {
                size: min_size(Encoding::Json),
            },
        );
        let id = Id::new(MAX_ID).unwrap_or(Id::MIN);
        let mut out = Vec::new();
        for (seq, id, ack) in [(9_999_999_999, id, id), (1, Id::MIN, Id::MIN)] {
            requests.write(seq, id, ack, &mut out);
            assert_eq!(
                out.len(),
                min_size(Encoding::Json),
                "{}",
                String::from_utf8_lossy(&out)
            );
            match Envelope::decode(&out, RECV_BUFFER) {
                Ok(Envelope::Request {
                    id: got,
                    body,
                    ack: got_ack,
                }) => {
                    assert_eq!((got, got_ack), (id, Some(ack)));
                    assert_eq!(probe_seq(body.as_bytes()), Some(seq));
                }
                other => panic!("not a request: {other:?}"),
            }
        }
    }

    #[test]
    fn replies_name_their_request() {
        let plain = Requests::new(Encoding::Plain, Payload::Probe { size: 14 });
        assert_eq!(read_reply(&plain, b"seq 7.........").key, Key::Seq(7));
        let count = read_reply(&plain, b"Access count: 42");
        assert_eq!((count.key, count.access), (Key::Oldest, Some(42)));
        let fixed = Requests::new(Encoding::Plain, Payload::Fixed(b"seq 7".to_vec()));
        assert_eq!(read_reply(&fixed, b"seq 7").key, Key::Oldest);
        let json = Requests::new(Encoding::Json, Payload::Probe { size: 100 });
        let reply = br#"{"v":1,"id":5,"kind":"reply","body":"Access count: 3"}"#;
        let info = read_reply(&json, reply);
        assert_eq!(
            (info.key, info.access),
            (Key::Id(Id::new(5).unwrap_or(Id::MIN)), Some(3))
        );
        assert_eq!(read_reply(&json, b"not json").key, Key::Oldest);
    }
}
