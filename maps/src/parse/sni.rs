//! The fast path for the common ClientHello: one TLS record, starting at the
//! first byte of a segment, with the server_name in that segment.
//!
//! [`crate::parse::tls`]'s state machine handles every ClientHello, cut anywhere,
//! in any number of records and segments; run one field per `bpf_loop`
//! iteration it costs the kernel program about 20 ns a field. Almost every
//! ClientHello a filter sees is simpler: its first segment starts the record
//! and the message, and holds the name. [`locate`] walks such a segment in
//! one pass of plain code, from field to field by their lengths, and says
//! where the name is; for anything it does not handle it answers
//! [`Located::Slow`] and the caller runs the state machine from the start of
//! the segment, so nothing is lost but time.
//!
//! It checks what the state machine checks on the way to the name (the same
//! bounds on the vectors before the extensions, every length within its
//! container, the server_name_list holding exactly one host_name), so the two
//! agree on every input: `fast_path_agrees_with_the_state_machine` compares
//! them on real and mutated ClientHellos.
//!
//! Every index is masked into the buffer and every loop has a constant bound:
//! the kernel runs this under the BPF verifier.

#![expect(
    clippy::doc_markdown,
    reason = "TLS terms (ClientHello, server_name, host_name) are written as the RFCs write them"
)]

use crate::parse::tls::{MAX_SNI, TLS_BUF};

/// Extensions walked before giving up to the state machine. Chromium sends
/// about 18, rustls 10 to 12; the state machine takes any number.
pub const MAX_EXTENSIONS: usize = 32;

/// encrypted_client_hello (draft-ietf-tls-esni).
const EXT_ECH: usize = 0xfe0d;

/// Where [`locate`] found the server name, or why it could not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Located {
    /// The host_name is `len` bytes at `off` in the buffer; `ech` says
    /// whether encrypted_client_hello came before it (or anywhere, when the
    /// caller asked for the whole list).
    Sni { off: usize, len: usize, ech: bool },
    /// The whole ClientHello is in the buffer and has no server_name.
    NoSni { ech: bool },
    /// Not handled here: the state machine must run.
    Slow,
}

impl Located {
    /// A code for passing through map memory: 0 slow, 1 no name, 2 name,
    /// plus 4 for ECH; the offset and length go beside it.
    pub const fn code(self) -> u64 {
        match self {
            Located::Slow => 0,
            Located::NoSni { ech } => 1 | (ech as u64) << 2,
            Located::Sni { ech, .. } => 2 | (ech as u64) << 2,
        }
    }
}

/// `n`, hidden from LLVM but not from the verifier: a constant loop bound
/// makes LLVM unroll the loop (32 copies of its body, and the kernel
/// program's jumps reach only 32767 instructions), while the verifier needs
/// the bound to see that the loop ends, and it follows the constant through
/// the stack.
#[inline(always)]
fn bound(n: usize) -> usize {
    // SAFETY: reading a valid local.
    unsafe { core::ptr::read_volatile(&raw const n) }
}

/// Where [`locate`] reads the segment's bytes from: the kernel program reads
/// the packet itself (bounds-checked, `None` past the first buffer of a
/// multi-buffer frame, which sends the segment down the slow path), tests a
/// buffer.
pub trait Bytes {
    /// Byte `i` of the segment's payload, if it can be read here.
    fn at(&self, i: usize) -> Option<u8>;

    /// Bytes `i..i + 4` as a big-endian word: one bounds check where the
    /// reader has to check.
    #[inline(always)]
    fn be32(&self, i: usize) -> Option<u32> {
        Some(u32::from_be_bytes([self.at(i)?, self.at(i + 1)?, self.at(i + 2)?, self.at(i + 3)?]))
    }
}

impl Bytes for [u8; TLS_BUF] {
    #[inline(always)]
    fn at(&self, i: usize) -> Option<u8> {
        Some(self[i & (TLS_BUF - 1)])
    }
}

/// Reads a byte, or answers [`Located::Slow`] from the enclosing function.
macro_rules! byte {
    ($b:expr, $i:expr) => {
        (match $b.at($i) {
            Some(v) => v as usize,
            None => return Located::Slow,
        })
    };
}

/// Reads a big-endian 32-bit word, or answers [`Located::Slow`].
macro_rules! be32 {
    ($b:expr, $i:expr) => {
        (match $b.be32($i) {
            Some(v) => v as usize,
            None => return Located::Slow,
        })
    };
}

/// Reads a big-endian 16-bit field, or answers [`Located::Slow`].
macro_rules! be16 {
    ($b:expr, $i:expr) => {
        (byte!($b, $i) << 8 | byte!($b, $i + 1))
    };
}

