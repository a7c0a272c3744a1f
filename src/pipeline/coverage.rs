//! Cobertura XML (as coverage.py writes it) → per-file line and branch coverage, keyed by the
//! file's normalized path relative to the repository root — never by basename.
//!
//! The file comes out of a sandbox: it is size-capped and parsed defensively.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// The most bytes of coverage XML that are parsed.
pub const MAX_COVERAGE_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CoverageError {
    #[error("coverage file is larger than {MAX_COVERAGE_BYTES} bytes")]
    TooLarge,
    #[error("coverage file is not well-formed XML")]
    Xml(#[source] quick_xml::Error),
    #[error("coverage file has no <coverage> element")]
    NotCobertura,
}

/// One line's coverage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineCov {
    pub hit: bool,
    /// Branch arcs leaving this line: total, and the destinations not taken (coverage.py's
    /// `missing-branches`; exits are negative numbers).
    pub branches: Option<Branches>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Branches {
    pub total: u32,
    pub missing: BTreeSet<String>,
}

impl Branches {
    pub fn covered(&self) -> u32 {
        self.total.saturating_sub(self.missing.len() as u32)
    }
}

/// Coverage of one file: line number → coverage.
pub type FileCov = BTreeMap<u32, LineCov>;

/// Coverage of a run, by normalized repository-relative path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    pub files: BTreeMap<String, FileCov>,
}

/// Totals over every file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Totals {
    pub lines: u32,
    pub lines_covered: u32,
    pub branches: u32,
    pub branches_covered: u32,
}

impl Totals {
    pub fn line_percent(&self) -> f64 {
        pct(self.lines_covered, self.lines)
    }
    pub fn branch_percent(&self) -> f64 {
        pct(self.branches_covered, self.branches)
    }
    /// coverage.py's combined figure: (covered lines + covered arcs) / (lines + arcs).
    pub fn combined_percent(&self) -> f64 {
        pct(
            u64::from(self.lines_covered) + u64::from(self.branches_covered),
            u64::from(self.lines) + u64::from(self.branches),
        )
    }
}

fn pct(a: impl Into<u64>, b: impl Into<u64>) -> f64 {
    let (a, b): (u64, u64) = (a.into(), b.into());
    if b == 0 {
        100.0
    } else {
        (a as f64) * 100.0 / (b as f64)
    }
}

/// What a run covers that another did not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Gain {
    pub lines: u32,
    pub branches: u32,
    /// `path:line` of the newly covered lines (the first 50).
    pub where_: Vec<String>,
}

impl Gain {
    pub fn is_empty(&self) -> bool {
        self.lines == 0 && self.branches == 0
    }
}

impl Coverage {
    pub fn totals(&self) -> Totals {
        self.totals_of(|_| true)
    }

    /// Totals over the files `keep` accepts (by repository-relative path).
    pub fn totals_of(&self, mut keep: impl FnMut(&str) -> bool) -> Totals {
        let mut t = Totals::default();
        for (path, lines) in &self.files {
            if !keep(path) {
                continue;
            }
            for l in lines.values() {
                t.lines = t.lines.saturating_add(1);
                t.lines_covered = t.lines_covered.saturating_add(l.hit as u32);
                if let Some(b) = &l.branches {
                    t.branches = t.branches.saturating_add(b.total);
                    t.branches_covered = t.branches_covered.saturating_add(b.covered());
                }
            }
        }
        t
    }

    /// Covered by either: a line hit by one is hit; an arc missing from the union is one
    /// missing from both.
    pub fn union(&self, other: &Coverage) -> Coverage {
        let mut out = self.clone();
        for (path, lines) in &other.files {
            let mine = out.files.entry(path.clone()).or_default();
            for (n, l) in lines {
                match mine.get_mut(n) {
                    None => {
                        mine.insert(*n, l.clone());
                    }
                    Some(m) => {
                        m.hit |= l.hit;
                        m.branches = match (&m.branches, &l.branches) {
                            (Some(a), Some(b)) => Some(Branches {
                                total: a.total.max(b.total),
                                missing: a.missing.intersection(&b.missing).cloned().collect(),
                            }),
                            (a, b) => a.clone().or_else(|| b.clone()),
                        };
                    }
                }
            }
        }
        out
    }

