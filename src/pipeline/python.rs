//! Python source, parsed on the host with tree-sitter — parsing is not executing: nothing here
//! imports or runs the code it reads. The language seam: another language gets its own
//! module with the same shape (units with line ranges, top-level names, test functions).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use tree_sitter::{Node, Parser, Tree};

/// A parsed Python file.
pub struct Parsed {
    pub src: String,
    tree: Tree,
}

/// What kind of definition a unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    Function,
    Method,
    Class,
    Module,
}

/// A function, method or class with its place in the file (1-based, inclusive lines).
#[derive(Debug, Clone)]
pub struct Unit {
    pub qualname: String,
    pub kind: UnitKind,
    pub start_line: u32,
    pub end_line: u32,
    /// Byte range of the whole definition, decorators included.
    pub bytes: Range<usize>,
    /// The enclosing class's qualname, for methods.
    pub class: Option<String>,
    /// Decorator names, e.g. `pytest.fixture`, `staticmethod`.
    pub decorators: Vec<String>,
}

impl Unit {
    /// Decorated as a pytest fixture (`@pytest.fixture`, `@fixture(...)`).
    pub fn is_fixture(&self) -> bool {
        self.decorators.iter().any(|d| d.ends_with("fixture"))
    }

    /// An `@overload` stub (`@typing.overload`, `@t.overload`): a signature for type
    /// checkers whose body never runs; the real definition of the name comes after it.
    pub fn is_overload(&self) -> bool {
        self.decorators
            .iter()
            .any(|d| d == "overload" || d.ends_with(".overload"))
    }
}

/// A top-level name the module defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopLevel {
    pub name: String,
    pub kind: UnitKind,
    pub bytes: Range<usize>,
}

/// A test function pytest would collect: `test_x` or `TestClass::test_x`.
#[derive(Debug, Clone)]
pub struct TestFn {
    pub node_id: String,
    pub name: String,
    pub bytes: Range<usize>,
    /// The body is only `pass`, `...` or a docstring.
    pub placeholder: bool,
    /// The body checks something (see [`Parsed::test_functions`]); a test that only calls
    /// the code covers it without testing it.
    pub checks: bool,
}

/// A `with pytest.raises(…):` block — or `pytest.warns`, `pytest.deprecated_call` — whose
/// context manager is the only one of its `with` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectingBlock {
    /// The call as written: `pytest.raises(KeyError, match="x")`.
    pub call: String,
    /// `e` of `as e`.
    pub alias: Option<String>,
    /// Byte range of the whole `with` statement.
    pub stmt: Range<usize>,
    /// Byte range of its body.
    pub body: Range<usize>,
    /// Byte range of the body's last statement, when it is a bare expression (`f(x)`).
    pub last_expression: Option<Range<usize>>,
    /// The statements after the block, in the same block of the test, that read the alias
    /// and are simple (an expression or an `assert`: `assert "x" in str(e.value)`).
    pub alias_readers: Vec<Range<usize>>,
}

/// One parameter of a class's `__init__`, after `self`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitParam {
    pub name: String,
    /// Without a default value.
    pub required: bool,
    /// Before a `/`: never passed by keyword.
    pub positional_only: bool,
    /// Its annotation admits `None`: `Optional[…]`, `… | None`.
    pub takes_none: bool,
}

/// What a class's own `__init__` takes, and the attributes the class sets on `self`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Constructor {
    pub params: Vec<InitParam>,
    /// `**kwargs`: any keyword is taken.
    pub var_keyword: bool,
    /// Names the class's methods assign: `self.NAME = …`.
    pub attributes: BTreeSet<String>,
}

/// A test's statement that builds an object and names it: `bar = K(…)`, or
/// `with K(…) as bar:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedConstruction {
    /// The class called, `K`.
    pub class: String,
    /// The name the object is bound to, `bar`.
    pub name: String,
    /// Byte range of the call `K(…)`.
    pub call: Range<usize>,
    /// Its arguments: the keyword (`None` for a positional one) and the value's text.
    pub args: Vec<(Option<String>, String)>,
    /// A `*args` or `**kw` among them: what the call passes is not known.
    pub splat: bool,
    /// Where a statement that runs right after the construction goes (a line's start),
    /// and its indentation.
    pub after: usize,
    pub indent: String,
}

/// Calls that check (their last dotted part): `pytest.raises`, `pytest.warns`,
/// `pytest.deprecated_call`, `pytest.fail`, `self.fail`. Any call whose last part starts with
/// `assert` checks too (`self.assertEqual`, `mock.assert_called_once_with`).
const CHECKING_CALLS: &[&str] = &["raises", "warns", "deprecated_call", "fail"];

fn parser() -> Parser {
    let mut p = Parser::new();
    p.set_language(&tree_sitter_python::LANGUAGE.into())
        .expect("the bundled tree-sitter-python grammar matches the tree-sitter version");
    p
}

/// A call's name and its keyword arguments (name, value's text), in order.
pub type KeywordCall = (String, Vec<(String, String)>);

/// Parses Python source; `None` only if tree-sitter gives up entirely (it normally returns a
/// tree with error nodes instead — see [`Parsed::first_error_line`]).
pub fn parse(src: &str) -> Option<Parsed> {
    let tree = parser().parse(src, None)?;
    Some(Parsed {
        src: src.to_string(),
        tree,
    })
}

fn text<'a>(n: Node<'_>, src: &'a str) -> &'a str {
    &src[n.byte_range()]
}

fn line(row: usize) -> u32 {
    row as u32 + 1
}

fn named_children(n: Node<'_>) -> Vec<Node<'_>> {
    let mut c = n.walk();
    n.named_children(&mut c).collect()
}

/// `b` of `a.b`: an attribute's name, not a name of its own.
fn is_attribute_part(n: Node<'_>) -> bool {
    n.parent().is_some_and(|p| {
        p.kind() == "attribute"
            && p.child_by_field_name("attribute").map(|a| a.id()) == Some(n.id())
    })
}

/// Every identifier under `n`, attribute parts left out.
fn identifiers_of(n: Node<'_>, src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![n];
    while let Some(n) = stack.pop() {
        if n.kind() == "identifier" && !is_attribute_part(n) {
            out.insert(text(n, src).to_string());
        }
        let mut c = n.walk();
        stack.extend(n.children(&mut c));
    }
    out
}

/// The names a `parameters` node declares (`a`, `b=1`, `c: int`, `*d`, `**e`).
fn params_names<'s>(params: Node<'_>, src: &'s str) -> BTreeSet<&'s str> {
    named_children(params)
        .into_iter()
        .filter_map(|p| param_name(p, src))
        .collect()
}

/// The name one parameter declares (`a` of `a`, `a=1`, `a: int`, `*a`, `**a`).
fn param_name<'s>(p: Node<'_>, src: &'s str) -> Option<&'s str> {
    let id = match p.kind() {
        "identifier" => Some(p),
        _ => named_children(p)
            .into_iter()
            .find(|k| k.kind() == "identifier"),
    };
    id.map(|id| &src[id.byte_range()])
}

/// A statement that is a string alone: a docstring when it comes first in a body.
fn is_docstring(n: &Node<'_>) -> bool {
    n.kind() == "expression_statement" && n.named_child(0).is_some_and(|e| e.kind() == "string")
}

/// The definition inside a `decorated_definition`, with its decorators' names.
fn undecorate<'t>(n: Node<'t>, src: &str) -> (Node<'t>, Vec<String>) {
    if n.kind() == "decorated_definition" {
        let decorators = named_children(n)
            .into_iter()
            .filter(|c| c.kind() == "decorator")
            .map(|d| {
                let t = text(d, src).trim_start_matches('@').trim();
                t.split('(').next().unwrap_or(t).trim().to_string()
            })
            .collect();
        match n.child_by_field_name("definition") {
            Some(def) => (def, decorators),
            None => (n, decorators),
        }
    } else {
        (n, Vec::new())
    }
}

