//! Where each segment of a TLS ClientHello stands in its flow: a
//! ClientHello may take several segments, and the one that completes the
//! server name (or ends the ClientHello) decides the whole flow.

use std::collections::HashMap;

use maps::Counter;
use serde::Serialize;

/// Where a segment stands in its flow's ClientHello: a ClientHello may take
/// several segments, and the one that completes the server name (or ends
/// the ClientHello) decides the whole flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TlsSegment {
    /// The flow, client side first: `10.1.0.2:40000 > 10.2.0.2:443`.
    pub flow: String,
    /// 1-based: which of the flow's ClientHello segments this is.
    pub segment: u32,
    /// Whether this segment decided the flow; otherwise the ClientHello goes
    /// on in a later segment.
    pub decided: bool,
    /// Packet numbers of the flow's earlier ClientHello segments.
    pub earlier: Vec<u64>,
}

/// Flows whose ClientHello is still pending, by the program's flow key: the
/// packet numbers of their segments so far. Bounded like the program's own
/// table: a capture full of abandoned handshakes cannot grow it without end.
#[derive(Default)]
pub(super) struct PendingFlows {
    flows: HashMap<u64, Vec<u64>>,
}

impl PendingFlows {
    /// More pending flows than this and the oldest knowledge is dropped
    /// (those flows' later segments are then numbered from 1 again).
    const MAX: usize = 1 << 16;
    /// Segments remembered per flow; a ClientHello takes a handful.
    const MAX_SEGMENTS: usize = 64;

    /// Places the packet numbered `packet` with `outcome` in its flow.
    pub(super) fn place(&mut self, key: u64, packet: u64, outcome: Counter, flow: String) -> Option<TlsSegment> {
        let decided = match outcome {
            Counter::TlsPending => false,
            Counter::TlsReset
            | Counter::TlsDrop
            | Counter::TlsPassNoMatch
            | Counter::TlsPassAllowed
            | Counter::TlsPassNoSni
            | Counter::TlsMalformed
            | Counter::TlsNotClientHello => true,
            _ => return None,
        };
        let earlier = if decided { self.flows.remove(&key).unwrap_or_default() } else { Vec::new() };
        let segment = if decided {
            earlier.len() + 1
        } else {
            if self.flows.len() >= Self::MAX && !self.flows.contains_key(&key) {
                self.flows.clear();
            }
            let seen = self.flows.entry(key).or_default();
            if seen.len() < Self::MAX_SEGMENTS {
                seen.push(packet);
            }
            seen.len()
        };
        Some(TlsSegment { flow, segment: u32::try_from(segment).unwrap_or(u32::MAX), decided, earlier })
    }
}

/// `client:port > server:port` of a TCP frame, IPv6 addresses bracketed.
pub(super) fn flow_name(frame: &[u8]) -> String {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let Ok(p) = SlicedPacket::from_ethernet(frame) else { return "?".into() };
    let (src, dst) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => (ip.header().source_addr().to_string(), ip.header().destination_addr().to_string()),
        Some(NetSlice::Ipv6(ip)) => {
            (format!("[{}]", ip.header().source_addr()), format!("[{}]", ip.header().destination_addr()))
        }
        _ => return "?".into(),
    };
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => format!("{src}:{} > {dst}:{}", t.source_port(), t.destination_port()),
        _ => format!("{src} > {dst}"),
    }
}
