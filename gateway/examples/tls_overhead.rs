//! What TLS costs: the same gateway (credit-scoring v1) served in plain text and over TLS
//! (`[server.tls]`, certificates made with the `openssl` command), measured in one run:
//!
//! - **keep-alive**: CONNECTIONS HTTP/1.1 connections, each handshaken once, in a closed loop
//!   for SECONDS: throughput, p50 and p99;
//! - **new connection per request**: 1,000 requests in a row, each on a connection of its own
//!   (TCP, TLS handshake when on, one request): the handshake's price.
//!
//! Client and server share the machine (and this process, each on a runtime of its own), so
//! the ratios are what to read. The gateway's CPU time (every thread but the client's) is the
//! figure that stays put on a machine busy with other work, where latency does not. Plain and
//! TLS alternate, twice each; each figure is the better of its two runs.
//!
//! `cargo run --release -p gateway --example tls_overhead [SECONDS] [CONNECTIONS]`

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::Gateway;
use gateway::config::{self, Overrides};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

type Error = Box<dyn std::error::Error + Send + Sync>;

const BODY: &str = r#"{"inputs":[{"name":"features","datatype":"FP32","shape":[1,8],"data":[0.5,-1.25,2.0,0.0,1.5,-0.75,0.25,1.0]}]}"#;
const NEW_CONNECTIONS: usize = 1000;

#[derive(Clone, Copy)]
struct Figures {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us: f64,
    new_conn_us: f64,
    new_conn_cpu_us: f64,
}

/// The load generator's threads (its runtime's name); every other thread is the gateway's.
const CLIENT_THREADS: &str = "load-client";

/// The gateway's CPU time so far (user + system of every thread not the client's), in µs;
/// /proc counts clock ticks (100 Hz).
fn cpu_us() -> f64 {
    let mut ticks = 0.0;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // `pid (name) state ...`: the name may hold spaces; utime, stime are the 12th, 13th after it.
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        if head.ends_with(CLIENT_THREADS) {
            continue;
        }
        ticks += rest.split_whitespace().skip(11).take(2).filter_map(|t| t.parse::<f64>().ok()).sum::<f64>();
    }
    ticks * 10_000.0
}

fn main() -> Result<(), Error> {
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name(name).enable_all().build()
    };
    let server = runtime("gateway")?;
    let client = runtime(CLIENT_THREADS)?;
    let handle = server.handle().clone();
    // On a client worker (`block_on` would run it on this thread, counted as the gateway's).
    client.block_on(async move { tokio::spawn(run(handle)).await? })
}