/// Finds the server name in the first `len` bytes of `buf`, a segment's
/// payload that starts a TLS stream. With `whole_list`, reads on past the
/// name to the end of the extensions (to learn about ECH); without, stops
/// at the name.
#[inline(always)]
pub fn locate<B: Bytes + ?Sized>(buf: &B, len: usize, whole_list: bool) -> Located {
    let len = if len < TLS_BUF { len } else { TLS_BUF };
    // Record header and handshake header: a handshake record carrying a
    // ClientHello, the whole message in this record. The record version is
    // ignored, as the state machine and servers ignore it.
    if len < 9 {
        return Located::Slow;
    }
    // 16 VV VV LL | LL 01 BB BB | BB: type, version, record length;
    // handshake type and body length.
    let (w0, w1, b8) = (be32!(buf, 0), be32!(buf, 4), byte!(buf, 8));
    if w0 >> 24 != 0x16 || (w1 >> 16) & 0xff != 0x01 {
        return Located::Slow;
    }
    let record_end = 5 + ((w0 & 0xff) << 8 | w1 >> 24);
    let body_len = (w1 & 0xffff) << 8 | b8;
    let end = 9 + body_len;
    if end > record_end {
        return Located::Slow;
    }
    // What of the message this segment holds.
    let avail = if end < len { end } else { len };
    // legacy_version and random, then the three vectors, bounded as the
    // state machine bounds them (RFC 8446 §4.1.2).
    let mut p = 9 + 2 + 32;
    if p + 1 > avail {
        return Located::Slow;
    }
    let sid = byte!(buf, p);
    if sid > 32 {
        return Located::Slow;
    }
    p += 1 + sid;
    if p + 2 > avail {
        return Located::Slow;
    }
    let suites = be16!(buf, p);
    if suites < 2 || suites % 2 != 0 {
        return Located::Slow;
    }
    p += 2 + suites;
    if p + 1 > avail {
        return Located::Slow;
    }
    let methods = byte!(buf, p);
    if methods < 1 {
        return Located::Slow;
    }
    p += 1 + methods;
    if p == end {
        // No extensions at all; whole only if the segment holds it.
        return if end <= len { Located::NoSni { ech: false } } else { Located::Slow };
    }
    if p + 2 > avail {
        return Located::Slow;
    }
    // The extensions block fills the rest of the message exactly.
    if p + 2 + be16!(buf, p) != end {
        return Located::Slow;
    }
    p += 2;
    let mut ech = false;
    let mut name: Option<(usize, usize)> = None;
    for _ in 0..bound(MAX_EXTENSIONS) {
        if p == end {
            // Every extension's header was seen, but decide only on a whole
            // message, as the state machine does.
            if end > len {
                return Located::Slow;
            }
            return match name {
                Some((off, len)) => Located::Sni { off, len, ech },
                // The whole message was walked: it has no name.
                None => Located::NoSni { ech },
            };
        }
        if p + 4 > avail {
            return Located::Slow;
        }
        let header = be32!(buf, p);
        let (kind, ext_len) = (header >> 16, header & 0xffff);
        let data = p + 4;
        if data + ext_len > end {
            return Located::Slow;
        }
        if kind == EXT_ECH {
            ech = true;
        } else if kind == 0 {
            // server_name_list (2), then exactly one entry: host_name (0),
            // its length (2) and the name, filling the list. Lists of other
            // shapes (other name types, more entries) are the state
            // machine's.
            if name.is_some() || ext_len < 2 + 3 + 1 || data + 5 > avail {
                return Located::Slow;
            }
            // list length (2), name type (1), host_name length (2).
            let (head, tail) = (be32!(buf, data), byte!(buf, data + 4));
            let list = head >> 16;
            let host = (head & 0xff) << 8 | tail;
            if list + 2 != ext_len || (head >> 8) & 0xff != 0 || host + 3 != list || host >= MAX_SNI {
                return Located::Slow;
            }
            if data + 5 + host > avail {
                return Located::Slow;
            }
            if !whole_list {
                return Located::Sni { off: data + 5, len: host, ech };
            }
            name = Some((data + 5, host));
        }
        p = data + ext_len;
    }
    Located::Slow
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::{vec, vec::Vec};

    use super::*;

    fn buf(bytes: &[u8]) -> ([u8; TLS_BUF], usize) {
        let mut b = [0u8; TLS_BUF];
        b[..bytes.len()].copy_from_slice(bytes);
        (b, bytes.len())
    }

    /// A ClientHello record with `exts` (type, data) after minimal fixed fields.
    fn hello(exts: &[(usize, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        let mut block = Vec::new();
        for (t, d) in exts {
            block.extend_from_slice(&(*t as u16).to_be_bytes());
            block.extend_from_slice(&(d.len() as u16).to_be_bytes());
            block.extend_from_slice(d);
        }
        if !exts.is_empty() {
            body.extend_from_slice(&(block.len() as u16).to_be_bytes());
            body.extend_from_slice(&block);
        }
        let mut msg = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        msg.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01, (msg.len() >> 8) as u8, msg.len() as u8];
        rec.extend_from_slice(&msg);
        rec
    }

    fn sni(name: &[u8]) -> (usize, Vec<u8>) {
        let mut d = ((name.len() + 3) as u16).to_be_bytes().to_vec();
        d.push(0);
        d.extend_from_slice(&(name.len() as u16).to_be_bytes());
        d.extend_from_slice(name);
        (0, d)
    }

    #[test]
    fn finds_the_name_and_ech() {
        let h = hello(&[(10, vec![0, 2, 0, 29]), sni(b"example.com"), (EXT_ECH, vec![0; 9])]);
        let (b, n) = buf(&h);
        let Located::Sni { off, len, ech } = locate(&b, n, false) else { panic!("{:?}", locate(&b, n, false)) };
        assert_eq!((&h[off..off + len], ech), (&b"example.com"[..], false));
        assert_eq!(locate(&b, n, true), Located::Sni { off, len, ech: true });
        // Cut inside the extension after the name: the name is still found,
        // but the whole list is not there.
        assert_eq!(locate(&b, n - 3, false), Located::Sni { off, len, ech: false });
        assert_eq!(locate(&b, n - 3, true), Located::Slow);
        assert_eq!(locate(&b, n - 11, true), Located::Slow);
        // Cut inside the name: slow.
        assert_eq!(locate(&b, off + 3, false), Located::Slow);
    }

    #[test]
    fn no_name_only_when_whole() {
        let h = hello(&[(10, vec![0, 2, 0, 29]), (EXT_ECH, vec![1; 4])]);
        let (b, n) = buf(&h);
        assert_eq!(locate(&b, n, false), Located::NoSni { ech: true });
        assert_eq!(locate(&b, n - 1, false), Located::Slow);
        let bare = hello(&[]);
        let (b, n) = buf(&bare);
        assert_eq!(locate(&b, n, false), Located::NoSni { ech: false });
    }

    /// Where the fast path answers, the state machine must agree: same name
    /// bytes, or both no name. Every byte of several ClientHellos mutated,
    /// each at its full length and cut short.
    #[test]
    fn fast_path_agrees_with_the_state_machine() {
        use crate::parse::tls::{Step, TlsState, feed};
        let check = |bytes: &[u8]| {
            let (b, n) = buf(bytes);
            for whole in [false, true] {
                let mut st = TlsState::new();
                match locate(&b, n, whole) {
                    Located::Slow => {}
                    Located::Sni { off, len, .. } => {
                        assert_eq!(feed(&mut st, bytes), Step::Sni, "{bytes:02x?}");
                        assert_eq!(st.name(), &bytes[off..off + len], "{bytes:02x?}");
                    }
                    Located::NoSni { .. } => {
                        assert_eq!(feed(&mut st, bytes), Step::End, "{bytes:02x?}");
                        assert!(!st.has_sni(), "{bytes:02x?}");
                    }
                }
            }
        };
        let bases = [
            hello(&[(10, vec![0, 2, 0, 29]), sni(b"www.example.com"), (EXT_ECH, vec![0; 9])]),
            hello(&[sni(b"x")]),
            hello(&[(5, vec![1, 0, 0, 0, 0]), (EXT_ECH, vec![2; 20])]),
            hello(&[]),
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut answered = 0;
        for base in &bases {
            for i in 0..base.len() {
                for m in [0x00, 0xff, base[i] ^ 1, base[i].wrapping_add(1), next() as u8] {
                    let mut x = base.clone();
                    x[i] = m;
                    check(&x);
                    let cut = 1 + next() as usize % x.len();
                    check(&x[..cut]);
                    let (b, n) = buf(&x);
                    answered += usize::from(locate(&b, n, false) != Located::Slow);
                }
            }
        }
        // The mutations mostly leave the fast path's answer standing.
        assert!(answered > 100, "{answered}");
    }

    #[test]
    fn leaves_the_unusual_to_the_state_machine() {
        let good = hello(&[sni(b"a.example")]);
        let slow = |bytes: &[u8]| {
            let (b, n) = buf(bytes);
            locate(&b, n, false) == Located::Slow
        };
        assert!(!slow(&good));
        // Not a handshake record / not a ClientHello.
        let mut x = good.clone();
        x[0] = 0x17;
        assert!(slow(&x));
        let mut x = good.clone();
        x[5] = 2;
        assert!(slow(&x));
        // The message runs past its record (record-layer fragmentation).
        let mut x = good.clone();
        x[4] -= 1;
        assert!(slow(&x));
        // An extensions block that does not fill the message.
        let mut x = good.clone();
        let at = 9 + 2 + 32 + 1 + 4 + 2;
        x[at + 1] -= 1;
        assert!(slow(&x));
        // A server_name_list whose length disagrees with the extension's.
        let mut x = good.clone();
        x[at + 2 + 4 + 1] += 1;
        assert!(slow(&x));
        // Two server_name extensions: the first decides, as in the state
        // machine, unless the whole list is wanted.
        let two = hello(&[sni(b"a.example"), sni(b"b.example")]);
        let (b, n) = buf(&two);
        assert!(matches!(locate(&b, n, false), Located::Sni { len: 9, .. }));
        assert_eq!(locate(&b, n, true), Located::Slow);
        // A session id longer than 32 bytes.
        let mut x = good;
        x[9 + 2 + 32] = 33;
        assert!(slow(&x));
    }
}
