//! Where the messages come from: the command line, or the lines of a reader read by a thread of
//! their own, so that a terminal read that blocks never keeps the run from seeing a signal or
//! the deadline.

use std::ffi::OsString;
use std::io::{self, BufRead, IsTerminal, Read};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;

use crate::{Error, Interruption, Stop};

/// Where the messages come from.
pub enum Input {
    /// Messages given on the command line: `Server message: REPLY` (udp-client1.py).
    Messages(Vec<OsString>),
    /// One message per line of this reader: the bare reply (udp-client2.py). `prompt` asks for
    /// each line first, as on a terminal.
    Lines {
        /// The lines.
        reader: Box<dyn BufRead + Send>,
        /// Whether to print `Please input any message: ` before each line.
        prompt: bool,
    },
    /// A person at a terminal: each line is typed with line editing and history after the
    /// tutorial's prompt (udp-client2.py, with readline).
    Terminal,
}

impl Input {
    /// The messages of the command line, or, when there are none, the lines of stdin: edited
    /// at the tutorial's prompt when stdin and stdout are a terminal, with the bare prompt when
    /// only stdin is (or the terminal cannot edit, `TERM=dumb`), read as they come otherwise.
    pub fn from_args(messages: Vec<OsString>) -> Input {
        if messages.is_empty() {
            let stdin = io::stdin();
            if stdin.is_terminal() && io::stdout().is_terminal() && crate::editor::supported() {
                return Input::Terminal;
            }
            let prompt = stdin.is_terminal();
            Input::Lines {
                reader: Box::new(io::BufReader::new(stdin)),
                prompt,
            }
        } else {
            Input::Messages(messages)
        }
    }
}

/// One line, as the reader thread hands it over.
pub(crate) enum Line {
    /// The line, without its `\n` or `\r\n`.
    Text(Vec<u8>),
    /// A line longer than any datagram: its length, without the line ending. It was read to
    /// its end but not kept.
    TooLong(usize),
    /// The end of input.
    End,
    /// The run must stop before the next line came.
    Interrupted(Interruption),
}

/// The lines of a reader, read ahead by at most one line on a thread of their own.
pub(crate) struct Lines {
    lines: Receiver<io::Result<Line>>,
}

impl Lines {
    /// Starts reading `reader`; a line over `max` bytes is reported as [`Line::TooLong`].
    pub(crate) fn spawn(mut reader: Box<dyn BufRead + Send>, max: usize) -> Result<Lines, Error> {
        // A rendezvous channel: the thread reads one line ahead, no more, so nothing is taken
        // from the reader that the run will not use (but the line after the last one sent).
        let (send, lines) = mpsc::sync_channel(0);
        thread::Builder::new()
            .name("input".to_owned())
            .spawn(move || {
                loop {
                    let line = read_line(&mut *reader, max);
                    let last = !matches!(line, Ok(Line::Text(_)));
                    // A closed channel means the run is over: nothing more to read for.
                    if send.send(line).is_err() || last {
                        break;
                    }
                }
            })
            .map_err(|source| Error::Stdin { source })?;
        Ok(Lines { lines })
    }

    /// The next line, waiting for it in slices so that `stop` is seen within one.
    pub(crate) fn next(&self, stop: &Stop) -> Result<Line, Error> {
        loop {
            let slice = match stop.slice(None) {
                Ok(slice) => slice,
                Err(interruption) => return Ok(Line::Interrupted(interruption)),
            };
            match self.lines.recv_timeout(slice) {
                Ok(line) => return line.map_err(|source| Error::Stdin { source }),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(Line::End),
            }
        }
    }
}

/// Reads one line of at most `max` bytes (plus its line ending); a longer one is read to its
/// end without being kept, and its length reported.
fn read_line(reader: &mut dyn BufRead, max: usize) -> io::Result<Line> {
    let mut line = Vec::new();
    // Room for the longest datagram plus "\r\n", and one byte more to see that a line is too long.
    let cap = max as u64 + 3;
    let read = (&mut *reader).take(cap).read_until(b'\n', &mut line)?;
    if read == 0 {
        return Ok(Line::End);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        return Ok(Line::Text(line));
    }
    if read as u64 == cap {
        return rest_of_line(reader, line.len(), line.last().copied()).map(Line::TooLong);
    }
    // The last line, without a line ending.
    Ok(Line::Text(line))
}

/// Reads the rest of a line that already has `len` bytes ending with `last`, without keeping
/// it; returns the line's whole length without its `\n` or `\r\n`.
fn rest_of_line(
    reader: &mut dyn BufRead,
    mut len: usize,
    mut last: Option<u8>,
) -> io::Result<usize> {
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(len);
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(end) => {
                if end > 0 {
                    last = Some(buf[end - 1]);
                }
                len += end;
                reader.consume(end + 1);
                return Ok(len - usize::from(last == Some(b'\r')));
            }
            None => {
                let taken = buf.len();
                last = buf.last().copied();
                len += taken;
                reader.consume(taken);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<String> {
        let mut reader = input;
        let mut seen = Vec::new();
        loop {
            match read_line(&mut reader, max) {
                Ok(Line::Text(text)) => seen.push(String::from_utf8_lossy(&text).into_owned()),
                Ok(Line::TooLong(len)) => seen.push(format!("too long: {len}")),
                Ok(Line::End) => return seen,
                Ok(Line::Interrupted(_)) => return vec!["interrupted".to_owned()],
                Err(e) => return vec![e.to_string()],
            }
        }
    }

    #[test]
    fn lines_lose_their_endings() {
        assert_eq!(lines(b"one\r\n\ntwo\nend", 10), ["one", "", "two", "end"]);
    }

    #[test]
    fn long_lines_are_measured_whole_and_skipped() {
        // Lines up to the reading cap (`max` + 3 with the ending) are handed over whole, to be
        // checked against the datagram's limit; longer ones report their length without the
        // ending, however far past the cap they go.
        assert_eq!(
            lines(b"12345\r\n123456\r\n1234567890123\r\nok\n1234567", 5),
            ["12345", "123456", "too long: 13", "ok", "1234567"]
        );
        assert_eq!(lines(b"12345678\r\n", 5), ["too long: 8"]);
        assert_eq!(lines(b"1234567\r\n", 5), ["too long: 7"]);
    }
}
