//! TLS on the data plane (`[server.tls]`): HTTPS over HTTP/1.1 and h2 chosen by ALPN, gRPC over
//! TLS, mTLS (a client without a certificate, or with one from another CA, is refused at the
//! handshake), and certificate rotation on reload and on a file change, with the connections
//! already open kept. Certificates are made per test with the `openssl` command (Debian's).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use gateway::grpc::proto::{ModelInferResponse, ServerLiveRequest};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const LIMIT: Duration = Duration::from_secs(30);

// ---- certificates

/// A CA and certificates it signed, in a scratch folder.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA, two server certificates (`server`, `server2`: for localhost and 127.0.0.1, each with
    /// its own key), a client certificate, and a `stranger` client certificate signed by nobody
    /// the gateway trusts.
    fn new(name: &str) -> Pki {
        let pki = Pki { dir: scratch(name) };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=gateway test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        let server = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
        pki.leaf("server", server);
        pki.leaf("server2", server);
        pki.leaf("client", "extendedKeyUsage=clientAuth\n");
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "stranger.key",
            "-out",
            "stranger.pem",
            "-days",
            "2",
            "-subj",
            "/CN=stranger",
        ]);
        pki
    }

    fn leaf(&self, name: &str, extensions: &str) {
        std::fs::write(self.dir.join(format!("{name}.ext")), extensions).unwrap();
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &fastrand::u32(1..).to_string(),
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl").args(args).current_dir(&self.dir).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The DER of the (first) certificate in `file`.
    fn der(&self, file: &str) -> Vec<u8> {
        CertificateDer::from_pem_file(self.path(file)).unwrap().to_vec()
    }

    /// Serves `name`.pem and `name`.key from `live.pem` and `live.key`, each file replaced in
    /// one step (a rename), as a deploy tool does.
    fn install(&self, name: &str) {
        for ext in ["pem", "key"] {
            let temp = self.path(&format!("live.{ext}.tmp"));
            std::fs::copy(self.path(&format!("{name}.{ext}")), &temp).unwrap();
            std::fs::rename(&temp, self.path(&format!("live.{ext}"))).unwrap();
        }
    }

    /// `[server.tls]` serving `live.pem`/`live.key`, with the CA for client certificates when
    /// `mtls`.
    fn table(&self, mtls: bool) -> String {
        let ca = if mtls { format!("client_ca = {:?}\n", self.path("ca.pem")) } else { String::new() };
        format!("[server.tls]\ncert = {:?}\nkey = {:?}\n{ca}", self.path("live.pem"), self.path("live.key"))
    }

    /// A client trusting the CA, offering `alpn`, with `identity` (`client`, `stranger`) as its
    /// certificate when given.
    fn client(&self, alpn: &[&[u8]], identity: Option<&str>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(self.path("ca.pem")).unwrap()).unwrap();
        let builder = ClientConfig::builder_with_provider(Arc::new(ring()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            Some(name) => {
                let chain = vec![CertificateDer::from_pem_file(self.path(&format!("{name}.pem"))).unwrap()];
                let key = PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key"))).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// rustls's *ring* provider (deprecated in 0.23.48 for lacking post-quantum key exchange; the
/// gateway uses it too, see `http::tls`).
#[allow(deprecated)]
fn ring() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

// ---- connections

/// A TLS connection to `addr` as `localhost`.
async fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(LIMIT, TlsConnector::from(config).connect(name, tcp)).await.expect("handshake ends")
}

fn peer_certificate(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().expect("the server sent a certificate")[0].to_vec()
}

fn negotiated(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// One keep-alive connection, HTTP/1.1 or h2, and what its handshake negotiated.
struct Conn {
    send: Sender,
    certificate: Vec<u8>,
    alpn: Option<Vec<u8>>,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    /// HTTP/1.1 unless the server chose h2 by ALPN; `Err` when the handshake is refused.
    async fn open(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<Conn, Box<dyn std::error::Error>> {
        let stream = tls_connect(addr, config).await?;
        let (certificate, alpn) = (peer_certificate(&stream), negotiated(&stream));
        let io = TokioIo::new(stream);
        let send = if alpn.as_deref() == Some(b"h2") {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Sender::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            Sender::H1(send)
        };
        Ok(Conn { send, certificate, alpn })
    }

    /// Sends `request` on this connection; `Err` when the connection cannot carry it.
    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Reply, hyper::Error> {
        let response = tokio::time::timeout(LIMIT, async {
            match &mut self.send {
                Sender::H1(s) => {
                    s.ready().await?;
                    s.send_request(request).await
                }
                Sender::H2(s) => {
                    s.ready().await?;
                    s.send_request(request).await
                }
            }
        })
        .await
        .expect("answered or failed within the limit")?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?;
        let trailers = body.trailers().cloned();
        let mut headers = parts.headers;
        headers.extend(trailers.unwrap_or_default());
        Ok(Reply { status: parts.status, headers, body: body.to_bytes() })
    }

    /// A credit-scoring inference on this connection.
    async fn infer(&mut self) -> Result<Reply, hyper::Error> {
        let body = serde_json::to_vec(&credit_request(2)).unwrap();
        let request = Request::post("https://localhost/v2/models/credit-scoring/infer")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.send(request).await
    }

    /// A unary gRPC call (this connection must be h2).
    async fn grpc(&mut self, method: &str, message: &impl Message) -> Reply {
        let payload = message.encode_to_vec();
        let mut body = vec![0u8];
        body.extend((payload.len() as u32).to_be_bytes());
        body.extend(payload);
        let request = Request::post(format!("https://localhost/inference.GRPCInferenceService/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.send(request).await.expect("gRPC call answered")
    }
}

/// Asserts a served credit-scoring inference.
fn assert_inferred(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()["model_name"], "credit-scoring");
}

/// Opens a connection, or fails to, within the limit: the handshake refused, or (TLS 1.3, where
/// the client finishes before the server has judged its certificate) the first request.
async fn refused(addr: SocketAddr, config: Arc<ClientConfig>) -> bool {
    match Conn::open(addr, config).await {
        Err(_) => true,
        Ok(mut conn) => conn.infer().await.is_err(),
    }
}

// ---- tests

#[tokio::test]
async fn https_serves_http1_and_h2_chosen_by_alpn_and_refuses_plain_text() {
    let pki = Pki::new("tls-alpn");
    pki.install("server");
    let gw = start_with_server(CREDIT, &pki.table(false)).await;

    let mut h1 = Conn::open(gw.data, pki.client(&[b"http/1.1"], None)).await.unwrap();
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(h1.certificate, pki.der("server.pem"));
    // Keep-alive: several requests, one handshake.
    for _ in 0..3 {
        assert_inferred(&h1.infer().await.unwrap());
    }

    let mut h2 = Conn::open(gw.data, pki.client(&[b"h2", b"http/1.1"], None)).await.unwrap();
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]), "h2 is preferred when offered");
    for _ in 0..3 {
        assert_inferred(&h2.infer().await.unwrap());
    }

    // No ALPN at all: HTTP/1.1 is still sniffed from the first bytes.
    let mut plain_alpn = Conn::open(gw.data, pki.client(&[], None)).await.unwrap();
    assert_eq!(plain_alpn.alpn, None);
    assert_inferred(&plain_alpn.infer().await.unwrap());

    // Plain text on the TLS port gets no HTTP answer, and is counted.
    let before = gw.metric("gateway_tls_handshake_failures_total", &[("reason", "refused")]).await;
    let mut tcp = TcpStream::connect(gw.data).await.unwrap();
    tcp.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(LIMIT, tcp.read_to_end(&mut answer)).await.expect("closed");
    assert!(!answer.starts_with(b"HTTP/"), "plain text answered: {:?}", String::from_utf8_lossy(&answer));
    gw.wait_for_metric("gateway_tls_handshake_failures_total", &[("reason", "refused")], |v| v > before)
        .await;

    // The admin plane stays plain text.
    assert_eq!(gw.get_at(gw.admin, "/metrics").await.status, StatusCode::OK);
    gw.stop().await;
}

#[tokio::test]
async fn grpc_is_served_over_tls_with_h2_by_alpn() {
    let pki = Pki::new("tls-grpc");
    pki.install("server");
    let server = format!("grpc_listen = \"127.0.0.1:0\"\n{}", pki.table(false));
    let gw = start_with_server(CREDIT, &server).await;
    let grpc = gw.grpc.unwrap();

    let mut conn = Conn::open(grpc, pki.client(&[b"h2"], None)).await.unwrap();
    assert_eq!(conn.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(conn.certificate, pki.der("server.pem"));
    let live = conn.grpc("ServerLive", &ServerLiveRequest {}).await;
    assert_eq!(live.header("grpc-status"), Some("0"));
    let request = grpc::request("credit-scoring", &credit_request(2), true);
    let reply = conn.grpc("ModelInfer", &request).await;
    assert_eq!(reply.header("grpc-status"), Some("0"), "{:?}", reply.header("grpc-message"));
    let answer = ModelInferResponse::decode(&reply.body[5..]).unwrap();
    assert_eq!(answer.model_name, "credit-scoring");
    assert!(!answer.outputs.is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn mtls_serves_a_client_certificate_and_refuses_none_or_a_strangers() {
    let pki = Pki::new("tls-mtls");
    pki.install("server");
    let gw = start_with_server(CREDIT, &pki.table(true)).await;

    let mut with_cert = Conn::open(gw.data, pki.client(&[b"h2"], Some("client"))).await.unwrap();
    assert_inferred(&with_cert.infer().await.unwrap());
    let mut h1_with_cert = Conn::open(gw.data, pki.client(&[b"http/1.1"], Some("client"))).await.unwrap();
    assert_inferred(&h1_with_cert.infer().await.unwrap());

    let before = gw.metric("gateway_tls_handshake_failures_total", &[("reason", "refused")]).await;
    assert!(refused(gw.data, pki.client(&[b"h2"], None)).await, "a client without a certificate was served");
    assert!(
        refused(gw.data, pki.client(&[b"http/1.1"], None)).await,
        "a client without a certificate was served"
    );
    assert!(
        refused(gw.data, pki.client(&[b"h2"], Some("stranger"))).await,
        "a client certificate from another CA was accepted"
    );
    gw.wait_for_metric("gateway_tls_handshake_failures_total", &[("reason", "refused")], |v| {
        v >= before + 3.0
    })
    .await;

    // The refusals cost the served client nothing.
    assert_inferred(&with_cert.infer().await.unwrap());
    gw.stop().await;
}

/// Opens new connections until one is served `want` (the DER of a certificate), bounded.
async fn wait_for_certificate(addr: SocketAddr, pki: &Pki, want: &[u8]) {
    let mut last = Vec::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while tokio::time::Instant::now() < deadline {
        let mut conn = Conn::open(addr, pki.client(&[b"h2"], None)).await.unwrap();
        assert_inferred(&conn.infer().await.unwrap());
        if conn.certificate == want {
            return;
        }
        last = conn.certificate;
        tokio::time::sleep(Duration::from_millis(20)).await; // polling interval
    }
    panic!("new connections still get the old certificate ({} bytes)", last.len());
}

#[tokio::test]
async fn a_reload_rotates_the_certificate_for_new_connections_and_keeps_open_ones() {
    let pki = Pki::new("tls-rotate");
    pki.install("server");
    let path = write_config(&pki.dir, &format!("{}{CREDIT}", pki.table(false)));
    let gw = start_file(&path, false).await;
    let (old, new) = (pki.der("server.pem"), pki.der("server2.pem"));
    assert_ne!(old, new);

    let mut h1 = Conn::open(gw.data, pki.client(&[b"http/1.1"], None)).await.unwrap();
    let mut h2 = Conn::open(gw.data, pki.client(&[b"h2"], None)).await.unwrap();
    assert_eq!((&h1.certificate, &h2.certificate), (&old, &old));
    assert_inferred(&h1.infer().await.unwrap());
    assert_inferred(&h2.infer().await.unwrap());

    pki.install("server2");
    let reload = gw.admin_post("/admin/reload", None).await;
    assert_eq!(reload.status, StatusCode::OK, "{:?}", reload.body);
    // The reload has re-read the files by the time it answers: the next handshake gets the new one.
    let fresh = Conn::open(gw.data, pki.client(&[b"h2"], None)).await.unwrap();
    assert_eq!(fresh.certificate, new, "a new connection after the reload got the old certificate");

    // The connections opened before are the same connections, still serving.
    assert_inferred(&h1.infer().await.expect("the HTTP/1.1 connection survived the rotation"));
    assert_inferred(&h2.infer().await.expect("the h2 connection survived the rotation"));
    gw.stop().await;
}

#[tokio::test]
async fn a_changed_certificate_file_is_picked_up_without_a_reload() {
    let pki = Pki::new("tls-watch");
    pki.install("server");
    let path = write_config(&pki.dir, &format!("{}{CREDIT}", pki.table(false)));
    // No config watch: only the TLS files' own poll can see the change.
    let gw = start_file(&path, false).await;
    let mut open = Conn::open(gw.data, pki.client(&[b"h2"], None)).await.unwrap();
    assert_eq!(open.certificate, pki.der("server.pem"));

    pki.install("server2");
    wait_for_certificate(gw.data, &pki, &pki.der("server2.pem")).await;
    assert_inferred(&open.infer().await.expect("the open connection survived the rotation"));
    gw.stop().await;
}

#[tokio::test]
async fn a_certificate_that_does_not_load_is_counted_and_the_old_one_keeps_serving() {
    let pki = Pki::new("tls-bad");
    pki.install("server");
    let path = write_config(&pki.dir, &format!("{}{CREDIT}", pki.table(false)));
    let gw = start_file(&path, false).await;
    let failed = gw.metric("gateway_tls_reloads_total", &[("outcome", "failed")]).await;

    // The new certificate with the old key: they do not match.
    std::fs::copy(pki.path("server2.pem"), pki.path("live.pem")).unwrap();
    assert_eq!(gw.admin_post("/admin/reload", None).await.status, StatusCode::OK);
    assert!(gw.metric("gateway_tls_reloads_total", &[("outcome", "failed")]).await > failed);
    let mut conn = Conn::open(gw.data, pki.client(&[b"h2"], None)).await.unwrap();
    assert_eq!(conn.certificate, pki.der("server.pem"), "the old certificate keeps serving");
    assert_inferred(&conn.infer().await.unwrap());

    // Not PEM at all: the same.
    std::fs::write(pki.path("live.pem"), "not a certificate").unwrap();
    assert_eq!(gw.admin_post("/admin/reload", None).await.status, StatusCode::OK);
    let conn = Conn::open(gw.data, pki.client(&[b"h2"], None)).await.unwrap();
    assert_eq!(conn.certificate, pki.der("server.pem"));

    // Fixed: the next reload applies it.
    pki.install("server2");
    assert_eq!(gw.admin_post("/admin/reload", None).await.status, StatusCode::OK);
    let conn = Conn::open(gw.data, pki.client(&[b"h2"], None)).await.unwrap();
    assert_eq!(conn.certificate, pki.der("server2.pem"));
    gw.stop().await;
}

#[tokio::test]
async fn a_key_that_does_not_match_its_certificate_stops_the_start() {
    let pki = Pki::new("tls-start");
    std::fs::copy(pki.path("server.pem"), pki.path("live.pem")).unwrap();
    std::fs::copy(pki.path("server2.key"), pki.path("live.key")).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{}{}",
        pki.table(false),
        with_paths(CREDIT)
    );
    let cfg = gateway::config::from_toml(&text, &Default::default()).unwrap();
    let Err(e) = gateway::Gateway::start(cfg).await else { panic!("started with a mismatched key") };
    let message = e.to_string();
    assert!(message.starts_with("server.tls: "), "{message}");
    assert!(message.contains("live.key") && message.contains("not the certificate's key"), "{message}");
}
