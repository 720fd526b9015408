//! The control plane end to end: `namewall run` in a router namespace
//! between a dig client and dnsmasq, driven by the real CLI verbs and by
//! raw requests on its socket. Every change is checked where it matters:
//! in the answers the client gets.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, Instant},
};

use filter_user::control::{self, Request};
use namewall_tests::netns::{self, Daemon, Topology, addr, dig, start_dnsmasq};
use rand::Rng as _;

const BLOCKLIST: &str = "ads.lab\n||tracker.lab^\n";

const RECORDS: &[(&str, &str, &str)] = &[
    ("ads.lab", "10.12.0.66", "fd12::66"),
    ("tracker.lab", "10.12.0.67", "fd12::67"),
    ("www.lab", "10.12.0.80", "fd12::80"),
    ("news.lab", "10.12.0.81", "fd12::81"),
];

fn socket(dir: &Path) -> PathBuf {
    dir.join("namewall.sock")
}

/// Runs a CLI verb against the daemon whose files are in `dir`.
fn ctl(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(netns::namewall_bin())
        .args(args)
        .arg("--socket")
        .arg(socket(dir))
        .output()
        .expect("run the namewall CLI")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A CLI verb that must succeed; its stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let o = ctl(dir, args);
    assert!(o.status.success(), "namewall {args:?} failed:\n{}{}", stdout(&o), stderr(&o));
    stdout(&o)
}

/// A CLI verb that must fail with one clear line; that line.
fn refused(dir: &Path, args: &[&str]) -> String {
    let o = ctl(dir, args);
    assert!(!o.status.success(), "namewall {args:?} should fail:\n{}", stdout(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line, not a trace:\n{err}");
    assert!(err.starts_with("namewall: error: "), "{err}");
    err.trim().to_owned()
}

fn status_of(t: &Topology, name: &str) -> String {
    dig(&t.client, addr::SERVER_V4, name, "A", &[]).status
}

/// The `list --json` rules as (pattern, rule, source) triples.
fn listed(dir: &Path) -> Vec<(String, String, String)> {
    let v: serde_json::Value = serde_json::from_str(&ok(dir, &["list", "--json"])).expect("list --json is JSON");
    v["reply"]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (s("pattern"), s("rule"), s("source"))
        })
        .collect()
}

/// Polls `f` every 50 ms until it holds or `timeout` passes.
fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Lab {
    dir: tempfile::TempDir,
    t: Topology,
    _dns: netns::Proc,
    block: PathBuf,
}

