//! Indices of the per-CPU `COUNTERS` array.
//!
//! Every packet the program sees increments exactly one *outcome* counter:
//! the reason it returned early or the verdict it got. The sum of the outcome
//! counters is therefore the number of packets seen, which tests check. The
//! *extra* counters record events on top of an outcome (a drop by the
//! "cannot judge" policy of a packet whose outcome is "compressed name", a
//! rewrite that failed, ...).
//!
//! The table below is the one place each counter is declared: its index,
//! its name in output, JSON and metrics, its kind, the protocol it belongs
//! to and what happened to the packet.

use crate::{Fate, Protocol};

/// A table row's fate: `-` for extra counters, which are events on top of
/// an outcome rather than what happened to a packet.
macro_rules! fate {
    (-) => {
        None
    };
    ($fate:ident) => {
        Some(Fate::$fate)
    };
}

macro_rules! counters {
    ($( $(#[$doc:meta])+ $variant:ident => $label:literal, $kind:ident, $proto:ident, $fate:tt; )+) => {
        /// A counter slot. `#[repr(u32)]`: the discriminant is the array index.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Counter {
            $( $(#[$doc])+ $variant, )+
        }

        impl Counter {
            /// All counters in index order.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant),+];

            /// Stable `snake_case` name, used in stats output and metrics.
            pub const fn name(self) -> &'static str {
                match self { $(Counter::$variant => $label,)+ }
            }

            /// Whether this counter is an outcome (exactly one per packet) or an extra event.
            pub const fn kind(self) -> CounterKind {
                match self { $(Counter::$variant => CounterKind::$kind,)+ }
            }

            /// The protocol the counted packets or events belong to.
            pub const fn protocol(self) -> Protocol {
                match self { $(Counter::$variant => Protocol::$proto,)+ }
            }

            /// What happened to a packet with this outcome when the "cannot
            /// judge" policy passes; `None` for extra counters.
            const fn pass_unjudged_fate(self) -> Option<Fate> {
                match self { $(Counter::$variant => fate!($fate),)+ }
            }

            /// The counter at `index`, if there is one.
            pub const fn from_index(index: u32) -> Option<Counter> {
                if (index as usize) < Self::ALL.len() { Some(Self::ALL[index as usize]) } else { None }
            }
        }
    };
}

impl Counter {
    /// What happened to a packet with this outcome: one that could not be
    /// judged is dropped when the "cannot judge" policy drops
    /// (`unjudged_drop`, `--unjudged drop`). `None` for extra counters.
    pub const fn fate(self, unjudged_drop: bool) -> Option<Fate> {
        match self.kind() {
            CounterKind::Unjudged if unjudged_drop => Some(Fate::Drop),
            _ => self.pass_unjudged_fate(),
        }
    }
}

/// What a counter counts; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterKind {
    /// The packet was not judged: not DNS, or not a query; it passed.
    Skipped,
    /// The packet may carry a name but could not be parsed to a verdict
    /// (malformed, split, fragmented, too deep, untrackable): the "cannot
    /// judge" policy (`Settings::unjudged`) passes or drops it.
    Unjudged,
    /// A judged packet's verdict.
    Verdict,
    /// An event on top of a packet's outcome.
    Extra,
}

counters! {
    /// `EtherType` is neither IPv4 nor IPv6 (after VLAN tags), or a PPPoE
    /// session frame carries neither (LCP, IPCP, ...), or a PPPoE discovery frame.
    NotIp => "not_ip", Skipped, Other, Pass;
    /// More VLAN tags than the parser follows (`MAX_VLAN_TAGS`), or a PPPoE
    /// header inside PPPoE: what is inside is not seen.
    VlanTooDeep => "vlan_too_deep", Unjudged, Other, Pass;
    /// The frame ends inside an Ethernet, VLAN, IP, UDP or TCP header.
    TruncatedHeader => "truncated_header", Skipped, Other, Pass;
    /// Inconsistent header: IP version, IPv4 header length or a total length
    /// below it, an IP or UDP length beyond the end of the frame or of the IP
    /// packet (a frame cut short: never judged, whatever the cut spared), a
    /// TCP data offset below 20 bytes or past the packet's end.
    BadHeader => "bad_header", Skipped, Other, Pass;
    /// A later fragment (IPv4 offset, IPv6 Fragment header with an offset)
    /// of a datagram whose first fragment was not dropped: passed.
    IpFragment => "ip_fragment", Skipped, Other, Pass;
    /// A later fragment of a datagram whose first fragment was dropped
    /// (blocked, or not judged under `--unjudged drop`; see
    /// `maps::layout::fragment`): dropped.
    FragmentDropped => "fragment_dropped", Verdict, Other, Drop;
    /// The first fragment of a DNS query that does not hold its question
    /// whole: the question goes on in fragments not reassembled here.
    DnsFragment => "dns_fragment", Unjudged, Dns, Pass;
    /// The first fragment of a TCP segment to port 53, or of a flow that is
    /// tracked or may start a ClientHello: not reassembled here. Linux sends
    /// TCP with DF set, so only a client trying to slip past sends these.
    TcpFragment => "tcp_fragment", Unjudged, Tls, Pass;
    /// A first fragment too short to hold its UDP or TCP header (RFC 1858's
    /// tiny fragment): what it carries is not known.
    TinyFragment => "tiny_fragment", Unjudged, Other, Pass;
    /// More IPv6 extension headers than the parser follows, or extension
    /// headers reaching past 2 KiB: what follows them is not seen.
    Ipv6ExtTooDeep => "ipv6_ext_too_deep", Unjudged, Other, Pass;
    /// Neither UDP nor TCP.
    NotUdpTcp => "not_udp_tcp", Skipped, Other, Pass;
    /// UDP, not to port 53 and not a QUIC Initial.
    NotDnsPort => "not_dns_port", Skipped, Other, Pass;
    /// The SYN of a new TCP connection: tracked until its first data, passed.
    TcpSyn => "tcp_syn", Skipped, Tls, Pass;
    /// A TCP segment of a flow not tracked that does not start a TLS
    /// ClientHello (established traffic): passed.
    TcpOther => "tcp_other", Skipped, Tls, Pass;
    /// The first data of a tracked connection is not a TLS ClientHello: the
    /// flow is forgotten, passed.
    TlsNotClientHello => "tls_not_client_hello", Skipped, Tls, Pass;
    /// Bytes of an unfinished ClientHello seen before (a retransmission): passed.
    TlsRetransmission => "tls_retransmission", Skipped, Tls, Pass;
    /// TCP segment without payload (handshake, ACK, FIN) to port 53, or of a flow the TLS path follows.
    TcpNoPayload => "tcp_no_payload", Skipped, Tls, Pass;
    /// A DNS message over TCP that is no judgeable query: a length below a
    /// DNS header, a response, a NOTIFY or UPDATE; or the first segment seen
    /// of a connection (picked up mid-stream) that does not start with a
    /// query. Not judged: `--unjudged drop` drops it.
    TcpNotMessageStart => "tcp_not_message_start", Unjudged, Dns, Pass;
    /// DNS over TCP: a segment that ends before the question of the message
    /// it carries does (the length prefix alone, a name split across
    /// segments): its bytes kept (`maps::layout::dns_stream`), passed; the
    /// question is judged with the segment that completes it.
    DnsTcpPartial => "dns_tcp_partial", Skipped, Dns, Pass;
    /// DNS over TCP: a segment holding only the rest of a message whose
    /// question was judged allowed: passed.
    DnsTcpRest => "dns_tcp_rest", Skipped, Dns, Pass;
    /// DNS over TCP: a segment holding only bytes of the stream taken in
    /// before (a retransmission): passed.
    DnsTcpRetransmission => "dns_tcp_retransmission", Skipped, Dns, Pass;
    /// DNS over TCP: a segment past a gap in the stream: not judged (the
    /// client sends it again in order). The server would read it after
    /// bytes the filter has not seen.
    DnsTcpGap => "dns_tcp_gap", Unjudged, Dns, Pass;
    /// DNS over TCP: a segment reaching before the first byte the filter
    /// took in of a connection it picked up: those bytes were never judged.
    DnsTcpBeforeStart => "dns_tcp_before_start", Unjudged, Dns, Pass;
    /// DNS over TCP: a segment far (`maps::layout::flow::WINDOW`) from
    /// where the connection's stream stands: not its stream (an off-path
    /// sender); it changes nothing and is not judged.
    DnsTcpNotInWindow => "dns_tcp_not_in_window", Unjudged, Dns, Pass;
    /// DNS over TCP: a SYN carrying data (TCP Fast Open): not judged.
    /// Whether the server takes a SYN's data depends on its cookie, which
    /// the filter cannot see; the stream is anchored at the SYN, so the
    /// client, which sends the SYN again without data (RFC 7413 §4.2.2),
    /// has its queries judged after the handshake.
    DnsTcpSynData => "dns_tcp_syn_data", Unjudged, Dns, Pass;
    /// DNS over TCP: a segment within a stream's window after a SYN other
    /// than the connection's came on its addresses and ports (a new
    /// connection reusing them, framed from its own SYN, whose bytes would
    /// be taken for the old stream's): not judged.
    DnsTcpReused => "dns_tcp_reused", Unjudged, Dns, Pass;
    /// DNS over TCP: a connection the full `DNS_STREAMS` map cannot hold:
    /// not judged (without its place in the stream, the next segment could
    /// not be).
    DnsStreamTableFull => "dns_stream_table_full", Unjudged, Dns, Pass;
    /// A TCP segment holding more DNS messages than the stage judges one
    /// after another (a tail call each, up to the kernel's limit of 33):
    /// the rest cannot be (`--unjudged drop` drops the segment).
    TcpPipelined => "tcp_pipelined", Unjudged, Dns, Pass;
    /// DNS message with QR=1 (a response).
    DnsResponse => "dns_response", Skipped, Dns, Pass;
    /// DNS message with an opcode other than QUERY (NOTIFY, UPDATE, ...).
    DnsNotQuery => "dns_not_query", Skipped, Dns, Pass;
    /// DNS query without a question (QDCOUNT=0, e.g. a cookie-only query).
    DnsNoQuestion => "dns_no_question", Skipped, Dns, Pass;
    /// UDP payload shorter than a DNS header.
    DnsShortHeader => "dns_short_header", Unjudged, Dns, Pass;
    /// QDCOUNT above 1: only the first question would be judged. Servers
    /// answer FORMERR or the first question; not judged.
    DnsMultiQuestion => "dns_multi_question", Unjudged, Dns, Pass;
    /// The question runs past the end of the message.
    DnsTruncated => "dns_truncated", Unjudged, Dns, Pass;
    /// A compression pointer in the question's QNAME.
    DnsCompressed => "dns_compressed", Unjudged, Dns, Pass;
    /// A label type other than a plain length (0b01/0b10 prefixes, RFC 6891 §5).
    DnsBadLabel => "dns_bad_label", Unjudged, Dns, Pass;
    /// QNAME longer than 255 bytes (RFC 1035 §2.3.4), hence also more than 127 labels.
    DnsNameTooLong => "dns_name_too_long", Unjudged, Dns, Pass;
    /// A TLS ClientHello that does not parse, or whose server name is not a
    /// host name we can judge, or one longer than the parser walks: not judged.
    TlsMalformed => "tls_malformed", Unjudged, Tls, Pass;
    /// No rule set installed yet: everything passes.
    NoRuleset => "no_ruleset", Skipped, Other, Pass;
    /// Judged; no rule matched.
    PassNoMatch => "pass_no_match", Verdict, Dns, Pass;
    /// Judged; an allow rule decided.
    PassAllowed => "pass_allowed", Verdict, Dns, Pass;
    /// Blocked: answered NXDOMAIN.
    Nxdomain => "nxdomain", Verdict, Dns, Answer;
    /// Blocked: answered REFUSED.
    Refused => "refused", Verdict, Dns, Answer;
    /// Blocked: answered with 0.0.0.0 / :: (or NODATA for other types).
    Sinkhole => "sinkhole", Verdict, Dns, Answer;
    /// Blocked: dropped.
    Drop => "drop", Verdict, Dns, Drop;
    /// A blocked DNS query in fragments: its first fragment dropped (an
    /// answer would need the whole datagram), and its later fragments.
    DropFragmented => "drop_fragmented", Verdict, Dns, Drop;
    /// Blocked DNS over TCP by a drop rule: dropped.
    DropTcp => "drop_tcp", Verdict, Dns, Drop;
    /// Blocked DNS over TCP: the query dropped and the client sent a TCP
    /// reset, so its lookup fails at once rather than at its timeout.
    ResetTcp => "reset_tcp", Verdict, Dns, Reset;
    /// A segment a flow's state would follow, with an IP TTL (hop limit) of
    /// 1 or 0: a router drops it after the filter, so it may be a decoy
    /// the server never sees. It changes no flow state and is not judged.
    TcpTtlExpiring => "tcp_ttl_expiring", Unjudged, Tls, Pass;
    /// A data segment without ACK (and not a SYN) that a flow's state would
    /// follow: Linux discards it, so it may be a decoy the server never
    /// reads. It changes no flow state and is not judged.
    TcpNoAck => "tcp_no_ack", Unjudged, Tls, Pass;
    /// A segment a flow's state would follow whose headers make Linux
    /// discard it: a wrong IPv4 header checksum, source routing or malformed
    /// IPv4 options, a TCP MD5 or AO signature option, data on a RST. It
    /// may be a decoy the server never reads; it changes no flow state and
    /// is not judged.
    TcpDiscarded => "tcp_discarded", Unjudged, Tls, Pass;
    /// A segment that would change a flow's state or decide it (one
    /// starting like a ClientHello, data of a ClientHello in progress, the
    /// first data or the SYN of a tracked flow, urgent data) with a wrong
    /// TCP checksum: the receiver discards it, so it may be a decoy the
    /// server never reads. It changes no flow state and is not judged.
    TcpBadChecksum => "tcp_bad_checksum", Unjudged, Tls, Pass;
    /// A segment with urgent data (URG) that would start or go on with a
    /// ClientHello: the receiver removes the urgent byte from the stream,
    /// which can hide the name from the parser; not judged.
    TcpUrgent => "tcp_urgent", Unjudged, Tls, Pass;
    /// A new flow or an unfinished ClientHello the full flow table cannot
    /// hold: not judged.
    TlsFlowTableFull => "tls_flow_table_full", Unjudged, Tls, Pass;
    /// A segment of an unfinished ClientHello: passed, the parser's state kept.
    TlsPending => "tls_pending", Verdict, Tls, Pass;
    /// A ClientHello whose server name no rule matched: passed.
    TlsPassNoMatch => "tls_pass_no_match", Verdict, Tls, Pass;
    /// A ClientHello whose server name an allow rule decided: passed.
    TlsPassAllowed => "tls_pass_allowed", Verdict, Tls, Pass;
    /// A ClientHello without server name: passed (the default policy).
    TlsPassNoSni => "tls_pass_no_sni", Verdict, Tls, Pass;
    /// A blocked ClientHello: dropped, and the client sent a TCP reset.
    TlsReset => "tls_reset", Verdict, Tls, Reset;
    /// A blocked ClientHello: dropped.
    TlsDrop => "tls_drop", Verdict, Tls, Drop;
    /// A later packet of a blocked flow: dropped.
    TlsBlockedFlow => "tls_blocked_flow", Verdict, Tls, Drop;
    /// A segment past a gap in an unfinished ClientHello (or a first data
    /// segment not at the connection's first byte): dropped, so the client
    /// sends the stream in order and no byte escapes the parser.
    TlsOutOfOrder => "tls_out_of_order", Verdict, Tls, Drop;
    /// A segment of a tracked flow that starts before the stream's first byte
    /// (a sequence number from another connection on the same addresses and
    /// ports, or forged): dropped; the server would not take it as this
    /// connection's data either.
    TlsOutOfWindow => "tls_out_of_window", Verdict, Tls, Drop;
    /// A segment of a flow in the middle of a ClientHello, past a gap and
    /// beyond where the ClientHello can end: the connection's later data
    /// (its ClientHello's start was a retransmission taken for a new one);
    /// passed, its start noted (`tls_rest_passed`).
    TlsBeyondHello => "tls_beyond_hello", Skipped, Tls, Pass;
    /// A segment of a ClientHello that reaches bytes passed earlier as
    /// `tls_beyond_hello`: the server holds those, not what the filter
    /// would read; not judged.
    TlsRestPassed => "tls_rest_passed", Unjudged, Tls, Pass;
    /// A segment that starts like a ClientHello on a flow whose table entry
    /// belongs to another stream (its sequence numbers far from it, see
    /// `maps::layout::flow::WINDOW`): the entry cannot follow both, and is
    /// not replaced; not judged.
    TlsNotInWindow => "tls_not_in_window", Unjudged, Tls, Pass;
    /// A segment of a ClientHello that needs more parser steps than one
    /// segment may take (`maps::parse::tls::SEGMENT_STEPS`: hundreds of tiny
    /// records or extensions in one packet, far past what real clients
    /// send): not judged, and its flow is forgotten.
    TlsSegmentBound => "tls_segment_bound", Unjudged, Tls, Pass;
    /// A SYN's data (TCP Fast Open) that is not a blocked ClientHello: not
    /// judged. The server takes a SYN's data only with a valid cookie,
    /// which the filter cannot see; taking the data as the stream's start
    /// either way would let a client send bytes the server never reads and
    /// then others. Dropped by default: the client sends the SYN again
    /// without data (RFC 7413 §4.2.2), and its first data is judged.
    TlsSynData => "tls_syn_data", Unjudged, Tls, Pass;
    /// A QUIC Initial packet: passed (the default policy).
    QuicInitial => "quic_initial", Verdict, Quic, Pass;
    /// A QUIC Initial packet: dropped, so the client falls back to TCP.
    QuicInitialDrop => "quic_initial_drop", Verdict, Quic, Drop;
    /// Extra: a packet that could not be judged, dropped by `--unjudged drop`.
    UnjudgedDrop => "unjudged_drop", Extra, Other, -;
    /// Extra: writing an answer failed (no headroom/tailroom); the query was dropped instead.
    RewriteFailed => "rewrite_failed", Extra, Other, -;
    /// Extra: a ClientHello carrying encrypted_client_hello (its outer name is judged).
    TlsEch => "tls_ech", Extra, Tls, -;
    /// Extra: a ClientHello without server name.
    TlsNoSni => "tls_no_sni", Extra, Tls, -;
    /// Extra: a SYN carrying data (TCP Fast Open): parsed as the stream's first bytes.
    TcpFastOpen => "tcp_fast_open", Extra, Tls, -;
    /// Extra: the flow table was full: a new flow or a ClientHello in
    /// progress could not be kept (its outcome `tls_flow_table_full`), or a
    /// blocked flow could not be remembered (its later segments reach the
    /// server, which never got the ClientHello).
    FlowTableFull => "flow_table_full", Extra, Tls, -;
    /// Extra: an expired `FLOWS` entry the kernel deleted to make room for
    /// a new one, the table being full (see `maps::layout::flow::ring_slots`).
    FlowReclaimed => "flow_reclaimed", Extra, Tls, -;
    /// Extra: a block event over this CPU's per-second budget: not sent.
    EventOverBudget => "event_over_budget", Extra, Other, -;
    /// Extra: a block event the ring buffer had no room for (user space behind): lost.
    EventLost => "event_lost", Extra, Other, -;
    /// Extra: a rule key matched but its label count did not: a hash collision, ignored.
    KeyCollision => "key_collision", Extra, Other, -;
    /// Internal error: a map the program reads missing, or a tail call to a
    /// stage that failed (its `STAGES` slot empty). Never expected; the
    /// packet passed unjudged.
    Internal => "internal", Skipped, Other, Pass;
}

/// Number of counter slots.
pub const COUNT: usize = Counter::ALL.len();

/// Outcome counters are kept per interface bucket: `COUNTERS` holds
/// [`IFACE_BUCKETS`] rows of [`COUNT`] slots, and a packet's outcome goes to
/// row `ingress_ifindex & (IFACE_BUCKETS - 1)`. A mask rather than a lookup
/// table: the per-interface figures cost a packet nothing. Interfaces whose
/// indices share the low bits share a row (user space names them together).
/// Extra counters, counted deep inside the parsers, all go to row 0.
pub const IFACE_BUCKETS: usize = 64;

/// Slots in `COUNTERS`.
pub const SLOTS: usize = COUNT * IFACE_BUCKETS;

/// The row of interface `ifindex`.
#[inline(always)]
pub const fn bucket(ifindex: u32) -> usize {
    ifindex as usize & (IFACE_BUCKETS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_names_unique() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert_eq!(Counter::from_index(i as u32), Some(*c));
            for other in &Counter::ALL[i + 1..] {
                assert_ne!(c.name(), other.name());
            }
        }
        assert_eq!(Counter::from_index(COUNT as u32), None);
    }

    #[test]
    fn fates() {
        assert_eq!(Counter::Nxdomain.fate(false), Some(Fate::Answer));
        assert_eq!(Counter::TlsReset.fate(true), Some(Fate::Reset));
        assert_eq!(Counter::DnsTruncated.fate(false), Some(Fate::Pass));
        assert_eq!(Counter::DnsTruncated.fate(true), Some(Fate::Drop));
        assert_eq!(Counter::PassNoMatch.fate(true), Some(Fate::Pass));
        for c in Counter::ALL {
            assert_eq!(c.fate(false).is_none(), c.kind() == CounterKind::Extra, "{c:?}");
        }
    }
}
