//! TCP checksums, verified before a segment may change what the program
//! remembers of a flow: a receiver discards a segment whose checksum is
//! wrong (Linux: `tcp_checksum_complete` in `tcp_v4_rcv`/`tcp_v6_rcv`), so
//! a client can send one as a decoy that the filter would read and the
//! server never does. Protocol-neutral: the TLS stage checks ClientHello
//! segments with it, and any stage following a TCP stream can.
//!
//! XDP cannot see the kernel's verdict on a checksum (`skb->ip_summed`;
//! Linux 6.18 has no XDP metadata kfunc for it, only for the hash, the
//! timestamp and the VLAN tag), so the program sums the segment itself:
//! `bpf_csum_diff` over chunks of [`CSUM_WORDS`] words copied with
//! `bpf_xdp_load_bytes` (which reads across the buffers of a multi-buffer
//! frame), one chunk per `bpf_loop` iteration, so the verifier checks a
//! chunk once however long the segment.
//!
//! What XDP sees on a virtual interface differs from the wire (measured on
//! a veth pair, Linux 6.18, `tcpdump -vv` on the receiving end while curl
//! sent from the other namespace): with transmit checksum offload on, the
//! veth default, every TCP segment of a local stack crosses with the field
//! holding only the pseudo-header's sum (`cksum 0x14cb (incorrect ->
//! 0x6d10)` on a SYN), because the sender left the rest to a device
//! (`CHECKSUM_PARTIAL`), veth passes the skb on untouched
//! (`veth_xdp_rcv_skb` runs the program on that skb's data), and the
//! receiver trusts the flag without summing. With `ethtool -K DEV tx off`
//! on the sender the same segments carry full checksums. Generic XDP
//! (skb mode) runs after GRO, which writes the same form into the segments
//! it merges (`tcp4_gro_complete`). So where the daemon knows that form can
//! arrive (`maps::layout::settings::policy::PARTIAL_CSUM`), a field equal to
//! the pseudo-header's sum is taken as right, checked in a few instructions
//! before anything is summed; elsewhere (a physical NIC, native mode) it is
//! wrong like any other.

use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::xdp_md,
    helpers::{bpf_csum_diff, bpf_loop},
    programs::XdpContext,
};
use maps::{layout::scratch::CSUM_WORDS, parse::checksum};

use super::{Layers, Packet, layers::MAX_IP_END};
use crate::{tables::scratch, verifier};

/// Bytes summed per `bpf_loop` iteration.
const CHUNK: usize = 4 * CSUM_WORDS;
/// Offset of the checksum field in the TCP header (RFC 9293 §3.1).
const TCP_CHECKSUM_AT: usize = 16;
const IPPROTO_TCP: u8 = 6;

/// Whether the TCP checksum of the segment `l` describes is right, or, with
/// `accept_offloaded`, in the form a checksum-offloading sender leaves
/// (see the module docs). False when the segment cannot be read whole.
#[inline(always)]
pub fn tcp_checksum_ok(ctx: &XdpContext, l: &Layers, accept_offloaded: bool) -> bool {
    let pkt = Packet::new(ctx);
    let (at, _) = l.addrs();
    // The TCP length (header and payload) the pseudo-header counts.
    let tcp_len = (l.ip_end - l.l4_off) as u32;
    let pseudo = if l.ipv6 {
        let Some(a) = pkt.bytes::<32>(at) else { return false };
        let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
        src.copy_from_slice(&a[..16]);
        dst.copy_from_slice(&a[16..]);
        checksum::pseudo_header(&src, &dst, IPPROTO_TCP, tcp_len)
    } else {
        let Some(a) = pkt.bytes::<8>(at) else { return false };
        checksum::pseudo_header(&[a[0], a[1], a[2], a[3]], &[a[4], a[5], a[6], a[7]], IPPROTO_TCP, tcp_len)
    };
    let Some(field) = pkt.bytes::<2>(l.l4_off + TCP_CHECKSUM_AT) else { return false };
    if accept_offloaded && u16::from_be_bytes(field) == checksum::offloaded_form(pseudo) {
        return true;
    }
    match sum_segment(ctx, l.l4_off, l.ip_end) {
        Some(sum) => checksum::sums_to_zero(pseudo, sum),
        None => false,
    }
}

