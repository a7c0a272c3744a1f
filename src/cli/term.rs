//! How cordon writes to a terminal: the one place that decides whether output is coloured
//! (`--color`, `NO_COLOR`, whether the stream is a terminal), how verbose it is, and the few
//! styles it paints with.
//!
//! Decided once, in [`init`], from the command line; every printer reads [`get`]. JSON on
//! stdout is never painted, whatever was decided: callers paint only text meant for people.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::sync::OnceLock;

use anstyle::{AnsiColor, Style};

/// `--color`: when to colour what cordon writes for people.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour a stream that is a terminal, unless NO_COLOR is set (non-empty) or TERM=dumb.
    #[default]
    Auto,
    /// Always colour, even into a pipe or a file, and even with NO_COLOR set.
    Always,
    /// Never colour.
    Never,
}

impl ColorChoice {
    /// The same choice for clap's own help and error messages.
    pub(crate) fn for_clap(self) -> clap::ColorChoice {
        match self {
            ColorChoice::Auto => clap::ColorChoice::Auto,
            ColorChoice::Always => clap::ColorChoice::Always,
            ColorChoice::Never => clap::ColorChoice::Never,
        }
    }
}

/// Whether to colour one stream: `--color always` and `never` are final; `auto` colours a
/// terminal unless `NO_COLOR` is set to something (no-color.org: an empty value does not
/// count) or `TERM` is `dumb`.
pub(crate) fn decide(
    choice: ColorChoice,
    no_color: Option<&OsStr>,
    term: Option<&OsStr>,
    is_terminal: bool,
) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            is_terminal
                && no_color.is_none_or(OsStr::is_empty)
                && term.is_none_or(|t| t != OsStr::new("dumb"))
        }
    }
}

/// The terminal settings every printer of the process shares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Term {
    /// Colour what goes to stdout (tables, never JSON).
    pub colour_stdout: bool,
    /// Colour what goes to stderr (notes, the summary, warnings, errors).
    pub colour_stderr: bool,
    /// stderr is a terminal: long work shows one updating progress line there.
    pub stderr_is_terminal: bool,
    /// `-v` count: with any, long work shows every raw line instead of a progress line.
    pub verbose: u8,
}

impl Term {
    /// The settings for this process's real stdout and stderr.
    pub(crate) fn detect(choice: ColorChoice, verbose: u8) -> Term {
        let no_color = std::env::var_os("NO_COLOR");
        let term = std::env::var_os("TERM");
        let stderr_is_terminal = std::io::stderr().is_terminal();
        Term {
            colour_stdout: decide(
                choice,
                no_color.as_deref(),
                term.as_deref(),
                std::io::stdout().is_terminal(),
            ),
            colour_stderr: decide(
                choice,
                no_color.as_deref(),
                term.as_deref(),
                stderr_is_terminal,
            ),
            stderr_is_terminal,
            verbose,
        }
    }
}

static TERM: OnceLock<Term> = OnceLock::new();

/// Decides the settings for the process; the first call wins.
pub(crate) fn init(choice: ColorChoice, verbose: u8) -> Term {
    *TERM.get_or_init(|| Term::detect(choice, verbose))
}

/// The settings decided by [`init`] (or, if it was never called, those of `--color auto`).
pub(crate) fn get() -> Term {
    *TERM.get_or_init(|| Term::detect(ColorChoice::Auto, 0))
}

/// What a piece of text says, which decides its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tone {
    /// Passed, built, done.
    Good,
    /// Failed, refused, an error.
    Bad,
    /// A warning, a cancellation: worth a look, not a failure.
    Warn,
    /// Structure: a step's header.
    Heading,
}

fn style(tone: Tone) -> Style {
    match tone {
        Tone::Good => Style::new().fg_color(Some(AnsiColor::Green.into())).bold(),
        Tone::Bad => Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
        Tone::Warn => Style::new().fg_color(Some(AnsiColor::Yellow.into())),
        Tone::Heading => Style::new().bold(),
    }
}

/// `text` in `tone`'s colour when `on`, else `text` unchanged.
pub(crate) fn paint(on: bool, tone: Tone, text: &str) -> String {
    if on {
        let s = style(tone);
        format!("{s}{text}{s:#}")
    } else {
        text.to_string()
    }
}

/// Text from a job (test names, paths, hosts, reasons) made safe for one terminal line: every
/// control character (an escape sequence, a carriage return, a newline) is shown escaped
/// instead of acting on the terminal.
pub(crate) fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_is_decided_by_the_flag_then_no_color_then_the_terminal() {
        let set = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        // (flag, NO_COLOR, is a terminal) → colour?
        let cases = [
            (ColorChoice::Always, None, true, true),
            (ColorChoice::Always, None, false, true),
            (ColorChoice::Always, set, true, true),
            (ColorChoice::Always, set, false, true),
            (ColorChoice::Never, None, true, false),
            (ColorChoice::Never, None, false, false),
            (ColorChoice::Never, set, true, false),
            (ColorChoice::Auto, None, true, true),
            (ColorChoice::Auto, None, false, false),
            (ColorChoice::Auto, set, true, false),
            (ColorChoice::Auto, set, false, false),
            // no-color.org: an empty NO_COLOR does not disable colour.
            (ColorChoice::Auto, empty, true, true),
            (ColorChoice::Auto, empty, false, false),
        ];
        for (choice, no_color, tty, want) in cases {
            assert_eq!(
                decide(choice, no_color, Some(OsStr::new("xterm-256color")), tty),
                want,
                "--color {choice:?}, NO_COLOR={no_color:?}, terminal={tty}"
            );
        }
    }

    #[test]
    fn a_dumb_terminal_gets_no_colour_unless_asked() {
        let dumb = Some(OsStr::new("dumb"));
        assert!(!decide(ColorChoice::Auto, None, dumb, true));
        assert!(decide(ColorChoice::Always, None, dumb, true));
        assert!(decide(ColorChoice::Auto, None, None, true));
    }

    #[test]
    fn paint_adds_escapes_only_when_on() {
        assert_eq!(paint(false, Tone::Bad, "FAILED"), "FAILED");
        let red = paint(true, Tone::Bad, "FAILED");
        assert!(red.starts_with('\x1b') && red.contains("FAILED") && red.ends_with("\x1b[0m"));
    }

    #[test]
    fn job_text_cannot_drive_the_terminal() {
        assert_eq!(printable("tests/t.py::test_a"), "tests/t.py::test_a");
        let p = printable("x\x1b]0;owned\x07\r\ny");
        assert!(!p.chars().any(char::is_control), "{p:?}");
        assert_eq!(p, "x\\u{1b}]0;owned\\u{7}\\r\\ny");
    }
}
