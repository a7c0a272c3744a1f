//! A test that builds an object of the target module with arguments its `__init__` does not
//! take fails with a `TypeError` before it tests anything. The small model does it in two
//! ways (click's `ProgressBar`, run HH: every test of two answers): it passes the object's
//! state as keywords (`ProgressBar(length=8, pos=7, finished=False)`, where `pos` and
//! `finished` are attributes the class sets, not parameters), and it leaves out a required
//! parameter whose annotation admits `None` (`iterable: Optional[Iterable]`).
//!
//! Such a statement (`bar = K(…)` or `with K(…) as bar:`) is mended here: a keyword that the
//! `__init__` does not take and that names an attribute the class sets becomes an assignment
//! right after the construction (`bar.pos = 7`); a required parameter left out whose
//! annotation admits `None` is passed as `None`. Anything else — a keyword that names nothing
//! of the class, a required parameter that does not take `None`, a call with `*args` or
//! `**kw`, a class whose `__init__` takes `**kwargs` or is inherited — is left to the
//! `TypeError` and the fix round, whose prompt gets the real signature (`hints`). Validation
//! decides as for any test: a mended test is kept only if it passes.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use super::python::{Constructor, NamedConstruction, Parsed};

/// The edits that mend the tests' constructions of `constructors`' classes in `parsed`, and
/// a sentence for each mended statement.
pub fn mend(
    parsed: &Parsed,
    constructors: &BTreeMap<String, Constructor>,
) -> (Vec<(Range<usize>, String)>, Vec<String>) {
    let classes: Vec<&str> = constructors.keys().map(String::as_str).collect();
    let mut edits = Vec::new();
    let mut repairs = Vec::new();
    for c in parsed.named_constructions_in_tests(&classes) {
        let Some(k) = constructors.get(&c.class) else {
            continue;
        };
        if c.splat {
            continue;
        }
        let moved = state_keywords(&c, k);
        let nones = nones_for_missing(&c, k);
        if moved.is_empty() && nones.is_empty() {
            continue;
        }
        let mut args: Vec<String> = c
            .args
            .iter()
            .filter(|(kw, _)| kw.as_ref().is_none_or(|kw| !moved.contains(kw)))
            .map(|(kw, v)| match kw {
                Some(kw) => format!("{kw}={v}"),
                None => v.clone(),
            })
            .collect();
        args.extend(nones.iter().map(|n| format!("{n}=None")));
        edits.push((c.call.clone(), format!("{}({})", c.class, args.join(", "))));
        if !moved.is_empty() {
            let lines: String = c
                .args
                .iter()
                .filter_map(|(kw, v)| kw.as_ref().filter(|kw| moved.contains(*kw)).zip(Some(v)))
                .map(|(kw, v)| format!("{}{}.{kw} = {v}\n", c.indent, c.name))
                .collect();
            edits.push((c.after..c.after, lines));
            repairs.push(format!(
                "`{}` set on `{}` after `{}(…)` built it: `{}.__init__` takes no such keyword, and the class sets it as an attribute",
                moved.join("`, `"),
                c.name,
                c.class,
                c.class
            ));
        }
        if !nones.is_empty() {
            repairs.push(format!(
                "`{}(…)` passes `{}`: the parameter is required and its annotation admits None",
                c.class,
                nones
                    .iter()
                    .map(|n| format!("{n}=None"))
                    .collect::<Vec<_>>()
                    .join("`, `")
            ));
        }
    }
    (edits, repairs)
}

/// The call's keywords that `k`'s `__init__` does not take and that name an attribute the
/// class sets, in the call's order; none when it takes any keyword.
fn state_keywords(c: &NamedConstruction, k: &Constructor) -> Vec<String> {
    if k.var_keyword {
        return Vec::new();
    }
    let takes: BTreeSet<&str> = k
        .params
        .iter()
        .filter(|p| !p.positional_only)
        .map(|p| p.name.as_str())
        .collect();
    c.args
        .iter()
        .filter_map(|(kw, _)| kw.as_ref())
        .filter(|kw| !takes.contains(kw.as_str()) && k.attributes.contains(*kw))
        .cloned()
        .collect()
}