impl Parsed {
    fn root(&self) -> Node<'_> {
        self.tree.root_node()
    }

    /// The first line (1-based) with a syntax error or a missing token, if any.
    pub fn first_error_line(&self) -> Option<u32> {
        self.first_tree_error_line()
            .or_else(|| self.misplaced_argument_line())
    }

    /// The first line of an argument list that passes a positional argument after a keyword
    /// argument (`f(a=1, b)`), or anything but a keyword after `**` — a `SyntaxError` to
    /// Python that tree-sitter's grammar accepts (click's `@version_option(package_name="p",
    /// "--version")` failed the collection of a whole file).
    fn misplaced_argument_line(&self) -> Option<u32> {
        let mut found: Option<u32> = None;
        self.walk(|n| {
            if found.is_some() || n.kind() != "argument_list" {
                return;
            }
            let (mut keyword, mut mapping) = (false, false);
            for a in named_children(n) {
                let misplaced = match a.kind() {
                    "comment" => false,
                    "keyword_argument" => {
                        keyword = true;
                        false
                    }
                    "dictionary_splat" => {
                        (keyword, mapping) = (true, true);
                        false
                    }
                    "list_splat" => mapping,
                    _ => keyword,
                };
                if misplaced {
                    found = Some(line(a.start_position().row));
                    return;
                }
            }
        });
        found
    }

    fn first_tree_error_line(&self) -> Option<u32> {
        fn find(n: Node<'_>) -> Option<u32> {
            if n.is_error() || n.is_missing() {
                return Some(line(n.start_position().row));
            }
            if !n.has_error() {
                return None;
            }
            let mut c = n.walk();
            let kids: Vec<Node<'_>> = n.children(&mut c).collect();
            kids.into_iter().find_map(find)
        }
        if self.root().has_error() {
            find(self.root()).or(Some(1))
        } else {
            None
        }
    }

    /// Functions, methods and classes, outermost first, at any depth of classes (functions
    /// nested in functions belong to their outer function).
    pub fn units(&self) -> Vec<Unit> {
        let mut out = Vec::new();
        self.collect_units(self.root(), None, &mut out);
        out
    }

    fn collect_units(&self, parent: Node<'_>, class: Option<&str>, out: &mut Vec<Unit>) {
        let block = if parent.kind() == "module" {
            Some(parent)
        } else {
            parent.child_by_field_name("body")
        };
        let Some(block) = block else { return };
        for child in named_children(block) {
            let (def, decorators) = undecorate(child, &self.src);
            let Some(name) = def.child_by_field_name("name") else {
                continue;
            };
            let name = text(name, &self.src);
            let qualname = match class {
                Some(c) => format!("{c}.{name}"),
                None => name.to_string(),
            };
            let kind = match def.kind() {
                "function_definition" if class.is_some() => UnitKind::Method,
                "function_definition" => UnitKind::Function,
                "class_definition" => UnitKind::Class,
                _ => continue,
            };
            out.push(Unit {
                qualname: qualname.clone(),
                kind,
                start_line: line(child.start_position().row),
                end_line: line(child.end_position().row),
                bytes: child.byte_range(),
                class: class.map(str::to_string),
                decorators,
            });
            if kind == UnitKind::Class {
                self.collect_units(def, Some(&qualname), out);
            }
        }
    }

    /// Names bound at the top level: functions, classes, simple assignments, imports.
    pub fn top_level(&self) -> Vec<TopLevel> {
        let mut out = Vec::new();
        for child in named_children(self.root()) {
            let (def, _) = undecorate(child, &self.src);
            match def.kind() {
                "function_definition" | "class_definition" => {
                    if let Some(n) = def.child_by_field_name("name") {
                        out.push(TopLevel {
                            name: text(n, &self.src).to_string(),
                            kind: if def.kind() == "class_definition" {
                                UnitKind::Class
                            } else {
                                UnitKind::Function
                            },
                            bytes: child.byte_range(),
                        });
                    }
                }
                "expression_statement" => {
                    for e in named_children(def) {
                        if e.kind() == "assignment"
                            && let Some(l) = e.child_by_field_name("left")
                            && l.kind() == "identifier"
                        {
                            out.push(TopLevel {
                                name: text(l, &self.src).to_string(),
                                kind: UnitKind::Module,
                                bytes: child.byte_range(),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Top-level import statements, as written.
    pub fn imports(&self) -> Vec<String> {
        named_children(self.root())
            .into_iter()
            .filter(|n| {
                matches!(
                    n.kind(),
                    "import_statement" | "import_from_statement" | "future_import_statement"
                )
            })
            .map(|n| text(n, &self.src).to_string())
            .collect()
    }

    /// Names bound by the top-level import statements (`import a.b` binds `a`, `as c` binds
    /// `c`).
    pub fn imported_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for stmt in self.imports() {
            let s = stmt.replace(['(', ')', '\n', '\\'], " ");
            if let Some(rest) = s.strip_prefix("import ") {
                for part in rest.split(',') {
                    let part = part.trim();
                    let name = match part.split_once(" as ") {
                        Some((_, a)) => a.trim(),
                        None => part.split('.').next().unwrap_or(part),
                    };
                    out.push(name.to_string());
                }
            } else if let Some((_, names)) = s.split_once(" import ") {
                for part in names.split(',') {
                    let part = part.trim();
                    let name = match part.split_once(" as ") {
                        Some((_, a)) => a.trim(),
                        None => part,
                    };
                    if !name.is_empty() {
                        out.push(name.to_string());
                    }
                }
            }
        }
        out
    }

    /// The names the file binds at its top level: its definitions and its imports.
    pub fn bound_names(&self) -> BTreeSet<String> {
        self.top_level()
            .into_iter()
            .map(|t| t.name)
            .chain(self.imported_names())
            .collect()
    }

    /// `from X import ...` statements anywhere: (byte range of the module name, module name).
    pub fn from_import_modules(&self) -> Vec<(Range<usize>, String)> {
        let mut out = Vec::new();
        self.walk(|n| {
            if n.kind() == "import_from_statement"
                && let Some(m) = n.child_by_field_name("module_name")
            {
                out.push((m.byte_range(), text(m, &self.src).to_string()));
            }
        });
        out
    }

    /// `from X import a, b as c` statements anywhere: (statement byte range, module, the
    /// imported `(name, alias)` pairs). Star imports have no pairs.
    #[allow(clippy::type_complexity)]
    pub fn from_imports(&self) -> Vec<(Range<usize>, String, Vec<(String, Option<String>)>)> {
        let mut out = Vec::new();
        self.walk(|n| {
            if n.kind() != "import_from_statement" {
                return;
            }
            let Some(m) = n.child_by_field_name("module_name") else {
                return;
            };
            let mut c = n.walk();
            let names = n
                .children_by_field_name("name", &mut c)
                .filter_map(|x| match x.kind() {
                    "dotted_name" => Some((text(x, &self.src).to_string(), None)),
                    "aliased_import" => Some((
                        text(x.child_by_field_name("name")?, &self.src).to_string(),
                        x.child_by_field_name("alias")
                            .map(|a| text(a, &self.src).to_string()),
                    )),
                    _ => None,
                })
                .collect();
            out.push((n.byte_range(), text(m, &self.src).to_string(), names));
        });
        out
    }

    /// True when the module has `from x import *`, writes its own namespace (`globals()`,
    /// `vars()`, `sys.modules[__name__]`, `exec(`) or has a module-level `__getattr__`: names
    /// it offers cannot be read off its text.
    pub fn has_dynamic_exports(&self) -> bool {
        [
            "import *",
            "globals()",
            "vars()",
            "sys.modules[__name__]",
            "exec(",
        ]
        .iter()
        .any(|m| self.src.contains(m))
            || self.top_level().iter().any(|t| t.name == "__getattr__")
    }

    /// Every module named by `import X` / `from X import`, anywhere in the file.
    pub fn imported_modules(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.walk(|n| match n.kind() {
            "import_from_statement" => {
                if let Some(m) = n.child_by_field_name("module_name") {
                    out.insert(text(m, &self.src).to_string());
                }
            }
            "import_statement" => {
                for c in named_children(n) {
                    let m = match c.kind() {
                        "aliased_import" => c.child_by_field_name("name"),
                        "dotted_name" => Some(c),
                        _ => None,
                    };
                    if let Some(m) = m {
                        out.insert(text(m, &self.src).to_string());
                    }
                }
            }
            _ => {}
        });
        out
    }

    /// The modules the file's top-level `import m as a` statements bind under another name
    /// (click's `import typing as t`), alias → module. `from m import n as a` is not here: it
    /// binds a name, not a module.
    pub fn module_aliases(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for stmt in named_children(self.root()) {
            if stmt.kind() != "import_statement" {
                continue;
            }
            for c in named_children(stmt) {
                if c.kind() != "aliased_import" {
                    continue;
                }
                let (Some(m), Some(a)) = (
                    c.child_by_field_name("name"),
                    c.child_by_field_name("alias"),
                ) else {
                    continue;
                };
                let (m, a) = (text(m, &self.src), text(a, &self.src));
                if is_identifier(a) && m.split('.').all(is_identifier) {
                    out.insert(a.to_string(), m.to_string());
                }
            }
        }
        out
    }

    /// Every identifier and attribute-access text (`os.system`) in the file.
    pub fn names(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.walk(|n| {
            if n.kind() == "identifier" || n.kind() == "attribute" {
                out.insert(text(n, &self.src).to_string());
            }
        });
        out
    }

    /// The names a module can offer to `from module import name`: every identifier of its
    /// module-level statements (not attribute parts: `ast.AST` offers `ast`, not `AST`), the
    /// names of its top-level functions and classes without their bodies or defaults, and the
    /// names a `global` statement declares anywhere. A superset of what the module binds, so a
    /// name outside it is surely missing; see [`Parsed::has_dynamic_exports`] for when no set
    /// can be read off the text.
    pub fn module_scope_names(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut stack = vec![self.root()];
        while let Some(n) = stack.pop() {
            match n.kind() {
                "function_definition" | "class_definition" => {
                    if let Some(name) = n.child_by_field_name("name") {
                        out.insert(text(name, &self.src).to_string());
                    }
                    continue;
                }
                "identifier" if !is_attribute_part(n) => {
                    out.insert(text(n, &self.src).to_string());
                }
                _ => {}
            }
            let mut c = n.walk();
            stack.extend(n.children(&mut c));
        }
        self.walk(|n| {
            if n.kind() == "global_statement" {
                for c in named_children(n) {
                    out.insert(text(c, &self.src).to_string());
                }
            }
        });
        out
    }

    /// The value of the last `name = VALUE` that ends inside `within`, as written (it may span
    /// lines); `None` when there is none, or when the last binding of `name` there is not a
    /// plain assignment (`name += …`).
    pub fn last_assignment(&self, name: &str, within: Range<usize>) -> Option<String> {
        let mut last: Option<Node<'_>> = None;
        let mut stack = vec![self.root()];
        while let Some(n) = stack.pop() {
            let binds = matches!(n.kind(), "assignment" | "augmented_assignment")
                && n.start_byte() >= within.start
                && n.end_byte() <= within.end
                && n.child_by_field_name("left")
                    .is_some_and(|l| l.kind() == "identifier" && text(l, &self.src) == name);
            if binds && last.is_none_or(|p| p.start_byte() < n.start_byte()) {
                last = Some(n);
            }
            let mut c = n.walk();
            stack.extend(n.children(&mut c));
        }
        let n = last?;
        if n.kind() != "assignment" {
            return None;
        }
        Some(text(n.child_by_field_name("right")?, &self.src).to_string())
    }

    /// The names the code refers to on their own — a bare identifier, or a whole dotted
    /// `a.b.c` — without the attribute parts: `re.compile` gives `re` and `re.compile`, never
    /// `compile`.
    pub fn references(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.walk(|n| {
            if (n.kind() == "identifier" && !is_attribute_part(n)) || n.kind() == "attribute" {
                out.insert(text(n, &self.src).to_string());
            }
        });
        out
    }

    /// Identifiers used inside the given byte range.
    pub fn identifiers_in(&self, range: Range<usize>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.walk(|n| {
            if n.kind() == "identifier"
                && n.start_byte() >= range.start
                && n.end_byte() <= range.end
            {
                out.insert(text(n, &self.src).to_string());
            }
        });
        out
    }

    fn walk(&self, mut f: impl FnMut(Node<'_>)) {
        let mut stack = vec![self.root()];
        while let Some(n) = stack.pop() {
            f(n);
            let mut c = n.walk();
            let kids: Vec<Node<'_>> = n.children(&mut c).collect();
            stack.extend(kids.into_iter().rev());
        }
    }

    /// Test functions pytest collects by its default rules. A test `checks` when its body
    /// holds an `assert`, a `raise AssertionError`, a checking call ([`CHECKING_CALLS`],
    /// `…assert…(…)`), or a call of a top-level helper of the file that does.
    pub fn test_functions(&self) -> Vec<TestFn> {
        let helpers = self.checking_helpers();
        self.test_defs()
            .into_iter()
            .map(|(node_id, outer, def)| {
                let name = def
                    .child_by_field_name("name")
                    .map(|n| text(n, &self.src))
                    .unwrap_or_default();
                self.test_fn(node_id, name, outer, def, &helpers)
            })
            .collect()
    }

    /// Each test pytest collects by its default rules: (node id, the statement with its
    /// decorators, the `function_definition`).
    fn test_defs(&self) -> Vec<(String, Node<'_>, Node<'_>)> {
        let mut out = Vec::new();
        for child in named_children(self.root()) {
            let (def, _) = undecorate(child, &self.src);
            let Some(name) = def.child_by_field_name("name").map(|n| text(n, &self.src)) else {
                continue;
            };
            if def.kind() == "function_definition" && name.starts_with("test") {
                out.push((name.to_string(), child, def));
            } else if def.kind() == "class_definition"
                && name.starts_with("Test")
                && let Some(body) = def.child_by_field_name("body")
            {
                for m in named_children(body) {
                    let (mdef, _) = undecorate(m, &self.src);
                    if mdef.kind() == "function_definition"
                        && let Some(mname) =
                            mdef.child_by_field_name("name").map(|n| text(n, &self.src))
                        && mname.starts_with("test")
                    {
                        out.push((format!("{name}::{mname}"), m, mdef));
                    }
                }
            }
        }
        out
    }

    /// Where a statement can go first in each test's body: (node id, the byte offset of its
    /// first statement after a leading docstring and comments, that statement's indentation).
    /// None for a test whose body is on the `def`'s own line or holds only a docstring.
    pub fn test_body_starts(&self) -> Vec<(String, usize, String)> {
        let mut out = Vec::new();
        for (node_id, _, def) in self.test_defs() {
            let Some(body) = def.child_by_field_name("body") else {
                continue;
            };
            if body.start_position().row == def.start_position().row {
                continue;
            }
            let stmts: Vec<Node<'_>> = named_children(body)
                .into_iter()
                .filter(|c| c.kind() != "comment")
                .collect();
            let docstring = stmts.first().is_some_and(is_docstring);
            let Some(first) = stmts.get(usize::from(docstring)) else {
                continue;
            };
            let at = first.start_byte();
            let line_start = self.src[..at].rfind('\n').map_or(0, |i| i + 1);
            let indent = &self.src[line_start..at];
            if indent.chars().all(|c| c == ' ' || c == '\t') {
                out.push((node_id, at, indent.to_string()));
            }
        }
        out
    }

    /// Tests that do what an earlier test of the same class (or of the module) does: (the
    /// later test, the earlier one). Compared: decorators, parameters and statements, with
    /// comments, a leading docstring and the spacing left out; the tests' names are not compared.
    pub fn duplicate_tests(&self) -> Vec<(String, String)> {
        let mut seen: BTreeMap<(String, String), String> = Default::default();
        let mut out = Vec::new();
        for (node_id, outer, def) in self.test_defs() {
            let (Some(params), Some(body)) = (
                def.child_by_field_name("parameters"),
                def.child_by_field_name("body"),
            ) else {
                continue;
            };
            let squeeze = |n: Node<'_>| {
                text(n, &self.src)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let mut parts: Vec<String> = named_children(outer)
                .into_iter()
                .filter(|c| c.kind() == "decorator")
                .map(squeeze)
                .collect();
            parts.push(squeeze(params));
            let stmts = named_children(body);
            let skip = usize::from(stmts.first().is_some_and(is_docstring));
            parts.extend(
                stmts
                    .into_iter()
                    .skip(skip)
                    .filter(|c| c.kind() != "comment")
                    .map(squeeze),
            );
            let class = node_id.rsplit_once("::").map(|c| c.0.to_string());
            let key = (class.unwrap_or_default(), parts.join("\n"));
            match seen.get(&key) {
                Some(first) => out.push((node_id, first.clone())),
                None => {
                    seen.insert(key, node_id);
                }
            }
        }
        out
    }

    /// Fixtures among `names` that a test uses as a free name without taking them as an
    /// argument (`(tmp_path / "a").write_text(…)` in `def test_a():`, a NameError when it
    /// runs): (test node id, the fixtures, the byte before its parameter list's `)`, the text
    /// to insert there). A name the test binds itself, or takes, is left alone; so is a test
    /// with `*` or `/` among its parameters.
    pub fn untaken_fixtures(&self, names: &[&str]) -> Vec<(String, Vec<String>, usize, String)> {
        let mut out = Vec::new();
        for (node_id, _, def) in self.test_defs() {
            let (Some(params), Some(body)) = (
                def.child_by_field_name("parameters"),
                def.child_by_field_name("body"),
            ) else {
                continue;
            };
            let at = params.end_byte() - 1;
            let inside = self.src[params.start_byte() + 1..at].trim_end();
            if inside.contains('*') || inside.contains('/') {
                continue;
            }
            let taken = params_names(params, &self.src);
            let (used, bound) = self.free_and_bound(body);
            let missing: Vec<String> = names
                .iter()
                .filter(|n| used.contains(**n) && !bound.contains(**n) && !taken.contains(*n))
                .map(|n| n.to_string())
                .collect();
            if missing.is_empty() {
                continue;
            }
            let sep = match inside {
                "" => "",
                i if i.ends_with(',') => " ",
                _ => ", ",
            };
            let insert = format!("{sep}{}", missing.join(", "));
            out.push((node_id, missing, at, insert));
        }
        out
    }

    /// The names `body` reads (identifiers that are neither attribute parts nor keyword
    /// argument names) and the names it binds (assignment, `for`, `with … as`, `except … as`,
    /// `global`/`nonlocal`, nested definitions and their parameters).
    fn free_and_bound(&self, body: Node<'_>) -> (BTreeSet<String>, BTreeSet<String>) {
        let (mut used, mut bound) = (BTreeSet::new(), BTreeSet::new());
        let mut stack = vec![body];
        while let Some(n) = stack.pop() {
            let is_kwarg_name = n.parent().is_some_and(|p| {
                p.kind() == "keyword_argument"
                    && p.child_by_field_name("name").map(|a| a.id()) == Some(n.id())
            });
            match n.kind() {
                "identifier" if !is_attribute_part(n) && !is_kwarg_name => {
                    used.insert(text(n, &self.src).to_string());
                }
                "assignment" | "augmented_assignment" | "for_statement" | "for_in_clause" => {
                    if let Some(l) = n.child_by_field_name("left") {
                        bound.extend(identifiers_of(l, &self.src));
                    }
                }
                "as_pattern_target" | "global_statement" | "nonlocal_statement" | "parameters"
                | "lambda_parameters" => {
                    bound.extend(identifiers_of(n, &self.src));
                }
                "function_definition" | "class_definition" => {
                    if let Some(name) = n.child_by_field_name("name") {
                        bound.insert(text(name, &self.src).to_string());
                    }
                }
                _ => {}
            }
            let mut c = n.walk();
            stack.extend(n.children(&mut c));
        }
        (used, bound)
    }

    fn test_fn(
        &self,
        node_id: String,
        name: &str,
        outer: Node<'_>,
        def: Node<'_>,
        helpers: &BTreeSet<String>,
    ) -> TestFn {
        let body = def.child_by_field_name("body");
        let placeholder = body
            .map(|b| {
                named_children(b).iter().all(|s| {
                    let t = text(*s, &self.src).trim();
                    t == "pass"
                        || t == "..."
                        || (s.kind() == "expression_statement"
                            && (t.starts_with('"') || t.starts_with('\'')))
                        || s.kind() == "comment"
                })
            })
            .unwrap_or(true);
        TestFn {
            node_id,
            name: name.to_string(),
            bytes: outer.byte_range(),
            placeholder,
            checks: body.is_some_and(|b| self.has_check(b, helpers)),
        }
    }

    /// Top-level functions, not tests, whose bodies check something: `def check(x): assert …`.
    fn checking_helpers(&self) -> BTreeSet<String> {
        let none = BTreeSet::new();
        named_children(self.root())
            .into_iter()
            .map(|c| undecorate(c, &self.src).0)
            .filter(|d| d.kind() == "function_definition")
            .filter_map(|d| {
                let name = text(d.child_by_field_name("name")?, &self.src);
                let body = d.child_by_field_name("body")?;
                (!name.starts_with("test") && self.has_check(body, &none)).then(|| name.to_string())
            })
            .collect()
    }

    /// Calls without arguments of the names in `names` inside test functions (`tmp_path()`
    /// where `tmp_path` is a fixture, a path and not a function; a dotted name like
    /// `os.stat_result` too): (byte range of the call, the name), in the order they appear.
    /// A name the test binds in its body (its own `def tmp_path()`) is left alone there.
    pub fn bare_calls_in_tests(&self, names: &[&str]) -> Vec<(Range<usize>, String)> {
        self.picked_in_tests(names, |n, names| {
            let f = n.child_by_field_name("function")?;
            let args = n.child_by_field_name("arguments")?;
            let name = text(f, &self.src);
            (n.kind() == "call"
                && matches!(f.kind(), "identifier" | "attribute")
                && names.contains(&name)
                && args.kind() == "argument_list"
                && args.named_child_count() == 0)
                .then(|| name.to_string())
        })
    }

    /// Calls of the names in `names` inside test functions whose arguments are all keywords
    /// (`os.stat_result(st_mode=0o644)`; none at all too): (byte range of the call, the name,
    /// each keyword with its value's text), in the order they appear. A repeated keyword, a
    /// `**kwargs` or a name the test binds in its body is left alone.
    pub fn keyword_calls_in_tests(&self, names: &[&str]) -> Vec<(Range<usize>, KeywordCall)> {
        self.picked_in_tests(names, |n, names| {
            let f = n.child_by_field_name("function")?;
            let args = n.child_by_field_name("arguments")?;
            let name = text(f, &self.src);
            if n.kind() != "call"
                || !matches!(f.kind(), "identifier" | "attribute")
                || !names.contains(&name)
                || args.kind() != "argument_list"
            {
                return None;
            }
            let mut keywords: Vec<(String, String)> = Vec::new();
            for a in named_children(args)
                .into_iter()
                .filter(|a| a.kind() != "comment")
            {
                if a.kind() != "keyword_argument" {
                    return None;
                }
                let key = text(a.child_by_field_name("name")?, &self.src);
                let value = text(a.child_by_field_name("value")?, &self.src);
                if keywords.iter().any(|(k, _)| k == key) {
                    return None;
                }
                keywords.push((key.to_string(), value.to_string()));
            }
            Some((name.to_string(), keywords))
        })
    }

    /// `Path("a.txt")` in test `node_id` (also `pathlib.Path`, `PurePath`, `PosixPath`,
    /// `PurePosixPath`): a path built from one plain string literal — no prefix, no
    /// formatting, no second part. (byte range of the call, the literal's text), in order.
    pub fn path_literals_in_test(&self, node_id: &str) -> Vec<(Range<usize>, String)> {
        const PATHS: [&str; 4] = ["Path", "PurePath", "PosixPath", "PurePosixPath"];
        let Some((_, _, def)) = self
            .test_defs()
            .into_iter()
            .find(|(id, _, _)| id == node_id)
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut stack = vec![def];
        while let Some(n) = stack.pop() {
            stack.extend(named_children(n));
            let (Some(f), Some(args)) = (
                n.child_by_field_name("function"),
                n.child_by_field_name("arguments"),
            ) else {
                continue;
            };
            let callee = text(f, &self.src);
            let callee = callee.strip_prefix("pathlib.").unwrap_or(callee);
            let parts = named_children(args);
            let [literal] = parts.as_slice() else {
                continue;
            };
            let literal_text = text(*literal, &self.src);
            if n.kind() == "call"
                && PATHS.contains(&callee)
                && literal.kind() == "string"
                && (literal_text.starts_with('"') || literal_text.starts_with('\''))
            {
                out.push((n.byte_range(), literal_text.to_string()));
            }
        }
        out.sort_by_key(|c| c.0.start);
        out
    }

    /// Statements of test functions that write a file or make a directory two or more levels
    /// below pytest's `tmp_path` (`(tmp_path / "d" / "f.txt").touch()`, `.write_text(…)`,
    /// `.write_bytes(…)`, `.mkdir()`): (byte offset of the statement's line, its indentation,
    /// the path's text in parentheses). The directories between do not exist unless the test
    /// made them. A statement that shares its line, a path written over several lines, one
    /// inside a `with pytest.raises(…)` (the test may expect the error) and a test that binds
    /// `tmp_path` in its body are left out.
    pub fn nested_writes_in_tests(&self) -> Vec<(usize, String, String)> {
        let found = self.picked_in_tests(&["tmp_path"], |n, names| {
            if n.kind() != "expression_statement" || names.is_empty() {
                return None;
            }
            let call = n.named_child(0).filter(|c| c.kind() == "call")?;
            let method = call.child_by_field_name("function")?;
            let verb = text(method.child_by_field_name("attribute")?, &self.src);
            if method.kind() != "attribute"
                || !matches!(verb, "touch" | "write_text" | "write_bytes" | "mkdir")
            {
                return None;
            }
            let mut path = method.child_by_field_name("object")?;
            while path.kind() == "parenthesized_expression" {
                path = path.named_child(0)?;
            }
            let mut root = path;
            let mut depth = 0;
            while root.kind() == "binary_operator"
                && root.child_by_field_name("operator").map(|o| o.kind()) == Some("/")
            {
                depth += 1;
                root = root.child_by_field_name("left")?;
            }
            let line_start = self.src[..n.start_byte()].rfind('\n').map_or(0, |i| i + 1);
            let indent = &self.src[line_start..n.start_byte()];
            let path_text = text(path, &self.src);
            let mut up = n.parent();
            while let Some(a) = up {
                let head_end = a
                    .child_by_field_name("body")
                    .map_or(a.end_byte(), |b| b.start_byte());
                if a.kind() == "with_statement"
                    && self.src[a.start_byte()..head_end].contains("raises")
                {
                    return None;
                }
                up = a.parent();
            }
            (depth >= 2
                && root.kind() == "identifier"
                && text(root, &self.src) == "tmp_path"
                && indent.chars().all(|c| c == ' ' || c == '\t')
                && !path_text.contains('\n'))
            .then(|| (line_start, indent.to_string(), format!("({path_text})")))
        });
        found.into_iter().map(|(_, w)| w).collect()
    }

    /// `pytest.NAME` inside test functions, for the names in `names` (`pytest.tmp_path`, an
    /// AttributeError: a fixture is an argument, not an attribute of the module): (byte range
    /// of the attribute, the name), in the order they appear. Where the test binds `pytest`
    /// or the name itself, it is left alone.
    pub fn pytest_attributes_in_tests(&self, names: &[&str]) -> Vec<(Range<usize>, String)> {
        let names = [names, &["pytest"]].concat();
        self.picked_in_tests(&names, |n, names| {
            let object = n.child_by_field_name("object")?;
            let attribute = n.child_by_field_name("attribute")?;
            let name = text(attribute, &self.src);
            (n.kind() == "attribute"
                && object.kind() == "identifier"
                && text(object, &self.src) == "pytest"
                && names.contains(&"pytest")
                && names.contains(&name))
            .then(|| name.to_string())
        })
    }

    /// The nodes inside test functions that `pick` takes, given those of `names` the test does
    /// not bind in its body: (byte range, what `pick` gave), in the order they appear.
    fn picked_in_tests<T>(
        &self,
        names: &[&str],
        pick: impl Fn(Node<'_>, &[&str]) -> Option<T>,
    ) -> Vec<(Range<usize>, T)> {
        let mut out = Vec::new();
        for (_, _, def) in self.test_defs() {
            let Some(body) = def.child_by_field_name("body") else {
                continue;
            };
            let (_, bound) = self.free_and_bound(body);
            let names: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| !bound.contains(*n))
                .collect();
            let mut stack = vec![body];
            while let Some(n) = stack.pop() {
                if let Some(name) = pick(n, &names) {
                    out.push((n.byte_range(), name));
                }
                stack.extend(named_children(n));
            }
        }
        out.sort_by_key(|c| c.0.start);
        out
    }

    /// The expecting block ([`ExpectingBlock`]) whose `with` starts on line `line` (1-based),
    /// or `None` when none does or it is not one alone: `with pytest.raises(A), open(p):`,
    /// a parenthesized item and a body on the `with`'s own line are left alone.
    pub fn expecting_block(&self, line: usize) -> Option<ExpectingBlock> {
        let mut stack = vec![self.root()];
        let mut found = None;
        while let Some(n) = stack.pop() {
            if n.kind() == "with_statement" && n.start_position().row + 1 == line {
                found = Some(n);
                break;
            }
            stack.extend(named_children(n));
        }
        let stmt = found?;
        let clause = named_children(stmt)
            .into_iter()
            .find(|c| c.kind() == "with_clause")?;
        let [item] = named_children(clause)[..] else {
            return None;
        };
        let value = item.child_by_field_name("value")?;
        let (call, alias) = match value.kind() {
            "call" => (value, None),
            "as_pattern" => {
                let call = named_children(value).into_iter().next()?;
                let alias = value.child_by_field_name("alias")?;
                let [id] = named_children(alias)[..] else {
                    return None;
                };
                (id.kind() == "identifier").then_some(())?;
                (call, Some(text(id, &self.src).to_string()))
            }
            _ => return None,
        };
        let f = text(call.child_by_field_name("function")?, &self.src);
        if call.kind() != "call"
            || !matches!(
                f,
                "pytest.raises" | "pytest.warns" | "pytest.deprecated_call"
            )
        {
            return None;
        }
        let body = stmt.child_by_field_name("body")?;
        if body.start_position().row == stmt.start_position().row {
            return None;
        }
        let last_expression = named_children(body)
            .into_iter()
            .rfind(|c| c.kind() != "comment")
            .filter(|c| c.kind() == "expression_statement" && c.named_child_count() == 1)
            .and_then(|c| c.named_child(0))
            .filter(|e| {
                !matches!(
                    e.kind(),
                    "assignment" | "augmented_assignment" | "yield" | "await"
                )
            })
            .map(|e| e.byte_range());
        let alias_readers = alias
            .as_deref()
            .map(|a| self.simple_statements_reading(stmt, a))
            .unwrap_or_default();
        Some(ExpectingBlock {
            call: text(call, &self.src).to_string(),
            alias,
            stmt: stmt.byte_range(),
            body: body.byte_range(),
            last_expression,
            alias_readers,
        })
    }

    /// The simple statements (expressions, `assert`s) after `stmt` in its block that read
    /// `name` and bind nothing (`m = str(e.value)` is no such statement: a later use of `m`
    /// needs it).
    fn simple_statements_reading(&self, stmt: Node<'_>, name: &str) -> Vec<Range<usize>> {
        let binds = |n: Node<'_>| {
            let mut stack = vec![n];
            while let Some(n) = stack.pop() {
                if matches!(
                    n.kind(),
                    "assignment" | "augmented_assignment" | "named_expression"
                ) {
                    return true;
                }
                stack.extend(named_children(n));
            }
            false
        };
        let mut out = Vec::new();
        let mut next = stmt.next_named_sibling();
        while let Some(s) = next {
            if matches!(s.kind(), "expression_statement" | "assert_statement")
                && !binds(s)
                && self.identifiers_in(s.byte_range()).contains(name)
            {
                out.push(s.byte_range());
            }
            next = s.next_named_sibling();
        }
        out
    }

    /// The statement of test `node_id`'s own body (not of a block inside it) that spans line
    /// `line` (1-based), when it is a simple one — an expression, an assignment or an
    /// `assert`: its bytes. `None` for a compound statement, a line in a nested block, or a
    /// body on the `def`'s own line.
    pub fn simple_statement_in_test(&self, node_id: &str, line: usize) -> Option<Range<usize>> {
        let (_, _, def) = self
            .test_defs()
            .into_iter()
            .find(|(n, _, _)| n == node_id)?;
        let body = def.child_by_field_name("body")?;
        if body.start_position().row == def.start_position().row {
            return None;
        }
        let stmt = named_children(body)
            .into_iter()
            .find(|s| s.start_position().row < line && line <= s.end_position().row + 1)?;
        matches!(stmt.kind(), "expression_statement" | "assert_statement")
            .then(|| stmt.byte_range())
    }

    /// Whether anything under `n` checks (see [`Parsed::test_functions`]). Walked with a stack:
    /// the model's code may nest deeply.
    fn has_check(&self, n: Node<'_>, helpers: &BTreeSet<String>) -> bool {
        let mut stack = vec![n];
        while let Some(n) = stack.pop() {
            match n.kind() {
                // `assert True`, `assert 1, "ran"`: a constant holds whatever the code does.
                "assert_statement" => {
                    let constant = n
                        .named_child(0)
                        .is_some_and(|c| is_literal(text(c, &self.src)));
                    if !constant {
                        return true;
                    }
                }
                "raise_statement" if text(n, &self.src).contains("AssertionError") => return true,
                "call" => {
                    let f = n
                        .child_by_field_name("function")
                        .map_or("", |f| text(f, &self.src));
                    let last = f.rsplit('.').next().unwrap_or(f);
                    if last.starts_with("assert")
                        || CHECKING_CALLS.contains(&last)
                        || helpers.contains(f)
                    {
                        return true;
                    }
                }
                _ => {}
            }
            stack.extend(named_children(n));
        }
        false
    }

    /// `src` without the tests `nodes`: a top-level test is removed, a method of a test class
    /// becomes `pass` so the class stays valid. `None` if what is left does not parse.
    pub fn without_tests(&self, nodes: &[String]) -> Option<String> {
        let body = self.removing_tests(nodes)?;
        parse(&body)?.first_error_line().is_none().then_some(body)
    }

    /// [`Parsed::without_tests`], also when what is left holds another error.
    pub fn removing_tests(&self, nodes: &[String]) -> Option<String> {
        let gone: Vec<TestFn> = self
            .test_functions()
            .into_iter()
            .filter(|t| nodes.contains(&t.node_id))
            .collect();
        let mut body = self.src.clone();
        let mut methods: Vec<Range<usize>> = gone
            .iter()
            .filter(|t| t.node_id.contains("::"))
            .map(|t| t.bytes.clone())
            .collect();
        methods.sort_by_key(|r| std::cmp::Reverse(r.start));
        for r in methods {
            body.replace_range(r, "pass");
        }
        let p = parse(&body)?;
        let ranges: Vec<Range<usize>> = p
            .test_functions()
            .into_iter()
            .filter(|t| nodes.contains(&t.node_id) && !t.node_id.contains("::"))
            .map(|t| t.bytes)
            .collect();
        Some(remove_ranges(&body, &ranges))
    }

    /// Names of functions decorated as pytest fixtures.
    pub fn fixtures(&self) -> Vec<String> {
        self.units()
            .into_iter()
            .filter(|u| u.is_fixture())
            .map(|u| {
                u.qualname
                    .rsplit('.')
                    .next()
                    .unwrap_or(&u.qualname)
                    .to_string()
            })
            .collect()
    }

    /// The top-level classes that define their own `__init__`, by name, with what it takes.
    /// A class that inherits its `__init__` is not listed: what it takes is not read here.
    pub fn constructors(&self) -> BTreeMap<String, Constructor> {
        let mut out = BTreeMap::new();
        for child in named_children(self.root()) {
            let (class, _) = undecorate(child, &self.src);
            let (Some(name), Some(body)) = (
                class.child_by_field_name("name"),
                class.child_by_field_name("body"),
            ) else {
                continue;
            };
            if class.kind() != "class_definition" {
                continue;
            }
            let init = named_children(body)
                .into_iter()
                .map(|m| undecorate(m, &self.src).0)
                .find(|m| {
                    m.kind() == "function_definition"
                        && m.child_by_field_name("name")
                            .is_some_and(|n| text(n, &self.src) == "__init__")
                });
            let Some(params) = init.and_then(|i| i.child_by_field_name("parameters")) else {
                continue;
            };
            let mut c = self.init_params(params);
            c.attributes = self.self_attributes(body);
            out.insert(text(name, &self.src).to_string(), c);
        }
        out
    }

    /// The parameters of an `__init__`'s `parameters` node, `self` left out.
    fn init_params(&self, params: Node<'_>) -> Constructor {
        let mut c = Constructor::default();
        for (i, p) in named_children(params).into_iter().enumerate() {
            let first = named_children(p).into_iter().next();
            let (name, required) = match p.kind() {
                "identifier" => (Some(p), true),
                "typed_parameter" => (first.filter(|f| f.kind() == "identifier"), true),
                "default_parameter" | "typed_default_parameter" => {
                    (p.child_by_field_name("name"), false)
                }
                "positional_separator" => {
                    c.params.iter_mut().for_each(|p| p.positional_only = true);
                    continue;
                }
                _ => (None, false),
            };
            let splat = |k: &str| p.kind() == k || first.is_some_and(|f| f.kind() == k);
            c.var_keyword |= splat("dictionary_splat_pattern");
            let Some(name) = name.map(|n| text(n, &self.src)) else {
                continue;
            };
            if i == 0 && name == "self" {
                continue;
            }
            let annotation = p.child_by_field_name("type").map(|t| text(t, &self.src));
            c.params.push(InitParam {
                name: name.to_string(),
                required,
                positional_only: false,
                takes_none: annotation.is_some_and(admits_none),
            });
        }
        c
    }

    /// The names assigned as `self.NAME = …` anywhere in a class's body.
    fn self_attributes(&self, body: Node<'_>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut stack = vec![body];
        while let Some(n) = stack.pop() {
            if n.kind() == "assignment"
                && let Some(left) = n.child_by_field_name("left")
                && left.kind() == "attribute"
                && let (Some(object), Some(attribute)) = (
                    left.child_by_field_name("object"),
                    left.child_by_field_name("attribute"),
                )
                && text(object, &self.src) == "self"
            {
                out.insert(text(attribute, &self.src).to_string());
            }
            stack.extend(named_children(n));
        }
        out
    }

    /// In the tests' bodies, the statements that build an object of one of `classes` and
    /// name it ([`NamedConstruction`]), each alone on its line(s); where the test binds the
    /// class's name itself, it is left alone.
    pub fn named_constructions_in_tests(&self, classes: &[&str]) -> Vec<NamedConstruction> {
        let mut out = Vec::new();
        for (_, _, def) in self.test_defs() {
            let Some(body) = def.child_by_field_name("body") else {
                continue;
            };
            let (_, bound) = self.free_and_bound(body);
            let mut stack = vec![body];
            while let Some(n) = stack.pop() {
                if let Some(c) = self.named_construction(n)
                    && classes.contains(&c.class.as_str())
                    && !bound.contains(&c.class)
                {
                    out.push(c);
                }
                stack.extend(named_children(n));
            }
        }
        out.sort_by_key(|c| c.call.start);
        out
    }

    /// `n` as a [`NamedConstruction`], when it is one.
    fn named_construction(&self, n: Node<'_>) -> Option<NamedConstruction> {
        let (call, name, after, indent) = match n.kind() {
            "expression_statement" => {
                let [assignment] = named_children(n)[..] else {
                    return None;
                };
                let left = assignment.child_by_field_name("left")?;
                let call = assignment.child_by_field_name("right")?;
                (assignment.kind() == "assignment" && left.kind() == "identifier").then_some(())?;
                let after = self.line_end_after(n)?;
                (call, left, after, self.indent_of(n)?)
            }
            "with_statement" => {
                let clause = named_children(n)
                    .into_iter()
                    .find(|c| c.kind() == "with_clause")?;
                let [item] = named_children(clause)[..] else {
                    return None;
                };
                let pattern = item.child_by_field_name("value")?;
                (pattern.kind() == "as_pattern").then_some(())?;
                let call = named_children(pattern).into_iter().next()?;
                let alias = pattern.child_by_field_name("alias")?;
                let [id] = named_children(alias)[..] else {
                    return None;
                };
                (id.kind() == "identifier").then_some(())?;
                let first = named_children(n.child_by_field_name("body")?)
                    .into_iter()
                    .next()?;
                let indent = self.indent_of(first)?;
                (first.start_position().row > n.start_position().row).then_some(())?;
                (call, id, first.start_byte() - indent.len(), indent)
            }
            _ => return None,
        };
        let f = call.child_by_field_name("function")?;
        let args = call.child_by_field_name("arguments")?;
        (call.kind() == "call" && f.kind() == "identifier" && args.kind() == "argument_list")
            .then_some(())?;
        let mut splat = false;
        let mut listed = Vec::new();
        for a in named_children(args) {
            match a.kind() {
                "keyword_argument" => listed.push((
                    Some(text(a.child_by_field_name("name")?, &self.src).to_string()),
                    text(a.child_by_field_name("value")?, &self.src).to_string(),
                )),
                "list_splat" | "dictionary_splat" => splat = true,
                "comment" => {}
                _ => listed.push((None, text(a, &self.src).to_string())),
            }
        }
        Some(NamedConstruction {
            class: text(f, &self.src).to_string(),
            name: text(name, &self.src).to_string(),
            call: call.byte_range(),
            args: listed,
            splat,
            after,
            indent,
        })
    }

    /// The start of the line after statement `n`, when nothing but blanks or a comment
    /// follows it on its last line.
    fn line_end_after(&self, n: Node<'_>) -> Option<usize> {
        let rest = &self.src[n.end_byte()..];
        let eol = rest.find('\n').unwrap_or(rest.len());
        let tail = rest[..eol].trim();
        (tail.is_empty() || tail.starts_with('#'))
            .then_some(n.end_byte() + (eol + 1).min(rest.len()))
    }

    /// The blanks before `n` on its line, when only blanks come before it there.
    fn indent_of(&self, n: Node<'_>) -> Option<String> {
        let before = &self.src[..n.start_byte()];
        let start = before.rfind('\n').map_or(0, |i| i + 1);
        let indent = &before[start..];
        indent
            .chars()
            .all(|c| c == ' ' || c == '\t')
            .then(|| indent.to_string())
    }

    /// What must hold for the statement on `line` (1-based) to run, read off the code between
    /// it and the start of the unit at `unit`: each `if`/`elif`/`while` it sits in (its
    /// condition holds; for an `elif` or `else`, the earlier conditions do not), and each
    /// guard before it in the same block — an `if` without `else` whose body ends in
    /// `return`, `raise` or `continue` (its condition does not hold). Outermost first.
    /// Empty when no statement starts on `line` inside the unit.
    pub fn conditions_to_reach(&self, unit: &Range<usize>, line: u32) -> Vec<Condition> {
        let Some(row) = (line as usize).checked_sub(1) else {
            return Vec::new();
        };
        let Some(text_line) = self.src.lines().nth(row) else {
            return Vec::new();
        };
        let col = text_line.len() - text_line.trim_start().len();
        let at = tree_sitter::Point::new(row, col);
        let Some(mut cur) = self.root().named_descendant_for_point_range(at, at) else {
            return Vec::new();
        };
        if !(unit.start <= cur.start_byte() && cur.end_byte() <= unit.end) {
            return Vec::new();
        }
        let cond = |n: Node<'_>, holds: bool| Condition {
            text: text(n, &self.src)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            holds,
        };
        let mut out = Vec::new();
        while let Some(parent) = cur.parent() {
            if parent.start_byte() < unit.start {
                break;
            }
            match parent.kind() {
                "block" => {
                    let guards = named_children(parent)
                        .into_iter()
                        .take_while(|s| s.start_byte() < cur.start_byte())
                        .filter(|s| is_guard(*s))
                        .filter_map(|s| s.child_by_field_name("condition"));
                    let mut before: Vec<Condition> = guards.map(|c| cond(c, false)).collect();
                    before.reverse();
                    out.extend(before);
                }
                "if_statement" | "elif_clause" | "while_statement"
                    if parent.child_by_field_name("consequence").map(|b| b.id())
                        == Some(cur.id())
                        || parent.child_by_field_name("body").map(|b| b.id()) == Some(cur.id()) =>
                {
                    if let Some(c) = parent.child_by_field_name("condition") {
                        out.push(cond(c, true));
                    }
                }
                "if_statement" if matches!(cur.kind(), "elif_clause" | "else_clause") => {
                    let mut earlier: Vec<Node<'_>> = parent
                        .child_by_field_name("condition")
                        .into_iter()
                        .collect();
                    let mut c = parent.walk();
                    earlier.extend(
                        parent
                            .children_by_field_name("alternative", &mut c)
                            .filter(|a| {
                                a.kind() == "elif_clause" && a.start_byte() < cur.start_byte()
                            })
                            .filter_map(|a| a.child_by_field_name("condition")),
                    );
                    earlier.reverse();
                    out.extend(earlier.into_iter().map(|c| cond(c, false)));
                }
                _ => {}
            }
            cur = parent;
        }
        out.reverse();
        out
    }

    /// Each `@pytest.mark.parametrize(…)` of a test that takes none of its names — pytest
    /// refuses to collect that test ("function uses no argument") — as (node id, the
    /// decorator up to what follows it). The 1.5B model copies one decorator over every test
    /// of its answer (click's `format_bar`, run KK: 3 of 4 tests).
    pub fn idle_parametrizations(&self) -> Vec<(String, Range<usize>)> {
        let mut out = Vec::new();
        for (node_id, outer, def) in self.test_defs() {
            let Some(params) = def.child_by_field_name("parameters") else {
                continue;
            };
            let taken = params_names(params, &self.src);
            for d in named_children(outer) {
                let names = parametrize_call(d, &self.src)
                    .and_then(|call| parametrize_arguments(call, &self.src))
                    .and_then(|(names, _)| argnames(names, &self.src));
                if let Some(names) = names
                    && names.iter().all(|n| !taken.contains(n.as_str()))
                    && let Some(next) = d.next_sibling()
                {
                    out.push((node_id.clone(), d.start_byte()..next.start_byte()));
                }
            }
        }
        out
    }

    /// The test `node_id`'s one `@pytest.mark.parametrize(…)` read as written-out cases (see
    /// [`Parametrization`]). `None` when the test has no such decorator or more than one, or
    /// when the names or the cases are not written out: a comprehension or a name for the
    /// cases, `indirect=`, `pytest.param(…, marks=…)`, a starred element, a case with another
    /// number of values than names, a parameter the test does not take.
    pub fn parametrization(&self, node_id: &str) -> Option<Parametrization> {
        let (_, outer, def) = self
            .test_defs()
            .into_iter()
            .find(|(n, _, _)| n == node_id)?;
        let mut marks = named_children(outer)
            .into_iter()
            .filter(|d| d.kind() == "decorator")
            .filter_map(|d| Some((d, parametrize_call(d, &self.src)?)));
        let (decorator, call) = marks.next()?;
        if marks.next().is_some() {
            return None;
        }
        let (names, values) = parametrize_arguments(call, &self.src)?;
        if !matches!(values.kind(), "list" | "tuple") {
            return None;
        }
        let argnames = argnames(names, &self.src)?;
        let cases = named_children(values)
            .into_iter()
            .filter(|c| c.kind() != "comment")
            .map(|c| case_values(c, argnames.len(), &self.src))
            .collect::<Option<Vec<_>>>()?;
        if cases.is_empty() {
            return None;
        }
        let params = def.child_by_field_name("parameters")?;
        let mut taken = Vec::new();
        let mut kept_params = Vec::new();
        for p in named_children(params)
            .into_iter()
            .filter(|p| p.kind() != "comment")
        {
            match param_name(p, &self.src) {
                Some(name) if argnames.iter().any(|a| a == name) => taken.push(name),
                _ => kept_params.push(text(p, &self.src).to_string()),
            }
        }
        if taken.len() != argnames.len() {
            return None;
        }
        let (_, body_start, indent) = self
            .test_body_starts()
            .into_iter()
            .find(|(n, _, _)| n == node_id)?;
        let decorator_end = decorator.next_sibling()?.start_byte();
        Some(Parametrization {
            stmt: outer.byte_range(),
            decorator: decorator.start_byte()..decorator_end,
            name: def.child_by_field_name("name")?.byte_range(),
            params: params.byte_range(),
            kept_params,
            body_start,
            indent,
            argnames,
            cases,
        })
    }

    /// The docstring-and-signature header of a unit: its source up to the end of the
    /// signature line(s).
    pub fn signature(&self, unit: &Unit) -> String {
        let src = &self.src[unit.bytes.clone()];
        match src.find(":\n") {
            Some(i) => src[..=i].to_string(),
            None => src.lines().next().unwrap_or("").to_string(),
        }
    }
}

/// A condition a statement's running depends on ([`Parsed::conditions_to_reach`]): its text,
/// whitespace collapsed, and whether it must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub text: String,
    pub holds: bool,
}

/// A test's `@pytest.mark.parametrize(NAMES, CASES)` as written ([`Parsed::parametrization`]):
/// byte ranges in the file, and each case's values as source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parametrization {
    /// The whole test, its decorators included.
    pub stmt: Range<usize>,
    /// The decorator, up to what follows it (the next decorator or the `def`).
    pub decorator: Range<usize>,
    /// The test's name.
    pub name: Range<usize>,
    /// The parameter list, parentheses included.
    pub params: Range<usize>,
    /// The parameters that are not parametrized (`self`, fixtures), as written.
    pub kept_params: Vec<String>,
    /// Where the body's first statement starts (after a docstring), and its indentation.
    pub body_start: usize,
    pub indent: String,
    /// The parametrized names, in the decorator's order.
    pub argnames: Vec<String>,
    /// Per case, the value of each name as written.
    pub cases: Vec<Vec<String>>,
}

/// The call of a `@pytest.mark.parametrize(…)` (or `@mark.parametrize(…)`) decorator.
fn parametrize_call<'t>(decorator: Node<'t>, src: &str) -> Option<Node<'t>> {
    let call = named_children(decorator)
        .into_iter()
        .find(|c| c.kind() == "call")?;
    let f = text(call.child_by_field_name("function")?, src);
    matches!(f, "pytest.mark.parametrize" | "mark.parametrize").then_some(call)
}

/// A parametrize call's names and cases, positional or by keyword; `ids=` is allowed, any
/// other argument (`indirect=`, `scope=`) is not.
fn parametrize_arguments<'t>(call: Node<'t>, src: &str) -> Option<(Node<'t>, Node<'t>)> {
    let args = call.child_by_field_name("arguments")?;
    let mut positional = Vec::new();
    let (mut names, mut values) = (None, None);
    for a in named_children(args) {
        match a.kind() {
            "comment" => {}
            "keyword_argument" => {
                let value = a.child_by_field_name("value")?;
                match text(a.child_by_field_name("name")?, src) {
                    "argnames" => names = Some(value),
                    "argvalues" => values = Some(value),
                    "ids" => {}
                    _ => return None,
                }
            }
            _ => positional.push(a),
        }
    }
    let mut positional = positional.into_iter();
    let names = names.or_else(|| positional.next())?;
    let values = values.or_else(|| positional.next())?;
    positional.next().is_none().then_some((names, values))
}

