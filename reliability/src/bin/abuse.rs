//! `abuse`: attacks two running gateways (see `reliability::abuse`) while a well-behaved client
//! measures them; prints one PASS/WARN/FAIL line per check, a p99 table, then the JSON summary
//! (also written to `--json FILE`). Exit 0 when no check failed (latency misses are WARN unless
//! `--strict`), 1 otherwise, 2 for bad flags. Start-up only.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use reliability::abuse::{self, AbuseOptions, Gateway, SCENARIOS};
use reliability::verdict::{Check, Verdict, overall};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Attack running gateways and measure a well-behaved client against its unloaded baseline")]
struct Args {
    /// The gateway with the connection limit: data=ADDR,admin=ADDR,grpc=ADDR,pid=PID
    #[arg(long)]
    limits: Gateway,
    /// The gateway with short header-read and idle timeouts: data=...,admin=...,grpc=...,pid=...
    #[arg(long)]
    timeouts: Gateway,
    /// `server.max_connections` of the limits gateway.
    #[arg(long, default_value_t = 1000)]
    max_connections: usize,
    /// `server.header_read_timeout_ms` of the timeouts gateway.
    #[arg(long, default_value_t = 1500)]
    header_read_timeout_ms: u64,
    /// `server.idle_timeout_ms` of the timeouts gateway.
    #[arg(long, default_value_t = 2000)]
    idle_timeout_ms: u64,
    /// Make the p99 ratio a functional check (FAIL instead of WARN).
    #[arg(long)]
    strict: bool,
    /// The p99 ratio target (attacked / unloaded).
    #[arg(long, default_value_t = 3.0)]
    max_p99_ratio: f64,
    /// The well-behaved client's connections.
    #[arg(long, default_value_t = 4)]
    probe_connections: usize,
    /// Seconds of unloaded baseline before each scenario.
    #[arg(long, default_value_t = 3.0)]
    baseline: f64,
    /// Seconds the well-behaved client is measured during each attack.
    #[arg(long, default_value_t = 4.0)]
    measure: f64,
    #[arg(long, default_value_t = 10_000)]
    flood_connections: usize,
    #[arg(long, default_value_t = 400)]
    slowloris_connections: usize,
    #[arg(long, default_value_t = 1_000_000)]
    max_resets: u64,
    #[arg(long, default_value_t = 2_000_000)]
    max_stream_messages: u64,
    /// Run only these scenarios (comma-separated): idle, slowloris, flood, rapid_reset, grpc_stream.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also write the JSON summary here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(bad) = args.only.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
        eprintln!("abuse: unknown scenario {bad:?}; known: {}", SCENARIOS.join(", "));
        return ExitCode::from(2);
    }
    if args.probe_connections == 0 || args.baseline <= 0.0 || args.measure <= 0.0 {
        eprintln!("abuse: need --probe-connections >= 1, --baseline > 0, --measure > 0");
        return ExitCode::from(2);
    }
    let options = AbuseOptions {
        limits: args.limits,
        timeouts: args.timeouts,
        max_connections: args.max_connections,
        header_read_timeout: Duration::from_millis(args.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        strict: args.strict,
        max_p99_ratio: args.max_p99_ratio,
        probe_connections: args.probe_connections,
        baseline: Duration::from_secs_f64(args.baseline),
        measure: Duration::from_secs_f64(args.measure),
        flood_connections: args.flood_connections,
        slowloris_connections: args.slowloris_connections,
        max_resets: args.max_resets,
        max_stream_messages: args.max_stream_messages,
    };
    // The attacks share one async thread; the probe runs on a thread of its own.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("abuse: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reports = runtime.block_on(async {
        abuse::preflight(&options).await?;
        Ok::<_, String>(abuse::run(&options, &args.only).await)
    });
    let reports = match reports {
        Ok(r) => r,
        Err(e) => {
            println!("FAIL abuse.ran: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("scenario      unloaded p50/p99 us    attacked p50/p99 us    p99 ratio");
    for r in &reports {
        if let (Some(b), Some(a), Some(ratio)) = (&r.baseline, &r.attacked, r.p99_ratio()) {
            println!(
                "{:<13} {:>8} / {:<10}    {:>8} / {:<10}    {ratio:.2}x",
                r.name, b.p50_us, b.p99_us, a.p50_us, a.p99_us
            );
        }
    }
    let checks: Vec<Check> = reports.iter().flat_map(|r| r.checks.iter().cloned()).collect();
    let verdict = overall(&checks);
    let summary = json!({
        "tool": "abuse",
        "verdict": verdict.to_string(),
        "strict": args.strict,
        "max_connections": args.max_connections,
        "header_read_timeout_ms": args.header_read_timeout_ms,
        "idle_timeout_ms": args.idle_timeout_ms,
        "scenarios": reports.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
    });
    println!("{summary}");
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, format!("{summary:#}\n"))
    {
        eprintln!("abuse: writing {}: {e}", path.display());
    }
    match verdict {
        Verdict::Fail => ExitCode::FAILURE,
        Verdict::Pass | Verdict::Warn => ExitCode::SUCCESS,
    }
}
