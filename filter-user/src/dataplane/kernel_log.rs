//! Debug records of the kernel program, forwarded to tracing.
//!
//! The object built with filter-ebpf's `debug` feature writes a record per
//! packet (its interface, outcome and XDP action, and any failed tail call)
//! with aya-log into its `AYA_LOGS` ring buffer. A thread reads them and
//! logs each as a tracing event with target `namewall::xdp`, at the
//! record's level; the kernel writes only the levels tracing lets through
//! ([`kernel_level`]). The release object has neither the map nor the cost.

use std::{
    os::fd::{AsRawFd as _, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use aya::Ebpf;
use aya_log::EbpfLogger;

/// Why the kernel's debug records cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum KernelLogError {
    #[error("opening the kernel program's log buffer")]
    Logger(#[source] aya_log::Error),
    #[error("starting the kernel log reader")]
    Spawn(#[source] std::io::Error),
}

/// How long the reader waits for records before it looks at its stop flag.
const POLL_MS: i32 = 100;

/// The reader of the kernel's debug records; stops when dropped.
pub struct KernelLog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl KernelLog {
    /// Starts reading the records of `ebpf`, if its object writes any
    /// (`None` for the release object).
    pub fn start(ebpf: &mut Ebpf) -> Result<Option<Self>, KernelLogError> {
        let logger = match EbpfLogger::init_with_logger(ebpf, Forward) {
            Ok(l) => l,
            Err(aya_log::Error::MapNotFound) => return Ok(None),
            Err(e) => return Err(KernelLogError::Logger(e)),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("namewall-xdp-log".into())
            .spawn(move || read(logger, &flag))
            .map_err(KernelLogError::Spawn)?;
        Ok(Some(Self { stop, thread: Some(thread) }))
    }
}

impl Drop for KernelLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::warn!("the kernel debug record reader failed");
        }
    }
}

/// Waits for records and forwards them until told to stop, then forwards
/// what is left.
fn read(mut logger: EbpfLogger<Forward>, stop: &AtomicBool) {
    let fd: RawFd = logger.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&raw mut p, 1, POLL_MS) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                // Not spinning on an error that will not go away.
                tracing::warn!("waiting for the kernel's debug records: {e}");
                std::thread::sleep(std::time::Duration::from_millis(POLL_MS as u64));
            }
        }
        if !forward(&mut logger) {
            return;
        }
    }
    forward(&mut logger);
}

/// Forwards the records waiting. aya-log panics on a record it cannot
/// decode; that ends the reading (said once), not the daemon.
fn forward(logger: &mut EbpfLogger<Forward>) -> bool {
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| logger.flush())).is_ok();
    if !ok {
        tracing::warn!("a kernel debug record could not be decoded; no more are forwarded");
    }
    ok
}

/// aya-log's code for the most detailed level tracing lets through for
/// `namewall::xdp` (1 error ... 5 trace; 0 none), for the kernel program's
/// `AYA_LOG_LEVEL`: records nobody would see are not written at all.
pub fn kernel_level() -> u8 {
    if tracing::enabled!(target: "namewall::xdp", tracing::Level::TRACE) {
        5
    } else if tracing::enabled!(target: "namewall::xdp", tracing::Level::DEBUG) {
        4
    } else if tracing::enabled!(target: "namewall::xdp", tracing::Level::INFO) {
        3
    } else if tracing::enabled!(target: "namewall::xdp", tracing::Level::WARN) {
        2
    } else {
        u8::from(tracing::enabled!(target: "namewall::xdp", tracing::Level::ERROR))
    }
}

/// A `log::Log` that turns aya-log's records into tracing events.
struct Forward;

impl log::Log for Forward {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let msg = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "namewall::xdp", "{msg}"),
            log::Level::Warn => tracing::warn!(target: "namewall::xdp", "{msg}"),
            log::Level::Info => tracing::info!(target: "namewall::xdp", "{msg}"),
            log::Level::Debug => tracing::debug!(target: "namewall::xdp", "{msg}"),
            log::Level::Trace => tracing::trace!(target: "namewall::xdp", "{msg}"),
        }
    }

    fn flush(&self) {}
}