    /// Lines and arcs this run covers that `base` does not, in files `base` knows.
    pub fn gain_over(&self, base: &Coverage) -> Gain {
        let mut g = Gain::default();
        for (path, lines) in &self.files {
            let Some(b) = base.files.get(path) else {
                continue;
            };
            for (n, l) in lines {
                let Some(bl) = b.get(n) else { continue };
                if l.hit && !bl.hit {
                    g.lines += 1;
                    if g.where_.len() < 50 {
                        g.where_.push(format!("{path}:{n}"));
                    }
                }
                if let (Some(mine), Some(theirs)) = (&l.branches, &bl.branches) {
                    // Arcs missing in base but not here.
                    g.branches += theirs.missing.difference(&mine.missing).count() as u32;
                }
            }
        }
        g
    }

    /// Lines not hit, and lines with arcs not taken, for one file.
    pub fn missing(&self, path: &str) -> (Vec<u32>, Vec<u32>) {
        let mut lines = Vec::new();
        let mut partial = Vec::new();
        if let Some(f) = self.files.get(path) {
            for (n, l) in f {
                if !l.hit {
                    lines.push(*n);
                } else if l.branches.as_ref().is_some_and(|b| !b.missing.is_empty()) {
                    partial.push(*n);
                }
            }
        }
        (lines, partial)
    }
}

