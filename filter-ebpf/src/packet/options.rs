//! IPv4 and TCP options Linux discards a segment for: loose or strict
//! source routing, CIPSO, and malformed IPv4 options (`ip_options_compile`; the
//! router after the filter and the server both refuse source routing with
//! `accept_source_route` off, the default), and a TCP MD5 (RFC 2385) or
//! AO (RFC 5925) signature option, which Linux drops unless a key is
//! configured for the peer (`tcp_inbound_hash`), and malformed TCP options.
//! A client can send such a
//! segment as a decoy the filter would read and the server never does.
//!
//! The options (at most 40 bytes of each) are copied into scratch memory
//! and walked one option per `bpf_loop` iteration, the walk's state in map
//! memory: a loop the verifier unrolls would be checked once per way
//! through it, which took the TLS stage past its limit.

use core::ffi::c_void;

use aya_ebpf::{helpers::bpf_loop, programs::XdpContext};

use super::{Layers, Packet};
use crate::{tables::scratch, verifier};

/// IPv4 option types (RFC 791, IANA): end, no-op, loose and strict source route.
const IPOPT_END: u8 = 0;
const IPOPT_NOOP: u8 = 1;
const IPOPT_LSRR: u8 = 0x83;
const IPOPT_SSRR: u8 = 0x89;
/// Record route, timestamp (RFC 791), and CIPSO (RFC 1108's successor,
/// refused unless a domain of interpretation is configured).
const IPOPT_RR: u8 = 7;
const IPOPT_TIMESTAMP: u8 = 0x44;
const IPOPT_CIPSO: u8 = 0x86;
/// TCP option kinds: end, no-op, MD5 signature (RFC 2385), TCP-AO (RFC 5925).
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_MD5SIG: u8 = 19;
const TCPOPT_AO: u8 = 29;

/// The fixed TCP header, before its options (RFC 9293 §3.1).
const TCP_FIXED: usize = 20;
/// Most option bytes of either header.
const MAX_OPTIONS: usize = 40;
/// Where the TCP options go in the scratch buffer (the IPv4 ones at 0).
const TCP_AT: u64 = 64;
/// Indices of `Scratch::csum_walk` during the walk: next IPv4 option, end
/// of the IPv4 options, next TCP option, end of the TCP options (its top
/// bit set when the segment is to be discarded).
const IP_POS: usize = 0;
const IP_END: usize = 1;
const TCP_POS: usize = 2;
const TCP_END: usize = 3;
const REJECTED: u64 = 1 << 63;

/// Whether Linux discards the segment `l` describes for its headers
/// (`tcp_discarded`): a wrong IPv4 header checksum (`ip_rcv_core`), or
/// options it refuses ([`rejected`]).
#[inline(always)]
pub fn headers_discarded(ctx: &XdpContext, l: &Layers) -> bool {
    (!l.ipv6 && !super::checksum::ipv4_header_checksum_ok(ctx, l.l2_len, l.l4_off)) || rejected(ctx, l)
}

/// Whether the segment `l` describes carries options Linux discards it for.
#[inline(always)]
fn rejected(ctx: &XdpContext, l: &Layers) -> bool {
    let ip_opts = if l.ipv6 { 0 } else { (l.l4_off - l.l2_len).saturating_sub(20) };
    let tcp_opts = (l.payload_off - l.l4_off).saturating_sub(TCP_FIXED);
    if ip_opts == 0 && (tcp_opts == 0 || timestamps_only(ctx, l, tcp_opts)) {
        return false;
    }
    let Some(s) = scratch() else { return true };
    let buf = s.csum.as_mut_ptr().cast::<u8>();
    for (len, from, to) in [(ip_opts, l.l2_len + 20, 0), (tcp_opts, l.l4_off + TCP_FIXED, TCP_AT as usize)] {
        if len == 0 {
            continue;
        }
        // Through `opaque`: the verifier must see both bounds of the copy.
        let n = verifier::opaque(len);
        if n == 0 || n > MAX_OPTIONS {
            return true;
        }
        // SAFETY: `to + n <= 104` bytes of the 512-byte scratch buffer.
        if !Packet::load(ctx, from, unsafe { buf.add(to) }, n) {
            return true;
        }
    }
    s.csum_walk = [0, ip_opts as u64, TCP_AT, TCP_AT + tcp_opts as u64];
    let mut unused = 0u64;
    // SAFETY: a static callback; its context pointer is never read.
    unsafe { bpf_loop(2 * MAX_OPTIONS as u32, step as *mut c_void, (&raw mut unused).cast(), 0) };
    // SAFETY: this CPU's scratch memory, written by the callbacks.
    let end = unsafe { (&raw const s.csum_walk[TCP_END]).read_volatile() };
    end & REJECTED != 0
}

/// Whether the TCP options are only a timestamp after two no-ops, as Linux
/// sends them on every segment after the handshake: known good without a
/// walk.
#[inline(always)]
fn timestamps_only(ctx: &XdpContext, l: &Layers, tcp_opts: usize) -> bool {
    tcp_opts == 12
        && Packet::new(ctx).bytes::<4>(l.l4_off + TCP_FIXED).is_some_and(|b| b == [TCPOPT_NOP, TCPOPT_NOP, 8, 10])
}

/// One option of the walk: the IPv4 ones first, then the TCP ones. Returns
/// 1 to stop the loop.
extern "C" fn step(_index: u64, _arg: *mut c_void) -> i64 {
    let Some(s) = scratch() else { return 1 };
    let buf = s.csum.as_ptr().cast::<u8>();
    // SAFETY: a masked index into the 512-byte scratch buffer.
    let byte = |i: u64| unsafe { buf.add((i & 127) as usize).read() };
    let w = &mut s.csum_walk;
    let (pos, end) = (w[IP_POS], w[IP_END]);
    if pos < end {
        match byte(pos) {
            IPOPT_END => w[IP_POS] = end,
            IPOPT_NOOP => w[IP_POS] = pos + 1,
            IPOPT_LSRR | IPOPT_SSRR | IPOPT_CIPSO => return reject(w),
            kind => {
                let n = u64::from(byte(pos + 1));
                if pos + 1 >= end || n < 2 || pos + n > end {
                    return reject(w);
                }
                // Record route and timestamp with a pointer before their
                // data (`ip_options_compile`).
                let pointer = byte(pos + 2);
                if (kind == IPOPT_RR && (n < 3 || pointer < 4)) || (kind == IPOPT_TIMESTAMP && (n < 4 || pointer < 5)) {
                    return reject(w);
                }
                w[IP_POS] = pos + n;
            }
        }
        return 0;
    }
    let (pos, end) = (w[TCP_POS], w[TCP_END] & !REJECTED);
    if pos >= end {
        return 1;
    }
    match byte(pos) {
        TCPOPT_EOL => return 1,
        TCPOPT_NOP => w[TCP_POS] = pos + 1,
        TCPOPT_MD5SIG | TCPOPT_AO => return reject(w),
        _ => {
            // A length below 2 or past the options' end: Linux stops parsing
            // there (`tcp_parse_options`), and from 6.7 drops the segment
            // when it could still hold a signature (`tcp_inbound_hash`). No
            // stack sends one: discarded here either way.
            let n = u64::from(byte(pos + 1));
            if pos + 1 >= end || n < 2 || pos + n > end {
                return reject(w);
            }
            w[TCP_POS] = pos + n;
        }
    }
    0
}

#[inline(always)]
fn reject(w: &mut [u64; 4]) -> i64 {
    w[TCP_END] |= REJECTED;
    1
}
