//! The control socket: how `s3block resize SOCKET --size NEW` asks a running
//! s3block-nbd to grow its volume.
//!
//! Beside the NBD Unix socket, as `{socket}.control`, mode 0600 (its owner's
//! alone; connecting needs write permission). Each connection carries one
//! request line and gets one answer line (the frontends' control protocol,
//! `s3block_cache::frontend::control`). A grown volume is offered at its new
//! size to clients that connect from then on: NBD gives the size at the
//! handshake, so a connected client keeps the size it was given until it
//! connects again. Listening on TCP (`--listen`) there is no control socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use s3block_cache::frontend::VolumeGrow;
use s3block_cache::frontend::control::{MAX_REQUEST, answer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The control socket of the NBD socket `socket`.
pub(crate) fn control_path(socket: &Path) -> PathBuf {
    let mut path = socket.as_os_str().to_owned();
    path.push(".control");
    PathBuf::from(path)
}

/// The control socket, answering until stopped.
#[derive(Debug)]
pub(crate) struct ControlSocket {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl ControlSocket {
    /// Listens at `path` (a socket left there by an earlier run is
    /// replaced) for requests to `grow`.
    pub(crate) fn start(path: PathBuf, grow: Arc<VolumeGrow>) -> Result<ControlSocket, String> {
        let listener = super::listen::bind_private(&path)
            .map_err(|(what, e)| format!("control socket {}: {what}: {e}", path.display()))?;
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, grow.clone()));
                    }
                    Err(e) => {
                        tracing::warn!("control socket: cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(ControlSocket { path, task })
    }

    /// Where it listens.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Stops listening and removes the socket.
    pub(crate) fn stop(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One connection: a request line in (at most [`MAX_REQUEST`] bytes and a
/// newline, within [`REQUEST_TIMEOUT`]), the answer line out.
async fn serve(mut stream: UnixStream, grow: Arc<VolumeGrow>) {
    let mut request = Vec::with_capacity(64);
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        loop {
            let n = stream.read(&mut buf).await?;
            request.extend_from_slice(&buf[..n]);
            if n == 0 || request.contains(&b'\n') || request.len() > MAX_REQUEST {
                return Ok::<(), std::io::Error>(());
            }
        }
    })
    .await;
    let text = match read {
        Ok(Ok(())) => answer(&grow, &request).await.0,
        Ok(Err(e)) => format!("error reading the request: {e}\n"),
        Err(_) => format!("error no request within {}s\n", REQUEST_TIMEOUT.as_secs()),
    };
    let _ = stream.write_all(text.as_bytes()).await;
    let _ = stream.shutdown().await;
}
