//! The CLI's side of the control API: one HTTP/1.1 request per connection over the unix
//! socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::ControlError;

/// How long the CLI waits for the daemon to accept: a daemon that does not accept in this
/// time is treated as absent, and `inspect` answers offline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A client of one daemon's control socket.
#[derive(Clone, Debug)]
pub struct ControlClient {
    path: PathBuf,
}

impl ControlClient {
    /// A client of the socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `GET path_and_query` and returns the status and the response, whose body the
    /// caller reads (whole, or frame by frame for a stream).
    ///
    /// # Errors
    /// [`ControlError::Connect`] when nothing answers on the socket (no daemon),
    /// [`ControlError::Request`] when the exchange fails.
    pub async fn send(&self, path_and_query: &str) -> Result<(StatusCode, Incoming), ControlError> {
        let connect_err = |source| ControlError::Connect {
            path: self.path.clone(),
            source,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.path))
            .await
            .map_err(|_| {
                connect_err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer",
                ))
            })?
            .map_err(connect_err)?;
        let request_err = |source| ControlError::Request {
            path: self.path.clone(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(request_err)?;
        tokio::spawn(async move {
            // Ends when the response is read or dropped; its error is the request's error.
            let _ = connection.await;
        });
        let request = Request::get(path_and_query)
            .header(header::HOST, "collector")
            .body(Empty::<Bytes>::new())
            .map_err(|e| connect_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        let response = sender.send_request(request).await.map_err(request_err)?;
        Ok((response.status(), response.into_body()))
    }

    /// Sends `GET path_and_query` and reads the whole body.
    ///
    /// # Errors
    /// As [`ControlClient::send`].
    pub async fn get(&self, path_and_query: &str) -> Result<(StatusCode, Bytes), ControlError> {
        let (status, body) = self.send(path_and_query).await?;
        let bytes = body
            .collect()
            .await
            .map_err(|source| ControlError::Request {
                path: self.path.clone(),
                source,
            })?
            .to_bytes();
        Ok((status, bytes))
    }
}

/// Percent-encodes a query parameter value (RFC 3986: everything but unreserved characters).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded query value (`+` is a space, as forms send it); `None` when an
/// escape is malformed or the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_round_trip() {
        for s in [
            "arn:aws:ecs:us-east-1:1:task/c/abc",
            "/system.slice/docker-x.scope",
            "a b+c%",
            "é",
        ] {
            assert_eq!(percent_decode(&percent_encode(s)).as_deref(), Some(s));
        }
        assert_eq!(percent_encode("a/b:c"), "a%2Fb%3Ac");
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
