//! A one-request HTTP/1.0 GET, enough for the monitoring endpoints (`/healthz`, `/varz`,
//! `/routez`): no keep-alive, no chunked bodies (HTTP/1.0 rules them out), a deadline on
//! the whole exchange.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Larger answers are cut off: no monitoring page of a test cluster comes near it.
const MAX_BODY: u64 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0} is not an http:// URL")]
    Url(String),
    #[error("GET {url}: {source}")]
    Io { url: String, source: std::io::Error },
    #[error("GET {url}: no answer within {within:?}")]
    Timeout { url: String, within: Duration },
    #[error("GET {url}: malformed response")]
    Malformed { url: String },
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// GET `url` (`http://host:port/path`).
pub async fn get(url: &str, within: Duration) -> Result<Response, HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::Url(url.to_string()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let exchange = async {
        let mut stream = TcpStream::connect(authority).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.take(MAX_BODY).read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| HttpError::Timeout {
            url: url.to_string(),
            within,
        })?
        .map_err(|source| HttpError::Io {
            url: url.to_string(),
            source,
        })?;
    let malformed = || HttpError::Malformed {
        url: url.to_string(),
    };
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(malformed)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(malformed)?;
    Ok(Response {
        status,
        body: body.to_string(),
    })
}

/// GET `url` and parse a 200 answer as JSON.
pub async fn get_json(url: &str, within: Duration) -> anyhow::Result<serde_json::Value> {
    let response = get(url, within).await?;
    anyhow::ensure!(
        response.status == 200,
        "GET {url}: status {}",
        response.status
    );
    Ok(serde_json::from_str(&response.body)?)
}
