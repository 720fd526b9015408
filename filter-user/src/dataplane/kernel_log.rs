//! Debug records of the kernel program, forwarded to tracing.
//!
//! The object built with filter-ebpf's `debug` feature writes a record per
//! packet (its interface, outcome and XDP action, and any failed tail call)
//! with aya-log into its `AYA_LOGS` ring buffer. A thread reads them and
//! logs each as a tracing event with target `namewall::xdp`, at the
//! record's level. The release object has neither the map nor the cost.

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
        if let Some(t) = self.thread.take() {
            // A reader that panicked has nothing left to report.
            let _ = t.join();
        }
    }
}

/// Waits for records and forwards them until told to stop, then forwards
/// what is left.
fn read(mut logger: EbpfLogger<Forward>, stop: &AtomicBool) {
    let fd: RawFd = logger.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; a failure (EINTR) just loops.
        unsafe { libc::poll(&raw mut p, 1, POLL_MS) };
        logger.flush();
    }
    logger.flush();
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
