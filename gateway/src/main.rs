//! The `gateway` binary: command line, logging, the runtime, signals. Everything else is in
//! the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use gateway::Gateway;
use gateway::audit::{Actor, Cause};
use gateway::config::{self, ConfigError, GatewayConfig, Overrides};
use gateway::registry::{self, OnFailure};
use gateway::reload::{ConfigSource, ControlMode, RepositoryControl};
use gateway::source;

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "Inference gateway: ONNX models over the Open Inference Protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (default: config/gateway.toml, unless --model-repository is given alone).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Serve every model found in DIR (alone), or the repository for models that name none.
    #[arg(long, value_name = "DIR")]
    model_repository: Option<PathBuf>,
    /// With --model-repository alone, as Triton's: none (served as found at start), poll (changes
    /// on disk applied), explicit (models loaded and unloaded through the repository API).
    #[arg(long, value_enum, default_value_t = ControlModeArg::None)]
    model_control_mode: ControlModeArg,
    /// Poll mode: seconds between reads of the repository.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    repository_poll_secs: u64,
    /// Explicit mode: a model to load at start (repeatable; `*` loads every model).
    #[arg(long, value_name = "MODEL")]
    load_model: Vec<String>,
    /// Data-plane address (overrides server.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Admin and metrics address (overrides server.admin_listen).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// gRPC address (overrides server.grpc_listen).
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<String>,
    /// Do not reload when the config file changes (SIGHUP and the admin API still do).
    #[arg(long)]
    no_watch: bool,
    /// Log line format on stderr; the level filter comes from RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file, print the effective routing; exit 0 when valid, 1 otherwise.
    CheckConfig {
        file: PathBuf,
        /// Also load every model version the config names.
        #[arg(long)]
        load_models: bool,
    },
    /// Print the SHA-256 of an API key for the keys file (`key_sha256`). Without KEY it is read
    /// from standard input (one line), which keeps it out of the shell's history and `ps`.
    HashKey { key: Option<String> },
}

#[derive(Clone, Copy, ValueEnum)]
enum ControlModeArg {
    None,
    Poll,
    Explicit,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let overrides = Overrides {
        listen: cli.listen.clone(),
        admin_listen: cli.admin_listen.clone(),
        grpc_listen: cli.grpc_listen.clone(),
        model_repository: cli.model_repository.clone(),
    };
    match &cli.command {
        Some(Command::CheckConfig { file, load_models }) => check_config(file, &overrides, *load_models),
        Some(Command::HashKey { key }) => hash_key(key.as_deref()),
        None => serve(&cli, &overrides),
    }
}

/// `gateway hash-key`: one line of standard input → its hex SHA-256.
fn hash_key(key: Option<&str>) -> ExitCode {
    let mut line = key.unwrap_or_default().to_string();
    if (key.is_none() && std::io::stdin().read_line(&mut line).is_err()) || line.trim().is_empty() {
        eprintln!(
            "gateway hash-key: give the key on standard input, e.g. `printf %s \"$KEY\" | gateway hash-key`"
        );
        return ExitCode::FAILURE;
    }
    println!("{}", config::hash_key(line.trim()));
    ExitCode::SUCCESS
}

/// What is logged without `RUST_LOG`.
const DEFAULT_LOG_FILTER: &str = "info,h2=error";

fn init_logging(format: LogFormat) {
    // The HTTP/2 library warns once per connection a peer misbehaves on (a rapid-reset flood,
    // say): a hostile client must not be able to flood the log, so by default only its errors.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The config, and where a reload re-reads it from.
fn load_config(cli: &Cli, overrides: &Overrides) -> Result<(GatewayConfig, ConfigSource), ConfigError> {
    let overrides = overrides.clone();
    let (config, source) = match (&cli.config, &cli.model_repository) {
        (None, Some(dir)) => {
            let mode = match cli.model_control_mode {
                ControlModeArg::None => ControlMode::None,
                ControlModeArg::Poll => ControlMode::Poll,
                ControlModeArg::Explicit => ControlMode::Explicit,
            };
            let poll = Duration::from_secs(cli.repository_poll_secs.max(1));
            let control = RepositoryControl::new(dir.clone(), mode, poll, &cli.load_model);
            let config = source::repository_config(dir, &overrides, control.selection().as_ref())?;
            (config, ConfigSource::Repository { control, overrides })
        }
        (path, _) => {
            let path = path.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG_PATH));
            (load_file(&path, &overrides)?, ConfigSource::File { path, overrides })
        }
    };
    Ok((config, source))
}

fn serve(cli: &Cli, overrides: &Overrides) -> ExitCode {
    let (config, source) = match load_config(cli, overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(io_threads(config.runtime.io_threads));
    let runtime = match builder.enable_all().thread_name("gateway-io").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let gateway = match Gateway::start_with(config, source, !cli.no_watch).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        wait_for_signals(&gateway).await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        gateway.shutdown();
        gateway.wait().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// The async threads: as configured, or half the cores (at least one) so the model worker
/// threads keep the other half. On 2 cores one async thread serves as many requests as two with
/// lower tail latency (measured in benches/README.md), because it stops fighting the model
/// thread for a core.
fn io_threads(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    cores.div_ceil(2).max(1)
}

/// Reloads on SIGHUP; returns on SIGTERM or SIGINT.
async fn wait_for_signals(gateway: &Gateway) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        tracing::warn!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                let actor = Actor::Signal { signal: "SIGHUP".to_string() };
                let _ = gateway.reloader.reload(Cause::new("reload", "SIGHUP", actor)).await;
            }
        }
    }
}

/// A config file, its registry aliases resolved (`source::load_file`), before the serving runtime
/// exists (its size comes from the config): on a small runtime of its own.
fn load_file(path: &Path, overrides: &Overrides) -> Result<GatewayConfig, ConfigError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ConfigError::from(config::Problem::new("", format!("cannot start a runtime: {e}"))))?;
    runtime.block_on(source::load_file(path, overrides))
}

fn check_config(file: &Path, overrides: &Overrides, load_models: bool) -> ExitCode {
    let config = match load_file(file, overrides) {
        Ok(c) => c,
        Err(e) => {
            println!("{e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", config.describe_routing());
    if load_models {
        let config = Arc::new(config);
        match registry::prepare(config, None, 1, OnFailure::RefuseAll, &Default::default()) {
            Ok(snapshot) => {
                for m in snapshot.models.values() {
                    for v in m.versions.values() {
                        println!(
                            "{} v{}: inputs {:?} outputs {:?}",
                            m.name, v.version, v.signature.inputs, v.signature.outputs
                        );
                        // The validation gate's figures: CI logs show what a version achieved.
                        if let Some(verdict) = v.verdict.last() {
                            let outcome = if verdict.passed { "passed" } else { "failed" };
                            println!("{} v{}: validation {outcome}: {}", m.name, v.version, verdict.figures);
                        }
                    }
                }
            }
            Err(problems) => {
                println!("{}", ConfigError { problems });
                return ExitCode::FAILURE;
            }
        }
    }
    println!("ok: {} is valid", file.display());
    ExitCode::SUCCESS
}
