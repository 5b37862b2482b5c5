//! Raw config → `GatewayConfig`: defaults filled in and every rule checked, collecting all
//! problems (with their paths) before failing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
const MAX_REQUEST_BYTES_LIMIT: u64 = 1 << 31;

/// Collects problems while building the validated config.
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn addr(&mut self, path: &str, value: Option<&str>, default: &str) -> SocketAddr {
        let text = value.unwrap_or(default);
        text.parse().unwrap_or_else(|_| {
            self.problem(path, format!("must be an ip:port address, got {text:?}"));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    fn range(&mut self, path: &str, value: Option<u64>, default: u64, min: u64, max: u64) -> u64 {
        let v = value.unwrap_or(default);
        if v < min || v > max {
            self.problem(path, format!("must be in {min}..={max}, got {v}"));
            return default;
        }
        v
    }
}

pub(super) fn validate(raw: &RawConfig) -> Result<GatewayConfig, ConfigError> {
    validate_with(raw, false)
}

/// `allow_no_models`: a model repository in explicit control mode starts with none loaded.
pub(super) fn validate_with(raw: &RawConfig, allow_no_models: bool) -> Result<GatewayConfig, ConfigError> {
    let mut c = Checker { problems: Vec::new() };
    let server = server(&mut c, &raw.server);
    let admin = admin(&mut c, &raw.admin, &server);
    let runtime = runtime(&mut c, &raw.runtime);
    let mut models = BTreeMap::new();
    if raw.models.is_empty() && !allow_no_models {
        c.problem("models", "no model is configured");
    }
    for (name, model) in &raw.models {
        if let Some(m) = self::model(&mut c, name, model) {
            models.insert(name.clone(), m);
        }
    }
    let fleet = raw.fleet.as_ref().map(|f| self::fleet(&mut c, f));
    let audit = raw.audit.as_ref().map(|a| self::audit(&mut c, a)).unwrap_or_default();
    let auth = raw.auth.as_ref().and_then(|a| self::auth(&mut c, a));
    let tracing = raw.tracing.as_ref().and_then(|t| self::tracing(&mut c, t));
    if c.problems.is_empty() {
        Ok(GatewayConfig { server, admin, runtime, models, fleet, audit, auth, tracing, text: None })
    } else {
        Err(ConfigError { problems: c.problems })
    }
}

fn server(c: &mut Checker, s: &RawServer) -> ServerConfig {
    let listen = c.addr("server.listen", s.listen.as_deref(), DEFAULT_LISTEN);
    let admin_listen = c.addr("server.admin_listen", s.admin_listen.as_deref(), DEFAULT_ADMIN_LISTEN);
    let grpc_listen = s.grpc_listen.as_deref().map(|g| c.addr("server.grpc_listen", Some(g), g));
    if listen.port() != 0 && listen == admin_listen {
        c.problem("server.admin_listen", format!("must differ from server.listen ({listen})"));
    }
    // The gateway binds all three: a shared address would pass here and fail at start-up.
    if let Some(grpc) = grpc_listen.filter(|g| g.port() != 0) {
        for (key, other) in [("server.listen", listen), ("server.admin_listen", admin_listen)] {
            if grpc == other {
                c.problem("server.grpc_listen", format!("must differ from {key} ({other})"));
            }
        }
    }
    let ms = |v: u64| Duration::from_millis(v);
    ServerConfig {
        listen,
        admin_listen,
        grpc_listen,
        max_request_bytes: c.range(
            "server.max_request_bytes",
            s.max_request_bytes,
            16 << 20,
            1,
            MAX_REQUEST_BYTES_LIMIT,
        ) as usize,
        request_timeout: ms(c.range("server.request_timeout_ms", s.request_timeout_ms, 5000, 1, 3_600_000)),
        max_in_flight: c.range("server.max_in_flight", s.max_in_flight, 1024, 1, 1_000_000) as usize,
        max_connections: c.range("server.max_connections", s.max_connections, 10_000, 1, 1_000_000) as usize,
        header_read_timeout: ms(c.range(
            "server.header_read_timeout_ms",
            s.header_read_timeout_ms,
            10_000,
            1,
            3_600_000,
        )),
        idle_timeout: ms(c.range("server.idle_timeout_ms", s.idle_timeout_ms, 60_000, 1, 86_400_000)),
        drain_timeout: ms(c.range("server.drain_timeout_ms", s.drain_timeout_ms, 30_000, 0, 3_600_000)),
        tls: s.tls.as_ref().and_then(|t| tls(c, t)),
    }
}

fn tls(c: &mut Checker, t: &RawTls) -> Option<TlsConfig> {
    let mut file = |key: &str, value: Option<&String>, required: bool| -> Option<PathBuf> {
        match value.map(PathBuf::from) {
            Some(p) if p.is_file() => Some(p),
            Some(p) => {
                c.problem(format!("server.tls.{key}"), format!("no such file {}", p.display()));
                None
            }
            None if required => {
                c.problem(format!("server.tls.{key}"), "is required (a PEM file)");
                None
            }
            None => None,
        }
    };
    let cert = file("cert", t.cert.as_ref(), true);
    let key = file("key", t.key.as_ref(), true);
    let client_ca = file("client_ca", t.client_ca.as_ref(), false);
    if t.client_ca.is_some() && client_ca.is_none() {
        return None;
    }
    Some(TlsConfig { cert: cert?, key: key?, client_ca })
}

fn auth(c: &mut Checker, a: &RawAuth) -> Option<AuthConfig> {
    let Some(keys_file) = a.keys_file.as_ref().map(PathBuf::from) else {
        c.problem("auth.keys_file", "is required: the file of tenants and their key hashes");
        return None;
    };
    match keys::read(&keys_file) {
        Ok(tenants) => Some(AuthConfig { keys_file, tenants }),
        Err(problems) => {
            c.problems.extend(problems);
            None
        }
    }
}

fn tracing(c: &mut Checker, t: &RawTracing) -> Option<TracingConfig> {
    let endpoint = t.otlp_endpoint.clone().unwrap_or_default();
    if !endpoint.starts_with("http://") || endpoint.parse::<http::Uri>().is_err() {
        c.problem("tracing.otlp_endpoint", format!("must be an http:// URL (OTLP/HTTP), got {endpoint:?}"));
    }
    let sample_ratio = t.sample_ratio.unwrap_or(0.01);
    if !(sample_ratio.is_finite() && (0.0..=1.0).contains(&sample_ratio)) {
        c.problem("tracing.sample_ratio", format!("must be in 0..=1, got {sample_ratio}"));
    }
    let service_name = t.service_name.clone().unwrap_or_else(|| "gateway".to_string());
    if service_name.is_empty() {
        c.problem("tracing.service_name", "must not be empty");
    }
    Some(TracingConfig {
        otlp_endpoint: endpoint.trim_end_matches('/').to_string(),
        sample_ratio,
        service_name,
    })
}

fn admin(c: &mut Checker, a: &RawAdmin, server: &ServerConfig) -> AdminConfig {
    let token = a.token_env.as_deref().and_then(|var| std::env::var(var).ok()).filter(|t| !t.is_empty());
    if a.token_env.as_ref().is_some_and(String::is_empty) {
        c.problem("admin.token_env", "must name an environment variable");
    }
    if !server.admin_listen.ip().is_loopback() && token.is_none() {
        let why = match &a.token_env {
            Some(var) => format!("the environment variable {var} is unset or empty"),
            None => "admin.token_env is not set".to_string(),
        };
        c.problem(
            "server.admin_listen",
            format!(
                "{} is not a loopback address, so the admin API needs a bearer token, but {why}",
                server.admin_listen
            ),
        );
    }
    AdminConfig { token_env: a.token_env.clone(), token }
}

fn fleet(c: &mut Checker, f: &RawFleet) -> FleetConfig {
    let redis_url = f.redis_url.clone().unwrap_or_default();
    let schemes = ["redis://", "redis+unix://", "unix://"];
    if !schemes.iter().any(|s| redis_url.starts_with(s)) || redis_url.len() <= "redis://".len() {
        c.problem(
            "fleet.redis_url",
            format!("must be a Redis URL (redis://host:port/db or redis+unix:///path; TLS is not built in), got {redis_url:?}"),
        );
    }
    let name = f.name.clone().unwrap_or_default();
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
    {
        c.problem(
            "fleet.name",
            format!(
                "must be 1-64 characters of A-Z a-z 0-9 - _ . (it prefixes the Redis keys), got {name:?}"
            ),
        );
    }
    let lease = c.range("fleet.lease_ttl_ms", f.lease_ttl_ms, 5_000, 500, 600_000);
    FleetConfig { redis_url, name, lease_ttl: Duration::from_millis(lease) }
}

fn runtime(c: &mut Checker, r: &RawRuntime) -> RuntimeConfig {
    let names = r.execution_providers.clone().unwrap_or_else(|| vec!["cpu".to_string()]);
    if names.is_empty() {
        c.problem("runtime.execution_providers", "must name at least one provider (e.g. [\"cpu\"])");
    }
    let mut providers = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match name.as_str() {
            "cpu" => providers.push(ExecutionProvider::Cpu),
            "cuda" => providers.push(ExecutionProvider::Cuda),
            other => c.problem(
                format!("runtime.execution_providers[{i}]"),
                format!("unknown execution provider {other:?} (known: \"cpu\", \"cuda\")"),
            ),
        }
    }
    RuntimeConfig {
        execution_providers: providers,
        intra_op_threads: c.range("runtime.intra_op_threads", r.intra_op_threads, 1, 0, 1024) as usize,
        intra_op_spinning: r.intra_op_spinning.unwrap_or(false),
        io_threads: c.range("runtime.io_threads", r.io_threads, 0, 0, 1024) as usize,
    }
}

fn model(c: &mut Checker, name: &str, m: &RawModel) -> Option<ModelConfig> {
    let path = format!("models.{name}");
    if !valid_model_name(name) {
        c.problem(&path, "a model name must match [A-Za-z0-9_.-]+ and not be `.` or `..`");
        return None;
    }
    let repository = PathBuf::from(m.repository.as_deref().unwrap_or("models"));
    let remote = m.remote.as_ref().map(|r| remotes(c, &path, r)).unwrap_or_default();
    let repo_ok = repository.join(name).is_dir();
    let all_remote = m.routing.as_ref().is_some_and(|r| routed_are_remote(r, &remote));
    if !repo_ok && !all_remote {
        c.problem(format!("{path}.repository"), format!("{} has no folder {name:?}", repository.display()));
    }
    let instances = c.range(&format!("{path}.instances"), m.instances, 1, 1, 256) as usize;
    let model_filename = m.model_filename.clone().unwrap_or_else(|| "model.onnx".to_string());
    if !valid_model_name(&model_filename) {
        c.problem(
            format!("{path}.model_filename"),
            format!("must be a file name ([A-Za-z0-9_.-]+, not `.` or `..`), got {model_filename:?}"),
        );
    }
    let batching = batching(c, &path, m.batching.as_ref());
    let source = m.source.as_ref().and_then(|s| source(c, &path, s));
    let Some(raw_routing) = &m.routing else {
        c.problem(format!("{path}.routing.primary"), "is required");
        return None;
    };
    let routing = routing(c, &path, raw_routing)?;
    let monitor = m.monitor.as_ref().and_then(|raw| monitor(c, &path, raw));
    let rollout = m.rollout.as_ref().and_then(|raw| rollout(c, &path, raw, &routing, m.source.is_some()));
    // Labels join only to monitored predictions: without a monitor the gate would hold forever.
    if m.monitor.is_none() && m.rollout.as_ref().is_some_and(|r| r.max_false_positive_rate.is_some()) {
        c.problem(
            format!("{path}.rollout.max_false_positive_rate"),
            format!(
                "needs a [{path}.monitor] table: feedback labels join to the monitored output's predictions"
            ),
        );
    }
    let segmented = m.monitor.as_ref().is_some_and(|mo| mo.segments.as_ref().is_some_and(|s| !s.is_empty()));
    if m.rollout.as_ref().is_some_and(|r| r.max_segment_disparity.is_some()) && !segmented {
        c.problem(
            format!("{path}.rollout.max_segment_disparity"),
            format!("needs [{path}.monitor] with segment_header and segments: the rates are per segment"),
        );
    }
    if m.monitor.is_none() && m.rollout.as_ref().is_some_and(|r| r.max_input_drift_psi.is_some()) {
        c.problem(
            format!("{path}.rollout.max_input_drift_psi"),
            format!("needs a [{path}.monitor] table: input drift is watched by the monitor"),
        );
    }
    let validation = m.validation.as_ref().and_then(|raw| validation(c, &path, raw, monitor.as_ref()));
    let capture = m.capture.as_ref().and_then(|raw| capture(c, &path, raw));
    let config = ModelConfig {
        name: name.to_string(),
        repository,
        model_filename,
        source,
        instances,
        batching,
        routing,
        monitor,
        rollout,
        validation,
        capture,
        remote,
    };
    for &v in config.remote.keys().filter(|&&v| config.model_path(v).is_file()) {
        c.problem(
            format!("{path}.remote.{v}"),
            format!(
                "version {v} is both remote and a local file ({}); remove one",
                config.model_path(v).display()
            ),
        );
    }
    if repo_ok {
        for v in config.served_versions().into_iter().filter(|&v| !config.is_remote(v)) {
            if !config.model_path(v).is_file() {
                c.problem(
                    config.version_path(v),
                    format!("version {v} does not exist: no file {}", config.model_path(v).display()),
                );
            }
        }
    }
    Some(config)
}

/// `[models.X.remote]`: every entry checked, each problem under its own path.
fn remotes(
    c: &mut Checker,
    model_path: &str,
    raw: &BTreeMap<String, RawRemote>,
) -> BTreeMap<u64, RemoteConfig> {
    let mut out = BTreeMap::new();
    for (key, r) in raw {
        let path = format!("{model_path}.remote.{key}");
        let version = key.parse::<u64>().ok().filter(|&v| v > 0);
        if version.is_none() {
            c.problem(
                &path,
                format!("the key is the local version number (a positive integer), got {key:?}"),
            );
        }
        if let (Some(v), Some(remote)) = (version, remote(c, &path, r)) {
            out.insert(v, remote);
        }
    }
    out
}

fn remote(c: &mut Checker, path: &str, r: &RawRemote) -> Option<RemoteConfig> {
    let url = r.url.as_deref().map(|u| u.trim_end_matches('/').to_string());
    let protocol = match url.as_deref() {
        None => {
            c.problem(format!("{path}.url"), "is required: http://host:port or grpc://host:port");
            None
        }
        Some(u) if u.parse::<http::Uri>().map_or(true, |p| p.host().is_none()) => {
            c.problem(format!("{path}.url"), format!("is not a URL with a host: {u:?}"));
            None
        }
        Some(u) if u.starts_with("http://") => Some(RemoteProtocol::Http),
        Some(u) if u.starts_with("grpc://") => Some(RemoteProtocol::Grpc),
        Some(u) => {
            c.problem(
                format!("{path}.url"),
                format!(
                    "must start with http:// or grpc:// (TLS to remotes is not supported yet), got {u:?}"
                ),
            );
            None
        }
    };
    let model = r.model.clone().filter(|m| !m.is_empty() && !m.contains('/'));
    if model.is_none() {
        c.problem(format!("{path}.model"), "is required: the model's name on the remote server");
    }
    if r.version.as_deref().is_some_and(|v| v.is_empty() || v.contains('/')) {
        c.problem(format!("{path}.version"), "must be a version name without `/`");
    }
    if r.http2.is_some() && protocol == Some(RemoteProtocol::Grpc) {
        c.problem(format!("{path}.http2"), "applies to http:// remotes only (gRPC is always HTTP/2)");
    }
    let max_in_flight = c.range(&format!("{path}.max_in_flight"), r.max_in_flight, 256, 1, 100_000) as usize;
    let connect_ms = c.range(&format!("{path}.connect_timeout_ms"), r.connect_timeout_ms, 1000, 1, 60_000);
    let timeout_ms = r.timeout_ms.map(|t| c.range(&format!("{path}.timeout_ms"), Some(t), t, 1, 3_600_000));
    let eject_after = c.range(&format!("{path}.eject_after"), r.eject_after, 5, 1, 1_000_000) as u32;
    let eject_ms = c.range(&format!("{path}.eject_for_ms"), r.eject_for_ms, 30_000, 1, 3_600_000);
    let health_ms = c.range(&format!("{path}.health_interval_ms"), r.health_interval_ms, 5000, 0, 3_600_000);
    Some(RemoteConfig {
        url: url?,
        protocol: protocol?,
        http2: r.http2.unwrap_or(false),
        model: model?,
        version: r.version.clone(),
        max_in_flight,
        connect_timeout: Duration::from_millis(connect_ms),
        timeout: timeout_ms.map(Duration::from_millis),
        eject_after,
        eject_for: Duration::from_millis(eject_ms),
        health_interval: (health_ms > 0).then(|| Duration::from_millis(health_ms)),
    })
}

/// True when every version the routing names is remote: such a model needs no local folder.
fn routed_are_remote(r: &RawRouting, remote: &BTreeMap<u64, RemoteConfig>) -> bool {
    let is_remote = |v: &RawVersion| matches!(v, RawVersion::Number(n) if remote.contains_key(n));
    let weighted = r.candidates.iter().chain(&r.shadows).filter_map(|w| w.version.as_ref());
    let mut named = r.primary.iter().chain(weighted);
    !remote.is_empty() && named.all(is_remote) && r.versions.iter().all(|v| remote.contains_key(v))
}

fn audit(c: &mut Checker, a: &RawAudit) -> AuditConfig {
    let dir = a.dir.as_ref().map(PathBuf::from);
    if let Some(d) = dir.as_ref().filter(|d| d.exists() && !d.is_dir()) {
        c.problem("audit.dir", format!("{} exists and is not a folder", d.display()));
    }
    let max_bytes = c.range("audit.max_bytes", a.max_bytes, 64 << 20, 64 << 10, 1 << 40);
    AuditConfig { dir, max_bytes }
}

fn validation(
    c: &mut Checker,
    model_path: &str,
    v: &RawValidation,
    monitor: Option<&MonitorConfig>,
) -> Option<ValidationConfig> {
    let path = format!("{model_path}.validation");
    let dataset = match v.dataset.as_ref().map(PathBuf::from) {
        Some(d) if d.is_file() => Some(d),
        Some(d) => {
            c.problem(format!("{path}.dataset"), format!("no such file {}", d.display()));
            None
        }
        None => {
            c.problem(format!("{path}.dataset"), "is required: the hold-out set, one JSON line per request");
            None
        }
    };
    let output = v.output.clone().or_else(|| monitor.map(|m| m.output.clone()));
    if output.is_none() {
        c.problem(format!("{path}.output"), "is required when the model has no [monitor] to take it from");
    }
    let share = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
    let rule = match (v.min_accuracy, v.max_abs_diff) {
        (Some(a), None) if share(a) => Some(ValidationRule::MinAccuracy(a)),
        (None, Some(d)) if d.is_finite() && d >= 0.0 => Some(ValidationRule::MaxAbsDiff(d)),
        (Some(a), None) => {
            c.problem(format!("{path}.min_accuracy"), format!("must be in 0..=1, got {a}"));
            None
        }
        (None, Some(d)) => {
            c.problem(format!("{path}.max_abs_diff"), format!("must be a finite number >= 0, got {d}"));
            None
        }
        _ => {
            c.problem(&path, "set exactly one of min_accuracy (labels) and max_abs_diff (numeric outputs)");
            None
        }
    };
    Some(ValidationConfig { dataset: dataset?, output: output?, rule: rule? })
}

fn capture(c: &mut Checker, model_path: &str, raw: &RawCapture) -> Option<CaptureConfig> {
    let path = format!("{model_path}.capture");
    let percent = raw.percent.unwrap_or(10.0);
    if !(percent.is_finite() && (0.0..=100.0).contains(&percent)) {
        c.problem(format!("{path}.percent"), format!("must be in 0..=100, got {percent}"));
    }
    let max_bytes = c.range(&format!("{path}.max_bytes"), raw.max_bytes, 1 << 30, 1 << 20, 1 << 44);
    let dir = raw.dir.as_ref().map(PathBuf::from);
    match &dir {
        None => c.problem(format!("{path}.dir"), "is required: the folder the capture files go to"),
        Some(d) if d.exists() && !d.is_dir() => {
            c.problem(format!("{path}.dir"), format!("{} exists and is not a folder", d.display()))
        }
        Some(_) => {}
    }
    let url = raw.cloudevents_url.clone();
    if let Some(u) = url.as_deref().filter(|u| !u.starts_with("http://") || u.parse::<http::Uri>().is_err()) {
        c.problem(format!("{path}.cloudevents_url"), format!("must be an http:// URL, got {u:?}"));
    }
    Some(CaptureConfig { percent, dir: dir?, max_bytes, cloudevents_url: url })
}

fn batching(c: &mut Checker, model_path: &str, b: Option<&RawBatching>) -> BatchingConfig {
    let Some(b) = b else {
        return BatchingConfig::default();
    };
    let path = format!("{model_path}.batching");
    BatchingConfig {
        max_batch_size: c.range(&format!("{path}.max_batch_size"), b.max_batch_size, 1, 1, 65_536) as usize,
        max_queue_delay: Duration::from_micros(c.range(
            &format!("{path}.max_queue_delay_us"),
            b.max_queue_delay_us,
            0,
            0,
            1_000_000,
        )),
        max_queue: c.range(&format!("{path}.max_queue"), b.max_queue, 1024, 1, 1_000_000) as usize,
    }
}

fn source(c: &mut Checker, path: &str, s: &RawSource) -> Option<SourceConfig> {
    let path = format!("{path}.source");
    let Some(m) = &s.mlflow else {
        c.problem(format!("{path}.mlflow"), "is required (the registry: { tracking_uri, name, poll_s })");
        return None;
    };
    let tracking_uri = m.tracking_uri.clone().unwrap_or_default();
    if !tracking_uri.starts_with("http://") {
        c.problem(
            format!("{path}.mlflow.tracking_uri"),
            format!("must be an http:// URL, got {tracking_uri:?}"),
        );
    }
    let registered_name = m.name.clone().unwrap_or_default();
    if registered_name.is_empty() {
        c.problem(format!("{path}.mlflow.name"), "is required (the registered model's name)");
    }
    let poll = Duration::from_secs(c.range(&format!("{path}.mlflow.poll_s"), m.poll_s, 10, 1, 86_400));
    let cache_dir = PathBuf::from(s.cache_dir.as_deref().unwrap_or("cache/mlflow"));
    Some(SourceConfig {
        tracking_uri,
        registered_name,
        poll,
        cache_dir,
        aliases: s.resolved.clone(),
        // Resolution replaced the routing's alias by its number and kept the alias here.
        primary_alias: s.primary_alias.clone(),
    })
}

/// A version as written: a number; an alias left unresolved (no source, or one the registry did
/// not resolve) is a problem at `at`.
fn version_number(c: &mut Checker, at: &str, v: &RawVersion) -> Option<u64> {
    match v {
        RawVersion::Number(n) => Some(*n),
        RawVersion::Alias(a) => {
            c.problem(
                at,
                format!("{a:?} names a registry alias: it needs the model's [source] (an MLflow registry) to resolve it"),
            );
            None
        }
    }
}

fn routing(c: &mut Checker, model_path: &str, r: &RawRouting) -> Option<RoutingConfig> {
    let path = format!("{model_path}.routing");
    let Some(primary) = r.primary.as_ref() else {
        c.problem(format!("{path}.primary"), "is required");
        return None;
    };
    let primary = version_number(c, &format!("{path}.primary"), primary)?;
    if primary == 0 {
        c.problem(format!("{path}.primary"), "versions are positive integers, got 0");
    }
    let candidates = weighted_list(c, &format!("{path}.candidates"), &r.candidates, primary);
    let shadows = weighted_list(c, &format!("{path}.shadows"), &r.shadows, primary);
    let each_valid = r.candidates.iter().all(|w| w.percent.is_none_or(|p| (0.0..=100.0).contains(&p)));
    let total: f64 = candidates.iter().map(|w| w.percent).sum();
    // An out-of-range percent is already reported; its sum would only repeat it.
    if each_valid && total > 100.0 + 1e-9 {
        c.problem(format!("{path}.candidates"), format!("percents add up to {total}, more than 100"));
    }
    let routed: BTreeSet<u64> = candidates.iter().map(|w| w.version).chain([primary]).collect();
    for (i, s) in shadows.iter().enumerate() {
        if routed.contains(&s.version) {
            c.problem(
                format!("{path}.shadows[{i}].version"),
                format!(
                    "version {} already answers live traffic; a shadow must be another version",
                    s.version
                ),
            );
        }
    }
    for (i, &v) in r.versions.iter().enumerate() {
        if v == 0 {
            c.problem(format!("{path}.versions[{i}]"), "versions are positive integers, got 0");
        }
    }
    for (key, header) in [("sticky_header", &r.sticky_header), ("pin_header", &r.pin_header)] {
        if let Some(h) = header.as_ref().filter(|h| http_header_name_invalid(h)) {
            c.problem(format!("{path}.{key}"), format!("{h:?} is not a valid HTTP header name"));
        }
    }
    Some(RoutingConfig {
        primary,
        candidates,
        shadows,
        pin_only: r.versions.clone(),
        shadow_max_in_flight: c.range(
            &format!("{path}.shadow_max_in_flight"),
            r.shadow_max_in_flight,
            32,
            1,
            100_000,
        ) as usize,
        sticky_header: r.sticky_header.as_ref().map(|h| h.to_ascii_lowercase()),
        pin_header: r.pin_header.as_ref().map(|h| h.to_ascii_lowercase()),
    })
}

fn monitor(c: &mut Checker, model_path: &str, m: &RawMonitor) -> Option<MonitorConfig> {
    let path = format!("{model_path}.monitor");
    let Some(output) = m.output.clone() else {
        c.problem(format!("{path}.output"), "is required: the output whose predictions are watched");
        return None;
    };
    let range = match m.range.as_deref() {
        None => (0.0, 1.0),
        Some([lo, hi]) if lo < hi && lo.is_finite() && hi.is_finite() => (*lo, *hi),
        Some(other) => {
            c.problem(format!("{path}.range"), format!("must be [low, high] with low < high, got {other:?}"));
            (0.0, 1.0)
        }
    };
    let baseline = m.baseline.as_ref().map(PathBuf::from);
    if let Some(b) = baseline.as_ref().filter(|b| !b.is_file()) {
        c.problem(format!("{path}.baseline"), format!("no such file {}", b.display()));
    }
    let threshold = m.threshold.unwrap_or(0.5);
    if !threshold.is_finite() {
        c.problem(format!("{path}.threshold"), "must be a finite number");
    }
    let score = match m.score.as_deref() {
        None | Some("top") => ScoreOf::Top,
        Some("positive_class") => ScoreOf::PositiveClass,
        Some(other) => {
            c.problem(
                format!("{path}.score"),
                format!("must be \"top\" or \"positive_class\", got {other:?}"),
            );
            ScoreOf::Top
        }
    };
    let input_baseline = m.input_baseline.as_ref().map(PathBuf::from);
    if let Some(b) = input_baseline.as_ref().filter(|b| !b.is_file()) {
        c.problem(format!("{path}.input_baseline"), format!("no such file {}", b.display()));
    }
    let segment_header = m.segment_header.clone();
    if let Some(h) = segment_header.as_deref().filter(|h| http_header_name_invalid(h)) {
        c.problem(format!("{path}.segment_header"), format!("is not a valid header name: {h:?}"));
    }
    let segments = m.segments.clone().unwrap_or_default();
    let segment_ok = |s: &String| {
        (1..=64).contains(&s.len())
            && s != "other"
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if segments.len() > 32 || !segments.iter().all(segment_ok) {
        c.problem(
            format!("{path}.segments"),
            format!(
                "must be at most 32 names of 1-64 of A-Z a-z 0-9 - _ . (not \"other\"), got {segments:?}"
            ),
        );
    }
    if segments.iter().collect::<BTreeSet<_>>().len() != segments.len() {
        c.problem(format!("{path}.segments"), "names a segment twice");
    }
    if segment_header.is_some() == segments.is_empty() {
        c.problem(format!("{path}.segments"), "segment_header and segments go together");
    }
    Some(MonitorConfig {
        input_baseline,
        max_features: c.range(&format!("{path}.max_features"), m.max_features, 64, 1, 4096) as usize,
        segment_header,
        segments,
        min_segment_requests: c.range(
            &format!("{path}.min_segment_requests"),
            m.min_segment_requests,
            30,
            1,
            100_000_000,
        ),
        output,
        score,
        baseline,
        range,
        threshold,
        positive_class: m.positive_class.unwrap_or(1),
        max_classes: c.range(&format!("{path}.max_classes"), m.max_classes, 100, 2, 10_000),
        feedback_ttl: Duration::from_secs(c.range(
            &format!("{path}.feedback_ttl_s"),
            m.feedback_ttl_s,
            3600,
            1,
            604_800,
        )),
        feedback_capacity: c.range(
            &format!("{path}.feedback_capacity"),
            m.feedback_capacity,
            100_000,
            1,
            10_000_000,
        ) as usize,
    })
}

fn rollout(
    c: &mut Checker,
    model_path: &str,
    r: &RawRollout,
    routing: &RoutingConfig,
    from_registry: bool,
) -> Option<RolloutConfig> {
    let path = format!("{model_path}.rollout");
    // A registry's candidate alias may point at the primary's version (it was promoted): then
    // there is nothing to roll out until the alias moves again.
    let idle = from_registry && routing.candidates.is_empty();
    if routing.candidates.len() != 1 && !idle {
        c.problem(
            format!("{model_path}.routing.candidates"),
            format!("a rollout needs exactly one candidate, found {}", routing.candidates.len()),
        );
    }
    let steps = r.steps.clone().unwrap_or_default();
    let ascending = steps.windows(2).all(|w| w[0] < w[1]);
    let in_range = steps.iter().all(|s| *s > 0.0 && *s <= 100.0);
    if steps.is_empty() || !ascending || !in_range || steps.last() != Some(&100.0) {
        c.problem(
            format!("{path}.steps"),
            format!("must be ascending percents in (0, 100] ending at 100, got {steps:?}"),
        );
    }
    let interval = r.step_interval_s.unwrap_or(60.0);
    if !(interval.is_finite() && interval > 0.0 && interval <= 86_400.0) {
        c.problem(format!("{path}.step_interval_s"), format!("must be in (0, 86400], got {interval}"));
    }
    for (key, value) in [
        ("max_error_rate", r.max_error_rate),
        ("max_shadow_disagreement", r.max_shadow_disagreement),
        ("max_false_positive_rate", r.max_false_positive_rate),
    ] {
        if let Some(v) = value.filter(|v| !(0.0..=1.0).contains(v)) {
            c.problem(format!("{path}.{key}"), format!("is a fraction in 0..=1, got {v}"));
        }
    }
    if let Some(v) = r.max_input_drift_psi.filter(|v| !(*v > 0.0 && v.is_finite())) {
        c.problem(format!("{path}.max_input_drift_psi"), format!("must be positive, got {v}"));
    }
    if let Some(v) = r.max_segment_disparity.filter(|v| !(0.0..=1.0).contains(v)) {
        c.problem(format!("{path}.max_segment_disparity"), format!("is a fraction in 0..=1, got {v}"));
    }
    if let Some(v) = r.max_p99_latency_ms.filter(|v| !(*v > 0.0 && v.is_finite())) {
        c.problem(format!("{path}.max_p99_latency_ms"), format!("must be positive, got {v}"));
    }
    if let Some(other) = r.on_failure.as_deref().filter(|f| *f != "rollback") {
        c.problem(format!("{path}.on_failure"), format!("only \"rollback\" is supported, got {other:?}"));
    }
    Some(RolloutConfig {
        steps,
        step_interval: Duration::from_secs_f64(interval.clamp(0.001, 86_400.0)),
        min_requests: c.range(&format!("{path}.min_requests"), r.min_requests, 200, 1, 100_000_000),
        max_error_rate: r.max_error_rate,
        max_p99_latency_ms: r.max_p99_latency_ms,
        max_shadow_disagreement: r.max_shadow_disagreement,
        max_false_positive_rate: r.max_false_positive_rate,
        max_input_drift_psi: r.max_input_drift_psi,
        max_segment_disparity: r.max_segment_disparity,
        min_labelled_negatives: c.range(
            &format!("{path}.min_labelled_negatives"),
            r.min_labelled_negatives,
            20,
            1,
            1_000_000,
        ),
    })
}

fn weighted_list(c: &mut Checker, path: &str, list: &[RawWeighted], primary: u64) -> Vec<Weighted> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, w) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let Some(version) = w.version.as_ref() else {
            c.problem(format!("{at}.version"), "is required");
            continue;
        };
        let Some(version) = version_number(c, &format!("{at}.version"), version) else { continue };
        let percent = w.percent.unwrap_or(0.0);
        if !(0.0..=100.0).contains(&percent) {
            c.problem(format!("{at}.percent"), format!("must be in 0..=100, got {percent}"));
        }
        if version == 0 {
            c.problem(format!("{at}.version"), "versions are positive integers, got 0");
        } else if version == primary {
            c.problem(format!("{at}.version"), format!("version {version} is the primary"));
        } else if !seen.insert(version) {
            c.problem(format!("{at}.version"), format!("version {version} is listed twice"));
        }
        out.push(Weighted { version, percent: percent.clamp(0.0, 100.0) });
    }
    out
}

