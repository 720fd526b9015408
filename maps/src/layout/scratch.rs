//! Per-CPU working memory of the kernel program (`SCRATCH`), and what one
//! stage hands the next through it.

use crate::{
    layout::{dns_stream, event, flow},
    parse::{name, tls},
};

/// Per-CPU working memory of the kernel program: the question copied out of
/// the packet and the hash of each of its labels. Kept in a map because the
/// BPF stack has only 512 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Scratch {
    /// Per-label hashes, leftmost label first.
    pub label_hashes: [u64; name::LABEL_SLOTS],
    /// The question section (QNAME, QTYPE, QCLASS) copied out of the packet.
    pub question: [u8; name::QUESTION_BUF],
    /// State of the kernel's per-label loops.
    pub walk: Walk,
    /// What the entry program found, for the stage it tail-calls.
    pub handoff: Handoff,
    /// Values passed through map memory so that the verifier forgets how
    /// they were reached (see the kernel's `verifier::forget`).
    pub spill: [u64; 8],
    /// Where the kernel builds an answer's headers before storing them into
    /// the packet (the BPF stack is too small to hold them).
    pub reply: [u8; REPLY_BUF],
    /// DNS over TCP: the connection's stream as this segment moves it (see
    /// [`dns_stream`]); before `tls_buf`, which the verifier counts as room
    /// for its head's copies.
    pub dns: dns_stream::DnsStream,
    /// A TCP segment's payload copied for the ClientHello parser.
    pub tls_buf: [u8; tls::TLS_BUF],
    /// The flow being parsed: fresh, or copied from `FLOWS` and back.
    pub flow: flow::FlowState,
    /// The parser's position in `tls_buf`, the bytes in it, and the last step's outcome code.
    pub tls_pos: u64,
    pub tls_len: u64,
    pub tls_step: u64,
    /// Parser steps this segment has taken, against
    /// `maps::parse::tls::SEGMENT_STEPS` (reading on past the name for ECH
    /// shares the segment's steps).
    pub tls_steps: u64,
    /// The block event being built (see [`event`]).
    pub event: event::Event,
    /// A chunk of a TCP segment copied for its checksum (the kernel's
    /// `packet::checksum`): words, so the checksum helper reads it aligned.
    pub csum: [u32; CSUM_WORDS],
    /// The checksum loop's state: next byte, end, sum so far, failure
    /// flag. In map memory, which the verifier does not track: kept on the
    /// stack, a position that grows each iteration makes it check the loop
    /// body once per iteration, past its limit of jumps.
    pub csum_walk: [u64; 4],
}

/// Words of [`Scratch::csum`]: 512 bytes, the most `bpf_csum_diff` sums in
/// one call on kernels before 6.12 (the size of its per-CPU scratchpad).
pub const CSUM_WORDS: usize = 128;

/// The layers of a packet as the entry program parsed them, for a TCP
/// segment what its triage found, and for a ClientHello what the TLS stage
/// read of it: left in scratch memory for the stage called next (see
/// [`crate::layout::stage`]). The stage reads them
/// back as values the verifier knows nothing of, so it checks the stage's
/// parser once for every header layout, and restores their bounds with
/// masks.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Handoff {
    /// Ethernet header plus VLAN tags and PPPoE header.
    pub l2_len: u16,
    /// Start of the UDP/TCP header.
    pub l4_off: u16,
    /// Start of the transport payload.
    pub payload_off: u16,
    /// End of the transport payload, at most 4096 bytes after its start.
    pub payload_end: u16,
    /// End of the IP packet.
    pub ip_end: u32,
    /// Destination port.
    pub dport: u16,
    /// IP protocol (6 or 17).
    pub proto: u8,
    /// [`handoff`] bits.
    pub flags: u8,
    /// TCP: the flow's key (see [`flow`]).
    pub flow_key: u64,
    /// TCP: the sequence number the segment's payload starts at (past a
    /// SYN's own number for the ClientHello verdict stage).
    pub seq: u32,
    /// TCP: the acknowledgment number.
    pub ack: u32,
    /// TCP: the header's flags byte.
    pub tcp_flags: u8,
    /// Number of VLAN tags (0..=4).
    pub vlan_tags: u8,
    /// TLS stage to ClientHello verdict stage: what the ClientHello showed
    /// ([`handoff`] `HELLO_*` bits).
    pub hello: u8,
    /// Explicit padding; always 0.
    pub pad: u8,
    /// With [`handoff::HELLO_SNI`]: bytes of the server name in
    /// `Scratch::flow.tls.name`.
    pub name_len: u16,
    /// DNS over TCP, from the stream stage to the DNS stage: bytes of the
    /// message's question gathered in `Scratch::question` (the message may
    /// end inside it).
    pub qavail: u16,
    /// DNS stage to answer stage: the answer to write.
    pub answer: Answer,
    /// With [`handoff::FIRST_FRAGMENT`]: the datagram's key in `FRAGMENTS`
    /// (see [`crate::layout::fragment`]), recorded if the stage drops it.
    pub frag_key: u64,
    /// DNS over TCP: where the message being judged ends, from the
    /// payload's start (past the payload's end when it goes on in later
    /// segments). The stream stage hands each message's head to the DNS
    /// stage, which hands the segment back to go on from here.
    pub msg_end: u32,
    /// DNS over TCP: the query's flags word.
    pub qflags: u16,
    /// DNS over TCP: how the last message judged in the segment passed
    /// ([`handoff`] `JUDGED_*`).
    pub judged: u8,
    /// DNS over TCP: [`handoff`] `STREAM_*` bits.
    pub stream: u8,
    /// DNS over TCP: where the question's QNAME is in this packet, for the
    /// trace; 0 when the message's head began in an earlier segment.
    pub qname_at: u16,
    /// TLS stage to parse stage: [`handoff`] `PARSE_*` bits.
    pub parse: u8,
    /// Explicit padding; always 0.
    pub pad2: u8,
    /// TLS stage to parse stage: payload bytes seen before (parsing starts
    /// past them).
    pub parse_skip: u32,
}

