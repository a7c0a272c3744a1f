//! Stage 4, generate: a small prompt per gap (the real source of one function or method,
//! its module's imports, the uncovered lines marked, one real usage from the project's own
//! tests — or, when only a file beside them does, that use and a test that runs another name
//! of its module — and, for a private target, the public functions that call it), within the
//! token budget; then extraction of one fenced code block and static checks and repairs
//! before anything runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use super::callers;
use super::detect::Project;
use super::gaps::Gap;
use super::init_args;
use super::llm::Message;
use super::python::{self, UnitKind};
use super::reach;
use super::test_helpers;

/// What a prompt for one gap is built from.
#[derive(Debug, Clone)]
pub struct Context {
    pub gap: Gap,
    /// The unit's source with `# NOT COVERED` markers.
    pub source: String,
    /// For a method: the class header and `__init__`.
    pub class_context: Option<String>,
    /// What must hold for the uncovered lines to run, from the code's own conditions
    /// ([`reach`]).
    pub reach: Option<reach::Reach>,
    pub module_imports: Vec<String>,
    /// A real test from the project that uses the target; else a definition beside the
    /// tests that does.
    pub example: Option<String>,
    /// When no test of the project uses the target but a definition beside the tests does:
    /// the shortest test that uses another public name of its module (or the module), from a
    /// test file named after the module first — how the project *runs* what the module
    /// defines (click's decorators appear only in typing checks, and are run through
    /// `runner.invoke` in its tests).
    pub exercise: Option<String>,
    /// Working constructions of the objects the target needs (its class, the classes in its
    /// signature), single lines taken from the project's tests, then from its code.
    pub constructions: Vec<String>,
    /// For a private target, the public functions of the project that call it ([`callers`]).
    pub callers: Vec<callers::Caller>,
    /// Top-level classes and functions of the project's other modules, each with the module
    /// that defines it (pathspec's `GitWildMatchPattern` → `pathspec.patterns.gitwildmatch`):
    /// where a name the target module lacks is imported from ([`project_definitions`]).
    pub definitions: BTreeMap<String, String>,
    /// Plain functions of the project's test files, which an answer may call as the example
    /// does ([`test_helpers`]).
    pub helpers: BTreeMap<String, test_helpers::Helper>,
    /// The target module's classes that define their own `__init__`, with what it takes
    /// ([`init_args`]).
    pub constructors: BTreeMap<String, python::Constructor>,
    /// Top-level names of the target module.
    pub module_names: BTreeSet<String>,
    /// Modules the target module imports (so its tests may too).
    pub module_imported: BTreeSet<String>,
    /// The target module's `import m as a` (click's `import typing as t`), alias → module:
    /// the model, shown those imports, writes `t.Optional` in a test and imports nothing.
    pub module_aliases: BTreeMap<String, String>,
    /// Names the target module binds by `from … import …` (click's decorators use `Context`
    /// from `.core`): importable from it, so a test using one gets it from there.
    pub module_from_names: BTreeSet<String>,
    /// The names the target module can offer to an import, when they can be read off its
    /// text (see [`python::Parsed::has_dynamic_exports`]): a name not among them cannot be
    /// imported from it ([`importable_names`]).
    pub module_identifiers: Option<BTreeSet<String>>,
    /// How much context the prompts of this gap leave out (0..=3, see [`head`]): the least
    /// that fits the model's context, chosen once so that every request shares one head.
    pub shrink: u8,
}

const MARK: &str = "  # NOT COVERED";

/// Reads what the prompt for `gap` needs. `None` if the file no longer parses.
pub fn context(project: &Project, repo: &Path, gap: &Gap) -> Option<Context> {
    let src = std::fs::read_to_string(repo.join(&gap.file)).ok()?;
    let parsed = python::parse(&src)?;
    let units = parsed.units();
    // The definition that runs, not an `@overload` stub of the same name before it.
    let unit = units
        .iter()
        .find(|u| u.qualname == gap.qualname && !u.is_overload())?;
    let missing: BTreeSet<u32> = gap
        .missing_lines
        .iter()
        .chain(&gap.partial_lines)
        .copied()
        .collect();
    let mut source = String::new();
    for (i, l) in src.lines().enumerate() {
        let n = i as u32 + 1;
        if n < unit.start_line || n > unit.end_line {
            continue;
        }
        source.push_str(l);
        if missing.contains(&n) {
            source.push_str(if gap.partial_lines.contains(&n) {
                "  # NOT COVERED: a branch here never runs"
            } else {
                MARK
            });
        }
        source.push('\n');
    }
    let class_context = match (&unit.class, unit.kind) {
        (Some(class), UnitKind::Method) => {
            let cu = units.iter().find(|u| &u.qualname == class)?;
            let cls_src = &src[cu.bytes.clone()];
            let header: String = cls_src
                .lines()
                .take_while(|l| {
                    !l.trim_start().starts_with("def ") && !l.trim_start().starts_with('@')
                })
                .take(15)
                .collect::<Vec<_>>()
                .join("\n");
            let init = units
                .iter()
                .find(|u| u.qualname == format!("{class}.__init__"))
                .filter(|u| u.qualname != gap.qualname)
                .map(|u| {
                    src[u.bytes.clone()]
                        .lines()
                        .take(30)
                        .collect::<Vec<_>>()
                        .join("\n")
                });
            Some(match init {
                Some(i) => format!("{header}\n    {}\n    ...", i.trim_start()),
                None => format!("{header}\n    ..."),
            })
        }
        _ => None,
    };
    let leaf = gap.qualname.rsplit('.').next().unwrap_or(&gap.qualname);
    let mut wanted: Vec<String> = Vec::new();
    if let Some(class) = &unit.class {
        wanted.push(class.rsplit('.').next().unwrap_or(class).to_string());
    } else if unit.kind == UnitKind::Class {
        wanted.push(gap.top_name().to_string());
    }
    if unit.kind != UnitKind::Class {
        wanted.extend(signature_types(&parsed.signature(unit)));
    }
    wanted.dedup();
    let (example, exercise) = examples(project, repo, &parsed, gap, leaf);
    let missing_in_unit: Vec<u32> = gap
        .missing_lines
        .iter()
        .copied()
        .filter(|l| (unit.start_line..=unit.end_line).contains(l))
        .collect();
    Some(Context {
        gap: gap.clone(),
        source,
        class_context,
        reach: reach::of(&parsed, &unit.bytes, &missing_in_unit),
        module_imports: parsed.imports(),
        example,
        exercise,
        callers: callers::of(project, repo, gap),
        definitions: project_definitions(project, repo, &gap.module),
        helpers: test_helpers::of_project(project, repo),
        constructions: constructions(project, repo, &wanted),
        constructors: parsed.constructors(),
        module_names: parsed.top_level().into_iter().map(|t| t.name).collect(),
        module_imported: parsed.imported_modules(),
        module_aliases: parsed.module_aliases(),
        module_from_names: parsed
            .from_imports()
            .into_iter()
            .flat_map(|(_, _, names)| names)
            .map(|(name, alias)| alias.unwrap_or(name))
            .filter(|n| python::is_identifier(n))
            .collect(),
        module_identifiers: (!parsed.has_dynamic_exports())
            .then(|| importable_names(project, &parsed, &gap.module)),
        shrink: 0,
    })
}

/// The top-level `class` and `def` names of the project's modules other than `module`, read
/// off lines that start with them, each with the module that defines it: a public module
/// first (no part of its dotted name starts with `_`), then the shortest. Files are read as
/// the other project readers do: regular files only, at most 200, each at most 1 MiB.
fn project_definitions(project: &Project, repo: &Path, module: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let rank = |m: &str| (m.split('.').any(|p| p.starts_with('_')), m.len());
    for file in project.sources.iter().take(200) {
        let m = project.module_name(file);
        if m == module || !m.split('.').all(python::is_identifier) {
            continue;
        }
        let Some(text) = python::read_regular(&repo.join(file), 1 << 20) else {
            continue;
        };
        for l in text.lines() {
            let l = l.strip_prefix("async ").unwrap_or(l);
            let Some(rest) = l.strip_prefix("class ").or_else(|| l.strip_prefix("def ")) else {
                continue;
            };
            let end = rest.find(['(', ':', ' ', '[']).unwrap_or(rest.len());
            let name = &rest[..end];
            if !python::is_identifier(name) {
                continue;
            }
            match out.get(name) {
                Some(have) if rank(have) <= rank(&m) => {}
                _ => {
                    out.insert(name.to_string(), m.clone());
                }
            }
        }
    }
    out
}

/// What `from module import NAME` can import: the module's own names
/// ([`python::Parsed::module_scope_names`]: `astor.node_util` uses `ast.AST` but offers no
/// `AST`) and, for a package, its submodules, which the import system finds unnamed.
fn importable_names(project: &Project, parsed: &python::Parsed, module: &str) -> BTreeSet<String> {
    let mut out = parsed.module_scope_names();
    let prefix = format!("{module}.");
    for s in &project.sources {
        let m = project.module_name(s);
        if let Some(sub) = m.strip_prefix(&prefix) {
            out.insert(sub.split('.').next().unwrap_or(sub).to_string());
        }
    }
    out
}

/// Classes of the project's sources that derive from one of `names`, directly or through
/// another (two levels): `(name, "from module import name")`, at most 2 per name.
fn subclasses(
    project: &Project,
    texts: &[(bool, &str, String)],
    names: &[String],
) -> Vec<(String, String)> {
    // (class, its bases' last names, its file) for every `class X(...):` line of the sources.
    let defs: Vec<(&str, Vec<&str>, &str)> = texts
        .iter()
        .filter(|(is_test, _, _)| !is_test)
        .flat_map(|(_, file, text)| {
            text.lines().filter_map(move |l| {
                let (name, rest) = l.strip_prefix("class ")?.split_once('(')?;
                let bases = rest.split_once(')')?.0;
                let bases = bases
                    .split(',')
                    .map(|b| b.trim().rsplit('.').next().unwrap_or(""))
                    .collect();
                let name = name.trim();
                python::is_identifier(name).then_some((name, bases, *file))
            })
        })
        .collect();
    let mut bases: Vec<&str> = names.iter().map(String::as_str).collect();
    // (class, import, the base it was found through)
    let mut out: Vec<(String, String, String)> = Vec::new();
    for _ in 0..2 {
        let mut found: Vec<(String, String, String)> = Vec::new();
        for (name, its_bases, file) in &defs {
            let through = |b: &str| out.iter().chain(&found).filter(|f| f.2 == b).count();
            if let Some(b) = its_bases.iter().find(|b| bases.contains(b))
                && !bases.contains(name)
                && !found.iter().any(|f| f.0 == *name)
                && through(b) < 2
            {
                // The file's name is the submitter's: only a dotted name makes an import.
                let module = project.module_name(file);
                if !module.split('.').all(python::is_identifier) {
                    continue;
                }
                let import = format!("from {module} import {name}");
                found.push((name.to_string(), import, b.to_string()));
            }
        }
        if found.is_empty() {
            break;
        }
        out.extend(found);
        bases = names
            .iter()
            .map(String::as_str)
            .chain(out.iter().map(|f| f.0.as_str()))
            .collect();
    }
    out.into_iter().map(|(n, i, _)| (n, i)).collect()
}

/// The target's example and, when only a file beside the tests uses it, how its module is
/// exercised ([`Context::example`], [`Context::exercise`]).
fn examples(
    project: &Project,
    repo: &Path,
    parsed: &python::Parsed,
    gap: &Gap,
    leaf: &str,
) -> (Option<String>, Option<String>) {
    if let Some(test) = shortest_test(project, repo, 25, |ids| ids.contains(leaf), "") {
        return (Some(test), None);
    }
    // A test of another name, shown for a target used nowhere, gets copied rather than
    // followed (run J: click's `pager` got the progress-bar test back, which covered nothing
    // new; astor, shown `test_fast_compare` for three gaps, kept nothing).
    let Some(definition) = definition_beside_tests(project, repo, leaf) else {
        return (None, None);
    };
    // Its public definitions, and the module itself (`monkeypatch.setattr(click._termui_impl,
    // "isatty", …)` in a test of `click.progressbar`).
    let own = gap.module.rsplit('.').next().unwrap_or(&gap.module);
    let public: BTreeSet<String> = parsed
        .top_level()
        .into_iter()
        .filter(|t| t.kind != UnitKind::Module && !t.name.starts_with('_'))
        .map(|t| t.name)
        .chain([own.to_string()])
        .collect();
    let runs = |ids: &BTreeSet<String>| !public.is_disjoint(ids);
    let exercise = shortest_test(project, repo, 15, runs, module_word(&gap.file));
    (Some(definition), exercise)
}

/// The shortest test function of the project (at most `max_lines`, the first 50 test files)
/// whose identifiers `uses` accepts; one in a test file whose name contains `prefer` (if not
/// empty) before any other. A test marked to be skipped or to fail is no example (click's
/// Windows-only `getchar` tests).
fn shortest_test(
    project: &Project,
    repo: &Path,
    max_lines: usize,
    uses: impl Fn(&BTreeSet<String>) -> bool,
    prefer: &str,
) -> Option<String> {
    let mut best: Option<(bool, String)> = None;
    for t in project.tests.iter().take(50) {
        let Some(p) = read_parsed(repo, t) else {
            continue;
        };
        let other_file = prefer.is_empty() || !t.rsplit('/').next().unwrap_or(t).contains(prefer);
        for f in p.test_functions() {
            let body = &p.src[f.bytes.clone()];
            if body.lines().count() <= max_lines
                && !body.contains("mark.skip")
                && !body.contains("mark.xfail")
                && best
                    .as_ref()
                    .is_none_or(|(o, b)| (other_file, body.len()) < (*o, b.len()))
                && uses(&p.identifiers_in(f.bytes.clone()))
            {
                best = Some((other_file, body.to_string()));
            }
        }
    }
    best.map(|(_, body)| body)
}

/// The word a test file of `file`'s module is named after: its stem without leading
/// underscores, up to the next one (`_termui_impl.py` → `termui`, tested in `test_termui.py`);
/// empty when shorter than 3 characters.
fn module_word(file: &str) -> &str {
    let stem = file.rsplit('/').next().unwrap_or(file);
    let stem = stem
        .strip_suffix(".py")
        .unwrap_or(stem)
        .trim_start_matches('_');
    let word = stem.split('_').next().unwrap_or("");
    if word.len() >= 3 { word } else { "" }
}

/// The shortest top-level definition, at most 25 lines, that mentions `name` in the Python
/// files beside the tests (click shows its decorators only as `@click.command()
/// @click.version_option("0.1") def cli()` in `tests/typing/`).
fn definition_beside_tests(project: &Project, repo: &Path, name: &str) -> Option<String> {
    let mut best: Option<String> = None;
    for f in files_beside_tests(project, repo) {
        let Some(p) = read_parsed(repo, &f) else {
            continue;
        };
        for d in p
            .top_level()
            .into_iter()
            .filter(|d| d.kind != UnitKind::Module)
        {
            let body = &p.src[d.bytes.clone()];
            if body.lines().count() <= 25
                && best.as_ref().is_none_or(|b| body.len() < b.len())
                && p.identifiers_in(d.bytes.clone()).contains(name)
            {
                best = Some(body.to_string());
            }
        }
    }
    best
}

