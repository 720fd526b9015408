//! The DNS stage: from a transport payload to port 53 to a verdict. The
//! DNS header checked, the question copied out of the packet and its name
//! judged by the rules; a blocked query dropped, or answered in place by
//! the answer stage ([`answer`]). DNS over TCP reaches it through the
//! stream stage ([`stream`]), which gathers each message's question from
//! the connection's stream and gets the segment back after a message passed.

pub mod stream;

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use maps::{
    Action, Answer, Counter, Protocol, Scratch, Settings, Stage, handoff,
    layout::rule::{self, Match, Verdict},
    parse::name::{self, MAX_QUESTION, WireName},
};

use crate::{
    names,
    packet::{
        Layers, Packet,
        headers::{DNS_HLEN, DnsHdr, IPPROTO_TCP, TcpFlagsHead},
    },
    reply,
    tables::{SETTINGS, scratch},
    verdict::{self, Done, count, drop, not_judged, pass},
};

/// A query whose question was parsed.
#[derive(Clone, Copy)]
struct Query {
    /// Offset of the DNS header (UDP).
    pub dns_off: usize,
    /// Offset of the QNAME in the packet, for the trace (0: not in it).
    pub qname_at: usize,
    /// Flags word of the query.
    pub flags: u16,
    /// QNAME as parsed; its bytes and the label hashes are in the scratch map.
    pub name: WireName,
    pub qtype: u16,
    pub qclass: u16,
}

/// Why a payload was not judged: the counter to increment, and whether the
/// "cannot judge" policy applies (a query we should have judged but could not).
#[derive(Clone, Copy)]
struct NotJudged {
    counter: Counter,
    malformed: bool,
}

#[inline(always)]
const fn skip(counter: Counter) -> NotJudged {
    NotJudged { counter, malformed: false }
}

#[inline(always)]
const fn malformed(counter: Counter) -> NotJudged {
    NotJudged { counter, malformed: true }
}

/// The DNS stage: judges the DNS message the entry stage found
/// (`scratch.handoff`).
#[inline(always)]
pub fn judge(ctx: &XdpContext) -> Result<Stage, Done> {
    let (Some(settings), Some(scratch)) = (SETTINGS.get(0), scratch()) else {
        return Err(pass(Counter::Internal));
    };
    let l = Layers::taken_over(&scratch.handoff);
    let query = match parse_query(ctx, &l, settings.seed, scratch) {
        Ok(q) => q,
        Err(e) if e.malformed => return Err(not_judged(settings, e.counter)),
        Err(e) => return Err(pass(e.counter)),
    };
    verdict::trace(|t| {
        t.name_offset = query.qname_at as u16;
        t.name_len = query.name.len as u16;
        t.name_labels = query.name.labels as u8;
        t.l4_proto = l.proto;
        t.name_kind = Protocol::Dns as u8;
    });
    let (found, name_key) = match names::lookup(settings, scratch, &query.name) {
        Ok(r) => r,
        Err(c) => return Err(pass(c)),
    };
    verdict::trace(|t| t.name_key = name_key);
    // A TCP query that passes goes back to the stream stage, for the rest
    // of the segment and the stream's state.
    let tcp = l.proto == IPPROTO_TCP;
    let Some(m) = found else {
        return if tcp { Ok(back(scratch, handoff::JUDGED_NO_MATCH)) } else { Err(pass(Counter::PassNoMatch)) };
    };
    // The rule's key recorded here, past the no-match return, though it
    // writes the name's key again: one record of both before that return
    // cost the stage 16k more verified instructions (113,675 against 97,624).
    verdict::trace_keys(name_key, Some(&m));
    let Verdict::Block(rule_action) = m.verdict else {
        return if tcp { Ok(back(scratch, handoff::JUDGED_ALLOWED)) } else { Err(pass(Counter::PassAllowed)) };
    };
    block(ctx, &l, &query, &m, rule_action, settings, scratch)
}

/// Hands a TCP segment whose query passed back to the stream stage, with
/// how it passed.
#[inline(always)]
fn back(scratch: &mut Scratch, judged: u8) -> Stage {
    let h = &mut scratch.handoff;
    h.stream |= handoff::STREAM_BACK;
    h.judged = judged;
    Stage::DnsTcp
}

/// Drops a blocked query, or has the answer stage answer it.
#[inline(always)]
fn block(
    ctx: &XdpContext,
    l: &Layers,
    query: &Query,
    m: &Match,
    rule_action: u8,
    settings: &Settings,
    scratch: &mut Scratch,
) -> Result<Stage, Done> {
    // Told before the answer rewrites the packet's addresses.
    verdict::name_event(scratch, Some(m), Protocol::Dns, query.name.len);
    verdict::capture(ctx, l, scratch);
    let action = rule::dns_action(rule_action, settings.dns_action);
    if l.proto == IPPROTO_TCP {
        return block_tcp(ctx, l, action, scratch);
    }
    let (rcode, sinkhole) = match action {
        a if a == Action::Nxdomain as u8 => (reply::RCODE_NXDOMAIN, false),
        a if a == Action::Refused as u8 => (reply::RCODE_REFUSED, false),
        a if a == Action::Sinkhole as u8 => (reply::RCODE_NOERROR, true),
        _ => return Err(drop(Counter::Drop)),
    };
    scratch.handoff.answer = Answer {
        dns_off: query.dns_off as u16,
        flags: query.flags,
        qlen: (query.name.len + 4) as u16,
        qtype: query.qtype,
        qclass: query.qclass,
        rcode,
        sinkhole: u8::from(sinkhole),
        ttl: settings.answer_ttl,
    };
    Ok(Stage::Answer)
}

