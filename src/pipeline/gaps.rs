//! Stage 3, gaps: Cobertura's missing lines and partly taken branches, mapped onto the
//! functions, methods and classes that contain them (parsed with tree-sitter). Files are
//! matched by their normalized path relative to the repository root.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::coverage::Coverage;
use super::detect::Project;
use super::python::{self, UnitKind};

/// Code that runs in no test yet: one function, method or class body.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    /// Repository-relative source path.
    pub file: String,
    /// Dotted module name to import it from.
    pub module: String,
    /// `func`, `Class.method`, or `Class` for lines in a class body outside any method.
    pub qualname: String,
    pub kind: UnitKind,
    pub start_line: u32,
    pub end_line: u32,
    pub missing_lines: Vec<u32>,
    /// Lines that run but leave a branch untaken.
    pub partial_lines: Vec<u32>,
    /// Parameters a test must supply (`self`, `cls` and `*`/`/` markers not counted).
    pub params: u32,
}

impl Gap {
    /// A stable key: `path::qualname`.
    pub fn key(&self) -> String {
        format!("{}::{}", self.file, self.qualname)
    }

    /// The top-level name a test imports to reach it.
    pub fn top_name(&self) -> &str {
        self.qualname.split('.').next().unwrap_or(&self.qualname)
    }

    /// What a test can gain here, cheaply: the missing lines and branches, scaled down for
    /// what makes a test hard for a small model to write — a private name, many parameters
    /// (each one a value to build right), a long body (more paths to set up).
    pub fn weight(&self) -> f64 {
        let n = (self.missing_lines.len() + self.partial_lines.len()) as f64;
        let leaf = self.qualname.rsplit('.').next().unwrap_or("");
        let private = leaf.starts_with('_') && !(leaf.starts_with("__") && leaf.ends_with("__"));
        let public = if private || self.top_name().starts_with('_') {
            0.5
        } else {
            1.0
        };
        let params = match self.params {
            0..=2 => 1.0,
            3..=4 => 0.75,
            _ => 0.5,
        };
        let size = match self.end_line.saturating_sub(self.start_line) + 1 {
            0..=60 => 1.0,
            61..=150 => 0.75,
            _ => 0.5,
        };
        n * public * params * size
    }
}

/// What `--only PATH[::NAME]` aims test generation at: a source file or directory (relative
/// to the repository), and in it, optionally, one function, class or method (`func`,
/// `Class`, `Class.method`; a class takes its methods along).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Aim {
    pub path: String,
    pub name: Option<String>,
}

impl Aim {
    /// Reads `PATH[::NAME]`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Aim, String> {
        let (path, name) = match text.split_once("::") {
            Some((p, n)) => (p, Some(n)),
            None => (text, None),
        };
        let path = path.trim().trim_start_matches("./").trim_end_matches('/');
        let rel = Path::new(path);
        if path.is_empty()
            || rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!(
                "`{text}`: PATH must be a file or directory inside the repository, relative to it, without `..`"
            ));
        }
        let name = match name.map(str::trim) {
            None => None,
            Some(n)
                if !n.is_empty()
                    && n.split('.').all(|part| {
                        !part.is_empty()
                            && !part.starts_with(|c: char| c.is_ascii_digit())
                            && part.chars().all(|c| c.is_alphanumeric() || c == '_')
                    }) =>
            {
                Some(n.to_string())
            }
            Some(n) => {
                return Err(format!(
                    "`{text}`: `{n}` is not a function, class or method name (`func`, `Class`, `Class.method`)"
                ));
            }
        };
        Ok(Aim {
            path: path.to_string(),
            name,
        })
    }

    /// Whether the source file `file` (repository-relative) is under this aim's path.
    pub fn covers_file(&self, file: &str) -> bool {
        file == self.path || file.starts_with(&format!("{}/", self.path))
    }

    /// Whether `gap` is what this aim names.
    pub fn covers(&self, gap: &Gap) -> bool {
        self.covers_file(&gap.file)
            && self
                .name
                .as_ref()
                .is_none_or(|n| gap.qualname == *n || gap.qualname.starts_with(&format!("{n}.")))
    }
}

/// Lines of a change, such as a pull request's: repository-relative path → the line numbers
/// (in the changed version) the change added or modified, as sorted, disjoint, inclusive
/// ranges. A gap restricted to them keeps only its missing and partial lines inside them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Lines {
    files: BTreeMap<String, Vec<(u32, u32)>>,
}

