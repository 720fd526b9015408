//! Reading a ClientHello out of a segment: the one-pass locator
//! (`maps::parse::sni`) on the packet in place for a first segment that holds the
//! name, or the state machine (`maps::parse::tls`) over a copy in scratch memory
//! for everything else, one field per `bpf_loop` iteration.

use core::ffi::c_void;

use aya_ebpf::{helpers::bpf_loop, programs::XdpContext};
use maps::{
    Scratch,
    parse::sni::{self, Located},
    parse::tls::{self, Step},
};

use crate::{
    packet::{Layers, Packet},
    tables::scratch,
    verifier,
};

/// Whether the payload starts like a TLS handshake record carrying a
/// ClientHello: `16 vv vv  xx xx  01`, any record version (servers take
/// any, see `maps::parse::tls`), or as much of it as the segment holds (a
/// client may send the record header alone). Bytes past the IP packet's
/// end (Ethernet padding) are not the segment's. A payload outside the
/// first buffer of a multi-buffer frame is left to the parser.
#[inline(always)]
pub fn starts_like_hello(pkt: &Packet, l: &Layers) -> bool {
    if l.payload_len() >= 6 {
        return match pkt.bytes::<6>(l.payload_off) {
            // An empty handshake record first (OpenSSL skips up to 32 of
            // them) also starts one: the parser skips them too.
            Some(b) => b[0] == 0x16 && (b[5] == 0x01 || (b[3] == 0 && b[4] == 0)),
            None => true,
        };
    }
    match pkt.u8(l.payload_off) {
        Some(b) => b == 0x16,
        None => true,
    }
}

/// What the locator found, with bounds the verifier can use.
pub enum Quick {
    Sni { off: usize, len: usize, ech: bool },
    NoSni { ech: bool },
    Slow,
}

/// The payload of the segment in the packet, for `maps::parse::sni::locate`:
/// bounds-checked reads of the first buffer, so the common ClientHello is
/// found without copying the segment.
struct Payload {
    pkt: Packet,
    off: usize,
}

impl sni::Bytes for Payload {
    #[inline(always)]
    fn at(&self, i: usize) -> Option<u8> {
        // The mask restates `locate`'s bound (it reads below TLS_BUF) for
        // the verifier.
        self.pkt.u8(self.off + (i & (tls::TLS_BUF - 1)))
    }

    #[inline(always)]
    fn be32(&self, i: usize) -> Option<u32> {
        self.pkt.bytes::<4>(self.off + (i & (tls::TLS_BUF - 1))).map(u32::from_be_bytes)
    }
}

/// Runs `maps::parse::sni::locate` on the segment's `len` bytes. The locator ends
/// in a different state after each extension it walked, and what follows
/// (the name's judgment, a reset) would be verified once per state: its
/// answer goes through [`verifier::forget`].
#[inline(always)]
pub fn quick(ctx: &XdpContext, l: &Layers, len: usize, whole_list: bool, scratch: &mut Scratch) -> Quick {
    let payload = Payload { pkt: Packet::new(ctx), off: l.payload_off };
    let (code, off, name_len) = match sni::locate(&payload, len, whole_list) {
        l @ Located::Sni { off, len, .. } => (l.code(), off as u64, len as u64),
        l => (l.code(), 0, 0),
    };
    let [code, off, name_len] = verifier::forget(&raw mut scratch.spill, [code, off, name_len]);
    let ech = code & 4 != 0;
    match code & 3 {
        // A name of 1..=255 bytes within the first TLS_BUF bytes.
        2 if name_len >= 1 && name_len < tls::MAX_SNI as u64 && off < tls::TLS_BUF as u64 => {
            Quick::Sni { off: off as usize, len: name_len as usize, ech }
        }
        1 => Quick::NoSni { ech },
        _ => Quick::Slow,
    }
}

/// Runs parser steps from the start of `tls_buf` until one says more than
/// "continue", one per `bpf_loop` iteration: the verifier checks a step
/// once, where a plain loop over steps would have it walk every path of
/// every step of every iteration, far past its budget.
#[inline(always)]
pub fn run_parser(scratch: &mut Scratch, len: usize) -> Step {
    scratch.tls_pos = 0;
    scratch.tls_steps = 0;
    run_parser_from(scratch, len)
}

/// Continues the parser where it stopped in `tls_buf`, with what is left
/// of the segment's `maps::parse::tls::SEGMENT_STEPS` steps. A budget used
/// up leaves `Continue`: the segment is past the bound, not judged.
#[inline(always)]
pub fn run_parser_from(scratch: &mut Scratch, len: usize) -> Step {
    scratch.tls_step = tls::STEP_CONTINUE;
    let used = scratch.tls_steps;
    let left = u64::from(tls::SEGMENT_STEPS).saturating_sub(used);
    let mut args = StepArgs { len: len as u64 };
    // SAFETY: a static callback and a pointer to our own stack.
    let done = unsafe { bpf_loop(left as u32, step_callback as *mut c_void, (&raw mut args).cast(), 0) };
    // The iterations run (the one that stopped included); an error (never
    // expected) spends the rest.
    scratch.tls_steps = if done >= 0 { used + done.unsigned_abs() } else { u64::from(tls::SEGMENT_STEPS) };
    // SAFETY: the callbacks wrote through their own lookup of the scratch map.
    let code = unsafe { (&raw const scratch.tls_step).read_volatile() };
    tls::Step::from_code(code)
}

/// Parser state handed to the `bpf_loop` continuation.
#[repr(C)]
struct StepArgs {
    len: u64,
}

extern "C" fn step_callback(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer run_parser gave it.
    let args = unsafe { &*ctx.cast::<StepArgs>() };
    let Some(scratch) = scratch() else { return 1 };
    let mut pos = scratch.tls_pos as usize;
    let out = tls::step(&mut scratch.flow.tls, &scratch.tls_buf, args.len as usize, &mut pos);
    scratch.tls_pos = pos as u64;
    scratch.tls_step = out.code();
    i64::from(!matches!(out, Step::Continue))
}
