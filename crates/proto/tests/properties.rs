//! Property tests of the envelope contract: every envelope round-trips, and no input panics.

use proptest::prelude::*;
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
        (id(), any::<String>(), proptest::option::of(id()))
            .prop_map(|(id, body, ack)| Envelope::Request { id, body, ack }),
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
