//! The benchmarks' yardstick: an XDP program that bumps one per-CPU counter
//! and passes. namewall's costs are reported as ratios to this program run
//! in the same benchmark, since absolute times on a shared machine drift.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        bindings::xdp_action,
        btf_maps::PerCpuArray,
        macros::{btf_map, xdp},
        programs::XdpContext,
    };

    #[btf_map]
    static BASELINE_COUNTER: PerCpuArray<u64, 1> = PerCpuArray::new();

    #[xdp]
    pub fn baseline(_ctx: XdpContext) -> u32 {
        if let Some(p) = BASELINE_COUNTER.get_ptr_mut(0) {
            // SAFETY: this CPU's slot.
            unsafe { *p += 1 };
        }
        xdp_action::XDP_PASS
    }
}

#[cfg(target_arch = "bpf")]
#[path = "../runtime.rs"]
mod runtime;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
