//! Encoding help: a message or reply that is not UTF-8 but reads as Shift_JIS or EUC-JP is
//! named once a run, with what to do; a reply cut to `--buffer` is told in bytes and
//! characters. The decisions are [`proto::charset`]'s; the words are here.

use std::fmt::Write as _;

use proto::charset::{Cut, Legacy, legacy_reading};
use proto::text::printable;

use crate::{Which, tell};

/// Whether the run has said that some text was not UTF-8: it says so once.
#[derive(Debug, Default)]
pub(crate) struct EncodingHint {
    warned: bool,
}

impl EncodingHint {
    /// Looks at a message about to be sent (`sent`: it goes unchanged; otherwise it is
    /// refused, and the refusal follows).
    pub(crate) fn message(&mut self, which: Which, bytes: &[u8], sent: bool) {
        if self.warned {
            return;
        }
        let Some(reading) = legacy_reading(bytes, false) else {
            return;
        };
        self.warned = true;
        let advice = match reading.encoding {
            Legacy::ShiftJis => {
                "a Windows console in code page 932 sends that — run `chcp 65001` or use a \
                 UTF-8 terminal"
            }
            Legacy::EucJp => {
                "a terminal or file in EUC-JP gives that — set the terminal to UTF-8 (e.g. \
                 LANG=ja_JP.UTF-8) or convert the file (iconv -f EUC-JP -t UTF-8)"
            }
        };
        let fate = if sent {
            "it is sent unchanged"
        } else {
            "it cannot go in a JSON envelope as it is"
        };
        tell(format_args!(
            "warning: {which} is not UTF-8; it reads as {} (「{}」): {advice}; {fate}",
            reading.encoding.name(),
            printable(&reading.text),
        ));
    }

    /// Looks at a reply (`cut`: the start of a longer one).
    pub(crate) fn reply(&mut self, text: &[u8], cut: bool) {
        if self.warned {
            return;
        }
        let Some(reading) = legacy_reading(text, cut) else {
            return;
        };
        self.warned = true;
        tell(format_args!(
            "warning: the reply is not UTF-8; it reads as {} (「{}」): the server sends {} \
             text (a program in a Windows console in code page 932, or one that was given \
             such text); it is shown as received, with each byte that is not UTF-8 as \\xNN",
            reading.encoding.name(),
            printable(&reading.text),
            reading.encoding.name(),
        ));
    }
}

/// `reply cut to 4 of 15 bytes (1 of 5 characters; the cut fell inside the 2nd character, a
/// 3-byte UTF-8 sequence, shown as \xe3); raise --buffer to see all of it`, or `None` when
/// `kept` is the whole reply. `whole` is the whole reply, when it is known.
pub(crate) fn cut_report(kept: &[u8], len: usize, whole_chars: Option<usize>) -> Option<String> {
    if len <= kept.len() {
        return None;
    }
    let mut cut = Cut::new(kept, len, None);
    cut.total_chars = whole_chars;
    let mut line = String::new();
    let _ = write!(
        line,
        "reply cut to {cut}; raise --buffer (now {}) to see all of it",
        kept.len()
    );
    Some(line)
}