/// Normalizes a path to forward slashes with no `.`/`..`/empty parts (a `..` above the start
/// is kept out, which makes such a path never match a repository file).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split(['/', '\\']) {
        match p {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return format!("../{}", path.trim_start_matches("../"));
                }
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Parses Cobertura XML. `workspace` is where the repository was in the sandbox (e.g.
/// `/workspace`): absolute file names and `<source>` directories are made relative to it.
pub fn parse(xml: &[u8], workspace: &str) -> Result<Coverage, CoverageError> {
    parse_for(xml, workspace, &[])
}

/// Like [`parse`]; where a file name could be relative to more than one `<source>` (or to
/// none), the reading that names one of `known` (repository-relative paths) wins.
pub fn parse_for(xml: &[u8], workspace: &str, known: &[String]) -> Result<Coverage, CoverageError> {
    use quick_xml::events::Event;
    if xml.len() > MAX_COVERAGE_BYTES {
        return Err(CoverageError::TooLarge);
    }
    let mut reader = quick_xml::Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let ws = normalize(workspace);
    let mut sources: Vec<String> = Vec::new();
    let mut in_source = false;
    let mut saw_root = false;
    // (filename attribute, lines) of each <class>.
    let mut classes: Vec<(String, FileCov)> = Vec::new();
    let mut current: Option<usize> = None;
    let mut in_method = 0usize;

    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(CoverageError::Xml)?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                let attrs = attributes(e);
                match e.name().as_ref() {
                    "coverage" => saw_root = true,
                    "source" if !empty => in_source = true,
                    "class" => {
                        let f = attrs.get("filename").cloned().unwrap_or_default();
                        classes.push((f, FileCov::new()));
                        current = if empty { None } else { Some(classes.len() - 1) };
                    }
                    "method" if !empty => in_method += 1,
                    "line" if in_method == 0 => {
                        if let (Some(i), Some(n)) = (
                            current,
                            attrs.get("number").and_then(|n| n.parse::<u32>().ok()),
                        ) {
                            let hit = attrs
                                .get("hits")
                                .and_then(|h| h.parse::<u64>().ok())
                                .unwrap_or(0)
                                > 0;
                            let branches =
                                if attrs.get("branch").map(String::as_str) == Some("true") {
                                    branch_info(&attrs)
                                } else {
                                    None
                                };
                            classes[i].1.insert(n, LineCov { hit, branches });
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) if in_source => {
                sources.push(t.as_ref().trim().to_string());
            }
            Event::End(ref e) => match e.name().as_ref() {
                "source" => in_source = false,
                "class" => current = None,
                "method" => in_method = in_method.saturating_sub(1),
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !saw_root {
        return Err(CoverageError::NotCobertura);
    }

    let mut cov = Coverage::default();
    for (filename, lines) in classes {
        let candidates = relative_paths(&filename, &sources, &ws);
        let path = candidates
            .iter()
            .find(|c| known.contains(c))
            .or(candidates.first())
            .cloned()
            .unwrap_or_default();
        let entry = cov.files.entry(path).or_default();
        for (n, l) in lines {
            entry.insert(n, l);
        }
    }
    Ok(cov)
}

/// The readings of a file name, most likely first: relative to each `<source>` (absolute
/// ones made relative to the workspace; coverage.py writes relative ones with
/// `relative_files`), then as it stands.
fn relative_paths(filename: &str, sources: &[String], ws: &str) -> Vec<String> {
    let strip = |abs: &str| -> Option<String> {
        let n = normalize(abs);
        if n == ws {
            Some(String::new())
        } else {
            n.strip_prefix(&format!("{ws}/")).map(str::to_string)
        }
    };
    if filename.starts_with('/') {
        return vec![strip(filename).unwrap_or_else(|| normalize(filename))];
    }
    let mut out = Vec::new();
    for s in sources {
        let base = if s.starts_with('/') {
            match strip(s) {
                Some(b) => b,
                None => continue,
            }
        } else {
            normalize(s)
        };
        let p = normalize(&format!("{base}/{filename}"));
        if !out.contains(&p) {
            out.push(p);
        }
    }
    let plain = normalize(filename);
    if !out.contains(&plain) {
        out.push(plain);
    }
    out
}

fn attributes(e: &quick_xml::events::BytesStart<'_>) -> BTreeMap<String, String> {
    e.attributes()
        .flatten()
        .map(|a| {
            (
                a.key.as_ref().to_string(),
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .map(|v| v.into_owned())
                    .unwrap_or_else(|_| a.value.to_string()),
            )
        })
        .collect()
}

/// `condition-coverage="50% (1/2)"` and `missing-branches="7,-1"`.
/// The most branches one line may claim in a report.
const MAX_BRANCHES_PER_LINE: u32 = 4096;

fn branch_info(attrs: &BTreeMap<String, String>) -> Option<Branches> {
    let cc = attrs.get("condition-coverage")?;
    let inner = cc.split('(').nth(1)?.trim_end_matches(')');
    let (covered, total) = inner.split_once('/')?;
    let covered: u32 = covered.trim().parse().ok()?;
    let total: u32 = total.trim().parse().ok()?;
    // A line has a handful of branches; a report claiming more is not believed (the
    // report comes out of a sandbox).
    if total > MAX_BRANCHES_PER_LINE || covered > total {
        return None;
    }
    let mut missing: BTreeSet<String> = attrs
        .get("missing-branches")
        .map(|m| {
            m.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    // Without missing-branches, stand-in names keep the count right.
    let want = total.saturating_sub(covered) as usize;
    let mut i = 0;
    while missing.len() < want {
        missing.insert(format!("?{i}"));
        i += 1;
    }
    Some(Branches { total, missing })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `cobertura` fuzz target: a report from a sandbox claiming absurd branch
    /// counts neither overflows the totals nor makes cordon allocate a name per branch.
    #[test]
    fn absurd_branch_counts_are_not_believed() {
        let huge = br#"<coverage><class filename="a"><line number="1" branch="true" condition-coverage="(0/4000000000)"/></class></coverage>"#;
        let c = parse(huge, "/workspace").expect("parses");
        assert_eq!(c.totals().branches, 0);
        let overflow = br#"<coverage><class filename="a"><line number="1" branch="true" condition-coverage="(4095/4095)"/><line number="2" branch="true" condition-coverage="(1/1)"/></class><class filename="b"><line number="1" branch="true" condition-coverage="(4294967295/4294967295)"/></class></coverage>"#;
        let c = parse(overflow, "/workspace").expect("parses");
        assert_eq!(c.totals().branches, 4096);
    }

    const XML: &str = r#"<?xml version="1.0" ?>
<coverage version="7.2.1" line-rate="0.5" branch-rate="0.5">
  <sources><source>/workspace/src</source></sources>
  <packages><package name="pkg"><classes>
    <class name="core.py" filename="pkg/core.py" line-rate="0.5">
      <methods/>
      <lines>
        <line number="1" hits="1"/>
        <line number="2" hits="1" branch="true" condition-coverage="50% (1/2)" missing-branches="4"/>
        <line number="3" hits="1"/>
        <line number="4" hits="0"/>
      </lines>
    </class>
    <class name="__init__.py" filename="pkg/__init__.py"><methods/><lines/></class>
  </classes></package></packages>
</coverage>"#;

    #[test]
    fn parses_relative_to_the_workspace() {
        let c = parse(XML.as_bytes(), "/workspace").expect("parses");
        assert!(
            c.files.contains_key("src/pkg/core.py"),
            "{:?}",
            c.files.keys()
        );
        let t = c.totals();
        assert_eq!(
            (t.lines, t.lines_covered, t.branches, t.branches_covered),
            (4, 3, 2, 1)
        );
        assert_eq!(c.missing("src/pkg/core.py"), (vec![4], vec![2]));
        // A file of the same basename elsewhere is a different file.
        assert_eq!(c.missing("core.py"), (vec![], vec![]));
    }

    /// `--only`'s figure: the totals of the aimed files alone.
    #[test]
    fn totals_of_some_files() {
        let a = parse(XML.as_bytes(), "/workspace").expect("parses");
        let other = XML
            .replace("pkg/core.py", "pkg/other.py")
            .replace("hits=\"0\"", "hits=\"1\"");
        let c = a.union(&parse(other.as_bytes(), "/workspace").expect("parses"));
        let all = c.totals();
        assert_eq!((all.lines, all.lines_covered), (8, 7));
        let core = c.totals_of(|f| f == "src/pkg/core.py");
        assert_eq!(
            (
                core.lines,
                core.lines_covered,
                core.branches,
                core.branches_covered
            ),
            (4, 3, 2, 1)
        );
        assert_eq!(c.totals_of(|_| false), Totals::default());
    }

    #[test]
    fn union_and_gain() {
        let a = parse(XML.as_bytes(), "/workspace").expect("parses");
        let b_xml = XML
            .replace(
                r#"<line number="4" hits="0"/>"#,
                r#"<line number="4" hits="2"/>"#,
            )
            .replace(
                r#"condition-coverage="50% (1/2)" missing-branches="4""#,
                r#"condition-coverage="100% (2/2)""#,
            );
        let b = parse(b_xml.as_bytes(), "/workspace").expect("parses");
        let g = b.gain_over(&a);
        assert_eq!((g.lines, g.branches), (1, 1));
        assert_eq!(g.where_, vec!["src/pkg/core.py:4"]);
        let u = a.union(&b);
        assert_eq!(u.totals().lines_covered, 4);
        assert_eq!(u.totals().branches_covered, 2);
        assert!(a.gain_over(&u).is_empty());
    }

    #[test]
    fn relative_sources_resolve_against_known_files() {
        let xml = r#"<coverage><sources><source>src</source><source>.</source></sources><packages><package><classes>
<class filename="pkg/a.py"><lines><line number="1" hits="1"/></lines></class>
<class filename="tools/b.py"><lines><line number="1" hits="0"/></lines></class>
</classes></package></packages></coverage>"#;
        let known = vec!["src/pkg/a.py".to_string(), "tools/b.py".to_string()];
        let c = parse_for(xml.as_bytes(), "/workspace", &known).expect("parses");
        assert_eq!(
            c.files.keys().collect::<Vec<_>>(),
            vec!["src/pkg/a.py", "tools/b.py"]
        );
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize("./a//b/../c.py"), "a/c.py");
        assert_eq!(normalize("/workspace/x.py"), "workspace/x.py");
        assert!(normalize("../etc/passwd").starts_with(".."));
        assert!(matches!(
            parse(b"<nope/>", "/w"),
            Err(CoverageError::NotCobertura)
        ));
        assert!(parse(b"<coverage><a></b></coverage>", "/w").is_err());
    }
}