/// Whether the IPv4 header `[l3, l4)` sums to its checksum (RFC 791): Linux
/// drops a packet whose header checksum is wrong (`ip_rcv_core`).
#[inline(always)]
pub fn ipv4_header_checksum_ok(ctx: &XdpContext, l3: usize, l4: usize) -> bool {
    if l4 == l3 + 20 {
        // No options, as nearly always: ten words, summed in place.
        let Some(h) = Packet::new(ctx).bytes::<20>(l3) else { return false };
        return checksum::fold(checksum::add_bytes(0, &h)) == 0xffff;
    }
    sum_segment(ctx, l3, l4).is_some_and(|sum| checksum::fold(sum) == 0xffff)
}

/// What the `bpf_loop` callback gets on this stage's stack: only the
/// context (its type is all the verifier tracks of it); the loop's
/// position and sum are in `Scratch::csum_walk`.
#[repr(C)]
struct SumArgs {
    ctx: *mut xdp_md,
}

/// Indices of `Scratch::csum_walk`.
const POS: usize = 0;
const END: usize = 1;
const SUM: usize = 2;
const FAILED: usize = 3;

/// The bytes `[start, end)` of the frame summed as big-endian 16-bit words
/// (RFC 1071), `start` even; `None` if they cannot all be read.
#[inline(always)]
fn sum_segment(ctx: &XdpContext, start: usize, end: usize) -> Option<u64> {
    if end <= start || end > MAX_IP_END {
        return None;
    }
    let walk = &raw mut scratch()?.csum_walk;
    let w = walk.cast::<u64>();
    // SAFETY: the four words of this CPU's loop state, written volatile so
    // that the callbacks, which read them through their own lookup, see them.
    unsafe {
        w.add(POS).write_volatile(start as u64);
        w.add(END).write_volatile(end as u64);
        w.add(SUM).write_volatile(0);
        w.add(FAILED).write_volatile(0);
    }
    let mut args = SumArgs { ctx: ctx.ctx };
    let chunks = (end - start).div_ceil(CHUNK) as u32;
    // SAFETY: a static callback and a pointer to our own stack.
    unsafe { bpf_loop(chunks, sum_chunk as *mut c_void, (&raw mut args).cast(), 0) };
    // SAFETY: as above.
    let (pos, sum, failed) =
        unsafe { (w.add(POS).read_volatile(), w.add(SUM).read_volatile(), w.add(FAILED).read_volatile()) };
    if failed != 0 || pos != end as u64 {
        return None;
    }
    // `bpf_csum_diff` sums the buffer as the host's 16-bit words:
    // little-endian on every host of the bpfel target. A ones' complement
    // sum of byte-swapped words is the byte-swapped sum (RFC 1071 §2(B)).
    Some(u64::from(checksum::fold(sum).swap_bytes()))
}

/// One chunk of [`sum_segment`]: up to [`CHUNK`] bytes copied into
/// `Scratch::csum` and summed. Returns 1 to stop the loop.
extern "C" fn sum_chunk(_index: u64, arg: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer sum_segment gave it.
    let args = unsafe { &*arg.cast::<SumArgs>() };
    let Some(scratch) = scratch() else { return 1 };
    let (pos, end) = (scratch.csum_walk[POS], scratch.csum_walk[END]);
    let left = end.wrapping_sub(pos);
    // Through `opaque`: LLVM would test `left == 0` as `end == pos`,
    // before the subtraction, and the verifier would not learn that the
    // copy's length is at least 1.
    let n = verifier::opaque(if left < CHUNK as u64 { left as usize } else { CHUNK });
    if n == 0 || n > CHUNK || pos > MAX_IP_END as u64 {
        return 1;
    }
    // 1..=CSUM_WORDS words; `bpf_csum_diff` takes whole words, and the
    // last one's bytes past the segment must add nothing: zeroed first.
    let words = n.div_ceil(4);
    let buf = scratch.csum.as_mut_ptr();
    // SAFETY: word `words - 1` < CSUM_WORDS of this CPU's scratch buffer.
    unsafe { buf.add(words - 1).write_volatile(0) };
    let ctx = XdpContext::new(args.ctx);
    if !Packet::load(&ctx, pos as usize, buf.cast(), n) {
        scratch.csum_walk[FAILED] = 1;
        return 1;
    }
    // SAFETY: `words` words of the scratch buffer; no `from` words.
    let sum = unsafe { bpf_csum_diff(ptr::null_mut(), 0, buf, (words * 4) as u32, 0) };
    let Ok(sum) = u64::try_from(sum) else {
        scratch.csum_walk[FAILED] = 1;
        return 1;
    };
    // A 32-bit partial sum (16-bit folded from Linux 6.12 on some
    // architectures): either is congruent to the chunk's sum, which is
    // all the fold after the loop needs.
    scratch.csum_walk[SUM] += sum & 0xffff_ffff;
    scratch.csum_walk[POS] = pos + n as u64;
    0
}
