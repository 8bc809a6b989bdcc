//! The listening socket: a Unix socket only its owner may use (the
//! default), or TCP when asked.
//!
//! A Unix socket is bound under a temporary name beside its path, given
//! mode 0600, and only then renamed into place, so no client ever finds it
//! with wider permissions. A socket file already at the path is refused if
//! a server answers on it (another `s3block-nbd` serves there), and removed
//! as stale if nobody does (a server that was killed). Anything else at the
//! path (a regular file, a directory) is left alone and refused. At exit
//! the socket is removed, unless another file has taken its place.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use super::options::Listen;

/// A connection accepted.
#[derive(Debug)]
pub(crate) enum Conn {
    /// On the Unix socket.
    Unix(UnixStream),
    /// Over TCP.
    Tcp(TcpStream),
}

/// The socket the server accepts on.
#[derive(Debug)]
pub(crate) enum Listener {
    /// A Unix socket, with its path and inode (to remove only our own at exit).
    Unix { listener: UnixListener, path: PathBuf, inode: u64, accepted: AtomicU64 },
    /// TCP.
    Tcp(TcpListener),
}

/// Refuses `path` when a server answers on it or it is not a socket;
/// removes a stale socket (nobody listening), saying so in the log.
pub(crate) fn claim_socket_path(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("--socket {shown}: {e}")),
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "--socket {shown}: the path exists and is not a socket; remove it or choose another path"
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(format!(
            "--socket {shown}: another server is listening on it (a second s3block-nbd?); stop it, or \
             give another --socket"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path)
                .map_err(|e| format!("--socket {shown}: cannot remove the stale socket: {e}"))?;
            tracing::info!("removed the stale socket {shown} (nobody was listening on it)");
            Ok(())
        }
        Err(e) => Err(format!("--socket {shown}: cannot tell whether a server listens on it: {e}")),
    }
}

impl Listener {
    /// Binds `listen`, inside the tokio runtime. Errors name the path or address.
    pub(crate) fn bind(listen: &Listen) -> Result<Listener, String> {
        match listen {
            Listen::Tcp(addr) => {
                let std =
                    std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
                std.set_nonblocking(true).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
                let listener =
                    TcpListener::from_std(std).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
                Ok(Listener::Tcp(listener))
            }
            Listen::Unix(path) => bind_unix(path),
        }
    }

    /// Where it listens, for the log.
    pub(crate) fn describe(&self) -> String {
        match self {
            Listener::Unix { path, .. } => format!("the Unix socket {} (mode 0600)", path.display()),
            Listener::Tcp(listener) => match listener.local_addr() {
                Ok(addr) => format!("TCP {addr}"),
                Err(_) => "TCP".to_owned(),
            },
        }
    }

    /// The next connection and a name for its peer.
    pub(crate) async fn accept(&self) -> std::io::Result<(Conn, String)> {
        match self {
            Listener::Unix { listener, path, accepted, .. } => {
                let (stream, _) = listener.accept().await?;
                let n = accepted.fetch_add(1, Ordering::Relaxed) + 1;
                Ok((Conn::Unix(stream), format!("{}#{n}", path.display())))
            }
            Listener::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                // Replies are written whole; small ones should not wait.
                let _ = stream.set_nodelay(true);
                Ok((Conn::Tcp(stream), peer.to_string()))
            }
        }
    }

    /// Stops listening; removes the Unix socket if it is still ours.
    pub(crate) fn close(self) {
        if let Listener::Unix { listener, path, inode, .. } = self {
            drop(listener);
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.ino() == inode)
                && let Err(e) = std::fs::remove_file(&path)
            {
                tracing::warn!("could not remove the socket {}: {e}", path.display());
            }
        }
    }
}

fn bind_unix(path: &Path) -> Result<Listener, String> {
    let shown = path.display();
    let err = |what: &str, e: std::io::Error| format!("--socket {shown}: {what}: {e}");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        // Only root's (or the service user's) by default, as the socket.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err(&format!("cannot create the directory {}", dir.display()), e))?;
    }
    claim_socket_path(path)?;
    let listener = bind_private(path).map_err(|(what, e)| err(what, e))?;
    let inode = std::fs::symlink_metadata(path).map_err(|e| err("cannot stat", e))?.ino();
    Ok(Listener::Unix { listener, path: path.to_owned(), inode, accepted: AtomicU64::new(0) })
}

/// A Unix socket listening at `path` that is its owner's (mode 0600) from
/// the moment it appears there: bound under a temporary name beside it,
/// given its mode, then renamed over `path` (replacing whatever was
/// there). An error names the step that failed.
pub(crate) fn bind_private(path: &Path) -> Result<UnixListener, (&'static str, std::io::Error)> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.new", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    let std = std::os::unix::net::UnixListener::bind(&temporary).map_err(|e| ("cannot bind", e))?;
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ("cannot set its mode to 0600", e))
        .and_then(|()| std::fs::rename(&temporary, path).map_err(|e| ("cannot move it into place", e)));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    std.set_nonblocking(true).map_err(|e| ("cannot listen", e))?;
    UnixListener::from_std(std).map_err(|e| ("cannot listen", e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_socket_is_private_a_stale_one_replaced_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/nbd.sock");
        let first = Listener::bind(&Listen::Unix(path.clone())).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dir.path().join("sub")).unwrap().permissions().mode() & 0o777, 0o700);
        // Live: refused, and left alone.
        let err = Listener::bind(&Listen::Unix(path.clone())).unwrap_err();
        assert!(err.contains("another server is listening"), "{err}");
        assert!(path.exists());
        // Stale (the listener gone, the file left): replaced.
        let Listener::Unix { listener, .. } = first else { panic!("a Unix listener") };
        drop(listener);
        assert!(path.exists());
        let second = Listener::bind(&Listen::Unix(path.clone())).unwrap();
        let client = tokio::net::UnixStream::connect(&path);
        let (accepted, client) = tokio::join!(second.accept(), client);
        client.unwrap();
        assert!(accepted.unwrap().1.ends_with("nbd.sock#1"));
        second.close();
        assert!(!path.exists(), "removed at exit");
        // Not a socket: refused, never removed.
        std::fs::write(&path, b"data").unwrap();
        let err = Listener::bind(&Listen::Unix(path.clone())).unwrap_err();
        assert!(err.contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }

    #[tokio::test]
    async fn tcp_listens_where_asked() {
        let listener = Listener::bind(&Listen::Tcp("127.0.0.1:0".parse().unwrap())).unwrap();
        assert!(listener.describe().starts_with("TCP 127.0.0.1:"), "{}", listener.describe());
        let err = Listener::bind(&Listen::Tcp("192.0.2.1:1".parse().unwrap())).unwrap_err();
        assert!(err.contains("192.0.2.1:1"), "{err}");
    }
}
