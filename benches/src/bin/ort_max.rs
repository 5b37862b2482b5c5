//! `ort_max`: ONNX Runtime's own rows/s for a model, in-process, no HTTP, no queue: the compute
//! limit a serving path is compared with. `--instances` OS threads each own a session with
//! `--threads` intra-op threads and call `OnnxSession::run` (the gateway's run: inputs passed as
//! zero-copy views, outputs copied out) back to back on the same prepared batch.
//!
//! ```text
//! ort_max --model models/dense/1/model.onnx --batch 32 [--threads 1] [--instances 1]
//!         [--duration 3] [--warmup 1] [--json]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use benches::{inputs_for, load_session};
use clap::Parser;

#[derive(Parser)]
#[command(name = "ort_max", about = "ONNX Runtime's in-process rows/s for a model")]
struct Args {
    /// The ONNX file.
    #[arg(long)]
    model: PathBuf,
    /// Rows per run (dimension 0).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Intra-op threads per session.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Sessions, each on its own OS thread.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Seconds run first, not measured.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// One JSON object on stdout instead of a text line.
    #[arg(long)]
    json: bool,
}

/// What one instance did in the measured window.
struct Counted {
    runs: u64,
    busy: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match measure(&args) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ort_max: {e}");
            ExitCode::FAILURE
        }
    }
}

fn measure(args: &Args) -> Result<String, String> {
    let instances = args.instances.max(1);
    let warmup = Duration::from_secs_f64(args.warmup.max(0.0));
    let window = Duration::from_secs_f64(args.duration.max(0.1));
    let barrier = &Barrier::new(instances);
    let results: Vec<Result<Counted, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..instances)
            .map(|i| scope.spawn(move || one_instance(args, i, barrier, warmup, window)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("an instance thread panicked".to_string())))
            .collect()
    });
    let counted = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    let runs: u64 = counted.iter().map(|c| c.runs).sum();
    let busy: Duration = counted.iter().map(|c| c.busy).sum();
    let seconds = window.as_secs_f64();
    let rows_per_s = (runs as f64) * (args.batch as f64) / seconds;
    let run_us = if runs == 0 { 0.0 } else { busy.as_secs_f64() * 1e6 / runs as f64 };
    let model = args.model.display().to_string();
    Ok(if args.json {
        serde_json::json!({
            "model": model, "batch": args.batch, "threads": args.threads, "instances": instances,
            "runs": runs, "seconds": seconds, "runs_per_s": runs as f64 / seconds,
            "rows_per_s": rows_per_s, "run_us": run_us, "us_per_row": run_us / args.batch as f64,
        })
        .to_string()
    } else {
        format!(
            "{model}: batch {} x {instances} instance(s) x {} thread(s): {rows_per_s:.0} rows/s, \
             {:.0} runs/s, {run_us:.1} us per run",
            args.batch,
            args.threads,
            runs as f64 / seconds
        )
    })
}

/// Loads a session, runs it through the warm-up, waits for the others, then counts runs until
/// the window ends.
fn one_instance(
    args: &Args,
    index: usize,
    barrier: &Barrier,
    warmup: Duration,
    window: Duration,
) -> Result<Counted, String> {
    let loaded = load_session(&args.model, args.threads.max(1));
    // Every instance reaches the barrier, even one that failed to load, so none waits forever.
    barrier.wait();
    let mut session = loaded?;
    let inputs = inputs_for(session.signature(), args.batch.max(1), index as u64 + 1);
    let warm_until = Instant::now() + warmup;
    while Instant::now() < warm_until {
        session.run(&inputs).map_err(|e| e.to_string())?;
    }
    let start = Instant::now();
    let mut runs = 0;
    while start.elapsed() < window {
        session.run(&inputs).map_err(|e| e.to_string())?;
        runs += 1;
    }
    Ok(Counted { runs, busy: start.elapsed() })
}
