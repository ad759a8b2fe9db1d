//! The prompt at a terminal, as a person uses it: the binary under a pseudo-terminal (rexpect),
//! keys typed and the screen read. Line editing and history (rustyline), Ctrl-C ending the run
//! as SIGINT does (summary, exit 130), Ctrl-D ending the input, and a signal or `--deadline`
//! noticed while the editor waits for a key. The piped path is `stdin_lines_are_udp_client2`.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;

use rexpect::process::WaitStatus;
use rexpect::session::PtySession;

use crate::{Peer, Result, peer};

const PROMPT: &str = "Please input any message: ";

/// Longest wait for any one thing on the screen.
const TIMEOUT_MS: u64 = 10_000;

/// Answers `ok: MESSAGE`.
fn ok(socket: &UdpSocket, from: SocketAddr, got: &[u8]) -> std::io::Result<()> {
    let mut answer = b"ok: ".to_vec();
    answer.extend_from_slice(got);
    socket.send_to(&answer, from).map(drop)
}

/// The client talking to `peer`, on a pseudo-terminal of a terminal type that edits lines.
/// rexpect kills it when the session is dropped, so a failing test leaves no process behind.
fn at_terminal(peer: &Peer, args: &[&str]) -> Result<PtySession> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_udptalk-client"));
    command
        .args(["--server", &peer.addr.to_string()])
        .args(args)
        .env("TERM", "xterm");
    Ok(rexpect::session::spawn_command(command, Some(TIMEOUT_MS))?)
}

/// Types `keys` (rexpect's writer is line-buffered: flushed here, since a key press has no
/// newline).
fn keys(session: &mut PtySession, keys: &str) -> Result {
    session.send(keys)?;
    session.flush()?;
    Ok(())
}

/// The exit code, waiting for the client to end.
fn exit_code(session: &PtySession) -> Result<i32> {
    match session.process().wait()? {
        WaitStatus::Exited(_, code) => Ok(code),
        other => Err(format!("the client did not exit: {other:?}").into()),
    }
}

#[test]
fn lines_are_edited_and_recalled_and_ctrl_c_ends_like_sigint() -> Result {
    let peer = peer("127.0.0.1", ok)?;
    let mut session = at_terminal(&peer, &[])?;
    session.exp_string(PROMPT)?;
    keys(&mut session, "hello\r")?;
    session.exp_string("ok: hello")?;
    // Up recalls the last line from history.
    session.exp_string(PROMPT)?;
    keys(&mut session, "\x1b[A\r")?;
    session.exp_string("ok: hello")?;
    // Left moves the cursor: "abd", Left, "c" is "abcd".
    session.exp_string(PROMPT)?;
    keys(&mut session, "abd\x1b[Dc\r")?;
    session.exp_string("ok: abcd")?;
    session.exp_string(PROMPT)?;
    session.send_control('c')?;
    session.exp_string("summary: 3 messages sent")?;
    assert_eq!(exit_code(&session)?, 130, "Ctrl-C at the prompt is SIGINT");
    assert_eq!(peer.received()?, [&b"hello"[..], b"hello", b"abcd"]);
    Ok(())
}

#[test]
fn ctrl_d_ends_the_input() -> Result {
    let peer = peer("127.0.0.1", ok)?;
    let mut session = at_terminal(&peer, &[])?;
    session.exp_string(PROMPT)?;
    keys(&mut session, "one\r")?;
    session.exp_string("ok: one")?;
    session.exp_string(PROMPT)?;
    session.send_control('d')?;
    session.exp_eof()?;
    assert_eq!(exit_code(&session)?, 0);
    assert_eq!(peer.received()?, [b"one"]);
    Ok(())
}

#[test]
fn the_deadline_ends_a_run_waiting_at_the_prompt() -> Result {
    let peer = peer("127.0.0.1", ok)?;
    let mut session = at_terminal(&peer, &["--deadline", "300ms"])?;
    session.exp_string(PROMPT)?;
    session.exp_string("error: the --deadline of 300ms passed")?;
    session.exp_string("summary: 0 messages sent")?;
    assert_eq!(exit_code(&session)?, 3);
    assert!(peer.received()?.is_empty());
    Ok(())
}

/// NO_COLOR under a terminal, where colour would appear: bench's progress bar (indicatif)
/// redraws itself with cursor movements but sets no colour or style (SGR, `ESC [ … m`).
#[test]
fn no_color_leaves_the_progress_bar_uncoloured() -> Result {
    let peer = peer("127.0.0.1", |s, from, got| s.send_to(got, from).map(drop))?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_udptalk-client"));
    command
        .args(["bench", "--server", &peer.addr.to_string()])
        .args(["--duration", "1s", "--rate", "200/s"])
        .env("TERM", "xterm")
        .env("NO_COLOR", "1");
    let mut session = rexpect::session::spawn_command(command, Some(TIMEOUT_MS))?;
    let screen = session.exp_eof()?;
    // The screen is long (the bar redrawn ten times a second): only its end is shown.
    let end = &screen[screen.char_indices().nth_back(200).map_or(0, |(at, _)| at)..];
    assert_eq!(exit_code(&session)?, 0, "{end:?}");
    assert!(screen.contains("\x1b[2K"), "the bar was drawn: {end:?}");
    assert_eq!(crate::shell::sgr(&screen), None, "{end:?}");
    drop(peer.received()?);
    Ok(())
}
