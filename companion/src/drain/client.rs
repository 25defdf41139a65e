//! HTTP/1.1 over the daemon's `companion.sock`: one `POST` per connection, the answer streamed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// How long a connect may take: a live daemon accepts at once; a hung one counts as
/// unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors of one request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing accepts on the socket (no daemon, or the socket is not mounted).
    #[error("cannot connect to {}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The exchange failed after connecting (the daemon went away).
    #[error("the request to {} failed", path.display())]
    Request {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
}

/// A client of the daemon's drain socket.
#[derive(Debug, Clone)]
pub struct DrainClient {
    path: PathBuf,
}

impl DrainClient {
    /// A client of the socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `POST path_and_query` with an empty body and returns the answer, whose body the
    /// caller streams.
    ///
    /// # Errors
    /// [`ClientError::Connect`] when the socket does not accept within 2 s,
    /// [`ClientError::Request`] when the exchange fails.
    pub async fn post(&self, path_and_query: &str) -> Result<Response<Incoming>, ClientError> {
        let connect_err = |source| ClientError::Connect {
            path: self.path.clone(),
            source,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.path))
            .await
            .map_err(|_| {
                connect_err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer within 2 s",
                ))
            })?
            .map_err(connect_err)?;
        let request_err = |source| ClientError::Request {
            path: self.path.clone(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(request_err)?;
        tokio::spawn(async move {
            // Ends when the answer is read or dropped; its error is the request's error.
            let _ = connection.await;
        });
        let request = Request::post(path_and_query)
            .header(header::HOST, "collector")
            .header(header::ACCEPT, "application/x-ndjson")
            .body(Empty::<Bytes>::new())
            .map_err(|e| connect_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        sender.send_request(request).await.map_err(request_err)
    }
}

/// The request target of a drain step: `/v1/drain`, with `phase=exited` for step A and
/// `expect=` the other containers' names, comma-separated, each percent-encoded.
pub fn drain_target(exited_phase: bool, expect: &[String]) -> String {
    let mut params = Vec::new();
    if exited_phase {
        params.push("phase=exited".to_owned());
    }
    if !expect.is_empty() {
        let names: Vec<String> = expect.iter().map(|n| percent_encode(n)).collect();
        params.push(format!("expect={}", names.join(",")));
    }
    if params.is_empty() {
        "/v1/drain".to_owned()
    } else {
        format!("/v1/drain?{}", params.join("&"))
    }
}

/// Percent-encodes a query value (RFC 3986: everything but unreserved characters), so a
/// comma in a name cannot split it.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let names = vec!["app".to_owned(), "side car,x".to_owned()];
        let cases: &[(bool, &[String], &str)] = &[
            (true, &[], "/v1/drain?phase=exited"),
            (false, &[], "/v1/drain"),
            (
                true,
                &names,
                "/v1/drain?phase=exited&expect=app,side%20car%2Cx",
            ),
            (false, &names[..1], "/v1/drain?expect=app"),
        ];
        for (exited, expect, target) in cases {
            assert_eq!(drain_target(*exited, expect), *target);
        }
    }
}
