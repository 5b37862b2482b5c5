//! `bare_hyper`: the ceiling the gateway is measured against. A hyper 1.x HTTP/1.1 server
//! (multi-thread tokio runtime, keep-alive, `TCP_NODELAY`: the gateway's runtime set-up) that
//! reads each request body whole and answers every POST with one canned V2 infer response and
//! the gateway's `x-model-version` / `x-route-reason` headers. It runs no model, parses nothing.
//! `GET` answers `{"ready":true}` (so scripts can wait on `/v2/health/ready`).
//!
//! ```text
//! bare_hyper --listen 127.0.0.1:38001 [--response FILE] [--exit-after 600]
//! ```
//! It stops by itself after `--exit-after` seconds, or on SIGINT/SIGTERM.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The credit-scoring model's answer to one row, as the gateway writes it.
const CREDIT_RESPONSE: &str = concat!(
    r#"{"model_name":"credit-scoring","model_version":"1","id":"bench","outputs":["#,
    r#"{"name":"label","datatype":"INT64","shape":[1],"data":[0]},"#,
    r#"{"name":"probabilities","datatype":"FP32","shape":[1,2],"data":[0.71428573,0.2857143]}]}"#
);

#[derive(Parser)]
#[command(name = "bare_hyper", about = "A hyper server answering every POST with a canned V2 response")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:38001")]
    listen: SocketAddr,
    /// The canned response body (default: a credit-scoring answer for one row).
    #[arg(long)]
    response: Option<PathBuf>,
    /// Exit after this many seconds (every bench server stops by itself).
    #[arg(long, default_value_t = 3600)]
    exit_after: u64,
    /// Tokio worker threads (default: one per core, as the gateway).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let body = match &args.response {
        Some(path) => match std::fs::read(path) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                eprintln!("bare_hyper: reading {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => Bytes::from_static(CREDIT_RESPONSE.as_bytes()),
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().thread_name("bare-hyper-io").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bare_hyper: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bare_hyper: cannot listen on {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        eprintln!("bare_hyper: serving {} bytes on {}", body.len(), args.listen);
        tokio::select! {
            _ = accept_loop(listener, body) => {}
            _ = tokio::time::sleep(Duration::from_secs(args.exit_after)) => {}
            _ = stop_signal() => {}
        }
        ExitCode::SUCCESS
    })
}

async fn accept_loop(listener: TcpListener, body: Bytes) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, body.clone()));
            let _ =
                http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn answer(request: Request<Incoming>, canned: Bytes) -> Result<Response<Full<Bytes>>, Infallible> {
    let is_post = request.method() == Method::POST;
    // Read the body as any real server must before answering.
    let _ = request.into_body().collect().await;
    let body = if is_post { canned } else { Bytes::from_static(b"{\"ready\":true}") };
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if is_post {
        headers.insert("x-model-version", HeaderValue::from_static("1"));
        headers.insert("x-route-reason", HeaderValue::from_static("primary"));
    }
    Ok(response)
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
