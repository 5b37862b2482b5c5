//! The command line: every flag `loadtest` takes, its defaults, and the small parsers for
//! durations (`10s`, `500ms`, `2m`) and `name:value` headers.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::replay::{Pace, Plan as ReplayPlan};

/// A load generator for the Open Inference Protocol (KServe V2) HTTP and gRPC APIs.
///
/// Closed loop by default (each connection sends its next request when the previous one
/// answers); `--rate` switches to an open loop at a constant arrival rate, with latency measured
/// from each request's intended send time (coordinated omission corrected, as wrk2 does).
///
/// `loadtest replay FILE --target URL` replays captured traffic instead (`loadtest replay --help`).
#[derive(Debug, Clone, Parser)]
#[command(name = "loadtest", disable_version_flag = true)]
pub struct Args {
    /// Base URL of the server (http only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// Model name.
    #[arg(long, short = 'm')]
    pub model: String,

    /// Pin a version: POST /v2/models/{model}/versions/{version}/infer.
    #[arg(long)]
    pub version: Option<u64>,

    /// Concurrent requests (virtual connections).
    #[arg(long, short = 'c', default_value_t = 32)]
    pub connections: usize,

    /// How long to measure, after the warm-up (default 10s unless --requests is given).
    #[arg(long, short = 'd', value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,

    /// Measure this many requests instead of a duration.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,

    /// Open loop: constant arrival rate in requests per second.
    #[arg(long, short = 'r')]
    pub rate: Option<f64>,

    /// Rows per request (dimension 0 when the model's first dimension is dynamic; a --payload
    /// file sets its own).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,

    /// Send inputs and ask for outputs with the binary tensor data extension.
    #[arg(long)]
    pub binary: bool,

    /// A JSON infer request to send instead of a generated one.
    #[arg(long)]
    pub payload: Option<PathBuf>,

    /// Extra request header, `name:value` (repeatable).
    #[arg(long = "header", short = 'H', value_parser = parse_header)]
    pub headers: Vec<(String, String)>,

    /// Header carrying a random user key on each request (e.g. x-user-id).
    #[arg(long)]
    pub sticky_header: Option<String>,

    /// Distinct user keys for --sticky-header.
    #[arg(long, default_value_t = 1000)]
    pub users: u32,

    /// Use HTTP/2 (h2c, prior knowledge) instead of HTTP/1.1.
    #[arg(long)]
    pub http2: bool,

    /// Speak gRPC (`inference.GRPCInferenceService/ModelInfer`, raw tensor contents) to the
    /// gRPC listener at --url; HTTP/2 streams spread over --h2-connections.
    #[arg(long, conflicts_with = "binary")]
    pub grpc: bool,

    /// With --grpc: typed `contents` instead of `raw_input_contents`.
    #[arg(long, requires = "grpc")]
    pub grpc_typed: bool,

    /// TCP connections the HTTP/2 streams are spread over.
    #[arg(long, default_value_t = 1)]
    pub h2_connections: usize,

    /// Run this long before measuring (same load, not recorded).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,

    /// Tokio worker threads for the generator (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Per-request timeout; a timed-out request counts as an error.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,

    /// Open loop: most requests that may wait in the generator for a free connection; the
    /// oldest beyond it are dropped (reported).
    #[arg(long, default_value_t = 100_000)]
    pub max_backlog: u64,

    /// Seed for the generated input values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Print the report as JSON on stdout (no progress line).
    #[arg(long)]
    pub json: bool,

    /// No progress line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl Args {
    /// Checks what clap cannot express; returns a message for the user.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.batch == 0 {
            return Err("--batch must be at least 1".into());
        }
        if self.threads == 0 || self.h2_connections == 0 {
            return Err("--threads and --h2-connections must be at least 1".into());
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(format!("--rate must be a positive number, got {rate}"));
        }
        if self.requests == Some(0) {
            return Err("--requests must be at least 1".into());
        }
        if self.sticky_header.is_some() && self.users == 0 {
            return Err("--users must be at least 1".into());
        }
        Ok(())
    }

    /// The measuring window: `--duration`, or 10 s when neither it nor `--requests` is given.
    pub fn measure_for(&self) -> Option<Duration> {
        match (self.duration, self.requests) {
            (Some(d), _) => Some(d),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs(10)),
        }
    }

    /// Whether the progress line is shown.
    pub fn progress(&self) -> bool {
        !(self.quiet || self.json)
    }
}

