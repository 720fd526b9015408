//! Workarounds for the verifier and for LLVM, each in one documented place.
//!
//! The verifier (Linux 6.18 here, the same since `bpf_loop` came in 5.17)
//! explores every path of a program and keeps, per instruction, the
//! register states it has seen; a new state is pruned only when an old one
//! covers it. Constants and narrow ranges it tracks exactly, so a value
//! that leaves a loop or a parser as one of N different constants makes it
//! check everything after that point N times. Values it reads back from
//! map memory are unknown scalars, one state for all. [`forget`] uses that;
//! so do the stage boundaries (what one stage hands the next goes through
//! scratch memory) and the `bpf_loop` walks of `crate::names`, whose state
//! lives in map memory for the callbacks and is read back the same way.

/// Passes `values` through map memory (`spill`, this CPU's
/// `Scratch::spill`), so the verifier forgets how they were reached and
/// checks what follows once for all of them, not once per way in (per
/// header layout, per label count, per parser outcome). Callers restore
/// the bounds packet and buffer accesses need with masks that never change
/// a value.
///
/// Volatile, a word at a time: the compiler must keep the round trip, and
/// must not build a copy of the array on the stack, which the verifier
/// limits to 512 bytes for the whole call chain.
#[inline(always)]
pub fn forget<const N: usize>(spill: *mut [u64; 8], values: [u64; N]) -> [u64; N] {
    const { assert!(N <= 8) };
    let words = spill.cast::<u64>();
    for (i, v) in values.into_iter().enumerate() {
        // SAFETY: word `i` < N <= 8 of the caller's spill words.
        unsafe { words.add(i).write_volatile(v) };
    }
    // SAFETY: as above.
    core::array::from_fn(|i| unsafe { words.add(i).read_volatile() })
}

/// Returns `x` through a volatile stack read, so LLVM forgets what it
/// knows about its range (the verifier still knows it). Needed where LLVM
/// proves a check or mask redundant and drops it, or rewrites it
/// (`p + 1 > end` into `p >= end`), into a form the verifier does not
/// learn a bound from.
#[inline(always)]
pub fn opaque(x: usize) -> usize {
    // SAFETY: reading a valid local.
    unsafe { core::ptr::read_volatile(&raw const x) }
}

/// Copies `*src` to `*dst` a word at a time. A plain assignment of a value
/// this large (a few hundred bytes) becomes a call to compiler-builtins'
/// `memcpy`, whose byte loop the verifier rejects ("invalid zero-sized
/// read"); volatile words keep LLVM from folding the loop back into one.
#[inline(always)]
pub fn copy_words<T: Copy>(dst: *mut T, src: *const T) {
    const { assert!(size_of::<T>().is_multiple_of(8) && align_of::<T>() >= 8) };
    let (d, s) = (dst.cast::<u64>(), src.cast::<u64>());
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: word `i` of both values, both valid and 8-byte aligned.
        unsafe { d.add(i).write_volatile(s.add(i).read_volatile()) };
    }
}