fn read_parsed(repo: &Path, file: &str) -> Option<python::Parsed> {
    std::fs::read_to_string(repo.join(file))
        .ok()
        .and_then(|s| python::parse(&s))
}

/// Python files under the test files' top directories that are not test files themselves
/// (helpers, typing checks, examples): at most 60, each at most 64 KiB, never through a
/// symlink (the checkout is the submitter's).
fn files_beside_tests(project: &Project, repo: &Path) -> Vec<String> {
    let tops: std::collections::BTreeSet<&str> = project
        .tests
        .iter()
        .filter_map(|t| t.split_once('/').map(|(d, _)| d))
        .collect();
    let mut out = Vec::new();
    for top in tops {
        let walk = walkdir::WalkDir::new(repo.join(top))
            .follow_links(false)
            .follow_root_links(false)
            .max_depth(4)
            .sort_by_file_name();
        for e in walk.into_iter().filter_map(Result::ok) {
            let Ok(rel) = e.path().strip_prefix(repo) else {
                continue;
            };
            let rel = rel.to_string_lossy().replace('\\', "/");
            if e.file_type().is_file()
                && rel.ends_with(".py")
                && !project.tests.contains(&rel)
                && e.metadata().is_ok_and(|m| m.len() <= 64 << 10)
            {
                out.push(rel);
                if out.len() >= 60 {
                    return out;
                }
            }
        }
    }
    out
}

/// Class-like names (capitalized) in a `def` header's annotations and defaults, without
/// typing's generic names.
fn signature_types(signature: &str) -> Vec<String> {
    const GENERIC: &[&str] = &[
        "None",
        "True",
        "False",
        "Optional",
        "Union",
        "List",
        "Dict",
        "Tuple",
        "Set",
        "Any",
        "Callable",
        "Iterable",
        "Iterator",
        "Sequence",
        "Mapping",
        "Type",
        "Literal",
        "Self",
        "FrozenSet",
        "Generator",
        "TypeVar",
        "ClassVar",
    ];
    let mut out: Vec<String> = Vec::new();
    let params = signature.split_once('(').map_or("", |(_, p)| p);
    for tok in params.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        if tok.len() > 1
            && tok.starts_with(|c: char| c.is_ascii_uppercase())
            && tok.chars().any(|c| c.is_ascii_lowercase())
            && !GENERIC.contains(&tok)
            && !out.iter().any(|o| o == tok)
        {
            out.push(tok.to_string());
        }
    }
    out.truncate(3);
    out
}

/// Up to 2 lines per name, 6 in all, that call `Name(` — from the project's tests first, then
/// its code: the shortest, each at most 120 characters, never a `class`/`def` line. The
/// project's subclasses of a name come after it, each with its import.
fn constructions(project: &Project, repo: &Path, names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if names.is_empty() {
        return out;
    }
    let files: Vec<&String> = project
        .tests
        .iter()
        .take(60)
        .chain(project.sources.iter().take(60))
        .collect();
    let texts: Vec<(bool, &str, String)> = files
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let t = std::fs::read_to_string(repo.join(f)).ok()?;
            Some((i < project.tests.len().min(60), f.as_str(), t))
        })
        .collect();
    // An abstract base (pathspec's `Pattern` raises NotImplementedError) is built through
    // a subclass: the project's own subclasses, with where to import them from.
    let subclasses = subclasses(project, &texts, names);
    let names: Vec<&String> = names
        .iter()
        .chain(subclasses.iter().map(|s| &s.0))
        .collect();
    for name in names {
        let lines = calls_of(&texts, name);
        if lines.is_empty() {
            continue;
        }
        if let Some((_, import)) = subclasses.iter().find(|s| &s.0 == name)
            && out.len() < 5
        {
            out.push(import.clone());
        }
        for t in lines {
            if out.len() < 6 && !out.iter().any(|o| o == t) {
                out.push(t.to_string());
            }
        }
    }
    out
}

/// The 2 shortest lines that call `name(` (the tests' first), each at most 120 characters,
/// never a definition, import, decorator, comment, raise or isinstance check.
fn calls_of<'a>(texts: &'a [(bool, &str, String)], name: &str) -> Vec<&'a str> {
    let call = format!("{name}(");
    let mut found: Vec<(bool, &str)> = Vec::new();
    for (is_test, _, text) in texts {
        for l in text.lines() {
            let t = l.trim();
            let Some(at) = t.find(&call) else {
                continue;
            };
            let before = t[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                || t.len() > 120
                || [
                    "class ",
                    "def ",
                    "async def ",
                    "#",
                    "@",
                    "import ",
                    "from ",
                    "isinstance",
                    "raise ",
                    "return super",
                ]
                .iter()
                .any(|p| t.starts_with(p))
                || t.contains("isinstance(")
            {
                continue;
            }
            found.push((*is_test, t));
        }
    }
    found.sort_by_key(|(is_test, t)| (!is_test, t.len()));
    found.dedup_by(|a, b| a.1 == b.1);
    found.into_iter().take(2).map(|(_, t)| t).collect()
}

/// The system message of every request of a run (generation, classification, fix): one and
/// the same, so that the server's prompt cache can reuse it and the [`head`] after it.
pub const SYSTEM: &str = "You are an expert Python developer who writes pytest unit tests. \
When asked for tests, answer with exactly one ```python fenced code block and nothing after it.";

/// The part every prompt about one gap starts with, byte for byte: its module's imports, the
/// class it belongs to, its source with the uncovered lines marked, working constructions and
/// a usage from the project's tests. A request that starts like the one before it costs the
/// model only its new tokens (llama.cpp keeps the longest common prefix of its last prompt),
/// so the classification and fix requests of a gap reuse what its generation request read.
/// `shrink` 0..=3 leaves out more context at each level ([`Context::shrink`]).
pub fn head(ctx: &Context, shrink: u8) -> String {
    let g = &ctx.gap;
    let mut u = String::new();
    u.push_str(&format!(
        "Module `{}` (file `{}`) contains the code below. Lines marked `# NOT COVERED` are never run by the existing tests.\n\n```python\n",
        g.module, g.file
    ));
    if shrink < 3 {
        for i in ctx.module_imports.iter().take(20) {
            u.push_str(i);
            u.push('\n');
        }
        u.push('\n');
    }
    if let Some(c) = &ctx.class_context
        && shrink < 2
    {
        u.push_str(c);
        u.push_str("\n\n");
    }
    let source: String = if shrink >= 3 {
        ctx.source.lines().take(120).collect::<Vec<_>>().join("\n")
    } else {
        ctx.source.clone()
    };
    u.push_str(&source);
    u.push_str("\n```\n\n");
    if let Some(r) = &ctx.reach
        && shrink < 3
    {
        u.push_str(&r.hint);
        u.push('\n');
    }
    if !ctx.constructions.is_empty() && shrink < 2 {
        u.push_str("How the project itself builds these objects (working lines from its tests and code):\n\n```python\n");
        for c in &ctx.constructions {
            u.push_str(c);
            u.push('\n');
        }
        u.push_str("```\n\n");
    }
    if !ctx.callers.is_empty() && shrink < 2 {
        u.push_str("The project's public functions that call it (a test may run it through them):\n\n```python\n");
        for c in &ctx.callers {
            u.push_str(&format!(
                "from {} import {}  # {}\n",
                c.module, c.name, c.signature
            ));
        }
        u.push_str("```\n\n");
    }
    if let Some(e) = &ctx.example
        && shrink < 1
    {
        u.push_str("The project's own tests use it like this:\n\n```python\n");
        u.push_str(e);
        u.push_str("\n```\n\n");
    }
    if let Some(e) = &ctx.exercise
        && shrink < 1
    {
        u.push_str("The project's tests run this module's code like this:\n\n```python\n");
        u.push_str(e);
        u.push_str("\n```\n\n");
    }
    u
}

/// The generation prompt: [`head`] at `shrink`, then what to write.
pub fn prompt(ctx: &Context, shrink: u8) -> Vec<Message> {
    let g = &ctx.gap;
    let top = g.top_name();
    let mut u = head(ctx, shrink);
    let what = match g.kind {
        UnitKind::Method => format!(
            "the method `{}` (create a `{top}` object with valid arguments first)",
            g.qualname
        ),
        UnitKind::Class => format!("the class `{top}`"),
        _ => format!("the function `{}`", g.qualname),
    };
    let through = match ctx.callers.is_empty() {
        true => "",
        false => " (or one of the public functions above that call it)",
    };
    let calls = match g.kind {
        UnitKind::Method => format!("calls `{}` on a `{top}` object", g.qualname),
        UnitKind::Class => format!("creates a `{top}` object and uses it"),
        // astor's `allow_ast_comparison()`: answers told only to call it passed it a tree.
        _ if g.params == 0 => format!("calls `{top}()` itself (it takes no arguments){through}"),
        _ => format!("calls `{top}(…)` itself{through}"),
    };
    // What the largest uncovered part needs set on the object, said as the code to write.
    let set = match (&ctx.reach, g.kind) {
        (Some(r), UnitKind::Method) if !r.settings.is_empty() => {
            let leaf = g.qualname.rsplit('.').next().unwrap_or(&g.qualname);
            let assignments: Vec<String> =
                r.settings.iter().map(|s| format!("`obj.{s}`")).collect();
            format!(
                "- After creating the `{top}` object (`obj`), set {} before calling `{leaf}`: the NOT COVERED lines need it.\n",
                assignments.join(", ")
            )
        }
        _ => String::new(),
    };
    u.push_str(&format!(
        "Write 2 to 4 short pytest test functions for {what} so that the NOT COVERED lines run, with assertions on the results.\n\
         - Every test {calls}.\n\
         {set}\
         - Start the file with `from {} import {top}` and import anything else you use.\n\
         - Do not copy or redefine `{top}` or any other code of the module: import it.\n\
         - Use only pytest and the Python standard library. No network, no subprocess. A test that needs files takes pytest's `tmp_path` argument (never define it).\n\
         - Name every test function `test_` followed by what it checks.\n\
         Answer with one ```python block that holds the complete test file.\n",
        g.module
    ));
    vec![Message::system(SYSTEM), Message::user(u)]
}

/// Why a model answer was not turned into a runnable candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    #[error("the answer has no code block")]
    NoCode,
    #[error("the answer was cut off at max_tokens")]
    Truncated,
    #[error("the answer repeats itself (runaway generation)")]
    Repetitive,
    #[error("the code does not parse (line {line})")]
    Unparseable { line: u32 },
    #[error("the code has no test function")]
    NoTests,
    #[error("every test function is a placeholder")]
    Placeholder,
    #[error(
        "no test checks anything: each needs an `assert`, a `pytest.raises`, or a `self.assert…` call"
    )]
    NoCheck,
    #[error("no test touches `{name}`")]
    DoesNotUseTarget { name: String },
    #[error("the code uses `{what}` (network, processes or dynamic code)")]
    Forbidden { what: String },
}

/// Pulls one code block out of a model answer.
pub fn extract(answer: &str) -> Option<String> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut lines = answer.lines();
    while let Some(l) = lines.next() {
        let t = l.trim_start();
        if let Some(tag) = t.strip_prefix("```") {
            let tag = tag.trim().to_lowercase();
            let mut body = String::new();
            for l in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            blocks.push((tag, body));
        }
    }
    let pythonish =
        |tag: &str| tag.is_empty() || tag == "python" || tag == "py" || tag == "python3";
    if let Some((_, b)) = blocks
        .iter()
        .find(|(t, b)| pythonish(t) && b.contains("def test"))
    {
        return Some(b.clone());
    }
    if let Some((_, b)) = blocks.iter().find(|(t, _)| pythonish(t)) {
        return Some(b.clone());
    }
    if blocks.is_empty() && answer.contains("def test") {
        return Some(answer.to_string());
    }
    None
}

/// Answer sizes: the 2 to 4 short tests asked for take 60-120 tokens each, one fixed test far
/// less; a cut-off answer keeps its finished tests ([`salvage_truncated`]). A bigger budget
/// only buys runaway answers minutes long at 2-5 tokens/s on a loaded 2-core machine.
pub const GENERATE_MAX_TOKENS: u32 = 450;
pub const FIX_MAX_TOKENS: u32 = 300;

/// An answer cut off at `max_tokens`: its code with the last, unfinished top-level definition
/// cut after its last complete statement when it is a test function that still checks
/// something there (a small model writes one long test of many cases: pathspec's
/// `detailed_match_files`, run P), else without it; `None` if what is left does not parse or
/// has no test. With what was done, for the report.
pub fn salvage_truncated(code: &str) -> Option<(String, &'static str)> {
    let lines: Vec<&str> = code.lines().collect();
    let last_top = lines.iter().rposition(|l| {
        l.starts_with("def ")
            || l.starts_with("class ")
            || l.starts_with("async def ")
            || l.starts_with('@')
    })?;
    if let Some(kept) = complete_statements_of_last_test(&lines, last_top) {
        return Some((
            kept,
            "its unfinished last test was cut after its last complete statement",
        ));
    }
    // Decorators belong to the definition below them.
    let mut cut = last_top;
    while cut > 0 && lines[cut - 1].starts_with('@') {
        cut -= 1;
    }
    let kept = lines[..cut].join("\n") + "\n";
    let p = python::parse(&kept)?;
    (p.first_error_line().is_none() && !p.test_functions().is_empty())
        .then_some((kept, "its unfinished last definition was dropped"))
}

/// `lines` up to the last statement of the test function defined on line `def_at` that is
/// complete: cut before a later line that starts a statement at the body's indentation, the
/// latest such cut that parses and leaves the test checking something. At most 60 cuts tried.
fn complete_statements_of_last_test(lines: &[&str], def_at: usize) -> Option<String> {
    let name = lines[def_at]
        .strip_prefix("def ")
        .or_else(|| lines[def_at].strip_prefix("async def "))?
        .split('(')
        .next()?
        .trim();
    if !name.starts_with("test") {
        return None;
    }
    let first = lines[def_at + 1..].iter().find(|l| !l.trim().is_empty())?;
    let indent = &first[..first.len() - first.trim_start().len()];
    if indent.is_empty() {
        return None;
    }
    let starts_statement = |l: &&str| {
        l.strip_prefix(indent)
            .is_some_and(|rest| rest.starts_with(|c: char| !c.is_whitespace() && c != '#'))
    };
    (def_at + 2..lines.len())
        .rev()
        .filter(|&e| starts_statement(&lines[e]))
        .take(60)
        .find_map(|e| {
            let kept = lines[..e].join("\n") + "\n";
            let p = python::parse(&kept)?;
            let checks = p
                .test_functions()
                .iter()
                .any(|t| t.name == name && t.checks);
            (p.first_error_line().is_none() && checks).then_some(kept)
        })
}

