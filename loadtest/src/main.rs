//! `loadtest`: a load generator for the Open Inference Protocol (KServe V2) HTTP and gRPC APIs.
//!
//! This file owns start-up: parse the command line, build the (small) tokio runtime, prepare
//! the payload (from the model's metadata or a file), run, print the report; or, for
//! `loadtest replay`, replay captured traffic and print its report. Everything else is
//! in the library (`lib.rs` lists the modules), which the reliability tools reuse.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use loadtest::cli::{Args, ReplayArgs};
use loadtest::payload::{self, ModelMeta, Payload};
use loadtest::report::{Report, Setup};
use loadtest::target::Target;
use loadtest::{client, grpc, replay, request, run};

fn main() -> ExitCode {
    let mut raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if raw.get(1).is_some_and(|a| a == "replay") {
        raw.remove(1);
        return replay_main(ReplayArgs::parse_from(raw));
    }
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("loadtest: {e}");
        return ExitCode::from(2);
    }
    let runtime = match build_runtime(args.threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `loadtest replay`: the report, and an exit status scripts can gate on.
fn replay_main(args: ReplayArgs) -> ExitCode {
    if let Err(e) = args.validate() {
        eprintln!("loadtest replay: {e}");
        return ExitCode::from(2);
    }
    let runtime = match build_runtime(2) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest replay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match runtime.block_on(replay::replay(args.plan())) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("loadtest replay: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.requests == 0 {
        eprintln!("loadtest replay: no record to replay in {}", report.source);
        return ExitCode::FAILURE;
    }
    if report.errors > 0 {
        eprintln!("loadtest replay: {} of {} requests failed", report.errors, report.requests);
        return ExitCode::FAILURE;
    }
    match args.min_agreement {
        Some(min) if report.agreement_percent < min => {
            eprintln!("loadtest replay: agreement {:.2}% is below {min}%", report.agreement_percent);
            ExitCode::from(3)
        }
        _ => ExitCode::SUCCESS,
    }
}

fn build_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    }
}

async fn app(args: Args) -> Result<(), String> {
    let target = Target::resolve(&args.url).await?;
    let payload = prepare_payload(&args, &target).await?;
    // gRPC is HTTP/2; the version pin travels in the message.
    let http2 = args.http2 || args.grpc;
    let path =
        if args.grpc { grpc::INFER_PATH.to_string() } else { target.infer_path(&args.model, args.version) };
    let uri = target.uri(&path, http2)?;
    let sticky = args.sticky_header.as_deref().map(|h| (h, args.users));
    let template = request::Template::new(uri, &target.authority, http2, &payload, &args.headers, sticky)?;
    let plan = run::Plan {
        addr: target.addr,
        http2,
        grpc: args.grpc,
        h2_connections: args.h2_connections,
        connections: args.connections,
        template,
        timeout: args.timeout,
        seed: args.seed,
        rate: args.rate,
        warmup: args.warmup,
        measure_for: args.measure_for(),
        requests: args.requests,
        max_backlog: args.max_backlog,
        progress: args.progress(),
        threads: args.threads,
    };
    let finished = run::run(Arc::new(plan)).await?;
    let report = Report::new(setup(&args, &payload), &finished.stats, finished.elapsed, finished.open_loop);
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

fn setup(args: &Args, payload: &Payload) -> Setup {
    Setup {
        url: args.url.clone(),
        model: match args.version {
            Some(v) => format!("{} v{v}", args.model),
            None => args.model.clone(),
        },
        mode: if args.rate.is_some() { "open" } else { "closed" },
        connections: args.connections,
        batch_rows: payload.rows,
        encoding: match (args.grpc, args.grpc_typed, payload.json_length) {
            (true, true, _) => "typed",
            (true, false, _) => "raw",
            (false, _, Some(_)) => "binary",
            (false, _, None) => "JSON",
        },
        protocol: match (args.grpc, args.http2) {
            (true, _) => "gRPC",
            (false, true) => "HTTP/2",
            (false, false) => "HTTP/1.1",
        },
    }
}

/// The body to send: the `--payload` file, or random inputs generated from the metadata.
async fn prepare_payload(args: &Args, target: &Target) -> Result<Payload, String> {
    if args.grpc {
        let tensors = match &args.payload {
            Some(path) => {
                let text = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
                let value: serde_json::Value = serde_json::from_slice(&text)
                    .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
                payload::tensors_from_request(&value)?
            }
            None => payload::generate(
                &grpc::metadata(&args.url, &args.model, args.version).await?,
                args.batch,
                args.seed,
            )?,
        };
        return grpc::encode(&tensors, &args.model, args.version, args.grpc_typed);
    }
    if let Some(path) = &args.payload {
        let text = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        return payload_from_file(&text, args.binary).map_err(|e| format!("{}: {e}", path.display()));
    }
    let path = target.metadata_path(&args.model, args.version);
    let (status, body) = client::get(target.addr, &target.authority, &path).await?;
    if status != 200 {
        let text = client::error_text(http::StatusCode::from_u16(status).unwrap_or_default(), &body);
        return Err(format!("GET {path}: {status} {text}"));
    }
    let meta: ModelMeta =
        serde_json::from_slice(&body).map_err(|e| format!("GET {path}: not model metadata: {e}"))?;
    let tensors = payload::generate(&meta, args.batch, args.seed)?;
    payload::encode(&tensors, args.binary)
}

/// A JSON request file: sent as it is, or re-encoded with binary data for `--binary`.
fn payload_from_file(text: &[u8], binary: bool) -> Result<Payload, String> {
    let value: serde_json::Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    let tensors = payload::tensors_from_request(&value)?;
    if binary {
        return payload::encode_binary(&tensors);
    }
    Ok(Payload {
        body: bytes::Bytes::copy_from_slice(text),
        json_length: None,
        rows: payload::rows_of(&tensors),
        grpc: false,
    })
}
