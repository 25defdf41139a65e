//! The daemon's unix sockets: binding one that every container may reach, and serving one
//! HTTP/1 connection until the daemon stops.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::pin::pin;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Binds `path` for any process that can reach it (mode 0666: the server asks the kernel who
/// the caller is, `SO_PEERCRED`, rather than trusting the file mode), creating its directory
/// (0755: containers traverse it, only root writes in it) and replacing a socket an earlier
/// run left, never another kind of file.
///
/// # Errors
/// The directory or socket cannot be made, or something other than a socket is at `path`
/// (`AlreadyExists`).
pub fn bind_shared(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serves one connection with `service` until it ends, or until `stop`, when a request in
/// progress is finished (a stream gets its end line) and the connection closed.
pub(super) async fn serve_http<S>(
    stream: UnixStream,
    service: S,
    stop: CancellationToken,
    api: &'static str,
) where
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = pin!(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(api, error = %e, "API connection ended with an error.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_another_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task/x.sock");
        drop(bind_shared(&path).unwrap());
        let listener = bind_shared(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&path), mode(path.parent().unwrap())), (0o666, 0o755));
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "data").unwrap();
        let err = bind_shared(&path).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
    }
}
