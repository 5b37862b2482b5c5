//! `soak`: a long mixed run against a running gateway with a reload every second; prints one
//! PASS/FAIL line per check, then the JSON summary (also written to `--json FILE`). Exit 0 when
//! every check passed, 1 when one failed, 2 for bad flags. Start-up only: the run is
//! `reliability::soak`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use reliability::process::Process;
use reliability::soak::{self, SoakOptions};
use reliability::verdict::{Verdict, overall};

/// The gateway under test: `data=ADDR,admin=ADDR,pid=PID`.
#[derive(Debug, Clone, Copy)]
struct Target {
    data: SocketAddr,
    admin: SocketAddr,
    pid: u32,
}

impl FromStr for Target {
    type Err = String;
    fn from_str(text: &str) -> Result<Target, String> {
        let field = |key: &str| {
            text.split(',')
                .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
                .ok_or_else(|| format!("{text:?} lacks {key}="))
        };
        Ok(Target {
            data: field("data")?.parse().map_err(|e| format!("data: {e}"))?,
            admin: field("admin")?.parse().map_err(|e| format!("admin: {e}"))?,
            pid: field("pid")?.parse().map_err(|e| format!("pid: {e}"))?,
        })
    }
}

#[derive(Debug, Parser)]
#[command(about = "Soak a running gateway: a long mixed run with reloads, watching RSS and every answer")]
struct Args {
    /// The gateway: data=ADDR,admin=ADDR,pid=PID
    #[arg(long)]
    gateway: Target,
    /// Requests to send in all.
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    requests: u64,
    /// Connections (closed loop, one request at a time each).
    #[arg(short = 'c', long, default_value_t = 16)]
    connections: usize,
    /// Of those, how many speak h2c instead of HTTP/1.1.
    #[arg(long, default_value_t = 2)]
    h2_connections: usize,
    /// The config file the gateway serves (rewritten at each reload).
    #[arg(long)]
    live_config: PathBuf,
    /// The two config contents alternated into the live file.
    #[arg(long, num_args = 2, required = true)]
    variants: Vec<PathBuf>,
    /// Seconds between reloads.
    #[arg(long, default_value_t = 1.0)]
    reload_every: f64,
    /// Sample RSS every this many requests.
    #[arg(long, default_value_t = 10_000)]
    rss_every: u64,
    /// The RSS baseline: the first sample at or after this many requests (after the allocators
    /// have settled: see scripts/reliability/soak.sh).
    #[arg(long, default_value_t = 300_000)]
    baseline_at: u64,
    /// Largest accepted final RSS / baseline RSS.
    #[arg(long, default_value_t = 1.2)]
    max_rss_ratio: f64,
    #[arg(long, default_value = "credit-scoring")]
    model: String,
    #[arg(long, default_value = "x-user-id")]
    sticky_header: String,
    #[arg(long, default_value = "x-model-version")]
    pin_header: String,
    /// LOW,HIGH: the candidate percents the variants alternate between; sticky users whose
    /// bucket neither moves must keep their version (v2 below LOW, v1 from HIGH) through every
    /// reload.
    #[arg(long, value_parser = percents)]
    sticky_percents: Option<(f64, f64)>,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the JSON summary here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn percents(text: &str) -> Result<(f64, f64), String> {
    let (low, high) = text.split_once(',').ok_or("expected LOW,HIGH")?;
    let parse = |t: &str| t.trim().parse::<f64>().map_err(|e| format!("{t:?}: {e}"));
    let (low, high) = (parse(low)?, parse(high)?);
    if !(0.0..=high).contains(&low) || high > 100.0 {
        return Err("need 0 <= LOW <= HIGH <= 100".into());
    }
    Ok((low, high))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let [a, b] = match <[PathBuf; 2]>::try_from(args.variants.clone()) {
        Ok(v) => v,
        Err(_) => {
            eprintln!("soak: --variants takes exactly two files");
            return ExitCode::from(2);
        }
    };
    if args.connections == 0 || args.h2_connections > args.connections || args.reload_every <= 0.0 {
        eprintln!("soak: need --connections >= 1, --h2-connections <= --connections, --reload-every > 0");
        return ExitCode::from(2);
    }
    let options = SoakOptions {
        data: args.gateway.data,
        admin: args.gateway.admin,
        process: Process { pid: args.gateway.pid },
        model: args.model,
        requests: args.requests,
        connections: args.connections,
        h2_connections: args.h2_connections,
        live_config: args.live_config,
        variants: [a, b],
        reload_every: Duration::from_secs_f64(args.reload_every),
        rss_every: args.rss_every,
        baseline_at: args.baseline_at,
        max_rss_ratio: args.max_rss_ratio,
        sticky_header: args.sticky_header,
        pin_header: args.pin_header,
        sticky_percents: args.sticky_percents,
        timeout: Duration::from_secs_f64(args.timeout),
        seed: args.seed,
    };
    // One async thread: on two cores the other is the gateway's.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soak: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match runtime.block_on(soak::run(options)) {
        Ok(o) => o,
        Err(e) => {
            println!("FAIL soak.ran: {e}");
            return ExitCode::FAILURE;
        }
    };
    let checks = outcome.checks();
    for c in &checks {
        println!("{c}");
    }
    let summary = outcome.to_json(&checks);
    println!("{summary}");
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, format!("{summary:#}\n"))
    {
        eprintln!("soak: writing {}: {e}", path.display());
    }
    match overall(&checks) {
        Verdict::Fail => ExitCode::FAILURE,
        Verdict::Pass | Verdict::Warn => ExitCode::SUCCESS,
    }
}