/// `"a, b"` or `["a", "b"]` → `[a, b]`: plain strings of identifiers, none twice.
fn argnames(n: Node<'_>, src: &str) -> Option<Vec<String>> {
    let plain = |s: Node<'_>| -> Option<&str> {
        let t = text(s, src);
        if s.kind() != "string" {
            return None;
        }
        // One quote on each side and none inside: no prefix, no triple quotes, no escapes.
        let inner = t
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .or_else(|| t.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')))?;
        (!inner.contains(['\\', '"', '\''])).then_some(inner)
    };
    let names: Vec<String> = match n.kind() {
        "string" => plain(n)?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        "list" | "tuple" => named_children(n)
            .into_iter()
            .filter(|c| c.kind() != "comment")
            .map(|c| plain(c).map(|s| s.trim().to_string()))
            .collect::<Option<_>>()?,
        _ => return None,
    };
    let distinct: BTreeSet<&String> = names.iter().collect();
    (!names.is_empty() && distinct.len() == names.len() && names.iter().all(|s| is_identifier(s)))
        .then_some(names)
}

/// One case of a parametrize call as the values of its `n` names: `pytest.param(…)`'s
/// positional arguments (with at most an `id=`), a tuple or list of `n` values, or for one
/// name the element itself.
fn case_values(c: Node<'_>, n: usize, src: &str) -> Option<Vec<String>> {
    let elements = |parent: Node<'_>| -> Option<Vec<String>> {
        let mut out = Vec::new();
        for e in named_children(parent) {
            match e.kind() {
                "comment" => {}
                "keyword_argument"
                    if e.child_by_field_name("name")
                        .is_some_and(|k| text(k, src) == "id") => {}
                "keyword_argument" | "list_splat" | "dictionary_splat" => return None,
                _ => out.push(text(e, src).to_string()),
            }
        }
        (out.len() == n).then_some(out)
    };
    let is_param = c.kind() == "call"
        && c.child_by_field_name("function")
            .is_some_and(|f| matches!(text(f, src), "pytest.param" | "param"));
    if is_param {
        elements(c.child_by_field_name("arguments")?)
    } else if c.kind() == "list_splat" {
        None
    } else if n == 1 {
        Some(vec![text(c, src).to_string()])
    } else if matches!(c.kind(), "tuple" | "list") {
        elements(c)
    } else {
        None
    }
}

