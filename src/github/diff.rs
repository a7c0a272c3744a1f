//! The lines a pull request changed, from `git diff --unified=0 BASE...HEAD` in cordon's own
//! clone (see [`super::git::Git::changed_lines`]): read line by line as bytes, so a diff of
//! any size streams through and only line numbers are kept. Renamed files count under their
//! new path (only the lines the rename changed); deleted files and lines only removed count
//! for nothing (no test can run a line that is gone); quoted paths (spaces, non-ASCII,
//! quotes) are unquoted the way git quotes them.

use std::path::Path;

use crate::pipeline::gaps::Lines;
use crate::pipeline::python;

/// Where the parser is in the diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Before the first `diff --git`.
    Start,
    /// In a file's header (`index`, `---`, `+++`, rename lines…).
    Header,
    /// In a hunk, with this many old and new lines still to come.
    Hunk { old: u32, new: u32 },
    /// Between hunks of a file.
    Between,
}

/// Reads `git diff --unified=0` output one line at a time.
#[derive(Debug)]
pub struct DiffParser {
    at: At,
    /// The changed version's path of the file being read; `None` for a deleted file.
    file: Option<String>,
    lines: Lines,
}

impl Default for DiffParser {
    fn default() -> Self {
        DiffParser {
            at: At::Start,
            file: None,
            lines: Lines::default(),
        }
    }
}

impl DiffParser {
    /// One line of the diff, without its `\n`.
    pub fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let At::Hunk { old, new } = self.at {
            // A hunk's own lines: `-`, `+`, and `\ No newline at end of file`.
            match line.first() {
                Some(b'-') if old > 0 => self.at = At::Hunk { old: old - 1, new },
                Some(b'+') if new > 0 => self.at = At::Hunk { old, new: new - 1 },
                Some(b'\\') => {}
                _ => {
                    self.at = At::Between;
                    return self.line(line);
                }
            }
            if self.at == (At::Hunk { old: 0, new: 0 }) {
                self.at = At::Between;
            }
            return;
        }
        if line.starts_with(b"diff --git ") {
            self.at = At::Header;
            self.file = None;
            return;
        }
        match self.at {
            At::Header => {
                if let Some(rest) = line.strip_prefix(b"+++ ") {
                    self.file = path_of(rest);
                } else if let Some(rest) = line.strip_prefix(b"rename to ") {
                    self.file = unquote(rest);
                } else if line.starts_with(b"@@ ") {
                    self.hunk(line);
                }
            }
            At::Between => {
                if line.starts_with(b"@@ ") {
                    self.hunk(line);
                }
            }
            At::Start | At::Hunk { .. } => {}
        }
    }

    /// `@@ -a[,b] +c[,d] @@`: lines `c..c+d` of the new version changed.
    fn hunk(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let mut parts = text.split(' ').skip(1);
        let (Some(old), Some(new)) = (parts.next(), parts.next()) else {
            return;
        };
        let range = |s: &str| -> Option<(u32, u32)> {
            let s = s.get(1..)?;
            Some(match s.split_once(',') {
                Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                None => (s.parse().ok()?, 1),
            })
        };
        let (Some((_, old_n)), Some((start, new_n))) = (range(old), range(new)) else {
            return;
        };
        if new_n > 0
            && let Some(f) = &self.file
        {
            self.lines.add(f, start, start + new_n - 1);
        }
        self.at = if old_n == 0 && new_n == 0 {
            At::Between
        } else {
            At::Hunk {
                old: old_n,
                new: new_n,
            }
        };
    }

    /// The changed lines of every file the diff added, modified or renamed.
    pub fn finish(self) -> Lines {
        self.lines
    }
}

/// The path on a `+++ ` line: `b/PATH` (a trailing tab follows a name with a space), or
/// `"b/..."` quoted; `None` for `/dev/null` (a deleted file).
fn path_of(rest: &[u8]) -> Option<String> {
    let path = if rest.first() == Some(&b'"') {
        unquote(rest)?
    } else {
        let mut end = rest.len();
        while end > 0 && rest[end - 1] == b'\t' {
            end -= 1;
        }
        String::from_utf8(rest[..end].to_vec()).ok()?
    };
    if path == "/dev/null" {
        return None;
    }
    Some(path.strip_prefix("b/").unwrap_or(&path).to_string())
}

