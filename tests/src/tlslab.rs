//! Real TLS servers and clients in the namespace lab: a self-signed
//! certificate, nginx serving a marker page on both families, and curl,
//! `openssl s_client` and headless Chromium as clients, each bounded by a
//! timeout and killed with its children when it runs over. Plus tcpdump
//! captures and the per-connection first flights read from them.
//!
//! Everything runs inside the namespaces a test made (`ip netns exec`);
//! Chromium resolves every name to the address it is given, so it cannot
//! reach anything outside the lab either.

use std::{
    fs,
    io::{self, Read as _, Seek as _},
    net::{TcpListener, TcpStream},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

use crate::{
    netns::{NetNs, Proc, sh},
    tls,
};

/// The `id` of the paragraph every page of [`start_tls_server`] carries:
/// a client that shows it loaded the page through the lab.
pub const PAGE_MARKER: &str = "namewall-tlslab";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    dir.join(format!("{stem}-{}.{ext}", COUNTER.fetch_add(1, Ordering::Relaxed)))
}

/// A self-signed P-256 certificate for `names` (the first is also the
/// subject CN), valid for two days; returns (certificate, key) paths.
pub fn cert(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
    assert!(!names.is_empty(), "a certificate needs a name");
    let cert = unique(dir, "cert", "pem");
    let key = cert.with_extension("key");
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    sh(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={}", names[0]),
        "-addext",
        &format!("subjectAltName={}", san.join(",")),
        "-keyout",
        path_str(&key),
        "-out",
        path_str(&cert),
    ]);
    (cert, key)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// nginx serving HTTPS in a namespace; stopped when dropped.
pub struct TlsServer {
    /// nginx itself; its log is nginx's error log (handshake failures at
    /// `info`).
    pub proc: Proc,
    pub port: u16,
    pub cert: PathBuf,
    pub key: PathBuf,
    access_log: PathBuf,
}

/// Starts nginx in `ns` serving HTTPS (HTTP/1.1 and h2) on `port` on every
/// IPv4 and IPv6 address there, with a certificate for `names`; returns
/// once both listening sockets exist. Every name gets the same page: an
/// HTML paragraph with id [`PAGE_MARKER`] naming the SNI it was asked with.
///
/// nginx rather than `openssl s_server -www`: `s_server` serves one
/// connection at a time (Chromium's speculative second connection stalls
/// it) and answered Chromium 156's request with a `decode_error` alert.
/// nginx runs as one process (`master_process off`), so the guard's SIGTERM
/// stops all of it.
pub fn start_tls_server(ns: &NetNs, dir: &Path, port: u16, names: &[&str]) -> TlsServer {
    let (cert, key) = cert(dir, names);
    let prefix = unique(dir, "nginx", "d");
    fs::create_dir_all(&prefix).unwrap_or_else(|e| panic!("creating {}: {e}", prefix.display()));
    let p = path_str(&prefix);
    // The access log has a file of its own: opening /dev/stdout would give
    // nginx a second file offset into the error log's file, and the two
    // overwrote each other's lines.
    let access_log = prefix.join("access.log");
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log stderr info;
events {{ worker_connections 512; }}
http {{
    log_format lab 'sni=$ssl_server_name host=$host "$request" $status $server_protocol $remote_addr';
    access_log {access} lab;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    server {{
        listen {port} ssl http2;
        listen [::]:{port} ssl http2 ipv6only=on;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        default_type text/html;
        location / {{
            return 200 '<html><body><p id="{PAGE_MARKER}">served $ssl_server_name</p></body></html>\n';
        }}
    }}
}}
"#,
        access = path_str(&access_log),
        cert = path_str(&cert),
        key = path_str(&key),
    );
    let conf_path = prefix.join("nginx.conf");
    fs::write(&conf_path, conf).unwrap_or_else(|e| panic!("writing {}: {e}", conf_path.display()));
    let mut proc = ns.spawn(&["nginx", "-p", p, "-e", "stderr", "-c", path_str(&conf_path)], &prefix.join("nginx.log"));
    wait_listening(ns, &mut proc, port);
    TlsServer { proc, port, cert, key, access_log }
}

