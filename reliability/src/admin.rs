//! Talking to the gateway outside the load: one-shot HTTP/1.1 requests on a fresh connection
//! (bounded by a timeout), the admin plane's `/metrics` read into [`Metrics`] (Prometheus text,
//! summed over label filters), and `POST /admin/reload`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// No admin call or probe request waits longer than this.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `METHOD path` with `body` on a fresh connection: the status and the whole answer.
pub async fn call(addr: SocketAddr, method: Method, path: &str, body: Bytes) -> Result<(u16, Bytes), String> {
    let what = format!("{method} http://{addr}{path}");
    let exchange = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) =
            http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(http::header::HOST, addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>((status, bytes))
    };
    match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {CALL_TIMEOUT:?}")),
    }
}

/// The admin plane's `/metrics`.
pub async fn metrics(admin: SocketAddr) -> Result<Metrics, String> {
    let (status, body) = call(admin, Method::GET, "/metrics", Bytes::new()).await?;
    if status != 200 {
        return Err(format!("GET http://{admin}/metrics: status {status}"));
    }
    Ok(Metrics::parse(&String::from_utf8_lossy(&body)))
}

/// `POST /admin/reload`: `Ok(generation)` when the gateway applied it, `Err` with its reply
/// otherwise.
pub async fn reload(admin: SocketAddr) -> Result<u64, String> {
    let (status, body) = call(admin, Method::POST, "/admin/reload", Bytes::new()).await?;
    let reply: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let applied = reply.get("outcome").and_then(|o| o.as_str()) == Some("applied");
    match (status, applied, reply.get("generation").and_then(|g| g.as_u64())) {
        (200, true, Some(generation)) => Ok(generation),
        _ => Err(format!("status {status}: {}", String::from_utf8_lossy(&body).trim())),
    }
}

/// One sample line: its labels and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A `/metrics` page: samples by metric name (comments dropped).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    samples: BTreeMap<String, Vec<Sample>>,
}

impl Metrics {
    /// Reads Prometheus text exposition (lines `name{k="v",...} value`); lines it cannot read
    /// are skipped.
    pub fn parse(text: &str) -> Metrics {
        let mut samples: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            if let Some((name, sample)) = parse_line(line) {
                samples.entry(name).or_default().push(sample);
            }
        }
        Metrics { samples }
    }

    /// Whether any sample of `name` is exported.
    pub fn has(&self, name: &str) -> bool {
        self.samples.contains_key(name)
    }

    /// The sum of `name` over the samples whose labels include every `(key, value)` of
    /// `filter`; `None` when the metric is not exported at all.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        let samples = self.samples.get(name)?;
        let matching = samples
            .iter()
            .filter(|s| filter.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v)));
        Some(matching.map(|s| s.value).sum())
    }
}

fn parse_line(line: &str) -> Option<(String, Sample)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (series, BTreeMap::new()),
    };
    Some((name.to_string(), Sample { labels, value }))
}

/// `k="v",k2="v2"` (values may hold escaped quotes and commas).
fn parse_labels(mut text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => value.push(chars.next()?.1),
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim_start_matches(',').to_string(), value);
        text = rest.get(end + 1..)?.trim_start_matches(',');
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP gateway_requests_total Requests.
# TYPE gateway_requests_total counter
gateway_requests_total{model="credit-scoring",version="1",role="primary",outcome="ok"} 120
gateway_requests_total{model="credit-scoring",version="2",role="candidate",outcome="ok"} 30
gateway_requests_total{model="credit-scoring",version="2",role="candidate",outcome="server_error"} 2
gateway_config_reloads_total{outcome="applied"} 7
gateway_odd{text="a \"quoted\", value",x="y"} 1.5
gateway_in_flight_requests 3
"#;

    #[test]
    fn sums_over_label_filters() {
        let m = Metrics::parse(PAGE);
        assert_eq!(m.sum("gateway_requests_total", &[]), Some(152.0));
        assert_eq!(m.sum("gateway_requests_total", &[("outcome", "ok")]), Some(150.0));
        assert_eq!(m.sum("gateway_requests_total", &[("version", "2"), ("outcome", "ok")]), Some(30.0));
        assert_eq!(m.sum("gateway_config_reloads_total", &[("outcome", "applied")]), Some(7.0));
        assert_eq!(m.sum("gateway_in_flight_requests", &[]), Some(3.0));
        assert_eq!(m.sum("gateway_connections_refused_total", &[]), None);
        assert!(!m.has("gateway_connections_refused_total"));
    }

    #[test]
    fn reads_escaped_label_values() {
        let m = Metrics::parse(PAGE);
        assert_eq!(m.sum("gateway_odd", &[("text", "a \"quoted\", value"), ("x", "y")]), Some(1.5));
    }
}
