//! Network namespaces for tests and the lab: each one has a unique name,
//! is deleted on drop (also when a test panics), and every process started
//! in it is killed on drop. Nothing here sends traffic outside the
//! namespaces it creates.

use std::{
    fmt, fs,
    io::{self, Read as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs a command and returns its output; panics with the command line and stderr on failure.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("spawning {args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace owned by this process.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `nw-<tag>-<pid>-<n>`: unique per process and call.
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("nw-{tag}-{}-{n}", std::process::id());
        Self::named(name)
    }

    /// Creates a namespace with an exact name (the lab uses fixed names so
    /// people can type them).
    pub fn named(name: String) -> Self {
        sh(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a command inside; returns its output whatever the exit status.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("spawning {args:?} in {}: {e}", self.name))
    }

    /// Runs a command inside; panics if it fails; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "{args:?} in {} failed ({}): {}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a long-running process inside, with stdout and stderr going to
    /// `log`. It is stopped when the guard drops.
    pub fn spawn(&self, args: &[&str], log: &Path) -> Proc {
        let f = fs::File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let child = self
            .command(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup log"))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {args:?} in {}: {e}", self.name));
        Proc { child: Some(child), what: format!("{} in {}", args[0], self.name), log: log.to_owned() }
    }

    /// Leaves the namespace in place when dropped (the lab's `--keep`).
    pub fn keep(self) -> String {
        let name = self.name.clone();
        std::mem::forget(self);
        name
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Kill stragglers, then delete; deleting also removes its veth ends.
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

impl fmt::Debug for NetNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A process started in a namespace; SIGTERM then SIGKILL on drop.
pub struct Proc {
    child: Option<Child>,
    what: String,
    log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Polls the log until it contains `needle`; panics with the log on timeout or exit.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            if self.log().contains(needle) {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("{} exited ({status}) before logging {needle:?}:\n{}", self.what, self.log());
            }
            assert!(
                start.elapsed() < timeout,
                "{} did not log {needle:?} within {timeout:?}:\n{}",
                self.what,
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (e.g. `libc::SIGINT`).
    pub fn signal(&self, sig: i32) {
        // `ip netns exec` execs the program, so the child's pid is the program's.
        // SAFETY: kill(2) with a pid we own.
        unsafe { libc::kill(self.pid().cast_signed(), sig) };
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<ExitStatus> {
        let start = Instant::now();
        let child = self.child.as_mut().ok_or_else(|| io::Error::other("already reaped"))?;
        loop {
            if let Some(s) = child.try_wait()? {
                self.child = None;
                return Ok(s);
            }
            if start.elapsed() > timeout {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("{} still running", self.what)));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: our child.
            unsafe { libc::kill(child.id().cast_signed(), libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(2) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Addresses of the three-namespace topology.
pub mod addr {
    pub const CLIENT_V4: &str = "10.11.0.2";
    pub const ROUTER_C_V4: &str = "10.11.0.1";
    pub const ROUTER_S_V4: &str = "10.12.0.1";
    pub const SERVER_V4: &str = "10.12.0.2";
    pub const CLIENT_V6: &str = "fd11::2";
    pub const ROUTER_C_V6: &str = "fd11::1";
    pub const ROUTER_S_V6: &str = "fd12::1";
    pub const SERVER_V6: &str = "fd12::2";
}

/// client --(veth c0|r0)-- router --(veth r1|s0)-- server, IPv4 and IPv6,
/// the router forwarding between its two interfaces.
pub struct Topology {
    pub client: NetNs,
    pub router: NetNs,
    pub server: NetNs,
}

/// The router's client-facing interface, where namewall attaches.
pub const ROUTER_CLIENT_IF: &str = "r0";

impl Topology {
    /// Builds the topology in fresh namespaces named after `tag`.
    pub fn new(tag: &str) -> Self {
        Self::build(NetNs::new(&format!("{tag}-c")), NetNs::new(&format!("{tag}-r")), NetNs::new(&format!("{tag}-s")))
    }

    /// Builds it in namespaces with the given names.
    pub fn build(client: NetNs, router: NetNs, server: NetNs) -> Self {
        use addr::{CLIENT_V4, CLIENT_V6, ROUTER_C_V4, ROUTER_C_V6, ROUTER_S_V4, ROUTER_S_V6, SERVER_V4, SERVER_V6};
        // No duplicate address detection: link-local addresses would stay
        // tentative for a second or two and hold up the first IPv6 exchange.
        for ns in [&client, &router, &server] {
            ns.run(&["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"]);
        }
        sh(&[
            "ip",
            "link",
            "add",
            "c0",
            "netns",
            client.name(),
            "type",
            "veth",
            "peer",
            "name",
            "r0",
            "netns",
            router.name(),
        ]);
        sh(&[
            "ip",
            "link",
            "add",
            "s0",
            "netns",
            server.name(),
            "type",
            "veth",
            "peer",
            "name",
            "r1",
            "netns",
            router.name(),
        ]);
        for (ns, dev, v4, v6) in [
            (&client, "c0", CLIENT_V4, CLIENT_V6),
            (&router, "r0", ROUTER_C_V4, ROUTER_C_V6),
            (&router, "r1", ROUTER_S_V4, ROUTER_S_V6),
            (&server, "s0", SERVER_V4, SERVER_V6),
        ] {
            ns.run(&["ip", "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ns.run(&["ip", "-6", "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            ns.run(&["ip", "link", "set", dev, "up"]);
        }
        client.run(&["ip", "route", "add", "default", "via", ROUTER_C_V4]);
        client.run(&["ip", "-6", "route", "add", "default", "via", ROUTER_C_V6]);
        server.run(&["ip", "route", "add", "default", "via", ROUTER_S_V4]);
        server.run(&["ip", "-6", "route", "add", "default", "via", ROUTER_S_V6]);
        router.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        router.run(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        // XDP_TX on r0 hands frames straight to c0's receive ring, which only
        // exists while c0 runs an XDP program in native mode (toggling GRO on
        // c0 did not bring it up on this kernel). A pass-through program on
        // the client stands in for what any physical NIC does anyway.
        attach_pass_program(&client, "c0");
        let t = Self { client, router, server };
        t.resolve_neighbours();
        t
    }

    /// Resolves the client's and the server's router neighbours (ARP and
    /// NDP) before any test traffic. On a fresh veth the first neighbour
    /// solicitation was sometimes lost and the kernel retries after a
    /// second, which would make the first query of a test time out.
    fn resolve_neighbours(&self) {
        use addr::{ROUTER_C_V4, ROUTER_C_V6, ROUTER_S_V4, ROUTER_S_V6};
        for (ns, router) in [
            (&self.client, ROUTER_C_V4),
            (&self.client, ROUTER_C_V6),
            (&self.server, ROUTER_S_V4),
            (&self.server, ROUTER_S_V6),
        ] {
            let start = Instant::now();
            loop {
                // Any packet to the router makes the kernel resolve it; nothing listens on 53 there.
                let _ = ns.output(&["dig", &format!("@{router}"), "neighbour.probe", "+time=1", "+tries=1"]);
                let neigh = ns.run(&["ip", "neigh", "show", router]);
                if neigh.contains("REACHABLE") || neigh.contains("STALE") || neigh.contains("DELAY") {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(10), "{router} not resolved from {ns:?}: {neigh}");
            }
        }
    }

    /// Turns segmentation offloads off on the client so it sends real
    /// MTU-sized segments (GRO stays on to receive `XDP_TX` frames).
    pub fn real_segments(&self) {
        self.client.run(&["ethtool", "-K", "c0", "tso", "off", "gso", "off"]);
    }
}

/// Attaches the benchmarks' baseline program (count and `XDP_PASS`) to `dev`
/// in native mode with iproute2.
pub fn attach_pass_program(ns: &NetNs, dev: &str) {
    // The object only needs to exist while iproute2 loads it.
    let obj = tempfile::Builder::new().prefix("namewall-pass-").suffix(".o").tempfile().expect("temp file");
    fs::write(obj.path(), filter_user::dataplane::loader::BASELINE_OBJECT).expect("write the pass program");
    ns.run(&["ip", "link", "set", "dev", dev, "xdpdrv", "obj", obj.path().to_str().expect("utf-8"), "sec", "xdp"]);
}

/// Starts dnsmasq in the server namespace as an authoritative-only server
/// for `zone` (answering every name under it with `v4`/`v6`) that logs every
/// query it receives, so a test can tell which queries reached the server.
pub fn start_dnsmasq(ns: &NetNs, dir: &Path, records: &[(&str, &str, &str)]) -> Proc {
    let log = dir.join("dnsmasq.log");
    let mut args: Vec<String> = vec![
        "dnsmasq".into(),
        "--keep-in-foreground".into(),
        "--conf-file=/dev/null".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--no-poll".into(),
        "--bind-interfaces".into(),
        format!("--listen-address={},{}", addr::SERVER_V4, addr::SERVER_V6),
        "--port=53".into(),
        "--log-queries=extra".into(),
        "--log-facility=-".into(),
        "--pid-file=".into(),
        "--user=root".into(),
        "--cache-size=0".into(),
    ];
    for (name, v4, v6) in records {
        args.push(format!("--address=/{name}/{v4}"));
        args.push(format!("--address=/{name}/{v6}"));
    }
    let command: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = ns.spawn(&command, &log);
    server.wait_for_log("started, version", Duration::from_secs(10));
    // Listening sockets exist once it logs; wait until it answers too.
    let start = Instant::now();
    loop {
        let out =
            ns.output(&["dig", "+short", "+time=1", "+tries=1", &format!("@{}", addr::SERVER_V4), "probe.invalid"]);
        if out.status.success() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "dnsmasq does not answer:\n{}", server.log());
        thread::sleep(Duration::from_millis(50));
    }
    server
}

/// The `namewall` binary next to the test executables (`cargo xtask test`
/// builds it first), or `$NAMEWALL_BIN`.
pub fn namewall_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NAMEWALL_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("namewall");
    assert!(bin.exists(), "{} not found: build it with `cargo build --bins` (cargo xtask test does)", bin.display());
    bin
}

/// Where the tests pin: a bpffs of their own, mounted once on this path in
/// the root mount namespace so that daemons started with `ip netns exec`
/// (which mounts a fresh /sys, and with it an empty /sys/fs/bpf) and later
/// ones share it.
pub const TEST_BPFFS: &str = "/run/namewall-tests/bpf";

/// The tests' bpffs, mounted if it is not yet.
pub fn test_bpffs() -> PathBuf {
    static MOUNTED: std::sync::Once = std::sync::Once::new();
    let path = PathBuf::from(TEST_BPFFS);
    MOUNTED.call_once(|| {
        fs::create_dir_all(&path).expect("create the tests' bpffs mount point");
        let mounted = fs::read_to_string("/proc/self/mounts")
            .is_ok_and(|m| m.lines().any(|l| l.split_whitespace().nth(1) == Some(TEST_BPFFS)));
        if !mounted {
            sh(&["mount", "-t", "bpf", "-o", "mode=0700", "bpf", TEST_BPFFS]);
        }
    });
    path
}

/// The pin directory of a test whose files are in `dir`.
pub fn pin_dir(dir: &Path) -> PathBuf {
    // The whole path: tests name their subdirectories alike ("run").
    let name: String = dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .to_owned();
    test_bpffs().join(name)
}

/// `namewall run` started in a namespace.
pub struct Daemon {
    pub proc: Proc,
}

impl Daemon {
    /// Starts `namewall run --iface IF <extra args>` in `ns` and waits until it filters.
    pub fn start(ns: &NetNs, dir: &Path, iface: &str, extra: &[&str]) -> Self {
        let bin = namewall_bin();
        let bin = bin.to_str().expect("utf-8 path");
        let mut args = vec![bin, "run", "--iface", iface];
        // Quiet unless the test asks for periodic reports.
        if !extra.contains(&"--stats-interval") {
            args.extend_from_slice(&["--stats-interval", "0"]);
        }
        // Its own control socket and state, never the system's.
        let socket = dir.join("namewall.sock");
        let state = dir.join("state");
        let (socket, state) = (socket.to_str().expect("utf-8 path"), state.to_str().expect("utf-8 path"));
        if !extra.contains(&"--socket") {
            args.extend_from_slice(&["--socket", socket]);
        }
        if !extra.contains(&"--state-dir") {
            args.extend_from_slice(&["--state-dir", state]);
        }
        // Pinned in the tests' own bpffs, under a name of this test's, and
        // removed on exit unless the test manages the pins itself.
        let pins = pin_dir(dir);
        let pins = pins.to_str().expect("utf-8 path");
        if !extra.contains(&"--pin-dir") && !extra.contains(&"--no-pin") {
            args.extend_from_slice(&["--pin-dir", pins, "--detach-on-exit"]);
        }
        args.extend_from_slice(extra);
        let mut proc = ns.spawn(&args, &dir.join("namewall.log"));
        proc.wait_for_log("filtering", Duration::from_secs(20));
        Self { proc }
    }

    /// Stops it with SIGINT and returns the counters it printed on exit.
    pub fn stop(self) -> std::collections::BTreeMap<String, u64> {
        self.stop_with_log().0
    }

    /// Stops it with SIGINT; returns its counters and its whole log.
    pub fn stop_with_log(self) -> (std::collections::BTreeMap<String, u64>, String) {
        self.stop_with(libc::SIGINT)
    }

    /// Stops it with `signal` (SIGINT or SIGTERM); returns its counters and its whole log.
    pub fn stop_with(mut self, signal: i32) -> (std::collections::BTreeMap<String, u64>, String) {
        self.proc.signal(signal);
        let status = self.proc.wait(Duration::from_secs(10)).expect("namewall exits on the signal");
        let log = self.proc.log();
        assert!(status.success(), "namewall exited with {status}:\n{log}");
        let counters = parse_counters(&log).unwrap_or_else(|| panic!("no counters in namewall's log:\n{log}"));
        (counters, log)
    }
}

/// Counters from the exit line: `detached counters=packets=N name=N ...`,
/// or the one that says the filter stays attached.
pub fn parse_counters(log: &str) -> Option<std::collections::BTreeMap<String, u64>> {
    let line =
        log.lines().find(|l| l.contains("counters=") && (l.contains("detached") || l.contains("stays attached")))?;
    let rest = &line[line.find("counters=")? + "counters=".len()..];
    Some(
        rest.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect(),
    )
}

/// What `dig` reported.
#[derive(Debug, Default)]
pub struct DigResult {
    /// `NOERROR`, `NXDOMAIN`, ...; empty when no answer came.
    pub status: String,
    /// Header flags, e.g. `qr rd ra`.
    pub flags: String,
    /// Answer records as `name ttl class type data`.
    pub answers: Vec<String>,
    /// Whether dig saw an OPT pseudo-section in the answer.
    pub edns: bool,
    pub raw: String,
}

/// Runs `dig` in `ns`: `@server name type`, plus extra options.
pub fn dig(ns: &NetNs, server: &str, name: &str, qtype: &str, extra: &[&str]) -> DigResult {
    let at = format!("@{server}");
    let mut args = vec!["dig", &at, name, qtype, "+time=2", "+tries=1", "+nocookie"];
    args.extend_from_slice(extra);
    let out = ns.output(&args);
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut r = DigResult { raw: raw.clone(), ..DigResult::default() };
    let mut in_answer = false;
    for line in raw.lines() {
        if let Some(i) = line.find("status: ") {
            line[i + 8..].split(',').next().unwrap_or_default().clone_into(&mut r.status);
        }
        if let Some(i) = line.find(";; flags: ") {
            line[i + 10..].split(';').next().unwrap_or_default().trim().clone_into(&mut r.flags);
        }
        if line.contains("OPT PSEUDOSECTION") {
            r.edns = true;
        }
        if line.starts_with(";; ANSWER SECTION") {
            in_answer = true;
            continue;
        }
        if in_answer {
            if line.trim().is_empty() {
                in_answer = false;
            } else {
                r.answers.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
    }
    r
}

/// Query lines dnsmasq logged (`query[A] name from addr`).
pub fn dnsmasq_queries(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let i = l.find("query[")?;
            let rest = &l[i..];
            let end = rest.find(" from ").unwrap_or(rest.len());
            Some(rest[..end].to_owned())
        })
        .collect()
}

/// Runs `f` on a thread that has entered `ns`'s network namespace: sockets
/// it opens live there. The calling thread stays where it was.
pub fn in_namespace<T: Send>(ns: &NetNs, f: impl FnOnce() -> T + Send) -> T {
    let path = PathBuf::from("/run/netns").join(ns.name());
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = fs::File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
            // SAFETY: setns on a namespace file we hold open; it only affects this thread.
            let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into {}: {}", ns.name(), io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread panicked")
    })
}
