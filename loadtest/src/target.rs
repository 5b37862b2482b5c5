//! Where the load goes: the server's address and authority from `--url`, and the V2 paths for
//! a model's metadata and infer endpoints.

use std::net::SocketAddr;

use http::Uri;

/// The server under test.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port`, for the Host header and HTTP/2's `:authority`.
    pub authority: String,
    /// Path prefix from the URL, without a trailing slash (usually empty).
    pub base_path: String,
}

impl Target {
    /// Parses an `http://host[:port][/prefix]` URL and resolves its host.
    pub async fn resolve(url: &str) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("--url {url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("--url {url:?}: only http:// is supported"));
        }
        let authority = uri.authority().ok_or_else(|| format!("--url {url:?} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("resolving {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        Ok(Self {
            addr,
            authority: authority.as_str().to_string(),
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// `GET` path of the model's (or one version's) metadata.
    pub fn metadata_path(&self, model: &str, version: Option<u64>) -> String {
        match version {
            Some(v) => format!("{}/v2/models/{model}/versions/{v}", self.base_path),
            None => format!("{}/v2/models/{model}", self.base_path),
        }
    }

    /// `POST` path of the routed (or pinned) infer endpoint.
    pub fn infer_path(&self, model: &str, version: Option<u64>) -> String {
        format!("{}/infer", self.metadata_path(model, version))
    }

    /// The URI a request carries: origin-form for HTTP/1.1, absolute for HTTP/2.
    pub fn uri(&self, path: &str, http2: bool) -> Result<Uri, String> {
        let text = if http2 { format!("http://{}{path}", self.authority) } else { path.to_string() };
        text.parse().map_err(|e| format!("bad request path {text:?}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn paths() {
        let t = Target::resolve("http://127.0.0.1:18080/").await.unwrap();
        assert_eq!(t.addr.port(), 18080);
        assert_eq!(t.authority, "127.0.0.1:18080");
        assert_eq!(t.infer_path("m", None), "/v2/models/m/infer");
        assert_eq!(t.infer_path("m", Some(2)), "/v2/models/m/versions/2/infer");
        assert_eq!(t.uri("/x", true).unwrap().to_string(), "http://127.0.0.1:18080/x");
        assert!(Target::resolve("https://127.0.0.1").await.is_err());
    }
}
