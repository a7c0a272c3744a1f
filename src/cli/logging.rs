//! cordon's own log lines on stderr: which ones (`CORDON_LOG`, `-v`) and in what shape
//! (`CORDON_LOG_FORMAT`): text for a person, or one JSON object a line for a log pipeline
//! (Kubernetes, Loki, Elasticsearch, a journal that parses JSON).

use std::sync::OnceLock;

use tracing::Level;
use tracing_subscriber::EnvFilter;

/// The variable naming the log format.
pub(crate) const FORMAT_VAR: &str = "CORDON_LOG_FORMAT";

/// The format in force, once [`init_tracing`] has run.
static FORMAT: OnceLock<Format> = OnceLock::new();

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `2024-05-01T12:00:00Z  INFO job{id=job-…}: message key=value`, coloured on a terminal.
    Text,
    /// `{"timestamp":…,"level":"INFO","message":…,<event fields>,"span":{…},"spans":[…]}`:
    /// the event's fields beside `message`, the innermost span's fields (a job's `id`) under
    /// `span`, and every enclosing span under `spans`.
    Json,
}

impl Format {
    /// Reads `value` (of [`FORMAT_VAR`]); `None` for a value that is not a format.
    pub(crate) fn parse(value: &str) -> Option<Format> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    /// The format [`FORMAT_VAR`] asks for: text when it is unset; for a value that is not a
    /// format, text and a warning on stderr naming the variable and the accepted values (a
    /// typo must not keep a service from starting, nor pass unnoticed).
    fn from_env() -> Format {
        let Some(value) = std::env::var_os(FORMAT_VAR) else {
            return Format::Text;
        };
        let value = value.to_string_lossy();
        Format::parse(&value).unwrap_or_else(|| {
            eprintln!(
                "cordon: warning: {FORMAT_VAR}={value:?} is not a log format: use `text` (the default) or `json`; logging as text"
            );
            Format::Text
        })
    }
}

/// Installs the subscriber: `CORDON_LOG` (an `EnvFilter`, like `cordon=debug`) if set, else
/// by `verbose` (0 warnings, 1 info, 2+ debug); the format from [`FORMAT_VAR`].
pub(crate) fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "cordon=warn",
        1 => "cordon=info",
        _ => "cordon=debug",
    };
    let filter = EnvFilter::try_from_env("CORDON_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let format = *FORMAT.get_or_init(Format::from_env);
    let _ = match format {
        Format::Text => builder
            // No colour codes in a journal or a log file: `--color` and NO_COLOR decide.
            .with_ansi(super::term::get().colour_stderr)
            .try_init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}

/// A line for the person running cordon: `cordon: [error: |warning: ]message` on stderr, or,
/// when logs are JSON, a log event at `level`, so that a log pipeline can read every line.
pub(crate) fn say(level: Level, message: &str) {
    if FORMAT.get() == Some(&Format::Json) {
        match level {
            Level::ERROR => tracing::error!("{message}"),
            Level::WARN => tracing::warn!("{message}"),
            _ => tracing::info!("{message}"),
        }
        return;
    }
    let prefix = match level {
        Level::ERROR => format!("{}: ", super::error_word()),
        Level::WARN => format!("{}: ", super::warning_word()),
        _ => String::new(),
    };
    eprintln!("cordon: {prefix}{message}");
}

/// [`say`] for an error and its causes: `cordon: error: a\n  caused by: b` as text, one
/// event (`a: b`) as JSON.
pub(crate) fn say_error(e: &(dyn std::error::Error + 'static)) {
    if FORMAT.get() == Some(&Format::Json) {
        tracing::error!("{}", crate::error::error_chain(e));
    } else {
        super::report_error(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_read_without_regard_to_case_or_spaces() {
        assert_eq!(Format::parse("json"), Some(Format::Json));
        assert_eq!(Format::parse(" JSON\n"), Some(Format::Json));
        assert_eq!(Format::parse("text"), Some(Format::Text));
        assert_eq!(Format::parse(""), Some(Format::Text));
        assert_eq!(Format::parse("logfmt"), None);
        assert_eq!(Format::parse("jsonl"), None);
    }
}
