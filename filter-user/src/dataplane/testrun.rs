//! Running the loaded program on packets with `BPF_PROG_TEST_RUN`: replay,
//! the tests and the benchmarks judge real verdicts this way, without an
//! interface.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    time::Duration,
};

use aya::{
    TestRun as _,
    programs::{ProgramFd, TestRunOptions, Xdp},
};

use super::{
    error::{FilterError, program_err},
    sys,
};

/// What the program did with one packet in a test run.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// XDP action code.
    pub action: u32,
    /// The packet as the program left it.
    pub output: Vec<u8>,
}

/// XDP action names, as `replay` prints them (`maps::XdpAction`).
pub fn action_name(action: u32) -> &'static str {
    u8::try_from(action).ok().and_then(maps::XdpAction::from_code).map_or("unknown", maps::XdpAction::name)
}

/// Runs `prog` `repeat` times on `packet`: what the last run did, and the
/// mean time per run.
pub(super) fn run_xdp(prog: &Xdp, packet: &[u8], repeat: u32) -> Result<(RunResult, Duration), FilterError> {
    // Room for answers longer than the query (a sinkhole record) and for
    // the kernel's frame layout.
    let mut out = vec![0u8; packet.len() + 4096];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(packet);
    opts.data_out = Some(&mut out);
    opts.repeat = repeat;
    let r = prog.test_run(opts).map_err(program_err("BPF_PROG_TEST_RUN"))?;
    out.truncate(r.data_size_out as usize);
    Ok((RunResult { action: r.return_value, output: out }, r.duration))
}

/// Runs the program on packets from another thread while its loader
/// changes the maps (see `Filter::runner`).
pub struct Runner {
    pub(super) fd: ProgramFd,
}

impl Runner {
    /// Runs the program once on `packet`.
    pub fn run(&self, packet: &[u8]) -> std::io::Result<RunResult> {
        let (action, output) = sys::test_run(&self.fd.as_fd().as_raw_fd(), packet)?;
        Ok(RunResult { action, output })
    }

    /// Runs the program once on `packet` as if it came in on interface
    /// `ifindex` of the calling thread's network namespace.
    pub fn run_on(&self, packet: &[u8], ifindex: u32) -> std::io::Result<RunResult> {
        let (action, output) = sys::test_run_on(&self.fd.as_fd().as_raw_fd(), packet, ifindex)?;
        Ok(RunResult { action, output })
    }
}