async fn run(server: tokio::runtime::Handle) -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: u64 = args.first().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let connections: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(32);
    let dir = std::env::temp_dir().join(format!("gateway-tls-overhead-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    certificates(&dir)?;
    let client = Arc::new(client_config(&dir)?);

    let mut best: [Option<Figures>; 2] = [None, None];
    for round in 0..4 {
        let tls = round % 2 == 1;
        let figures = measure(&server, &dir, tls.then(|| client.clone()), seconds, connections).await?;
        let name = if tls { "tls  " } else { "plain" };
        println!(
            "{name} run {}: {:>6.0} req/s  p50 {:>5.0} µs  p99 {:>5.0} µs  gateway CPU {:>4.1} µs/req | \
             new connection + request {:>5.0} µs, gateway CPU {:>5.0} µs",
            round / 2 + 1,
            figures.rps,
            figures.p50_us,
            figures.p99_us,
            figures.cpu_us,
            figures.new_conn_us,
            figures.new_conn_cpu_us,
        );
        let slot = &mut best[usize::from(tls)];
        *slot = Some(match *slot {
            None => figures,
            Some(b) => Figures {
                rps: b.rps.max(figures.rps),
                p50_us: b.p50_us.min(figures.p50_us),
                p99_us: b.p99_us.min(figures.p99_us),
                cpu_us: b.cpu_us.min(figures.cpu_us),
                new_conn_us: b.new_conn_us.min(figures.new_conn_us),
                new_conn_cpu_us: b.new_conn_cpu_us.min(figures.new_conn_cpu_us),
            },
        });
    }
    let (Some(plain), Some(tls)) = (best[0], best[1]) else { return Err("no runs".into()) };
    println!(
        "\nTLS / plain, {connections} keep-alive connections, {seconds} s: throughput {:.2}, p50 {:.2}, p99 {:.2}, \
         gateway CPU per request {:.2} ({:.1} vs {:.1} µs)\nnew connection + one request: time {:.2} ({:.0} vs {:.0} µs), \
         gateway CPU {:.2} ({:.0} vs {:.0} µs)",
        tls.rps / plain.rps,
        tls.p50_us / plain.p50_us,
        tls.p99_us / plain.p99_us,
        tls.cpu_us / plain.cpu_us,
        tls.cpu_us,
        plain.cpu_us,
        tls.new_conn_us / plain.new_conn_us,
        tls.new_conn_us,
        plain.new_conn_us,
        tls.new_conn_cpu_us / plain.new_conn_cpu_us,
        tls.new_conn_cpu_us,
        plain.new_conn_cpu_us,
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn measure(
    server: &tokio::runtime::Handle,
    dir: &Path,
    tls: Option<Arc<ClientConfig>>,
    seconds: u64,
    connections: usize,
) -> Result<Figures, Error> {
    let repo = format!("{}/../models", env!("CARGO_MANIFEST_DIR"));
    let table = match tls {
        Some(_) => {
            format!("[server.tls]\ncert = {:?}\nkey = {:?}\n", dir.join("server.pem"), dir.join("server.key"))
        }
        None => String::new(),
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{table}\
         [models.credit-scoring]\nrepository = \"{repo}\"\nrouting = {{ primary = 1 }}\n"
    );
    let config = config::from_toml(&text, &Overrides::default())?;
    let gateway = server.spawn(Gateway::start(config)).await??;
    let addr = gateway.data_addr;

    // Connect and warm up (the model's first runs, each connection's first requests) first.
    let mut senders = Vec::new();
    for _ in 0..connections {
        let mut send = open(addr, tls.clone()).await?;
        for _ in 0..20 {
            infer(&mut send).await?;
        }
        senders.push(send);
    }
    let (started, cpu) = (Instant::now(), cpu_us());
    let deadline = started + Duration::from_secs(seconds);
    let loops: Vec<_> = senders
        .into_iter()
        .map(|mut send| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let start = Instant::now();
                    infer(&mut send).await?;
                    latencies.push(start.elapsed().as_micros() as u32);
                }
                Ok::<_, Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for l in loops {
        latencies.extend(l.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_per_request = (cpu_us() - cpu) / latencies.len() as f64;
    latencies.sort_unstable();
    let at = |q: f64| f64::from(latencies[((latencies.len() - 1) as f64 * q) as usize]);

    let (start, cpu) = (Instant::now(), cpu_us());
    for _ in 0..NEW_CONNECTIONS {
        let mut send = open(addr, tls.clone()).await?;
        infer(&mut send).await?;
    }
    let new_conn_us = start.elapsed().as_micros() as f64 / NEW_CONNECTIONS as f64;
    let new_conn_cpu_us = (cpu_us() - cpu) / NEW_CONNECTIONS as f64;
    gateway.shutdown();
    server.spawn(gateway.wait()).await?;
    Ok(Figures {
        rps: latencies.len() as f64 / elapsed,
        p50_us: at(0.5),
        p99_us: at(0.99),
        cpu_us: cpu_per_request,
        new_conn_us,
        new_conn_cpu_us,
    })
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn open(addr: SocketAddr, tls: Option<Arc<ClientConfig>>) -> Result<Sender, Error> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    match tls {
        None => handshake(tcp).await,
        Some(config) => {
            let name = ServerName::try_from("localhost")?;
            handshake(TlsConnector::from(config).connect(name, tcp).await?).await
        }
    }
}

async fn handshake<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: T) -> Result<Sender, Error> {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    Ok(send)
}

async fn infer(send: &mut Sender) -> Result<(), Error> {
    send.ready().await?;
    let request = Request::post("/v2/models/credit-scoring/infer")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))?;
    let response = send.send_request(request).await?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()).into());
    }
    response.into_body().collect().await?;
    Ok(())
}

/// A CA and a server certificate for localhost/127.0.0.1 it signed (P-256, as most deployments).
fn certificates(dir: &Path) -> Result<(), Error> {
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    std::fs::write(dir.join("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n")?;
    for command in [
        format!("req -x509 {ec} -keyout ca.key -out ca.pem -days 1 -subj /CN=ca -addext basicConstraints=critical,CA:TRUE"),
        format!("req {ec} -keyout server.key -out server.csr -subj /CN=localhost"),
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 1 -days 1 -out server.pem -extfile server.ext"
            .to_string(),
    ] {
        let out = Command::new("openssl").args(command.split_whitespace()).current_dir(dir).output()?;
        if !out.status.success() {
            return Err(format!("openssl {command}: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
    }
    Ok(())
}

/// A client as common ones are (curl/OpenSSL, Go, browsers): X25519 key share first. rustls's
/// *ring* provider would lead with P-384, which ring computes with generic big-number code
/// (about 1 ms a handshake on each side here), measuring an unusual client, not the gateway.
#[allow(deprecated)] // rustls's ring provider, as the gateway's (see gateway::http::tls)
fn client_config(dir: &Path) -> Result<ClientConfig, Error> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(PathBuf::from(dir).join("ca.pem"))?)?;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups =
        vec![rustls::crypto::ring::kx_group::X25519, rustls::crypto::ring::kx_group::SECP256R1];
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
