//! Reading the model's answers, which are hostile text: the analysis (files to change and
//! acceptance), and whole files as fenced blocks with a path header. Parsing is lenient
//! about form (headers, bullets, backticks, a JSON object) and strict about what comes out:
//! paths are only strings here; [`super::unsafe_path`] and the protected paths decide what
//! is written.

/// The most files one analysis may name, and criteria it may give.
const MAX_ITEMS: usize = 8;
/// The most files one answer may write, and the largest file.
pub const MAX_FILES: usize = 12;
pub const MAX_FILE_BYTES: usize = 200_000;

/// The model's reading of an issue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Analysis {
    /// Paths to change or create, as the model wrote them.
    pub files: Vec<String>,
    /// What shows the issue is resolved, one statement each.
    pub acceptance: Vec<String>,
}

/// Reads an analysis in the asked form (`FILES:` and `ACCEPTANCE:` lists), or a JSON object
/// with `files` and `acceptance`. An answer naming no file is an error saying what came.
pub fn analysis(text: &str) -> Result<Analysis, String> {
    let a = json_analysis(text).unwrap_or_else(|| listed_analysis(text));
    if a.files.is_empty() {
        return Err(format!(
            "it named no file to change (it said: \"{}\")",
            crate::pipeline::llm::clip(text.trim(), 200)
        ));
    }
    Ok(a)
}

