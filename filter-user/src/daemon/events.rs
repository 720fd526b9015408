//! The event log: each block the kernel reports (see `maps::layout::event`), as a
//! JSON line in a file or on stdout, the last ones kept in memory for
//! `namewall events`, and streamed to `namewall events --follow`.
//!
//! The kernel sends at most its per-second budget; the log file is rotated
//! at a size bound (one previous file kept), so a flood of blocked queries
//! costs bounded CPU and disk.

use std::{
    collections::{HashMap, VecDeque},
    fs,
    io::{self, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::{Duration, SystemTime},
};

use maps::{Counter, Protocol, layout::event::Event};

use crate::{
    control::{EventView, frame, server::Follow},
    dataplane::sys,
    policy::names,
};

/// Events `namewall events` can show without `--follow`.
pub const RECENT: usize = 1000;

/// How event times are turned from the kernel's monotonic clock into wall
/// time: the offset between the two, taken when the log starts.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall_minus_mono: Duration,
}

impl Clock {
    pub fn now() -> Self {
        let mono = Duration::from_nanos(sys::monotonic_ns(libc::CLOCK_MONOTONIC));
        let wall = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        Self { wall_minus_mono: wall.saturating_sub(mono) }
    }

    fn wall(self, mono_ns: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + self.wall_minus_mono + Duration::from_nanos(mono_ns)
    }
}

/// The action an outcome stands for.
fn action(outcome: u32) -> &'static str {
    match Counter::from_index(outcome) {
        Some(Counter::Nxdomain) => "nxdomain",
        Some(Counter::Refused) => "refused",
        Some(Counter::Sinkhole) => "sinkhole",
        Some(Counter::TlsReset) => "reset",
        _ => "drop",
    }
}

fn addr(bytes: [u8; 16], ipv6: bool, port: u16) -> String {
    let ip = if ipv6 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    };
    SocketAddr::new(ip, port).to_string()
}

/// Turns a raw event into its view: `rule` names a rule key (the daemon
/// knows its lists' and the operator's names), `iface` an interface index.
pub fn view(e: &Event, clock: Clock, rule: &dyn Fn(u64) -> Option<String>, iface: &dyn Fn(u32) -> String) -> EventView {
    let tls = e.name_kind == Protocol::Tls as u8;
    let name = if tls { names::text_to_display(e.name_bytes()) } else { names::wire_to_text(e.name_bytes()) };
    let rule = match (e.rule_key, tls) {
        (0, true) if e.name_len == 0 => "policy:no-sni".to_owned(),
        (0, true) => "policy:ech".to_owned(),
        (k, _) => rule(k).unwrap_or_else(|| format!("{k:#018x}")),
    };
    EventView {
        seq: 0,
        time: humantime::format_rfc3339_micros(clock.wall(e.time_ns)).to_string(),
        interface: iface(e.ifindex),
        client: addr(e.src, e.ipv6 != 0, e.sport()),
        server: addr(e.dst, e.ipv6 != 0, e.dport()),
        protocol: match (tls, e.proto) {
            (true, _) => "tls",
            (false, 6) => "dns-tcp",
            _ => "dns",
        }
        .to_owned(),
        name,
        rule,
        action: action(e.outcome).to_owned(),
    }
}

/// Where the log goes.
#[derive(Debug)]
enum Sink {
    Stdout,
    File { path: PathBuf, file: fs::File, size: u64, max: u64 },
}

/// The daemon's event log.
#[derive(Debug)]
pub struct EventLog {
    sink: Option<Sink>,
    recent: VecDeque<EventView>,
    follow: Follow,
    /// The last sequence number given.
    pub seq: u64,
    /// Events written (or kept, without a sink).
    pub written: u64,
    /// Events the sink failed to take (a full disk): counted, not retried.
    pub write_errors: u64,
    ifnames: HashMap<u32, String>,
}

impl EventLog {
    /// A log to `path` (`-`: stdout; `None`: memory only), rotated when it
    /// reaches `max_bytes` (the previous file kept as `PATH.1`).
    pub fn open(path: Option<&std::path::Path>, max_bytes: u64) -> io::Result<Self> {
        let sink = match path {
            None => None,
            Some(p) if p.as_os_str() == "-" => Some(Sink::Stdout),
            Some(p) => {
                let file = open_append(p)?;
                let size = file.metadata()?.len();
                Some(Sink::File { path: p.to_owned(), file, size, max: max_bytes })
            }
        };
        let (follow, _) = tokio::sync::broadcast::channel(1024);
        Ok(Self {
            sink,
            recent: VecDeque::with_capacity(RECENT),
            follow,
            seq: 0,
            written: 0,
            write_errors: 0,
            ifnames: HashMap::new(),
        })
    }

    /// The interface name of `ifindex`, looked up once.
    pub fn ifname(&mut self, ifindex: u32) -> String {
        self.ifnames
            .entry(ifindex)
            .or_insert_with(|| sys::if_name(ifindex).unwrap_or_else(|| format!("if{ifindex}")))
            .clone()
    }

