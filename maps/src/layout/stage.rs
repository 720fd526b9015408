//! The kernel program's stages: one XDP program each, verified on its own.
//!
//! The verifier walks every path of a program, and a path's length grows
//! with every parser on it: one program judging DNS, TLS and QUIC came to
//! 80% of the verifier's one-million-instruction budget. So the entry
//! program parses layers 2 to 4 once, decides which parser the payload
//! needs, leaves the layers in per-CPU scratch memory ([`crate::Handoff`])
//! and tail-calls that parser's program through the `STAGES` program array
//! (as cilium dispatches to its `CILIUM_CALL_*` programs); the TLS stage in
//! turn hands what a ClientHello showed to the [`Stage::Hello`] stage, and
//! the DNS stage a blocked query's answer to the [`Stage::Answer`] stage. The
//! stage that decides finishes the packet: counts its outcome, sends its
//! event, returns the XDP action. A failed tail call (an empty slot) comes
//! back to the caller, which passes the packet and counts `internal`.
//!
//! This table is the one place that names the stages: the kernel tail-calls
//! by [`Stage`] index, user space loads each by its name ([`Stage::name`], the XDP function's) and puts it
//! in slot [`Stage::index`].

crate::vocab::vocabulary! {
    /// A stage reached by tail call; its code is its slot in `STAGES`, its
    /// name the XDP function's name in the object file.
    pub enum Stage {
        /// DNS queries over UDP and TCP to port 53: the question, the rules.
        Dns = 0 => "namewall_dns",
        /// TCP segments that may carry or continue a TLS ClientHello, and
        /// segments of flows in the flow table.
        Tls = 1 => "namewall_tls",
        /// QUIC Initial packets.
        Quic = 2 => "namewall_quic",
        /// A ClientHello's server name (or its lack) as the TLS stage read it:
        /// the rules and the ECH and no-name policies, the reset or drop, the
        /// flow's verdict.
        Hello = 3 => "namewall_hello",
        /// The answer to a blocked DNS query, written in place of the query.
        Answer = 4 => "namewall_answer",
        /// DNS over TCP: the segment placed in its connection's stream, each
        /// message's head gathered for the DNS stage, the stream's state kept.
        DnsTcp = 5 => "namewall_dns_tcp",
        /// A TCP segment the TLS stage placed in its flow: its ClientHello
        /// bytes parsed (in place, or by the state machine from the flow's
        /// state), the state kept for the next segment or the name handed
        /// to the [`Stage::Hello`] stage.
        TlsParse = 6 => "namewall_tls_parse",
    }
}

impl Stage {
    /// Slot in `STAGES`.
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }
}

/// Slots of `STAGES`: room for stages to come without a new map shape.
pub const SLOTS: u32 = 8;
const _: () = assert!(Stage::ALL.len() as u32 <= SLOTS);