impl Lines {
    /// Adds lines `start..=end` of `file` (merged with what is there).
    pub fn add(&mut self, file: &str, start: u32, end: u32) {
        if start == 0 || end < start {
            return;
        }
        let ranges = self.files.entry(file.to_string()).or_default();
        // In order, as a diff gives them: at the end, without sorting again.
        match ranges.last_mut() {
            None => return ranges.push((start, end)),
            Some(last) if start > last.1.saturating_add(1) => return ranges.push((start, end)),
            Some(last) if start >= last.0 => {
                last.1 = last.1.max(end);
                return;
            }
            Some(_) => {}
        }
        ranges.push((start, end));
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for &(s, e) in ranges.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *ranges = merged;
    }

    /// Whether line `line` of `file` is among them.
    pub fn contains(&self, file: &str, line: u32) -> bool {
        self.files.get(file).is_some_and(|r| {
            let i = r.partition_point(|&(_, e)| e < line);
            r.get(i).is_some_and(|&(s, _)| s <= line)
        })
    }

    /// How many lines, in all files.
    pub fn count(&self) -> u64 {
        self.files
            .values()
            .flatten()
            .map(|&(s, e)| u64::from(e - s) + 1)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The files, in order.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// The ranges of one file.
    pub fn ranges(&self, file: &str) -> &[(u32, u32)] {
        self.files.get(file).map_or(&[], Vec::as_slice)
    }

    /// Keeps only the files `keep` says yes to.
    pub fn retain_files(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.files.retain(|f, _| keep(f));
    }

    /// `gap` with only its missing and partial lines that are among these; `None` when none is.
    pub fn restrict(&self, mut gap: Gap) -> Option<Gap> {
        gap.missing_lines.retain(|&l| self.contains(&gap.file, l));
        gap.partial_lines.retain(|&l| self.contains(&gap.file, l));
        (!gap.missing_lines.is_empty() || !gap.partial_lines.is_empty()).then_some(gap)
    }
}

/// The gaps of every source file, largest first. Lines outside any function or class
/// (module level) are left out: they run on import; so are the bodies of `@overload` stubs,
/// which never run.
pub fn find(project: &Project, repo: &Path, coverage: &Coverage) -> Vec<Gap> {
    let mut gaps = Vec::new();
    for file in &project.sources {
        let (missing, partial) = coverage.missing(file);
        if missing.is_empty() && partial.is_empty() {
            continue;
        }
        let Some(parsed) = std::fs::read_to_string(repo.join(file))
            .ok()
            .and_then(|s| python::parse(&s))
        else {
            continue;
        };
        let units = parsed.units();
        let mut by_unit: Vec<(usize, Vec<u32>, Vec<u32>)> = Vec::new();
        let mut add = |line: u32, is_partial: bool| {
            // The innermost unit holding the line: the last one in document order that does.
            let Some(i) = units
                .iter()
                .rposition(|u| u.start_line <= line && line <= u.end_line)
            else {
                return;
            };
            // An `@overload` stub's `...` never runs: no test can reach it.
            if units[i].is_overload() {
                return;
            }
            match by_unit.iter_mut().find(|(u, _, _)| *u == i) {
                Some((_, m, p)) => {
                    if is_partial {
                        p.push(line)
                    } else {
                        m.push(line)
                    }
                }
                None => by_unit.push(if is_partial {
                    (i, vec![], vec![line])
                } else {
                    (i, vec![line], vec![])
                }),
            }
        };
        for l in missing {
            add(l, false);
        }
        for l in partial {
            add(l, true);
        }
        for (i, m, p) in by_unit {
            let u = &units[i];
            let params = if u.kind == UnitKind::Class {
                0
            } else {
                count_params(&parsed.signature(u))
            };
            gaps.push(Gap {
                file: file.clone(),
                module: project.module_name(file),
                qualname: u.qualname.clone(),
                kind: u.kind,
                start_line: u.start_line,
                end_line: u.end_line,
                missing_lines: m,
                partial_lines: p,
                params,
            });
        }
    }
    // Cheapest reach first (see `Gap::weight`).
    gaps.sort_by(|a, b| {
        b.weight()
            .partial_cmp(&a.weight())
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.key().cmp(&b.key()))
    });
    gaps
}

