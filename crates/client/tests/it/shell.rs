//! What the shell sees besides the conversation: `--version` with the git revision, and
//! `NO_COLOR` (no-color.org) turning off every colour and style, even where it is forced with
//! `CLICOLOR_FORCE`: clap's help and errors, and log lines (env_logger). The progress bar is
//! checked under a terminal (`terminal.rs`).

use std::process::Command;

use crate::Result;

/// The first SGR sequence (`ESC [ params m`: colour, bold, underline) in `text`, if any.
pub(crate) fn sgr(text: &str) -> Option<&str> {
    text.match_indices("\x1b[").find_map(|(at, _)| {
        let rest = &text[at + 2..];
        let params = rest.find(|c: char| !c.is_ascii_digit() && c != ';')?;
        rest[params..]
            .starts_with('m')
            .then(|| &text[at..at + 3 + params])
    })
}

/// Runs the client with `args`, colour forced as on a terminal, and `NO_COLOR` set or not;
/// returns stdout and stderr together.
fn forced(args: &[&str], no_color: bool) -> Result<String> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_udptalk-client"));
    command
        .args(args)
        .env("CLICOLOR_FORCE", "1")
        .env_remove("NO_COLOR");
    if no_color {
        command.env("NO_COLOR", "1");
    }
    let output = command.output()?;
    let mut text = String::from_utf8(output.stdout)?;
    text.push_str(&String::from_utf8(output.stderr)?);
    Ok(text)
}

#[test]
fn version_names_the_git_revision() -> Result {
    let output = Command::new(env!("CARGO_BIN_EXE_udptalk-client"))
        .arg("--version")
        .output()?;
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8(output.stdout)?;
    let rev = text
        .strip_prefix(concat!(
            "udptalk-client ",
            env!("CARGO_PKG_VERSION"),
            " (rev "
        ))
        .and_then(|rest| rest.strip_suffix(")\n"))
        .ok_or(format!("unexpected --version: {text:?}"))?;
    assert!(
        rev == "unknown" || (rev.len() >= 7 && rev.bytes().all(|b| b.is_ascii_hexdigit())),
        "{text:?}"
    );
    Ok(())
}

#[test]
fn no_color_turns_off_help_error_and_log_styling() -> Result {
    // A closed port: the run logs at debug level, and fails at once (exit 4).
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let log = ["-vv", "--server", closed.as_str(), "hi"];
    for args in [
        &["--help"][..],
        &["--no-such-flag"],
        &["ping", "--help"],
        &log,
    ] {
        let plain = forced(args, true)?;
        assert_eq!(sgr(&plain), None, "{args:?} with NO_COLOR: {plain:?}");
        assert!(!plain.contains('\x1b'), "{args:?} with NO_COLOR: {plain:?}");
    }
    // The check can see styling: without NO_COLOR, forced help is styled.
    let styled = forced(&["--help"], false)?;
    assert!(sgr(&styled).is_some(), "{styled:?}");
    Ok(())
}