/// Polls `ss` in `ns` until TCP `port` listens on both families; panics
/// with the server's log if it exits or takes over 10 s.
fn wait_listening(ns: &NetNs, server: &mut Proc, port: u16) {
    let start = Instant::now();
    loop {
        let out = ns.run(&["ss", "-Hltn", &format!("sport = :{port}")]);
        let v4 = out.lines().any(|l| l.contains(&format!("0.0.0.0:{port}")));
        let v6 = out.lines().any(|l| l.contains(&format!("[::]:{port}")));
        if v4 && v6 {
            return;
        }
        if let Ok(status) = server.wait(Duration::ZERO) {
            panic!("the TLS server exited ({status}) before listening on {port}:\n{}", server.log());
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the TLS server is not listening on {port} after 10 s:\n{out}\n{}",
            server.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

impl TlsServer {
    /// One line per request answered: `sni=NAME host=HOST "REQUEST" STATUS
    /// PROTOCOL CLIENT`, `sni=-` for a request without SNI.
    pub fn access_log(&self) -> String {
        fs::read_to_string(&self.access_log).unwrap_or_default()
    }

    /// The SNI of each request answered so far, in order (`-` for none):
    /// which names reached the server.
    pub fn served_names(&self) -> Vec<String> {
        self.access_log()
            .lines()
            .filter_map(|l| l.strip_prefix("sni=")?.split_whitespace().next().map(str::to_owned))
            .collect()
    }

    /// Polls until `name` was served at least `count` times (nginx logs a
    /// request after answering it, so a client can be done before the line
    /// is written); returns every SNI served. Panics with both logs after
    /// `timeout`.
    pub fn wait_served(&self, name: &str, count: usize, timeout: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let names = self.served_names();
            if names.iter().filter(|n| *n == name).count() >= count {
                return names;
            }
            assert!(
                start.elapsed() < timeout,
                "{name} served fewer than {count} times within {timeout:?}: {names:?}\n{}",
                self.proc.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A command run in a namespace with a deadline.
#[derive(Debug)]
pub struct Bounded {
    /// `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Bounded {
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// The exit code; `None` on a timeout or a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

/// Runs `args` in `ns` with stdin closed, in a process group of its own;
/// at `timeout` the whole group is killed (Chromium's helpers too). Output
/// goes to anonymous files, so a chatty program cannot block on a pipe.
pub fn run_bounded(ns: &NetNs, args: &[&str], envs: &[(&str, &Path)], timeout: Duration) -> Bounded {
    let mut out = tempfile::tempfile().expect("temp file");
    let mut err = tempfile::tempfile().expect("temp file");
    let start = Instant::now();
    let mut child = ns
        .command(args[0])
        .args(&args[1..])
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"))
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {args:?} in {ns:?}: {e}"));
    // `ip netns exec` execs the program, so the child leads the group.
    let group = child.id().cast_signed();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if start.elapsed() > timeout {
            // SAFETY: kill(2) on the process group we created.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    // Helpers that outlive their parent (Chromium's crashpad handler) go too.
    // SAFETY: as above; ESRCH when the group is already gone.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let read = |f: &mut fs::File| {
        let mut s = Vec::new();
        f.rewind().and_then(|()| f.read_to_end(&mut s)).expect("read output");
        String::from_utf8_lossy(&s).into_owned()
    };
    Bounded { status, stdout: read(&mut out), stderr: read(&mut err), elapsed }
}

/// `host` as it goes in a URL or `host:port`: IPv6 literals bracketed.
pub fn bracket(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_owned() }
}

/// What curl reported.
#[derive(Debug)]
pub struct CurlResult {
    /// curl's exit code: 0 ok, 28 timeout, 35 TLS connect error (a reset
    /// during the handshake), 56 receive failure; -1 if it was killed.
    pub exit: i32,
    /// 0 when no response came.
    pub http_status: u16,
    pub time: Duration,
    pub body: String,
    pub stderr: String,
}

impl CurlResult {
    /// A 200 with the lab's page.
    pub fn loaded(&self) -> bool {
        self.exit == 0 && self.http_status == 200 && self.body.contains(PAGE_MARKER)
    }

    /// The connection was reset (by a RST) rather than timing out.
    pub fn reset(&self) -> bool {
        self.stderr.contains("reset by peer") || self.stderr.contains("errno 104")
    }
}

/// `curl -k --max-time 3 --resolve NAME:PORT:ADDR URL` in `ns`: the name
/// and port come from `url` (`https://NAME[:PORT]/...`), so curl sends the
/// URL's name as SNI and Host and connects to `resolve_to`.
pub fn curl(ns: &NetNs, url: &str, resolve_to: &str) -> CurlResult {
    curl_with_timeout(ns, url, resolve_to, Duration::from_secs(3))
}

/// [`curl`] with `--max-time` set to `max_time` (whole milliseconds); it
/// is killed if it runs 3 s past that.
pub fn curl_with_timeout(ns: &NetNs, url: &str, resolve_to: &str, max_time: Duration) -> CurlResult {
    const MARK: &str = "\ncurl-write-out:";
    let (name, port) = url_host_port(url);
    let resolve = format!("{name}:{port}:{}", bracket(resolve_to));
    let write_out = format!("{MARK}%{{http_code}} %{{time_total}}");
    let max = format!("{:.3}", max_time.as_secs_f64());
    let r = run_bounded(
        ns,
        &["curl", "-sS", "-k", "--max-time", &max, "--resolve", &resolve, "-w", &write_out, url],
        &[],
        max_time + Duration::from_secs(3),
    );
    let (body, tail) = r.stdout.rsplit_once(MARK).unwrap_or((&r.stdout, ""));
    let mut tail = tail.split_whitespace();
    let http_status = tail.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let time = tail.next().and_then(|s| s.parse().ok()).map_or(r.elapsed, Duration::from_secs_f64);
    CurlResult { exit: r.code().unwrap_or(-1), http_status, time, body: body.to_owned(), stderr: r.stderr }
}

/// The host and port of an `https://` or `http://` URL.
fn url_host_port(url: &str) -> (String, u16) {
    let (scheme, rest) = url.split_once("://").unwrap_or_else(|| panic!("not a URL: {url}"));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let default = if scheme == "http" { 80 } else { 443 };
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.contains(']') => {
            (host.to_owned(), port.parse().unwrap_or_else(|_| panic!("port in {url}")))
        }
        _ => (authority.to_owned(), default),
    }
}

/// What `openssl s_client` reported.
#[derive(Debug)]
pub struct SClientResult {
    /// The handshake completed (a cipher was agreed).
    pub handshake: bool,
    /// The connection was reset (`Connection reset by peer`, errno 104).
    pub reset: bool,
    pub timed_out: bool,
    /// From start to exit (or to the kill).
    pub elapsed: Duration,
    /// stdout and stderr.
    pub output: String,
}

/// `openssl s_client -connect ADDR:PORT -servername SNI` in `ns` (with
/// `-noservername` for `None`), stdin closed so it leaves after the
/// handshake, killed after 5 s.
pub fn s_client(ns: &NetNs, addr: &str, port: u16, sni: Option<&str>) -> SClientResult {
    s_client_with_timeout(ns, addr, port, sni, Duration::from_secs(5))
}

/// [`s_client`], killed after `timeout`.
pub fn s_client_with_timeout(ns: &NetNs, addr: &str, port: u16, sni: Option<&str>, timeout: Duration) -> SClientResult {
    let connect = format!("{}:{port}", bracket(addr));
    let mut args = vec!["openssl", "s_client", "-connect", &connect];
    match sni {
        Some(name) => args.extend(["-servername", name]),
        None => args.push("-noservername"),
    }
    let r = run_bounded(ns, &args, &[], timeout);
    let output = format!("{}{}", r.stdout, r.stderr);
    SClientResult {
        handshake: output.contains("SSL handshake has read") && !output.contains("Cipher is (NONE)"),
        reset: output.contains("reset by peer") || output.contains("errno=104"),
        timed_out: r.timed_out(),
        elapsed: r.elapsed,
        output,
    }
}

/// What headless Chromium did.
#[derive(Debug)]
pub struct ChromiumResult {
    /// The DOM held [`PAGE_MARKER`]: the page came through the lab.
    pub loaded: bool,
    /// The URL it was asked to load.
    pub url: String,
    /// Every URL request it made (the page, its favicon, background
    /// requests), read from its `NetLog`.
    pub requests: Vec<UrlRequest>,
    /// The DOM it dumped (empty when the page failed to load).
    pub dom: String,
    /// `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
    pub stderr: String,
}

impl ChromiumResult {
    /// How the request for the page ended: `Some(0)` loaded, a negative
    /// [`net_error`] code, `None` unfinished or never made.
    pub fn page_error(&self) -> Option<i32> {
        let slash = format!("{}/", self.url);
        self.requests.iter().find(|r| r.url == self.url || r.url == slash)?.net_error
    }

    /// The page's request ended with `ERR_CONNECTION_RESET`: a RST, not a
    /// timeout or a refusal.
    pub fn reset(&self) -> bool {
        self.page_error() == Some(net_error::CONNECTION_RESET)
    }
}

/// One URL request in Chromium's `NetLog`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlRequest {
    pub url: String,
    /// `Some(0)` when it succeeded, a negative [`net_error`] code when it
    /// failed, `None` when it never finished.
    pub net_error: Option<i32>,
}

/// Chromium's net error codes (`net/base/net_error_list.h`) that these
/// tests tell apart.
pub mod net_error {
    pub const TIMED_OUT: i32 = -7;
    pub const CONNECTION_CLOSED: i32 = -100;
    pub const CONNECTION_RESET: i32 = -101;
    pub const CONNECTION_REFUSED: i32 = -102;
    pub const CONNECTION_TIMED_OUT: i32 = -118;
}

/// The URL requests of a `NetLog` file: `REQUEST_ALIVE` begins carry the
/// URL, its end the `net_error` (absent on success). A log cut short by a
/// kill lacks its closing `]}`; that is put back before parsing.
fn url_requests(log: &str) -> Vec<UrlRequest> {
    let json: serde_json::Value = serde_json::from_str(log)
        .or_else(|_| serde_json::from_str(&format!("{}]}}", log.trim_end().trim_end_matches(','))))
        .unwrap_or_default();
    let Some(alive) = json.pointer("/constants/logEventTypes/REQUEST_ALIVE").and_then(serde_json::Value::as_u64) else {
        return Vec::new();
    };
    let mut requests: Vec<(u64, UrlRequest)> = Vec::new();
    for e in json.get("events").and_then(serde_json::Value::as_array).into_iter().flatten() {
        if e.get("type").and_then(serde_json::Value::as_u64) != Some(alive) {
            continue;
        }
        let Some(source) = e.pointer("/source/id").and_then(serde_json::Value::as_u64) else { continue };
        let params = e.get("params");
        match e.get("phase").and_then(serde_json::Value::as_u64) {
            // Begin.
            Some(1) => {
                if let Some(url) = params.and_then(|p| p.get("url")).and_then(serde_json::Value::as_str) {
                    requests.push((source, UrlRequest { url: url.to_owned(), net_error: None }));
                }
            }
            // End.
            Some(2) => {
                let code = params.and_then(|p| p.get("net_error")).and_then(serde_json::Value::as_i64).unwrap_or(0);
                if let Some((_, r)) = requests.iter_mut().rev().find(|(id, _)| *id == source) {
                    r.net_error = Some(i32::try_from(code).unwrap_or(i32::MIN));
                }
            }
            _ => {}
        }
    }
    requests.into_iter().map(|(_, r)| r).collect()
}

/// How long Chromium may take to load one page before it is killed.
pub const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(15);

/// Loads `url` with headless Debian Chromium in `ns`, every host name
/// mapped to `map_to`, and dumps the DOM. A fresh profile under `dir`
/// (also its HOME, so no NSS database or cache is shared between runs).
///
/// `--disable-quic`: the servers here speak TCP only and these tests are
/// about TLS over TCP; QUIC has its own tests. Chromium still makes
/// background requests (the component updater asks `update.googleapis.com`
/// despite `--disable-component-update`); the resolver rule sends them to
/// `map_to` too, so they stay in the lab and show up in the server's log.
pub fn chromium(ns: &NetNs, url: &str, map_to: &str, dir: &Path) -> ChromiumResult {
    chromium_with(ns, url, map_to, dir, &["--disable-quic"], CHROMIUM_TIMEOUT)
}

/// Loads `url` like [`chromium`], but speaking only QUIC to the URL's
/// origin (`--origin-to-force-quic-on`: no TCP fallback), killed after
/// `timeout`. For the QUIC policy: what the client sends is real, whether
/// or not a QUIC server answers.
pub fn chromium_quic(ns: &NetNs, url: &str, map_to: &str, dir: &Path, timeout: Duration) -> ChromiumResult {
    let (name, port) = url_host_port(url);
    let force = format!("--origin-to-force-quic-on={name}:{port}");
    chromium_with(ns, url, map_to, dir, &["--enable-quic", &force], timeout)
}

/// [`chromium`] with `extra` flags in place of `--disable-quic`, killed
/// after `timeout`.
fn chromium_with(ns: &NetNs, url: &str, map_to: &str, dir: &Path, extra: &[&str], timeout: Duration) -> ChromiumResult {
    let profile = tempfile::Builder::new().prefix("chromium-").tempdir_in(dir).expect("profile dir");
    let user_data = format!("--user-data-dir={}", path_str(profile.path()));
    let rules = format!("--host-resolver-rules=MAP * {}", bracket(map_to));
    let net_log_path = profile.path().join("netlog.json");
    let net_log = format!("--log-net-log={}", path_str(&net_log_path));
    let args = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-breakpad",
        "--ignore-certificate-errors",
        &user_data,
        &rules,
        &net_log,
    ];
    let args: Vec<&str> = args.iter().chain(extra).copied().chain(["--dump-dom", url]).collect();
    let home = profile.path();
    let envs = [("HOME", home), ("XDG_CONFIG_HOME", home), ("XDG_CACHE_HOME", home)];
    let r = run_bounded(ns, &args, &envs, timeout);
    let requests = fs::read_to_string(&net_log_path).map(|s| url_requests(&s)).unwrap_or_default();
    ChromiumResult {
        loaded: r.stdout.contains(PAGE_MARKER),
        url: url.to_owned(),
        requests,
        dom: r.stdout,
        status: r.status,
        elapsed: r.elapsed,
        stderr: r.stderr,
    }
}

/// tcpdump writing every frame on one interface to a pcap file.
pub struct Capture {
    proc: Proc,
    path: PathBuf,
}

impl Capture {
    /// Starts tcpdump on `dev` in `ns` with a BPF `filter` and waits until it
    /// listens.
    pub fn start(ns: &NetNs, dev: &str, filter: &str, dir: &Path) -> Self {
        let path = unique(dir, dev, "pcap");
        let mut proc = ns.spawn(
            &["tcpdump", "--immediate-mode", "-U", "-Z", "root", "-n", "-i", dev, "-w", path_str(&path), filter],
            &path.with_extension("log"),
        );
        proc.wait_for_log("listening on", Duration::from_secs(10));
        Self { proc, path }
    }

    /// Stops tcpdump and returns the frames it captured, in order.
    pub fn stop(mut self) -> Vec<Vec<u8>> {
        self.proc.signal(libc::SIGINT);
        let status = self.proc.wait(Duration::from_secs(10)).expect("tcpdump exits on SIGINT");
        assert!(status.success(), "tcpdump: {status}\n{}", self.proc.log());
        read_pcap(&self.path)
    }
}

/// The frames of a pcap file.
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let f = fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut r = pcap_file::pcap::PcapReader::new(f).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut frames = Vec::new();
    while let Some(p) = r.next_packet() {
        frames.push(p.unwrap_or_else(|e| panic!("reading {}: {e}", path.display())).data.into_owned());
    }
    frames
}

/// The client's first flight on one TCP connection: its data segments
/// before the server sent any data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirstFlight {
    pub client_port: u16,
    /// Payload length of each segment, in capture order.
    pub segments: Vec<usize>,
    /// The SNI of the `ClientHello` those segments carry, when they hold
    /// whole TLS records.
    pub sni: Option<String>,
}

/// The first flight of every connection to `server_port` in `frames`
/// (Ethernet, as captured on a veth), in order of the connections' SYNs.
pub fn first_flights(frames: &[Vec<u8>], server_port: u16) -> Vec<FirstFlight> {
    struct Conn {
        port: u16,
        segments: Vec<usize>,
        bytes: Vec<u8>,
        done: bool,
    }
    let mut conns: Vec<Conn> = Vec::new();
    for f in frames {
        let Ok(p) = SlicedPacket::from_ethernet(f) else { continue };
        let (Some(NetSlice::Ipv4(_) | NetSlice::Ipv6(_)), Some(TransportSlice::Tcp(tcp))) = (&p.net, &p.transport)
        else {
            continue;
        };
        let (sport, dport, payload) = (tcp.source_port(), tcp.destination_port(), tcp.payload());
        if dport == server_port && tcp.syn() {
            conns.push(Conn { port: sport, segments: Vec::new(), bytes: Vec::new(), done: false });
        } else if dport == server_port
            && !payload.is_empty()
            && let Some(c) = conns.iter_mut().rev().find(|c| c.port == sport && !c.done)
        {
            c.segments.push(payload.len());
            c.bytes.extend_from_slice(payload);
        } else if sport == server_port
            && !payload.is_empty()
            && let Some(c) = conns.iter_mut().rev().find(|c| c.port == dport)
        {
            c.done = true;
        }
    }
    conns
        .into_iter()
        .filter(|c| !c.segments.is_empty())
        .map(|c| {
            let sni = tls::whole_records(&c.bytes).then(|| tls::server_name(&c.bytes)).flatten();
            FirstFlight { client_port: c.port, segments: c.segments, sni }
        })
        .collect()
}

/// A TCP server that answers every connection's first data with a RST
/// (it reads, then closes with a zero linger time): what a filter that
/// resets blocked `ClientHello`s looks like to a client. It proves the
/// clients' `reset` readings without namewall.
pub struct ResetServer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    /// Bytes of first data read from each connection so far.
    pub first_reads: Arc<Mutex<Vec<usize>>>,
}

impl ResetServer {
    /// Listens on `port` on every address (both families) of `ns`.
    pub fn start(ns: &NetNs, port: u16) -> Self {
        // A socket stays in the namespace it was made in.
        let listener = crate::netns::in_namespace(ns, || TcpListener::bind(("::", port)))
            .unwrap_or_else(|e| panic!("binding [::]:{port} in {ns:?}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let first_reads = Arc::new(Mutex::new(Vec::new()));
        let thread = thread::spawn({
            let (stop, first_reads) = (Arc::clone(&stop), Arc::clone(&first_reads));
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let n = reset_after_first_read(conn);
                            first_reads.lock().expect("lock").push(n);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
                        Err(e) => panic!("accept: {e}"),
                    }
                }
            }
        });
        Self { stop, thread: Some(thread), first_reads }
    }
}

/// Reads the client's first data (up to 2 s), then closes with `SO_LINGER`
/// {on, 0}, which makes the kernel send a RST (RFC 9293 §3.10.7.1 abort).
fn reset_after_first_read(mut conn: TcpStream) -> usize {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf).unwrap_or(0);
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket we own, with a correctly sized value.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    n
}

impl Drop for ResetServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