/// A path as git prints it: as is, or in double quotes with C escapes (`\t`, `\"`, `\\`,
/// octal bytes for what is not printable ASCII).
fn unquote(s: &[u8]) -> Option<String> {
    let Some(inner) = s.strip_prefix(b"\"") else {
        let end = s.iter().rposition(|&b| b != b'\t').map_or(0, |i| i + 1);
        return String::from_utf8(s[..end].to_vec()).ok();
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        match inner[i] {
            b'"' => return String::from_utf8(out).ok(),
            b'\\' => {
                let c = *inner.get(i + 1)?;
                i += 2;
                out.push(match c {
                    b'a' => 7,
                    b'b' => 8,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'v' => 11,
                    b'f' => 12,
                    b'r' => b'\r',
                    b'0'..=b'7' => {
                        let digits = inner.get(i - 1..i + 2)?;
                        i += 2;
                        let text = std::str::from_utf8(digits).ok()?;
                        u8::from_str_radix(text, 8).ok()?
                    }
                    other => other,
                });
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    None
}

/// Of the changed lines, those a test could cover: inside a function, method or class (module
/// level runs on import and is never a gap), neither blank nor only a comment. Files that do
/// not parse keep nothing.
pub fn coverable(repo: &Path, changed: &Lines) -> Lines {
    let mut out = Lines::default();
    for file in changed.files() {
        let Some(src) = std::fs::read_to_string(repo.join(file)).ok() else {
            continue;
        };
        let Some(parsed) = python::parse(&src) else {
            continue;
        };
        let text: Vec<&str> = src.lines().collect();
        // Which lines a function, method or class holds (marked once per unit: no search
        // per line, whatever the file's size).
        let mut in_unit = vec![false; text.len() + 1];
        for u in parsed.units() {
            let end = (u.end_line as usize).min(text.len());
            for slot in in_unit.iter_mut().take(end + 1).skip(u.start_line as usize) {
                *slot = true;
            }
        }
        for &(start, end) in changed.ranges(file) {
            for n in start..=end.min(text.len() as u32) {
                let t = text[(n - 1) as usize].trim();
                if in_unit[n as usize] && !t.is_empty() && !t.starts_with('#') {
                    out.add(file, n, n);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(diff: &[u8]) -> Lines {
        let mut p = DiffParser::default();
        for l in diff.split(|&b| b == b'\n') {
            p.line(l);
        }
        p.finish()
    }

    #[test]
    fn added_and_modified_lines_of_the_new_version() {
        let diff = b"diff --git a/calc.py b/calc.py
index 1..2 100644
--- a/calc.py
+++ b/calc.py
@@ -3,0 +4,2 @@ def add(a, b):
+    x = 1
+++ looks like a header but is an added line
@@ -10 +12 @@ def clamp(x, lo, hi):
-    return x
+    return y
@@ -20,3 +22,0 @@ def gone():
-    a
-    b
-    c
diff --git a/old name.py b/new name.py
similarity index 90%
rename from old name.py
rename to new name.py
index 3..4 100644
--- a/old name.py\t
+++ b/new name.py\t
@@ -1 +1 @@
-a = 1
+a = 2
diff --git a/moved.py b/pkg/moved.py
similarity index 100%
rename from moved.py
rename to pkg/moved.py
diff --git a/deleted.py b/deleted.py
deleted file mode 100644
index 5..0
--- a/deleted.py
+++ /dev/null
@@ -1,2 +0,0 @@
-def f():
-    pass
diff --git \"a/\\303\\251t\\303\\251 \\\"q\\\".py\" \"b/\\303\\251t\\303\\251 \\\"q\\\".py\"
new file mode 100644
index 0..6
--- /dev/null
+++ \"b/\\303\\251t\\303\\251 \\\"q\\\".py\"
@@ -0,0 +1,3 @@
+def g():
+    return 1
+
\\ No newline at end of file
diff --git a/data.py b/data.py
index 7..8 100644
Binary files a/data.py and b/data.py differ
";
        let lines = parse(diff);
        assert_eq!(
            lines.files().collect::<Vec<_>>(),
            ["calc.py", "new name.py", "été \"q\".py"]
        );
        assert_eq!(lines.ranges("calc.py"), [(4, 5), (12, 12)]);
        assert_eq!(lines.ranges("new name.py"), [(1, 1)]);
        assert_eq!(lines.ranges("été \"q\".py"), [(1, 3)]);
        assert_eq!(lines.count(), 7);
    }

    #[test]
    fn quoted_paths_unquote_like_git() {
        assert_eq!(unquote(b"\"a\\tb\\\\c\"").as_deref(), Some("a\tb\\c"));
        assert_eq!(unquote(b"\"\\346\\227\\245.py\"").as_deref(), Some("日.py"));
        assert_eq!(
            unquote(b"plain name.py\t").as_deref(),
            Some("plain name.py")
        );
        assert_eq!(unquote(b"\"unterminated"), None);
        assert_eq!(path_of(b"/dev/null"), None);
        assert_eq!(path_of(b"b/a b.py\t").as_deref(), Some("a b.py"));
    }

    #[test]
    fn coverable_lines_are_code_inside_a_function_or_class() {
        let d = tempfile::tempdir().expect("tmp");
        std::fs::write(
            d.path().join("m.py"),
            "X = 1\n\ndef f(x):\n    # why\n\n    return x\n\nclass K:\n    A = 2\n",
        )
        .expect("write");
        let mut changed = Lines::default();
        changed.add("m.py", 1, 9);
        changed.add("m.py", 40, 41);
        changed.add("missing.py", 1, 1);
        let c = coverable(d.path(), &changed);
        assert_eq!(c.ranges("m.py"), [(3, 3), (6, 6), (8, 9)]);
        assert_eq!(c.files().count(), 1);
    }
}
