//! The soak: a long mixed run against one gateway with a reload every second, watching its
//! memory. Owns the run's wiring (workers, the reloader, the RSS sampler), the checks and the
//! JSON summary; the mix and its expectations are in [`mix`], one connection's loop in
//! [`worker`].
//!
//! Checks: final RSS ≤ `max_rss_ratio` × RSS after the first `baseline_at` requests; no answer
//! outside the expected ones (a 5xx or a transport error is always a failure, and failures close
//! to a reload are counted apart); every reload applied; the mix exercised what it should
//! (pins on every version, candidate answers, shadow copies and none failed, 404 and 409
//! labels).

pub mod mix;
pub mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use http::header::HeaderName;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::admin::{self, Metrics};
use crate::process::Process;
use crate::verdict::{Check, mib, ratio};
use mix::{Bodies, REPEATED_IDS};
use worker::{Context, Tally};

/// What the soak runs against and how long.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub data: SocketAddr,
    pub admin: SocketAddr,
    pub process: Process,
    pub model: String,
    pub requests: u64,
    pub connections: usize,
    /// Of `connections`, how many speak h2c instead of HTTP/1.1.
    pub h2_connections: usize,
    /// The file the gateway was started on, and the two contents alternated into it.
    pub live_config: PathBuf,
    pub variants: [PathBuf; 2],
    pub reload_every: Duration,
    pub rss_every: u64,
    pub baseline_at: u64,
    pub max_rss_ratio: f64,
    pub sticky_header: String,
    pub pin_header: String,
    /// The candidate percents the variants alternate between (low, high): sticky users outside
    /// the moving range must keep their version through every reload.
    pub sticky_percents: Option<(f64, f64)>,
    pub timeout: Duration,
    pub seed: u64,
}

/// One RSS sample.
#[derive(Debug, Clone, Copy)]
pub struct RssSample {
    pub requests: u64,
    pub at: Duration,
    pub kib: u64,
}

/// What the reloader did.
#[derive(Debug, Clone, Default)]
pub struct Reloads {
    pub applied: u64,
    pub refused: Vec<String>,
    /// When each reload was asked for and when it was answered (since the start).
    pub windows: Vec<(Duration, Duration)>,
}

/// Everything the soak measured.
#[derive(Debug)]
pub struct SoakOutcome {
    pub options: SoakOptions,
    pub elapsed: Duration,
    pub tally: Tally,
    pub rss: Vec<RssSample>,
    pub reloads: Reloads,
    pub before: Metrics,
    pub after: Metrics,
    /// The gateway's CPU time over the run.
    pub gateway_cpu: Option<Duration>,
}

/// Runs the whole soak.
pub async fn run(options: SoakOptions) -> Result<SoakOutcome, String> {
    let bodies = bodies(options.data, &options.model).await?;
    warm_repeated_ids(&options, &bodies).await?;
    let before = admin::metrics(options.admin).await?;
    let cpu_before = options.process.cpu_time().ok();
    let header = |name: &str| HeaderName::try_from(name).map_err(|e| format!("header {name:?}: {e}"));
    let ctx = Arc::new(Context {
        addr: options.data,
        model: options.model.clone(),
        bodies,
        sticky_header: header(&options.sticky_header)?,
        pin_header: header(&options.pin_header)?,
        timeout: options.timeout,
        sticky_percents: options.sticky_percents,
        seed: options.seed,
        start: Instant::now(),
        remaining: AtomicU64::new(options.requests),
        done: AtomicU64::new(0),
    });
    // Turns true when the workers are done: the helpers stop at once, whatever they wait for.
    let (finish, finished) = watch::channel(false);
    let sampler = tokio::spawn(sample_rss(ctx.clone(), options.clone(), finished.clone()));
    let reloader = tokio::spawn(reload_loop(ctx.clone(), options.clone(), finished.clone()));
    let progress = tokio::spawn(progress(ctx.clone(), options.requests, finished));
    let workers: Vec<_> = (0..options.connections)
        .map(|i| tokio::spawn(worker::run(i as u64, i < options.h2_connections, ctx.clone())))
        .collect();
    let mut tally = Tally::new()?;
    for w in workers {
        tally.merge(w.await.map_err(|e| format!("a worker failed: {e}"))??)?;
    }
    let elapsed = ctx.start.elapsed();
    let gateway_cpu = cpu_before.zip(options.process.cpu_time().ok()).map(|(a, b)| b.saturating_sub(a));
    let _ = finish.send(true);
    let rss = sampler.await.map_err(|e| format!("the RSS sampler failed: {e}"))??;
    let reloads = reloader.await.map_err(|e| format!("the reloader failed: {e}"))?;
    let _ = progress.await;
    let after = admin::metrics(options.admin).await?;
    Ok(SoakOutcome { options, elapsed, tally, rss, reloads, before, after, gateway_cpu })
}

