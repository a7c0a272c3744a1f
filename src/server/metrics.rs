//! Prometheus text exposition of the service's counters, gauges and histograms.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds (seconds) of the duration histograms' buckets.
const BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let c = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    submitted: u64,
    rejected: BTreeMap<&'static str, u64>,
    finished: BTreeMap<String, u64>,
    job_duration: Histogram,
    queue_wait: Histogram,
    takeovers: u64,
    retries: u64,
    fenced: u64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn submitted(&self) {
        self.lock().submitted += 1;
    }

    /// A job whose controller stopped renewing its lease was taken over by this one.
    pub fn took_over(&self) {
        self.lock().takeovers += 1;
    }

    /// A job taken over was queued to run again.
    pub fn retried(&self) {
        self.lock().retries += 1;
    }

    /// This controller lost a job it was running (its lease was taken over).
    pub fn fenced(&self) {
        self.lock().fenced += 1;
    }

    /// Who this controller is and what it holds: `cordon_controller_info{controller, store}`,
    /// leases held, takeovers, retries, jobs lost to another controller.
    pub fn render_controller(
        &self,
        out: &mut String,
        controller: &str,
        store: &str,
        leases: usize,
    ) {
        let m = self.lock();
        // Both are operator-chosen, but a label value must not break the format.
        let esc = |v: &str| {
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let _ = writeln!(
            out,
            "# HELP cordon_controller_info This controller's id and job store.\n# TYPE cordon_controller_info gauge\ncordon_controller_info{{controller=\"{}\",store=\"{}\"}} 1",
            esc(controller),
            esc(store)
        );
        let _ = writeln!(
            out,
            "# HELP cordon_leases_held Running jobs whose lease this controller holds.\n# TYPE cordon_leases_held gauge\ncordon_leases_held {leases}"
        );
        let _ = writeln!(
            out,
            "# HELP cordon_takeovers_total Jobs this controller took over from a controller that stopped renewing its lease.\n# TYPE cordon_takeovers_total counter\ncordon_takeovers_total {}",
            m.takeovers
        );
        let _ = writeln!(
            out,
            "# HELP cordon_job_retries_total Jobs taken over and queued to run again.\n# TYPE cordon_job_retries_total counter\ncordon_job_retries_total {}",
            m.retries
        );
        let _ = writeln!(
            out,
            "# HELP cordon_jobs_lost_total Jobs this controller stopped running because another took them over.\n# TYPE cordon_jobs_lost_total counter\ncordon_jobs_lost_total {}",
            m.fenced
        );
    }

    pub fn rejected(&self, reason: &'static str) {
        *self.lock().rejected.entry(reason).or_default() += 1;
    }

    pub fn started(&self, queue_wait_secs: f64) {
        self.lock().queue_wait.observe(queue_wait_secs);
    }

    pub fn finished(&self, outcome: &str, duration_secs: Option<f64>) {
        let mut m = self.lock();
        *m.finished.entry(outcome.to_string()).or_default() += 1;
        if let Some(d) = duration_secs {
            m.job_duration.observe(d);
        }
    }

    /// Mean run time of finished jobs, for a `Retry-After` estimate.
    pub fn mean_job_secs(&self) -> Option<f64> {
        let m = self.lock();
        (m.job_duration.count > 0).then(|| m.job_duration.sum / m.job_duration.count as f64)
    }

    /// `pool`: the warm pool's sandboxes across keys, if the service has a pool.
    pub fn render(
        &self,
        queued: usize,
        running: usize,
        concurrency: usize,
        pool: Option<crate::pool::PoolStats>,
    ) -> String {
        let m = self.lock();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP cordon_jobs_submitted_total Jobs accepted into the queue.\n# TYPE cordon_jobs_submitted_total counter\ncordon_jobs_submitted_total {}",
            m.submitted
        );
        let _ = writeln!(
            out,
            "# HELP cordon_jobs_rejected_total Submissions refused, by reason.\n# TYPE cordon_jobs_rejected_total counter"
        );
        for (reason, n) in &m.rejected {
            let _ = writeln!(out, "cordon_jobs_rejected_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP cordon_jobs_finished_total Jobs finished, by outcome.\n# TYPE cordon_jobs_finished_total counter"
        );
        for (outcome, n) in &m.finished {
            let _ = writeln!(
                out,
                "cordon_jobs_finished_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP cordon_queue_depth Jobs waiting to run.\n# TYPE cordon_queue_depth gauge\ncordon_queue_depth {queued}"
        );
        let _ = writeln!(
            out,
            "# HELP cordon_jobs_running Jobs running now.\n# TYPE cordon_jobs_running gauge\ncordon_jobs_running {running}"
        );
        let _ = writeln!(
            out,
            "# HELP cordon_concurrency_limit Jobs allowed to run at once.\n# TYPE cordon_concurrency_limit gauge\ncordon_concurrency_limit {concurrency}"
        );
        if let Some(pool) = pool {
            let _ = writeln!(
                out,
                "# HELP cordon_warm_sandboxes Warm pool sandboxes across keys: ready for a job, or being made (and prewarmed).
# TYPE cordon_warm_sandboxes gauge
cordon_warm_sandboxes{{state=\"ready\"}} {}
cordon_warm_sandboxes{{state=\"making\"}} {}",
                pool.ready, pool.filling
            );
        }
        m.job_duration.render(
            &mut out,
            "cordon_job_duration_seconds",
            "Wall time of a job from start to result.",
        );
        m.queue_wait.render(
            &mut out,
            "cordon_queue_wait_seconds",
            "Time a job waited in the queue before it started.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.submitted();
        m.started(0.3);
        m.finished("passed", Some(1.5));
        m.rejected("queue_full");
        let text = m.render(
            4,
            2,
            2,
            Some(crate::pool::PoolStats {
                ready: 1,
                filling: 2,
            }),
        );
        assert!(text.contains("cordon_warm_sandboxes{state=\"ready\"} 1"));
        assert!(text.contains("cordon_warm_sandboxes{state=\"making\"} 2"));
        assert!(!m.render(0, 0, 1, None).contains("cordon_warm_sandboxes"));
        assert!(text.contains("cordon_jobs_finished_total{outcome=\"passed\"} 1"));
        assert!(text.contains("cordon_queue_depth 4"));
        assert!(text.contains("cordon_jobs_running 2"));
        assert!(text.contains("cordon_queue_wait_seconds_bucket{le=\"0.5\"} 1"));
        assert!(text.contains("cordon_job_duration_seconds_bucket{le=\"1\"} 0"));
        assert!(text.contains("cordon_job_duration_seconds_count 1"));
        assert!(text.contains("cordon_jobs_rejected_total{reason=\"queue_full\"} 1"));
    }
}
