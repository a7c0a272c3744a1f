//! The loop: analyse the issue → code and tests → the suite in the sandbox → on failure,
//! regenerate only the files the failure points at, telling the model the latest failure
//! only → … at most `max_refine_rounds` times after the first run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::answer::{self, Analysis};
use super::suite::{Ran, Suite, SuiteError};
use super::{failure, prompt, tree};
use crate::github::issues::Issue;
use crate::github::protect::Protected;
use crate::pipeline::Progress;
use crate::pipeline::llm::{Llm, Message};

/// The most bytes of current files quoted in one prompt.
const QUOTED: usize = 12_000;
/// The analysis is a short answer.
const ANALYSIS_TOKENS: u32 = 300;

/// Room for an answer of whole files: the quoted ones rewritten (about 3 bytes a token) and
/// a test file, never less than the configured `max_tokens`, never past the context (a
/// 180-line module is about 1,700 tokens — the default 900 cut every answer short).
fn answer_tokens(cfg: &crate::pipeline::llm::LlmConfig, m: &[Message], quoted: usize) -> u32 {
    let wanted = u32::try_from(quoted.div_ceil(3))
        .unwrap_or(u32::MAX)
        .saturating_add(600);
    let room = cfg
        .context_tokens
        .saturating_sub(crate::pipeline::llm::estimate_tokens(m));
    wanted.min(room).max(cfg.max_tokens)
}

/// What the loop works with.
pub(super) struct Work<'a> {
    pub issue: &'a Issue,
    pub tree: &'a Path,
    pub protected: &'a Protected,
    pub llm: &'a Llm,
    pub suite: &'a Suite,
    pub max_rounds: u32,
    pub cancel: &'a CancellationToken,
    pub progress: &'a Progress,
}

/// The files of the change.
#[derive(Debug, Default)]
pub(super) struct Files {
    /// Written into the tree.
    pub written: BTreeSet<String>,
    /// Every path the model proposed that is inside the repository (protected ones too,
    /// which were not written): what promotion judges.
    pub proposed: Vec<String>,
    /// Refused and not written, with the reason.
    pub refused: Vec<String>,
    /// Each written file as the default branch had it (`None`: it is new), read before the
    /// model's first version of it was written.
    pub originals: BTreeMap<String, Option<String>>,
}

/// The change the loop made, and the suite's last verdict on it.
#[derive(Debug)]
pub(super) struct Change {
    pub analysis: Analysis,
    pub files: Files,
    /// How many times the suite ran.
    pub runs: u32,
    pub last: Ran,
}

/// Why the loop has nothing to deliver.
pub(super) enum Stop {
    Nothing(String),
    Cancelled,
}