/// The model's inputs (one random row) rendered once.
async fn bodies(addr: SocketAddr, model: &str) -> Result<Bodies, String> {
    let path = format!("/v2/models/{model}");
    let (status, body) = admin::call(addr, Method::GET, &path, Bytes::new()).await?;
    if status != 200 {
        return Err(format!("GET {path}: status {status}: {}", String::from_utf8_lossy(&body)));
    }
    let meta: loadtest::payload::ModelMeta =
        serde_json::from_slice(&body).map_err(|e| format!("GET {path}: not model metadata: {e}"))?;
    let tensors = loadtest::payload::generate(&meta, 1, 3)?;
    let request: Value = serde_json::from_slice(&loadtest::payload::encode_json(&tensors).body)
        .map_err(|e| format!("encoding the inputs: {e}"))?;
    Ok(Bodies::new(request["inputs"].to_string()))
}

/// One prediction under each repeated id, so their labels never meet an empty store.
async fn warm_repeated_ids(o: &SoakOptions, bodies: &Bodies) -> Result<(), String> {
    let path = format!("/v2/models/{}/infer", o.model);
    for n in 0..REPEATED_IDS {
        let body = Bytes::from(bodies.infer(Some(&mix::repeated_id(n))));
        let (status, answer) = admin::call(o.data, Method::POST, &path, body).await?;
        if status != 200 {
            return Err(format!("POST {path}: status {status}: {}", String::from_utf8_lossy(&answer)));
        }
    }
    Ok(())
}

/// RSS at the start, every `rss_every` requests, and at the end.
async fn sample_rss(
    ctx: Arc<Context>,
    o: SoakOptions,
    finished: watch::Receiver<bool>,
) -> Result<Vec<RssSample>, String> {
    let sample = |requests| -> Result<RssSample, String> {
        Ok(RssSample { requests, at: ctx.start.elapsed(), kib: o.process.rss_kib()? })
    };
    let mut samples = vec![sample(0)?];
    let mut next = o.rss_every.max(1);
    while !*finished.borrow() {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let done = ctx.done.load(Ordering::Relaxed);
        if done >= next {
            samples.push(sample(done)?);
            next = (done / o.rss_every.max(1) + 1) * o.rss_every.max(1);
        }
    }
    // Let in-flight shadows and drains settle before the last sample.
    tokio::time::sleep(Duration::from_millis(500)).await;
    samples.push(sample(ctx.done.load(Ordering::Relaxed))?);
    Ok(samples)
}

/// Every `reload_every`: the other variant's content into the live file (written beside it and
/// renamed, so neither the watcher nor the admin reload reads half a file), then
/// `POST /admin/reload`.
async fn reload_loop(ctx: Arc<Context>, o: SoakOptions, mut finished: watch::Receiver<bool>) -> Reloads {
    let mut reloads = Reloads::default();
    let mut tick = tokio::time::interval(o.reload_every);
    tick.tick().await;
    let mut turn = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = finished.wait_for(|done| *done) => return reloads,
        }
        turn += 1;
        let asked = ctx.start.elapsed();
        let result = match swap_config(&o, turn % 2) {
            Ok(()) => admin::reload(o.admin).await,
            Err(e) => Err(e),
        };
        reloads.windows.push((asked, ctx.start.elapsed()));
        match result {
            Ok(_) => reloads.applied += 1,
            Err(e) => reloads.refused.push(e),
        }
    }
}

fn swap_config(o: &SoakOptions, variant: usize) -> Result<(), String> {
    let from = &o.variants[variant];
    let text = std::fs::read(from).map_err(|e| format!("reading {}: {e}", from.display()))?;
    let staged = o.live_config.with_extension("toml.next");
    std::fs::write(&staged, text).map_err(|e| format!("writing {}: {e}", staged.display()))?;
    std::fs::rename(&staged, &o.live_config)
        .map_err(|e| format!("renaming onto {}: {e}", o.live_config.display()))
}

/// A line on stderr every 10 s.
async fn progress(ctx: Arc<Context>, total: u64, mut finished: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let done = ctx.done.load(Ordering::Relaxed);
                eprintln!("soak: {done} of {total} requests after {:.0} s", ctx.start.elapsed().as_secs_f64());
            }
            _ = finished.wait_for(|done| *done) => return,
        }
    }
}