impl Lab {
    fn new(tag: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let block = dir.path().join("block.txt");
        fs::write(&block, BLOCKLIST).unwrap();
        let t = Topology::new(tag);
        let dns = start_dnsmasq(&t.server, dir.path(), RECORDS);
        Self { dir, t, _dns: dns, block }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn daemon(&self, extra: &[&str]) -> Daemon {
        let block = self.block.to_str().unwrap();
        let args = [&["--blocklist", block][..], extra].concat();
        Daemon::start(&self.t.router, self.path(), netns::ROUTER_CLIENT_IF, &args)
    }
}

#[test]
fn verbs_change_what_clients_get_and_refusals_change_nothing() {
    let lab = Lab::new("ctl");
    let d = lab.path();
    let daemon = lab.daemon(&[]);
    assert_eq!(status_of(&lab.t, "www.lab"), "NOERROR");
    assert_eq!(status_of(&lab.t, "ads.lab"), "NXDOMAIN");

    // block: in force as soon as the verb returns.
    let out = ok(d, &["block", "www.lab", "*.news.lab"]);
    assert!(out.contains("changed   www.lab") && out.contains("changed   *.news.lab"), "{out}");
    assert_eq!(status_of(&lab.t, "www.lab"), "NXDOMAIN");
    assert_eq!(status_of(&lab.t, "a.b.www.lab"), "NXDOMAIN");
    assert_eq!(status_of(&lab.t, "x.news.lab"), "NXDOMAIN");
    assert_eq!(status_of(&lab.t, "news.lab"), "NOERROR", "*.news.lab spares news.lab itself");
    // An action of its own.
    ok(d, &["block", "news.lab", "--action", "refused"]);
    assert_eq!(status_of(&lab.t, "news.lab"), "REFUSED");

    // allow beats a list's block; unblock forgets pushed rules only.
    ok(d, &["allow", "ads.lab"]);
    let r = dig(&lab.t.client, addr::SERVER_V4, "ads.lab", "A", &[]);
    assert_eq!((r.status.as_str(), r.answers.len()), ("NOERROR", 1), "answered by dnsmasq:\n{}", r.raw);
    let out = ok(d, &["unblock", "www.lab", "ads.lab"]);
    assert!(out.contains("ads.lab is still blocked by") && out.contains("block.txt:1"), "{out}");
    assert_eq!(status_of(&lab.t, "www.lab"), "NOERROR");
    assert_eq!(status_of(&lab.t, "ads.lab"), "NXDOMAIN");
    let out = ok(d, &["unblock", "never.lab"]);
    assert!(out.contains("unchanged never.lab") && out.contains("no rule pushed"), "{out}");

    // A batch with one bad name changes nothing and names the entry.
    let before = listed(d);
    let err = refused(d, &["block", "fine.lab", "bad..lab", "www.lab"]);
    assert!(err.contains("entry 2 (\"bad..lab\")") && err.contains("nothing was changed"), "{err}");
    let err = refused(d, &["block", "www.lab", "--action", "explode"]);
    assert!(err.contains("\"explode\" is not an action"), "{err}");
    for bad in ["10.0.0.1", "*", "a*.lab", &format!("{}.lab", "x".repeat(64))] {
        let err = refused(d, &["allow", "ok.lab", bad]);
        assert!(err.contains("entry 2"), "{bad}: {err}");
    }
    assert_eq!(listed(d), before, "refused batches left the rules as they were");
    assert_eq!(status_of(&lab.t, "www.lab"), "NOERROR");

    // Raw requests: malformed, unknown, oversized, too many names.
    let sock = socket(d);
    for (bytes, want) in [
        (b"{\"verb\":\"dance\"}\n".to_vec(), "unknown variant `dance`"),
        (b"not json\n".to_vec(), "malformed request"),
        (b"{\"verb\":\"block\",\"domains\":[\"a.lab\"],\"extra\":1}\n".to_vec(), "unknown field `extra`"),
        (vec![b' '; control::MAX_REQUEST + 10], "larger than"),
    ] {
        let r = control::call_raw(&sock, &bytes).expect("the daemon answers");
        assert!(!r.ok, "{want}");
        let msg = r.error.expect("an error").message;
        assert!(msg.contains(want), "{want}: {msg}");
    }
    let many: Vec<String> = (0..=control::MAX_ENTRIES).map(|i| format!("n{i}.lab")).collect();
    let r = control::call(&sock, &Request::Block { domains: many, action: None }).unwrap();
    assert!(r.error.unwrap().message.contains("at most 100000"));
    assert_eq!(listed(d), before);

    // Machine-readable replies; list filters; stats count hits.
    ok(d, &["block", "www.lab"]);
    for _ in 0..3 {
        assert_eq!(status_of(&lab.t, "www.lab"), "NXDOMAIN");
    }
    let v: serde_json::Value = serde_json::from_str(&ok(d, &["stats", "--top", "5", "--json"])).unwrap();
    let top = v["reply"]["top_rules"].as_array().unwrap();
    let www = top.iter().find(|r| r["pattern"] == "www.lab").unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!((www["hits"].as_u64(), www["source"].as_str()), (Some(3), Some("api")), "{v:#}");
    assert!(v["reply"]["counters"]["nxdomain"].as_u64().unwrap() >= 3, "{v:#}");
    let r0 = &v["reply"]["interfaces"]["r0"];
    assert!(r0["answer"].as_u64().unwrap_or(0) >= 3 && r0["pass"].as_u64().unwrap_or(0) >= 1, "per interface: {v:#}");
    let text = ok(d, &["list", "--match", "*.lab"]);
    assert!(text.contains("www.lab") && text.contains("api") && text.contains("tracker.lab"), "{text}");
    let text = ok(d, &["list", "--match", "track"]);
    assert!(text.contains("tracker.lab") && !text.contains("www.lab"), "{text}");
    let status = ok(d, &["status"]);
    assert!(status.contains("interfaces  r0") && status.contains("2 from lists"), "{status}");

    // The daemon kept running through all of it.
    let (counters, _) = daemon.stop_with_log();
    assert!(counters.get("nxdomain").copied().unwrap_or(0) >= 3, "{counters:?}");
    // Gone: a clear line, not a trace.
    let err = refused(d, &["status"]);
    assert!(err.contains("namewall is not running"), "{err}");
}

#[test]
fn control_socket_is_root_only() {
    let lab = Lab::new("ctlperm");
    let d = lab.path();
    let _daemon = lab.daemon(&[]);
    assert_eq!(fs::metadata(socket(d)).unwrap().permissions().mode() & 0o777, 0o600);
    // The tempdir is 0700 too; open it so only the socket's own mode decides.
    fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(netns::namewall_bin())
        .args(["status", "--socket"])
        .arg(socket(d))
        .output()
        .expect("setpriv (util-linux)");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("permission denied") && stderr(&o).contains("root-only"), "{}", stderr(&o));
    // A second daemon on the same socket refuses instead of stealing it.
    let out = lab.t.router.output(&[
        netns::namewall_bin().to_str().unwrap(),
        "run",
        "--iface",
        "lo",
        "--blocklist",
        lab.block.to_str().unwrap(),
        "--socket",
        socket(d).to_str().unwrap(),
        "--state-dir",
        d.join("second-state").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("another namewall is running"), "{}", stderr(&out));
    assert!(ok(d, &["status"]).contains("interfaces  r0"), "the first daemon still answers");
}

#[test]
fn reloads_swap_lists_and_keep_the_old_set_on_errors() {
    let lab = Lab::new("reload");
    let d = lab.path();
    let mut daemon = lab.daemon(&["--watch-interval", "1"]);
    ok(d, &["block", "www.lab"]);

    // A malformed line: refused with file:line, the old set stays.
    fs::write(&lab.block, "news.lab\nbad..name\n").unwrap();
    let err = refused(d, &["reload"]);
    assert!(err.contains("block.txt:2") && err.contains("old rule set stays in force"), "{err}");
    assert_eq!(status_of(&lab.t, "ads.lab"), "NXDOMAIN");
    assert_eq!(status_of(&lab.t, "news.lab"), "NOERROR");
    // A missing list: the same.
    fs::remove_file(&lab.block).unwrap();
    let err = refused(d, &["reload"]);
    assert!(err.contains("block.txt") && err.contains("No such file"), "{err}");
    assert_eq!(status_of(&lab.t, "ads.lab"), "NXDOMAIN");

    // A good list: read by its changed lines (against the copy in force),
    // switched over, pushed rules kept.
    fs::write(&lab.block, "news.lab\n").unwrap();
    let out = ok(d, &["reload"]);
    assert!(out.contains("reloaded: 2 rules (1 from lists, 1 pushed), 3 changed lines read, 3 rules changed"), "{out}");
    assert_eq!(status_of(&lab.t, "ads.lab"), "NOERROR");
    assert_eq!(status_of(&lab.t, "news.lab"), "NXDOMAIN");
    assert_eq!(status_of(&lab.t, "www.lab"), "NXDOMAIN", "pushed rules survive reloads");

    // SIGHUP reloads.
    fs::write(&lab.block, "tracker.lab\n").unwrap();
    daemon.proc.signal(libc::SIGHUP);
    daemon.proc.wait_for_log("why=\"SIGHUP\"", Duration::from_secs(10));
    assert_eq!(status_of(&lab.t, "tracker.lab"), "NXDOMAIN");
    assert_eq!(status_of(&lab.t, "news.lab"), "NOERROR");

    // So does changing a list file (replaced, as editors and fetchers do).
    let tmp = d.join("block.txt.new");
    fs::write(&tmp, "ads.lab\n").unwrap();
    fs::rename(&tmp, &lab.block).unwrap();
    eventually("the watched list reloads", Duration::from_secs(10), || status_of(&lab.t, "ads.lab") == "NXDOMAIN");
    assert_eq!(status_of(&lab.t, "tracker.lab"), "NOERROR");
    let status = ok(d, &["status"]);
    assert!(status.contains("(2 failed)"), "{status}");
    drop(daemon);
}

#[test]
fn acknowledged_rules_survive_kill_9() {
    let lab = Lab::new("kill9");
    let d = lab.path();
    let mut rng = rand::rng();
    let mut acked: Vec<String> = Vec::new();
    for round in 0..3 {
        let daemon = lab.daemon(&[]);
        // Everything acknowledged before is there after the restart.
        let listed: Vec<String> = listed(d).into_iter().filter(|r| r.2 == "api").map(|r| r.0).collect();
        for name in &acked {
            assert!(listed.contains(name), "round {round}: {name} was acknowledged but is gone");
        }
        if let Some(last) = acked.last() {
            assert_eq!(status_of(&lab.t, last), "NXDOMAIN", "{last} blocked after the restart");
        }
        // A stream of updates, killed at a random moment from another thread.
        let pid = daemon.proc.pid();
        let delay = Duration::from_millis(rng.random_range(20..300));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            // SAFETY: kill(2) on the daemon we started.
            unsafe { libc::kill(pid.cast_signed(), libc::SIGKILL) };
        });
        let sock = socket(d);
        for i in 0..2000 {
            let name = format!("r{round}-{i}.lab");
            match control::call(&sock, &Request::Block { domains: vec![name.clone()], action: None }) {
                Ok(r) if r.ok => acked.push(name),
                Ok(r) => panic!("refused: {:?}", r.error),
                // Killed mid-request: not acknowledged, may or may not be kept.
                Err(_) => break,
            }
        }
        killer.join().unwrap();
        let mut daemon = daemon;
        let _ = daemon.proc.wait(Duration::from_secs(10));
        // The state file parses whatever moment the kill hit.
        let text = fs::read_to_string(d.join("state/rules.json")).expect("the state file exists");
        serde_json::from_str::<serde_json::Value>(&text).expect("the state file is whole");
        assert!(!acked.is_empty(), "round {round}: some updates were acknowledged before the kill");
    }
    let _daemon = lab.daemon(&[]);
    let listed: Vec<String> = listed(d).into_iter().filter(|r| r.2 == "api").map(|r| r.0).collect();
    for name in &acked {
        assert!(listed.contains(name), "{name} was acknowledged but is gone");
    }
}