    /// Records one event: the sink, the recent ring, the followers.
    pub fn record(&mut self, mut v: EventView) {
        self.seq += 1;
        v.seq = self.seq;
        let line = frame::encode(&v);
        if let Err(e) = self.write(&line) {
            self.write_errors += 1;
            if self.write_errors.is_power_of_two() {
                tracing::warn!("event log: {e} ({} events not written so far)", self.write_errors);
            }
        } else {
            self.written += 1;
        }
        let _ = self.follow.send((v.seq, line));
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(v);
    }

    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        match &mut self.sink {
            None => Ok(()),
            Some(Sink::Stdout) => io::stdout().lock().write_all(line),
            Some(Sink::File { path, file, size, max }) => {
                if *size + line.len() as u64 > *max && *size > 0 {
                    let mut old = path.clone().into_os_string();
                    old.push(".1");
                    fs::rename(&*path, &old)?;
                    *file = open_append(path)?;
                    *size = 0;
                }
                file.write_all(line)?;
                *size += line.len() as u64;
                Ok(())
            }
        }
    }

    /// The last `n` events, oldest first.
    pub fn recent(&self, n: usize) -> Vec<EventView> {
        self.recent.iter().skip(self.recent.len().saturating_sub(n)).cloned().collect()
    }

    /// A handle to subscribe from other tasks: every event from then on,
    /// with its sequence number, as a JSON line (a frame of the control
    /// protocol).
    pub fn follower(&self) -> Follow {
        self.follow.clone()
    }
}

fn open_append(p: &std::path::Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new().create(true).append(true).mode(0o600).open(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u8, name: &[u8], rule_key: u64) -> Event {
        let mut e = Event {
            time_ns: 5_000_000_000,
            rule_key,
            ifindex: 7,
            outcome: Counter::Nxdomain as u32,
            src: [10, 11, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [10, 12, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ports: [0xc3, 0x50, 0, 53],
            ipv6: 0,
            proto: 17,
            name_kind: kind,
            rule_labels: 2,
            name_len: name.len() as u16,
            pad: [0; 6],
            name: [0; 32],
        };
        // SAFETY: the name words are 256 bytes.
        let bytes: &mut [u8; 256] = unsafe { &mut *e.name.as_mut_ptr().cast::<[u8; 256]>() };
        bytes[..name.len()].copy_from_slice(name);
        e
    }

    #[test]
    fn views_name_everything() {
        let clock = Clock { wall_minus_mono: Duration::from_hours(500_000) };
        let rule = |k: u64| (k == 42).then(|| "ads.example".to_owned());
        let iface = |i: u32| format!("eth{i}");
        let v = view(&event(Protocol::Dns as u8, b"\x03www\x03ads\x07example\x00", 42), clock, &rule, &iface);
        assert_eq!(v.name, "www.ads.example");
        assert_eq!((v.client.as_str(), v.server.as_str()), ("10.11.0.2:50000", "10.12.0.2:53"));
        assert_eq!((v.protocol.as_str(), v.rule.as_str(), v.action.as_str()), ("dns", "ads.example", "nxdomain"));
        assert_eq!(v.interface, "eth7");
        assert_eq!(v.time, "2027-01-15T08:00:05.000000Z");
        let mut tls = event(Protocol::Tls as u8, b"Www.Ads.Example", 0);
        tls.outcome = Counter::TlsReset as u32;
        tls.proto = 6;
        tls.ipv6 = 1;
        tls.src = Ipv6Addr::new(0xfd11, 0, 0, 0, 0, 0, 0, 2).octets();
        let v = view(&tls, clock, &rule, &iface);
        assert_eq!((v.name.as_str(), v.rule.as_str(), v.action.as_str()), ("Www.Ads.Example", "policy:ech", "reset"));
        assert_eq!(v.client, "[fd11::2]:50000");
        let no_sni = event(Protocol::Tls as u8, b"", 0);
        assert_eq!(view(&no_sni, clock, &rule, &iface).rule, "policy:no-sni");
    }

    #[test]
    fn the_file_rotates_at_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut log = EventLog::open(Some(&path), 1000).unwrap();
        let clock = Clock::now();
        let v = view(&event(Protocol::Dns as u8, b"\x01a\x00", 1), clock, &|_| None, &|_| "lo".into());
        for _ in 0..50 {
            log.record(v.clone());
        }
        let now = fs::metadata(&path).unwrap().len();
        let old = fs::metadata(dir.path().join("events.jsonl.1")).unwrap().len();
        assert!(now <= 1000 && old <= 1000, "{now} {old}");
        assert_eq!(log.written, 50);
        let line = fs::read_to_string(&path).unwrap();
        let first: EventView = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        assert_eq!(EventView { seq: 0, ..first.clone() }, v);
        assert!(first.seq > 1, "numbered from 1, the first ones rotated away: {}", first.seq);
        assert_eq!(log.recent(3).len(), 3);
    }
}