/// The parameters a caller supplies, from a `def` header: top-level commas inside the
/// outermost parentheses; `self`, `cls`, bare `*` and `/` are not counted.
fn count_params(signature: &str) -> u32 {
    let Some(open) = signature.find('(') else {
        return 0;
    };
    let mut depth = 0i32;
    let mut parts: Vec<String> = vec![String::new()];
    for c in signature[open + 1..].chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => break,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty() && !p.starts_with('#'))
        .filter(|p| {
            let name = p.split([':', '=']).next().unwrap_or("").trim();
            !matches!(name, "self" | "cls" | "*" | "/")
        })
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::coverage;

    #[test]
    fn maps_lines_to_innermost_units_by_full_path() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        std::fs::create_dir_all(r.join("pkg")).expect("mkdir");
        std::fs::create_dir_all(r.join("other")).expect("mkdir");
        std::fs::write(r.join("pkg/__init__.py"), "").expect("write");
        std::fs::write(
            r.join("pkg/core.py"),
            "def f(x):\n    if x:\n        return 1\n    return 2\n\nclass K:\n    A = 1\n    def m(self):\n        return 3\n",
        )
        .expect("write");
        // Same basename, different file: its coverage must not leak into pkg/core.py.
        std::fs::write(r.join("other/core.py"), "def g():\n    return 1\n").expect("write");
        let project = crate::pipeline::detect::detect(r).expect("detects");
        let xml = r#"<coverage><sources><source>/workspace</source></sources><packages><package><classes>