const _: () = assert!(core::mem::size_of::<Handoff>() == 80);

/// The answer to a blocked DNS query over UDP, as the DNS stage chose it,
/// for the answer stage to write in place of the query.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Answer {
    /// Offset of the query's DNS header in the packet.
    pub dns_off: u16,
    /// The query's flags word.
    pub flags: u16,
    /// Bytes of the question (QNAME, QTYPE, QCLASS); the QNAME's bytes are
    /// in `Scratch::question`.
    pub qlen: u16,
    /// The question's type and class: a sinkhole record only answers A and
    /// AAAA of class IN.
    pub qtype: u16,
    pub qclass: u16,
    /// RCODE (RFC 1035 §4.1.1).
    pub rcode: u8,
    /// 1: add an A 0.0.0.0 / AAAA :: record when the question asks for one.
    pub sinkhole: u8,
    /// TTL of that record, seconds.
    pub ttl: u32,
}

const _: () = assert!(core::mem::size_of::<Answer>() == 16);

/// Bits of [`Handoff::flags`].
pub mod handoff {
    /// The packet is IPv6.
    pub const IPV6: u8 = 1 << 0;
    /// TCP: the flow hint says the flow may be in `FLOWS`.
    pub const HINTED: u8 = 1 << 1;
    /// The first fragment of a fragmented datagram.
    pub const FIRST_FRAGMENT: u8 = 1 << 2;
    /// The IP packet is inside a PPPoE session header (ending `l2_len`).
    pub const PPPOE: u8 = 1 << 3;

    /// [`super::Handoff::judged`]: no rule matched the last message's name.
    pub const JUDGED_NO_MATCH: u8 = 1;
    /// [`super::Handoff::judged`]: an allow rule decided the last message's name.
    pub const JUDGED_ALLOWED: u8 = 2;
    /// [`super::Handoff::stream`]: the stream stage is called back by the DNS
    /// stage, after a message judged allowed; the segment goes on at
    /// `msg_end`.
    pub const STREAM_BACK: u8 = 1 << 0;
    /// [`super::Handoff::stream`]: the stream was anchored at this segment
    /// from the connection's `NEW_FLOWS` entry, which goes once the stream's
    /// own entry is written.
    pub const STREAM_FROM_SYN: u8 = 1 << 1;

    /// [`super::Handoff::parse`]: the flow is in `FLOWS`.
    pub const PARSE_TRACKED: u8 = 1 << 0;
    /// [`super::Handoff::parse`]: the segment starts the ClientHello (the
    /// parser starts afresh rather than from `Scratch::flow`).
    pub const PARSE_FRESH: u8 = 1 << 1;
    /// [`super::Handoff::parse`]: the segment is a SYN carrying data (TCP
    /// Fast Open): only a block is taken from it.
    pub const PARSE_SYN: u8 = 1 << 2;
    /// [`super::Handoff::parse`]: the segment's headers and TCP checksum
    /// are not verified yet; they are before it leaves any flow state.
    pub const PARSE_UNCHECKED: u8 = 1 << 3;

    /// [`super::Handoff::hello`]: a complete server name.
    pub const HELLO_SNI: u8 = 1 << 0;
    /// [`super::Handoff::hello`]: encrypted_client_hello seen so far.
    pub const HELLO_ECH: u8 = 1 << 1;
    /// [`super::Handoff::hello`]: `HELLO_ECH` covers the whole extension list.
    pub const HELLO_COMPLETE: u8 = 1 << 2;
}

/// Size of [`Scratch::reply`]: the original headers read from the packet,
/// the answer's headers and its resource record.
pub const REPLY_BUF: usize = 256;

/// Loop state of the kernel program's `bpf_loop` callbacks. It lives in map
/// memory rather than on the stack on purpose: the verifier does not track
/// values in map memory, so it checks each callback once instead of once per
/// distinct (position, label count) pair, which exceeded its budget.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Walk {
    /// Offset of the next length octet in `question`.
    pub pos: u64,
    /// Labels parsed so far.
    pub labels: u64,
    /// Wire length of the name once the root label is reached.
    pub len: u64,
    /// 0 while parsing, 1 when done, 2 + `name::NameError` code on error.
    pub status: u64,
    /// Key of the suffix looked up last.
    pub key: u64,
    /// Deepest deciding rule so far: depth, key, kind (0 none, 1 allow, 2 block), action.
    pub best_depth: u64,
    pub best_key: u64,
    pub best_kind: u64,
    pub best_action: u64,
}

const _: () = assert!(
    core::mem::size_of::<Scratch>()
        == 8 * name::LABEL_SLOTS
            + name::QUESTION_BUF
            + 72
            + core::mem::size_of::<Handoff>()
            + 64
            + REPLY_BUF
            + core::mem::size_of::<dns_stream::DnsStream>()
            + tls::TLS_BUF
            + core::mem::size_of::<flow::FlowState>()
            + 32
            + core::mem::size_of::<event::Event>()
            + 4 * CSUM_WORDS
            + 32
);