#[test]
fn config_file_says_what_flags_say_and_flags_win() {
    let lab = Lab::new("config");
    let d = lab.path();
    let conf = d.join("namewall.toml");
    // Relative paths are relative to the config file.
    fs::write(&conf, "blocklist = [\"block.txt\"]\ndns-action = \"refused\"\nstats-interval = 0\n").unwrap();
    let conf_s = conf.to_str().unwrap();
    let daemon = Daemon::start(&lab.t.router, d, netns::ROUTER_CLIENT_IF, &["--config", conf_s]);
    assert_eq!(status_of(&lab.t, "ads.lab"), "REFUSED");
    drop(daemon);
    let daemon =
        Daemon::start(&lab.t.router, d, netns::ROUTER_CLIENT_IF, &["--config", conf_s, "--dns-action", "nxdomain"]);
    assert_eq!(status_of(&lab.t, "ads.lab"), "NXDOMAIN", "the flag overrides the file");
    drop(daemon);

    let bin = netns::namewall_bin();
    for (text, want) in [
        ("dns_action = \"refused\"\n", "unknown key \"dns_action\""),
        ("dns-action = \"explode\"\n", "\"explode\" is not a DNS action"),
        ("unjudged = \"maybe\"\n", "invalid value 'maybe' for '--unjudged"),
        ("blocklist = [\n", "TOML parse error"),
    ] {
        fs::write(&conf, text).unwrap();
        let out = lab.t.router.output(&[bin.to_str().unwrap(), "run", "--iface", "r0", "--config", conf_s]);
        let err = stderr(&out);
        assert!(!out.status.success() && err.contains(want) && err.contains("namewall.toml"), "{text}: {err}");
        assert!(err.lines().count() <= 2, "{err}");
    }
}

