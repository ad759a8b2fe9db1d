//! Bytes and characters: whether a message is UTF-8, what it reads as when it is not
//! (Shift_JIS or EUC-JP, what a Japanese Windows console or an old Unix terminal sends), and
//! where a cut to `--buffer` fell among a UTF-8 text's characters.
//!
//! The decisions only; each program words its own warning. Decoding is
//! [`encoding_rs`]'s (the WHATWG decoders): a legacy reading counts only when it decodes with
//! no error at all.

use std::fmt;

use encoding_rs::{DecoderResult, EUC_JP, Encoding, SHIFT_JIS};

use crate::text::{Printable, needs_escape};

/// A legacy Japanese encoding a non-UTF-8 message reads cleanly as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Legacy {
    /// Shift_JIS (Windows code page 932): a Japanese Windows console's pipes and files.
    ShiftJis,
    /// EUC-JP: older Unix terminals and files.
    EucJp,
}

impl Legacy {
    /// The encoding's usual name: `Shift_JIS`, `EUC-JP`.
    pub fn name(self) -> &'static str {
        match self {
            Legacy::ShiftJis => "Shift_JIS",
            Legacy::EucJp => "EUC-JP",
        }
    }

    fn encoding(self) -> &'static Encoding {
        match self {
            Legacy::ShiftJis => SHIFT_JIS,
            Legacy::EucJp => EUC_JP,
        }
    }
}

/// What a message that is not UTF-8 reads as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The encoding it decodes cleanly in.
    pub encoding: Legacy,
    /// Its text in that encoding.
    pub text: String,
}

/// Whether `bytes` are UTF-8 (ASCII included). With `cut`, the bytes are the start of a longer
/// message, and an incomplete character at their end still counts as UTF-8.
pub fn is_utf8(bytes: &[u8], cut: bool) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => cut && e.error_len().is_none(),
    }
}

/// What `bytes` read as when they are not UTF-8 but decode cleanly as Shift_JIS or EUC-JP into
/// plausible Japanese text; `None` for UTF-8 (ASCII included, and UTF-8 that ends inside a
/// character, which is UTF-8 cut short) and for anything else. With
/// `cut`, the bytes are the start of a longer message: an incomplete character at the end is
/// allowed (and left out of the text).
///
/// Plausible means: no control character (but tab, CR and LF) or other character a terminal
/// would need escaped, no private-use character (Shift_JIS's user-defined area), and every
/// non-ASCII character one a Japanese text uses (kana, kanji, full-width forms, JIS X 0208's symbols). When both
/// readings are plausible, Shift_JIS wins unless EUC-JP's has more kana and kanji than the
/// other's (EUC-JP read as Shift_JIS gives mostly half-width katakana).
pub fn legacy_reading(bytes: &[u8], cut: bool) -> Option<Reading> {
    // UTF-8 but for an incomplete last character is UTF-8 cut short, whether or not the cut
    // was ours: a server's `--buffer` echoed back (`こ\xe3` reads as Shift_JIS `縺薙`).
    // ASCII reads the same in all three: the common case, told word by word.
    if bytes.is_ascii() || is_utf8(bytes, true) {
        return None;
    }
    let sjis = decode(Legacy::ShiftJis, bytes, cut).and_then(|t| score(&t).map(|s| (t, s)));
    let euc = decode(Legacy::EucJp, bytes, cut).and_then(|t| score(&t).map(|s| (t, s)));
    match (sjis, euc) {
        (Some((_, s)), Some((text, e))) if e > s => Some(Reading {
            encoding: Legacy::EucJp,
            text,
        }),
        (Some((text, _)), _) => Some(Reading {
            encoding: Legacy::ShiftJis,
            text,
        }),
        (None, Some((text, _))) => Some(Reading {
            encoding: Legacy::EucJp,
            text,
        }),
        (None, None) => None,
    }
}