/// An `if` without `elif` or `else` whose body ends by leaving: `return`, `raise`, `continue`.
fn is_guard(n: Node<'_>) -> bool {
    n.kind() == "if_statement"
        && n.child_by_field_name("alternative").is_none()
        && n.child_by_field_name("consequence")
            .and_then(|b| {
                named_children(b)
                    .into_iter()
                    .rfind(|s| s.kind() != "comment")
            })
            .is_some_and(|last| {
                matches!(
                    last.kind(),
                    "return_statement" | "raise_statement" | "continue_statement"
                )
            })
}

/// An annotation that admits `None`: `Optional[X]`, `Union[X, None]` (any module prefix,
/// quoted or not), `X | None`, `None`.
fn admits_none(annotation: &str) -> bool {
    let a: String = annotation
        .trim_matches(|c| c == '"' || c == '\'')
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let head = a.split('[').next().unwrap_or("");
    let generic = |g: &str| a.contains('[') && (head == g || head.ends_with(&format!(".{g}")));
    generic("Optional")
        || (generic("Union") && (a.contains(",None]") || a.contains(",None,")))
        || a.split('|').any(|p| p == "None")
}

/// The text of `path` if it is a regular file (never read through a symlink: the repository is
/// the submitter's) of at most `max_bytes`.
pub fn read_regular(path: &std::path::Path, max_bytes: u64) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > max_bytes {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// Removes byte ranges (sorted or not, non-overlapping) from `src`, with the line each ends on.
pub fn remove_ranges(src: &str, ranges: &[Range<usize>]) -> String {
    let mut rs: Vec<Range<usize>> = ranges.to_vec();
    rs.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(src.len());
    let mut at = 0;
    for r in rs {
        if r.start < at {
            continue;
        }
        out.push_str(&src[at..r.start]);
        at = r.end;
        // Drop the newline after the definition too.
        if src[at..].starts_with('\n') {
            at += 1;
        }
    }
    out.push_str(&src[at..]);
    out
}

/// What a one-line `assert` checks (byte ranges in the statement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assertion {
    /// `assert LEFT OP RIGHT[, message]`, one operator of `==`, `!=`, `<`, `<=`, `>`, `>=`,
    /// `is`, `is not`, `in`, `not in`.
    Comparison {
        left: Range<usize>,
        op: Range<usize>,
        right: Range<usize>,
    },
    /// `assert EXPR[, message]` or `assert not EXPR`, `EXPR` a name, an attribute, a call or
    /// a subscript: `condition` is what the assertion checks (from `not`), `value` the
    /// expression whose truth it checks.
    Truth {
        condition: Range<usize>,
        value: Range<usize>,
        negated: bool,
    },
}

