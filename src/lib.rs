//! cordon runs untrusted code — above all, tests written by an LLM — only ever inside a fresh,
//! locked-down container per job, and streams the results back.
//!
//! Modules, in the order a job flows through them. Each uses only modules listed before it
//! (and `error`, `retry`, `state`, `event`, `report`, which use nothing above them): no module
//! imports one that imports it.
//!
//! - [`error`]: helpers every layer shares for errors (one line of an error and its causes).
//! - [`retry`]: what every retrying client shares: reading `Retry-After`, jitter.
//! - [`state`]: where cordon keeps its host state (`CORDON_STATE_DIR`) and the one build lock
//!   (an `flock`, across threads and processes) that image and environment builds take.
//! - [`spec`]: the job spec and sandbox profiles: parsing, units, validation within the
//!   operator's policy ([`spec::OperatorPolicy`]: what a submitter's spec may ask for). No I/O
//!   beyond reading the spec, profile and key files.
//! - [`image`]: resolving a job's image locally and building cordon's own images from
//!   `images/` (never pulling).
//! - `envcache` (crate-private): dependency environments made by a job's `prepare`, keyed by
//!   what determines them; listing, pruning and eviction.
//! - [`sandbox`]: the engine seam. `policy` (crate-private) turns a job and its profile into
//!   engine-neutral plans ([`sandbox::plan`]); the [`sandbox::Backend`] trait an isolation
//!   engine implements (make what a plan says, run it, read it back, remove it) with
//!   [`sandbox::Images`], [`sandbox::Reaper`] and [`sandbox::EgressNetworks`] beside it; the
//!   Docker implementation; an in-memory one for unit tests; `archive`, tar streams in
//!   (workspace) and out (artifacts, extracted safely); `egress`, the allowlisting proxy that
//!   is a `prepare` container's only way out, run by the `cordon-egress` program in a sidecar
//!   container of its own.
//! - [`pool`]: the warm pool: fresh, never-used sandboxes made ahead of time, each handed
//!   to exactly one job.
//! - [`runner`]: one job's phases (resolve, create, load, run, collect, destroy), its
//!   timeouts and cancellation, reported as a stream of [`event::JobEvent`]s.
//! - [`event`]: the one event type every consumer reads (terminal, JSON, HTTP, pipeline).
//! - [`report`]: the job result and its outcome; JUnit parsing.
//! - [`server`]: `cordon serve`, the controller service: HTTP API, a durable queue on SQLite
//!   (one controller) or PostgreSQL (several, with leases, takeovers and fencing), live event
//!   streams, crash recovery. Its HTTP layer only parses requests into calls on
//!   [`server::Service`].
//! - [`pipeline`]: `cordon testgen`, test generation that never runs generated code on the
//!   host: model probe → detect → baseline → gaps (a pull request's changed lines, `--only`)
//!   → generate (another candidate later for a gap that kept nothing) → validate → a file
//!   that fails to import loses what broke it → characterize / classify → fix → keep test by test → report, every run of target or
//!   generated code a sandbox job.
//! - [`github`]: GitHub delivery: a token or App (octocrab), safe git, `.cordon.yml`,
//!   protected paths, webhook judgement, flow 1 (kept tests as a draft pull request,
//!   promoted only on a green sandbox run) and flow 2, the builder (`cordon build`: an issue
//!   becomes code and tests, refined in the sandbox, a pull request promoted only on green).
//!   Above `pipeline` and `server`, below `cli`.
//! - [`cli`]: the `cordon` command line, a thin consumer of the above.

pub mod cli;
pub(crate) mod envcache;
pub mod error;
pub mod event;
pub mod github;
pub mod image;
pub mod pipeline;
pub mod pool;
pub mod report;
pub mod retry;
pub mod runner;
pub mod sandbox;
pub mod server;
pub mod spec;
pub mod state;
