//! `namewall replay` on captures of TLS sessions: it must say which segment
//! of a flow's ClientHello decided the flow. The captures are written here
//! from real ClientHellos (rustls, through the `tls` fixtures) cut into
//! segments, with other flows' packets interleaved; the text report is
//! checked through the real binary, the structured one through the library.

use std::{fs, path::Path, process::Command, time::Duration};

use filter_user::{
    dataplane::TlsPolicy,
    policy::PolicySource,
    replay::{self, PacketReport, ReplayOptions},
};
use namewall_tests::{
    netns::namewall_bin,
    packet::Spec,
    tls::{self, Flow, HelloKind},
};
use pcap_file::pcap::{PcapPacket, PcapWriter};

const BLOCKLIST: &str = "blocked.example\n";
const ALLOWLIST: &str = "ok.blocked.example\n";

/// A capture's packets, in order.
fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut w = PcapWriter::new(fs::File::create(path).expect("create capture")).expect("pcap header");
    for (i, f) in frames.iter().enumerate() {
        let t = Duration::from_secs(1_700_000_000) + Duration::from_millis(i as u64);
        w.write_packet(&PcapPacket::new(t, f.len() as u32, f)).expect("write packet");
    }
}

/// The offset where `name` ends in `hello`: a cut before it leaves the
/// name's end in the next segment.
fn name_end(hello: &[u8], name: &str) -> usize {
    tls::find(hello, name.as_bytes()).expect("the name is in the ClientHello") + name.len()
}

/// A `ClientHello` for `name` whose name ends at least `room` bytes before
/// the end: rustls shuffles its extensions, so `server_name` is sometimes
/// last, and a cut after the name needs bytes after it.
fn hello_with_room(name: &str, kind: HelloKind, room: usize) -> Vec<u8> {
    let what = format!("none with {room} bytes after the name");
    tls::client_hello_where(Some(name), kind, &what, |h| name_end(h, name) + room < h.len())
}

