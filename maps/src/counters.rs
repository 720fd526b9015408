//! Indices of the per-CPU `COUNTERS` array.
//!
//! Every packet the program sees increments exactly one *outcome* counter:
//! the reason it returned early or the verdict it got. The sum of the outcome
//! counters is therefore the number of packets seen, which tests check. The
//! *extra* counters record events on top of an outcome (a fail-closed drop of
//! a packet whose outcome is "compressed name", a rewrite that failed, ...).
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

            /// What happened to a packet with this outcome when the program
            /// fails open; `None` for extra counters.
            const fn fail_open_fate(self) -> Option<Fate> {
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
    /// What happened to a packet with this outcome: a malformed packet is
    /// dropped when the program runs fail-closed. `None` for extra counters.
    pub const fn fate(self, fail_closed: bool) -> Option<Fate> {
        match self.kind() {
            CounterKind::Malformed if fail_closed => Some(Fate::Drop),
            _ => self.fail_open_fate(),
        }
    }
}

/// What a counter counts; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterKind {
    /// The packet was not judged: not DNS, or not a query; it passed.
    Skipped,
    /// The packet should have been judged but could not be parsed (fail-open passes it).
    Malformed,
    /// A judged packet's verdict.
    Verdict,
    /// An event on top of a packet's outcome.
    Extra,
}

counters! {
    /// `EtherType` is neither IPv4 nor IPv6 (after at most two VLAN tags).
    NotIp => "not_ip", Skipped, Other, Pass;
    /// More than two VLAN tags.
    VlanTooDeep => "vlan_too_deep", Skipped, Other, Pass;
    /// The frame ends inside an Ethernet, VLAN, IP, UDP or TCP header.
    TruncatedHeader => "truncated_header", Skipped, Other, Pass;
    /// Inconsistent header: IP version, IPv4 header length or a total length
    /// below it, an IP or UDP length beyond the end of the frame or of the IP
    /// packet (a frame cut short: never judged, whatever the cut spared), a
    /// TCP data offset below 20 bytes or past the packet's end.
    BadHeader => "bad_header", Skipped, Other, Pass;
    /// A non-first fragment (IPv4 offset, IPv6 fragment header with an
    /// offset): no transport header, not reassembled.
    IpFragment => "ip_fragment", Skipped, Other, Pass;
    /// The first fragment of a datagram to port 53 or of a TCP segment: a
    /// question or a ClientHello may go on in fragments that are not
    /// reassembled here, so it is not judged (fail-closed drops it, and the
    /// datagram with it).
    FirstFragment => "first_fragment", Malformed, Dns, Pass;
    /// More IPv6 extension headers than the parser follows.
    Ipv6ExtTooDeep => "ipv6_ext_too_deep", Skipped, Other, Pass;
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
    /// TCP payload to port 53 that does not start with a judgeable query:
    /// a continuation segment (or a length prefix sent alone), a response, a
    /// NOTIFY. Fail-open passes it; fail-closed drops it, so a client cannot
    /// slip a query past the filter by splitting it across segments.
    TcpNotMessageStart => "tcp_not_message_start", Malformed, Dns, Pass;
    /// A TCP segment holding more than one DNS message: the first was judged
    /// and allowed, the rest cannot be (fail-closed drops the segment).
    TcpPipelined => "tcp_pipelined", Malformed, Dns, Pass;
    /// DNS message with QR=1 (a response).
    DnsResponse => "dns_response", Skipped, Dns, Pass;
    /// DNS message with an opcode other than QUERY (NOTIFY, UPDATE, ...).
    DnsNotQuery => "dns_not_query", Skipped, Dns, Pass;
    /// DNS query without a question (QDCOUNT=0, e.g. a cookie-only query).
    DnsNoQuestion => "dns_no_question", Skipped, Dns, Pass;
    /// UDP payload shorter than a DNS header.
    DnsShortHeader => "dns_short_header", Malformed, Dns, Pass;
    /// QDCOUNT above 1: no server answers it; fail-open passes it.
    DnsMultiQuestion => "dns_multi_question", Malformed, Dns, Pass;
    /// The question runs past the end of the message.
    DnsTruncated => "dns_truncated", Malformed, Dns, Pass;
    /// A compression pointer in the question's QNAME.
    DnsCompressed => "dns_compressed", Malformed, Dns, Pass;
    /// A label type other than a plain length (0b01/0b10 prefixes, RFC 6891 §5).
    DnsBadLabel => "dns_bad_label", Malformed, Dns, Pass;
    /// QNAME longer than 255 bytes (RFC 1035 §2.3.4), hence also more than 127 labels.
    DnsNameTooLong => "dns_name_too_long", Malformed, Dns, Pass;
    /// A TLS ClientHello that does not parse, or whose server name is not a
    /// host name we can judge: passed (fail-open) or dropped (fail-closed).
    TlsMalformed => "tls_malformed", Malformed, Tls, Pass;
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
    /// Blocked DNS over TCP: dropped (an answer would need the TCP stream).
    DropTcp => "drop_tcp", Verdict, Dns, Drop;
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
    /// A segment past a gap in the ClientHello of a flow whose SYN was not
    /// seen (see `flow::FLAG_SYN_SEEN`): the flow is forgotten, the segment
    /// passes.
    TlsGapUnsynced => "tls_gap_unsynced", Verdict, Tls, Pass;
    /// A QUIC Initial packet: passed (the default policy).
    QuicInitial => "quic_initial", Verdict, Quic, Pass;
    /// A QUIC Initial packet: dropped, so the client falls back to TCP.
    QuicInitialDrop => "quic_initial_drop", Verdict, Quic, Drop;
    /// Extra: a malformed DNS query dropped because the program runs fail-closed.
    FailClosedDrop => "fail_closed_drop", Extra, Other, -;
    /// Extra: writing an answer failed (no headroom/tailroom); the query was dropped instead.
    RewriteFailed => "rewrite_failed", Extra, Other, -;
    /// Extra: a ClientHello carrying encrypted_client_hello (its outer name is judged).
    TlsEch => "tls_ech", Extra, Tls, -;
    /// Extra: a ClientHello without server name.
    TlsNoSni => "tls_no_sni", Extra, Tls, -;
    /// Extra: a SYN carrying data (TCP Fast Open): parsed as the stream's first bytes.
    TcpFastOpen => "tcp_fast_open", Extra, Tls, -;
    /// Extra: the flow table was full: a new flow was not tracked (fail-open) or dropped (fail-closed).
    FlowTableFull => "flow_table_full", Extra, Tls, -;
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
