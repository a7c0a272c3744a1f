//! Stage 1, detect: where the Python code is, which framework it uses, where its tests are
//! and how they run. Reads files only; imports nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::python;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("{path} is not a readable directory")]
    NotADirectory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no Python source files found under {0} (only Python is supported so far)")]
    NoPython(PathBuf),
}

/// The language a repository is written in. Python first; the seam for JS/Go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    Python,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Framework {
    Plain,
    Flask,
    FastApi,
    Django,
}

/// What detection found. Paths are relative to the repository root, with `/`.
#[derive(Debug, Clone, Serialize)]
pub struct Project {
    pub language: Language,
    pub framework: Framework,
    /// Where imports start: `""` (the root) or e.g. `src`.
    pub python_root: String,
    /// Source files under test, relative to the repository root.
    pub sources: Vec<String>,
    /// Existing test files (`test_*.py`, `*_test.py`, and `tests.py` or `test.py`).
    pub tests: Vec<String>,
    /// `conftest.py` files and the fixtures they define.
    pub conftest_fixtures: BTreeMap<String, Vec<String>>,
    /// requirements*.txt, pyproject.toml, setup.py, setup.cfg, Pipfile…
    pub dependency_files: Vec<String>,
    /// Where pytest is configured, if anywhere.
    pub pytest_config: Option<String>,
    /// Top-level modules the sources import that the project does not define.
    pub external_imports: Vec<String>,
    /// The project's own top-level importable names (packages and modules).
    pub own_modules: Vec<String>,
}

impl Project {
    /// Every fixture name any conftest defines.
    pub fn fixture_names(&self) -> BTreeSet<String> {
        self.conftest_fixtures.values().flatten().cloned().collect()
    }

    /// The paths to hand pytest for the project's own suite: none (its default collection)
    /// unless a test file is one default collection misses (`tests.py`), then every test
    /// file — explicit paths are collected whatever `python_files` says. Paths that are not
    /// safe on a command line are left out.
    pub fn suite_args(&self) -> Vec<String> {
        let bare = |t: &String| BARE_TEST_FILES.contains(&t.rsplit('/').next().unwrap_or(t));
        if !self.tests.iter().any(bare) {
            return Vec::new();
        }
        self.tests
            .iter()
            .filter(|t| super::exec::is_safe_arg(t))
            .cloned()
            .collect()
    }

    /// The dotted module name of a source file (`src/pkg/core.py` → `pkg.core`).
    /// Whether the dotted module `m` is one of the project's own (`click`, `click.core`).
    pub fn owns_module(&self, m: &str) -> bool {
        self.own_modules.iter().any(|o| {
            m == o
                || m.strip_prefix(o.as_str())
                    .is_some_and(|r| r.starts_with('.'))
        })
    }

    pub fn module_name(&self, rel: &str) -> String {
        let under = if self.python_root.is_empty() {
            rel
        } else {
            rel.strip_prefix(&format!("{}/", self.python_root))
                .unwrap_or(rel)
        };
        let no_ext = under.strip_suffix(".py").unwrap_or(under);
        let no_init = no_ext.strip_suffix("/__init__").unwrap_or(no_ext);
        no_init.replace('/', ".")
    }
}

/// Directories never searched for sources or tests.
const SKIP_DIRS: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    "env",
    ".tox",
    ".nox",
    "node_modules",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    "build",
    "dist",
    "site-packages",
    ".eggs",
    "docs",
    "doc",
];
/// Directories that hold tests, examples or tooling rather than the code under test.
const NON_SOURCE_DIRS: &[&str] = &[
    "tests",
    "test",
    "testing",
    "examples",
    "example",
    "benchmarks",
    "bench",
    "scripts",
    "tools",
    "fuzz",
];
const NON_SOURCE_FILES: &[&str] = &[
    "setup.py",
    "conftest.py",
    "noxfile.py",
    "fabfile.py",
    "tasks.py",
    "manage.py",
    "__main__.py",
];
const DEPENDENCY_FILES: &[&str] = &[
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "Pipfile",
    "poetry.lock",
    "tox.ini",
];

fn is_test_file(name: &str) -> bool {
    name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py"))
        || BARE_TEST_FILES.contains(&name)
}

/// Test files by their whole name, which pytest's default `python_files` does not collect
/// (small projects keep their suite in a root `tests.py`).
const BARE_TEST_FILES: &[&str] = &["tests.py", "test.py"];

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Looks at a repository. Symbolic links are not followed.
pub fn detect(root: &Path) -> Result<Project, DetectError> {
    std::fs::read_dir(root).map_err(|source| DetectError::NotADirectory {
        path: root.to_path_buf(),
        source,
    })?;
    let (py_files, dependency_files) = list_files(root);
    let python_root = python_root(&py_files);
    let (sources, tests, conftests) = classify(&py_files, &python_root);
    if sources.is_empty() {
        return Err(DetectError::NoPython(root.to_path_buf()));
    }
    let conftest_fixtures = conftests
        .iter()
        .map(|c| {
            let fixtures = std::fs::read_to_string(root.join(c))
                .ok()
                .and_then(|s| python::parse(&s))
                .map(|p| p.fixtures())
                .unwrap_or_default();
            (c.clone(), fixtures)
        })
        .collect();
    let mut project = Project {
        language: Language::Python,
        framework: Framework::Plain,
        python_root,
        sources,
        tests,
        conftest_fixtures,
        dependency_files,
        pytest_config: pytest_config(root),
        external_imports: Vec::new(),
        own_modules: Vec::new(),
    };
    read_imports(root, &mut project);
    Ok(project)
}

