//! The CLI's end of the control socket.

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use thiserror::Error;

use super::{
    frame,
    protocol::{Request, Response},
};

/// Largest reply the CLI reads.
const MAX_REPLY: u64 = 256 << 20;

/// Why the CLI could not get an answer.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("namewall is not running (no daemon listens on {0})")]
    NotRunning(PathBuf),
    #[error("permission denied on {0}: the control socket is root-only")]
    Denied(PathBuf),
    #[error("talking to the daemon on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the daemon's reply is not understood: {0}")]
    BadReply(String),
}

/// Sends one request and reads the reply.
pub fn call(socket: &Path, req: &Request) -> Result<Response, ClientError> {
    call_raw(socket, &frame::encode(req))
}

/// Connects to the daemon, telling "not running" and "not allowed" apart.
fn connect(socket: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(socket).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning(socket.to_owned()),
        io::ErrorKind::PermissionDenied => ClientError::Denied(socket.to_owned()),
        _ => ClientError::Io { path: socket.to_owned(), source: e },
    })
}

/// Sends a request whose reply is followed by more lines (`events
/// --follow`): `reply` gets the reply first, then `line` each line after
/// it until the daemon closes or `line` returns false.
pub fn call_streaming(
    socket: &Path,
    req: &Request,
    reply: impl FnOnce(&Response),
    mut line: impl FnMut(&str) -> bool,
) -> Result<Response, ClientError> {
    let io_err = |source| ClientError::Io { path: socket.to_owned(), source };
    let mut s = connect(socket)?;
    s.write_all(&frame::encode(req)).map_err(io_err)?;
    let mut r = BufReader::new(s);
    let mut first = String::new();
    r.read_line(&mut first).map_err(io_err)?;
    let resp: Response = serde_json::from_str(&first).map_err(|e| ClientError::BadReply(e.to_string()))?;
    reply(&resp);
    if resp.ok {
        for l in r.lines() {
            let l = l.map_err(io_err)?;
            if !line(&l) {
                break;
            }
        }
    }
    Ok(resp)
}

/// Sends raw bytes as a request (tests send malformed ones on purpose).
pub fn call_raw(socket: &Path, bytes: &[u8]) -> Result<Response, ClientError> {
    let io_err = |source| ClientError::Io { path: socket.to_owned(), source };
    let mut s = connect(socket)?;
    // A reload of a large list takes seconds; a daemon that says nothing
    // for this long is stuck.
    s.set_read_timeout(Some(Duration::from_mins(2))).map_err(io_err)?;
    // The daemon may refuse an oversized request before reading all of
    // it and close: its reply still counts.
    let write = s.write_all(bytes).and_then(|()| s.shutdown(std::net::Shutdown::Write));
    let mut reply = Vec::new();
    let read = BufReader::new(&mut s).take(MAX_REPLY).read_until(b'\n', &mut reply);
    if reply.is_empty() {
        return Err(io_err(write.err().or(read.err()).unwrap_or_else(|| io::ErrorKind::UnexpectedEof.into())));
    }
    serde_json::from_slice(&reply).map_err(|e| ClientError::BadReply(e.to_string()))
}