/// What each packet of the capture must show: (packet number, outcome,
/// segment, decided, earlier packets).
type Want = (u64, &'static str, u32, bool, Vec<u64>);

/// Three flows: a blocked one whose name ends in its second segment (of
/// three), an allowed one in one segment, and an IPv6 blocked one whose
/// name ends in its first segment, interleaved as a router would see them.
fn capture(dir: &Path) -> (std::path::PathBuf, Vec<Want>) {
    let pq = hello_with_room("www.blocked.example", HelloKind::PostQuantum, 1);
    let end = name_end(&pq, "www.blocked.example");
    // The name's last byte in segment 2 of 3.
    let cuts = [end - 1, (end + 1).max(pq.len() - 10)];
    assert!(cuts[0] < cuts[1] && cuts[1] < pq.len());
    let a = Flow::v4().sport(40001);
    let b = Flow::v4().sport(40002);
    let c = Flow::new(Spec::udp6().tcp().dport(8443)).sport(40003);
    let a_segs = a.segments(&pq, &cuts);
    let small = tls::client_hello(Some("ok.blocked.example"), HelloKind::Small);
    let v6 = hello_with_room("BLOCKED.example", HelloKind::Small, 5);
    let v6_cut = name_end(&v6, "BLOCKED.example") + 5;
    let c_segs = c.segments(&v6, &[v6_cut]);
    let frames = vec![
        a.syn(),              // 1
        b.syn(),              // 2
        a_segs[0].clone(),    // 3: pending
        b.segment(0, &small), // 4: allowed, decided at once
        c.syn(),              // 5
        c_segs[0].clone(),    // 6: blocked at once
        a_segs[1].clone(),    // 7: decides flow a (after #3)
        a_segs[2].clone(),    // 8: a is blocked: dropped
        c_segs[1].clone(),    // 9: c is blocked: dropped
        a_segs[0].clone(),    // 10: retransmission of a's first: still dropped
    ];
    let path = dir.join("tls.pcap");
    write_pcap(&path, &frames);
    let wants = vec![
        (3, "tls_pending", 1, false, vec![]),
        (4, "tls_pass_allowed", 1, true, vec![]),
        (6, "tls_reset", 1, true, vec![]),
        (7, "tls_reset", 2, true, vec![3]),
    ];
    (path, wants)
}

fn lists(dir: &Path) -> PolicySource {
    let block = dir.join("block.txt");
    let allow = dir.join("allow.txt");
    fs::write(&block, BLOCKLIST).unwrap();
    fs::write(&allow, ALLOWLIST).unwrap();
    PolicySource { blocklists: vec![block], allowlists: vec![allow], strict: true, ..PolicySource::default() }
}

#[test]
fn replay_names_the_deciding_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, wants) = capture(dir.path());
    let opts = ReplayOptions {
        lists: lists(dir.path()),
        dns_action: maps::Action::Nxdomain,
        unjudged_drop: false,
        answer_ttl: 60,
        tls: TlsPolicy::default(),
        max_flows: 0,
        seed: rand::random(),
    };
    let (filter, policy) = replay::prepare(&opts).expect("prepare");
    let mut reports: Vec<PacketReport> = Vec::new();
    let summary = replay::replay(&filter, &policy.rules, &pcap, |p| {
        reports.push(p.clone());
        std::ops::ControlFlow::Continue(())
    })
    .expect("replay");
    assert_eq!(summary.packets, 10);
    let by_number = |n: u64| reports.iter().find(|r| r.packet == n).expect("packet reported");
    for (n, outcome, segment, decided, earlier) in wants {
        let r = by_number(n);
        assert_eq!(r.outcome, Some(outcome), "packet #{n}: {r:?}");
        let t = r.tls.as_ref().unwrap_or_else(|| panic!("packet #{n} has no TLS segment report: {r:?}"));
        assert_eq!((t.segment, t.decided, &t.earlier), (segment, decided, &earlier), "packet #{n}: {t:?}");
    }
    // The deciding segments name the judged server name and rule.
    assert_eq!(by_number(7).name.as_deref(), Some("www.blocked.example"));
    assert_eq!(by_number(7).rule.as_deref(), Some("blocked.example"));
    assert_eq!(by_number(7).verdict, "tx");
    assert_eq!(by_number(4).rule.as_deref(), Some("ok.blocked.example"));
    assert_eq!(by_number(6).name.as_deref(), Some("BLOCKED.example"));
    assert!(by_number(7).tls.as_ref().unwrap().flow.starts_with("10.1.0.2:40001 > 10.2.0.2:443"));
    assert!(by_number(6).tls.as_ref().unwrap().flow.contains("]:40003 > ["), "IPv6 flows are bracketed");
    // Later packets of blocked flows: dropped, no ClientHello place.
    for n in [8, 9, 10] {
        let r = by_number(n);
        assert_eq!((r.verdict, r.outcome), ("drop", Some("tls_blocked_flow")), "packet #{n}: {r:?}");
        assert!(r.tls.is_none(), "packet #{n}: {r:?}");
    }
    // SYNs are tracked, not ClientHello segments.
    assert_eq!(by_number(1).outcome, Some("tcp_syn"));
    assert!(by_number(1).tls.is_none());
}

#[test]
fn replay_text_says_which_segment_decided() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, _) = capture(dir.path());
    let src = lists(dir.path());
    let out = Command::new(namewall_bin())
        .arg("replay")
        .args(["--blocklist", src.blocklists[0].to_str().unwrap()])
        .args(["--allowlist", src.allowlists[0].to_str().unwrap()])
        .arg("--pcap")
        .arg(&pcap)
        .output()
        .expect("run namewall replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "replay failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let line = |n: u64| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("#{n} ")))
            .unwrap_or_else(|| panic!("no line for packet #{n}:\n{stdout}"))
    };
    let l3 = line(3);
    assert!(
        l3.contains("tls_pending") && l3.contains("segment 1 of 10.1.0.2:40001 > 10.2.0.2:443: ClientHello goes on"),
        "{l3}"
    );
    let l7 = line(7);
    for want in [
        "tx",
        "tls_reset",
        "www.blocked.example",
        "rule=blocked.example",
        "(tls)",
        "segment 2 of",
        "decided (after #3)",
    ] {
        assert!(l7.contains(want), "packet #7 line lacks {want:?}: {l7}");
    }
    assert!(line(4).contains("segment 1 of 10.1.0.2:40002 > 10.2.0.2:443: decided"), "{}", line(4));
}