/// The example config in packaging/ is one `run` reads (every key known,
/// every value valid): with the interface overridden by a flag, the first
/// thing it stops at is that interface. Completions and help cover every verb.
#[test]
fn packaging_config_help_and_completions() {
    let bin = netns::namewall_bin();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/namewall.toml");
    let out = std::process::Command::new(&bin)
        .args(["run", "--iface", "nosuch0", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    assert_eq!(stderr(&out).trim(), "namewall: error: interface \"nosuch0\" does not exist");
    let out = std::process::Command::new(&bin).args(["completions", "bash"]).output().unwrap();
    let text = stdout(&out);
    let help = stdout(&std::process::Command::new(&bin).arg("--help").output().unwrap());
    for verb in [
        "run",
        "replay",
        "block",
        "allow",
        "unblock",
        "list",
        "stats",
        "reload",
        "status",
        "events",
        "stop",
        "completions",
    ] {
        assert!(text.contains(&format!("namewall__subcmd__{verb}")), "bash completions for {verb}");
        assert!(help.contains(&format!("  {verb} ")), "--help lists {verb}:\n{help}");
        let sub = std::process::Command::new(&bin).args([verb, "--help"]).output().unwrap();
        assert!(sub.status.success() && stdout(&sub).contains("Usage: namewall"), "{verb} --help");
    }
}

/// The XDP program id on the router's client-facing interface, if any.
fn xdp_prog_id(t: &Topology) -> Option<u32> {
    let out = t.router.run(&["ip", "-d", "link", "show", netns::ROUTER_CLIENT_IF]);
    let at = out.find("prog/xdp id ")?;
    out[at + 12..].split_whitespace().next()?.parse().ok()
}

/// Restarts and upgrades adopt the pinned filter: a client querying all
/// along never gets a blocked name answered, the program is replaced in
/// place, counters carry on; `namewall stop` detaches and removes it all;
/// pinned state of another ABI version is refused.
#[test]
fn restarts_adopt_the_pinned_filter_without_a_gap() {
    let lab = Lab::new("adopt");
    let d = lab.path();
    let pins = netns::pin_dir(d);
    let pins_s = pins.to_str().unwrap().to_owned();
    let keep = ["--pin-dir", pins_s.as_str()];
    let mut old = lab.daemon(&keep);
    let first = xdp_prog_id(&lab.t).expect("attached");
    ok(d, &["block", "www.lab"]);

    // A client asking all along, bounded in count and time.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let answers = std::thread::scope(|s| {
        let client = s.spawn(|| {
            let mut seen = Vec::new();
            let start = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && seen.len() < 5000
                && start.elapsed() < Duration::from_mins(1)
            {
                for name in ["ads.lab", "www.lab"] {
                    seen.push((name, status_of(&lab.t, name)));
                }
            }
            seen
        });
        // Exit: the filter stays.
        old.proc.signal(libc::SIGTERM);
        old.proc.wait(Duration::from_secs(10)).expect("exits on SIGTERM");
        assert!(old.proc.log().contains("stays attached"), "{}", old.proc.log());
        assert_eq!(xdp_prog_id(&lab.t), Some(first), "still attached with no daemon");
        std::thread::sleep(Duration::from_millis(300));
        // A new daemon adopts it and replaces the program in place.
        let new = lab.daemon(&keep);
        assert!(new.proc.log().contains("adopted=true"), "{}", new.proc.log());
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = client.join().unwrap();
        (new, seen)
    });
    let (new, seen) = answers;
    assert!(seen.len() >= 6, "the client asked through the restart: {seen:?}");
    let answered: Vec<_> = seen.iter().filter(|(_, st)| st != "NXDOMAIN").collect();
    assert!(answered.is_empty(), "blocked names answered during the restart: {answered:?}");
    let second = xdp_prog_id(&lab.t).expect("attached");
    assert_ne!(second, first, "the new daemon's program replaced the old one");
    // Counters and pushed rules carried over.
    let v: serde_json::Value = serde_json::from_str(&ok(d, &["stats", "--json"])).unwrap();
    let nx = v["reply"]["counters"]["nxdomain"].as_u64().unwrap_or(0);
    assert!(nx >= seen.len() as u64, "counters carry on: {nx} for {} queries", seen.len());
    assert!(listed(d).iter().any(|r| r.0 == "www.lab" && r.2 == "api"));

    // stop: detached and unpinned; the names resolve again.
    let out = ok(d, &["stop", "--pin-dir", &pins_s]);
    assert!(out.contains("detached and exited"), "{out}");
    let mut new = new;
    new.proc.wait(Duration::from_secs(10)).expect("the daemon exits");
    assert_eq!(xdp_prog_id(&lab.t), None, "detached");
    assert!(!pins.exists(), "unpinned");
    assert_eq!(status_of(&lab.t, "ads.lab"), "NOERROR");
    let out = ok(d, &["stop", "--pin-dir", &pins_s]);
    assert!(out.contains("nothing pinned"), "{out}");

    // A daemon that exited leaving the filter attached: stop removes it too.
    let mut third = lab.daemon(&keep);
    third.proc.signal(libc::SIGINT);
    third.proc.wait(Duration::from_secs(10)).unwrap();
    assert!(xdp_prog_id(&lab.t).is_some());
    let out = ok(d, &["stop", "--pin-dir", &pins_s]);
    assert!(out.contains("links of r0 (detached)"), "{out}");
    assert_eq!(xdp_prog_id(&lab.t), None);

    // Another ABI version's state: refused, and left alone.
    let other = pins.join("v999");
    fs::create_dir_all(&other).unwrap();
    let bin = netns::namewall_bin();
    let out = lab.t.router.output(&[
        bin.to_str().unwrap(),
        "run",
        "--iface",
        netns::ROUTER_CLIENT_IF,
        "--blocklist",
        lab.block.to_str().unwrap(),
        "--socket",
        socket(d).to_str().unwrap(),
        "--state-dir",
        d.join("second-state").to_str().unwrap(),
        "--pin-dir",
        &pins_s,
    ]);
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("ABI version 999") && err.lines().count() == 1, "{err}");
    assert!(other.exists() && xdp_prog_id(&lab.t).is_none());
    fs::remove_dir(&other).unwrap();
    fs::remove_dir(&pins).unwrap();
}

