//! The one place that touches packet memory.
//!
//! Every access is checked against `data_end` right before it, in the form
//! the verifier recognises (`data + offset + size > data_end`). Once the
//! packet is resized (`bpf_xdp_adjust_head`/`_tail`) a `Packet` is stale;
//! callers build a new one from the context.

use aya_ebpf::{
    helpers::{bpf_xdp_get_buff_len, bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    programs::XdpContext,
};

use super::headers::Header;
use crate::verifier;

/// Bounds-checked view of the packet's linear data (the first buffer of a
/// multi-buffer frame).
#[derive(Clone, Copy)]
pub struct Packet {
    start: usize,
    end: usize,
}

impl Packet {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Self { start: ctx.data(), end: ctx.data_end() }
    }

    /// Length of the whole frame, the fragments of a multi-buffer frame included.
    #[inline(always)]
    pub fn frame_len(ctx: &XdpContext) -> usize {
        // SAFETY: a plain helper call on our own context.
        unsafe { bpf_xdp_get_buff_len(ctx.ctx) as usize }
    }

    /// Whether the whole frame is at least `len` bytes long. Asks the kernel
    /// only when the first buffer is shorter: the helper call would cost as
    /// much as the rest of the header parsing, on every packet.
    #[inline(always)]
    pub fn frame_has(&self, ctx: &XdpContext, len: usize) -> bool {
        // The bound on `len` lets the verifier accept the pointer sum.
        (len <= 0xffff && self.start + len <= self.end) || Self::frame_len(ctx) >= len
    }

    /// Pointer to `N` bytes at `offset`, if they all lie inside the packet.
    #[inline(always)]
    fn ptr_at<const N: usize>(&self, offset: usize) -> Option<*mut [u8; N]> {
        let p = self.start + offset;
        if p + N > self.end {
            return None;
        }
        Some(p as *mut [u8; N])
    }

    /// The header `H` at `offset`, read in place, if it lies inside the packet.
    #[inline(always)]
    pub fn header<H: Header>(&self, offset: usize) -> Option<&H> {
        let p = self.start + offset;
        if p + H::LEN > self.end {
            return None;
        }
        // SAFETY: the LEN bytes lie inside the packet (checked above), and
        // `Header` types are made of byte arrays: alignment 1, every bit
        // pattern valid. The packet outlives the program run.
        Some(unsafe { &*(p as *const H) })
    }

    /// Reads `N` bytes at `offset`.
    #[inline(always)]
    pub fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // SAFETY: ptr_at checked that the N bytes lie inside the packet; [u8; N] has alignment 1.
        self.ptr_at::<N>(offset).map(|p| unsafe { p.read() })
    }

    /// Reads one byte at `offset`. The end check goes through
    /// [`verifier::opaque`]: LLVM turns `p + 1 > end` into `p >= end`, a form
    /// from which the verifier does not learn that one byte is readable.
    #[inline(always)]
    pub fn u8(&self, offset: usize) -> Option<u8> {
        let p = self.start + offset;
        if p + verifier::opaque(1) > self.end {
            return None;
        }
        // SAFETY: checked above.
        Some(unsafe { (p as *const u8).read() })
    }

    /// Copies `N` bytes at `offset` of the frame (any buffer of it) to
    /// `dst`, memory outside the stack (a map value) with room for them.
    #[inline(always)]
    pub fn load_into<const N: usize>(ctx: &XdpContext, offset: usize, dst: *mut [u8; N]) -> bool {
        // SAFETY: the helper checks the frame's bounds; dst has N bytes.
        unsafe { bpf_xdp_load_bytes(ctx.ctx, offset as u32, dst.cast(), N as u32) == 0 }
    }

    /// Copies `len` bytes at `offset` of the frame (any buffer of it) to
    /// `dst`. The caller bounds `len` by `dst`'s size in a form the verifier
    /// sees.
    #[inline(always)]
    pub fn load(ctx: &XdpContext, offset: usize, dst: *mut u8, len: usize) -> bool {
        // SAFETY: the helper checks the frame's bounds; the caller, dst's.
        unsafe { bpf_xdp_load_bytes(ctx.ctx, offset as u32, dst.cast(), len as u32) == 0 }
    }

    /// Copies `len` bytes from `src` into the frame at `offset` (any buffer
    /// of it). The caller bounds `len` by `src`'s size in a form the
    /// verifier sees.
    #[inline(always)]
    pub fn store(ctx: &XdpContext, offset: usize, src: *mut u8, len: usize) -> bool {
        // SAFETY: the helper checks the frame's bounds; the caller, src's.
        unsafe { bpf_xdp_store_bytes(ctx.ctx, offset as u32, src.cast(), len as u32) == 0 }
    }
}
