//! Property tests of the envelope contract: every envelope round-trips, and no input panics.

use proptest::prelude::*;
use proto::text::Printable;
use proto::{Datagram, Envelope, ErrorCode, Id, MAX_BUFFER, MAX_ID, classify};

fn id() -> impl Strategy<Value = Id> {
    (1..=MAX_ID).prop_filter_map("ids are in range", Id::new)
}

fn code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::NotUtf8),
        Just(ErrorCode::BadJson),
        Just(ErrorCode::BadVersion),
        Just(ErrorCode::UnknownKind),
        Just(ErrorCode::BadId),
        Just(ErrorCode::MissingField),
        Just(ErrorCode::TooLarge),
        Just(ErrorCode::Busy),
        "[a-z_]{1,12}".prop_map(|text| ErrorCode::parse(&text)),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    prop_oneof![
        // An ack is at most the request's own id: up to half the ring before it.
        (id(), any::<String>(), proptest::option::of(0..MAX_ID / 2)).prop_map(
            |(id, body, behind)| Envelope::Request {
                id,
                body,
                ack: behind.map(|behind| id.wrapping_add(MAX_ID - behind)),
            }
        ),
        (id(), any::<String>()).prop_map(|(id, body)| Envelope::Reply { id, body }),
        (proptest::option::of(id()), code(), any::<String>())
            .prop_map(|(id, code, message)| Envelope::Error { id, code, message }),
    ]
}

/// Text that looks like JSON often enough to reach the validator's every branch.
fn jsonish() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just("1".to_owned()),
        Just("null".to_owned()),
        Just("\"request\"".to_owned()),
        Just("\"error\"".to_owned()),
        Just("1e999".to_owned()),
        Just("-0".to_owned()),
        Just("[[[[[[[[]]]]]]]]".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "\"[^\"\\\\]{0,8}\"",
    ];
    let key = prop_oneof![
        "v",
        "id",
        "kind",
        "body",
        "code",
        "message",
        "ack",
        "[a-z]{1,3}"
    ];
    proptest::collection::vec((key, value), 0..7).prop_map(|members| {
        let inner: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", inner.join(","))
    })
}

proptest! {
    #[test]
    fn every_envelope_round_trips(envelope in envelope()) {
        let bytes = envelope.encode_to_vec();
        prop_assert_eq!(Envelope::decode(&bytes, MAX_BUFFER), Ok(envelope.clone()));
        prop_assert_eq!(classify(&bytes, MAX_BUFFER), Datagram::Envelope(Ok(envelope)));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), limit in 0..600usize) {
        let _ = Envelope::decode(&bytes, limit);
        let _ = classify(&bytes, limit);
    }

    #[test]
    fn jsonish_text_never_panics_and_rejections_encode(text in jsonish(), limit in 0..200usize) {
        match Envelope::decode(text.as_bytes(), limit) {
            Ok(envelope) => prop_assert!(text.len() <= limit, "{envelope:?} accepted over the limit"),
            Err(rejection) => {
                let answer = rejection.to_envelope().encode_to_vec();
                prop_assert!(Envelope::decode(&answer, MAX_BUFFER).is_ok());
            }
        }
    }
}

/// Whether `c` belongs to a category that [`Printable`] must never let through.
fn dangerous(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
    )
}