/// `loadtest replay`: sends captured requests (the gateway's `[models.X.capture]` files) again to
/// any Open Inference Protocol server, at the recorded pace or scaled, and reports how its
/// answers compare with the captured ones (the gateway's shadow rules) and its latency.
///
/// Exit status: 0 when every request was answered (and agreement is at least
/// --min-agreement), 1 when a request failed or nothing could be replayed, 2 for bad flags, 3
/// when agreement is below --min-agreement.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadtest replay", bin_name = "loadtest replay", disable_version_flag = true)]
pub struct ReplayArgs {
    /// A capture file (`capture-<ms>.jsonl.gz`) or a folder of them, replayed oldest first.
    pub file: PathBuf,

    /// Base URL of the server to replay against (http only).
    #[arg(long)]
    pub target: String,

    /// Pace: `x1` (as recorded), `x2` (twice as fast), `x0.5`, or `max` (as fast as
    /// --connections allow).
    #[arg(long, default_value = "x1", value_parser = parse_pace)]
    pub rate: Pace,

    /// Pin a version: POST /v2/models/{model}/versions/{version}/infer (else the routed path).
    #[arg(long)]
    pub version: Option<u64>,

    /// Requests in flight at most (one HTTP/1.1 connection each).
    #[arg(long, short = 'c', default_value_t = 32)]
    pub connections: usize,

    /// Replay at most this many records.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,

    /// Per-request timeout; a timed-out request is an error.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,

    /// Exit with status 3 when fewer answers than this percentage agree.
    #[arg(long)]
    pub min_agreement: Option<f64>,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

impl ReplayArgs {
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if let Some(p) = self.min_agreement
            && !(0.0..=100.0).contains(&p)
        {
            return Err(format!("--min-agreement must be in 0..=100, got {p}"));
        }
        Ok(())
    }

    pub fn plan(&self) -> ReplayPlan {
        ReplayPlan {
            source: self.file.clone(),
            target: self.target.clone(),
            pace: self.rate,
            version: self.version,
            connections: self.connections,
            timeout: self.timeout,
            limit: self.requests,
        }
    }
}

/// Parses `x2`, `2x`, `2` (a speed-up factor, positive) or `max`.
pub fn parse_pace(text: &str) -> Result<Pace, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("max") {
        return Ok(Pace::Max);
    }
    let number = t.strip_prefix('x').or_else(|| t.strip_suffix('x')).unwrap_or(t);
    match number.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(Pace::Scaled(x)),
        _ => Err(format!("{text:?} is not a pace (x1, x2, x0.5 or max)")),
    }
}

/// Parses `250ms`, `10s`, `2m`, `1h`, `1.5s`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("{text:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Parses `name:value` (spaces around the value trimmed).
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once(':').ok_or_else(|| format!("header {text:?} must be name:value"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("header {text:?} has an empty name"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn paces() {
        assert_eq!(parse_pace("x2").unwrap(), Pace::Scaled(2.0));
        assert_eq!(parse_pace("0.5x").unwrap(), Pace::Scaled(0.5));
        assert_eq!(parse_pace("MAX").unwrap(), Pace::Max);
        assert!(parse_pace("x0").is_err());
        assert!(parse_pace("fast").is_err());
        let a =
            ReplayArgs::try_parse_from(["loadtest replay", "cap/", "--target", "http://h:1", "--rate", "x3"]);
        let a = a.unwrap();
        assert_eq!(a.plan().pace, Pace::Scaled(3.0));
        assert!(ReplayArgs::try_parse_from(["loadtest replay", "cap/"]).is_err());
    }

    #[test]
    fn headers() {
        assert_eq!(parse_header("x-user-id: 42").unwrap(), ("x-user-id".to_string(), "42".to_string()));
        assert!(parse_header("novalue").is_err());
        assert!(parse_header(":v").is_err());
    }

    #[test]
    fn duration_default_and_count() {
        let a = Args::try_parse_from(["loadtest", "--model", "m"]).unwrap();
        assert_eq!(a.measure_for(), Some(Duration::from_secs(10)));
        let a = Args::try_parse_from(["loadtest", "-m", "m", "-n", "5"]).unwrap();
        assert_eq!(a.measure_for(), None);
        assert!(Args::try_parse_from(["loadtest", "-m", "m", "-n", "5", "-d", "1s"]).is_err());
        let a = Args::try_parse_from(["loadtest", "-m", "m", "--rate", "-1"]);
        assert!(a.map(|a| a.validate().is_err()).unwrap_or(true));
    }
}
