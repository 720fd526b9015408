//! The daemon's end of the control socket: it binds the socket, reads one
//! bounded request per connection from root (or its own user), hands it to
//! the daemon's serving loop as a [`Job`], and writes the reply back (then,
//! for `events --follow`, the events as they come).
//!
//! The socket lives in a directory only root can enter (0700) and is
//! itself 0600; each peer's credentials (`SO_PEERCRED`) are checked too.

use std::{
    io,
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use thiserror::Error;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::{broadcast, mpsc, oneshot},
};
use tracing::warn;

use super::{
    frame,
    protocol::{ErrorBody, MAX_REQUEST, Reply, Request, Response},
};
use crate::files;

/// How long a client may take to send its request or read its reply.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the control socket could not be taken.
#[derive(Debug, Error)]
pub enum SocketError {
    #[error("creating {}", .dir.display())]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error("opening {}", .path.display())]
    Lock { path: PathBuf, source: io::Error },
    #[error("another namewall is running: it holds {} (stop it first)", .0.display())]
    Locked(PathBuf),
    #[error("another namewall is running: {} answers (stop it first)", .0.display())]
    Answers(PathBuf),
    #[error("removing the stale socket {}", .path.display())]
    Stale { path: PathBuf, source: io::Error },
    #[error("listening on {}", .path.display())]
    Listen { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The control socket, bound: root-only directory, 0600 socket, removed
/// when dropped.
pub struct ControlSocket {
    path: PathBuf,
    listener: UnixListener,
    /// `SOCKET.lock`, held (flock) for the daemon's life: two daemons
    /// starting at the same instant cannot both take the socket.
    _lock: std::fs::File,
}

impl ControlSocket {
    /// Takes the socket at `path`, refusing while another daemon holds it
    /// or answers on it; a socket left by a daemon that died is replaced.
    pub fn bind(path: &Path) -> Result<Self, SocketError> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        files::create_private_dir(dir).map_err(|source| SocketError::CreateDir { dir: dir.to_owned(), source })?;
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| SocketError::Lock { path: lock_path.clone(), source })?;
        // SAFETY: flock on a file we opened.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(SocketError::Locked(lock_path));
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(SocketError::Answers(path.to_owned()));
            }
            // Left by a daemon that died: nobody answers on it.
            std::fs::remove_file(path).map_err(|source| SocketError::Stale { path: path.to_owned(), source })?;
        }
        // Created 0600 from the start: no window where others could connect.
        // SAFETY: umask only swaps the process's file mode mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring it.
        unsafe { libc::umask(old) };
        let listener = bound.map_err(|source| SocketError::Listen { path: path.to_owned(), source })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Self { path: path.to_owned(), listener, _lock: lock })
    }

    /// Accepts connections in a task of the current runtime, each served by
    /// a task of its own: requests go to `jobs`, and followers of events
    /// subscribe to `follow`.
    pub fn serve(&self, jobs: mpsc::Sender<Job>, follow: Follow) -> io::Result<()> {
        let listener = tokio::net::UnixListener::from_std(self.listener.try_clone()?)?;
        tokio::spawn(accept(listener, jobs, follow));
        Ok(())
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A request from a connection, where its reply goes, and word from the
/// connection once the reply is written (the stop request waits for it).
pub struct Job {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
    pub written: oneshot::Receiver<()>,
}

/// The daemon's stream of events as frames, with sequence numbers.
pub type Follow = broadcast::Sender<(u64, Bytes)>;

/// Accepts control connections, each served by a task of its own.
async fn accept(listener: tokio::net::UnixListener, jobs: mpsc::Sender<Job>, follow: Follow) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, jobs.clone(), follow.clone()));
            }
            Err(e) => {
                warn!("accepting a control connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves one connection: checks the peer, reads one bounded request,
/// hands it to the daemon's loop, writes the reply.
async fn connection(mut stream: tokio::net::UnixStream, jobs: mpsc::Sender<Job>, follow: Follow) {
    let (written, written_rx) = oneshot::channel();
    let mut following = None;
    let reply = match read_request(&mut stream).await {
        Ok(request) => {
            // Subscribed before the snapshot is taken: nothing falls between.
            if matches!(request, Request::Events { follow: true, .. }) {
                following = Some(follow.subscribe());
            }
            let (tx, rx) = oneshot::channel();
            if jobs.send(Job { request, reply: tx, written: written_rx }).await.is_err() {
                return;
            }
            match rx.await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
        Err(e) => Response::err(e),
    };
    let sent = tokio::time::timeout(IO_TIMEOUT, stream.write_all(&frame::encode(&reply))).await;
    if let (Some(mut rx), Ok(Ok(())), Some(Reply::Events(list))) = (following, sent, reply.reply.as_ref()) {
        follow_events(&mut stream, &mut rx, list.last_seq).await;
    }
    let _ = stream.shutdown().await;
    let _ = written.send(());
}

/// Streams events after `after` to a follower until it hangs up (or is
/// too slow to keep up, which the broadcast channel bounds: the lines it
/// missed are skipped, not queued).
async fn follow_events(stream: &mut tokio::net::UnixStream, rx: &mut broadcast::Receiver<(u64, Bytes)>, after: u64) {
    use broadcast::error::RecvError;
    let (mut reader, mut writer) = stream.split();
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Ok((seq, line)) if seq > after => {
                    // A follower that stops reading is dropped, not waited for.
                    let sent = tokio::time::timeout(IO_TIMEOUT, writer.write_all(&line)).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        return;
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            // The client closed its end (or sent anything): done.
            _ = reader.read(&mut probe) => return,
        }
    }
}

/// Reads one request from root or the daemon's own user, within
/// [`IO_TIMEOUT`] and [`MAX_REQUEST`] bytes.
async fn read_request(stream: &mut tokio::net::UnixStream) -> Result<Request, ErrorBody> {
    let cred = stream.peer_cred().map_err(|e| ErrorBody::new(format!("peer credentials: {e}")))?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if cred.uid() != 0 && cred.uid() != me {
        warn!(uid = cred.uid(), pid = ?cred.pid(), "control request refused: not root");
        return Err(ErrorBody::new("permission denied: the control API is root-only"));
    }
    let buf = match tokio::time::timeout(IO_TIMEOUT, frame::read(&mut *stream, MAX_REQUEST + 1)).await {
        Err(_) => return Err(ErrorBody::new("timed out waiting for the request")),
        Ok(Err(e)) => return Err(ErrorBody::new(format!("reading the request: {e}"))),
        Ok(Ok(buf)) => buf,
    };
    if buf.len() > MAX_REQUEST {
        return Err(ErrorBody::new(format!("request larger than {MAX_REQUEST} bytes, refused; nothing was changed")));
    }
    serde_json::from_slice(&buf).map_err(|e| ErrorBody::new(format!("malformed request: {e}")))
}