/// Unexpected answers within `slack` of a reload (asked .. answered).
pub fn near_reloads(failures: &[Duration], windows: &[(Duration, Duration)], slack: Duration) -> usize {
    failures.iter().filter(|&&t| windows.iter().any(|&(a, b)| t + slack >= a && t <= b + slack)).count()
}

fn counter_delta(before: &Metrics, after: &Metrics, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
    Some(after.sum(name, filter)? - before.sum(name, filter).unwrap_or(0.0))
}

impl SoakOutcome {
    /// RSS at the baseline sample (the first at or after `baseline_at` requests) and at the end.
    fn rss_points(&self) -> Option<(RssSample, RssSample)> {
        let baseline = self.rss.iter().find(|s| s.requests >= self.options.baseline_at)?;
        Some((*baseline, *self.rss.last()?))
    }

    fn answers(&self, step: &str, status: u16) -> u64 {
        self.tally.answers.iter().filter(|((_, s, st), _)| *s == step && *st == status).map(|(_, n)| n).sum()
    }

    pub fn checks(&self) -> Vec<Check> {
        vec![
            self.check_volume(),
            self.check_rss(),
            self.check_failures(),
            self.check_reloads(),
            self.check_coverage(),
        ]
    }

    fn sent(&self) -> u64 {
        self.tally.answers.values().sum()
    }

    fn check_volume(&self) -> Check {
        let sent = self.sent();
        let secs = self.elapsed.as_secs_f64();
        Check::functional(
            "soak.requests",
            sent >= self.options.requests,
            format!(
                "{sent} of {} requests in {secs:.1} s ({:.0}/s) over {} connections ({} h2c); latency p50 {} us, p99 {} us, max {} us; gateway CPU {}",
                self.options.requests,
                ratio(sent as f64, secs),
                self.options.connections,
                self.options.h2_connections,
                self.tally.latency_us.value_at_quantile(0.5),
                self.tally.latency_us.value_at_quantile(0.99),
                self.tally.latency_us.max(),
                self.gateway_cpu.map_or("?".into(), |c| format!(
                    "{:.1} s ({:.0}% of a core, {:.1} us per request)",
                    c.as_secs_f64(),
                    ratio(c.as_secs_f64(), secs) * 100.0,
                    ratio(c.as_secs_f64() * 1e6, sent as f64)
                )),
            ),
        )
    }

    fn check_rss(&self) -> Check {
        let Some((base, last)) = self.rss_points() else {
            return Check::broken(
                "soak.rss",
                format!("no RSS sample at or after {} requests", self.options.baseline_at),
            );
        };
        let peak = self.rss.iter().map(|s| s.kib).max().unwrap_or(0);
        let r = ratio(last.kib as f64, base.kib as f64);
        let span = last.requests.saturating_sub(base.requests).max(1);
        let per_100k = (last.kib as f64 - base.kib as f64) / span as f64 * 100_000.0;
        Check::functional(
            "soak.rss",
            r <= self.options.max_rss_ratio,
            format!(
                "{} at start, {} after {} requests, {} at the end ({} requests): {r:.3}x (limit {:.2}x); peak {}; {:+.0} KiB per 100k requests after the baseline",
                mib(self.rss.first().map_or(0, |s| s.kib)),
                mib(base.kib),
                base.requests,
                mib(last.kib),
                last.requests,
                self.options.max_rss_ratio,
                mib(peak),
                per_100k,
            ),
        )
    }

    fn check_failures(&self) -> Check {
        let total = self.tally.unexpected_total();
        let near = near_reloads(&self.tally.failure_times, &self.reloads.windows, Duration::from_millis(250));
        let mut detail = format!("{total} unexpected answers");
        if total > 0 {
            let kinds: Vec<String> =
                self.tally.unexpected.iter().map(|((step, why), n)| format!("{n} x {step} {why}")).collect();
            detail.push_str(&format!(
                " ({}); {near} of the first {} within 250 ms of a reload",
                kinds.join(", "),
                self.tally.failure_times.len()
            ));
            if let Some(e) = self.tally.examples.first() {
                detail.push_str(&format!(
                    "; e.g. at {:.3} s {} {}: {}",
                    e.at.as_secs_f64(),
                    e.step,
                    e.why,
                    e.text
                ));
            }
        } else {
            detail.push_str(" (every non-2xx was an expected 404 or 409)");
        }
        Check::functional("soak.unexpected_failures", total == 0, detail)
    }

