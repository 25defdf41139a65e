//! The task metadata endpoint v4 (`$ECS_CONTAINER_METADATA_URI_V4`): the task ARN and the
//! names of the task's other containers, which the drain calls pass as `expect`.
//!
//! Plain HTTP/1.1 over TCP to an IP literal (the agent serves it on a link-local address), so
//! the static binary never needs DNS or NSS; a host name is resolved through tokio as a
//! fallback.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

/// The whole exchange with the endpoint: it answers in milliseconds on the same host, and
/// identity is only informative, so start-up never waits long for it.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read (a task of 10 containers is about 20 KB).
const MAX_BODY: usize = 1024 * 1024;

/// Errors of the metadata endpoint.
#[derive(Debug, thiserror::Error)]
pub enum TmdsError {
    /// The URI in the environment is not usable.
    #[error("invalid metadata URI {uri:?}: {reason}")]
    InvalidUri {
        /// The URI.
        uri: String,
        /// What is wrong.
        reason: String,
    },
    /// The host name did not resolve.
    #[error("cannot resolve {host}")]
    Resolve {
        /// The host.
        host: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TCP connection failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("GET {uri} failed")]
    Request {
        /// The URI.
        uri: String,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The answer was not 200.
    #[error("GET {uri} answered {status}")]
    Status {
        /// The URI.
        uri: String,
        /// The status.
        status: http::StatusCode,
    },
    /// The body could not be read (or was over 1 MiB).
    #[error("reading the answer of GET {uri} failed: {reason}")]
    Body {
        /// The URI.
        uri: String,
        /// Why.
        reason: String,
    },
    /// The body is not the expected JSON.
    #[error("the answer of GET {uri} is not a task/container object")]
    Parse {
        /// The URI.
        uri: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Nothing answered within the timeout.
    #[error("GET {uri} did not answer within {TIMEOUT:?}")]
    Timeout {
        /// The URI.
        uri: String,
    },
}

/// `GET .../task`: the fields we use (newer agents add fields; they are ignored).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct TaskMetadata {
    /// The task ARN.
    #[serde(rename = "TaskARN")]
    pub task_arn: String,
    /// The task's containers.
    #[serde(rename = "Containers", default)]
    pub containers: Vec<ContainerMetadata>,
}

/// One container, as `GET ...` (own container) or in a task's `Containers`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ContainerMetadata {
    /// The name from the task definition.
    #[serde(rename = "Name")]
    pub name: String,
    /// The container id (ECS calls it `DockerId`).
    #[serde(rename = "DockerId", default)]
    pub container_id: Option<String>,
}

/// Parses a `GET .../task` answer.
///
/// # Errors
/// The JSON error when the body is not a task object.
pub fn parse_task(body: &[u8]) -> Result<TaskMetadata, serde_json::Error> {
    serde_json::from_slice(body)
}

/// Parses a `GET ${ECS_CONTAINER_METADATA_URI_V4}` answer (the caller's own container).
///
/// # Errors
/// The JSON error when the body is not a container object.
pub fn parse_container(body: &[u8]) -> Result<ContainerMetadata, serde_json::Error> {
    serde_json::from_slice(body)
}

/// `GET uri` with the timeout; the body, when 200.
///
/// # Errors
/// See [`TmdsError`].
pub async fn get(uri: &str) -> Result<Bytes, TmdsError> {
    tokio::time::timeout(TIMEOUT, get_inner(uri))
        .await
        .map_err(|_| TmdsError::Timeout {
            uri: uri.to_owned(),
        })?
}

async fn get_inner(uri_text: &str) -> Result<Bytes, TmdsError> {
    let invalid = |reason: &str| TmdsError::InvalidUri {
        uri: uri_text.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = uri_text.parse().map_err(|_| invalid("not a URI"))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid("only http:// is supported"));
    }
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let addr = resolve(host, port).await?;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| TmdsError::Connect { addr, source })?;
    let request_err = |source| TmdsError::Request {
        uri: uri_text.to_owned(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(request_err)?;
    tokio::spawn(async move {
        // Ends with the response; its error is the request's error.
        let _ = connection.await;
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let request = Request::get(path)
        .header(header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|_| invalid("cannot build a request for it"))?;
    let response = sender.send_request(request).await.map_err(request_err)?;
    if response.status() != http::StatusCode::OK {
        return Err(TmdsError::Status {
            uri: uri_text.to_owned(),
            status: response.status(),
        });
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| TmdsError::Body {
            uri: uri_text.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(body.to_bytes())
}

/// An IP literal as it is; a name through the system resolver.
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, TmdsError> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let resolve_err = |source| TmdsError::Resolve {
        host: host.to_owned(),
        source,
    };
    tokio::net::lookup_host((host, port))
        .await
        .map_err(resolve_err)?
        .next()
        .ok_or_else(|| {
            resolve_err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no address",
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_fixtures() {
        let ec2 = parse_task(include_bytes!(
            "../../testdata/tmds-v4-task-ec2-awsvpc.json"
        ))
        .unwrap();
        assert_eq!(
            ec2.task_arn,
            "arn:aws:ecs:us-west-2:111122223333:task/default/158d1c8083dd49d6b527399fd6414f5c"
        );
        let names: Vec<&str> = ec2.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["~internal~ecs~pause", "curl"]);
        assert_eq!(
            ec2.containers[1].container_id.as_deref(),
            Some("ee08638adaaf009d78c248913f629e38299471d45fe7dc944d1039077e3424ca")
        );
        let fargate =
            parse_task(include_bytes!("../../testdata/tmds-v4-task-fargate.json")).unwrap();
        assert!(
            fargate
                .task_arn
                .ends_with("/bfa2636268144d039771334145e490c5")
        );
        assert_eq!(fargate.containers.len(), 2);
        assert!(parse_task(b"{}").is_err());
        assert!(parse_task(b"not json").is_err());
    }

    #[test]
    fn container_fixtures() {
        let ec2 = parse_container(include_bytes!(
            "../../testdata/tmds-v4-container-ec2-awsvpc.json"
        ))
        .unwrap();
        assert!(ec2.container_id.is_some());
        let fargate = parse_container(include_bytes!(
            "../../testdata/tmds-v4-container-fargate.json"
        ))
        .unwrap();
        assert!(!fargate.name.is_empty());
    }

    /// A local endpoint answering the fixture, reached by an IP literal.
    #[tokio::test]
    async fn get_reads_the_answer() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = vec![0u8; 4096];
            let n = conn.read(&mut head).await.unwrap();
            assert!(head[..n].starts_with(b"GET /v4/abc/task HTTP/1.1\r\n"));
            let body = include_bytes!("../../testdata/tmds-v4-task-fargate.json");
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            conn.write_all(reply.as_bytes()).await.unwrap();
            conn.write_all(body).await.unwrap();
        });
        let body = get(&format!("http://{addr}/v4/abc/task")).await.unwrap();
        assert_eq!(parse_task(&body).unwrap().containers.len(), 2);
        assert!(matches!(
            get("https://169.254.170.2/v4").await,
            Err(TmdsError::InvalidUri { .. })
        ));
    }
}