/// The Python files and the top-level dependency files under `root`, sorted, skipping
/// hidden, virtual-environment and build directories.
fn list_files(root: &Path) -> (Vec<String>, Vec<String>) {
    let mut py_files: Vec<String> = Vec::new();
    let mut dependency_files = Vec::new();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .max_depth(12)
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0
                || !(e.file_type().is_dir()
                    && (SKIP_DIRS.contains(&e.file_name().to_string_lossy().as_ref())
                        || e.file_name().to_string_lossy().starts_with('.')
                        || e.file_name().to_string_lossy().ends_with(".egg-info")))
        });
    for e in walker.flatten() {
        if !e.file_type().is_file() {
            continue;
        }
        let r = rel(root, e.path());
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".py") {
            py_files.push(r.clone());
        }
        if e.depth() == 1
            && (DEPENDENCY_FILES.contains(&name.as_str())
                || (name.starts_with("requirements") && name.ends_with(".txt")))
        {
            dependency_files.push(r);
        }
    }
    py_files.sort();
    dependency_files.sort();
    (py_files, dependency_files)
}

/// `src` for a src layout (src/ holds Python and the root holds no package of its own), else
/// the root (empty).
fn python_root(py_files: &[String]) -> String {
    let src_layout = py_files.iter().any(|f| f.starts_with("src/"))
        && !py_files.iter().any(|f| {
            let parts: Vec<&str> = f.split('/').collect();
            parts.len() == 2 && parts[1] == "__init__.py" && !NON_SOURCE_DIRS.contains(&parts[0])
        });
    if src_layout {
        "src".to_string()
    } else {
        String::new()
    }
}

/// The Python files as (sources under the Python root, tests, conftests).
fn classify(py_files: &[String], python_root: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut tests = Vec::new();
    let mut sources = Vec::new();
    let mut conftests = Vec::new();
    for f in py_files {
        let parts: Vec<&str> = f.split('/').collect();
        let name = *parts.last().unwrap_or(&"");
        if name == "conftest.py" {
            conftests.push(f.clone());
            continue;
        }
        let in_non_source = parts[..parts.len() - 1]
            .iter()
            .any(|d| NON_SOURCE_DIRS.contains(d));
        if is_test_file(name) {
            tests.push(f.clone());
            continue;
        }
        if in_non_source || NON_SOURCE_FILES.contains(&name) {
            continue;
        }
        let under_root = python_root.is_empty() || f.starts_with(&format!("{python_root}/"));
        if under_root {
            sources.push(f.clone());
        }
    }
    (sources, tests, conftests)
}

