//! Starting and stopping a whole gateway: load the models, bind the listeners (data, admin,
//! and gRPC when `server.grpc_listen` is set), serve until told to stop, then drain
//! (connections first, then mirrored shadow requests, then the capture files, then the trace
//! spans still buffered).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{AdminPlane, admin_service};
use crate::admission::Admission;
use crate::audit::{Actor, Cause, History};
use crate::capture::Capture;
use crate::config::GatewayConfig;
use crate::fleet::Fleet;
use crate::grpc::{self, GrpcPlane};
use crate::http::tls::{TlsError, exposed_in_plain_text};
use crate::http::{self, ConnectionLimits, ConnectionSlots, DataPlane, Tls};
use crate::inference::Inference;
use crate::monitor::{Monitor, run_fleet, run_rollouts};
use crate::onnx::{self, OnnxError};
use crate::registry::{self, OnFailure, Registry};
use crate::reload::{
    ConfigSource, ControlMode, Reloader, Repository, poll_registries, poll_repository, watch_file,
};
use crate::shadow::Shadows;
use crate::telemetry;
use crate::tenants::FrontDoor;
use crate::trace::Tracer;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Runtime(#[from] OnnxError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("fleet: {0}")]
    Fleet(#[from] crate::fleet::FleetError),
    #[error("server.tls: {0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Audit(String),
    #[error("start-up was interrupted: {0}")]
    Interrupted(String),
    #[error("tracing: {0}")]
    Tracing(String),
}

/// A running gateway. Dropping it does not stop it: call `shutdown`, then `wait`.
pub struct Gateway {
    pub data_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Where gRPC is served, when `server.grpc_listen` is set.
    pub grpc_addr: Option<SocketAddr>,
    pub registry: Arc<Registry>,
    pub reloader: Arc<Reloader>,
    pub monitor: Arc<Monitor>,
    /// Sampled request capture (`[models.X.capture]`).
    pub capture: Arc<Capture>,
    /// Request traces (`[tracing]`); started with the gateway, flushed by `wait`.
    pub tracer: Arc<Tracer>,
    inference: Arc<Inference>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Starts with a config built in code (nothing to reload from).
    pub async fn start(config: GatewayConfig) -> Result<Gateway, StartError> {
        Gateway::start_with(config, ConfigSource::Fixed, false).await
    }

    /// Loads every configured model (one that fails is reported and marked not ready; the
    /// others serve), binds and serves the data and admin planes, and watches the config file
    /// when `watch` is set and the source is a file.
    pub async fn start_with(
        config: GatewayConfig,
        source: ConfigSource,
        watch: bool,
    ) -> Result<Gateway, StartError> {
        let metrics = telemetry::install();
        telemetry::register_reloads();
        telemetry::in_flight_limit(config.server.max_in_flight);
        // Before the models load: a certificate that does not load stops the start at once.
        let tls = config.server.tls.as_ref().map(Tls::load).transpose()?;
        onnx::environment()?;
        let config = Arc::new(config);
        let prepare_config = config.clone();
        let history = History::open(&config.audit).map_err(|e| StartError::Audit(e.to_string()))?;
        // Generations go on from the history's, so one number names one routing for good.
        let generation = history.last_generation() + 1;
        let first = tokio::task::spawn_blocking(move || {
            registry::prepare(prepare_config, None, generation, OnFailure::ServeOthers, &Default::default())
        })
        .await
        .map_err(|e| StartError::Interrupted(e.to_string()))?
        .map_err(|problems| StartError::Interrupted(format!("{} problems", problems.len())))?;
        let started = Cause::new("start", "gateway started", Actor::Gateway);
        let registry = Arc::new(Registry::new(first, history, started));
        let mut reloader = Reloader::new(registry.clone(), source.clone());
        if let Some(tls) = &tls {
            let tls = tls.clone();
            reloader = reloader.after_reload(Box::new(move || drop(tls.reload())));
        }
        let reloader = Arc::new(reloader);
        let monitor = Arc::new(Monitor::default());
        let fleet = config.fleet.as_ref().map(Fleet::new).transpose()?;
        if let Some(fleet) = &fleet {
            monitor.set_fleet(fleet.clone());
        }
        // Rollouts are in effect (and visible) before the first request.
        monitor.sync_rollouts(&registry);
        if let Some(fleet) = &fleet {
            // A fleet's rollout already under way is resumed before serving (bounded: without
            // Redis the replica starts with the config's routing and catches up later).
            let _ = tokio::time::timeout(Duration::from_secs(2), monitor.share_once(&registry, fleet)).await;
        }
        // Capture writers start with the first snapshot (and follow reloads from the request path).
        let capture = Arc::new(Capture::default());
        capture.sync(&registry.snapshot());
        // `[tracing]` is restart-only: the exporter follows the first config for good.
        let tracer = Arc::new(Tracer::start(config.tracing.as_ref()).map_err(StartError::Tracing)?);
        let inference = Arc::new(Inference {
            shadows: Shadows::default(),
            monitor: monitor.clone(),
            capture: capture.clone(),
            tracer: tracer.clone(),
        });

        let server = &config.server;
        let data = bind("data plane", server.listen).await?;
        let admin = bind("admin plane", server.admin_listen).await?;
        let data_addr = local_addr("data plane", server.listen, &data)?;
        let admin_addr = local_addr("admin plane", server.admin_listen, &admin)?;
        let grpc = match server.grpc_listen {
            Some(addr) => Some((bind("gRPC", addr).await?, addr)),
            None => None,
        };
        let grpc_addr = grpc.as_ref().map(|(l, addr)| local_addr("gRPC", *addr, l)).transpose()?;

        let (shutdown, signal) = watch::channel(false);
        let limits = http::connection_limits(server);
        // One in-flight limit for both front ends.
        let admission = Admission::new(server.max_in_flight);
        let control = match &source {
            ConfigSource::Repository { control, .. } => Some(control.clone()),
            _ => None,
        };
        let repository = Arc::new(Repository {
            reloader: reloader.clone(),
            registry: registry.clone(),
            control: control.clone(),
        });
        // Tenants' keys, quotas and priority (`[auth]`), shared by both front ends.
        let door = FrontDoor::new(registry.clone());
        let plane = Arc::new(DataPlane {
            registry: registry.clone(),
            inference: inference.clone(),
            repository: repository.clone(),
            door: door.clone(),
        });
        let admin_plane = Arc::new(AdminPlane {
            registry: registry.clone(),
            reloader: reloader.clone(),
            monitor: monitor.clone(),
            metrics,
            token: config.admin.token.clone(),
        });
        // One connection cap for both data-plane front ends; the admin plane has its own.
        let data_slots = ConnectionSlots::new("data", server.max_connections);
        let admin_slots = ConnectionSlots::new("admin", server.max_connections);
        let mut tasks = vec![
            tokio::spawn(http::serve(
                data,
                http::data_service(plane, admission.clone()),
                limits,
                data_slots.clone(),
                tls.clone(),
                signal.clone(),
            )),
            tokio::spawn(http::serve(
                admin,
                admin_service(admin_plane),
                ConnectionLimits { record_peer: true, ..limits },
                admin_slots,
                // Plain text: loopback, or behind its bearer token (README, Endpoints).
                None,
                signal.clone(),
            )),
            tokio::spawn(run_rollouts(monitor.clone(), registry.clone(), signal.clone())),
        ];
        if let Some(fleet) = &fleet {
            tasks.extend(fleet.spawn(signal.clone()));
            // Tenants' rates count across the fleet.
            tasks.push(door.share_with(fleet.clone(), signal.clone()));
            tasks.push(tokio::spawn(run_fleet(
                monitor.clone(),
                registry.clone(),
                fleet.clone(),
                signal.clone(),
            )));
        }
        if let Some((listener, _)) = grpc {
            let grpc_plane = Arc::new(GrpcPlane {
                registry: registry.clone(),
                inference: inference.clone(),
                max_message_bytes: server.max_request_bytes,
                admission,
                repository,
                door: door.clone(),
            });
            tasks.push(tokio::spawn(grpc::serve(
                listener,
                grpc_plane,
                limits,
                data_slots,
                tls.clone(),
                signal.clone(),
            )));
        }
        if let Some(tls) = &tls {
            tasks.push(tokio::spawn(tls.clone().watch(signal.clone())));
        }
        tasks.push(tokio::spawn(poll_registries(reloader.clone(), registry.clone(), signal.clone())));
        if let Some(control) = control.filter(|c| c.mode == ControlMode::Poll) {
            tasks.push(tokio::spawn(poll_repository(reloader.clone(), control, signal.clone())));
        }
        if let (true, ConfigSource::File { path, .. }) = (watch, &source) {
            // Read now, not when the task first runs: an edit made meanwhile must count.
            let seen = std::fs::read(path).ok();
            tasks.push(tokio::spawn(watch_file(reloader.clone(), path.clone(), seen, signal)));
        }
        for addr in std::iter::once(data_addr).chain(grpc_addr) {
            if exposed_in_plain_text(addr, tls.is_some()) {
                tracing::warn!(%addr, "a data-plane listener reachable from other machines serves plain text; set [server.tls]");
            }
        }
        let grpc_shown = grpc_addr.map_or_else(|| "off".to_string(), |a| a.to_string());
        let models = config.models.len();
        tracing::info!(%data_addr, %admin_addr, grpc_addr = %grpc_shown, models, "gateway serving");
        Ok(Gateway {
            data_addr,
            admin_addr,
            grpc_addr,
            registry,
            reloader,
            monitor,
            capture,
            tracer,
            inference,
            shutdown,
            tasks,
        })
    }

    /// Stops accepting connections and lets in-flight requests finish (up to the drain timeout).
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until the listeners have drained and mirrored requests have finished, then until
    /// the capture files are finished and the buffered trace spans exported (each within the
    /// drain timeout).
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
        let drain = self.registry.snapshot().config.server.drain_timeout;
        if tokio::time::timeout(drain, self.inference.shadows.idle()).await.is_err() {
            tracing::warn!("shadow requests still running at the end of the drain timeout");
        }
        self.capture.close(drain).await;
        self.tracer.close(drain).await;
    }
}

/// Pending connections the kernel may hold for a listener before `accept` (the kernel caps it
/// at `net.core.somaxconn`, 4096 by default). Deeper than tokio's 1024, so a burst of
/// connections (a flood against `max_connections`, say) does not overflow the queue and leave
/// clients half-connected while the accept loop catches up.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    let failed = |source| StartError::Bind { what, addr, source };
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(failed)?;
    socket.set_reuseaddr(true).map_err(failed)?;
    socket.bind(addr).map_err(failed)?;
    socket.listen(LISTEN_BACKLOG).map_err(failed)
}

fn local_addr(what: &'static str, addr: SocketAddr, l: &TcpListener) -> Result<SocketAddr, StartError> {
    l.local_addr().map_err(|source| StartError::Bind { what, addr, source })
}
