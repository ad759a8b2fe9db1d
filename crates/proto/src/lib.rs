//! `proto` is udptalk's wire format: what a datagram means, with no sockets, threads or clocks.
//!
//! A datagram is either **plain** text, exactly as the tutorial's Python programs send it (the
//! payload *is* the message, UTF-8 by convention but not by force), or a JSON [`Envelope`]
//! (version 1) that carries an id so that replies can be matched to requests:
//!
//! ```text
//! {"v":1,"id":7,"kind":"request","body":"Hello Server!!"}
//! {"v":1,"id":7,"kind":"reply","body":"Access count: 3"}
//! {"v":1,"id":7,"kind":"error","code":"not_utf8","message":"..."}
//! ```
//!
//! [`classify`] decides which one a datagram is: an *envelope attempt* is anything that parses as a
//! JSON object with a `v` member; everything else is plain. [`Envelope::decode`] turns an attempt
//! into a validated [`Envelope`] or a [`Rejection`] that says why, and [`Envelope::encode`] writes
//! one back.
//!
//! The contract, as smoltcp states it for its wire types:
//! - decoding never panics, whatever the bytes (checked by property tests and a fuzz target);
//! - `Envelope::decode(&envelope.encode_to_vec(), limit) == Ok(envelope)` for every envelope
//!   whose encoding fits `limit`.
//!
//! [`probe`] is what `ping` and `bench` send: plain text that carries a sequence number.
//!
//! [`capture`] turns a datagram into a pcap record (with made-up IPv4/IPv6 and UDP headers) or
//! a hex dump, for `--pcap` and `--hexdump`.
//!
//! [`text`] holds the tutorial's words and the escaping that keeps a peer's bytes from driving
//! a terminal.
//!
//! [`trace`] formats the lines of `--trace` (the time, the errno names, the folding of
//! timeouts) for both programs; each gives it its clock and where the lines go.

pub mod capture;
pub mod charset;
mod envelope;
pub mod probe;
pub mod text;
pub mod trace;

pub use envelope::{
    Datagram, DatagramView, DecodeError, Envelope, EnvelopeView, ErrorCode, Id, Rejection,
    classify, classify_view, max_payload, may_fragment,
};

use std::time::Duration;

/// The address the tutorial's programs use: the server binds it, the client sends to it.
pub const DEFAULT_ADDR: &str = "127.0.0.1:50000";

/// Largest UDP payload over IPv4: 65,535 (IPv4 total length field) − 20 (IPv4 header) − 8 (UDP header).
pub const MAX_PAYLOAD_V4: usize = 65_507;

/// Largest UDP payload over IPv6: 65,535 (payload length field, no jumbograms) − 8 (UDP header).
pub const MAX_PAYLOAD_V6: usize = 65_527;

/// Size of the buffer every receive uses: one more than any datagram can be, so the kernel never
/// cuts one and a cut made by `--buffer` is always ours, and reported.
pub const RECV_BUFFER: usize = 65_536;

/// Largest value `--buffer` accepts: the largest UDP length field.
pub const MAX_BUFFER: usize = 65_535;

/// Version of the JSON envelope this crate speaks (the `v` member).
pub const ENVELOPE_VERSION: u64 = 1;

/// Largest envelope id: 2^53 − 1, the largest integer every JSON reader (JavaScript's included)
/// holds exactly.
pub const MAX_ID: u64 = (1 << 53) - 1;

/// How long after a request's first send a client may still resend it: 30 s. A client makes no
/// resend later than this, so a server need remember an answer only this long to give every
/// resend the same answer (the at-most-once rule; see docs/PROTOCOL.md).
pub const RETRY_WINDOW: Duration = Duration::from_secs(30);

/// Largest IPv4 UDP payload that fits a 1,500-byte Ethernet MTU unfragmented: 1,500 − 20 − 8
/// (RFC 8085 §3.2).
pub const UNFRAGMENTED_V4: usize = 1_472;

/// Largest IPv6 UDP payload that fits IPv6's minimum MTU of 1,280 bytes: 1,280 − 40 − 8.
pub const UNFRAGMENTED_V6: usize = 1_232;