/// What the sources import: the framework, the imports from outside the project (to be
/// installed) and the project's own top-level modules.
fn read_imports(root: &Path, project: &mut Project) {
    let own: BTreeSet<String> = project
        .sources
        .iter()
        .map(|s| {
            project
                .module_name(s)
                .split('.')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let mut imported = BTreeSet::new();
    for s in &project.sources {
        if let Some(p) = std::fs::read_to_string(root.join(s))
            .ok()
            .and_then(|t| python::parse(&t))
        {
            for m in p.imported_modules() {
                if let Some(top) = m.split('.').next()
                    && !top.is_empty()
                {
                    imported.insert(top.to_string());
                }
            }
        }
    }
    project.framework = if imported.contains("django") {
        Framework::Django
    } else if imported.contains("fastapi") {
        Framework::FastApi
    } else if imported.contains("flask") {
        Framework::Flask
    } else {
        Framework::Plain
    };
    project.external_imports = imported
        .into_iter()
        .filter(|m| !own.contains(m) && !STDLIB.contains(&m.as_str()))
        .collect();
    project.own_modules = own.into_iter().collect();
}

/// The file that configures pytest, if any.
fn pytest_config(root: &Path) -> Option<String> {
    ["pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg"]
        .iter()
        .find(|f| {
            std::fs::read_to_string(root.join(f))
                .map(|t| {
                    **f == "pytest.ini"
                        || t.contains("[tool.pytest")
                        || t.contains("[pytest]")
                        || t.contains("[tool:pytest]")
                })
                .unwrap_or(false)
        })
        .map(|s| s.to_string())
}

/// Python 3.11's standard library top-level modules that projects commonly import.
pub const STDLIB: &[&str] = &[
    "__future__",
    "abc",
    "argparse",
    "array",
    "ast",
    "asyncio",
    "base64",
    "binascii",
    "bisect",
    "builtins",
    "bz2",
    "calendar",
    "cmath",
    "codecs",
    "collections",
    "colorsys",
    "contextlib",
    "contextvars",
    "copy",
    "copyreg",
    "csv",
    "ctypes",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "dis",
    "email",
    "encodings",
    "enum",
    "errno",
    "fnmatch",
    "fractions",
    "functools",
    "gc",
    "getopt",
    "getpass",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http",
    "importlib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "keyword",
    "linecache",
    "locale",
    "logging",
    "lzma",
    "marshal",
    "math",
    "mimetypes",
    "numbers",
    "operator",
    "os",
    "pathlib",
    "pickle",
    "platform",
    "pprint",
    "queue",
    "random",
    "re",
    "reprlib",
    "secrets",
    "select",
    "shlex",
    "shutil",
    "signal",
    "socket",
    "sqlite3",
    "ssl",
    "stat",
    "statistics",
    "string",
    "stringprep",
    "struct",
    "subprocess",
    "sys",
    "sysconfig",
    "tempfile",
    "textwrap",
    "threading",
    "time",
    "timeit",
    "token",
    "tokenize",
    "tomllib",
    "traceback",
    "types",
    "typing",
    "unicodedata",
    "unittest",
    "urllib",
    "uuid",
    "warnings",
    "weakref",
    "xml",
    "zipfile",
    "zlib",
    "zoneinfo",
    "typing_extensions",
    "_thread",
    "atexit",
    "cProfile",
    "concurrent",
    "configparser",
    "optparse",
    "posixpath",
    "ntpath",
    "multiprocessing",
    "numbers",
    "pkgutil",
    "sched",
    "uu",
    "quopri",
    "wave",
    "xmlrpc",
    "selectors",
    "shelve",
    "dbm",
    "code",
    "codeop",
    "pdb",
    "profile",
    "pstats",
    "tarfile",
    "trace",
    "tracemalloc",
    "webbrowser",
    "wsgiref",
    "graphlib",
    "mmap",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    #[test]
    fn src_layout_tests_and_fixtures() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        write(r, "src/pkg/__init__.py", "");
        write(r, "src/pkg/core.py", "import json\nimport flask\n");
        write(r, "tests/test_core.py", "def test_x(): pass\n");
        write(
            r,
            "tests/conftest.py",
            "import pytest\n@pytest.fixture\ndef app():\n    return 1\n",
        );
        write(r, "setup.py", "");
        write(r, "pyproject.toml", "[tool.pytest.ini_options]\n");
        let p = detect(r).expect("detects");
        assert_eq!(p.python_root, "src");
        assert_eq!(p.sources, vec!["src/pkg/__init__.py", "src/pkg/core.py"]);
        assert_eq!(p.tests, vec!["tests/test_core.py"]);
        assert_eq!(
            p.fixture_names().into_iter().collect::<Vec<_>>(),
            vec!["app"]
        );
        assert_eq!(p.framework, Framework::Flask);
        assert_eq!(p.external_imports, vec!["flask"]);
        assert_eq!(p.module_name("src/pkg/core.py"), "pkg.core");
        assert_eq!(p.module_name("src/pkg/__init__.py"), "pkg");
        assert_eq!(p.pytest_config.as_deref(), Some("pyproject.toml"));
        assert!(p.dependency_files.contains(&"setup.py".to_string()));
    }

    #[test]
    fn a_root_tests_py_is_the_suite_and_is_named_to_pytest() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        write(r, "texttable.py", "def f(): pass\n");
        write(r, "tests.py", "def test_f(): pass\n");
        let p = detect(r).expect("detects");
        assert_eq!(
            p.sources,
            vec!["texttable.py"],
            "tests.py is not code under test"
        );
        assert_eq!(p.suite_args(), vec!["tests.py"]);
        // With a conventional test file beside it, both are named; a name unsafe on a
        // command line is left out rather than passed.
        write(r, "test_more.py", "def test_g(): pass\n");
        write(r, "odd dir/test.py", "def test_h(): pass\n");
        assert_eq!(
            detect(r).expect("detects").suite_args(),
            vec!["test_more.py", "tests.py"]
        );
        // Only conventional names: pytest's default collection, no paths.
        let e = tempfile::tempdir().expect("tempdir");
        write(e.path(), "calc.py", "def f(): pass\n");
        write(e.path(), "tests/test_calc.py", "def test_f(): pass\n");
        assert!(detect(e.path()).expect("detects").suite_args().is_empty());
    }

    #[test]
    fn flat_layout_and_empty_repo() {
        let d = tempfile::tempdir().expect("tempdir");
        write(d.path(), "calc.py", "def f(): pass\n");
        let p = detect(d.path()).expect("detects");
        assert_eq!(p.python_root, "");
        assert_eq!(p.module_name("calc.py"), "calc");
        let e = tempfile::tempdir().expect("tempdir");
        assert!(matches!(detect(e.path()), Err(DetectError::NoPython(_))));
    }
}
