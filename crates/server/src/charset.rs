//! Encoding help: a datagram that is not UTF-8 but reads as Shift_JIS or EUC-JP is named once
//! a run, on stderr, with what its sender can do. The decision is [`proto::charset`]'s; the
//! words are here.

use std::net::SocketAddr;

use proto::charset::{Legacy, legacy_reading};
use proto::text::printable;

/// Whether the server has said that a datagram was not UTF-8: it says so once. Each sink
/// keeps one (the workers share their sink), and looks at a datagram only until it has
/// warned (and skips ASCII); its owner asks only about datagrams that are not UTF-8, or before
/// it knows.
#[derive(Debug, Default)]
pub(crate) struct EncodingHint {
    warned: bool,
}

impl EncodingHint {
    /// Looks at the datagram `message` from `peer` (`cut`: the start of a longer one), and
    /// warns if it reads as a legacy Japanese encoding. The usual answer is given inline:
    /// already warned, or ASCII, which reads the same in every encoding.
    #[inline]
    pub(crate) fn datagram(&mut self, peer: SocketAddr, message: &[u8], cut: bool) {
        if self.warned || message.is_ascii() {
            return;
        }
        self.look(peer, message, cut);
    }

    fn look(&mut self, peer: SocketAddr, message: &[u8], cut: bool) {
        let Some(reading) = legacy_reading(message, cut) else {
            return;
        };
        self.warned = true;
        let advice = match reading.encoding {
            Legacy::ShiftJis => {
                "a Windows console in code page 932 sends that — its sender should run \
                 `chcp 65001` or use a UTF-8 terminal"
            }
            Legacy::EucJp => {
                "a terminal or file in EUC-JP gives that — its sender should set the terminal \
                 to UTF-8 (e.g. LANG=ja_JP.UTF-8) or convert the file (iconv -f EUC-JP -t UTF-8)"
            }
        };
        log::warn!(
            "a datagram from {peer} is not UTF-8; it reads as {} (「{}」): {advice}; it is \
             answered and counted as it is, and shown with each byte that is not UTF-8 as \
             \\xNN (said once)",
            reading.encoding.name(),
            printable(&reading.text),
        );
    }
}