impl Work<'_> {
    fn say(&self, s: &str) {
        (self.progress)(s);
    }

    async fn ask(&self, what: &str, m: &[Message], tokens: Option<u32>) -> Result<String, Stop> {
        self.say(&format!("model: {what}"));
        let r = tokio::select! {
            r = self.llm.chat(m, 0.2, tokens) => r,
            _ = self.cancel.cancelled() => return Err(Stop::Cancelled),
        };
        let r = r.map_err(|e| {
            Stop::Nothing(format!(
                "the model failed ({what}): {}",
                crate::error::error_chain(&e)
            ))
        })?;
        if r.truncated {
            self.say("model: the answer was cut off by max_tokens; reading what came");
        }
        Ok(r.content)
    }

    /// `paths` as the model is shown them, with their current content.
    fn quoted(&self, paths: &[String]) -> String {
        let files: Vec<(String, Option<String>)> = paths
            .iter()
            .filter(|p| super::unsafe_path(p).is_none())
            .map(|p| (p.clone(), tree::read(self.tree, p)))
            .collect();
        prompt::quote(&files, QUOTED)
    }

    pub async fn run(&self) -> Result<Change, Stop> {
        let m = prompt::analyse(self.issue, &tree::listing(self.tree));
        let text = self
            .ask("analysing the issue", &m, Some(ANALYSIS_TOKENS))
            .await?;
        let analysis = answer::analysis(&text).map_err(|why| {
            Stop::Nothing(format!("the model's analysis could not be read: {why}"))
        })?;
        self.say(&format!("analysis: files {}", analysis.files.join(", ")));
        let quoted = self.quoted(&analysis.files);
        let m = prompt::code(self.issue, &analysis, &quoted);
        let tokens = answer_tokens(&self.llm.config, &m, quoted.len());
        let text = self
            .ask("writing the change and its tests", &m, Some(tokens))
            .await?;
        let mut files = Files::default();
        self.apply(&mut files, &text, None);
        if files.written.is_empty() {
            let proposed = files.proposed.iter().map(String::as_str);
            let mut why: Vec<String> = self
                .protected
                .check(proposed)
                .iter()
                .map(|v| format!("{v}"))
                .collect();
            why.extend(files.refused.iter().cloned());
            return Err(Stop::Nothing(match why.is_empty() {
                true => "the model's answer held no file to write".to_string(),
                false => format!("every file was refused: {}", why.join("; ")),
            }));
        }
        let mut runs = 0;
        loop {
            runs += 1;
            let last = self.suite_run(runs).await?;
            let r = &last.run;
            let green = r.completed && r.failed == 0 && r.passed > 0;
            if green || runs > self.max_rounds {
                return Ok(Change {
                    analysis,
                    files,
                    runs,
                    last,
                });
            }
            self.refine(&mut files, &last).await?;
        }
    }

    async fn suite_run(&self, n: u32) -> Result<Ran, Stop> {
        self.say(&format!("sandbox: running the suite (run {n})"));
        let ran = match self.suite.run(self.tree, self.cancel).await {
            Ok(r) => r,
            Err(SuiteError::Cancelled) => return Err(Stop::Cancelled),
            Err(e @ SuiteError::Start(_)) => return Err(Stop::Nothing(e.to_string())),
        };
        self.say(&format!(
            "sandbox: job {}: {} passed, {} failed ({})",
            ran.job_id, ran.run.passed, ran.run.failed, ran.outcome
        ));
        Ok(ran)
    }

    /// One refine round: the files the latest failure points at (all the written ones when
    /// it names none of them), rewritten with only that failure as the story.
    async fn refine(&self, files: &mut Files, last: &Ran) -> Result<(), Stop> {
        let written: Vec<String> = files.written.iter().cloned().collect();
        let mut targets = failure::pointed_at(&last.output, &written);
        if targets.is_empty() {
            targets = written;
        }
        let told = failure_text(last);
        self.say(&format!("refine: asking again for {}", targets.join(", ")));
        let quoted = self.quoted(&targets);
        let m = prompt::refine(self.issue, &told, &quoted);
        let tokens = answer_tokens(&self.llm.config, &m, quoted.len());
        let text = self.ask("fixing the failure", &m, Some(tokens)).await?;
        self.apply(files, &text, Some(&targets));
        Ok(())
    }

    /// Writes the answer's files that may be written; `only`, in a refine round, the ones
    /// asked for.
    fn apply(&self, change: &mut Files, text: &str, only: Option<&[String]>) {
        let (files, dropped) = answer::files(text);
        for d in dropped {
            self.say(&format!("model: dropped {d}"));
        }
        for f in files {
            let path = f.path.trim_start_matches("./").to_string();
            if let Some(why) = super::unsafe_path(&path) {
                change.refused.push(why);
                continue;
            }
            if only.is_some_and(|o| !o.contains(&path)) {
                self.say(&format!("model: `{path}` was not asked for; not written"));
                continue;
            }
            if !change.proposed.contains(&path) {
                change.proposed.push(path.clone());
            }
            if let Some(v) = self.protected.check([path.as_str()]).first() {
                change.refused.push(format!("{v}: not written"));
                continue;
            }
            if !change.originals.contains_key(&path) {
                let before = tree::read(self.tree, &path);
                change.originals.insert(path.clone(), before);
            }
            match tree::write(self.tree, &path, &f.content) {
                Ok(()) => {
                    change.written.insert(path);
                }
                Err(why) => change.refused.push(why),
            }
        }
    }
}

/// What the model and the issue's comment are told of a run: the trimmed failure, or the
/// outcome when the output says nothing.
pub(super) fn failure_text(ran: &Ran) -> String {
    let t = failure::trim(&ran.output);
    if t.is_empty() {
        format!("the suite ended {} with no output", ran.outcome)
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_have_room_for_the_files_they_rewrite() {
        let cfg = crate::pipeline::llm::LlmConfig::from_env(Some("http://x".into()), None);
        let short = [Message::user("q".repeat(300))];
        // A small file: the configured cap.
        assert_eq!(answer_tokens(&cfg, &short, 600), cfg.max_tokens);
        // A 6,000-byte module: its tokens and a test file's.
        assert_eq!(answer_tokens(&cfg, &short, 6_000), 2_600);
        // A prompt that fills most of the context: what is left, never below the cap.
        let long = [Message::user("q".repeat(21_000))];
        let left = cfg.context_tokens - crate::pipeline::llm::estimate_tokens(&long);
        assert_eq!(answer_tokens(&cfg, &long, 12_000), left.max(cfg.max_tokens));
        assert!(left < 4_600);
    }
}
