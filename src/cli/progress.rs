//! Long, chatty work (building an image, a `prepare` install) shown as progress instead of
//! hundreds of raw lines: on a terminal one updating line (a spinner, the time so far and the
//! last line, trimmed to the width); off a terminal a short line at most every
//! [`PERIODIC_EVERY`]; with `-v` every raw line. The last lines are kept, to be shown if the
//! work fails.
//!
//! [`Tracker`] decides what to show (pure, so it is tested without a terminal or a clock);
//! [`Progress`] shows it.

use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant};

use super::term::{Term, printable};

/// Off a terminal, at most one progress line this often.
pub(crate) const PERIODIC_EVERY: Duration = Duration::from_secs(10);
/// Lines kept to show when the work fails.
pub(crate) const TAIL_LINES: usize = 30;
/// The longest last line quoted in a periodic line.
const PERIODIC_QUOTE: usize = 100;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One updating line on the terminal.
    Line,
    /// A short line now and then (a pipe, a CI log).
    Periodic,
    /// Every line as it comes (`-v`).
    Raw,
}

impl Mode {
    pub(crate) fn for_term(t: &Term) -> Mode {
        if t.verbose > 0 {
            Mode::Raw
        } else if t.stderr_is_terminal {
            Mode::Line
        } else {
            Mode::Periodic
        }
    }
}

/// What to show for one line of output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Show {
    /// A line that stays (printed above the progress line, if there is one).
    Print(String),
    /// The new text of the updating line.
    Status(String),
    Nothing,
}

/// Decides what to show of a stream of lines.
pub(crate) struct Tracker {
    mode: Mode,
    started: Instant,
    last_printed: Instant,
    lines: u64,
    tail: VecDeque<String>,
}

impl Tracker {
    pub(crate) fn new(mode: Mode, now: Instant) -> Tracker {
        Tracker {
            mode,
            started: now,
            last_printed: now,
            lines: 0,
            tail: VecDeque::new(),
        }
    }

    /// One line of the work's output (without its newline), seen at `now`.
    pub(crate) fn line(&mut self, raw: &str, now: Instant) -> Show {
        let line = printable(raw.trim_end());
        self.lines += 1;
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.clone());
        match self.mode {
            Mode::Raw => Show::Print(format!("  {line}")),
            Mode::Line if line.trim().is_empty() => Show::Nothing,
            Mode::Line => Show::Status(line.trim().to_string()),
            Mode::Periodic => {
                if now.duration_since(self.last_printed) < PERIODIC_EVERY {
                    return Show::Nothing;
                }
                self.last_printed = now;
                Show::Print(format!(
                    "  … {}s, {} lines so far: {}",
                    now.duration_since(self.started).as_secs(),
                    self.lines,
                    trim_to_width(line.trim(), PERIODIC_QUOTE)
                ))
            }
        }
    }

    /// The last lines seen, oldest first.
    pub(crate) fn tail(&self) -> impl Iterator<Item = &str> {
        self.tail.iter().map(String::as_str)
    }

    pub(crate) fn lines(&self) -> u64 {
        self.lines
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }
}

/// `text` cut to at most `width` terminal columns, ending in `…` where it was cut.
pub(crate) fn trim_to_width(text: &str, width: usize) -> String {
    console::truncate_str(text, width, "…").into_owned()
}

/// The columns left for the message after the spinner and the elapsed time (`⠋ 00:01:02 `).
const STATUS_PREFIX: usize = 11;

/// The updating line's message for a terminal `width` columns wide: it never wraps.
pub(crate) fn status_message(last: &str, width: usize) -> String {
    trim_to_width(last, width.saturating_sub(STATUS_PREFIX + 1))
}

/// Shows progress on stderr (through the writer given to each call, so it can be tested).
pub(crate) struct Progress {
    tracker: Tracker,
    bar: Option<Bar>,
    /// An incomplete last line of byte output.
    partial: Vec<u8>,
}

