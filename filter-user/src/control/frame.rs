//! Frames of the control protocol: one JSON value and a newline. Requests,
//! replies and the event lines followers get are all frames.

use bytes::{BufMut as _, Bytes, BytesMut};
use memchr::memchr;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// `value` as one frame, in a buffer shared without copies (an event line
/// goes to every follower).
pub fn encode(value: &impl Serialize) -> Bytes {
    let mut w = BytesMut::with_capacity(256).writer();
    serde_json::to_writer(&mut w, value).expect("control messages serialise");
    let mut buf = w.into_inner();
    buf.put_u8(b'\n');
    buf.freeze()
}

/// Reads from `reader` until the end of the first frame, at most `limit`
/// bytes: the frame with its newline, or all that came when the peer
/// stopped sending (no newline) or `limit` bytes came without one.
pub async fn read(reader: impl AsyncRead + Unpin, limit: usize) -> std::io::Result<BytesMut> {
    let mut reader = reader.take(limit as u64);
    let mut buf = BytesMut::with_capacity(limit.min(8192));
    loop {
        let from = buf.len();
        if reader.read_buf(&mut buf).await? == 0 {
            return Ok(buf);
        }
        if let Some(at) = memchr(b'\n', &buf[from..]) {
            buf.truncate(from + at + 1);
            return Ok(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_end_at_their_newline_or_the_limit() {
        assert_eq!(&encode(&[1, 2])[..], b"[1,2]\n");
        for (input, limit, want) in [
            (&b"{}\n{\"x\":1}\n"[..], 100, &b"{}\n"[..]),
            (b"{\"a\":1}", 100, b"{\"a\":1}"),
            (b"0123456789\n", 4, b"0123"),
            (b"", 4, b""),
        ] {
            assert_eq!(&read(input, limit).await.unwrap()[..], want, "{input:?}");
        }
    }
}