/// A blocked query over TCP: dropped, and unless the rule says drop, the
/// client reset at once by the answer stage. An answer in the stream would
/// leave the client and server a query apart (the server never got it) and
/// stall the connection's next query; a reset fails the lookup now instead
/// of at the client's timeout, and the client's next connection is judged
/// afresh.
#[inline(always)]
fn block_tcp(ctx: &XdpContext, l: &Layers, action: u8, scratch: &mut Scratch) -> Result<Stage, Done> {
    if action == Action::Drop as u8 {
        return Err(drop(Counter::DropTcp));
    }
    let pkt = Packet::new(ctx);
    let Some(t) = pkt.header::<TcpFlagsHead>(l.l4_off) else {
        return Err(drop(Counter::DropTcp));
    };
    let h = &mut scratch.handoff;
    (h.seq, h.ack, h.tcp_flags) = (t.seq(), t.ack(), t.flags());
    h.answer = Answer { rcode: reply::RESET, ..Answer::default() };
    Ok(Stage::Answer)
}

/// The answer stage: writes the answer the DNS stage chose in place of the
/// query. Its own program: the writer walks every header layout and kind
/// of answer, and verified inside the DNS stage it would be checked once
/// per way there.
#[inline(always)]
pub fn answer(ctx: &XdpContext) -> Done {
    let Some(scratch) = scratch() else {
        return pass(Counter::Internal);
    };
    let l = Layers::taken_over(&scratch.handoff);
    let a = scratch.handoff.answer;
    if a.rcode == reply::RESET {
        let h = &scratch.handoff;
        let (seq, ack, flags) = (h.seq, h.ack, h.tcp_flags);
        if reply::reset_client(ctx, &l, seq, ack, flags, scratch).is_err() {
            count(Counter::RewriteFailed);
            return drop(Counter::ResetTcp);
        }
        return (xdp_action::XDP_TX, Counter::ResetTcp);
    }
    let counter = match a.rcode {
        reply::RCODE_NXDOMAIN => Counter::Nxdomain,
        reply::RCODE_REFUSED => Counter::Refused,
        _ => Counter::Sinkhole,
    };
    if reply::write_answer(ctx, &l, &a, scratch).is_err() {
        count(Counter::RewriteFailed);
        return drop(counter);
    }
    (xdp_action::XDP_TX, counter)
}

/// Checks a UDP payload is a one-question query and copies its question
/// into `scratch`; takes a TCP query's question from where the stream stage
/// left it. Parses the question.
#[inline(always)]
fn parse_query(ctx: &XdpContext, l: &Layers, seed: u64, scratch: &mut Scratch) -> Result<Query, NotJudged> {
    if l.proto == IPPROTO_TCP {
        // The stream stage checked the header and copied the head's question.
        let h = &scratch.handoff;
        let (flags, qname_at) = (h.qflags, usize::from(h.qname_at));
        let avail = usize::from(h.qavail) & (name::QUESTION_BUF - 1);
        let copy = if avail < MAX_QUESTION { avail } else { MAX_QUESTION };
        let (name, qtype, qclass) = question(scratch, copy, seed)?;
        return Ok(Query { dns_off: 0, qname_at, flags, name, qtype, qclass });
    }
    let pkt = Packet::new(ctx);
    let (dns_off, msg_end) = (l.payload_off, l.payload_end);
    let Some(h) = pkt.header::<DnsHdr>(dns_off).filter(|_| dns_off + DNS_HLEN <= msg_end) else {
        return Err(malformed(Counter::DnsShortHeader));
    };
    let (flags, qdcount) = (h.flags(), h.qdcount());
    let not_query = if flags & 0x8000 != 0 {
        Some(Counter::DnsResponse)
    } else if (flags >> 11) & 0xf != 0 {
        Some(Counter::DnsNotQuery)
    } else if qdcount == 0 {
        Some(Counter::DnsNoQuestion)
    } else {
        None
    };
    if let Some(c) = not_query {
        return Err(skip(c));
    }
    if qdcount > 1 {
        return Err(malformed(Counter::DnsMultiQuestion));
    }

    let qname_off = dns_off + DNS_HLEN;
    let avail = msg_end - qname_off;
    let copy = if avail < MAX_QUESTION { avail } else { MAX_QUESTION };
    if copy == 0 {
        return Err(malformed(Counter::DnsTruncated));
    }
    // Into the scratch map's QUESTION_BUF >= MAX_QUESTION bytes; also from
    // the fragments of multi-buffer frames.
    if !Packet::load(ctx, qname_off, scratch.question.as_mut_ptr(), copy) {
        return Err(malformed(Counter::DnsTruncated));
    }
    let (name, qtype, qclass) = question(scratch, copy, seed)?;
    Ok(Query { dns_off, qname_at: qname_off, flags, name, qtype, qclass })
}

/// Parses the question's `copy` bytes in `scratch.question`: the QNAME
/// (its labels hashed), QTYPE and QCLASS.
#[inline(always)]
fn question(scratch: &mut Scratch, copy: usize, seed: u64) -> Result<(WireName, u16, u16), NotJudged> {
    if copy == 0 {
        return Err(malformed(Counter::DnsTruncated));
    }
    let name = names::parse_wire(scratch, copy, seed).map_err(|e| malformed(names::dns_counter(e)))?;
    if name.len + 4 > copy {
        return Err(malformed(Counter::DnsTruncated));
    }
    let q = &scratch.question;
    let at = name.len & (name::QUESTION_BUF - 1);
    let qtype = u16::from_be_bytes([q[at], q[(at + 1) & (name::QUESTION_BUF - 1)]]);
    let qclass = u16::from_be_bytes([q[(at + 2) & (name::QUESTION_BUF - 1)], q[(at + 3) & (name::QUESTION_BUF - 1)]]);
    Ok((name, qtype, qclass))
}