/// `GET path` over HTTP/1.1 from inside `ns`: (status line, body).
fn http_get(ns: &netns::NetNs, addr: &str, path: &str) -> (String, String) {
    netns::in_namespace(ns, || {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics listener");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
        (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
    })
}

/// Samples of a scrape: (name with labels as written, value), read with
/// a Prometheus text-format parser.
fn samples(body: &str) -> Vec<(String, f64)> {
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a valid exposition");
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            };
            (format!("{}{{{}}}", s.metric, labels.join(",")), v)
        })
        .collect()
}

fn sample(all: &[(String, f64)], key: &str) -> f64 {
    all.iter().find(|(k, _)| k == key).map_or_else(|| panic!("no {key} in {all:#?}"), |(_, v)| *v)
}

/// A sample that counts something: a whole number.
fn count(all: &[(String, f64)], key: &str) -> u64 {
    let v = sample(all, key);
    let n = format!("{v}").parse::<u64>();
    n.unwrap_or_else(|_| panic!("{key} = {v} is not a count"))
}

#[test]
fn metrics_scraped_over_http() {
    let lab = Lab::new("metrics");
    let d = lab.path();
    // Nothing listens unless asked.
    let quiet = lab.daemon(&[]);
    let listening = lab.t.router.run(&["ss", "-Hltn"]);
    assert!(listening.trim().is_empty(), "no TCP listener by default: {listening}");
    drop(quiet);

    let addr = "127.0.0.1:9153";
    let _daemon = lab.daemon(&["--metrics", addr, "--metrics-top", "3"]);
    // A reload, for `namewall_reloads_total`.
    ok(d, &["reload"]);
    ok(d, &["block", "www.lab"]);
    for _ in 0..4 {
        assert_eq!(status_of(&lab.t, "ads.lab"), "NXDOMAIN");
    }
    assert_eq!(status_of(&lab.t, "www.lab"), "NXDOMAIN");
    assert_eq!(status_of(&lab.t, "news.lab"), "NOERROR");
    let (status, body) = http_get(&lab.t.router, addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "OpenMetrics ends with # EOF");
    let all = samples(&body);
    let pkt = |outcome: &str, verdict: &str| {
        count(&all, &format!("namewall_packets_total{{interface=r0,outcome={outcome},protocol=dns,verdict={verdict}}}"))
    };
    assert_eq!(pkt("nxdomain", "answer"), 5);
    assert!(pkt("pass_no_match", "pass") >= 1);
    let block = lab.block.display().to_string();
    assert_eq!(count(&all, &format!("namewall_list_rules{{kind=block,list={block}}}")), 2);
    assert_eq!(count(&all, "namewall_rules{source=api}"), 1);
    assert_eq!(count(&all, "namewall_rules{source=kernel}"), 3);
    assert_eq!(count(&all, &format!("namewall_rule_hits{{rule=ads.lab,source={block}:1}}")), 4);
    assert_eq!(count(&all, "namewall_rule_hits{rule=www.lab,source=api}"), 1);
    assert_eq!(count(&all, "namewall_reloads_total{}"), 1);
    assert!(sample(&all, "namewall_last_reload_success_timestamp_seconds{}") > 1.7e9);

    let (status, _) = http_get(&lab.t.router, addr, "/other");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

/// Lines `namewall events --follow --json` prints, read on a thread.
struct Follower {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Follower {
    fn start(dir: &Path) -> Self {
        let mut child = std::process::Command::new(netns::namewall_bin())
            .args(["events", "--follow", "--json", "--last", "0", "--socket"])
            .arg(socket(dir))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("namewall events --follow");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn next(&self) -> serde_json::Value {
        let l = self.lines.recv_timeout(Duration::from_secs(10)).expect("a followed event within 10 s");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"))
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn event_log_records_blocks_and_a_flood_stays_within_its_budget() {
    let lab = Lab::new("events");
    let d = lab.path();
    let log = d.join("events.jsonl");
    let start = Instant::now();
    let _daemon = lab.daemon(&["--events-log", log.to_str().unwrap(), "--events-budget", "20"]);
    let follower = Follower::start(d);
    // The follower is connected once the daemon has seen its request.
    std::thread::sleep(Duration::from_millis(200));

    assert_eq!(status_of(&lab.t, "Www.Ads.lab"), "NXDOMAIN");
    let line = || fs::read_to_string(&log).unwrap_or_default();
    eventually("the block in the log", Duration::from_secs(10), || line().lines().count() == 1);
    let event: serde_json::Value = serde_json::from_str(line().lines().next().unwrap()).unwrap();
    let s = |k: &str| event[k].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        (s("interface"), s("protocol"), s("name"), s("rule"), s("action")),
        ("r0".into(), "dns".into(), "Www.Ads.lab".into(), "ads.lab".into(), "nxdomain".into()),
        "{event}"
    );
    assert!(s("client").starts_with("10.11.0.2:") && s("server") == "10.12.0.2:53", "{event}");
    assert!(s("time").starts_with("20") && s("time").ends_with('Z'), "{event}");
    assert_eq!(follower.next(), event, "the follower saw the same event");
    let text = ok(d, &["events"]);
    assert!(text.contains("Www.Ads.lab rule=ads.lab nxdomain") && text.contains(" r0 10.11.0.2:"), "{text}");

    // A flood: bounded in count and time, from the client namespace.
    let sent = netns::in_namespace(&lab.t.client, || {
        let sock = std::net::UdpSocket::bind("10.11.0.2:0").unwrap();
        let begin = Instant::now();
        let mut n = 0;
        while n < 3000 && begin.elapsed() < Duration::from_secs(10) {
            let q = namewall_tests::dnswire::query(&format!("f{n}.ads.lab"), hickory_proto::rr::RecordType::A);
            if sock.send_to(&q, "10.12.0.2:53").is_ok() {
                n += 1;
            }
        }
        n
    });
    assert!(sent >= 1000, "{sent} queries sent");
    // Every block is logged, over the budget or lost: poll until they add up.
    let mut totals = (0, 0, 0, 0);
    eventually("every block accounted for", Duration::from_secs(10), || {
        let stats: serde_json::Value = serde_json::from_str(&ok(d, &["stats", "--json"])).unwrap();
        let r = &stats["reply"];
        let counter = |k: &str| r["counters"][k].as_u64().unwrap_or(0);
        let blocked = counter("nxdomain");
        totals =
            (blocked, r["events_written"].as_u64().unwrap_or(0), counter("event_over_budget"), counter("event_lost"));
        blocked > 1 && totals.1 + totals.2 + totals.3 == blocked
    });
    let (blocked, written, over, _lost) = totals;
    let secs = start.elapsed().as_secs() + 2;
    assert!(written <= 20 * secs, "{written} events in {secs} s with a budget of 20/s");
    assert!(over >= blocked - 20 * secs, "the rest counted over budget: {totals:?}");
    assert_eq!(line().lines().count() as u64, written, "the log has every event written");
}

/// What the list server was asked: (If-None-Match, status answered).
type Served = std::sync::Arc<std::sync::Mutex<Vec<(Option<String>, u16)>>>;

/// An HTTP server of one list, in a namespace, whose answer the test sets:
/// it honours If-None-Match with 304 and records what it was asked.
struct ListServer {
    state: std::sync::Arc<std::sync::Mutex<(u16, String, String)>>,
    log: Served,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ListServer {
    fn start(ns: &netns::NetNs, addr: &'static str, body: &str, etag: &str) -> Self {
        use std::sync::{Arc, Mutex, atomic::AtomicBool};
        let state = Arc::new(Mutex::new((200, body.to_owned(), etag.to_owned())));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, lg, sp) = (state.clone(), log.clone(), stop.clone());
        let path = std::path::PathBuf::from("/run/netns").join(ns.name());
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let f = fs::File::open(&path).expect("the namespace");
            // SAFETY: setns on this thread only, with a namespace fd we opened.
            assert_eq!(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) }, 0);
            let server = tiny_http::Server::http(addr).expect("listen");
            ready_tx.send(()).unwrap();
            while !sp.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(50)) else { continue };
                let inm = req.headers().iter().find(|h| h.field.equiv("If-None-Match")).map(|h| h.value.to_string());
                let (status, body, etag) = st.lock().unwrap().clone();
                let status = if status == 200 && inm.as_deref() == Some(etag.as_str()) { 304 } else { status };
                lg.lock().unwrap().push((inm, status));
                let resp = tiny_http::Response::from_string(if status == 200 { body } else { String::new() })
                    .with_status_code(status)
                    .with_header(tiny_http::Header::from_bytes("ETag", etag.as_bytes()).unwrap());
                let _ = req.respond(resp);
            }
        });
        ready.recv_timeout(Duration::from_secs(5)).expect("the list server listens");
        Self { state, log, stop, thread: Some(thread) }
    }

    fn set(&self, status: u16, body: &str, etag: &str) {
        *self.state.lock().unwrap() = (status, body.to_owned(), etag.to_owned());
    }

    fn served(&self, status: u16, if_none_match: Option<&str>) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|(i, s)| *s == status && (if_none_match.is_none() || i.as_deref() == if_none_match))
    }
}

