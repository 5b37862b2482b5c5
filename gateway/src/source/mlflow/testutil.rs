//! Test helpers shared by the unit tests of `rest` and `artifacts`: a stand-in MLflow server.

/// A stand-in server on loopback answering each request with the first canned answer whose
/// path prefix matches (status, body); `None` accepts and never answers.
pub(super) async fn fake_server(routes: Option<Vec<(&'static str, u16, Vec<u8>)>>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let Some(routes) = &routes else {
                held.push(stream);
                continue;
            };
            let mut head = vec![0u8; 8192];
            let n = stream.read(&mut head).await.unwrap();
            let head = String::from_utf8_lossy(&head[..n]).into_owned();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
            let (status, body) = routes
                .iter()
                .find(|(prefix, _, _)| path.starts_with(prefix))
                .map_or((404, b"{}".to_vec()), |(_, status, body)| (*status, body.clone()));
            let reply =
                format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
            stream.write_all(reply.as_bytes()).await.unwrap();
            stream.write_all(&body).await.unwrap();
        }
    });
    uri
}
