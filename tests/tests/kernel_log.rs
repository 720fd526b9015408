//! Kernel debug records: the object built with filter-ebpf's `debug`
//! feature writes one per packet, and the loader forwards them to tracing;
//! the release object writes none and has no log buffer.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use filter_user::dataplane::{
    LoadOptions, TlsPolicy,
    loader::{NAMEWALL_DEBUG_OBJECT, NAMEWALL_OBJECT},
};
use hickory_proto::rr::RecordType;
use maps::{Action, Counter};
use namewall_tests::{dnswire, harness::Harness, packet::Spec};
use object::{Object as _, ObjectSymbol as _};

/// Tracing output collected in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("capture lock")).into_owned()
    }
}

/// Whether the object `bytes` declares aya-log's ring buffer.
fn has_log_buffer(bytes: &[u8]) -> bool {
    let file = object::File::parse(bytes).expect("the XDP object is ELF");
    file.symbols().any(|s| s.name() == Ok("AYA_LOGS"))
}

#[test]
fn debug_records_reach_tracing_and_the_release_object_has_none() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Global: the records are read on the loader's own thread.
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .expect("install the subscriber");

    let release = Harness::new("blocked.example\n", "");
    assert!(!release.filter.debug_log(), "the release object forwards no records");
    assert!(!has_log_buffer(NAMEWALL_OBJECT), "the release object has no log buffer");
    assert!(has_log_buffer(NAMEWALL_DEBUG_OBJECT), "the debug object has a log buffer");

    let h = Harness::with_options(
        "blocked.example\n",
        "",
        LoadOptions { debug_log: true, ..LoadOptions::default() },
        Action::Nxdomain,
        false,
        TlsPolicy::default(),
    );
    assert!(h.filter.debug_log(), "the debug object's records are forwarded");
    let o = h.run(&Spec::udp4().build(&dnswire::query("www.blocked.example", RecordType::A)));
    assert_eq!(o.outcome, Counter::Nxdomain);
    let want = format!("outcome {} xdp action 3", Counter::Nxdomain as u32);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !captured.text().contains(&want) {
        assert!(Instant::now() < deadline, "no record {want:?} in the tracing output:\n{}", captured.text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = captured.text().lines().find(|l| l.contains(&want)).map(str::to_owned).expect("the record");
    assert!(line.contains("DEBUG") && line.contains("namewall::xdp"), "level and target: {line}");
}
