//! The prompt at a terminal: each line is typed with line editing and history (rustyline:
//! arrows, Home/End, Ctrl-W, Up/Down, Ctrl-R search) after the tutorial's `Please input any
//! message: `.
//!
//! rustyline's `readline` blocks until the line is done, so it runs on a thread of its own, and
//! the run waits for the line in slices of [`Stop`], as it waits for piped lines: a signal or
//! `--deadline` is noticed while a person types. Unlike the piped reader, the editor reads no
//! line ahead: the prompt must come after the previous reply is printed, so each line is asked
//! for when the run wants it.
//!
//! In raw mode the terminal sends Ctrl-C to the editor as a key, not as SIGINT: the editor
//! turns it into the same [`Signal::Interrupt`] a SIGINT sets in [`Stop`], so the run ends as it
//! does on SIGINT (summary, exit 130). Ctrl-D on an empty line is the end of input. History
//! stays in memory: what was typed is not written to disk.

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread;

use proto::text::PROMPT;
use rustyline::error::ReadlineError;

use crate::input::Line;
use crate::sys::TerminalModes;
use crate::{Error, Signal, Stop};

/// Lines kept for Up/Down and Ctrl-R.
const HISTORY_LINES: usize = 1_000;

/// The terminal names under which rustyline does no editing (its own list): it then writes the
/// prompt through the standard library's stdout, whose lock the run holds, so these terminals
/// get the plain reader instead.
const UNSUPPORTED_TERMS: [&str; 3] = ["dumb", "cons25", "emacs"];

/// Whether rustyline can edit lines on this terminal (see [`UNSUPPORTED_TERMS`]).
pub(crate) fn supported() -> bool {
    !std::env::var("TERM").is_ok_and(|term| UNSUPPORTED_TERMS.contains(&term.as_str()))
}

/// The editor's thread, asked for one line at a time.
pub(crate) struct Editor {
    /// Asks the thread for the next line.
    wanted: SyncSender<()>,
    lines: Receiver<io::Result<Line>>,
    /// Whether a line was asked for and has not come yet (the prompt is on the screen).
    waiting: bool,
    /// The terminal's modes before the first line, put back if the run stops mid-line.
    modes: Option<TerminalModes>,
}

impl Editor {
    /// Starts the editor; a line over `max` bytes is reported as [`Line::TooLong`]. Ctrl-C
    /// at the prompt interrupts `stop` as SIGINT does.
    pub(crate) fn spawn(max: usize, stop: &Stop) -> Result<Editor, Error> {
        let (wanted, requests) = mpsc::sync_channel::<()>(1);
        // Room for the one answer, so the thread never blocks on a run that has ended.
        let (send, lines) = mpsc::sync_channel(1);
        let stop = stop.clone();
        let modes = TerminalModes::save();
        thread::Builder::new()
            .name("editor".to_owned())
            .spawn(move || {
                let mut editor = match new_editor() {
                    Ok(editor) => editor,
                    Err(e) => {
                        let _ = send.send(Err(e));
                        return;
                    }
                };
                for () in requests {
                    let line = read(&mut editor, max, &stop);
                    let last = !matches!(line, Ok(Line::Text(_) | Line::TooLong(_)));
                    if send.send(line).is_err() || last {
                        break;
                    }
                }
            })
            .map_err(|source| Error::Stdin { source })?;
        Ok(Editor {
            wanted,
            lines,
            waiting: false,
            modes,
        })
    }

    /// The next line, prompting for it; waits in slices so that `stop` is seen within one.
    pub(crate) fn next(&mut self, stop: &Stop) -> Result<Line, Error> {
        if !self.waiting {
            if self.wanted.send(()).is_err() {
                return Ok(Line::End);
            }
            self.waiting = true;
        }
        loop {
            let slice = match stop.slice(None) {
                Ok(slice) => slice,
                Err(interruption) => {
                    self.abandon();
                    return Ok(Line::Interrupted(interruption));
                }
            };
            match self.lines.recv_timeout(slice) {
                Ok(line) => {
                    self.waiting = false;
                    return line.map_err(|source| Error::Stdin { source });
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(Line::End),
            }
        }
    }

    /// The run stops while the editor still reads a line: the terminal is left in the
    /// editor's raw mode, so put its modes back and end the prompt's line, that what follows
    /// (the summary) is shown as usual. The thread stays blocked until the process exits.
    fn abandon(&mut self) {
        if !self.waiting {
            return;
        }
        if let Some(modes) = &self.modes
            && let Err(e) = modes.restore()
        {
            log::warn!("cannot put the terminal's modes back ({e}); `stty sane` does");
        }
        // The editor writes to the stdout file descriptor, as this does; nothing to do if it
        // is gone.
        let _ = io::stdout()
            .write_all(b"\n")
            .and_then(|()| io::stdout().flush());
        self.waiting = false;
    }
}

fn new_editor() -> io::Result<rustyline::DefaultEditor> {
    let config = rustyline::Config::builder()
        .auto_add_history(true)
        .max_history_size(HISTORY_LINES)
        .map_err(io::Error::other)?
        .history_ignore_dups(true)
        .map_err(io::Error::other)?
        // A pasted block is sent line by line, as piped lines are (and no paste mode is left
        // on in the terminal if the run stops mid-line).
        .bracketed_paste(false)
        .build();
    rustyline::DefaultEditor::with_config(config).map_err(io::Error::other)
}

/// Reads one line with the tutorial's prompt.
fn read(editor: &mut rustyline::DefaultEditor, max: usize, stop: &Stop) -> io::Result<Line> {
    match editor.readline(PROMPT) {
        Ok(line) if line.len() > max => Ok(Line::TooLong(line.len())),
        Ok(line) => Ok(Line::Text(line.into_bytes())),
        Err(ReadlineError::Eof) => Ok(Line::End),
        Err(ReadlineError::Interrupted) => {
            // Ctrl-C at the prompt: what SIGINT does everywhere else.
            stop.interrupt(Signal::Interrupt);
            Ok(Line::Interrupted(crate::Interruption::Signal(
                Signal::Interrupt,
            )))
        }
        Err(ReadlineError::Io(e)) => Err(e),
        Err(e) => Err(io::Error::other(e)),
    }
}