<class filename="pkg/core.py"><lines>
<line number="1" hits="1"/><line number="2" hits="1" branch="true" condition-coverage="50% (1/2)" missing-branches="4"/>
<line number="3" hits="1"/><line number="4" hits="0"/><line number="6" hits="1"/><line number="7" hits="1"/>
<line number="8" hits="1"/><line number="9" hits="0"/></lines></class>
<class filename="other/core.py"><lines><line number="1" hits="1"/><line number="2" hits="1"/></lines></class>
</classes></package></packages></coverage>"#;
        let cov = coverage::parse(xml.as_bytes(), "/workspace").expect("parses");
        let gaps = find(&project, r, &cov);
        let got: Vec<(String, Vec<u32>, Vec<u32>)> = gaps
            .iter()
            .map(|g| (g.key(), g.missing_lines.clone(), g.partial_lines.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("pkg/core.py::f".to_string(), vec![4], vec![2]),
                ("pkg/core.py::K.m".to_string(), vec![9], vec![]),
            ]
        );
        assert_eq!(gaps[1].module, "pkg.core");
        assert_eq!(gaps[1].top_name(), "K");
    }

    /// click's `decorators.py`: `group` is declared four times with `@t.overload` before its
    /// real definition (two here). The stubs' `...` never run; a method's stub is not its
    /// class's gap either.
    #[test]
    fn overload_stubs_are_no_gap() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        std::fs::write(
            r.join("deco.py"),
            "import typing as t\n\n@t.overload\ndef group(name: str) -> int:\n    ...\n\n@t.overload\ndef group(name: None = None) -> int:\n    ...\n\ndef group(name=None):\n    if name:\n        return 1\n    return 2\n\nclass K:\n    @overload\n    def m(self, x: int) -> int:\n        ...\n\n    def m(self, x):\n        return x\n",
        )
        .expect("write");
        let project = crate::pipeline::detect::detect(r).expect("detects");
        let lines: String = [1, 3, 4, 7, 8, 11, 12, 16, 17, 18, 21]
            .iter()
            .map(|n| format!("<line number=\"{n}\" hits=\"1\"/>"))
            .chain(
                [5, 9, 13, 14, 19, 22]
                    .iter()
                    .map(|n| format!("<line number=\"{n}\" hits=\"0\"/>")),
            )
            .collect();
        let xml = format!(
            r#"<coverage><sources><source>/workspace</source></sources><packages><package><classes>
<class filename="deco.py"><lines>{lines}</lines></class></classes></package></packages></coverage>"#
        );
        let cov = coverage::parse(xml.as_bytes(), "/workspace").expect("parses");
        let got: Vec<(String, u32, Vec<u32>)> = find(&project, r, &cov)
            .iter()
            .map(|g| (g.key(), g.start_line, g.missing_lines.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("deco.py::group".to_string(), 11, vec![13, 14]),
                ("deco.py::K.m".to_string(), 21, vec![22]),
            ]
        );
    }

    #[test]
    fn gaps_rank_by_cheap_reach() {
        assert_eq!(
            count_params("def f(self, a, b: dict[str, int] = {}, *args, **kw):"),
            4
        );
        assert_eq!(count_params("def f(\n    a,\n    *,\n    b=(1, 2),\n):"), 2);
        assert_eq!(count_params("def f():"), 0);
        let gap = |qualname: &str, missing: u32, params: u32, len: u32| Gap {
            file: "m.py".into(),
            module: "m".into(),
            qualname: qualname.into(),
            kind: UnitKind::Function,
            start_line: 1,
            end_line: len,
            missing_lines: (0..missing).collect(),
            partial_lines: vec![],
            params,
        };
        // Fewer missing lines, but public, one parameter and short: first.
        let easy = gap("parse", 4, 1, 20);
        assert!(easy.weight() > gap("_render", 6, 5, 20).weight());
        assert!(easy.weight() > gap("render", 5, 6, 200).weight());
        // Equal otherwise, more missing lines win.
        assert!(gap("a", 5, 1, 20).weight() > easy.weight());
    }

    #[test]
    fn aims_name_files_directories_and_units() {
        let gap = |file: &str, qualname: &str| Gap {
            file: file.into(),
            module: "m".into(),
            qualname: qualname.into(),
            kind: UnitKind::Function,
            start_line: 1,
            end_line: 2,
            missing_lines: vec![2],
            partial_lines: vec![],
            params: 1,
        };
        let file = Aim::parse("./pkg/core.py").expect("valid");
        assert!(file.covers(&gap("pkg/core.py", "f")));
        assert!(!file.covers(&gap("pkg/core_extra.py", "f")));
        let dir = Aim::parse("pkg/").expect("valid");
        assert!(dir.covers(&gap("pkg/sub/x.py", "f")));
        assert!(!dir.covers(&gap("pkgs/x.py", "f")));
        let class = Aim::parse("pkg/core.py::Parser").expect("valid");
        assert!(class.covers(&gap("pkg/core.py", "Parser")));
        assert!(class.covers(&gap("pkg/core.py", "Parser.feed")));
        assert!(!class.covers(&gap("pkg/core.py", "ParserError")));
        let method = Aim::parse("pkg/core.py::Parser.feed").expect("valid");
        assert!(method.covers(&gap("pkg/core.py", "Parser.feed")));
        assert!(!method.covers(&gap("pkg/core.py", "Parser.close")));
    }

    #[test]
    fn changed_lines_restrict_gaps_to_what_they_touch() {
        let mut lines = Lines::default();
        lines.add("pkg/core.py", 10, 12);
        lines.add("pkg/core.py", 4, 4);
        lines.add("pkg/core.py", 13, 14);
        lines.add("pkg/core.py", 3, 2);
        lines.add("other.py", 1, 1);
        assert_eq!(lines.ranges("pkg/core.py"), [(4, 4), (10, 14)]);
        assert_eq!(lines.count(), 7);
        assert!(lines.contains("pkg/core.py", 4) && lines.contains("pkg/core.py", 14));
        assert!(!lines.contains("pkg/core.py", 5) && !lines.contains("pkg/core.py", 15));
        assert!(!lines.contains("pkg/other.py", 4));
        let gap = |missing: Vec<u32>, partial: Vec<u32>| Gap {
            file: "pkg/core.py".into(),
            module: "pkg.core".into(),
            qualname: "f".into(),
            kind: UnitKind::Function,
            start_line: 1,
            end_line: 20,
            missing_lines: missing,
            partial_lines: partial,
            params: 1,
        };
        let kept = lines
            .restrict(gap(vec![2, 4, 11, 18], vec![3, 12]))
            .expect("kept");
        assert_eq!(
            (kept.missing_lines, kept.partial_lines),
            (vec![4, 11], vec![12])
        );
        assert!(lines.restrict(gap(vec![2, 18], vec![5])).is_none());
        lines.retain_files(|f| f != "other.py");
        assert_eq!(lines.files().collect::<Vec<_>>(), ["pkg/core.py"]);
    }

    #[test]
    fn bad_aims_say_what_is_wrong() {
        for (text, why) in [
            ("../x.py", "without `..`"),
            ("/etc/x.py", "relative"),
            ("", "PATH must be"),
            ("a.py::", "not a function"),
            ("a.py::1x", "not a function"),
            ("a.py::f()", "not a function"),
            ("a.py::A..b", "not a function"),
        ] {
            let err = Aim::parse(text).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