impl Drop for ListServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn lists_from_urls_refresh_conditionally_and_keep_the_last_good_copy() {
    let lab = Lab::new("urls");
    let d = lab.path();
    let server = ListServer::start(&lab.t.router, "127.0.0.1:8080", "ads.lab\n", "\"v1\"");
    let url = "http://127.0.0.1:8080/list";
    let args = ["--blocklist-url", url, "--url-refresh", "1"];
    let daemon = Daemon::start(&lab.t.router, d, netns::ROUTER_CLIENT_IF, &args);
    assert_eq!(status_of(&lab.t, "ads.lab"), "NXDOMAIN", "fetched before the first rule set");
    let wait = Duration::from_secs(15);
    eventually("a conditional request answered 304", wait, || server.served(304, Some("\"v1\"")));

    server.set(200, "tracker.lab\n", "\"v2\"");
    eventually("the new copy in force", wait, || status_of(&lab.t, "tracker.lab") == "NXDOMAIN");
    assert_eq!(status_of(&lab.t, "ads.lab"), "NOERROR");

    // A server error, then a copy with a malformed line: the last good copy stays.
    server.set(500, "", "\"v2\"");
    eventually("a 500 served", wait, || server.served(500, None));
    server.set(200, "news.lab\nbad..name\n", "\"v3\"");
    eventually("the malformed copy served", wait, || {
        server.log.lock().unwrap().iter().filter(|(_, s)| *s == 200).count() >= 3
    });
    eventually("its refusal reported", wait, || ok(d, &["status"]).contains("malformed line"));
    // An empty copy does not wipe out the list either.
    server.set(200, "", "\"v4\"");
    eventually("the empty copy refused", wait, || ok(d, &["status"]).contains("the new copy has no rules"));
    let status = ok(d, &["status"]);
    assert!(status.contains(&format!("block {url} (fetched")) && status.contains("failures"), "{status}");
    assert_eq!(status_of(&lab.t, "tracker.lab"), "NXDOMAIN");
    assert_eq!(status_of(&lab.t, "news.lab"), "NOERROR");
    drop(daemon);

