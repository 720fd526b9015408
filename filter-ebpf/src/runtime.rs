//! What every BPF binary of this crate needs besides its programs: a panic
//! handler (never reached: the verifier rejects a program that could
//! panic, so no panic path survives to the loaded code) and the license
//! the kernel checks for GPL-only helpers.

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