fn http_header_name_invalid(name: &str) -> bool {
    name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::super::*;

    fn repo() -> String {
        format!("{}/../models", env!("CARGO_MANIFEST_DIR"))
    }

    fn check(toml: &str) -> Result<GatewayConfig, ConfigError> {
        from_toml(&toml.replace("REPO", &repo()), &Overrides::default())
    }

    #[test]
    fn minimal_model_gets_defaults() {
        let cfg =
            check("[models.credit-scoring]\nrepository = \"REPO\"\nrouting = { primary = 1 }\n").unwrap();
        assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.server.admin_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(cfg.models["credit-scoring"].batching, BatchingConfig::default());
        assert_eq!(cfg.runtime.execution_providers, vec![ExecutionProvider::Cpu]);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let err = check(
            r#"
[server]
listen = "nowhere"
max_in_flight = 0
[runtime]
execution_providers = ["tpu"]
[models.credit-scoring]
repository = "REPO"
routing = { primary = 1, candidates = [{ version = 2, percent = 150.0 }, { version = 9, percent = 1.0 }] }
"#,
        )
        .unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "server.listen",
                "server.max_in_flight",
                "runtime.execution_providers[0]",
                "models.credit-scoring.routing.candidates[0].percent",
                "models.credit-scoring.routing.candidates[1].version",
            ],
            "{err}"
        );
        assert!(err.to_string().contains("must be in 0..=100, got 150"), "{err}");
    }

    #[test]
    fn unknown_keys_are_all_reported() {
        let err =
            check("[server]\nlisten2 = 1\n[models.x]\nrouting = { primary = 1, weight = 2 }\n").unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, vec!["models.x.routing.weight", "server.listen2"]);
    }

    #[test]
    fn weights_over_100_and_shadowing_a_live_version_are_refused() {
        let err = check(
            "[models.credit-scoring]\nrepository = \"REPO\"\nrouting = { primary = 1, candidates = [{ version = 2, percent = 60.0 }, { version = 3, percent = 50.0 }], shadows = [{ version = 2, percent = 100.0 }] }\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("percents add up to 110"), "{text}");
        assert!(text.contains("shadows[0].version: version 2 already answers live traffic"), "{text}");
    }

    #[test]
    fn bad_model_names_are_refused() {
        let err = check("[models.\"..\"]\nrouting = { primary = 1 }\n").unwrap_err();
        assert!(err.to_string().contains("must match"), "{err}");
    }

    #[test]
    fn grpc_needs_its_own_address() {
        let model = "[models.credit-scoring]\nrepository = \"REPO\"\nrouting = { primary = 1 }\n";
        let err = check(&format!(
            "[server]\nlisten = \"127.0.0.1:7000\"\ngrpc_listen = \"127.0.0.1:7000\"\n{model}"
        ))
        .unwrap_err();
        assert_eq!(
            err.problems,
            vec![Problem::new("server.grpc_listen", "must differ from server.listen (127.0.0.1:7000)")]
        );
        let err = check(&format!("[server]\ngrpc_listen = \"127.0.0.1:9090\"\n{model}")).unwrap_err();
        assert!(err.to_string().contains("must differ from server.admin_listen"), "{err}");
        // Port 0 asks for a free port each time: never the same one.
        let all_free = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ngrpc_listen = \"127.0.0.1:0\"\n";
        check(&format!("{all_free}{model}")).unwrap();
    }

    #[test]
    fn a_false_positive_gate_needs_a_monitor() {
        let rollout = "[models.credit-scoring]\nrepository = \"REPO\"\nrouting = { primary = 1, candidates = [{ version = 2, percent = 5.0 }] }\n[models.credit-scoring.rollout]\nsteps = [50, 100]\nmax_false_positive_rate = 0.1\n";
        let err = check(rollout).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, vec!["models.credit-scoring.rollout.max_false_positive_rate"], "{err}");
        check(&format!("{rollout}[models.credit-scoring.monitor]\noutput = \"probabilities\"\n")).unwrap();
    }

    #[test]
    fn remote_versions_are_checked_entry_by_entry_and_need_no_local_file() {
        let cfg = check(
            "[models.credit-scoring]\nrepository = \"REPO\"\nrouting = { primary = 1, candidates = [{ version = 7, percent = 5.0 }] }\n\
             [models.credit-scoring.remote]\n7 = { url = \"grpc://10.0.0.7:8001/\", model = \"credit\", timeout_ms = 250 }\n",
        )
        .unwrap();
        let r = &cfg.models["credit-scoring"].remote[&7];
        assert_eq!(
            (r.url.as_str(), r.protocol, r.max_in_flight, r.eject_after),
            ("grpc://10.0.0.7:8001", RemoteProtocol::Grpc, 256, 5)
        );
        assert_eq!(r.timeout, Some(Duration::from_millis(250)));
        // A model whose routed versions are all remote needs no folder of its own.
        assert!(check("[models.elsewhere]\nrouting = { primary = 2 }\n[models.elsewhere.remote]\n2 = { url = \"http://10.0.0.7:8000\", model = \"m\" }\n").is_ok());
        let err = check(
            "[models.credit-scoring]\nrepository = \"REPO\"\nrouting = { primary = 1 }\n\
             [models.credit-scoring.remote]\nseven = { url = \"http://h:1\", model = \"m\" }\n\
             8 = { url = \"https://h:1\", model = \"m\" }\n9 = { url = \"http://h:1\", max_in_flight = 0 }\n\
             10 = { url = \"grpc://h:1\", model = \"m\", http2 = true }\n2 = { url = \"http://h:1\", model = \"m\" }\n",
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "models.credit-scoring.remote.seven: the key is the local version number",
            "models.credit-scoring.remote.8.url: must start with http:// or grpc://",
            "models.credit-scoring.remote.9.model: is required",
            "models.credit-scoring.remote.9.max_in_flight",
            "models.credit-scoring.remote.10.http2: applies to http:// remotes only",
            "models.credit-scoring.remote.2: version 2 is both remote and a local file",
        ] {
            assert!(err.contains(expected), "{expected} not in {err}");
        }
    }

    #[test]
    fn an_alias_needs_a_registry_source_and_a_source_needs_its_registry() {
        let err = check(
            "[models.credit-scoring]\nrepository = \"REPO\"\nrouting = { primary = \"@champion\", candidates = [{ version = \"@challenger\", percent = 5.0 }] }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("models.credit-scoring.routing.primary: \"@champion\" names a registry alias"),
            "{err}"
        );
        let err = check(
            "[models.credit-scoring]\nrepository = \"REPO\"\nrouting = { primary = 1, candidates = [{ version = \"@challenger\", percent = 5.0 }] }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("models.credit-scoring.routing.candidates[0].version: \"@challenger\""),
            "{err}"
        );
        let err = check(
            "[models.credit-scoring]\nrepository = \"REPO\"\nrouting = { primary = 1 }\n[models.credit-scoring.source]\nmlflow = { tracking_uri = \"https://x\" }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("source.mlflow.tracking_uri: must be an http:// URL"), "{err}");
        assert!(err.contains("source.mlflow.name: is required"), "{err}");
    }

    #[test]
    fn public_admin_address_needs_a_token() {
        let err = check(
            "[server]\nadmin_listen = \"0.0.0.0:9090\"\n[models.credit-scoring]\nrepository = \"REPO\"\nrouting = { primary = 1 }\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("needs a bearer token"), "{err}");
    }
}
