//! What the code itself says must hold for a gap's uncovered lines to run, told to the model
//! beside the source: click's `ProgressBar.render_progress` returns early
//! `if self.is_hidden:` (true whenever the output is not a terminal, as in every test), so
//! tests that build a bar and call it pass and cover nothing new until one sets
//! `bar.is_hidden = False`. Read off the conditions around the lines with tree-sitter
//! ([`python::Parsed::conditions_to_reach`]); nothing is run.

use std::ops::Range;

use super::python::{self, Condition};

/// At most this many groups of lines are described, the largest first.
const MAX_GROUPS: usize = 2;
/// At most this many conditions per group, the innermost kept.
const MAX_CONDITIONS: usize = 4;
/// A longer condition is left out: the model reads the source anyway.
const MAX_CONDITION_CHARS: usize = 80;
/// At most this many uncovered lines are read: each walks the tree up from its line, and a
/// repository's module may hold one enormous function.
const MAX_LINES: usize = 200;

/// What the uncovered lines of a unit need, for the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// For up to [`MAX_GROUPS`] groups of the lines (those that need the same, the most lines
    /// first), the first line's text with the conditions.
    pub hint: String,
    /// Attribute assignments that make the largest group's conditions on `self` hold
    /// (`is_hidden = False` for `not self.is_hidden`): the 1.5B model, told the condition,
    /// still did not set it in run L; told what to write, it may.
    pub settings: Vec<String>,
}

/// The uncovered lines `missing` of the unit at `unit` grouped by what must hold for them to
/// run. `None` when no uncovered line depends on a condition.
pub fn of(parsed: &python::Parsed, unit: &Range<usize>, missing: &[u32]) -> Option<Reach> {
    let mut groups: Vec<(Vec<String>, Vec<u32>)> = Vec::new();
    for &line in missing.iter().take(MAX_LINES) {
        let conditions: Vec<String> = parsed
            .conditions_to_reach(unit, line)
            .iter()
            .map(as_must_hold)
            .filter(|c| c.chars().count() <= MAX_CONDITION_CHARS)
            .collect();
        let conditions = conditions[conditions.len().saturating_sub(MAX_CONDITIONS)..].to_vec();
        if conditions.is_empty() {
            continue;
        }
        match groups.iter_mut().find(|(c, _)| *c == conditions) {
            Some((_, lines)) => lines.push(line),
            None => groups.push((conditions, vec![line])),
        }
    }
    if groups.is_empty() {
        return None;
    }
    // The most lines first; among equals, the earliest.
    groups.sort_by_key(|(_, lines)| (std::cmp::Reverse(lines.len()), lines[0]));
    let mut out =
        String::from("What the NOT COVERED lines need, from the code's own conditions:\n");
    let mut names_self = false;
    for (conditions, lines) in groups.iter().take(MAX_GROUPS) {
        let first = parsed
            .src
            .lines()
            .nth(lines[0] as usize - 1)
            .unwrap_or("")
            .trim();
        let more = match lines.len() {
            1 => String::new(),
            2 => " (and 1 more line)".to_string(),
            n => format!(" (and {} more lines)", n - 1),
        };
        let all = conditions
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "- `{}`{more} runs only when {all}\n",
            clip(first, 60)
        ));
        names_self |= conditions.iter().any(|c| c.contains("self."));
    }
    if names_self {
        out.push_str(
            "A test can set an attribute such as `self.x` on the object after creating it (`obj.x = …`).\n",
        );
    }
    let settings = groups[0].0.iter().filter_map(|c| setting(c)).collect();
    Some(Reach {
        hint: out,
        settings,
    })
}

/// The assignment of an attribute that makes `must_hold` true, for a condition on one
/// attribute of `self`: `self.x` → `x = True`, `not self.x` → `x = False`,
/// `self.x is None` → `x = None`, `self.x == <literal>` → `x = <literal>`.
fn setting(must_hold: &str) -> Option<String> {
    let attribute = |t: &str| {
        t.strip_prefix("self.")
            .filter(|a| python::is_identifier(a))
            .map(str::to_string)
    };
    if let Some(a) = attribute(must_hold) {
        return Some(format!("{a} = True"));
    }
    if let Some(a) = must_hold.strip_prefix("not ").and_then(attribute) {
        return Some(format!("{a} = False"));
    }
    if let Some(a) = must_hold.strip_suffix(" is None").and_then(attribute) {
        return Some(format!("{a} = None"));
    }
    let (lhs, value) = must_hold.split_once(" == ")?;
    let a = attribute(lhs)?;
    python::is_literal(value).then(|| format!("{a} = {value}"))
}

