//! Fuzzes proto's decoder: no input may panic it, and whatever it accepts must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::text::{Printable, needs_escape};
use proto::{Datagram, Envelope, MAX_BUFFER, classify};

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the receiver's limit, so the too_large path is reached too.
    let (limit, datagram) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (MAX_BUFFER, data),
    };
    for decoded in [Envelope::decode(datagram, limit), Envelope::decode(datagram, MAX_BUFFER)] {
        match decoded {
            Ok(envelope) => {
                let again = Envelope::decode(&envelope.encode_to_vec(), usize::MAX);
                assert_eq!(again.as_ref(), Ok(&envelope), "decode(encode(m)) == m");
            }
            Err(rejection) => {
                let answer = rejection.to_envelope().encode_to_vec();
                assert!(Envelope::decode(&answer, usize::MAX).is_ok(), "error replies decode");
            }
        }
    }
    if let Datagram::Envelope(Ok(envelope)) = classify(datagram, limit) {
        assert!(datagram.len() <= limit, "{envelope:?} accepted over the limit");
    }
    let shown = Printable(datagram).to_string();
    assert!(!shown.contains(['\n', '\r', '\x1b']), "escaped text is one safe line");
    // Nothing that must be escaped survives, but the backslashes of the escapes themselves.
    assert!(
        !shown.chars().any(|c| c != '\\' && needs_escape(c)),
        "escaped text carries no control, format, separator, private-use or unassigned character"
    );
});