impl Progress {
    pub(crate) fn start(mode: Mode) -> Progress {
        let bar = (mode == Mode::Line).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            Bar(bar)
        });
        Progress {
            tracker: Tracker::new(mode, Instant::now()),
            bar,
            partial: Vec::new(),
        }
    }

    /// Prints a line that stays, above the updating line.
    pub(crate) fn print(&self, w: &mut dyn Write, line: &str) {
        let mut write = || {
            let _ = writeln!(w, "{line}");
            let _ = w.flush();
        };
        match &self.bar {
            Some(bar) => bar.0.suspend(write),
            None => write(),
        }
    }

    /// One line of the work's output.
    pub(crate) fn line(&mut self, w: &mut dyn Write, line: &str) {
        match self.tracker.line(line, Instant::now()) {
            Show::Print(l) => self.print(w, &l),
            Show::Status(s) => {
                if let Some(bar) = &self.bar {
                    let width = console::Term::stderr().size().1 as usize;
                    bar.0.set_message(status_message(&s, width));
                }
            }
            Show::Nothing => {}
        }
    }

    /// A chunk of the work's output as bytes: split into lines, the last one kept until its
    /// newline comes.
    pub(crate) fn bytes(&mut self, w: &mut dyn Write, data: &[u8]) {
        self.partial.extend_from_slice(data);
        while let Some(nl) = self.partial.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            if !text.is_empty() {
                self.line(w, &text);
            }
        }
        // A line with no newline for this long is shown as it is.
        if self.partial.len() > 4096 {
            let text = String::from_utf8_lossy(&self.partial).into_owned();
            self.partial.clear();
            self.line(w, &text);
        }
    }

    /// Removes the updating line; returns what was seen, to show if the work failed.
    pub(crate) fn finish(mut self) -> Tracker {
        if !self.partial.is_empty() {
            let text = String::from_utf8_lossy(&self.partial).into_owned();
            self.tracker.line(&text, Instant::now());
        }
        drop(self.bar.take());
        self.tracker
    }
}

/// The updating line, removed however the work ends.
struct Bar(indicatif::ProgressBar);

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_never_wraps() {
        let long = "Unpacking libpython3.11-stdlib:amd64 (3.11.2-6+deb12u6) over (3.11.2-6) ... and on and on";
        for width in [20, 40, 80] {
            let m = status_message(long, width);
            assert!(
                console::measure_text_width(&m) + STATUS_PREFIX < width,
                "{width}: {m:?}"
            );
            assert!(m.ends_with('…'), "{m:?}");
        }
        assert_eq!(status_message("short", 80), "short");
        // Wide characters count as two columns.
        let m = status_message(&"界".repeat(40), 31);
        assert!(
            console::measure_text_width(&m) < 31 - STATUS_PREFIX,
            "{m:?}"
        );
    }

    #[test]
    fn off_a_terminal_a_flood_of_lines_is_a_few_periodic_ones() {
        let t0 = Instant::now();
        let mut t = Tracker::new(Mode::Periodic, t0);
        let mut printed = Vec::new();
        // 1000 lines over 50 s.
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i * 50);
            if let Show::Print(l) = t.line(&format!("Get:{i} http://deb.debian.org pkg-{i}"), now) {
                printed.push(l);
            }
        }
        assert_eq!(printed.len(), 4, "{printed:#?}");
        assert_eq!(
            printed[0],
            "  … 10s, 201 lines so far: Get:200 http://deb.debian.org pkg-200"
        );
        assert_eq!(t.lines(), 1000);
        let tail: Vec<&str> = t.tail().collect();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.last(), Some(&"Get:999 http://deb.debian.org pkg-999"));
    }

    #[test]
    fn on_a_terminal_each_line_updates_the_status_and_none_stays() {
        let t0 = Instant::now();
        let mut t = Tracker::new(Mode::Line, t0);
        for i in 0..500u64 {
            let show = t.line(&format!("line {i}\r\n"), t0 + Duration::from_millis(i));
            assert_eq!(show, Show::Status(format!("line {i}")));
        }
        assert_eq!(t.line("   ", t0), Show::Nothing);
    }

    #[test]
    fn verbose_shows_every_line_and_escapes_control_characters() {
        let mut t = Tracker::new(Mode::Raw, Instant::now());
        assert_eq!(
            t.line("a\x1b[2Jb", Instant::now()),
            Show::Print("  a\\u{1b}[2Jb".into())
        );
    }

    #[test]
    fn byte_output_is_split_into_lines() {
        let mut p = Progress {
            tracker: Tracker::new(Mode::Raw, Instant::now()),
            bar: None,
            partial: Vec::new(),
        };
        let mut out = Vec::new();
        p.bytes(&mut out, b"Collecting six\nDownlo");
        p.bytes(&mut out, b"ading six.whl\r\n");
        p.bytes(&mut out, b"Installed");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "  Collecting six\n  Downloading six.whl\n"
        );
        let t = p.finish();
        assert_eq!(
            t.tail().collect::<Vec<_>>(),
            ["Collecting six", "Downloading six.whl", "Installed"]
        );
    }
}
