//! Replies written in place of the packet, for `XDP_TX`: a blocked DNS
//! query over UDP turned into its answer, a blocked ClientHello's segment
//! into a TCP reset toward the client.
//!
//! The answer is the query's own Ethernet header (addresses swapped, VLAN
//! tags and PPPoE session header kept, the PPPoE length set), a fresh IPv4 header without options or an IPv6 header without
//! extension headers (addresses swapped), UDP with ports swapped, the DNS
//! header with QR/RA and the RCODE set, the question as asked, and for
//! sinkhole answers one A or AAAA record. Whatever followed the question
//! (EDNS OPT, padding) is cut: an answer without OPT is what a server that
//! does not do EDNS sends (RFC 6891 §7).
//!
//! The headers are assembled in the scratch map and copied in and out of
//! the packet with `bpf_xdp_load_bytes`/`bpf_xdp_store_bytes`: the BPF stack
//! (512 bytes for the whole call chain) cannot hold them.

use aya_ebpf::{
    helpers::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use maps::{Answer, REPLY_BUF, Scratch, parse::checksum, parse::name::QUESTION_BUF};

use crate::{
    packet::{
        Layers, MAX_L2_LEN, Packet,
        headers::{DNS_HLEN, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_RST},
    },
    verifier,
};

/// RCODE values (RFC 1035 §4.1.1).
pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_REFUSED: u8 = 5;
/// `Answer::rcode` of a blocked query over TCP: no answer, a reset.
pub const RESET: u8 = 0xff;

const QTYPE_A: u16 = 1;
const QTYPE_AAAA: u16 = 28;
const QCLASS_IN: u16 = 1;

/// Hop limit / TTL of answers.
const ANSWER_HOP_LIMIT: u8 = 64;

/// Layout of `Scratch::reply`: what is read from the query, then the
/// answer's headers (at most 38 + 40 + 8 + 12 = 98 bytes), then its record.
const IN_L2: usize = 0; // MAX_L2_LEN (38) bytes: Ethernet header, VLAN tags, PPPoE
const IN_IP_FIRST: usize = 40; // 4 bytes: version, traffic class / TOS, flow label
const IN_SRC: usize = 44; // 16 bytes (4 for IPv4)
const IN_DST: usize = 60; // 16 bytes
const IN_PORTS: usize = 76; // 4 bytes
const IN_ID: usize = 80; // 2 bytes
const OUT: usize = 96; // the answer's headers
const OUT_RR: usize = 200; // 28 bytes: the sinkhole record

const _: () = assert!(IN_L2 + MAX_L2_LEN <= IN_IP_FIRST && OUT + MAX_L2_LEN + 60 <= OUT_RR && OUT_RR + 28 <= REPLY_BUF);

/// Why no answer could be written; the caller drops the query instead.
pub struct RewriteFailed;

/// Byte access to the reply buffer with indices masked into it.
///
/// Every access is volatile: LLVM may then neither hoist a run of loads
/// ahead of their stores nor keep the unrolled copies' addresses alive, both
/// of which spilled hundreds of bytes of registers onto the stack, which
/// the verifier limits to 512 bytes for the whole call chain.
struct Buf<'a>(&'a mut [u8; REPLY_BUF]);

impl Buf<'_> {
    #[inline(always)]
    fn get(&self, i: usize) -> u8 {
        // SAFETY: the index is masked into the buffer.
        unsafe { self.0.as_ptr().add(i & (REPLY_BUF - 1)).read_volatile() }
    }

    #[inline(always)]
    fn set(&mut self, i: usize, b: u8) {
        // SAFETY: the index is masked into the buffer.
        unsafe { self.0.as_mut_ptr().add(i & (REPLY_BUF - 1)).write_volatile(b) }
    }

    #[inline(always)]
    fn put(&mut self, i: usize, bytes: &[u8]) {
        for (k, b) in bytes.iter().enumerate() {
            self.set(i + k, *b);
        }
    }

    #[inline(always)]
    fn copy(&mut self, to: usize, from: usize, len: usize) {
        for k in 0..len {
            let b = self.get(from + k);
            self.set(to + k, b);
        }
    }

    /// One's-complement sum of `len` bytes at `at` (`len` even).
    #[inline(always)]
    fn sum(&self, at: usize, len: usize) -> u64 {
        let mut s = 0u64;
        let mut k = 0;
        while k < len {
            s += u16::from_be_bytes([self.get(at + k), self.get(at + k + 1)]) as u64;
            k += 2;
        }
        s
    }
}