/// Bytes rich in what a hostile peer sends: controls, C1, bidi and zero-width characters,
/// separators, private use, unassigned code points, and broken UTF-8.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        any::<char>().prop_map(|c| c.to_string().into_bytes()),
        prop_oneof![
            Just('\u{1b}'),
            Just('\u{7f}'),
            Just('\u{9b}'),
            Just('\u{202e}'),
            Just('\u{200b}'),
            Just('\u{2028}'),
            Just('\u{2029}'),
            Just('\u{e000}'),
            Just('\u{feff}'),
            Just('\u{3000}'),
            Just('\\'),
        ]
        .prop_map(|c| c.to_string().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..4),
    ];
    proptest::collection::vec(piece, 0..32).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn printable_never_emits_a_dangerous_character(bytes in hostile_bytes()) {
        let shown = Printable(&bytes).to_string();
        prop_assert!(!shown.chars().any(dangerous), "{shown:?}");
    }

    #[test]
    fn printable_pushed_onto_a_string_shows_what_it_displays(
        bytes in prop_oneof![hostile_bytes(), "[ -~]{0,40}".prop_map(String::into_bytes)],
        before in "[a-z]{0,3}",
    ) {
        let mut pushed = before.clone();
        Printable(&bytes).push_onto(&mut pushed);
        prop_assert_eq!(pushed, format!("{before}{}", Printable(&bytes)));
    }

    #[test]
    fn printable_is_one_to_one(a in hostile_bytes(), b in hostile_bytes()) {
        if a != b {
            prop_assert_ne!(Printable(&a).to_string(), Printable(&b).to_string());
        }
    }

    #[test]
    fn error_messages_never_carry_a_dangerous_character(bytes in hostile_bytes()) {
        // The hostile text as the value of each member an error message may quote.
        let text = String::from_utf8_lossy(&bytes);
        for member in ["v", "kind", "id", "ack"] {
            let mut object = serde_json::Map::new();
            object.insert("v".into(), 1.into());
            object.insert("id".into(), 1.into());
            object.insert("kind".into(), "request".into());
            object.insert("body".into(), "".into());
            object.insert(member.into(), text.as_ref().into());
            let datagram = serde_json::to_vec(&object).unwrap_or_default();
            if let Err(rejection) = Envelope::decode(&datagram, MAX_BUFFER) {
                let message = rejection.to_string();
                prop_assert!(!message.chars().any(dangerous), "{message:?}");
            }
        }
    }
}

/// Any socket address, IPv4-mapped IPv6 ones included (a dual-stack socket's view of IPv4).
fn socket_addr() -> impl Strategy<Value = std::net::SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(
            IpAddr::V6(Ipv4Addr::from(ip).to_ipv6_mapped()),
            port
        )),
        any::<u16>().prop_map(|port| SocketAddr::from((Ipv6Addr::LOCALHOST, port))),
    ]
}

proptest! {
    /// Every datagram recorded reads back with its addresses (mapped ones as IPv4), ports,
    /// payload and real length, and valid lengths and checksums; nothing panics.
    #[test]
    fn every_capture_record_reads_back_valid(
        src in socket_addr(),
        dst in socket_addr(),
        payload in proptest::collection::vec(any::<u8>(), 0..2_000),
        extra in prop_oneof![Just(0usize), 0..70_000usize],
        secs in 0..u64::from(u32::MAX),
        micros in 0..1_000_000u32,
    ) {
        use proto::capture::{Pcap, read_capture};
        let mut file = Vec::new();
        Pcap::file_header(&mut file);
        let at = std::time::Duration::new(secs, micros * 1_000);
        Pcap::new().record(at, src, dst, &payload, payload.len() + extra, &mut file);
        let read = read_capture(&file).map_err(TestCaseError::fail)?;
        prop_assert_eq!(read.len(), 1);
        let got = &read[0];
        let v4 = src.ip().to_canonical().is_ipv4() && dst.ip().to_canonical().is_ipv4();
        let canonical = |a: std::net::SocketAddr| match a.ip().to_canonical() {
            ip if v4 => std::net::SocketAddr::new(ip, a.port()),
            std::net::IpAddr::V4(ip) => std::net::SocketAddr::new(ip.to_ipv6_mapped().into(), a.port()),
            ip => std::net::SocketAddr::new(ip, a.port()),
        };
        prop_assert_eq!(got.src, canonical(src));
        prop_assert_eq!(got.dst, canonical(dst));
        let max = if v4 { proto::MAX_PAYLOAD_V4 } else { proto::MAX_PAYLOAD_V6 };
        prop_assert_eq!(got.len, (payload.len() + extra).min(max));
        prop_assert_eq!(&got.payload[..], &payload[..]);
        prop_assert_eq!(got.at, at);
        prop_assert!(got.valid);
    }
}
