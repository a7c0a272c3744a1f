//! What the project's own source says about a name a failing test got wrong, for the fix
//! prompt. The main loss on click's decorators was the tests' own calls: a `TypeError` from a
//! keyword the callee does not take, an `AttributeError` for a name a module does not have.
//! The fix round showed the model the error only, and its second guess was as wrong as its
//! first. Here the error's name is looked up in the repository (parsed, never imported) and
//! the fix prompt gets the truth beside the error:
//!
//! - `TypeError: NAME() got an unexpected keyword argument …` (or `missing … argument`,
//!   `takes … arguments`): NAME's real signature (`Option.__init__`, a function, a class's
//!   `__init__`).
//! - `AttributeError: module 'M' has no attribute 'X'`: the public names M really has.
//! - `AttributeError: 'K' object has no attribute 'X'`: K's public methods and attributes.
//!
//! A name the project does not define (the standard library's, a dependency's) gets no hint.
//! The error text comes from the sandbox (the submitter's code wrote it): it is only compared
//! with names the project defines, and every hint is bounded.

use std::path::Path;

use super::detect::Project;
use super::python::{self, Unit, UnitKind};

/// Longest hint, in characters.
const MAX_HINT: usize = 700;
/// Most names listed for a module or class.
const MAX_NAMES: usize = 40;
/// Largest source file read for a hint.
const MAX_FILE: u64 = 1 << 20;

/// What an error line names that the project may define.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Named {
    /// A callable called with the wrong arguments (`Option.__init__`, `version_option`).
    Call(String),
    /// A module that lacks an attribute (`pathspec.util`).
    Module(String),
    /// A class whose instances (or itself) lack an attribute.
    Class(String),
}

/// Hints for the failure text `error` (pytest's `E   ` lines), at most one per named thing.
pub fn for_error(error: &str, project: &Project, repo: &Path) -> Vec<String> {
    let mut named: Vec<Named> = error
        .lines()
        .map(|l| l.trim_start_matches('E').trim())
        .filter_map(named_in)
        .collect();
    named.dedup();
    if named.is_empty() {
        return Vec::new();
    }
    let files = read_sources(project, repo);
    named
        .iter()
        .filter_map(|n| hint(n, project, &files))
        .map(|h| clip(h, MAX_HINT))
        .collect()
}

/// The name an error line is about, for the lines this module knows.
fn named_in(line: &str) -> Option<Named> {
    if let Some(rest) = line.strip_prefix("TypeError: ") {
        let (name, after) = rest.split_once("() ")?;
        let about_arguments = after.contains("argument");
        let name = name.trim();
        return (about_arguments && is_dotted(name)).then(|| Named::Call(name.to_string()));
    }
    let rest = line.strip_prefix("AttributeError: ")?;
    let quoted = |s: &str| -> Option<String> {
        let s = s.strip_prefix('\'')?;
        Some(s[..s.find('\'')?].to_string())
    };
    if let Some(m) = rest.strip_prefix("module ") {
        let m = quoted(m)?;
        return is_dotted(&m).then_some(Named::Module(m));
    }
    let rest = rest.strip_prefix("type object ").unwrap_or(rest);
    let (class, after) = rest.split_once("' ")?;
    let class = quoted(&format!("{class}'"))?;
    (after.contains("has no attribute") && python::is_identifier(&class))
        .then_some(Named::Class(class))
}

fn is_dotted(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(python::is_identifier)
}

/// The project's source files, parsed: (path, parsed, units).
type Sources = Vec<(String, python::Parsed, Vec<Unit>)>;

fn read_sources(project: &Project, repo: &Path) -> Sources {
    project
        .sources
        .iter()
        .filter_map(|rel| {
            let parsed = python::parse(&python::read_regular(&repo.join(rel), MAX_FILE)?)?;
            // A name's signature is its real definition's, not an `@overload` stub's.
            let mut units = parsed.units();
            units.retain(|u| !u.is_overload());
            Some((rel.clone(), parsed, units))
        })
        .collect()
}

fn hint(named: &Named, project: &Project, files: &Sources) -> Option<String> {
    match named {
        Named::Call(name) => call_hint(name, files),
        Named::Module(m) => module_hint(m, project, files),
        Named::Class(k) => class_hint(k, files),
    }
}

/// `NAME`'s signature: the unit whose qualified name is NAME or ends with `.NAME`; for a
/// class, its `__init__`.
fn call_hint(name: &str, files: &Sources) -> Option<String> {
    let suffix = format!(".{name}");
    let matches = |u: &Unit| u.qualname == name || u.qualname.ends_with(&suffix);
    let (rel, parsed, unit) = files.iter().find_map(|(rel, p, units)| {
        let u = units
            .iter()
            .find(|u| matches(u) && u.kind != UnitKind::Class)
            .or_else(|| {
                let class = units
                    .iter()
                    .find(|u| matches(u) && u.kind == UnitKind::Class)?;
                let init = format!("{}.__init__", class.qualname);
                units.iter().find(|u| u.qualname == init).or(Some(class))
            })?;
        Some((rel, p, u))
    })?;
    let signature = parsed.signature(unit);
    let signature = signature.trim_end_matches('\n');
    Some(format!(
        "`{name}` is defined in `{rel}` as:\n```python\n{signature}\n```"
    ))
}

/// The public top-level names of the project's module `m` (a package's `__init__.py`
/// counts its imports, which is how packages export).
fn module_hint(m: &str, project: &Project, files: &Sources) -> Option<String> {
    let (_, parsed, _) = files.iter().find(|(rel, _, _)| {
        let name = project.module_name(rel);
        name == m || name.strip_suffix(".__init__") == Some(m)
    })?;
    let mut names: Vec<String> = parsed
        .top_level()
        .into_iter()
        .map(|t| t.name)
        .chain(
            parsed
                .from_imports()
                .into_iter()
                .flat_map(|(_, _, names)| names)
                .map(|(name, alias)| alias.unwrap_or(name)),
        )
        .filter(|n| python::is_identifier(n) && !n.starts_with('_'))
        .collect();
    names.sort();
    names.dedup();
    (!names.is_empty()).then(|| format!("module `{m}` has: {}", listed(&names)))
}

