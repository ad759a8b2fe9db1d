//! What the shell sees besides the conversation: `--version` with the git revision, and
//! `NO_COLOR` (no-color.org) turning off clap's styling of help and errors even where
//! `CLICOLOR_FORCE` forces it. Log lines go through the server's own stderr queue, unstyled.

use std::process::Command;

use crate::Result;

#[test]
fn version_names_the_git_revision() -> Result {
    let output = Command::new(env!("CARGO_BIN_EXE_udptalk-server"))
        .arg("--version")
        .output()?;
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8(output.stdout)?;
    let rev = text
        .strip_prefix(concat!(
            "udptalk-server ",
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
fn no_color_turns_off_help_and_error_styling() -> Result {
    for args in [&["--help"][..], &["--no-such-flag"], &["--bind", "nowhere"]] {
        let run = |no_color: bool| -> Result<String> {
            let mut command = Command::new(env!("CARGO_BIN_EXE_udptalk-server"));
            command
                .args(args)
                .env("CLICOLOR_FORCE", "1")
                .env_remove("NO_COLOR");
            if no_color {
                command.env("NO_COLOR", "1");
            }
            let output = command.output()?;
            Ok(String::from_utf8(output.stdout)? + &String::from_utf8(output.stderr)?)
        };
        // The check can see styling: forced, clap styles help and errors.
        assert!(run(false)?.contains("\x1b["), "{args:?} forced");
        let plain = run(true)?;
        assert!(!plain.contains('\x1b'), "{args:?} with NO_COLOR: {plain:?}");
    }
    Ok(())
}