    // With the server gone, a restart loads the cached copy.
    drop(server);
    let _daemon = Daemon::start(&lab.t.router, d, netns::ROUTER_CLIENT_IF, &args);
    assert_eq!(status_of(&lab.t, "tracker.lab"), "NXDOMAIN", "the cached copy, while the URL fails");
    let status = ok(d, &["status"]);
    assert!(status.contains("1 failures, last error"), "{status}");
}

/// An interface deleted and made again under a pinned link leaves the link
/// defunct: the next daemon replaces it with a fresh attachment instead of
/// failing to start.
#[test]
fn a_defunct_pinned_link_is_replaced() {
    let lab = Lab::new("defunct");
    let d = lab.path();
    let pins = netns::pin_dir(d);
    let pins_s = pins.to_str().unwrap().to_owned();
    let keep = ["--pin-dir", pins_s.as_str()];
    let mut first = lab.daemon(&keep);
    first.proc.signal(libc::SIGTERM);
    first.proc.wait(Duration::from_secs(10)).expect("exits");
    let (c, r) = (lab.t.client.name().to_owned(), lab.t.router.name().to_owned());
    lab.t.router.run(&["ip", "link", "del", netns::ROUTER_CLIENT_IF]);
    netns::sh(&["ip", "link", "add", "c0", "netns", &c, "type", "veth", "peer", "name", "r0", "netns", &r]);
    lab.t.router.run(&["ip", "link", "set", "r0", "up"]);
    lab.t.client.run(&["ip", "link", "set", "c0", "up"]);
    assert_eq!(xdp_prog_id(&lab.t), None, "the new r0 starts without a program");
    let second = lab.daemon(&keep);
    assert!(second.proc.log().contains("attaching afresh"), "{}", second.proc.log());
    assert!(xdp_prog_id(&lab.t).is_some(), "attached to the new r0");
    ok(d, &["stop", "--pin-dir", &pins_s]);
    drop(second);
    assert!(!pins.exists());
}