/// `bytes` decoded in `legacy` without any replacement, or `None` at the first error.
fn decode(legacy: Legacy, bytes: &[u8], cut: bool) -> Option<String> {
    let mut decoder = legacy.encoding().new_decoder_without_bom_handling();
    let room = decoder.max_utf8_buffer_length_without_replacement(bytes.len())?;
    let mut text = String::with_capacity(room);
    let (result, _read) = decoder.decode_to_string_without_replacement(bytes, &mut text, !cut);
    match result {
        DecoderResult::InputEmpty => Some(text),
        DecoderResult::Malformed(..) | DecoderResult::OutputFull => None,
    }
}

/// How Japanese `text` looks: `None` when a character rules it out, else the number of
/// full-width kana and kanji less the number of half-width katakana.
fn score(text: &str) -> Option<i64> {
    let mut score = 0i64;
    let mut japanese = false;
    for c in text.chars() {
        if c.is_ascii() {
            if c.is_ascii_control() && !matches!(c, '\t' | '\r' | '\n') {
                return None;
            }
            continue;
        }
        if needs_escape(c) {
            return None;
        }
        match c as u32 {
            // Hiragana, katakana, CJK unified ideographs.
            0x3041..=0x30FF | 0x4E00..=0x9FFF => {
                score += 1;
                japanese = true;
            }
            // Half-width katakana.
            0xFF61..=0xFF9F => {
                score -= 1;
                japanese = true;
            }
            // CJK punctuation, full-width forms, JIS X 0208's Latin-1 signs, Greek, Cyrillic,
            // punctuation, letter-like symbols, arrows, maths, box drawing, shapes, NEC's
            // circled numbers and CJK compatibility.
            0x3000..=0x3040
            | 0xFF01..=0xFF60
            | 0xFFE0..=0xFFEF
            | 0x00A0..=0x00FF
            | 0x0391..=0x03C9
            | 0x0401..=0x0451
            | 0x2010..=0x2BFF
            | 0x3200..=0x33FF
            | 0xF900..=0xFAFF => {}
            _ => return None,
        }
    }
    japanese.then_some(score)
}

/// Where a cut to `--buffer` fell in a UTF-8 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Bytes kept.
    pub kept: usize,
    /// The whole message's length in bytes.
    pub len: usize,
    /// Whole characters kept, when the bytes kept are UTF-8 (but for an incomplete last
    /// character).
    pub chars: Option<usize>,
    /// The whole message's length in characters, when known (the whole message seen, and
    /// UTF-8).
    pub total_chars: Option<usize>,
    /// The character the cut fell inside, if it did.
    pub split: Option<Split>,
}

/// A character the cut fell inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Which character, from 1.
    pub nth: usize,
    /// Its length in bytes in UTF-8 (2 to 4).
    pub width: usize,
    /// Its bytes that were kept (the first `kept`), as `\xe3` or `\xe3\x81` shows them.
    pub bytes: [u8; 3],
    /// How many of its bytes were kept (1 to 3).
    pub kept: usize,
}

impl Split {
    /// The bytes of the character that were kept.
    pub fn shown(&self) -> &[u8] {
        &self.bytes[..self.kept.min(3)]
    }
}

impl Cut {
    /// The cut of a message of `len` bytes (`whole`, when it was seen) to its first `kept`
    /// bytes.
    pub fn new(kept: &[u8], len: usize, whole: Option<&[u8]>) -> Cut {
        let (valid, rest) = match std::str::from_utf8(kept) {
            Ok(text) => (Some(text), &[][..]),
            Err(e) if e.error_len().is_none() => (
                std::str::from_utf8(&kept[..e.valid_up_to()]).ok(),
                &kept[e.valid_up_to()..],
            ),
            Err(_) => (None, &[][..]),
        };
        let chars = valid.map(|text| text.chars().count());
        let split = match (chars, rest.first()) {
            (Some(chars), Some(&lead)) => {
                let mut bytes = [0; 3];
                let kept = rest.len().min(3);
                bytes[..kept].copy_from_slice(&rest[..kept]);
                Some(Split {
                    nth: chars + 1,
                    width: utf8_width(lead),
                    bytes,
                    kept,
                })
            }
            _ => None,
        };
        let total_chars = whole
            .and_then(|whole| std::str::from_utf8(whole).ok())
            .map(|text| text.chars().count());
        Cut {
            kept: kept.len(),
            len,
            chars,
            total_chars,
            split,
        }
    }
}