/// What the one-line assertion `stmt` checks, or `None` for any other statement (a chained
/// comparison, `and`/`or`, an assertion over several lines).
pub fn assertion(stmt: &str) -> Option<Assertion> {
    let tree = parser().parse(stmt, None)?;
    let root = tree.root_node();
    if root.has_error() {
        return None;
    }
    let kids = named_children(root);
    let [a] = kids.as_slice() else {
        return None;
    };
    if a.kind() != "assert_statement" {
        return None;
    }
    let cond = *named_children(*a).first()?;
    let plain = |n: Node<'_>| matches!(n.kind(), "identifier" | "attribute" | "call" | "subscript");
    match cond.kind() {
        "comparison_operator" => {
            let sides = named_children(cond);
            let [l, r] = sides.as_slice() else {
                return None;
            };
            let between = &stmt[l.end_byte()..r.start_byte()];
            let op = between.split_whitespace().collect::<Vec<_>>().join(" ");
            let at = l.end_byte() + (between.len() - between.trim_start().len());
            let known = [
                "==", "!=", "<", "<=", ">", ">=", "is", "is not", "in", "not in",
            ];
            (known.contains(&op.as_str()) && between.trim() == op).then(|| Assertion::Comparison {
                left: l.byte_range(),
                op: at..at + op.len(),
                right: r.byte_range(),
            })
        }
        "not_operator" => {
            let value = cond.child_by_field_name("argument")?;
            plain(value).then(|| Assertion::Truth {
                condition: cond.byte_range(),
                value: value.byte_range(),
                negated: true,
            })
        }
        _ if plain(cond) => Some(Assertion::Truth {
            condition: cond.byte_range(),
            value: cond.byte_range(),
            negated: false,
        }),
        _ => None,
    }
}