/// The condition written as what must be true: itself, or its negation.
fn as_must_hold(c: &Condition) -> String {
    if c.holds {
        c.text.clone()
    } else {
        negated(&c.text)
    }
}

/// `not (t)`, written the way a person would where that is unambiguous: one comparison
/// turned around (`a is None` → `a is not None`, `a < b` → `a >= b`), `not x` → `x`, and a
/// plain name or call prefixed with `not`.
fn negated(t: &str) -> String {
    const FLIPS: &[(&str, &str)] = &[
        (" is not ", " is "),
        (" not in ", " in "),
        (" == ", " != "),
        (" != ", " == "),
        (" <= ", " > "),
        (" >= ", " < "),
        (" < ", " >= "),
        (" > ", " <= "),
        (" is ", " is not "),
        (" in ", " not in "),
    ];
    let t = unparenthesized(t);
    // `not (a or b)` is `not a and not b`: each part negated on its own.
    let parts = split_top_level(t, " or ");
    if parts.len() > 1 {
        return parts
            .iter()
            .map(|p| negated(p))
            .collect::<Vec<_>>()
            .join(" and ");
    }
    let compound =
        split_top_level(t, " and ").len() > 1 || [" if ", "lambda"].iter().any(|k| t.contains(k));
    if let Some(rest) = t.strip_prefix("not ")
        && split_top_level(rest, " and ").len() == 1
    {
        return unparenthesized(rest).to_string();
    }
    if compound {
        return format!("not ({t})");
    }
    // The first operator that occurs; `a is not b` is not also `a is b`.
    let found: Vec<&(&str, &str)> = FLIPS.iter().filter(|(op, _)| t.contains(op)).collect();
    match found.first() {
        Some((op, flip)) if t.matches(op).count() == 1 && !has_other_op(t, op) => {
            t.replacen(op, flip, 1)
        }
        Some(_) => format!("not ({t})"),
        None if is_simple(t) => format!("not {t}"),
        None => format!("not ({t})"),
    }
}

/// Each character of `t` outside quotes, with its byte index and the bracket depth after it.
fn unquoted(t: &str) -> Vec<(usize, i32)> {
    let (mut depth, mut quote) = (0i32, None::<char>);
    let mut out = Vec::new();
    for (i, c) in t.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, c) => {
                match c {
                    '(' | '[' | '{' => depth += 1,
                    ')' | ']' | '}' => depth -= 1,
                    _ => {}
                }
                out.push((i, depth));
            }
        }
    }
    out
}

/// `t` split at `sep` where it is outside brackets and quotes.
fn split_top_level<'a>(t: &'a str, sep: &str) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, depth) in unquoted(t) {
        if depth == 0 && i >= start && t[i..].starts_with(sep) {
            parts.push(&t[start..i]);
            start = i + sep.len();
        }
    }
    parts.push(&t[start..]);
    parts
}

/// `t` without brackets around the whole of it: `(a or b)` → `a or b`, not `(a) or (b)`.
fn unparenthesized(t: &str) -> &str {
    let t = t.trim();
    match t.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        Some(inner) if balanced(inner) => unparenthesized(inner),
        _ => t,
    }
}

/// Brackets outside quotes never close more than they opened.
fn balanced(t: &str) -> bool {
    let depths = unquoted(t);
    depths.iter().all(|&(_, d)| d >= 0) && depths.last().is_none_or(|&(_, d)| d == 0)
}

/// Whether `t` holds a comparison other than `op` (and than the parts of `op` itself:
/// ` is ` in ` is not `).
fn has_other_op(t: &str, op: &str) -> bool {
    let rest = t.replacen(op, " \u{0} ", 1);
    [" is ", " in ", " == ", " != ", " <= ", " >= ", " < ", " > "]
        .iter()
        .any(|o| rest.contains(o))
}

/// A dotted name, optionally called: `self.is_hidden`, `isatty(sys.stdin)`.
fn is_simple(t: &str) -> bool {
    let head = t.split('(').next().unwrap_or(t);
    head.split('.').all(python::is_identifier) && (!t.contains('(') || t.ends_with(')'))
}

fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// click 8.1.7's `ProgressBar` methods, cut down.
    const BAR: &str = "class ProgressBar:
    def render_progress(self):
        if self.is_hidden:
            if self._last_line != self.label:
                self._last_line = self.label
            return

        buf = []
        if self.autowidth:
            buf.append(1)
        return buf

    def format_bar(self):
        if self.length is not None:
            bar = 'a'
        elif self.finished:
            bar = 'b'
        else:
            chars = list('c')
            if self.time_per_iteration != 0:
                chars[0] = 'd'
            bar = ''.join(chars)
        return bar
";

    fn unit(parsed: &python::Parsed, name: &str) -> Range<usize> {
        parsed
            .units()
            .into_iter()
            .find(|u| u.qualname == name)
            .expect("unit")
            .bytes
    }

    #[test]
    fn a_guard_that_returns_early_must_not_hold() {
        let p = python::parse(BAR).expect("parses");
        let u = unit(&p, "ProgressBar.render_progress");
        let reach = of(&p, &u, &[8, 9, 10, 11]).expect("a hint");
        assert_eq!(reach.settings, ["is_hidden = False"]);
        let hint = reach.hint;
        assert!(
            hint.contains("- `buf = []` (and 2 more lines) runs only when `not self.is_hidden`\n"),
            "{hint}"
        );
        assert!(
            hint.contains("`buf.append(1)` runs only when `not self.is_hidden`, `self.autowidth`"),
            "{hint}"
        );
        assert!(hint.contains("`obj.x = …`"), "{hint}");
        // Inside the guard: it must hold.
        let inner = p.conditions_to_reach(&u, 5);
        assert_eq!(
            inner.iter().map(as_must_hold).collect::<Vec<_>>(),
            ["self.is_hidden", "self._last_line != self.label"]
        );
    }

    #[test]
    fn an_else_branch_needs_every_earlier_condition_false() {
        let p = python::parse(BAR).expect("parses");
        let u = unit(&p, "ProgressBar.format_bar");
        let got: Vec<String> = p
            .conditions_to_reach(&u, 21)
            .iter()
            .map(as_must_hold)
            .collect();
        assert_eq!(
            got,
            [
                "self.length is None",
                "not self.finished",
                "self.time_per_iteration != 0"
            ]
        );
        let elif: Vec<String> = p
            .conditions_to_reach(&u, 17)
            .iter()
            .map(as_must_hold)
            .collect();
        assert_eq!(elif, ["self.length is None", "self.finished"]);
        // The first statement of a body depends on nothing; a line outside the unit gives
        // nothing either.
        assert!(p.conditions_to_reach(&u, 14).is_empty());
        assert!(p.conditions_to_reach(&u, 3).is_empty());
        assert_eq!(of(&p, &u, &[14]), None);
        let reach = of(&p, &u, &[21]).expect("a hint");
        assert_eq!(reach.settings, ["length = None", "finished = False"]);
    }

    #[test]
    fn settings_only_for_one_attribute_of_self() {
        for (c, want) in [
            ("self.entered", Some("entered = True")),
            ("not self._hidden", Some("_hidden = False")),
            ("self.length is None", Some("length = None")),
            ("self.mode == 'w'", Some("mode = 'w'")),
            ("self.mode == other", None),
            ("self.length is not None", None),
            ("self.a.b", None),
            ("other.flag", None),
            ("not (self.a and self.b)", None),
        ] {
            assert_eq!(setting(c).as_deref(), want, "{c}");
        }
    }

    #[test]
    fn negations_read_as_written() {
        for (t, want) in [
            ("a is None", "a is not None"),
            ("a is not None", "a is None"),
            ("x not in seen", "x in seen"),
            ("n <= 0", "n > 0"),
            ("not isatty(sys.stdin)", "isatty(sys.stdin)"),
            ("self.entered", "not self.entered"),
            ("a and b", "not (a and b)"),
            ("not a or b", "a and not b"),
            (
                "not isatty(sys.stdin) or not isatty(stdout)",
                "isatty(sys.stdin) and isatty(stdout)",
            ),
            ("(WIN or f('a or b'))", "not WIN and not f('a or b')"),
            ("not (a and b)", "a and b"),
            ("not a and b", "not (not a and b)"),
            ("(a) or (b)", "not a and not b"),
            ("a < b < c", "not (a < b < c)"),
            ("a == 'x is y'", "not (a == 'x is y')"),
            ("len(x) + 1", "not (len(x) + 1)"),
        ] {
            assert_eq!(negated(t), want, "{t}");
        }
    }
}