/// The public methods of class `k` and the attributes its `__init__` sets.
fn class_hint(k: &str, files: &Sources) -> Option<String> {
    let suffix = format!(".{k}");
    let (parsed, units, class) = files.iter().find_map(|(_, p, units)| {
        let c = units.iter().find(|u| {
            u.kind == UnitKind::Class && (u.qualname == k || u.qualname.ends_with(&suffix))
        })?;
        Some((p, units, c))
    })?;
    let body = &parsed.src[class.bytes.clone()];
    let methods = units
        .iter()
        .filter(|u| u.class.as_deref() == Some(class.qualname.as_str()))
        .filter_map(|u| u.qualname.rsplit('.').next().map(str::to_string));
    let attributes = body.split("self.").skip(1).filter_map(|rest| {
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let after = rest[name.len()..].trim_start();
        (after.starts_with('=') && !after.starts_with("==")).then_some(name)
    });
    let mut names: Vec<String> = methods
        .chain(attributes)
        .filter(|n| python::is_identifier(n) && !n.starts_with('_'))
        .collect();
    names.sort();
    names.dedup();
    (!names.is_empty()).then(|| format!("`{k}` objects have: {}", listed(&names)))
}

fn listed(names: &[String]) -> String {
    let mut s = names
        .iter()
        .take(MAX_NAMES)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_NAMES {
        s.push_str(", …");
    }
    s
}

fn clip(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max).collect();
    out.push_str("\n…");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(dir: &Path, files: &[(&str, &str)]) -> Project {
        for (rel, src) in files {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, src).unwrap();
        }
        super::super::detect::detect(dir).unwrap()
    }

    #[test]
    fn error_lines_name_what_the_project_may_define() {
        let cases = [
            (
                "TypeError: version_option() got an unexpected keyword argument 'foo'",
                Some(Named::Call("version_option".into())),
            ),
            (
                "TypeError: Option.__init__() missing 1 required positional argument: 'x'",
                Some(Named::Call("Option.__init__".into())),
            ),
            (
                "TypeError: f() takes 2 positional arguments but 3 were given",
                Some(Named::Call("f".into())),
            ),
            ("TypeError: 'int' object is not callable", None),
            ("TypeError: unsupported operand type(s) for +: 'int'", None),
            (
                "AttributeError: module 'pathspec.util' has no attribute 'nope'",
                Some(Named::Module("pathspec.util".into())),
            ),
            (
                "AttributeError: 'Editor' object has no attribute 'run'",
                Some(Named::Class("Editor".into())),
            ),
            (
                "AttributeError: type object 'Editor' has no attribute 'run'",
                Some(Named::Class("Editor".into())),
            ),
            ("AttributeError: 'x y' object has no attribute 'z'", None),
            ("AssertionError: assert 1 == 2", None),
        ];
        for (line, want) in cases {
            assert_eq!(named_in(line), want, "{line}");
        }
    }

    #[test]
    fn a_wrong_call_gets_the_real_signature_and_a_missing_name_the_real_ones() {
        let d = tempfile::tempdir().unwrap();
        let p = project(
            d.path(),
            &[
                (
                    "pkg/__init__.py",
                    "from .core import Option as Option, helper\n_private = 1\n",
                ),
                (
                    "pkg/core.py",
                    "class Option:\n    def __init__(self, decls, *, default=None):\n        self.decls = decls\n        self.seen == 1\n\n    def show(self):\n        pass\n\n    def _hidden(self):\n        pass\n\n\ndef helper(a,\n           b=2):\n    return a\n",
                ),
                ("tests/test_core.py", "def test_x():\n    pass\n"),
            ],
        );
        let error = "    def test_a():\n>       Option(1, bad=2)\nE       TypeError: Option.__init__() got an unexpected keyword argument 'bad'\nE       TypeError: helper() missing 1 required positional argument: 'a'\nE   AttributeError: module 'pkg' has no attribute 'nope'\nE   AttributeError: 'Option' object has no attribute 'hide'\nE   TypeError: len() takes exactly one argument (2 given)";
        let hints = for_error(error, &p, d.path());
        assert_eq!(
            hints,
            vec![
                "`Option.__init__` is defined in `pkg/core.py` as:\n```python\ndef __init__(self, decls, *, default=None):\n```".to_string(),
                "`helper` is defined in `pkg/core.py` as:\n```python\ndef helper(a,\n           b=2):\n```".to_string(),
                "module `pkg` has: Option, helper".to_string(),
                "`Option` objects have: decls, show".to_string(),
            ]
        );
    }

    #[test]
    fn a_symlinked_source_is_not_read() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(
            outside.path().join("secret.py"),
            "def leaked(token='hunter2'):\n    pass\n",
        )
        .unwrap();
        let p = project(
            d.path(),
            &[
                ("pkg/__init__.py", ""),
                ("tests/test_a.py", "def test_x():\n    pass\n"),
            ],
        );
        std::os::unix::fs::symlink(
            outside.path().join("secret.py"),
            d.path().join("pkg/secret.py"),
        )
        .unwrap();
        let mut p = p;
        p.sources.push("pkg/secret.py".into());
        let hints = for_error(
            "E   TypeError: leaked() missing 1 required positional argument: 'x'",
            &p,
            d.path(),
        );
        assert!(hints.is_empty(), "{hints:?}");
    }
}