fn json_analysis(text: &str) -> Option<Analysis> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    let v: serde_json::Value = serde_json::from_str(text.get(start..=end)?).ok()?;
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).map(str::to_string))
            .into_iter()
            .flatten()
            .take(MAX_ITEMS)
            .collect()
    };
    let files: Vec<String> = list("files").iter().filter_map(|f| path_in(f)).collect();
    Some(Analysis {
        files,
        acceptance: list("acceptance"),
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Section {
    None,
    Files,
    Acceptance,
}

fn listed_analysis(text: &str) -> Analysis {
    let mut a = Analysis::default();
    let mut section = Section::None;
    for line in text.lines() {
        let bare = line.trim().trim_start_matches(['#', '*', ' ']).trim();
        match header(bare) {
            Some((s, rest)) => {
                section = s;
                // `FILES: a.py, b.py` on the header's own line.
                for item in rest.split(',') {
                    add_item(&mut a, section, item);
                }
            }
            None => add_item(&mut a, section, bare),
        }
    }
    a
}

/// `FILES:`, `**Files:**`, `Acceptance criteria:`: the section a line starts, and the rest
/// of the line.
fn header(bare: &str) -> Option<(Section, &str)> {
    let (h, rest) = bare.split_once(':')?;
    let h = h.trim_matches(['*', ' ']).to_ascii_lowercase();
    if h.split_whitespace().count() > 3 {
        return None;
    }
    let section = if h.starts_with("file") {
        Section::Files
    } else if h.starts_with("accept") || h.starts_with("criteria") {
        Section::Acceptance
    } else {
        return None;
    };
    Some((section, rest.trim_start_matches(['*', ' ']).trim()))
}

fn add_item(a: &mut Analysis, section: Section, line: &str) {
    let mut item = line.trim().trim_start_matches(['-', '*', '•', ' ']);
    // `1.` or `2)` numbering.
    let digits = item.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && item[digits..].starts_with(['.', ')']) {
        item = &item[digits + 1..];
    }
    let item = item.trim();
    if item.is_empty() {
        return;
    }
    match section {
        Section::Files if a.files.len() < MAX_ITEMS => {
            if let Some(p) = path_in(item)
                && !a.files.contains(&p)
            {
                a.files.push(p);
            }
        }
        Section::Acceptance if a.acceptance.len() < MAX_ITEMS => {
            a.acceptance.push(crate::pipeline::llm::clip(item, 300));
        }
        _ => {}
    }
}

/// The path in an item like `` `calc.py` (add mul) `` or `**calc.py**:`: its first word,
/// without quotes, backticks and trailing punctuation, if it looks like a file path.
fn path_in(item: &str) -> Option<String> {
    let word = item.split_whitespace().next()?;
    let p = word
        .trim_matches(['`', '"', '\'', '*', ',', ';', '(', ')'])
        .trim_end_matches([':', '.'])
        .trim_start_matches("./");
    let looks = p.contains('.') || p.contains('/');
    (looks && p.len() <= 200 && !p.contains("://")).then(|| p.to_string())
}

/// A file the model wrote: its path (as written) and whole content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub content: String,
}

/// The files in an answer: fenced blocks whose path is on the line before (`### path`,
/// `**path**`, `File: path`, `path:`) or in the fence's info string (```` ```python path ````).
/// A block without a path, or one cut off before its closing fence, is not a file; a path
/// given twice keeps its last block. Also what was dropped, with the reason.
pub fn files(text: &str) -> (Vec<File>, Vec<String>) {
    let mut out: Vec<File> = Vec::new();
    let mut dropped = Vec::new();
    let mut pending: Option<String> = None;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let t = line.trim();
        let Some(fence) = fence_of(t) else {
            if !t.is_empty() {
                pending = header_path(t);
            }
            continue;
        };
        let info = t[fence.len()..].trim();
        let path = info_path(info).or(pending.take());
        let mut body = String::new();
        let mut closed = false;
        for l in lines.by_ref() {
            if l.trim() == fence {
                closed = true;
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        match (path, closed) {
            (None, _) => dropped.push("a code block with no file path before it".to_string()),
            (Some(p), false) => dropped.push(format!("`{p}`: cut off before its closing fence")),
            (Some(p), true) if body.len() > MAX_FILE_BYTES => {
                dropped.push(format!("`{p}`: larger than {MAX_FILE_BYTES} bytes"))
            }
            (Some(p), true) => {
                out.retain(|f| f.path != p);
                out.push(File {
                    path: p,
                    content: body,
                });
            }
        }
    }
    if out.len() > MAX_FILES {
        dropped.push(format!(
            "{} files past the first {MAX_FILES}",
            out.len() - MAX_FILES
        ));
        out.truncate(MAX_FILES);
    }
    (out, dropped)
}

/// The fence a line opens (three or more backticks or tildes), if it opens one.
fn fence_of(line: &str) -> Option<&str> {
    let c = line.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = line.chars().take_while(|x| *x == c).count();
    (n >= 3).then(|| &line[..n])
}

/// A path in a fence's info string: ```` ```python calc.py ````, ```` ```calc.py ````,
/// ```` ```python title="calc.py" ````, ```` ```python:calc.py ````.
fn info_path(info: &str) -> Option<String> {
    info.split([' ', ':'])
        .map(|w| w.trim_start_matches("title=").trim_start_matches("path="))
        .find_map(|w| path_in(w).filter(|p| p.contains('.') && p != "python"))
}

/// A path on a header line before a block: `### calc.py`, `**calc.py**`, `File: calc.py`,
/// `calc.py:`. Prose is not a header.
fn header_path(line: &str) -> Option<String> {
    let t = line.trim_start_matches(['#', ' ']);
    let t = t
        .strip_prefix("File:")
        .or_else(|| t.strip_prefix("file:"))
        .or_else(|| t.strip_prefix("Path:"))
        .unwrap_or(t)
        .trim();
    if t.split_whitespace().count() != 1 {
        return None;
    }
    path_in(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_analysis_in_the_asked_form_or_near_it() {
        let a = analysis(
            "FILES:\n- `calc.py` (add mul)\n- tests/test_calc.py\nACCEPTANCE:\n- mul(2, 3) == 6\n1. mul(0, 5) == 0\n",
        )
        .expect("reads");
        assert_eq!(a.files, ["calc.py", "tests/test_calc.py"]);
        assert_eq!(a.acceptance, ["mul(2, 3) == 6", "mul(0, 5) == 0"]);
        let b = analysis("**Files:** calc.py, util.py\n**Acceptance criteria:**\n* works\n")
            .expect("reads");
        assert_eq!(b.files, ["calc.py", "util.py"]);
        assert_eq!(b.acceptance, ["works"]);
        let j =
            analysis("Sure: {\"files\": [\"./calc.py\"], \"acceptance\": [\"x\"]}").expect("json");
        assert_eq!(j.files, ["calc.py"]);
        let e = analysis("I think you should refactor everything.").expect_err("no file");
        assert!(e.contains("named no file") && e.contains("refactor"), "{e}");
    }

    #[test]
    fn files_come_from_fenced_blocks_with_a_path() {
        let text = "Here you go.\n\n### calc.py\n```python\ndef mul(a, b):\n    return a * b\n```\n\n**tests/test_calc.py**\n```python\nfrom calc import mul\n```\n```python util.py\nX = 1\n```\n```\norphan\n```\n### calc.py\n```python\ndef mul(a, b):\n    return b * a\n```\n";
        let (f, dropped) = files(text);
        let paths: Vec<&str> = f.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["tests/test_calc.py", "util.py", "calc.py"]);
        assert!(f[2].content.contains("b * a"), "the last block wins");
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        let (f, dropped) = files("### a.py\n```python\nx = 1\n");
        assert!(
            f.is_empty() && dropped[0].contains("cut off"),
            "{dropped:?}"
        );
    }

    #[test]
    fn a_longer_fence_holds_backticks() {
        let (f, _) = files("### doc.md\n````markdown\n```python\nx\n```\n````\n");
        assert_eq!(f[0].content, "```python\nx\n```\n");
    }
}