/// A test file ready to run: cordon's import header plus the model's (repaired) code.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub file_name: String,
    pub header: String,
    pub body: String,
    /// Node ids of its tests (`test_x`, `TestK::test_x`).
    pub tests: Vec<String>,
    /// What cordon changed in the model's code, and why.
    pub repairs: Vec<String>,
}

impl Candidate {
    pub fn content(&self) -> String {
        format!("{}{}", self.header, self.body)
    }
}

const HEADER_MARK: &str = "# Imports added by cordon from the coverage gap analysis.\n";

const FORBIDDEN_MODULES: &[&str] = &[
    "subprocess",
    "socket",
    "requests",
    "urllib",
    "http",
    "httpx",
    "aiohttp",
    "ftplib",
    "smtplib",
    "telnetlib",
    "ctypes",
    "multiprocessing",
    "pty",
    "webbrowser",
    "xmlrpc",
    "paramiko",
];
const FORBIDDEN_CALLS: &[&str] = &[
    "os.system",
    "os.popen",
    "os.fork",
    "os.kill",
    "os.execv",
    "os.execve",
    "os.execvp",
    "os.spawnl",
    "os.spawnv",
    "os.startfile",
    "eval",
    "exec",
    "__import__",
    "compile",
];

/// Static checks and deterministic repairs of extracted code. `file_name` is cordon's.
pub fn check(
    code: &str,
    ctx: &Context,
    project: &Project,
    file_name: &str,
) -> Result<Candidate, Rejection> {
    let mut repairs = Vec::new();
    let (mut body, parsed) = parse_answer(code, &mut repairs)?;
    refuse_forbidden(&parsed, ctx)?;
    let parsed = correct_import_paths(&mut body, parsed, ctx, project, &mut repairs)?;
    let parsed = drop_unknown_imports(&mut body, parsed, ctx, &mut repairs)?;
    let parsed = retarget_own_imports(&mut body, parsed, ctx, project, &mut repairs)?;
    let parsed = drop_fixture_imports(&mut body, parsed, &mut repairs)?;
    let parsed = drop_idle_parametrizations(&mut body, parsed, &mut repairs)?;
    let (parsed, tests) =
        strip_shadows_and_idle_tests(&mut body, parsed, ctx, project, &mut repairs)?;
    let (parsed, tests) = take_used_fixtures(&mut body, parsed, tests, &mut repairs)?;
    let (parsed, tests) = mend_constructions(&mut body, parsed, tests, ctx, &mut repairs)?;
    let (parsed, tests) = fill_struct_sequences(&mut body, parsed, tests, &mut repairs)?;
    let (parsed, tests) = make_parent_dirs(&mut body, parsed, tests, &mut repairs)?;
    let parsed = copy_test_helpers(&mut body, parsed, ctx, &mut repairs);
    // A copied helper is held to the same policy as the model's code.
    refuse_forbidden(&parsed, ctx)?;
    let (parsed, tests) = call_an_imported_target(&mut body, parsed, tests, ctx, &mut repairs)?;
    let top = check_reaches_target(&parsed, &tests, ctx)?;
    let header = import_header(&parsed, &body, ctx, project, &top);
    Ok(Candidate {
        file_name: file_name.to_string(),
        header,
        body,
        tests: tests.into_iter().map(|t| t.node_id).collect(),
        repairs,
    })
}

/// The answer's code without `from __future__` lines (cordon's header goes first instead;
/// 3.11 needs none), parsed, its test names written with spaces joined
/// ([`join_spaced_def_name`]), and without up to [`MAX_BROKEN_TESTS`] tests that do not
/// compile; refused if anything else does not parse.
fn parse_answer(
    code: &str,
    repairs: &mut Vec<String>,
) -> Result<(String, python::Parsed), Rejection> {
    let mut body: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("from __future__ import"))
        .collect::<Vec<_>>()
        .join("\n");
    body.push('\n');
    let mut parsed = python::parse(&body).ok_or(Rejection::Unparseable { line: 1 })?;
    while let Some((joined, name)) = parsed
        .first_error_line()
        .and_then(|line| join_spaced_def_name(&body, line))
    {
        parsed = python::parse(&joined).ok_or(Rejection::Unparseable { line: 1 })?;
        repairs.push(format!(
            "the name `{name}` written with underscores for its spaces"
        ));
        body = joined;
    }
    // A test that does not compile would fail the collection of all the others: it goes
    // alone, while the rest still parses and holds a test.
    for _ in 0..MAX_BROKEN_TESTS {
        let Some(line) = parsed.first_error_line() else {
            return Ok((body, parsed));
        };
        let line_of = |byte: usize| parsed.src[..byte].matches('\n').count() as u32 + 1;
        let broken = parsed
            .test_functions()
            .into_iter()
            .find(|t| line_of(t.bytes.start) <= line && line <= line_of(t.bytes.end))
            .ok_or(Rejection::Unparseable { line })?;
        let rest = parsed
            .removing_tests(std::slice::from_ref(&broken.node_id))
            .ok_or(Rejection::Unparseable { line })?;
        parsed = python::parse(&rest).ok_or(Rejection::Unparseable { line })?;
        if parsed.test_functions().is_empty() {
            return Err(Rejection::Unparseable { line });
        }
        repairs.push(format!(
            "removed test `{}`: its code does not compile (line {line})",
            broken.node_id
        ));
        body = rest;
    }
    match parsed.first_error_line() {
        Some(line) => Err(Rejection::Unparseable { line }),
        None => Ok((body, parsed)),
    }
}

/// `body` with the `def` on line `line` (1-based) renamed when its name is words separated
/// by spaces (`def test_translate KeyboardInterrupt():`, a whole answer of them in click's
/// `_termui_impl` run): the words joined by `_`. Also the name as written. `None` for any
/// other line. Each repair removes a space, so repeating it ends.
fn join_spaced_def_name(body: &str, line: u32) -> Option<(String, String)> {
    let at = body
        .split_inclusive('\n')
        .take(line.checked_sub(1)? as usize)
        .map(str::len)
        .sum::<usize>();
    let text = body[at..].lines().next()?;
    let indent = text.len() - text.trim_start().len();
    let rest = &text[indent..];
    let after_def = rest
        .strip_prefix("def ")
        .or_else(|| rest.strip_prefix("async def "))?;
    let name = after_def[..after_def.find('(')?].trim();
    let words: Vec<&str> = name.split_whitespace().collect();
    if words.len() < 2 || !words.iter().all(|w| python::is_identifier(w)) {
        return None;
    }
    let name_at = at + indent + (rest.len() - after_def.len());
    let name_end = name_at + after_def.find('(')?;
    let mut out = body.to_string();
    out.replace_range(name_at..name_end, &words.join("_"));
    Some((out, name.to_string()))
}

/// The most tests of one answer removed for not compiling before the answer is refused.
const MAX_BROKEN_TESTS: usize = 3;

/// Network, processes, dynamic code — unless the module under test uses them itself.
fn refuse_forbidden(parsed: &python::Parsed, ctx: &Context) -> Result<(), Rejection> {
    for m in parsed.imported_modules() {
        let top = m.split('.').next().unwrap_or("");
        if FORBIDDEN_MODULES.contains(&top)
            && !ctx
                .module_imported
                .iter()
                .any(|x| x.split('.').next() == Some(top))
        {
            return Err(Rejection::Forbidden { what: m });
        }
    }
    // `re.compile` is not the builtin `compile`; `builtins.compile` is.
    let names = parsed.references();
    let refers_to = |c: &str| {
        names.contains(c)
            || (!c.contains('.')
                && (names.contains(&format!("builtins.{c}"))
                    || names.contains(&format!("__builtins__.{c}"))))
    };
    if let Some(f) = FORBIDDEN_CALLS.iter().copied().find(|c| refers_to(c)) {
        return Err(Rejection::Forbidden {
            what: f.to_string(),
        });
    }
    Ok(())
}

/// Applies `edits` (byte range → text) to `body` from the end backwards, and parses it again.
pub(crate) fn apply_edits(
    body: &mut String,
    mut edits: Vec<(std::ops::Range<usize>, String)>,
) -> Result<python::Parsed, Rejection> {
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    for (r, t) in edits {
        body.replace_range(r, &t);
    }
    python::parse(body).ok_or(Rejection::Unparseable { line: 1 })
}