/// The length of a UTF-8 sequence starting with `lead`.
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// `4 of 15 bytes (1 of 5 characters; the cut fell inside the 2nd character, a 3-byte UTF-8
/// sequence, shown as \xe3)`: what a truncation report says of the cut.
impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} bytes", self.kept, self.len)?;
        let Some(chars) = self.chars else {
            return f.write_str(" (not UTF-8 text)");
        };
        // ASCII text, seen whole or not: characters are bytes, nothing to add.
        let ascii = chars == self.kept && self.total_chars.is_none_or(|total| total == self.len);
        if ascii && self.split.is_none() {
            return Ok(());
        }
        let noun = |n: usize| if n == 1 { "character" } else { "characters" };
        match self.total_chars {
            Some(total) => write!(f, " ({chars} of {total} {}", noun(total))?,
            None => write!(f, " ({chars} whole {} kept", noun(chars))?,
        }
        if let Some(split) = self.split {
            write!(
                f,
                "; the cut fell inside the {}{} character, a {}-byte UTF-8 sequence, shown as {}",
                split.nth,
                ordinal(split.nth),
                split.width,
                Printable(split.shown())
            )?;
        }
        f.write_str(")")
    }
}

/// The suffix of `n` as an English ordinal: `st` (1st, 21st), `nd`, `rd`, `th` (4th, 11th).
fn ordinal(n: usize) -> &'static str {
    match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Japanese text as people type it: kana, common kanji, punctuation and ASCII (all in
    /// JIS X 0208, so both encodings have them).
    fn japanese() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                proptest::char::range('ぁ', 'ん'),
                proptest::char::range('ァ', 'ヶ'),
                proptest::sample::select(vec![
                    '日', '本', '語', '世', '界', '、', '。', '「', '」'
                ]),
                proptest::char::range(' ', '~'),
            ],
            1..40,
        )
        .prop_map(|chars| chars.into_iter().collect())
        // A kana or a kanji: punctuation alone is too little to tell an encoding by.
        .prop_filter("some kana or kanji", |text: &String| {
            text.chars().any(|c| matches!(c, 'ぁ'..='ヶ' | '一'..='龥'))
        })
    }

    proptest! {
        #[test]
        fn utf8_is_never_read_as_legacy(text in any::<String>(), cut in any::<bool>()) {
            prop_assert_eq!(legacy_reading(text.as_bytes(), cut), None);
        }

        #[test]
        fn shift_jis_japanese_reads_back(text in japanese()) {
            let (sjis, _, unmappable) = SHIFT_JIS.encode(&text);
            prop_assert!(!unmappable);
            let reading = legacy_reading(&sjis, false);
            prop_assert_eq!(reading.map(|r| r.text), Some(text));
        }

        #[test]
        fn euc_jp_kana_and_kanji_read_as_euc_jp(text in japanese()) {
            let (euc, _, unmappable) = EUC_JP.encode(&text);
            prop_assert!(!unmappable);
            let reading = legacy_reading(&euc, false);
            prop_assert_eq!(reading.map(|r| r.text), Some(text));
        }

        #[test]
        fn a_cut_counts_what_it_kept(text in any::<String>(), at in any::<prop::sample::Index>()) {
            let bytes = text.as_bytes();
            let at = at.index(bytes.len() + 1);
            let cut = Cut::new(&bytes[..at], bytes.len(), Some(bytes));
            let whole = text.char_indices().filter(|(i, c)| i + c.len_utf8() <= at).count();
            prop_assert_eq!(cut.chars, Some(whole));
            prop_assert_eq!(cut.total_chars, Some(text.chars().count()));
            prop_assert_eq!(cut.split.is_some(), !text.is_char_boundary(at));
        }
    }

    #[test]
    fn shift_jis_and_euc_jp_are_recognised() {
        let (sjis, _, _) = SHIFT_JIS.encode("こんにちは");
        let reading = legacy_reading(&sjis, false);
        assert_eq!(
            reading,
            Some(Reading {
                encoding: Legacy::ShiftJis,
                text: "こんにちは".to_owned()
            })
        );
        let (euc, _, _) = EUC_JP.encode("こんにちは");
        assert_eq!(
            legacy_reading(&euc, false).map(|r| r.encoding),
            Some(Legacy::EucJp)
        );
        let (euc, _, _) = EUC_JP.encode("こんにちは、世界");
        let reading = legacy_reading(&euc, false);
        assert_eq!(
            reading,
            Some(Reading {
                encoding: Legacy::EucJp,
                text: "こんにちは、世界".to_owned()
            })
        );
        // Mixed with ASCII, as a typed line is.
        let (sjis, _, _) = SHIFT_JIS.encode("Hello テスト 123");
        assert_eq!(
            legacy_reading(&sjis, false).map(|r| r.encoding),
            Some(Legacy::ShiftJis)
        );
    }

    #[test]
    fn a_cut_shift_jis_message_still_reads() {
        let (sjis, _, _) = SHIFT_JIS.encode("こんにちは");
        let reading = legacy_reading(&sjis[..3], true);
        assert_eq!(reading.map(|r| r.text), Some("こ".to_owned()));
        assert_eq!(legacy_reading(&sjis[..3], false), None);
    }

    #[test]
    fn utf8_ascii_and_noise_never_trigger() {
        for bytes in [
            &b""[..],
            b"Hello Server!!",
            "こんにちは".as_bytes(),
            &"こんにちは".as_bytes()[..4],
            b"\xff\xfe\x00\x01",
            b"\x81",
            b"\x82\xa0\x1b[2J",
            b"\xf0\x40",
            b"\x80\x80\x80",
        ] {
            assert_eq!(legacy_reading(bytes, true), None, "{bytes:?}");
        }
        // UTF-8 cut inside a character (`こ\xe3`, which reads as Shift_JIS `縺薙`), whether
        // the cut was seen or not (a server's --buffer, echoed back).
        assert_eq!(legacy_reading(&"こんにちは".as_bytes()[..4], true), None);
        assert_eq!(legacy_reading(&"こんにちは".as_bytes()[..4], false), None);
        assert!(is_utf8(&"こんにちは".as_bytes()[..4], true));
        assert!(!is_utf8(&"こんにちは".as_bytes()[..4], false));
    }

    #[test]
    fn a_cut_inside_a_character_is_told() {
        let whole = "こんにちは".as_bytes();
        let cut = Cut::new(&whole[..4], whole.len(), Some(whole));
        assert_eq!(
            cut.to_string(),
            "4 of 15 bytes (1 of 5 characters; the cut fell inside the 2nd character, a \
             3-byte UTF-8 sequence, shown as \\xe3)"
        );
        let cut = Cut::new(&whole[..5], whole.len(), None);
        assert_eq!(
            cut.to_string(),
            "5 of 15 bytes (1 whole character kept; the cut fell inside the 2nd character, a \
             3-byte UTF-8 sequence, shown as \\xe3\\x82)"
        );
        let cut = Cut::new(&whole[..6], whole.len(), Some(whole));
        assert_eq!(cut.to_string(), "6 of 15 bytes (2 of 5 characters)");
        let cut = Cut::new(b"Hell", 14, Some(b"Hello Client!!"));
        assert_eq!(cut.to_string(), "4 of 14 bytes");
        let cut = Cut::new(b"Hell", 15, Some("Hello こ".as_bytes()));
        assert_eq!(cut.to_string(), "4 of 15 bytes (4 of 7 characters)");
        let cut = Cut::new(b"\xff\xfe", 9, None);
        assert_eq!(cut.to_string(), "2 of 9 bytes (not UTF-8 text)");
    }

    #[test]
    fn ordinals_read_as_english() {
        let got = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101].map(|n| format!("{n}{}", ordinal(n)));
        assert_eq!(
            got,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st"
            ]
        );
    }
}
