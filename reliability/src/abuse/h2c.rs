//! Raw HTTP/2 (h2c, prior knowledge) connections from the `h2` crate, for the attacks that need
//! what a well-mannered client hides: resetting streams, holding flow-control windows, sending
//! pings. The connection's I/O runs as its own task, and how it ended (the gateway's GOAWAY and
//! its reason, a reset, a clean close) is kept with the moment it ended.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::{self, SendRequest};
use h2::{PingPong, Reason};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How a connection ended, as its own task saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The connection finished without an error (the server's GOAWAY with NO_ERROR, then EOF).
    Clean,
    /// The server sent GOAWAY with this error code.
    GoAway(Reason),
    /// Anything else: an I/O error, a protocol error of ours.
    Error(String),
}

impl Ending {
    pub fn describe(&self) -> String {
        match self {
            Ending::Clean => "closed cleanly (GOAWAY NO_ERROR or EOF)".into(),
            Ending::GoAway(r) => format!("GOAWAY {r:?}"),
            Ending::Error(e) => format!("error: {e}"),
        }
    }
}

/// One open h2c connection: its request handle, its ping handle, and a watch on its end.
pub struct H2 {
    pub send: SendRequest<Bytes>,
    pub ping: Option<PingPong>,
    ended: watch::Receiver<Option<(Instant, Ending)>>,
}

/// Opens an h2c connection to `addr`. `window`: the stream and connection receive windows this
/// client offers (a small one makes a server that writes to a non-reading client stop soon).
pub async fn connect(addr: SocketAddr, window: Option<u32>) -> Result<H2, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("set_nodelay: {e}"))?;
    let mut builder = client::Builder::new();
    if let Some(w) = window {
        builder.initial_window_size(w).initial_connection_window_size(w);
    }
    let (send, mut connection) =
        builder.handshake::<_, Bytes>(tcp).await.map_err(|e| format!("h2 handshake with {addr}: {e}"))?;
    let ping = connection.ping_pong();
    let (tx, ended) = watch::channel(None);
    tokio::spawn(async move {
        let ending = match connection.await {
            Ok(()) => Ending::Clean,
            Err(e) if e.is_go_away() && e.is_remote() => {
                Ending::GoAway(e.reason().unwrap_or(Reason::NO_ERROR))
            }
            Err(e) => Ending::Error(e.to_string()),
        };
        let _ = tx.send(Some((Instant::now(), ending)));
    });
    Ok(H2 { send, ping, ended })
}

impl H2 {
    /// How and when the connection ended, if it has.
    pub fn ended(&self) -> Option<(Instant, Ending)> {
        self.ended.borrow().clone()
    }

    /// Waits up to `limit` for the connection to end.
    pub async fn wait_end(&mut self, limit: Duration) -> Option<(Instant, Ending)> {
        let mut ended = self.ended.clone();
        let _ = tokio::time::timeout(limit, ended.wait_for(Option::is_some)).await;
        self.ended()
    }

    /// A handle that says when the connection ends, usable after `self` is moved.
    pub fn end_watch(&self) -> EndWatch {
        EndWatch(self.ended.clone())
    }
}

/// See [`H2::end_watch`].
#[derive(Clone)]
pub struct EndWatch(watch::Receiver<Option<(Instant, Ending)>>);

impl EndWatch {
    pub fn get(&self) -> Option<(Instant, Ending)> {
        self.0.borrow().clone()
    }
}

/// `GET path` (or a gRPC call when `grpc_body` is given) on `h2`, read to the end: the status
/// (with `grpc-status` for gRPC), within `limit`.
pub async fn request(
    h2: &mut H2,
    addr: SocketAddr,
    path: &str,
    grpc_body: Option<Bytes>,
    limit: Duration,
) -> Result<String, String> {
    let exchange = async {
        let mut send = h2.send.clone().ready().await.map_err(|e| format!("h2 not ready: {e}"))?;
        let uri = format!("http://{addr}{path}");
        let builder = http::Request::builder().uri(uri);
        let request = match &grpc_body {
            Some(_) => {
                builder.method("POST").header("content-type", "application/grpc").header("te", "trailers")
            }
            None => builder.method("GET"),
        }
        .body(())
        .map_err(|e| e.to_string())?;
        let (response, mut stream) =
            send.send_request(request, grpc_body.is_none()).map_err(|e| format!("sending: {e}"))?;
        if let Some(body) = grpc_body {
            stream.send_data(body, true).map_err(|e| format!("sending the message: {e}"))?;
        }
        let response = response.await.map_err(|e| format!("answer: {e}"))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| format!("reading the answer: {e}"))?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = body.trailers().await.map_err(|e| format!("trailers: {e}"))?;
        let grpc = trailers.as_ref().and_then(|t| t.get("grpc-status")).and_then(|v| v.to_str().ok());
        Ok(match grpc {
            Some(code) => format!("{status} grpc-status {code}"),
            None => status.to_string(),
        })
    };
    tokio::time::timeout(limit, exchange).await.map_err(|_| format!("no answer within {limit:?}"))?
}

/// The times connections ended, shared by many tasks.
#[derive(Debug, Default, Clone)]
pub struct Endings(Arc<Mutex<Vec<(Duration, Ending)>>>);

impl Endings {
    pub fn push(&self, after: Duration, ending: Ending) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push((after, ending));
    }

    pub fn take(&self) -> Vec<(Duration, Ending)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
