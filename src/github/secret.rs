//! A token or key that must never be printed: its `Debug` and `Display` say `[redacted]`.

/// A GitHub token, an app's private key or a webhook secret. Only [`Secret::expose`] reads
/// it, and only where it is sent (an `Authorization` header, a credential helper's
/// environment, the HMAC).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// Reads a secret from a file, without its trailing newline.
    pub fn from_file(path: &std::path::Path) -> std::io::Result<Secret> {
        Ok(Secret(
            std::fs::read_to_string(path)?.trim_end().to_string(),
        ))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` with every occurrence of the secret replaced by `[redacted]` (for messages
    /// from git or GitHub that might echo it back).
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_string();
        }
        text.replace(&self.0, "[redacted]")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("ghs_0123456789abcdef");
        let shown = format!("{s} {s:?} {:?}", Some(&s));
        assert!(!shown.contains("ghs_"), "{shown}");
        assert_eq!(
            s.scrub("remote: ghs_0123456789abcdef refused"),
            "remote: [redacted] refused"
        );
    }
}