#[inline(always)]
fn load(ctx: &XdpContext, off: usize, to: *mut u8, len: usize) -> Result<(), RewriteFailed> {
    // Tells the verifier 1 <= len <= 40; callers never ask for more.
    if len == 0 || len > 40 {
        return Err(RewriteFailed);
    }
    // `to` points into the scratch map with room for `len` bytes (constant-bounded by callers).
    if Packet::load(ctx, off, to, len) { Ok(()) } else { Err(RewriteFailed) }
}

#[inline(always)]
fn store(ctx: &XdpContext, off: usize, from: *mut u8, len: usize) -> Result<(), RewriteFailed> {
    if len == 0 || len > 96 {
        return Err(RewriteFailed);
    }
    if Packet::store(ctx, off, from, len) { Ok(()) } else { Err(RewriteFailed) }
}

/// Reads what the reply's headers reuse (Ethernet header and VLAN tags, the
/// first IP word, addresses, ports) into the reply buffer, before the
/// packet is resized.
#[inline(always)]
fn read_headers(ctx: &XdpContext, l: &Layers, r: *mut u8) -> Result<(), RewriteFailed> {
    let (addrs, addr_len) = l.addrs();
    // SAFETY: constant offsets into the 256-byte reply buffer.
    unsafe {
        load(ctx, 0, r.add(IN_L2), l.l2_len & 0x3f)?;
        load(ctx, l.l2_len, r.add(IN_IP_FIRST), 4)?;
        load(ctx, addrs, r.add(IN_SRC), addr_len & 0x1f)?;
        load(ctx, addrs + addr_len, r.add(IN_DST), addr_len & 0x1f)?;
        load(ctx, l.l4_off, r.add(IN_PORTS), 4)
    }
}

/// Cuts or grows the tail so the packet ends at `new_end` (an offset in
/// the packet as received), then drops IPv4 options / IPv6 extension
/// headers by moving the start forward.
#[inline(always)]
fn resize(ctx: &XdpContext, l: &Layers, new_end: usize) -> Result<(), RewriteFailed> {
    // SAFETY: plain helper calls on our own context.
    // Frame lengths and offsets are far below 2^31: the casts are exact.
    let old_len = Packet::frame_len(ctx).cast_signed() as i64;
    let tail_delta = new_end.cast_signed() as i64 - old_len;
    if tail_delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, tail_delta as i32) } != 0 {
        return Err(RewriteFailed);
    }
    let head_delta = l.l4_off.wrapping_sub(l.l2_len + l.ip_fixed_len());
    if head_delta != 0 && unsafe { bpf_xdp_adjust_head(ctx.ctx, head_delta.cast_signed() as i32) } != 0 {
        return Err(RewriteFailed);
    }
    Ok(())
}

/// Writes the reply's Ethernet and IP headers into the buffer at [`OUT`] and
/// the transport header's first word (ports swapped) after them. Returns
/// the transport header's offset in the buffer and the pseudo-header sum
/// (RFC 768, RFC 793, RFC 8200 §8.1) for a transport length of `l4_len`.
#[inline(always)]
fn write_l2_l3(b: &mut Buf<'_>, l: &Layers, proto: u8, l4_len: usize) -> (usize, u64) {
    // Ethernet: swap addresses; the EtherType, VLAN tags and PPPoE header
    // stay as they were.
    b.copy(OUT, IN_L2 + 6, 6);
    b.copy(OUT + 6, IN_L2, 6);
    // All of the longest layer 2 header, whatever this one's length: the
    // bytes past it are overwritten by the IP and transport headers below
    // (at least 28 bytes, more than MAX_L2_LEN - 14), and a copy without a
    // branch per byte is checked by the verifier once.
    b.copy(OUT + 12, IN_L2 + 12, MAX_L2_LEN - 12);
    let ip = OUT + l.l2_len;
    if l.pppoe {
        // The PPPoE payload length (RFC 2516 §4): the PPP protocol number
        // and the IP packet.
        let len = (2 + l.ip_fixed_len() + l4_len) as u16;
        b.put(ip - 4, &len.to_be_bytes());
    }
    let sum_addrs = if l.ipv6 {
        b.copy(ip, IN_IP_FIRST, 4);
        b.put(ip + 4, &(l4_len as u16).to_be_bytes());
        b.put(ip + 6, &[proto, ANSWER_HOP_LIMIT]);
        b.copy(ip + 8, IN_DST, 16);
        b.copy(ip + 24, IN_SRC, 16);
        b.sum(ip + 8, 32)
    } else {
        let tos = b.get(IN_IP_FIRST + 1);
        b.put(ip, &[0x45, tos]);
        b.put(ip + 2, &((20 + l4_len) as u16).to_be_bytes());
        // Identification 0 and no fragment flags: the reply is never fragmented.
        b.put(ip + 4, &[0, 0, 0, 0, ANSWER_HOP_LIMIT, proto, 0, 0]);
        b.copy(ip + 12, IN_DST, 4);
        b.copy(ip + 16, IN_SRC, 4);
        let c = checksum::finish(b.sum(ip, 20));
        b.put(ip + 10, &c.to_be_bytes());
        b.sum(ip + 12, 8)
    };
    let l4 = ip + l.ip_fixed_len();
    b.copy(l4, IN_PORTS + 2, 2);
    b.copy(l4 + 2, IN_PORTS, 2);
    (l4, sum_addrs + l4_len as u64 + proto as u64)
}

