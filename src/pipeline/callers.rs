//! The project's public functions that call a private target: a helper of a private module
//! (`click._termui_impl.open_url`, `ProgressBar`) is run through the public API that reaches
//! it (`click.termui.launch`, `click.termui.progressbar`). The generation prompt names them
//! with their signatures, and a test that calls one of them reaches the target.
//!
//! Read from the parsed sources (never imported), a name match: a function whose body names
//! the target is taken to call it. Validation decides whether a test really covers it.

use std::path::Path;

use super::detect::Project;
use super::gaps::Gap;
use super::python::{self, UnitKind};

/// Source files read, and the largest one.
const MAX_FILES: usize = 200;
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Callers named in a prompt, and the longest signature shown.
const MAX_CALLERS: usize = 3;
const MAX_SIGNATURE: usize = 160;

/// One public function of the project whose body names the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its dotted module (`click.termui`).
    pub module: String,
    pub name: String,
    /// Its `def` line(s), without `def ` and the closing colon, at most [`MAX_SIGNATURE`].
    pub signature: String,
}

/// Up to 3 public top-level functions of the project, other than the target itself, whose
/// body names `gap`'s function or class: those in a public module first (no part of its dotted
/// name starts with `_`), then the shortest. None for a public name of a public module: that
/// is tested directly, and its callers are often whole programs (astor's `strip_tree` is
/// called by `rtrip.convert`, which round-trips a directory tree).
pub fn of(project: &Project, repo: &Path, gap: &Gap) -> Vec<Caller> {
    let target = gap.top_name();
    let private = |name: &str| name.starts_with('_');
    if !private(target) && !gap.module.split('.').any(private) {
        return Vec::new();
    }
    let mut found: Vec<(bool, Caller)> = Vec::new();
    for file in project.sources.iter().take(MAX_FILES) {
        // The sources listed are regular files (detect walks without following links);
        // checked again here, since the checkout is the submitter's. Only a file that
        // mentions the target is parsed.
        let Some(parsed) = python::read_regular(&repo.join(file), MAX_FILE_BYTES)
            .filter(|text| text.contains(target))
            .and_then(|text| python::parse(&text))
        else {
            continue;
        };
        let module = project.module_name(file);
        if !module.split('.').all(python::is_identifier) {
            continue;
        }
        let private_module = module.split('.').any(private);
        for unit in parsed.units() {
            let public = unit.kind == UnitKind::Function
                && unit.class.is_none()
                && !unit.qualname.starts_with('_')
                && !(module == gap.module && unit.qualname == target);
            if public && parsed.identifiers_in(unit.bytes.clone()).contains(target) {
                let caller = Caller {
                    module: module.clone(),
                    name: unit.qualname.clone(),
                    signature: signature(&parsed.signature(&unit)),
                };
                found.push((private_module, caller));
            }
        }
    }
    found.sort_by_key(|(private, c)| (*private, c.module.len() + c.name.len()));
    found
        .into_iter()
        .map(|(_, c)| c)
        .take(MAX_CALLERS)
        .collect()
}

/// `def f(a, b=1) -> int:` → `f(a, b=1) -> int`, one line, cut at a character boundary.
fn signature(header: &str) -> String {
    let from_def = header.find("def ").map_or(header, |i| &header[i + 4..]);
    let one_line: String = from_def
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("( ", "(")
        .replace(", )", ")")
        .replace(" )", ")");
    let s = one_line.strip_suffix(':').unwrap_or(&one_line).trim_end();
    match s.char_indices().nth(MAX_SIGNATURE) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(file: &str, module: &str, qualname: &str, kind: UnitKind) -> Gap {
        Gap {
            file: file.into(),
            module: module.into(),
            qualname: qualname.into(),
            kind,
            start_line: 1,
            end_line: 2,
            missing_lines: vec![2],
            partial_lines: vec![],
            params: 1,
        }
    }

    /// A private module's function and class are reached through the public functions that
    /// name them, public modules first; a method's caller is found through its class; private
    /// functions, methods and the target itself are no callers, and a symlink is not read. A
    /// public name of a public module has none.
    #[test]
    fn public_functions_that_name_the_target_are_its_callers() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("pkg")).expect("mkdir");
        let write = |p: &str, s: &str| std::fs::write(d.path().join(p), s).expect("write");
        write("pkg/__init__.py", "");
        write(
            "pkg/_impl.py",
            "def open_url(url, wait=False):\n    return 0\n\ndef _helper():\n    return open_url('x')\n\ndef pager(text):\n    return open_url(text)\n\nclass Bar:\n    def show(self):\n        return 1\n",
        );
        write(
            "pkg/term.py",
            "from ._impl import open_url, Bar\n\ndef launch(\n    url,\n    wait=False,\n):\n    return open_url(url, wait)\n\ndef progressbar(n) -> 'Bar':\n    return Bar()\n\nclass K:\n    def m(self):\n        return open_url('y')\n",
        );
        let outside = tempfile::tempdir().expect("tempdir");
        let secret = outside.path().join("secret.py");
        std::fs::write(&secret, "def leak():\n    return open_url('SECRET')\n").expect("write");
        std::os::unix::fs::symlink(&secret, d.path().join("pkg/linked.py")).expect("symlink");
        let mut project = crate::pipeline::detect::detect(d.path()).expect("detects");
        // As if detect had listed it: the link is still not followed.
        project.sources.push("pkg/linked.py".into());

        let calls = of(
            &project,
            d.path(),
            &gap("pkg/_impl.py", "pkg._impl", "open_url", UnitKind::Function),
        );
        let named: Vec<(&str, &str, &str)> = calls
            .iter()
            .map(|c| (c.module.as_str(), c.name.as_str(), c.signature.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                ("pkg.term", "launch", "launch(url, wait=False)"),
                ("pkg._impl", "pager", "pager(text)"),
            ]
        );
        let calls = of(
            &project,
            d.path(),
            &gap("pkg/_impl.py", "pkg._impl", "Bar.show", UnitKind::Method),
        );
        assert_eq!(
            calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["progressbar"]
        );
        assert_eq!(calls[0].signature, "progressbar(n) -> 'Bar'");
        let public = gap("pkg/term.py", "pkg.term", "progressbar", UnitKind::Function);
        write(
            "pkg/cli.py",
            "from .term import progressbar\n\ndef main():\n    progressbar(3)\n",
        );
        project.sources.push("pkg/cli.py".into());
        assert_eq!(of(&project, d.path(), &public), []);
        let private = gap("pkg/term.py", "pkg.term", "_helper", UnitKind::Function);
        write("pkg/use.py", "def run():\n    return _helper()\n");
        project.sources.push("pkg/use.py".into());
        assert_eq!(
            of(&project, d.path(), &private)
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["run"]
        );
    }

    #[test]
    fn a_long_signature_is_cut() {
        let long = format!("def f({}):\n", "a, ".repeat(100));
        let s = signature(&long);
        assert_eq!(s.chars().count(), MAX_SIGNATURE + 1);
        assert!(s.ends_with('…'));
    }
}