/// Whether `expr` is a plain literal: numbers, strings (no f-strings), `True`, `False`,
/// `None`, and lists, tuples, sets and dicts of them — a value written out, not computed.
pub fn is_literal(expr: &str) -> bool {
    is_built_from_literals(expr, &[])
}

/// Whether `expr` is a literal (see [`is_literal`]) or a value built from literals with calls
/// of `constructors` only, at any depth (`{'a': [Path('a')]}` with `Path`; keyword arguments
/// too): a value written out in the test, whatever it holds, never one the code computed.
pub fn is_built_from_literals(expr: &str, constructors: &[&str]) -> bool {
    fn lit(n: Node<'_>, src: &str, calls: &[&str]) -> bool {
        match n.kind() {
            "integer" | "float" | "true" | "false" | "none" | "string_start" | "string_end"
            | "string_content" | "escape_sequence" => true,
            "string" => !text(n, src).starts_with(['f', 'F']) && all(n, src, calls),
            "unary_operator" => {
                let t = text(n, src).trim_start();
                (t.starts_with('-') || t.starts_with('+')) && all(n, src, calls)
            }
            "list"
            | "tuple"
            | "set"
            | "dictionary"
            | "pair"
            | "parenthesized_expression"
            | "concatenated_string"
            | "expression_statement" => all(n, src, calls),
            "call" => {
                let callee = n.child_by_field_name("function");
                let args = n.child_by_field_name("arguments");
                callee.is_some_and(|f| calls.contains(&text(f, src)))
                    && args.is_some_and(|a| a.kind() == "argument_list" && all(a, src, calls))
            }
            "keyword_argument" => n
                .child_by_field_name("value")
                .is_some_and(|v| lit(v, src, calls)),
            _ => false,
        }
    }
    fn all(n: Node<'_>, src: &str, calls: &[&str]) -> bool {
        named_children(n).into_iter().all(|c| lit(c, src, calls))
    }
    let Some(tree) = parser().parse(expr, None) else {
        return false;
    };
    let root = tree.root_node();
    let kids = named_children(root);
    !root.has_error()
        && matches!(kids.as_slice(), [e] if e.kind() == "expression_statement" && lit(*e, expr, constructors))
}