/// The required parameters the call leaves out, when every one of them admits `None` and
/// can be passed by keyword; else none.
fn nones_for_missing(c: &NamedConstruction, k: &Constructor) -> Vec<String> {
    let positional = c.args.iter().filter(|(kw, _)| kw.is_none()).count();
    let given: BTreeSet<&str> = c.args.iter().filter_map(|(kw, _)| kw.as_deref()).collect();
    let missing: Vec<_> = k
        .params
        .iter()
        .skip(positional)
        .filter(|p| p.required && !given.contains(p.name.as_str()))
        .collect();
    match missing.iter().all(|p| p.takes_none && !p.positional_only) {
        true => missing.iter().map(|p| p.name.clone()).collect(),
        false => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::python;

    /// A module with click's `ProgressBar` shape: a required `iterable` that admits `None`,
    /// state set on `self` in `__init__` and in another method.
    const MODULE: &str = "import typing as t\n\nclass Bar:\n    def __init__(self, iterable: t.Optional[list], length: int = None, *, width=30):\n        self.pos = 0\n        self.finished = False\n\n    def step(self):\n        self.avg = []\n\nclass Any:\n    def __init__(self, a, **kw):\n        self.pos = a\n\nclass Need:\n    def __init__(self, n: int, /, m: 'Optional[int]'):\n        self.pos = n\n\nclass Child(Bar):\n    pass\n";

    fn mended(test: &str) -> (String, Vec<String>) {
        let constructors = python::parse(MODULE).expect("parses").constructors();
        let parsed = python::parse(test).expect("parses");
        let (mut edits, repairs) = mend(&parsed, &constructors);
        edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
        let mut out = test.to_string();
        for (r, t) in edits {
            out.replace_range(r, &t);
        }
        (out, repairs)
    }

    #[test]
    fn a_class_s_own_init_is_read_with_its_attributes() {
        let c = python::parse(MODULE).expect("parses").constructors();
        assert_eq!(c.keys().collect::<Vec<_>>(), ["Any", "Bar", "Need"]);
        let bar = &c["Bar"];
        let params: Vec<_> = bar
            .params
            .iter()
            .map(|p| (p.name.as_str(), p.required, p.takes_none))
            .collect();
        assert_eq!(
            params,
            [
                ("iterable", true, true),
                ("length", false, false),
                ("width", false, false)
            ]
        );
        assert!(!bar.var_keyword && c["Any"].var_keyword);
        assert_eq!(
            bar.attributes.iter().collect::<Vec<_>>(),
            ["avg", "finished", "pos"]
        );
        assert!(c["Need"].params[0].positional_only && !c["Need"].params[1].positional_only);
        assert!(c["Need"].params[1].takes_none);
    }

    #[test]
    fn state_passed_as_keywords_is_set_after_the_construction() {
        // click's `ProgressBar`, run HH: `iterable` left out, `pos`, `finished`, `avg` passed
        // as keywords; in a `with`, the assignments open its body.
        let test = "def test_a():\n    bar = Bar(length=8, width=8, pos=7, finished=False, avg=[0])  # built\n    assert bar.format() == 'x'\n\ndef test_b():\n    with Bar([1], pos=2, colour=3) as b:\n        assert b.pos == 2\n";
        let (out, repairs) = mended(test);
        assert_eq!(
            out,
            "def test_a():\n    bar = Bar(length=8, width=8, iterable=None)  # built\n    bar.pos = 7\n    bar.finished = False\n    bar.avg = [0]\n    assert bar.format() == 'x'\n\ndef test_b():\n    with Bar([1], colour=3) as b:\n        b.pos = 2\n        assert b.pos == 2\n"
        );
        assert!(
            python::parse(&out)
                .expect("parses")
                .first_error_line()
                .is_none()
        );
        assert_eq!(
            repairs,
            [
                "`pos`, `finished`, `avg` set on `bar` after `Bar(…)` built it: `Bar.__init__` takes no such keyword, and the class sets it as an attribute",
                "`Bar(…)` passes `iterable=None`: the parameter is required and its annotation admits None",
                "`pos` set on `b` after `Bar(…)` built it: `Bar.__init__` takes no such keyword, and the class sets it as an attribute",
            ]
        );
    }

    #[test]
    fn what_cannot_be_known_is_left_to_the_fix_round() {
        // `**kw` taken or passed, a required parameter that does not admit None or cannot be
        // passed by keyword, an inherited `__init__`, a test that binds the class's name, a
        // construction not named, a statement that shares its line.
        for test in [
            "def test_a():\n    a = Any(1, pos=2)\n    assert a\n",
            "def test_a():\n    b = Bar(**opts, pos=2)\n    assert b\n",
            "def test_a():\n    n = Need(m=None)\n    assert n\n",
            "def test_a():\n    n = Need()\n    assert n\n",
            "def test_a():\n    c = Child(pos=2)\n    assert c\n",
            "def test_a():\n    Bar = dict\n    b = Bar(pos=2)\n    assert b\n",
            "def test_a():\n    assert Bar(pos=2).pos == 2\n",
            "def test_a():\n    b = Bar(pos=2); assert b\n",
            "def test_a():\n    b = Bar([], length=2)\n    assert b\n",
        ] {
            let (out, repairs) = mended(test);
            assert_eq!((out.as_str(), repairs.len()), (test, 0));
        }
        // The state moves whatever else the call lacks; `m` (quoted `Optional`) gets `None`.
        let (out, _) = mended("def test_a():\n    n = Need(pos=2)\n    assert n\n");
        assert_eq!(
            out,
            "def test_a():\n    n = Need()\n    n.pos = 2\n    assert n\n"
        );
        let (out, _) = mended("def test_a():\n    n = Need(1, pos=2)\n    assert n\n");
        assert_eq!(
            out,
            "def test_a():\n    n = Need(1, m=None)\n    n.pos = 2\n    assert n\n"
        );
    }
}