/// Rewrites the query into the answer `a` (the answer stage's, read from
/// map memory: the masks restate the bounds the DNS stage guarantees). On
/// success the packet is ready for `XDP_TX`; on failure it may be
/// half-written and must be dropped.
#[inline(always)]
pub fn write_answer(ctx: &XdpContext, l: &Layers, a: &Answer, scratch: &mut Scratch) -> Result<(), RewriteFailed> {
    // At most 255 + 4 bytes; the DNS header within the first 8 KiB.
    let qlen = (a.qlen & 0x1ff) as usize;
    let dns_off = (a.dns_off & 0x1fff) as usize;
    let rdlen: usize = match (a.sinkhole != 0, a.qtype, a.qclass) {
        (true, QTYPE_A, QCLASS_IN) => 4,
        (true, QTYPE_AAAA, QCLASS_IN) => 16,
        _ => 0,
    };
    // Owner (a pointer to the question's name at offset 12), type, class, TTL, RDLENGTH, RDATA.
    let answer_len = if rdlen == 0 { 0 } else { 12 + rdlen };
    let dns_len = DNS_HLEN + qlen + answer_len;
    let udp_len = 8 + dns_len;

    let r = scratch.reply.as_mut_ptr();
    read_headers(ctx, l, r)?;
    // SAFETY: a constant offset into the reply buffer.
    load(ctx, dns_off, unsafe { r.add(IN_ID) }, 2)?;
    resize(ctx, l, dns_off + dns_len)?;

    let mut b = Buf(&mut scratch.reply);
    let (udp, pseudo) = write_l2_l3(&mut b, l, IPPROTO_UDP, udp_len);
    b.put(udp + 4, &(udp_len as u16).to_be_bytes());
    b.put(udp + 6, &[0, 0]);
    let dns = udp + 8;
    // QR=1, opcode and RD as asked, RA=1, CD as asked, AA=AD=0.
    let flags = 0x8000 | (a.flags & 0x0100) | 0x0080 | (a.flags & 0x0010) | u16::from(a.rcode & 0xf);
    let ancount = u16::from(answer_len != 0);
    b.copy(dns, IN_ID, 2);
    b.put(dns + 2, &flags.to_be_bytes());
    b.put(dns + 4, &[0, 1]);
    b.put(dns + 6, &ancount.to_be_bytes());
    b.put(dns + 8, &[0, 0, 0, 0]);

    if answer_len != 0 {
        let [t0, t1] = a.qtype.to_be_bytes();
        let [l0, l1, l2b, l3b] = a.ttl.to_be_bytes();
        b.put(OUT_RR, &[0xc0, 12, t0, t1, 0, QCLASS_IN as u8, l0, l1, l2b, l3b, 0, rdlen as u8]);
        // RDATA: 0.0.0.0 or ::.
        b.put(OUT_RR + 12, &[0; 16]);
    }

    // UDP checksum: pseudo-header, UDP header, DNS header, the question
    // (unchanged in the packet, its bytes in scratch), the record.
    let mut sum = pseudo + b.sum(udp, 8 + DNS_HLEN);
    sum += question_sum(scratch, qlen).ok_or(RewriteFailed)? as u64;
    let mut b = Buf(&mut scratch.reply);
    if answer_len != 0 {
        // The record starts at an odd offset when the question's length is
        // odd; a byte-swapped one's-complement sum is the sum of byte-swapped
        // words (RFC 1071 §2(B)).
        let rr = checksum::fold(b.sum(OUT_RR, 28));
        sum += if qlen & 1 == 0 { rr } else { rr.swap_bytes() } as u64;
    }
    b.put(udp + 6, &checksum::finish_udp(sum).to_be_bytes());

    let hdr_len = (l.l2_len + l.ip_fixed_len() + 8 + DNS_HLEN) & 0x7f;
    // SAFETY: constant offsets into the reply buffer; lengths bounded by it.
    unsafe {
        store(ctx, 0, r.add(OUT), hdr_len)?;
        if answer_len != 0 {
            let ans_off = l.l2_len + l.ip_fixed_len() + 8 + DNS_HLEN + qlen;
            store(ctx, ans_off, r.add(OUT_RR), answer_len & 0x1f)?;
        }
    }
    Ok(())
}