    fn check_reloads(&self) -> Check {
        let r = &self.reloads;
        let metric = |outcome| {
            counter_delta(&self.before, &self.after, "gateway_config_reloads_total", &[("outcome", outcome)])
        };
        let expected = (self.elapsed.as_secs_f64() / self.options.reload_every.as_secs_f64()).floor() as u64;
        let ok = r.refused.is_empty() && r.applied + 1 >= expected;
        let mut detail = format!(
            "{} reloads applied by POST /admin/reload ({} refused) in {:.1} s; gateway_config_reloads_total +{} applied, +{} rejected (the file watcher reloads too)",
            r.applied,
            r.refused.len(),
            self.elapsed.as_secs_f64(),
            metric("applied").map_or("?".into(), |v| format!("{v:.0}")),
            metric("rejected").map_or("?".into(), |v| format!("{v:.0}")),
        );
        if let Some(first) = r.refused.first() {
            detail.push_str(&format!("; first refusal: {first}"));
        }
        Check::functional("soak.reloads", ok, detail)
    }

    fn check_coverage(&self) -> Check {
        let shadow_of = |outcome| {
            counter_delta(&self.before, &self.after, "gateway_shadow_requests_total", &[("outcome", outcome)])
                .unwrap_or(0.0)
        };
        let (shadow, dropped, shadow_errors) = (shadow_of("ok"), shadow_of("dropped"), shadow_of("error"));
        let pinned: Vec<String> =
            mix::VERSIONS.iter().map(|v| format!("v{v} {}", self.pinned_answers(*v))).collect();
        let routed: Vec<String> =
            self.tally.routed_versions.iter().map(|(v, n)| format!("v{v} {n}")).collect();
        let (not_found, second, first) = (
            self.answers("label_unknown", 404),
            self.answers("label_second", 409),
            self.answers("label_first", 200),
        );
        let repeated_409 = self.answers("label_repeated", 409);
        let candidate = self.tally.routed_versions.get(&2).copied().unwrap_or(0);
        let ok = shadow > 0.0
            && shadow_errors == 0.0
            && candidate > 0
            && not_found > 0
            && second > 0
            && first > 0
            && mix::VERSIONS.iter().all(|v| self.pinned_answers(*v) > 0);
        Check::functional(
            "soak.coverage",
            ok,
            format!(
                "routed answers {}; pinned {}; shadow copies {shadow:.0} ok, {dropped:.0} dropped (budget), {shadow_errors:.0} failed; labels: {first} joined, {second} second-label 409, {repeated_409} repeated-id 409, {not_found} unknown-id 404",
                routed.join(", "),
                pinned.join(", "),
            ),
        )
    }

    fn pinned_answers(&self, version: u64) -> u64 {
        self.tally.pinned_versions.get(&version).copied().unwrap_or(0)
    }

    pub fn to_json(&self, checks: &[Check]) -> Value {
        let rss: Vec<Value> = self.rss.iter().map(|s| json!([s.requests, s.kib])).collect();
        let answers: serde_json::Map<String, Value> = self
            .tally
            .answers
            .iter()
            .map(|((kind, step, status), n)| (format!("{kind}/{step}/{status}"), json!(n)))
            .collect();
        let unexpected: serde_json::Map<String, Value> = self
            .tally
            .unexpected
            .iter()
            .map(|((step, why), n)| (format!("{step}: {why}"), json!(n)))
            .collect();
        let (base, last) = self.rss_points().map_or((0, 0), |(b, l)| (b.kib, l.kib));
        json!({
            "tool": "soak",
            "verdict": crate::verdict::overall(checks).to_string(),
            "requests": self.sent(),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "gateway_cpu_s": self.gateway_cpu.map(|c| c.as_secs_f64()),
            "connections": self.options.connections,
            "h2_connections": self.options.h2_connections,
            "latency_us": {
                "p50": self.tally.latency_us.value_at_quantile(0.5),
                "p99": self.tally.latency_us.value_at_quantile(0.99),
                "max": self.tally.latency_us.max(),
            },
            "rss_kib": { "baseline_at": self.options.baseline_at, "baseline": base, "final": last, "ratio": ratio(last as f64, base as f64), "samples": rss },
            "reloads": { "applied": self.reloads.applied, "refused": self.reloads.refused.len() },
            "routed_versions": self.tally.routed_versions,
            "answers": answers,
            "unexpected": unexpected,
            "checks": checks.iter().map(Check::to_json).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_near_a_reload_are_counted() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let windows = [(s(1), s(1) + ms(20)), (s(2), s(2) + ms(30))];
        let failures = [s(1) - ms(100), s(1) + ms(10), s(1) + ms(600), s(2) + ms(200), s(5)];
        assert_eq!(near_reloads(&failures, &windows, ms(250)), 3);
        assert_eq!(near_reloads(&failures, &[], ms(250)), 0);
    }
}