/// Imports of the target under a wrong module path (`from core import f` for `pkg.core`),
/// relative, or of an own module that does not exist: corrected to the target's module.
fn correct_import_paths(
    body: &mut String,
    parsed: python::Parsed,
    ctx: &Context,
    project: &Project,
    repairs: &mut Vec<String>,
) -> Result<python::Parsed, Rejection> {
    let module = &ctx.gap.module;
    let leaf_module = module.rsplit('.').next().unwrap_or(module);
    let file_stem = Path::new(&ctx.gap.file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut fixes: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    for (range, m) in parsed.from_import_modules() {
        let last = m.rsplit('.').next().unwrap_or(&m);
        let own_top = project.owns_module(&m);
        let real = project.sources.iter().any(|s| project.module_name(s) == m);
        let wrong_path = m != *module
            && !real
            && !m.starts_with('.')
            && (last == leaf_module || last == file_stem);
        let relative = m.starts_with('.');
        let unknown_own = own_top && !real && m != *module;
        if wrong_path || relative || unknown_own {
            fixes.push((range, module.clone()));
            repairs.push(format!("import path `{m}` corrected to `{module}`"));
        }
    }
    if fixes.is_empty() {
        return Ok(parsed);
    }
    apply_edits(body, fixes)
}

/// Takes names out of `from … import …` statements: for each statement whose module
/// `applies`, the names `takes` selects are removed (a statement left with none becomes
/// `pass`) and `note(names, module)` is recorded as the repair.
pub(super) fn edit_from_imports(
    body: &mut String,
    parsed: python::Parsed,
    repairs: &mut Vec<String>,
    applies: impl Fn(&str) -> bool,
    takes: impl Fn(&str, &Option<String>) -> bool,
    note: impl Fn(&str, &str) -> String,
) -> Result<python::Parsed, Rejection> {
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    for (range, m, names) in parsed.from_imports() {
        if !applies(&m) {
            continue;
        }
        let (taken, keep): (Vec<_>, Vec<_>) = names.into_iter().partition(|(n, a)| takes(n, a));
        if taken.is_empty() {
            continue;
        }
        let list: Vec<&str> = taken.iter().map(|(n, _)| n.as_str()).collect();
        repairs.push(note(&format!("`{}`", list.join("`, `")), &m));
        edits.push((range, from_import(&m, &keep)));
    }
    if edits.is_empty() {
        return Ok(parsed);
    }
    apply_edits(body, edits)
}

/// `from module import names…`, or `pass` for no name (the statement may sit in a block).
fn from_import(module: &str, names: &[(String, Option<String>)]) -> String {
    if names.is_empty() {
        return "pass".to_string();
    }
    let list: Vec<String> = names
        .iter()
        .map(|(n, a)| match a {
            Some(a) => format!("{n} as {a}"),
            None => n.clone(),
        })
        .collect();
    format!("from {module} import {}", list.join(", "))
}

/// Names imported from the target module that it does not have (an ImportError for the
/// whole file): a public caller the prompt named ([`callers`]: `from click._termui_impl
/// import launch`, which `click.termui` defines), or a class or function another module of
/// the project defines (`from pathspec.util import GitWildMatchPattern`), is imported from
/// its own module instead; any other is dropped from the import, and the tests that use it
/// fail alone and are fixed.
fn drop_unknown_imports(
    body: &mut String,
    parsed: python::Parsed,
    ctx: &Context,
    repairs: &mut Vec<String>,
) -> Result<python::Parsed, Rejection> {
    let Some(known) = &ctx.module_identifiers else {
        return Ok(parsed);
    };
    let module = &ctx.gap.module;
    let home = |n: &str| {
        ctx.callers
            .iter()
            .find(|c| c.name == n)
            .map(|c| &c.module)
            .or_else(|| ctx.definitions.get(n))
    };
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    for (range, m, names) in parsed.from_imports() {
        if m != *module {
            continue;
        }
        let (unknown, keep): (Vec<_>, Vec<_>) =
            names.into_iter().partition(|(n, _)| !known.contains(n));
        if unknown.is_empty() {
            continue;
        }
        let mut statements = Vec::new();
        if !keep.is_empty() {
            statements.push(from_import(module, &keep));
        }
        let mut dropped = Vec::new();
        for (n, alias) in unknown {
            match home(&n) {
                Some(home) => {
                    repairs.push(format!(
                        "`{n}` imported from `{home}`, which defines it, instead of `{module}`"
                    ));
                    statements.push(from_import(home, &[(n, alias)]));
                }
                None => dropped.push(n),
            }
        }
        if !dropped.is_empty() {
            repairs.push(format!(
                "dropped `{}` from the import of `{module}`: the module has no such name",
                dropped.join("`, `")
            ));
        }
        edits.push((range, from_imports(&statements)));
    }
    if edits.is_empty() {
        return Ok(parsed);
    }
    apply_edits(body, edits)
}

/// Import statements on one line (`a; b`, valid inside a block too), or `pass` for none.
fn from_imports(statements: &[String]) -> String {
    if statements.is_empty() {
        return "pass".to_string();
    }
    statements.join("; ")
}

/// Names the module under test defines, imported from another of the project's modules
/// (`from pathspec import normalize_file` for `pathspec.util`'s; an ImportError for the whole
/// file when the package does not re-export it): taken out of that import, so that the
/// header imports them from the module under test.
fn retarget_own_imports(
    body: &mut String,
    parsed: python::Parsed,
    ctx: &Context,
    project: &Project,
    repairs: &mut Vec<String>,
) -> Result<python::Parsed, Rejection> {
    let module = &ctx.gap.module;
    edit_from_imports(
        body,
        parsed,
        repairs,
        |m| m != module && project.owns_module(m),
        |n, alias| alias.is_none() && ctx.module_names.contains(n),
        |names, m| format!("{names} imported from `{module}`, which defines it, instead of `{m}`"),
    )
}

/// `from pytest import tmp_path`: an ImportError for the whole file (astor's run lost 4 tests
/// to it). A fixture is an argument, not an import: the name is dropped from the statement.
fn drop_fixture_imports(
    body: &mut String,
    parsed: python::Parsed,
    repairs: &mut Vec<String>,
) -> Result<python::Parsed, Rejection> {
    edit_from_imports(
        body,
        parsed,
        repairs,
        |m| m == "pytest",
        |n, _| PYTEST_FIXTURES.contains(&n),
        |names, _| {
            format!(
                "dropped {names} from the import of pytest: a fixture is taken as a test's argument"
            )
        },
    )
}

/// A `@pytest.mark.parametrize` over names the test does not take fails that test's
/// collection; the test already holds its own values, so the decorator goes and the test
/// runs once as written.
fn drop_idle_parametrizations(
    body: &mut String,
    parsed: python::Parsed,
    repairs: &mut Vec<String>,
) -> Result<python::Parsed, Rejection> {
    let idle = parsed.idle_parametrizations();
    if idle.is_empty() {
        return Ok(parsed);
    }
    let mut edits = Vec::new();
    for (test, range) in idle {
        repairs.push(format!(
            "removed the `@pytest.mark.parametrize` of `{test}`: the test takes none of its names, and pytest would not collect it"
        ));
        edits.push((range, String::new()));
    }
    apply_edits(body, edits)?;
    reparse(body)
}

/// pytest's built-in fixtures, which a test takes as an argument and never defines.
const PYTEST_FIXTURES: &[&str] = &[
    "tmp_path",
    "tmp_path_factory",
    "tmpdir",
    "tmpdir_factory",
    "capsys",
    "capsysbinary",
    "capfd",
    "capfdbinary",
    "caplog",
    "monkeypatch",
    "request",
    "recwarn",
    "pytestconfig",
    "cache",
    "doctest_namespace",
];

/// pytest's fixtures whose names are often the test's own variables or the project's (a
/// `request` object, a `cache`): never added as an argument by [`take_used_fixtures`].
const NEVER_TAKEN: &[&str] = &["request", "pytestconfig", "cache", "doctest_namespace"];

/// A test that uses `tmp_path` (or another of [`PYTEST_FIXTURES`] but [`NEVER_TAKEN`])
/// without taking it fails with a NameError (click's `_pipepager`, run N: 5 tests, often
/// after cordon removed the answer's own `def tmp_path()`): the fixture is added to its
/// parameters. A name the file binds at its top level is left alone.
fn take_used_fixtures(
    body: &mut String,
    parsed: python::Parsed,
    tests: Vec<python::TestFn>,
    repairs: &mut Vec<String>,
) -> Result<(python::Parsed, Vec<python::TestFn>), Rejection> {
    let own: BTreeSet<String> = parsed.top_level().into_iter().map(|t| t.name).collect();
    let names: Vec<&str> = PYTEST_FIXTURES
        .iter()
        .copied()
        .filter(|n| !NEVER_TAKEN.contains(n) && !own.contains(*n))
        .collect();
    let (parsed, tests) = unattribute_pytest_fixtures(body, parsed, tests, &names, repairs)?;
    let (parsed, tests) = uncall_path_fixtures(body, parsed, tests, &own, repairs)?;
    let mut edits = Vec::new();
    for (test, fixtures, at, insert) in parsed.untaken_fixtures(&names) {
        repairs.push(format!(
            "`{test}` takes `{}` as an argument: it used the fixture without taking it",
            fixtures.join("`, `")
        ));
        edits.push((at..at, insert));
    }
    if edits.is_empty() {
        return Ok((parsed, tests));
    }
    apply_edits(body, edits)?;
    Ok(with_real_tests(reparse(body)?))
}

/// `pytest.tmp_path` in a test is an AttributeError: pytest's fixtures are arguments, not
/// attributes of the module (click's `_tempfilepager`, run GG: 3 of an answer's 4 tests). The
/// attribute becomes the name (of `names`, the fixtures that may be taken), and
/// [`take_used_fixtures`] then makes the test take it.
fn unattribute_pytest_fixtures(
    body: &mut String,
    parsed: python::Parsed,
    tests: Vec<python::TestFn>,
    names: &[&str],
    repairs: &mut Vec<String>,
) -> Result<(python::Parsed, Vec<python::TestFn>), Rejection> {
    let attributes = parsed.pytest_attributes_in_tests(names);
    rename_in_tests(body, (parsed, tests), attributes, repairs, |name| {
        format!(
            "`pytest.{name}` became `{name}`: a fixture is taken as a test's argument, not read from pytest"
        )
    })
}

/// Replaces each range of `renames` by its name, with one repair (`say`) per name, and
/// returns the new parse and its real tests; `current` when there is nothing to rename.
fn rename_in_tests(
    body: &mut String,
    current: (python::Parsed, Vec<python::TestFn>),
    renames: Vec<(std::ops::Range<usize>, String)>,
    repairs: &mut Vec<String>,
    say: impl Fn(&str) -> String,
) -> Result<(python::Parsed, Vec<python::TestFn>), Rejection> {
    if renames.is_empty() {
        return Ok(current);
    }
    let names: BTreeSet<&str> = renames.iter().map(|c| c.1.as_str()).collect();
    repairs.extend(names.into_iter().map(&say));
    apply_edits(body, renames)?;
    Ok(with_real_tests(reparse(body)?))
}

/// A construction of the target module's class with its state passed as keywords, or
/// without a required parameter that admits `None`: mended ([`init_args`]).
fn mend_constructions(
    body: &mut String,
    parsed: python::Parsed,
    tests: Vec<python::TestFn>,
    ctx: &Context,
    repairs: &mut Vec<String>,
) -> Result<(python::Parsed, Vec<python::TestFn>), Rejection> {
    let (edits, mended) = init_args::mend(&parsed, &ctx.constructors);
    if edits.is_empty() {
        return Ok((parsed, tests));
    }
    repairs.extend(mended);
    apply_edits(body, edits)?;
    Ok(with_real_tests(reparse(body)?))
}

/// `tmp_path()` in a test is a TypeError: the fixture is a path, not a function (click's
/// `Editor` tests, runs N and O). The call becomes the name, and [`take_used_fixtures`] then
/// makes the test take it. A name the file binds at its top level (`own`) is left alone.
fn uncall_path_fixtures(
    body: &mut String,
    parsed: python::Parsed,
    tests: Vec<python::TestFn>,
    own: &BTreeSet<String>,
    repairs: &mut Vec<String>,
) -> Result<(python::Parsed, Vec<python::TestFn>), Rejection> {
    let names: Vec<&str> = ["tmp_path", "tmpdir"]
        .into_iter()
        .filter(|n| !own.contains(*n))
        .collect();
    let calls = parsed.bare_calls_in_tests(&names);
    rename_in_tests(body, (parsed, tests), calls, repairs, |name| {
        format!("`{name}()` became `{name}`: the fixture is a path, not a function")
    })
}

/// Standard-library struct sequences, built from a sequence of their fields: (the name as a
/// test calls it, its fields in order).
const STRUCT_SEQUENCES: &[(&str, &[&str])] = &[
    (
        "os.stat_result",
        &[
            "st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime",
            "st_mtime", "st_ctime",
        ],
    ),
    (
        "time.struct_time",
        &[
            "tm_year", "tm_mon", "tm_mday", "tm_hour", "tm_min", "tm_sec", "tm_wday", "tm_yday",
            "tm_isdst",
        ],
    ),
    ("os.terminal_size", &["columns", "lines"]),
];

/// `os.stat_result()` and `os.stat_result(st_mode=…)` are TypeErrors (`structseq() missing
/// required argument 'sequence'`): the model fakes a file's stat that way, and pathspec's
/// `TreeEntry` tests lost every test to it in runs K, M, KK and NN. The call gets its
/// sequence, the fields the model named at their places and every other one 0
/// (`os.stat_result((0o100644, 0, 0, 0, 0, 0, 0, 0, 0, 0))`: no type bits unless named, size
/// 0, times 0), and the test then checks what the code does with it — what the model expected
/// of it is characterized or fixed like any other guess. A keyword that is not one of the
/// fields leaves the call as it is.
fn fill_struct_sequences(
    body: &mut String,
    parsed: python::Parsed,
    tests: Vec<python::TestFn>,
    repairs: &mut Vec<String>,
) -> Result<(python::Parsed, Vec<python::TestFn>), Rejection> {
    let names: Vec<&str> = STRUCT_SEQUENCES.iter().map(|(n, _)| *n).collect();
    let calls: Vec<(std::ops::Range<usize>, String)> = parsed
        .keyword_calls_in_tests(&names)
        .into_iter()
        .filter_map(|(range, (name, keywords))| {
            let (_, fields) = STRUCT_SEQUENCES.iter().find(|(n, _)| *n == name)?;
            Some((range, struct_sequence(&name, fields, &keywords)?))
        })
        .collect();
    rename_in_tests(body, (parsed, tests), calls, repairs, |call| {
        let name = call.split('(').next().unwrap_or(call);
        format!(
            "`{name}(…)` became `{call}`: it is built from a sequence of its fields, those not named 0"
        )
    })
}

/// `name((f0, f1, …))` with the `keywords`' values at their fields' places and 0 elsewhere;
/// `None` when a keyword is not a field. All 0 is written `name((0,) * N)`.
fn struct_sequence(name: &str, fields: &[&str], keywords: &[(String, String)]) -> Option<String> {
    if keywords.iter().any(|(k, _)| !fields.contains(&k.as_str())) {
        return None;
    }
    if keywords.is_empty() {
        return Some(format!("{name}((0,) * {})", fields.len()));
    }
    let values: Vec<&str> = fields
        .iter()
        .map(|f| {
            keywords
                .iter()
                .find(|(k, _)| k == f)
                .map_or("0", |(_, v)| v.as_str())
        })
        .collect();
    Some(format!("{name}(({},))", values.join(", ")))
}

/// `(tmp_path / "d" / "f.txt").touch()` is a FileNotFoundError when the test never made `d`:
/// pathspec's `iter_tree` answers in run NN built their trees that way and lost every test
/// to it, the fix round too. Such a statement gets `(tmp_path / "d" /
/// "f.txt").parent.mkdir(parents=True, exist_ok=True)` on the line above — nothing where the
/// directory exists already — so the tree the test describes is there when the code under
/// test walks it. Only paths under `tmp_path`, pytest's own directory for the test.
fn make_parent_dirs(
    body: &mut String,
    parsed: python::Parsed,
    tests: Vec<python::TestFn>,
    repairs: &mut Vec<String>,
) -> Result<(python::Parsed, Vec<python::TestFn>), Rejection> {
    let writes = parsed.nested_writes_in_tests();
    if writes.is_empty() {
        return Ok((parsed, tests));
    }
    repairs.push(format!(
        "made the parent directories of {} path(s) under `tmp_path` before writing them (`.parent.mkdir(parents=True, exist_ok=True)`)",
        writes.len()
    ));
    let edits = writes
        .into_iter()
        .map(|(at, indent, path)| {
            (
                at..at,
                format!("{indent}{path}.parent.mkdir(parents=True, exist_ok=True)\n"),
            )
        })
        .collect();
    apply_edits(body, edits)?;
    Ok(with_real_tests(reparse(body)?))
}

/// Removes top-level definitions that shadow the module's names, the project's or pytest's
/// fixtures, placeholder tests and tests that check nothing; returns the parse of what is left
/// and its real tests.
fn strip_shadows_and_idle_tests(
    body: &mut String,
    parsed: python::Parsed,
    ctx: &Context,
    project: &Project,
    repairs: &mut Vec<String>,
) -> Result<(python::Parsed, Vec<python::TestFn>), Rejection> {
    let fixtures = project.fixture_names();
    let mut strip = Vec::new();
    for t in parsed.top_level() {
        // A module-level assignment too: `_registered = {}` "to store registered patterns for
        // testing" hides the module's own registry from every test.
        if ctx.module_names.contains(&t.name) {
            strip.push(t.bytes.clone());
            repairs.push(format!(
                "removed a local definition of `{}` that shadowed the module's own",
                t.name
            ));
        } else if t.kind == UnitKind::Module {
            continue;
        } else if fixtures.contains(&t.name) {
            strip.push(t.bytes.clone());
            repairs.push(format!(
                "removed a redefinition of the project's fixture `{}`",
                t.name
            ));
        } else if PYTEST_FIXTURES.contains(&t.name.as_str()) {
            // `def tmp_path(): return pytest.tmpdir()` breaks every test that takes it, and
            // a fix round (one test function at a time) never reaches it.
            strip.push(t.bytes.clone());
            repairs.push(format!(
                "removed a redefinition of pytest's own fixture `{}`",
                t.name
            ));
        }
    }
    let parsed = if strip.is_empty() {
        parsed
    } else {
        *body = python::remove_ranges(body, &strip);
        reparse(body)?
    };
    let tests = parsed.test_functions();
    if tests.is_empty() {
        return Err(Rejection::NoTests);
    }
    // A test that checks nothing covers code without testing it: it would raise coverage
    // while catching no change of behaviour.
    let mut idle: Vec<String> = tests
        .iter()
        .filter(|t| t.placeholder || !t.checks)
        .map(|t| t.node_id.clone())
        .collect();
    // The same test under another name adds nothing but a count (run Q: three `pager` tests
    // of one body).
    let mut duplicates = Vec::new();
    for (dup, first) in parsed.duplicate_tests() {
        if !idle.contains(&dup) && !idle.contains(&first) {
            idle.push(dup.clone());
            duplicates.push((dup, first));
        }
    }
    if idle.len() == tests.len() {
        return Err(match tests.iter().all(|t| t.placeholder) {
            true => Rejection::Placeholder,
            false => Rejection::NoCheck,
        });
    }
    let parsed = if idle.is_empty() {
        parsed
    } else {
        for t in tests.iter().filter(|t| idle.contains(&t.node_id)) {
            let same_as = duplicates.iter().find(|d| d.0 == t.node_id);
            repairs.push(match (t.placeholder, same_as) {
                (true, _) => format!("removed placeholder test `{}`", t.node_id),
                (false, Some((_, first))) => {
                    format!("removed test `{}`: the same as `{first}`", t.node_id)
                }
                (false, None) => format!("removed test `{}`: it checks nothing", t.node_id),
            });
        }
        *body = parsed
            .without_tests(&idle)
            .ok_or(Rejection::Unparseable { line: 1 })?;
        reparse(body)?
    };
    Ok(with_real_tests(parsed))
}

/// A parse with its tests that are not placeholders.
fn with_real_tests(parsed: python::Parsed) -> (python::Parsed, Vec<python::TestFn>) {
    let tests = parsed
        .test_functions()
        .into_iter()
        .filter(|t| !t.placeholder)
        .collect();
    (parsed, tests)
}

/// A function that takes no arguments, imported by name and called by no test: each test
/// calls it first. astor's `allow_ast_comparison` (a monkey-patcher) was imported and never
/// called by every answer of run Y (and of runs J to M), though the prompt says each test
/// calls it: each answer was refused, 4 candidates in a row. Only where the answer would be
/// refused otherwise: no test, and no fixture of the file, names the target.
fn call_an_imported_target(
    body: &mut String,
    parsed: python::Parsed,
    tests: Vec<python::TestFn>,
    ctx: &Context,
    repairs: &mut Vec<String>,
) -> Result<(python::Parsed, Vec<python::TestFn>), Rejection> {
    let name = ctx.gap.qualname.as_str();
    let imported = parsed.from_imports().into_iter().any(|(_, m, names)| {
        m == ctx.gap.module && names.iter().any(|(n, a)| n == name && a.is_none())
    });
    let named_in_a_definition = parsed
        .units()
        .iter()
        .any(|u| parsed.identifiers_in(u.bytes.clone()).contains(name));
    if ctx.gap.kind != UnitKind::Function
        || ctx.gap.params != 0
        || !imported
        || named_in_a_definition
        || tests.is_empty()
    {
        return Ok((parsed, tests));
    }
    let edits: Vec<(std::ops::Range<usize>, String)> = parsed
        .test_body_starts()
        .into_iter()
        .map(|(_, at, indent)| (at..at, format!("{name}()\n{indent}")))
        .collect();
    if edits.is_empty() {
        return Ok((parsed, tests));
    }
    repairs.push(format!(
        "each test calls `{name}()` first: the answer imported it, and no test called it"
    ));
    apply_edits(body, edits)?;
    Ok(with_real_tests(reparse(body)?))
}

/// `body` parsed again after cordon's edits; refused if they broke it.
fn reparse(body: &str) -> Result<python::Parsed, Rejection> {
    let p = python::parse(body).ok_or(Rejection::Unparseable { line: 1 })?;
    match p.first_error_line() {
        Some(line) => Err(Rejection::Unparseable { line }),
        None => Ok(p),
    }
}

/// The tests must use the target (its top-level name, or a method's own name); returns the
/// top-level name.
fn check_reaches_target(
    parsed: &python::Parsed,
    tests: &[python::TestFn],
    ctx: &Context,
) -> Result<String, Rejection> {
    let top = ctx.gap.top_name().to_string();
    let leaf = ctx
        .gap
        .qualname
        .rsplit('.')
        .next()
        .unwrap_or(&ctx.gap.qualname)
        .to_string();
    let mut used: BTreeSet<String> = tests
        .iter()
        .flat_map(|t| parsed.identifiers_in(t.bytes.clone()))
        .collect();
    // A test reaches the target through a fixture of the file it takes (a parameter is among
    // its identifiers), and that fixture through another.
    let fixtures: Vec<python::Unit> = parsed
        .units()
        .into_iter()
        .filter(|u| u.class.is_none() && u.is_fixture())
        .collect();
    for _ in 0..3 {
        let more: BTreeSet<String> = fixtures
            .iter()
            .filter(|f| used.contains(&f.qualname))
            .flat_map(|f| parsed.identifiers_in(f.bytes.clone()))
            .collect();
        if more.is_subset(&used) {
            break;
        }
        used.extend(more);
    }
    let reaches = used.contains(&top)
        || (ctx.gap.kind == UnitKind::Method && used.contains(&leaf))
        || ctx.callers.iter().any(|c| used.contains(&c.name));
    if !reaches {
        return Err(Rejection::DoesNotUseTarget { name: top });
    }
    Ok(top)
}

/// Deterministic imports: every name of the module the code uses but does not bind, and the
/// target's own name.
fn import_header(
    parsed: &python::Parsed,
    body: &str,
    ctx: &Context,
    project: &Project,
    top: &str,
) -> String {
    let all_idents = parsed.identifiers_in(0..body.len());
    let bound = parsed.bound_names();
    let mut needed: Vec<String> = ctx
        .module_names
        .iter()
        .chain(&ctx.module_from_names)
        .filter(|n| all_idents.contains(*n) && !bound.contains(*n))
        .cloned()
        .collect();
    if !needed.iter().any(|n| n == top) && !bound.contains(top) && ctx.module_names.contains(top) {
        needed.push(top.to_string());
    }
    needed.sort();
    needed.dedup();
    // Modules the test uses by name but never imports (`ast.parse(...)` with no `import ast`,
    // a NameError that one fix round rarely repairs): those the module under test imports
    // itself, and common standard-library ones.
    // The project's own top-level packages too (`click.Command(...)` in a test of click's
    // decorators, whose module imports `.core` relatively).
    let unbound = |n: &&str| !bound.contains(*n) && !ctx.module_names.contains(*n);
    let modules: Vec<&str> = all_idents
        .iter()
        .map(String::as_str)
        .filter(unbound)
        .filter(|n| *n != "pytest")
        .filter(|n| {
            STDLIB.contains(n)
                || ctx.module_imported.contains(*n)
                // A repository's own `subprocess.py` is no way around the forbidden modules.
                || (project.own_modules.iter().any(|o| o == n) && !FORBIDDEN_MODULES.contains(n))
        })
        .collect();
    // A module under the alias the target module gives it (`t.Optional` with click's
    // `import typing as t`), the alias used but never bound.
    let aliased: Vec<(&String, &String)> = ctx
        .module_aliases
        .iter()
        .filter(|(a, _)| all_idents.contains(*a) && unbound(&a.as_str()))
        .filter(|(a, _)| !modules.contains(&a.as_str()) && !ctx.module_from_names.contains(*a))
        .collect();
    // Standard-library names a test uses as if imported (`MagicMock`, `StringIO`).
    let common: Vec<(&str, &str)> = STDLIB_NAMES
        .iter()
        .copied()
        .filter(|(n, _)| {
            all_idents.contains(*n) && unbound(n) && !ctx.module_from_names.contains(*n)
        })
        .collect();
    // A subclass the prompt showed with its import (`from pkg.patterns import GitPattern`),
    // used but not imported: that import.
    let shown: Vec<&String> = ctx
        .constructions
        .iter()
        .filter(|c| {
            c.strip_prefix("from ")
                .and_then(|c| c.split_once(" import "))
                .is_some_and(|(_, n)| all_idents.contains(n) && !bound.contains(n))
        })
        .collect();
    // A class another module of the project defines, used with no import
    // (`pytest.raises(ClickException)` in a test of `_termui_impl`, which never names it):
    // from its module. Classes only: a lower-case name is more often a local variable.
    let defined: Vec<(&str, &str)> = all_idents
        .iter()
        .filter(|n| n.starts_with(|c: char| c.is_ascii_uppercase()))
        .filter(|n| unbound(&n.as_str()) && !ctx.module_from_names.contains(*n))
        .filter(|n| !shown.iter().any(|l| l.ends_with(&format!(" import {n}"))))
        .filter_map(|n| Some((n.as_str(), ctx.definitions.get(n)?.as_str())))
        .collect();
    let mut header = String::from(HEADER_MARK);
    header.push_str("import pytest  # noqa: F401\n");
    for (name, module) in defined {
        header.push_str(&format!("from {module} import {name}  # noqa: F401\n"));
    }
    for line in shown {
        header.push_str(&format!("{line}  # noqa: F401\n"));
    }
    for m in modules {
        header.push_str(&format!("import {m}  # noqa: F401\n"));
    }
    for (alias, module) in aliased {
        header.push_str(&format!("import {module} as {alias}  # noqa: F401\n"));
    }
    for (name, module) in common {
        header.push_str(&format!("from {module} import {name}  # noqa: F401\n"));
    }
    if !needed.is_empty() {
        header.push_str(&format!(
            "from {} import {}  # noqa: F401\n",
            ctx.gap.module,
            needed.join(", ")
        ));
    }
    header.push('\n');
    header
}

/// Standard-library modules a test may name without importing them.
const STDLIB: &[&str] = &[
    "ast",
    "collections",
    "copy",
    "datetime",
    "decimal",
    "enum",
    "fractions",
    "functools",
    "io",
    "itertools",
    "json",
    "math",
    "operator",
    "os",
    "pathlib",
    "random",
    "re",
    "string",
    "sys",
    "tempfile",
    "textwrap",
    "time",
    "types",
    "typing",
    "unittest",
    "warnings",
];

/// Standard-library names a test may use without importing them, and where they live: each
/// one means one thing only (not `datetime`, a module and a class).
const STDLIB_NAMES: &[(&str, &str)] = &[
    ("ANY", "unittest.mock"),
    ("BytesIO", "io"),
    ("Decimal", "decimal"),
    ("MagicMock", "unittest.mock"),
    ("Mock", "unittest.mock"),
    ("OrderedDict", "collections"),
    ("Path", "pathlib"),
    ("StringIO", "io"),
    ("dataclass", "dataclasses"),
    ("defaultdict", "collections"),
    ("mock_open", "unittest.mock"),
    ("namedtuple", "collections"),
    ("partial", "functools"),
    ("patch", "unittest.mock"),
];

/// The helpers of the project's tests the answer calls without defining or importing them
/// (click's `_create_progress`), copied into it with their imports ([`test_helpers`]); a
/// helper a copied one calls comes too.
fn copy_test_helpers(
    body: &mut String,
    mut parsed: python::Parsed,
    ctx: &Context,
    repairs: &mut Vec<String>,
) -> python::Parsed {
    let supplied = |n: &str| {
        ctx.module_names.contains(n)
            || ctx.module_from_names.contains(n)
            || ctx.definitions.contains_key(n)
    };
    for _ in 0..2 {
        let names = test_helpers::wanted(&parsed, &ctx.helpers, &supplied);
        if names.is_empty() {
            break;
        }
        let next = test_helpers::append(body, &names, &ctx.helpers);
        let Some(p) = python::parse(&next).filter(|p| p.first_error_line().is_none()) else {
            break;
        };
        for n in &names {
            repairs.push(format!(
                "copied `{n}` from the project's {}: the tests call it and the answer did not define it",
                ctx.helpers[n].file
            ));
        }
        *body = next;
        parsed = p;
    }
    parsed
}

/// cordon's name for the `n`th candidate file of a gap.
pub fn file_name(gap: &Gap, n: u32) -> String {
    let raw = format!("test_gen_{}_{}_{n}", gap.module, gap.qualname).to_lowercase();
    let mut s: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    while s.contains("__") {
        s = s.replace("__", "_");
    }
    s.truncate(80);
    format!("{s}.py")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A gap of `pkg/calc.py::divide`, with its project (shared with the fix tests).
    pub(crate) fn ctx() -> (Context, Project) {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("pkg")).expect("mkdir");
        std::fs::write(d.path().join("pkg/__init__.py"), "").expect("write");
        std::fs::write(
            d.path().join("pkg/calc.py"),
            "import math\nfrom decimal import Decimal as D\nPI = 3\n\ndef divide(a, b):\n    if b == 0:\n        raise ValueError('b')\n    return a / b\n\ndef helper():\n    return 1\n",
        )
        .expect("write");
        let project = crate::pipeline::detect::detect(d.path()).expect("detects");
        let gap = Gap {
            file: "pkg/calc.py".into(),
            module: "pkg.calc".into(),
            qualname: "divide".into(),
            kind: UnitKind::Function,
            start_line: 5,
            end_line: 8,
            missing_lines: vec![7],
            partial_lines: vec![6],
            params: 2,
        };
        let c = context(&project, d.path(), &gap).expect("context");
        (c, project)
    }

    /// The prompt shows the definition that runs, not an `@overload` stub of its name (click's
    /// `group`: every run showed the model a stub whose body is `...`).
    #[test]
    fn the_prompt_shows_the_real_definition_not_an_overload_stub() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            d.path().join("deco.py"),
            "import typing as t\n\n@t.overload\ndef group(name: str) -> int:\n    ...\n\ndef group(name=None):\n    if name:\n        return 1\n    return 2\n",
        )
        .expect("write");
        let project = crate::pipeline::detect::detect(d.path()).expect("detects");
        let gap = Gap {
            file: "deco.py".into(),
            module: "deco".into(),
            qualname: "group".into(),
            kind: UnitKind::Function,
            start_line: 7,
            end_line: 10,
            missing_lines: vec![9],
            partial_lines: vec![],
            params: 1,
        };
        let c = context(&project, d.path(), &gap).expect("context");
        assert!(
            c.source.starts_with("def group(name=None):\n"),
            "{}",
            c.source
        );
        assert!(c.source.contains("return 1  # NOT COVERED"), "{}", c.source);
        assert!(!c.source.contains("..."), "{}", c.source);
    }

    #[test]
    fn definitions_of_other_modules_name_their_module() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        std::fs::create_dir_all(r.join("pkg/patterns")).expect("mkdir");
        for (f, text) in [
            ("pkg/__init__.py", ""),
            ("pkg/util.py", "def normalize(p):\n    return p\n"),
            (
                "pkg/_impl.py",
                "class Pattern:\n    def match(self):\n        pass\n",
            ),
            ("pkg/patterns/__init__.py", ""),
            (
                "pkg/patterns/wild.py",
                "class Pattern:\n    pass\n\nclass WildPattern(Pattern):\n    def inner(self):\n        pass\n\nasync def fetch():\n    pass\nclass Generic[T]:\n    pass\n",
            ),
        ] {
            std::fs::write(r.join(f), text).expect("write");
        }
        let project = crate::pipeline::detect::detect(r).expect("detects");
        let defs = project_definitions(&project, r, "pkg.util");
        let want: BTreeMap<String, String> = [
            ("Generic", "pkg.patterns.wild"),
            // Also in the private `pkg._impl`: the public module wins.
            ("Pattern", "pkg.patterns.wild"),
            ("WildPattern", "pkg.patterns.wild"),
            ("fetch", "pkg.patterns.wild"),
        ]
        .into_iter()
        .map(|(n, m)| (n.to_string(), m.to_string()))
        .collect();
        // The target module's own `normalize` and the methods are not among them.
        assert_eq!(defs, want);
    }

    #[test]
    fn prompt_marks_lines_and_fits() {
        let (c, _) = ctx();
        assert!(
            c.source.contains("raise ValueError('b')  # NOT COVERED"),
            "{}",
            c.source
        );
        let m = prompt(&c, 0);
        assert!(m[1].content.contains("from pkg.calc import divide"));
        assert!(!m[1].content.contains("def ..."));
        // What the uncovered line needs, from the code's own condition.
        assert!(
            m[1].content
                .contains("- `raise ValueError('b')` runs only when `b == 0`\n"),
            "{}",
            m[1].content
        );
        // astor's `allow_ast_comparison`: every answer of runs J to M imported it and tested
        // what it adds without ever calling it.
        assert!(
            m[1].content
                .contains("- Every test calls `divide(…)` itself.\n"),
            "{}",
            m[1].content
        );
        // A method whose uncovered part needs an attribute of the object set: said as code.
        let mut method = c.clone();
        method.gap.kind = UnitKind::Method;
        method.gap.qualname = "Bar.render".into();
        method.reach = Some(reach::Reach {
            hint: String::new(),
            settings: vec!["is_hidden = False".into()],
        });
        let m = prompt(&method, 0);
        assert!(
            m[1].content.contains(
                "- After creating the `Bar` object (`obj`), set `obj.is_hidden = False` before calling `render`: the NOT COVERED lines need it.\n- Start"
            ),
            "{}",
            m[1].content
        );
        let mut none = c.clone();
        none.gap.params = 0;
        let m = prompt(&none, 0);
        assert!(
            m[1].content
                .contains("- Every test calls `divide()` itself (it takes no arguments).\n"),
            "{}",
            m[1].content
        );
    }

    /// The server reuses the longest common prefix of consecutive prompts: a gap's fix and
    /// classification requests must start exactly like its generation request, system
    /// message included, at the gap's shrink level.
    #[test]
    fn every_request_of_a_gap_starts_with_its_generation_prompts_head() {
        let (mut c, _) = ctx();
        c.shrink = 3;
        let generation = prompt(&c, c.shrink);
        let h = head(&c, c.shrink);
        assert!(generation[1].content.starts_with(&h));
        assert!(h.contains("raise ValueError('b')  # NOT COVERED"), "{h}");
        let fix = crate::pipeline::fix::prompt(
            &c,
            "def test_a():\n    assert 0\n",
            "E   assert 0",
            &[],
            &[],
        );
        assert_eq!(fix[0].content, generation[0].content);
        assert!(fix[1].content.starts_with(&h), "{}", fix[1].content);
        assert!(fix[1].content[h.len()..].starts_with("This pytest test for `divide`"));
        // The fix follows the gap's level, not level 0 (which shows the module's imports).
        assert!(head(&c, 0).contains("import math") && !fix[1].content.contains("import math"));
    }

    #[test]
    fn extraction() {
        let a =
            "Here you go:\n```python\nfrom x import y\n\ndef test_a():\n    assert y\n```\nDone.";
        assert_eq!(
            extract(a).as_deref(),
            Some("from x import y\n\ndef test_a():\n    assert y\n")
        );
        assert_eq!(extract("no code here"), None);
        // Truncated block: the rest of the answer.
        assert!(extract("```python\ndef test_a():\n    assert 1").is_some());
    }

    /// A NameError no fix round needs: the project's own package and common standard-library
    /// names used without an import get one; what the test binds itself does not.
    #[test]
    fn names_used_without_import_are_imported() {
        let (c, mut p) = ctx();
        p.own_modules = vec!["pkg".into()];
        let code = "from pkg.calc import divide\nfrom io import StringIO as S\n\ndef test_a():\n    m = MagicMock(return_value=2)\n    buf = StringIO()\n    assert divide(m(), 1) == 2 and pkg.calc.PI == 3 and buf.getvalue() == ''\n";
        let cand = check(code, &c, &p, "test_gen_x.py").expect("checks");
        let h = &cand.header;
        assert!(h.contains("import pkg  #"), "{h}");
        assert!(h.contains("from unittest.mock import MagicMock  #"), "{h}");
        assert!(h.contains("from io import StringIO  #"), "{h}");
        p.own_modules = vec!["pkg".into(), "socket".into()];
        let cand = check(
            "def test_a():\n    assert divide(4, 2) == 2 and socket\n",
            &c,
            &p,
            "x.py",
        )
        .expect("checks");
        assert!(!cand.header.contains("import socket"), "{}", cand.header);
        let code = "from unittest.mock import MagicMock\n\ndef test_a():\n    assert divide(MagicMock() or 4, 2) == 2\n";
        let cand = check(code, &c, &p, "test_gen_x.py").expect("checks");
        assert!(!cand.header.contains("MagicMock"), "{}", cand.header);
        assert!(!cand.header.contains("import pkg  #"), "{}", cand.header);
    }

    /// A module the target imports under an alias (click's `import typing as t`), used by
    /// that alias and never imported: imported as the target does. Three tests of click's
    /// decorators were lost to `NameError: name 't' is not defined` in run II.
    #[test]
    fn a_module_used_by_the_targets_alias_is_imported_under_it() {
        let (mut c, p) = ctx();
        c.module_aliases = python::parse("import typing as t, os.path as osp\nimport json\n")
            .expect("parses")
            .module_aliases();
        assert_eq!(c.module_aliases.len(), 2, "{:?}", c.module_aliases);
        let code =
            "def test_a():\n    x: t.Optional[int] = divide(4, 2)\n    assert x == 2 and osp.sep\n";
        let h = check(code, &c, &p, "x.py").expect("checks").header;
        assert!(h.contains("import typing as t  #"), "{h}");
        assert!(h.contains("import os.path as osp  #"), "{h}");
        // An alias the test does not use, or binds at the top of its file: not imported.
        let code = "import typing as t\n\ndef test_a():\n    assert divide(4, 2) == 2\n";
        let h = check(code, &c, &p, "x.py").expect("checks").header;
        assert!(!h.contains(" as "), "{h}");
    }

    /// A helper of the project's tests the answer calls, after its import from the module
    /// under test was dropped (it has no such name), is copied into the file, its imports
    /// with it: click's `_create_progress` cost 5 tests to a `NameError` in run BB.
    #[test]
    fn a_helper_of_the_projects_tests_the_answer_calls_is_copied() {
        let (mut c, p) = ctx();
        c.helpers.insert(
            "make".into(),
            test_helpers::Helper {
                file: "tests/test_calc.py".into(),
                source: "def make(n=2):\n    return Decimal(n)".into(),
                imports: vec!["from decimal import Decimal".into()],
            },
        );
        let code = "from pkg.calc import divide, make\n\ndef test_a():\n    assert divide(make(), 1) == 2\n";
        let cand = check(code, &c, &p, "t.py").expect("checks");
        assert!(
            cand.body.ends_with("# cordon: `make` copied from the project's tests/test_calc.py\nfrom decimal import Decimal\ndef make(n=2):\n    return Decimal(n)\n"),
            "{}",
            cand.body
        );
        assert!(
            cand.repairs
                .iter()
                .any(|r| r.starts_with("copied `make` from the project's tests/test_calc.py")),
            "{:?}",
            cand.repairs
        );
        // A name the module under test defines comes from it, not from the tests.
        c.helpers.insert(
            "helper".into(),
            test_helpers::Helper {
                file: "tests/test_calc.py".into(),
                source: "def helper():\n    return 9".into(),
                imports: vec![],
            },
        );
        let cand = check(
            "def test_a():\n    assert divide(helper(), 1) == 1\n",
            &c,
            &p,
            "t.py",
        )
        .expect("checks");
        assert!(!cand.body.contains("def helper"), "{}", cand.body);
        // A copied helper meets the same policy as the model's code: no subprocess.
        c.helpers.insert(
            "shell".into(),
            test_helpers::Helper {
                file: "tests/test_calc.py".into(),
                source: "def shell():\n    return subprocess.run(['true'])".into(),
                imports: vec!["import subprocess".into()],
            },
        );
        assert!(
            check(
                "def test_a():\n    shell()\n    assert divide(4, 2) == 2\n",
                &c,
                &p,
                "t.py"
            )
            .is_err()
        );
    }

    /// `from pkg import divide` when `pkg` does not re-export it: an ImportError for the
    /// whole file. The module under test defines `divide`, so it is imported from there.
    #[test]
    fn a_target_name_imported_from_another_own_module_comes_from_the_target() {
        let (c, mut p) = ctx();
        p.own_modules = vec!["pkg".into()];
        let code = "from pkg import divide, other\nfrom pkg import helper as h\n\ndef test_a():\n    assert divide(4, 2) == 2 and h() == 1 and other\n";
        let cand = check(code, &c, &p, "test_gen_x.py").expect("checks");
        assert!(
            cand.body.contains("from pkg import other\n"),
            "{}",
            cand.body
        );
        assert!(
            cand.body.contains("from pkg import helper as h"),
            "{}",
            cand.body
        );
        assert!(
            cand.header.contains("from pkg.calc import divide"),
            "{}",
            cand.header
        );
        assert!(
            cand.repairs
                .iter()
                .any(|r| r.contains("`divide` imported from `pkg.calc`"))
        );
    }

    /// astor's run: `from pytest import tmp_path` failed the file's every test at import.
    #[test]
    fn a_fixture_imported_from_pytest_is_dropped_from_the_import() {
        let (c, p) = ctx();
        let code = "from pytest import tmp_path, raises\nfrom pytest import capsys\n\ndef test_a(tmp_path):\n    with raises(ValueError):\n        divide(tmp_path and 1, 0)\n";
        let cand = check(code, &c, &p, "test_gen_x.py").expect("checks");
        assert!(
            cand.body.contains("from pytest import raises\n"),
            "{}",
            cand.body
        );
        assert!(
            !cand.body.contains("tmp_path,") && !cand.body.contains("import capsys"),
            "{}",
            cand.body
        );
        assert_eq!(
            cand.repairs
                .iter()
                .filter(|r| r.contains("a fixture is taken"))
                .count(),
            2
        );
    }

    #[test]
    fn checks_and_repairs() {
        let (c, p) = ctx();
        let code = "from calc import divide\n\ndef divide(a, b):\n    return 0\n\ndef test_zero():\n    with pytest.raises(ValueError):\n        divide(1, 0)\n\ndef test_todo():\n    pass\n";
        let cand = check(code, &c, &p, "test_gen_x.py").expect("repairs");
        assert_eq!(cand.tests, vec!["test_zero"]);
        assert!(
            cand.body.contains("from pkg.calc import divide"),
            "{}",
            cand.body
        );
        assert!(!cand.body.contains("return 0"), "{}", cand.body);
        assert!(cand.header.contains("import pytest"));
        assert_eq!(cand.repairs.len(), 3, "{:?}", cand.repairs);
        let content = cand.content();
        assert!(
            python::parse(&content)
                .expect("p")
                .first_error_line()
                .is_none()
        );

        // A test whose name has spaces gets underscores instead, wherever it is.
        let cand = check(
            "def test_a b():\n    assert divide(4, 2) == 2\n\nclass TestK:\n    def  test_c  d (self):\n        assert divide(1, 1) == 1\n",
            &c,
            &p,
            "t.py",
        )
        .expect("ok");
        assert_eq!(
            cand.tests,
            vec!["test_a_b".to_string(), "TestK::test_c_d".to_string()]
        );
        assert!(
            cand.repairs
                .iter()
                .any(|r| r == "the name `test_a b` written with underscores for its spaces"),
            "{:?}",
            cand.repairs
        );
        assert!(matches!(
            check(
                "def test_a b-c():\n    assert divide(4, 2) == 2\n",
                &c,
                &p,
                "t.py"
            ),
            Err(Rejection::Unparseable { .. })
        ));
        // A test that does not compile goes alone: it would fail the collection of the
        // others. An answer whose other code does not compile is refused.
        let broken = "from pkg.calc import divide\n\ndef test_a():\n    assert divide(4, 2) == 2\n\ndef test_b():\n    assert divide(a=4, 2) == 2\n\nclass TestK:\n    def test_c(self):\n        assert divide(4, b=2,\n                      1) == 2\n";
        let cand = check(broken, &c, &p, "t.py").expect("the rest is kept");
        assert_eq!(cand.tests, vec!["test_a"]);
        assert!(
            cand.repairs
                .iter()
                .any(|r| r == "removed test `test_b`: its code does not compile (line 7)"),
            "{:?}",
            cand.repairs
        );
        assert!(
            cand.repairs
                .iter()
                .any(|r| r.starts_with("removed test `TestK::test_c`")),
            "{:?}",
            cand.repairs
        );
        assert!(!cand.body.contains("a=4, 2"), "{}", cand.body);
        let helper = "from pkg.calc import divide\n\ndef two():\n    return divide(a=4, 2)\n\ndef test_a():\n    assert two() == 2\n";
        assert_eq!(
            check(helper, &c, &p, "t.py").unwrap_err(),
            Rejection::Unparseable { line: 4 }
        );
        let only = "def test_b():\n    assert divide(a=4, 2) == 2\n";
        assert!(matches!(
            check(only, &c, &p, "t.py"),
            Err(Rejection::Unparseable { .. })
        ));

        // A name the module does not have is dropped from the import (no ImportError for
        // the whole file).
        let cand = check(
            "from pkg.calc import divide, multiply as mul\n\ndef test_a():\n    assert divide(4, 2) == 2\n",
            &c,
            &p,
            "t.py",
        )
        .expect("ok");
        assert!(
            cand.body.starts_with("from pkg.calc import divide\n"),
            "{}",
            cand.body
        );
        assert!(
            cand.repairs.iter().any(|r| r.contains("`multiply`")),
            "{:?}",
            cand.repairs
        );
        // One the prompt named as a caller comes from the caller's module, also when the
        // import is all it named, and inside a block.
        let mut c2 = c.clone();
        c2.callers = vec![callers::Caller {
            module: "pkg.api".into(),
            name: "safe_divide".into(),
            signature: "safe_divide(a, b)".into(),
        }];
        let cand = check(
            "from pkg.calc import divide, safe_divide as sd, multiply\n\ndef test_a():\n    from pkg.calc import safe_divide\n    assert sd(4, 2) == divide(4, 2) == safe_divide(4, 2)\n",
            &c2,
            &p,
            "t.py",
        )
        .expect("ok");
        assert!(
            cand.body.starts_with(
                "from pkg.calc import divide; from pkg.api import safe_divide as sd\n"
            ) && cand
                .body
                .contains("\n    from pkg.api import safe_divide\n    assert"),
            "{}",
            cand.body
        );
        assert!(
            cand.repairs.iter().any(|r| r
                == "`safe_divide` imported from `pkg.api`, which defines it, instead of `pkg.calc`")
                && cand.repairs.iter().any(|r| r.contains("`multiply`")),
            "{:?}",
            cand.repairs
        );

        // So does a class another module of the project defines.
        let mut c3 = c.clone();
        c3.definitions = BTreeMap::from([("Fraction".to_string(), "pkg.frac".to_string())]);
        let cand = check(
            "from pkg.calc import divide, Fraction\n\ndef test_a():\n    assert divide(Fraction(4), 2) == 2\n",
            &c3,
            &p,
            "t.py",
        )
        .expect("ok");
        assert!(
            cand.body
                .starts_with("from pkg.calc import divide; from pkg.frac import Fraction\n"),
            "{}",
            cand.body
        );
        // Used and never imported: imported from its module by the header; a lower-case
        // definition of the same kind is not (more often a local variable), nor a class the
        // file defines itself.
        c3.definitions
            .insert("ratio".to_string(), "pkg.frac".to_string());
        c3.definitions
            .insert("Own".to_string(), "pkg.frac".to_string());
        let cand = check(
            "class Own:\n    pass\n\ndef test_a():\n    ratio = 2\n    with pytest.raises(Fraction):\n        divide(Own(), ratio)\n",
            &c3,
            &p,
            "t.py",
        )
        .expect("ok");
        let h = &cand.header;
        assert!(h.contains("from pkg.frac import Fraction  #"), "{h}");
        assert!(!h.contains("ratio") && !h.contains("Own"), "{h}");

        // The NameError case: no import at all; cordon adds it.
        let cand = check(
            "def test_a():\n    assert divide(4, 2) == 2\n    assert PI == 3\n",
            &c,
            &p,
            "t.py",
        )
        .expect("ok");
        assert!(
            cand.header.contains("from pkg.calc import PI, divide"),
            "{}",
            cand.header
        );

        // A module used by name, never imported: the module under test's own import (`math`)
        // and a standard one (`json`) are added; a name bound in the file is not.
        let cand = check(
            "import os\n\ndef test_a():\n    assert divide(math.pi, 1) > 3\n    assert json.loads('1') == 1\n    assert os.sep\n",
            &c,
            &p,
            "t.py",
        )
        .expect("ok");
        assert!(cand.header.contains("import math  #"), "{}", cand.header);
        assert!(cand.header.contains("import json  #"), "{}", cand.header);
        assert!(!cand.header.contains("import os"), "{}", cand.header);

        // A name the module imports from elsewhere is imported from the module.
        let cand = check(
            "def test_a():\n    assert divide(D(4), 2) == 2\n",
            &c,
            &p,
            "t.py",
        )
        .expect("ok");
        assert!(cand.header.contains("import D, divide"), "{}", cand.header);

        // A module-level assignment hiding the module's own name goes; the name is imported.
        let cand = check(
            "PI = {}\n\ndef test_a():\n    assert divide(PI, 1) == PI\n",
            &c,
            &p,
            "t.py",
        )
        .expect("ok");
        assert!(!cand.body.contains("PI = {}"), "{}", cand.body);
        assert!(cand.header.contains("PI, divide"), "{}", cand.header);

        // A redefinition of pytest's own fixture (decorator and all) goes; the tests that
        // take it get pytest's.
        let cand = check(
            "import pytest\n\n@pytest.fixture\ndef tmp_path():\n    return pytest.tmpdir()\n\ndef test_a(tmp_path):\n    assert divide(4, 2) == 2\n",
            &c,
            &p,
            "t.py",
        )
        .expect("ok");
        assert!(!cand.body.contains("pytest.tmpdir"), "{}", cand.body);
        assert!(!cand.body.contains("@pytest.fixture"), "{}", cand.body);
        assert!(cand.body.contains("def test_a(tmp_path)"), "{}", cand.body);
        assert!(
            cand.repairs
                .iter()
                .any(|r| r.contains("pytest's own fixture `tmp_path`")),
            "{:?}",
            cand.repairs
        );

        // A test that uses a fixture by name without taking it gets it as an argument (after
        // its own `def tmp_path()` went, too); one that binds the name itself, or takes it, or
        // reads only an attribute of that name, is left as it is.
        let cand = check(
            "import pytest\n\ndef tmp_path():\n    return '/tmp'\n\ndef test_a():\n    p = tmp_path / 'x'\n    capsys.readouterr()\n    assert divide(4, 2) == 2\n\nclass TestK:\n    def test_b(self,):\n        monkeypatch.setenv('A', '1')\n        assert divide(1, 1) == 1\n\ndef test_c(tmp_path):\n    assert divide(str(tmp_path), 1)\n\ndef test_d():\n    caplog = []\n    assert divide(len(caplog), 1) == 0\n\ndef test_e():\n    assert divide(o.tmp_path, 1) and f(capsys=1)\n",
            &c,
            &p,
            "t.py",
        )
        .expect("ok");
        for line in [
            "def test_a(tmp_path, capsys):",
            "def test_b(self, monkeypatch):",
            "def test_c(tmp_path):",
            "def test_d():",
            "def test_e():",
        ] {
            assert!(cand.body.contains(line), "{line} in\n{}", cand.body);
        }
        assert!(
            cand.repairs.iter().any(|r| r
                == "`test_a` takes `tmp_path`, `capsys` as an argument: it used the fixture without taking it"),
            "{:?}",
            cand.repairs
        );
        assert_eq!(cand.tests.len(), 5, "{:?}", cand.tests);
        // A name the file binds at its top level is the file's, not the fixture.
        let cand = check(
            "capsys = object()\n\ndef test_a():\n    assert divide(4, 2) == 2 and capsys\n",
            &c,
            &p,
            "t.py",
        )
        .expect("ok");
        assert!(cand.body.contains("def test_a():"), "{}", cand.body);
        // The same test under another name goes (comments, a docstring and spacing aside);
        // another argument, another class or other parameters make another test.
        let cand = check(
            "def test_a():\n    assert divide(4, 2) == 2\n\ndef test_b():\n    \"\"\"Again.\"\"\"\n    # same\n    assert divide(4,  2) == 2\n\ndef test_c():\n    assert divide(4, 1) == 2\n\ndef test_d(tmp_path):\n    assert divide(4, 2) == 2\n\nclass TestK:\n    def test_a(self):\n        assert divide(4, 2) == 2\n",
            &c,
            &p,
            "t.py",
        )
        .expect("ok");
        assert_eq!(
            cand.tests,
            vec!["test_a", "test_c", "test_d", "TestK::test_a"],
            "{}",
            cand.body
        );
        assert!(
            cand.repairs
                .iter()
                .any(|r| r == "removed test `test_b`: the same as `test_a`"),
            "{:?}",
            cand.repairs
        );
        // `tmp_path()` is the path itself (click's `Editor` tests); `tmp_path(1)` and a test's
        // own `def tmp_path()` are left alone.
        let cand = check(
            "def test_a():\n    p = tmp_path() / 'f'\n    assert divide(1, 1) == 1 and tmpdir()\n\ndef test_b():\n    assert divide(tmp_path(1), 1)\n\ndef test_c():\n    def tmp_path():\n        return 'x'\n    assert divide(tmp_path(), 1)\n",
            &c,
            &p,
            "t.py",
        )
        .expect("ok");
        assert!(
            cand.body.starts_with("def test_a(tmp_path, tmpdir):\n    p = tmp_path / 'f'\n    assert divide(1, 1) == 1 and tmpdir\n"),
            "{}",
            cand.body
        );
        assert!(
            cand.body.contains("divide(tmp_path(1), 1)")
                && cand.body.contains("divide(tmp_path(), 1)"),
            "{}",
            cand.body
        );
        assert!(
            cand.repairs
                .iter()
                .any(|r| r
                    == "`tmp_path()` became `tmp_path`: the fixture is a path, not a function"),
            "{:?}",
            cand.repairs
        );
        // The answer's own `def tmp_path()` goes as a shadow of the fixture: its calls then
        // are the fixture's.
        let own =
            "def tmp_path():\n    return 1\n\ndef test_a():\n    assert divide(tmp_path(), 1)\n";
        let cand = check(own, &c, &p, "t.py").expect("ok");
        assert!(
            cand.body
                .ends_with("def test_a(tmp_path):\n    assert divide(tmp_path, 1)\n"),
            "{}",
            cand.body
        );
        // `pytest.tmp_path` is an AttributeError (click's `_tempfilepager`, run GG): it becomes
        // the fixture, taken, and `pytest.tmpdir()` the path; `pytest.raises` is pytest's own,
        // and a test that binds `pytest` to something else is left alone.
        let attr = "import pytest\n\ndef test_a():\n    f = pytest.tmp_path / 'x'\n    with pytest.raises(ValueError):\n        divide(str(f), pytest.tmpdir())\n\ndef test_b(capsys):\n    pytest = object()\n    assert divide(pytest.tmp_path, 1)\n";
        let cand = check(attr, &c, &p, "t.py").expect("ok");
        assert!(
            cand.body.contains("def test_a(tmp_path, tmpdir):\n    f = tmp_path / 'x'\n    with pytest.raises(ValueError):\n        divide(str(f), tmpdir)\n"),
            "{}",
            cand.body
        );
        assert!(
            cand.body
                .contains("def test_b(capsys):\n    pytest = object()\n    assert divide(pytest.tmp_path, 1)\n"),
            "{}",
            cand.body
        );
        assert!(
            cand.repairs.iter().any(|r| r
                == "`pytest.tmp_path` became `tmp_path`: a fixture is taken as a test's argument, not read from pytest"),
            "{:?}",
            cand.repairs
        );

        assert_eq!(
            check("def test_a():\n    assert len([]) == 0\n", &c, &p, "t.py").unwrap_err(),
            Rejection::DoesNotUseTarget {
                name: "divide".into()
            }
        );
        // Through a fixture the test takes (and that fixture's own), the target is reached;
        // through one no test takes, it is not.
        let via = "import pytest\n\n@pytest.fixture\ndef q():\n    return divide(1, 2)\n\n@pytest.fixture\ndef r(q):\n    return q\n\ndef test_a(r):\n    assert r == 0.5\n";
        assert!(check(via, &c, &p, "t.py").is_ok());
        assert_eq!(
            check(
                &via.replace(
                    "test_a(r):\n    assert r ==",
                    "test_a(tmp_path):\n    assert tmp_path !="
                ),
                &c,
                &p,
                "t.py"
            )
            .unwrap_err(),
            Rejection::DoesNotUseTarget {
                name: "divide".into()
            }
        );
        // Through a public function of the project that calls it, too.
        let through = "from pkg.api import safe_divide\n\ndef test_a():\n    assert safe_divide(1, 2) == 0.5\n";
        assert!(check(through, &c, &p, "t.py").is_err());
        let mut c2 = c.clone();
        c2.callers = vec![callers::Caller {
            module: "pkg.api".into(),
            name: "safe_divide".into(),
            signature: "safe_divide(a, b)".into(),
        }];
        assert!(check(through, &c2, &p, "t.py").is_ok());
        assert!(
            head(&c2, 1).contains("from pkg.api import safe_divide  # safe_divide(a, b)\n")
                && !head(&c2, 2).contains("safe_divide"),
            "{}",
            head(&c2, 1)
        );
        assert!(matches!(
            check(
                "import subprocess\ndef test_a():\n    subprocess.run(['x'])\n    divide(1,2)\n",
                &c,
                &p,
                "t.py"
            ),
            Err(Rejection::Forbidden { .. })
        ));
        assert!(matches!(
            check("def test_a(:\n", &c, &p, "t.py"),
            Err(Rejection::Unparseable { .. })
        ));
        assert_eq!(
            check("def test_a():\n    pass\n", &c, &p, "t.py").unwrap_err(),
            Rejection::Placeholder
        );
    }

    #[test]
    fn dynamic_code_is_refused_by_name_and_a_method_of_the_same_name_is_not() {
        let (c, p) = ctx();
        let refused = |code: &str| {
            check(code, &c, &p, "t.py").err().and_then(|e| match e {
                Rejection::Forbidden { what } => Some(what),
                _ => None,
            })
        };
        // isodate's answer: a regular expression, refused before as the builtin `compile`.
        assert_eq!(
            refused(
                "import re\nTZ = re.compile(r'Z')\n\ndef test_a():\n    assert TZ.match('Z')\n    assert divide(4, 2) == 2\n"
            ),
            None
        );
        for (code, what) in [
            (
                "def test_a():\n    assert compile('1', 'f', 'eval')\n    assert divide(4, 2) == 2\n",
                "compile",
            ),
            (
                "import builtins\ndef test_a():\n    assert builtins.eval('1')\n    assert divide(4, 2) == 2\n",
                "eval",
            ),
            (
                "import os\ndef test_a():\n    os.system('id')\n    assert divide(4, 2) == 2\n",
                "os.system",
            ),
            (
                "def test_a():\n    run = exec\n    assert divide(4, 2) == 2\n",
                "exec",
            ),
        ] {
            assert_eq!(refused(code).as_deref(), Some(what), "{code}");
        }
    }

    /// click's `format_bar`, run KK: one parametrize decorator copied over tests that take
    /// none of its names, which pytest would not collect — those decorators go; the one over
    /// the test that takes them, and one that takes some of them, stay.
    #[test]
    fn a_parametrize_over_names_the_test_does_not_take_is_removed() {
        let (c, p) = ctx();
        let deco = "@pytest.mark.parametrize(\"a, b\", [(4, 2), (6, 3)])\n";
        let answer = format!(
            "import pytest\nfrom pkg.calc import divide\n\n{deco}def test_a(a, b):\n    assert divide(a, b) == 2\n\n\n{deco}@pytest.mark.timeout(5)\ndef test_b():\n    assert divide(8, 4) == 2\n\n\nclass TestK:\n    {deco}    def test_c(self, tmp_path):\n        assert divide(2, 1) == 2\n\n    {deco}    def test_d(self, a):\n        assert divide(a, 2) == 2\n"
        );
        let cand = check(&answer, &c, &p, "t.py").expect("ok");
        assert!(
            cand.body.contains(&format!("\n{deco}def test_a(a, b):\n"))
                && cand
                    .body
                    .contains("\n\n\n@pytest.mark.timeout(5)\ndef test_b():\n")
                && cand
                    .body
                    .contains("class TestK:\n    def test_c(self, tmp_path):\n")
                && cand
                    .body
                    .contains(&format!("    {deco}    def test_d(self, a):\n")),
            "{}",
            cand.body
        );
        assert_eq!(
            cand.repairs,
            [
                "removed the `@pytest.mark.parametrize` of `test_b`: the test takes none of its names, and pytest would not collect it",
                "removed the `@pytest.mark.parametrize` of `TestK::test_c`: the test takes none of its names, and pytest would not collect it"
            ]
        );
    }

    /// pathspec's `TreeEntry`, runs K, M and KK: `os.stat_result()` without its sequence.
    #[test]
    fn a_struct_sequence_built_without_its_fields_gets_them_all_zero() {
        let (c, p) = ctx();
        let answer = "import os\nimport stat\nimport time\nfrom pkg.calc import divide\n\n\ndef test_a():\n    st = os.stat_result()\n    t = time.struct_time()\n    assert divide(st.st_size + 4, 2) == 2\n\n\ndef test_b():\n    st = os.stat_result((1,) * 10)\n    assert divide(4, 2) == 2\n\n\ndef test_c():\n    # NN's `TreeEntry` answers: the fields as keywords.\n    st = os.stat_result(st_size=3, st_mode=stat.S_IFREG | 0o644)\n    odd = os.stat_result(st_blksize=4096)\n    pos = os.terminal_size(columns=80, lines=24, extra=1)\n    assert divide(st.st_size + odd[0] + pos[0], 1) == 3\n";
        let cand = check(answer, &c, &p, "t.py").expect("ok");
        assert!(
            cand.body.contains(
                "    st = os.stat_result((0,) * 10)\n    t = time.struct_time((0,) * 9)\n"
            ) && cand.body.contains("    st = os.stat_result((1,) * 10)\n")
                && cand.body.contains(
                    "    st = os.stat_result((stat.S_IFREG | 0o644, 0, 0, 0, 0, 0, 3, 0, 0, 0,))\n"
                )
                // Not fields of the sequence: left for the run and the fix round to judge.
                && cand.body.contains("    odd = os.stat_result(st_blksize=4096)\n")
                && cand
                    .body
                    .contains("    pos = os.terminal_size(columns=80, lines=24, extra=1)\n"),
            "{}",
            cand.body
        );
        assert_eq!(
            cand.repairs,
            [
                "`os.stat_result(…)` became `os.stat_result((0,) * 10)`: it is built from a sequence of its fields, those not named 0",
                "`os.stat_result(…)` became `os.stat_result((stat.S_IFREG | 0o644, 0, 0, 0, 0, 0, 3, 0, 0, 0,))`: it is built from a sequence of its fields, those not named 0",
                "`time.struct_time(…)` became `time.struct_time((0,) * 9)`: it is built from a sequence of its fields, those not named 0"
            ]
        );
    }

    /// NN's `iter_tree` answers: `(tmp_path / "dir1" / "file1.txt").touch()` without `dir1`.
    #[test]
    fn a_file_written_below_a_directory_never_made_gets_its_parents_first() {
        let (c, p) = ctx();
        let answer = "import pytest\nfrom pkg.calc import divide\n\n\ndef test_a(tmp_path):\n    (tmp_path / \"d1\" / \"f.txt\").touch()\n    if True:\n        (tmp_path / \"d2\" / \"e\" / \"g.txt\").write_text(\"x\")\n    (tmp_path / \"top.txt\").touch()\n    (tmp_path / \"d3\" / \"h\").mkdir()\n    with pytest.raises(FileNotFoundError):\n        (tmp_path / \"no\" / \"f\").write_text(\"x\")\n    x = 1; (tmp_path / \"d4\" / \"f\").touch()\n    assert divide(4, 2) == 2\n\n\ndef test_b(tmpdir):\n    (tmpdir / \"d\" / \"f\").write_text(\"x\", \"utf-8\")\n    assert divide(4, 2) == 2\n";
        let cand = check(answer, &c, &p, "t.py").expect("ok");
        let want = "def test_a(tmp_path):\n    (tmp_path / \"d1\" / \"f.txt\").parent.mkdir(parents=True, exist_ok=True)\n    (tmp_path / \"d1\" / \"f.txt\").touch()\n    if True:\n        (tmp_path / \"d2\" / \"e\" / \"g.txt\").parent.mkdir(parents=True, exist_ok=True)\n        (tmp_path / \"d2\" / \"e\" / \"g.txt\").write_text(\"x\")\n    (tmp_path / \"top.txt\").touch()\n    (tmp_path / \"d3\" / \"h\").parent.mkdir(parents=True, exist_ok=True)\n    (tmp_path / \"d3\" / \"h\").mkdir()\n    with pytest.raises(FileNotFoundError):\n        (tmp_path / \"no\" / \"f\").write_text(\"x\")\n    x = 1; (tmp_path / \"d4\" / \"f\").touch()\n";
        assert!(cand.body.contains(want), "{}", cand.body);
        // `tmpdir` is a py.path, which has no `.parent`: left alone.
        assert!(
            cand.body
                .contains("def test_b(tmpdir):\n    (tmpdir / \"d\" / \"f\").write_text("),
            "{}",
            cand.body
        );
        assert_eq!(
            cand.repairs,
            [
                "made the parent directories of 3 path(s) under `tmp_path` before writing them (`.parent.mkdir(parents=True, exist_ok=True)`)"
            ]
        );
    }

    /// astor's `allow_ast_comparison`: imported, never called — each test calls it first.
    #[test]
    fn a_function_without_arguments_imported_and_never_called_is_called_first() {
        let (c, p) = ctx();
        let mut c0 = c.clone();
        c0.gap.qualname = "helper".into();
        c0.gap.params = 0;
        let answer = "from pkg.calc import helper\n\ndef test_a():\n    \"\"\"Doc.\"\"\"\n    # setup\n    assert 1 == 1\n\nclass TestK:\n    def test_b(self):\n        x = 2\n        assert x\n\ndef test_c(): assert len(\"ab\") == 2\n";
        let cand = check(answer, &c0, &p, "t.py").expect("ok");
        assert!(
            cand.body
                .contains("\"\"\"Doc.\"\"\"\n    # setup\n    helper()\n    assert 1 == 1\n")
                && cand
                    .body
                    .contains("    def test_b(self):\n        helper()\n        x = 2\n")
                && cand
                    .body
                    .contains("def test_c(): assert len(\"ab\") == 2\n"),
            "{}",
            cand.body
        );
        assert_eq!(
            cand.repairs,
            ["each test calls `helper()` first: the answer imported it, and no test called it"]
        );
        // Not when a test names it already, nor for one that takes arguments, nor unimported.
        let called = "from pkg.calc import helper\n\ndef test_a():\n    assert helper() == 1\n\ndef test_b():\n    assert len([]) == 0\n";
        let cand = check(called, &c0, &p, "t.py").expect("ok");
        assert!(!cand.body.contains("    helper()\n"), "{}", cand.body);
        let refused = Rejection::DoesNotUseTarget {
            name: "divide".into(),
        };
        let divide = "from pkg.calc import divide\n\ndef test_a():\n    assert 1 == 1\n";
        assert_eq!(check(divide, &c, &p, "t.py").unwrap_err(), refused);
        let unimported = "import pkg.calc\n\ndef test_a():\n    assert 1 == 1\n";
        assert!(check(unimported, &c0, &p, "t.py").is_err());
    }

    #[test]
    fn a_test_that_checks_nothing_is_removed_and_none_that_checks_is_refused() {
        let (c, p) = ctx();
        let cand = check(
            "def test_runs():\n    divide(4, 2)\n\ndef test_value():\n    assert divide(4, 2) == 2\n",
            &c,
            &p,
            "t.py",
        )
        .expect("one test checks");
        assert_eq!(cand.tests, vec!["test_value"]);
        assert!(!cand.body.contains("test_runs"), "{}", cand.body);
        assert!(
            cand.repairs
                .iter()
                .any(|r| r.contains("`test_runs`: it checks nothing")),
            "{:?}",
            cand.repairs
        );
        assert_eq!(
            check(
                "def test_runs():\n    divide(4, 2)\n\nclass TestD:\n    def test_m(self):\n        print(divide(1, 1))\n",
                &c,
                &p,
                "t.py",
            )
            .err(),
            Some(Rejection::NoCheck)
        );
    }

    #[test]
    fn a_cut_off_answer_keeps_its_finished_tests() {
        let code = "from m import f\n\ndef test_a():\n    assert f(1) == 1\n\n@pytest.mark.x\ndef test_b():\n    assert f(2) == [1,";
        let (s, _) = salvage_truncated(code).expect("salvaged");
        assert!(
            s.contains("test_a") && !s.contains("test_b") && !s.contains("mark"),
            "{s}"
        );
        assert_eq!(
            salvage_truncated("def test_a():\n    assert f(1) == ("),
            None
        );
        // One long test of many cases keeps the cases it finished (pathspec, run P); the
        // cut goes before the case that was cut off, never inside a block.
        let long = "def test_a():\n    x = [\n        1,\n    ]\n    assert f(x) == 1\n\n    # case 2\n    for y in x:\n        assert f(y) == 2\n    z = {\n        'k': [1,";
        let (s, what) = salvage_truncated(long).expect("salvaged");
        assert_eq!(
            s,
            "def test_a():\n    x = [\n        1,\n    ]\n    assert f(x) == 1\n\n    # case 2\n    for y in x:\n        assert f(y) == 2\n"
        );
        assert!(what.contains("last complete statement"), "{what}");
        // What is complete checks nothing: the test goes.
        let idle = "def test_a():\n    assert f(1) == 1\n\ndef test_b():\n    x = f(2)\n    assert x == [1,";
        let (s, what) = salvage_truncated(idle).expect("salvaged");
        assert_eq!(s, "def test_a():\n    assert f(1) == 1\n\n");
        assert!(what.contains("dropped"), "{what}");
        // A cut-off fixture or helper is dropped, not cut.
        let helper = "def test_a():\n    assert f(1) == 1\n\ndef helper():\n    x = 1\n    assert x\n    y = (";
        assert!(
            salvage_truncated(helper)
                .expect("salvaged")
                .0
                .ends_with("== 1\n\n")
        );
    }

    /// No test function uses the target: the shortest definition that does in the other files
    /// beside the tests is the example, and the shortest test that uses another public name
    /// of its module — from the test file named after the module first — shows how the
    /// project runs it; a symlink there is never read.
    #[test]
    fn an_example_comes_from_the_files_beside_the_tests() {
        let d = tempfile::tempdir().expect("tempdir");
        for dir in ["pkg", "tests/typing"] {
            std::fs::create_dir_all(d.path().join(dir)).expect("mkdir");
        }
        let write = |p: &str, s: &str| std::fs::write(d.path().join(p), s).expect("write");
        write("pkg/__init__.py", "");
        write(
            "pkg/deco.py",
            "def version_option(v):\n    def wrap(f):\n        f.version = v\n        return f\n    return wrap\n\ndef command(f):\n    return f\n\ndef _memo(f):\n    return f\n",
        );
        write(
            "tests/test_other.py",
            "def test_nothing():\n    assert True\n\ndef test_c():\n    assert command\n\ndef test_m():\n    _memo(1)\n",
        );
        let runs = "def test_command_runs(runner):\n    r = runner.invoke(pkg.deco.command(f), [])\n    assert r.exit_code == 0";
        let skipped = "@pytest.mark.skipif(WIN, reason='no')\ndef test_c(): assert command";
        write(
            "tests/test_deco.py",
            &format!("import pkg.deco\n\n{runs}\n\n{skipped}\n"),
        );
        write(
            "tests/typing/typing_version.py",
            "import pkg.deco\n\n@pkg.deco.version_option('0.1')\ndef cli():\n    pass\n\nLONG = 1\n",
        );
        let secret = d.path().join("secret.py");
        std::fs::write(&secret, "def leak():\n    version_option('SECRET')\n").expect("write");
        std::os::unix::fs::symlink(&secret, d.path().join("tests/typing/a_link.py"))
            .expect("symlink");
        let project = crate::pipeline::detect::detect(d.path()).expect("detects");
        let gap = Gap {
            file: "pkg/deco.py".into(),
            module: "pkg.deco".into(),
            qualname: "version_option".into(),
            kind: UnitKind::Function,
            start_line: 1,
            end_line: 5,
            missing_lines: vec![3],
            partial_lines: vec![],
            params: 1,
        };
        let c = context(&project, d.path(), &gap).expect("context");
        assert_eq!(
            c.example.as_deref(),
            Some("@pkg.deco.version_option('0.1')\ndef cli():\n    pass")
        );
        assert_eq!(c.exercise.as_deref(), Some(runs));
        assert!(
            head(&c, 0).contains(runs) && !head(&c, 1).contains(runs),
            "{}",
            head(&c, 0)
        );
        std::fs::remove_file(d.path().join("tests/typing/typing_version.py")).expect("rm");
        let c = context(&project, d.path(), &gap).expect("context");
        assert_eq!(c.example, None, "the symlinked file is not read");
        assert_eq!(
            c.exercise, None,
            "a test of another name is shown only beside a use"
        );
    }

    /// An abstract base in the signature: the project's subclasses of it (two levels down)
    /// that something builds come with their import.
    #[test]
    fn an_abstract_base_is_shown_built_through_its_subclasses() {
        let d = tempfile::tempdir().expect("tempdir");
        for dir in ["pkg/patterns", "tests"] {
            std::fs::create_dir_all(d.path().join(dir)).expect("mkdir");
        }
        let write = |p: &str, s: &str| std::fs::write(d.path().join(p), s).expect("write");
        write("pkg/__init__.py", "");
        write("pkg/patterns/__init__.py", "");
        write(
            "pkg/pattern.py",
            "class Pattern(object):\n    def match(self, f):\n        raise NotImplementedError\n\n\nclass RegexPattern(Pattern):\n    pass\n",
        );
        write(
            "pkg/patterns/git.py",
            "from pkg import pattern\n\n\nclass GitPattern(pattern.RegexPattern):\n    pass\n",
        );
        write(
            "pkg/util.py",
            "def match(patterns: list[Pattern], files):\n    return [f for f in files if any(p.match(f) for p in patterns)]\n",
        );
        write(
            "tests/test_git.py",
            "from pkg.patterns.git import GitPattern\n\ndef test_git():\n    p = GitPattern('*.txt')\n    assert p\n",
        );
        let project = crate::pipeline::detect::detect(d.path()).expect("detects");
        let gap = Gap {
            file: "pkg/util.py".into(),
            module: "pkg.util".into(),
            qualname: "match".into(),
            kind: UnitKind::Function,
            start_line: 1,
            end_line: 2,
            missing_lines: vec![2],
            partial_lines: vec![],
            params: 2,
        };
        let c = context(&project, d.path(), &gap).expect("context");
        assert_eq!(
            c.constructions,
            vec![
                "from pkg.patterns.git import GitPattern",
                "p = GitPattern('*.txt')"
            ]
        );
        // A test that builds one without importing it gets the import it was shown; one that
        // imports it from the wrong module gets it from the module that defines it.
        let cand = check(
            "from pkg.util import match\n\ndef test_m():\n    assert match([GitPattern('*')], []) == []\n",
            &c,
            &project,
            "t.py",
        )
        .expect("ok");
        assert!(
            cand.header
                .contains("from pkg.patterns.git import GitPattern  #"),
            "{}",
            cand.header
        );
        let cand = check(
            "from pkg.util import match, GitPattern\n\ndef test_m():\n    assert match([GitPattern('*')], []) == []\n",
            &c,
            &project,
            "t.py",
        )
        .expect("ok");
        assert!(
            cand.body.starts_with(
                "from pkg.util import match; from pkg.patterns.git import GitPattern\n"
            ),
            "{}",
            cand.body
        );
    }

    #[test]
    fn constructions_come_from_the_projects_tests_first() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("pkg")).expect("mkdir");
        std::fs::create_dir_all(d.path().join("tests")).expect("mkdir");
        std::fs::write(d.path().join("pkg/__init__.py"), "").expect("write");
        std::fs::write(
            d.path().join("pkg/shapes.py"),
            "class Grid:\n    def __init__(self, w, h, fill=0):\n        self.w = w\n\n    def area(self):\n        return self.w\n\ndef paint(grid: Grid, color: Color) -> None:\n    pass\n\nclass Color:\n    pass\n\nDEFAULT = Grid(1, 1)\n",
        )
        .expect("write");
        std::fs::write(
            d.path().join("tests/test_shapes.py"),
            "from pkg.shapes import Grid\n\ndef test_grid():\n    g = Grid(3, 4, fill=1)\n    assert isinstance(g, Grid)\n",
        )
        .expect("write");
        let project = crate::pipeline::detect::detect(d.path()).expect("detects");
        let gap = Gap {
            file: "pkg/shapes.py".into(),
            module: "pkg.shapes".into(),
            qualname: "paint".into(),
            kind: UnitKind::Function,
            start_line: 8,
            end_line: 9,
            missing_lines: vec![9],
            partial_lines: vec![],
            params: 2,
        };
        let c = context(&project, d.path(), &gap).expect("context");
        assert_eq!(
            c.constructions,
            vec!["g = Grid(3, 4, fill=1)", "DEFAULT = Grid(1, 1)"]
        );
        let m = prompt(&c, 0);
        assert!(
            m[1].content.contains("g = Grid(3, 4, fill=1)"),
            "{}",
            m[1].content
        );
        // A method: its class's constructions.
        let gap = Gap {
            qualname: "Grid.area".into(),
            kind: UnitKind::Method,
            start_line: 5,
            end_line: 6,
            ..gap
        };
        let c = context(&project, d.path(), &gap).expect("context");
        assert_eq!(c.constructions[0], "g = Grid(3, 4, fill=1)");
    }

    #[test]
    fn a_module_is_tested_in_the_file_named_after_its_first_word() {
        for (file, word) in [
            ("src/click/_termui_impl.py", "termui"),
            ("src/click/decorators.py", "decorators"),
            ("astor/node_util.py", "node"),
            ("pkg/io.py", ""),
            ("_.py", ""),
        ] {
            assert_eq!(module_word(file), word, "{file}");
        }
    }

    #[test]
    fn file_names_are_safe() {
        let (c, _) = ctx();
        let n = file_name(&c.gap, 2);
        assert_eq!(n, "test_gen_pkg_calc_divide_2.py");
        assert!(crate::pipeline::exec::is_safe_file_name(&n));
    }
}