/// The debug object writes a record per packet: `run` refuses to leave it
/// attached after the daemon exits, and says what to pass instead.
#[test]
fn xdp_debug_log_needs_detach_on_exit() {
    let bin = netns::namewall_bin();
    let out = std::process::Command::new(&bin)
        .args(["run", "--iface", "nosuch0", "--xdp-debug-log"])
        .output()
        .expect("run namewall");
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("--xdp-debug-log needs --detach-on-exit or --no-pin"), "{err}");
}

/// The pins of each program's stage array: one for the attached program
/// while a daemon runs and after it exits (the program keeps reaching its
/// stages: a blocked name is still answered NXDOMAIN with no daemon), the
/// replaced program's removed once a new daemon's program is attached.
#[test]
fn stage_arrays_are_pinned_per_program_and_the_replaced_one_removed() {
    let lab = Lab::new("stages");
    let d = lab.path();
    let pins = netns::pin_dir(d);
    let pins_s = pins.to_str().unwrap().to_owned();
    let keep = ["--pin-dir", pins_s.as_str()];
    let stage_pins = || -> Vec<String> {
        let dir = pins.join(format!("v{}", maps::ABI_VERSION)).join("maps");
        let mut v: Vec<String> = fs::read_dir(&dir)
            .expect("the pinned maps")
            .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.starts_with("STAGES-"))
            .collect();
        v.sort();
        v
    };
    let mut old = lab.daemon(&keep);
    let first = xdp_prog_id(&lab.t).expect("attached");
    assert_eq!(stage_pins(), [format!("STAGES-{first}")]);
    old.proc.signal(libc::SIGTERM);
    old.proc.wait(Duration::from_secs(10)).expect("exits on SIGTERM");
    assert_eq!(stage_pins(), [format!("STAGES-{first}")], "kept for the program left attached");
    assert_eq!(status_of(&lab.t, "ads.lab"), "NXDOMAIN", "judged with no daemon running");

    let new = lab.daemon(&keep);
    let second = xdp_prog_id(&lab.t).expect("attached");
    assert_ne!(second, first);
    eventually("the replaced program's stages unpinned", Duration::from_secs(10), || {
        stage_pins() == [format!("STAGES-{second}")]
    });
    assert_eq!(status_of(&lab.t, "ads.lab"), "NXDOMAIN");
    let out = ok(d, &["stop", "--pin-dir", &pins_s]);
    assert!(out.contains("detached and exited"), "{out}");
    let mut new = new;
    new.proc.wait(Duration::from_secs(10)).expect("the daemon exits");
    assert!(!pins.exists(), "unpinned");
}

/// An interface whose frames XDP sees without an Ethernet header (tun,
/// WireGuard, ppp, IP tunnels) is refused with a clear error, rather than
/// filtered as `not_ip` traffic that all passes; the program never attaches.
#[test]
fn non_ethernet_interfaces_are_refused() {
    let lab = Lab::new("ctltun");
    lab.t.router.run(&["ip", "tuntap", "add", "dev", "nwtun0", "mode", "tun"]);
    lab.t.router.run(&["ip", "link", "set", "nwtun0", "up"]);
    let bin = netns::namewall_bin();
    let block = lab.block.to_str().unwrap().to_owned();
    let out =
        lab.t.router.output(&[bin.to_str().unwrap(), "run", "--iface", "nwtun0", "--blocklist", &block, "--no-pin"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("\"nwtun0\" is not an Ethernet interface") && err.contains("raw IP (tun, WireGuard)"),
        "{err}"
    );
    let links = lab.t.router.output(&["ip", "-d", "link", "show", "nwtun0"]);
    assert!(!stdout(&links).contains("prog/xdp"), "nothing attached: {}", stdout(&links));
    // Named beside an Ethernet interface, it is refused before anything is
    // attached anywhere.
    let out = lab.t.router.output(&[
        bin.to_str().unwrap(),
        "run",
        "--iface",
        "r0",
        "--iface",
        "nwtun0",
        "--blocklist",
        &block,
        "--no-pin",
    ]);
    assert!(stderr(&out).contains("\"nwtun0\" is not an Ethernet interface"), "{}", stderr(&out));
    let links = lab.t.router.output(&["ip", "-d", "link", "show", "r0"]);
    assert!(!stdout(&links).contains("prog/xdp"), "nothing attached to r0: {}", stdout(&links));
}