/// Rewrites a client's TCP segment into a reset toward the client, for
/// `XDP_TX`: ports and addresses swapped, RST|ACK, `seq` the number the
/// client expects next from the server (its acknowledgment number) so its
/// stack accepts the reset (RFC 5961 §3.2: exactly the next expected
/// sequence number), `ack` the client's sequence number after this segment,
/// no payload, window 0.
#[inline(always)]
pub fn write_rst(ctx: &XdpContext, l: &Layers, seq: u32, ack: u32, scratch: &mut Scratch) -> Result<(), RewriteFailed> {
    let r = scratch.reply.as_mut_ptr();
    read_headers(ctx, l, r)?;
    resize(ctx, l, l.l4_off + 20)?;
    let mut b = Buf(&mut scratch.reply);
    let (tcp, pseudo) = write_l2_l3(&mut b, l, IPPROTO_TCP, 20);
    b.put(tcp + 4, &seq.to_be_bytes());
    b.put(tcp + 8, &ack.to_be_bytes());
    // Data offset 5 words, RST|ACK, window 0, checksum 0 for now, urgent 0.
    b.put(tcp + 12, &[0x50, TCP_RST | TCP_ACK, 0, 0, 0, 0, 0, 0]);
    let sum = pseudo + b.sum(tcp, 20);
    b.put(tcp + 16, &checksum::finish(sum).to_be_bytes());
    let hdr_len = (l.l2_len + l.ip_fixed_len() + 20) & 0x7f;
    // SAFETY: a constant offset into the reply buffer; the length bounded by it.
    unsafe { store(ctx, 0, r.add(OUT), hdr_len) }
}

/// Turns a client's blocked TCP segment (sequence number `seq`,
/// acknowledgment `ack`, flags `flags`) into a reset toward the client, at
/// the numbers its stack accepts.
#[inline(always)]
pub fn reset_client(
    ctx: &XdpContext,
    l: &Layers,
    seq: u32,
    ack: u32,
    flags: u8,
    scratch: &mut Scratch,
) -> Result<(), RewriteFailed> {
    let next = seq.wrapping_add(l.payload_len() as u32);
    // The client's acknowledgment number is the server's next sequence number.
    let server_seq = if flags & TCP_ACK != 0 { ack } else { 0 };
    write_rst(ctx, l, server_seq, next, scratch)
}

/// One's-complement sum of the question's `qlen` bytes as big-endian words,
/// with the `bpf_csum_diff` helper: a loop over up to 259 bytes would be
/// walked by the verifier once per path into this function.
#[inline(always)]
fn question_sum(scratch: &mut Scratch, qlen: usize) -> Option<u16> {
    let qlen = verifier::opaque(qlen) & (QUESTION_BUF - 1);
    // The helper sums whole 4-byte words; zero the bytes after the question
    // up to the next multiple of 4 (they are not needed any more).
    for i in 0..3 {
        scratch.question[(qlen + i) & (QUESTION_BUF - 1)] = 0;
    }
    let len = ((qlen + 3) & !3) & (QUESTION_BUF - 1);
    let q = scratch.question.as_mut_ptr();
    // SAFETY: `len` bytes of the scratch buffer, bounded by its size.
    let partial = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, q.cast(), len as u32, 0) };
    if partial < 0 {
        return None;
    }
    // csum_partial sums the bytes as host-order (little-endian) words; the
    // folded sum of byte-swapped words is the byte-swapped folded sum.
    Some(checksum::fold(partial.cast_unsigned()).swap_bytes())
}