/// A valid Python identifier (ASCII only: what cordon puts on a command line).
pub fn is_identifier(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_annotation_admits_none_when_it_says_so() {
        for yes in [
            "Optional[int]",
            "t.Optional[t.Iterable[V]]",
            "'typing.Optional[X]'",
            "int | None",
            "None | str",
            "Union[int, None]",
            "t.Union[int, None, str]",
        ] {
            assert!(admits_none(yes), "{yes}");
        }
        for no in [
            "int",
            "OptionalThing",
            "List[Optional[int]]",
            "Union[int, str]",
            "Optional",
        ] {
            assert!(!admits_none(no), "{no}");
        }
    }

    const SRC: &str = "import os\nfrom a.b import c\n\nX = 1\n\ndef f(x):\n    return x\n\n@dec\nclass K:\n    def m(self):\n        if self:\n            return 1\n        return 2\n\n    class Inner:\n        def g(self):\n            pass\n";

    #[test]
    fn units_and_top_level() {
        let p = parse(SRC).expect("parses");
        assert_eq!(p.first_error_line(), None);
        let units: Vec<(String, UnitKind, u32, u32)> = p
            .units()
            .into_iter()
            .map(|u| (u.qualname, u.kind, u.start_line, u.end_line))
            .collect();
        assert_eq!(
            units,
            vec![
                ("f".into(), UnitKind::Function, 6, 7),
                ("K".into(), UnitKind::Class, 9, 18),
                ("K.m".into(), UnitKind::Method, 11, 14),
                ("K.Inner".into(), UnitKind::Class, 16, 18),
                ("K.Inner.g".into(), UnitKind::Method, 17, 18),
            ]
        );
        let names: Vec<String> = p.top_level().into_iter().map(|t| t.name).collect();
        assert_eq!(names, vec!["X", "f", "K"]);
        assert_eq!(p.imports(), vec!["import os", "from a.b import c"]);
        assert!(p.imported_modules().contains("a.b"));
    }

    #[test]
    fn what_a_module_offers_to_an_import() {
        // astor's node_util: `ast.AST` is used, in a default too, but `AST` is not a name of it.
        let src = "import ast\nfrom a.b import c as d\ntry:\n    zl = ast.x\nexcept E:\n    zl = 2\n\ndef strip(n, special=ast.AST):\n    local = 1\n    global G\n    G = n\n\nclass K(Base):\n    attr = 1\n";
        let p = parse(src).expect("parses");
        let names = p.module_scope_names();
        for n in ["ast", "d", "zl", "E", "strip", "K", "G"] {
            assert!(names.contains(n), "{n} in {names:?}");
        }
        for n in ["AST", "x", "local", "attr", "special", "n"] {
            assert!(!names.contains(n), "{n} in {names:?}");
        }
        assert!(!p.has_dynamic_exports());
        for dynamic in [
            "from m import *\n",
            "globals()['a'] = 1\n",
            "setattr(sys.modules[__name__], 'a', 1)\n",
            "def __getattr__(n):\n    pass\n",
        ] {
            assert!(
                parse(dynamic).expect("parses").has_dynamic_exports(),
                "{dynamic}"
            );
        }
    }

    #[test]
    fn tests_fixtures_and_errors() {
        let src = "import pytest\n@pytest.fixture\ndef db():\n    return 1\n\ndef test_a(db):\n    assert db\n\ndef test_b():\n    pass\n\nclass TestK:\n    def test_c(self):\n        assert 1\n";
        let p = parse(src).expect("parses");
        let t: Vec<(String, bool)> = p
            .test_functions()
            .into_iter()
            .map(|t| (t.node_id, t.placeholder))
            .collect();
        assert_eq!(
            t,
            vec![
                ("test_a".into(), false),
                ("test_b".into(), true),
                ("TestK::test_c".into(), false)
            ]
        );
        assert_eq!(p.fixtures(), vec!["db"]);
        let bad = parse("def f(:\n  pass\n").expect("tree");
        assert_eq!(bad.first_error_line(), Some(1));
    }

    #[test]
    fn a_positional_argument_after_a_keyword_one_does_not_compile() {
        let line = |src: &str| parse(src).expect("tree").first_error_line();
        assert_eq!(
            line("@opt(name=\"p\", \"--version\")\ndef f():\n    pass\n"),
            Some(1)
        );
        assert_eq!(line("x = 1\nf(a,\n  b=2,\n  c)\n"), Some(4));
        assert_eq!(line("f(**kw, a)\n"), Some(1));
        assert_eq!(line("f(**kw, *a)\n"), Some(1));
        assert_eq!(line("class A(B, metaclass=M, C):\n    pass\n"), Some(1));
        // What Python accepts.
        for ok in [
            "f(a, *b, c=1, **d)\n",
            "f(a=1, *b)\n",
            "f(*a, b, c=1, *d, e=2, **f)\n",
            "f(x for x in y)\n",
            "f(a=1,  # why\n  b=2)\n",
            "f(**a, b=1, **c)\n",
        ] {
            assert_eq!(line(ok), None, "{ok}");
        }
    }

    #[test]
    fn what_checks_and_what_only_calls() {
        let src = r#"import pytest
def expect_two(x):
    assert x == 2

def test_assert():
    assert f() == 1

def test_raises():
    with pytest.raises(ValueError):
        f(0)

def test_raises_call_form():
    pytest.raises(ValueError, f, 0)

def test_helper():
    expect_two(f())

def test_mock(m):
    f(m)
    m.assert_called_once_with(1)

def test_nested():
    for x in [1, 2]:
        if x:
            if f(x) != x:
                raise AssertionError(x)

def test_only_calls():
    f(1)
    result = f(2)

def test_prints():
    print(f(1))
    raise ValueError("not a check")

def test_assert_true():
    f(1)
    assert True
    assert 1, "ran"

class TestK:
    def test_unittest_style(self):
        self.assertEqual(f(), 1)

    def test_fail(self):
        try:
            f()
        except KeyError:
            self.fail("raised")

    def test_calls(self):
        self.helper(f())
"#;
        let p = parse(src).expect("parses");
        let not_checking: Vec<String> = p
            .test_functions()
            .into_iter()
            .filter(|t| !t.checks)
            .map(|t| t.node_id)
            .collect();
        assert_eq!(
            not_checking,
            vec![
                "test_only_calls",
                "test_prints",
                "test_assert_true",
                "TestK::test_calls"
            ]
        );
        // Removing them: a method becomes `pass`, a function goes; the rest stays valid.
        let left = p.without_tests(&not_checking).expect("still parses");
        let q = parse(&left).expect("parses");
        assert_eq!(q.test_functions().len(), 8, "{left}");
        assert!(q.test_functions().iter().all(|t| t.checks), "{left}");
        assert!(left.contains("def expect_two"), "{left}");
    }
}
