//! Runs `tests/evasion.py`, the scapy helper that crafts evasion packets
//! (fragmented queries, two-question queries, DNS over TCP in pieces, an
//! urgent byte inside a ClientHello, a SYN flood), in a namespace.

use std::{path::Path, time::Duration};

use serde_json::Value;

use crate::{
    netns::{self, NetNs, Topology},
    tlslab,
};

/// The helper script.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/evasion.py");

/// Debian's python, where `python3-scapy` is installed, whatever `PATH`
/// says (a pyenv shim may come first).
pub const PYTHON: &str = "/usr/bin/python3";

/// Runs `evasion.py ARGS` in `ns`, killed after a minute; the JSON object it
/// printed, or what went wrong.
pub fn run(ns: &NetNs, args: &[&str]) -> Result<Value, String> {
    let command: Vec<&str> = [PYTHON, SCRIPT].iter().chain(args).copied().collect();
    let r = tlslab::run_bounded(ns, &command, &[], Duration::from_mins(1));
    if r.code() != Some(0) {
        return Err(format!("evasion.py {args:?}: {:?}: {}", r.status, r.stderr.trim()));
    }
    let line = r.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| format!("evasion.py {args:?} printed {line:?}: {e}"))
}

/// The MAC address of the router's client-facing interface: the next hop
/// of the frames the helper writes itself.
pub fn gw_mac(t: &Topology) -> String {
    t.router.run(&["cat", &format!("/sys/class/net/{}/address", netns::ROUTER_CLIENT_IF)]).trim().to_owned()
}

/// Counters of the daemon whose control socket is `socket`
/// (`namewall stats --json`).
pub fn live_counters(socket: &Path) -> Result<std::collections::BTreeMap<String, u64>, String> {
    let out = std::process::Command::new(netns::namewall_bin())
        .args(["stats", "--json", "--socket"])
        .arg(socket)
        .output()
        .map_err(|e| format!("namewall stats: {e}"))?;
    if !out.status.success() {
        return Err(format!("namewall stats: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("namewall stats --json: {e}"))?;
    let counters = v["reply"]["counters"].as_object().ok_or_else(|| format!("no counters in {v}"))?;
    Ok(counters.iter().filter_map(|(k, n)| Some((k.clone(), n.as_u64()?))).collect())
}
