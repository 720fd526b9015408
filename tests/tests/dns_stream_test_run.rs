//! DNS over TCP as a stream (`maps::layout::dns_stream`), through
//! `BPF_PROG_TEST_RUN` on the loaded program: queries split anywhere
//! (the length prefix alone, inside the name, a byte per segment), several
//! queries on one connection, long queries, retransmissions, gaps,
//! overlaps, decoys, off-path segments, connections picked up mid-stream,
//! and the bounds (messages per segment, the table). Each script is one
//! connection's segments in the order sent; every construction is tried
//! with a blocked name (refused: the client reset) and an unlisted one
//! (passes: no collateral blocking).

use etherparse::TcpHeader;
use hickory_proto::rr::RecordType;
use maps::{Action, Counter, counters::CounterKind, layout::dns_stream};
use namewall_tests::{
    dnswire,
    harness::{Harness, Observed},
    packet::{self, Spec},
    tls::Flow,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const BLOCKED: &str = "www.blocked.example";
/// As long as [`BLOCKED`], so one can stand in for the other's bytes.
const UNLISTED: &str = "www.nothing.example";

/// A packet of a script and what the program must do with it.
struct Step {
    desc: String,
    frame: Vec<u8>,
    action: u32,
    outcome: Counter,
}

/// One connection's segments, run in order against a fresh stream table.
struct Script {
    desc: String,
    steps: Vec<Step>,
}

fn step(desc: impl Into<String>, frame: Vec<u8>, action: u32, outcome: Counter) -> Step {
    Step { desc: desc.into(), frame, action, outcome }
}

/// Passed with `outcome`.
fn passes(desc: impl Into<String>, frame: Vec<u8>, outcome: Counter) -> Step {
    step(desc, frame, XDP_PASS, outcome)
}

/// Refused: the query dropped and the client reset.
fn resets(desc: impl Into<String>, frame: Vec<u8>) -> Step {
    step(desc, frame, XDP_TX, Counter::ResetTcp)
}

/// Not judged: dropped under the default `--unjudged drop`.
fn unjudged(desc: impl Into<String>, frame: Vec<u8>, outcome: Counter) -> Step {
    assert_eq!(outcome.kind(), CounterKind::Unjudged, "{outcome:?}");
    step(desc, frame, XDP_DROP, outcome)
}

/// The stream of one query for `name`: its length prefix and the message.
fn query(name: &str) -> Vec<u8> {
    packet::tcp_dns(&dnswire::query(name, RecordType::A))
}

/// A query for `name` padded (EDNS padding) to about `n` bytes: longer than
/// the head the filter gathers, so its rest is passed unread.
fn long_query(name: &str, n: u16) -> Vec<u8> {
    packet::tcp_dns(&dnswire::with_padding(&dnswire::query(name, RecordType::A), n))
}

/// A connection to port 53 of its own (by client port).
fn conn(sport: u16) -> Flow {
    Flow::v4().dport(53).sport(sport)
}

/// How a query for `name` ends: refused if blocked, passed otherwise.
fn judged(desc: impl Into<String>, name: &str, frame: Vec<u8>) -> Step {
    if name == BLOCKED { resets(desc, frame) } else { passes(desc, frame, Counter::PassNoMatch) }
}

/// `frame` with its IPv4 TTL set to `ttl` (header checksum fixed, as a
/// router checks it).
fn with_ttl(mut f: Vec<u8>, ttl: u8) -> Vec<u8> {
    packet::set_ipv4_ttl(&mut f, ttl);
    f
}

/// `frame` with TCP flags `or` added (its checksum is not checked here).
fn with_flags(mut f: Vec<u8>, or: u8) -> Vec<u8> {
    f[14 + 20 + 13] |= or;
    f
}

/// `frame` with PSH as its only TCP flag: data without ACK.
fn psh_only(mut f: Vec<u8>) -> Vec<u8> {
    f[14 + 20 + 13] = 0x08;
    f
}

/// `frame` with its TCP checksum made wrong.
fn bad_checksum(mut f: Vec<u8>) -> Vec<u8> {
    f[14 + 20 + 16] ^= 0x5a;
    f
}

/// A SYN from `c` carrying `payload` (TCP Fast Open).
fn syn_with(c: &Flow, payload: &[u8]) -> Vec<u8> {
    let mut tcp = TcpHeader::new(c.client_port(), c.server_port(), c.client_isn, c.window);
    (tcp.syn, tcp.psh) = (true, true);
    c.frame(tcp, payload)
}

/// A data segment of `c` (ACK, PSH) at sequence number `seq`, its header
/// then changed by `edit` (flags, options).
fn segment_at(c: &Flow, seq: u32, edit: impl FnOnce(&mut TcpHeader), payload: &[u8]) -> Vec<u8> {
    let mut tcp = TcpHeader::new(c.client_port(), c.server_port(), seq, c.window);
    (tcp.ack, tcp.acknowledgment_number, tcp.psh) = (true, c.server_seq(), true);
    edit(&mut tcp);
    c.frame(tcp, payload)
}

/// Whether `o` is a TCP reset toward the client.
fn is_reset(o: &Observed) -> bool {
    o.output.get(14 + 20 + 13).is_some_and(|f| f & 0x04 != 0)
}

fn harness() -> Harness {
    Harness::with("blocked.example\n", "", Action::Nxdomain, true)
}

/// Runs every script on fresh flow and stream tables; fails once, listing each
/// failing step.
fn run(h: &mut Harness, scripts: &[Script]) {
    let mut failures = Vec::new();
    for s in scripts {
        h.filter.forget_flows().expect("forget streams and flows");
        for (i, st) in s.steps.iter().enumerate() {
            let o = h.run_in_stream(&st.frame);
            let mut errs = Vec::new();
            if let Err(e) = o.one_outcome() {
                errs.push(e);
            }
            if (o.action, o.outcome) != (st.action, st.outcome) {
                errs.push(format!(
                    "{} {}, want {} {}",
                    o.action_name(),
                    o.outcome.name(),
                    st.action,
                    st.outcome.name()
                ));
            }
            if st.action == XDP_TX && !is_reset(&o) {
                errs.push("answered, but not with a reset".into());
            }
            if st.action == XDP_PASS && o.output != st.frame {
                errs.push("passed, but changed".into());
            }
            if !errs.is_empty() {
                failures.push(format!("{} / step {i} ({}): {}", s.desc, st.desc, errs.join("; ")));
            }
        }
    }
    assert!(failures.is_empty(), "{} failing steps:\n  {}", failures.len(), failures.join("\n  "));
}

/// A query split in two at every byte, and in three; the length prefix
/// alone; a byte per segment.
#[test]
fn queries_split_anywhere() {
    let mut h = harness();
    let mut scripts = Vec::new();
    let mut port = 20000;
    for name in [BLOCKED, UNLISTED] {
        let q = query(name);
        for k in 1..q.len() {
            port += 1;
            let c = conn(port);
            scripts.push(Script {
                desc: format!("{name}: split at byte {k} of {}", q.len()),
                steps: vec![
                    passes("first part", c.segment(0, &q[..k]), Counter::DnsTcpPartial),
                    judged("second part", name, c.segment(k, &q[k..])),
                ],
            });
        }
        port += 1;
        let c = conn(port);
        scripts.push(Script {
            desc: format!("{name}: in three, cut inside the header and inside the name"),
            steps: vec![
                passes("prefix and half the header", c.segment(0, &q[..8]), Counter::DnsTcpPartial),
                passes("to the name's middle", c.segment(8, &q[8..20]), Counter::DnsTcpPartial),
                judged("the rest", name, c.segment(20, &q[20..])),
            ],
        });
        port += 1;
        let c = conn(port);
        let mut steps: Vec<Step> = (0..q.len() - 1)
            .map(|i| passes(format!("byte {i}"), c.segment(i, &q[i..=i]), Counter::DnsTcpPartial))
            .collect();
        steps.push(judged("the last byte", name, c.segment(q.len() - 1, &q[q.len() - 1..])));
        scripts.push(Script { desc: format!("{name}: one byte per segment"), steps });
    }
    run(&mut h, &scripts);
}

/// Several queries on one connection, in segments of their own or sharing
/// them; a long query whose rest is passed unread; the messages a segment
/// may hold.
#[test]
fn queries_follow_each_other() {
    let mut h = harness();
    let (a, b) = (query(UNLISTED), query(BLOCKED));
    let c = conn(30001);
    let both = [a.clone(), b.clone()].concat();
    let mut scripts = vec![
        Script {
            desc: "two queries, a segment each, the second blocked".into(),
            steps: vec![
                passes("unlisted", c.segment(0, &a), Counter::PassNoMatch),
                resets("blocked", c.segment(a.len(), &b)),
            ],
        },
        Script {
            desc: "the second query's start in the first's segment".into(),
            steps: vec![
                passes("unlisted and 5 bytes", c.segment(0, &both[..a.len() + 5]), Counter::DnsTcpPartial),
                resets("the blocked one's rest", c.segment(a.len() + 5, &both[a.len() + 5..])),
            ],
        },
        Script {
            desc: "the first query's end in the second's segment".into(),
            steps: vec![
                passes("most of the unlisted one", c.segment(0, &both[..a.len() - 3]), Counter::DnsTcpPartial),
                resets("its end and the blocked one", c.segment(a.len() - 3, &both[a.len() - 3..])),
            ],
        },
    ];
    for name in [BLOCKED, UNLISTED] {
        let long = long_query(name, 600);
        let c = conn(if name == BLOCKED { 30002 } else { 30003 });
        let mut steps = vec![judged("its first 300 bytes: the head", name, c.segment(0, &long[..300]))];
        if name == UNLISTED {
            steps.push(passes("its rest, unread", c.segment(300, &long[300..]), Counter::DnsTcpRest));
            steps.push(resets("then a blocked query", c.segment(long.len(), &b)));
        }
        scripts.push(Script { desc: format!("{name}: a 600-byte query"), steps });
    }
    scripts.push(Script {
        desc: "a length below a DNS header".into(),
        steps: vec![unjudged(
            "length 11",
            conn(30005).segment(0, &[0, 11, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0]),
            Counter::TcpNotMessageStart,
        )],
    });
    // Two tail calls a message (to the DNS stage and back), within the
    // kernel's 33: a segment's first 16 messages are judged.
    let many = |n: usize, last: &[u8]| [vec![a.clone(); n - 1].concat(), last.to_vec()].concat();
    let c = conn(30004);
    scripts.push(Script {
        desc: "16 queries in one segment".into(),
        steps: vec![passes("16 unlisted", c.segment(0, &many(16, &a)), Counter::PassNoMatch)],
    });
    scripts.push(Script {
        desc: "16 queries in one segment, the last blocked".into(),
        steps: vec![resets("15 unlisted, 1 blocked", c.segment(0, &many(16, &b)))],
    });
    scripts.push(Script {
        desc: "17 queries in one segment: one past the tail calls".into(),
        steps: vec![unjudged("17 unlisted", c.segment(0, &many(17, &a)), Counter::TcpPipelined)],
    });
    scripts.push(Script {
        desc: "20 queries in one segment".into(),
        steps: vec![unjudged("20 unlisted", c.segment(0, &many(20, &a)), Counter::TcpPipelined)],
    });
    run(&mut h, &scripts);
}

/// Segments out of the stream's order: retransmissions, gaps, overlaps,
/// bytes before where the filter picked the connection up, segments far
/// from the stream (an off-path sender).
#[test]
fn segments_out_of_order() {
    let mut nw = harness();
    let (a, b) = (query(UNLISTED), query(BLOCKED));
    let c = conn(31001);
    let n = a.len();
    let scripts = vec![
        Script {
            desc: "a retransmission of a query passed".into(),
            steps: vec![
                passes("unlisted", c.segment(0, &a), Counter::PassNoMatch),
                passes("again", c.segment(0, &a), Counter::DnsTcpRetransmission),
                resets("then a blocked one", c.segment(n, &b)),
            ],
        },
        Script {
            desc: "a blocked query sent again is judged again".into(),
            steps: vec![resets("blocked", c.segment(0, &b)), resets("again", c.segment(0, &b))],
        },
        Script {
            desc: "a segment past a gap".into(),
            steps: vec![
                passes("unlisted", c.segment(0, &a), Counter::PassNoMatch),
                unjudged("an unlisted query 10 bytes on", c.segment(n + 10, &a), Counter::DnsTcpGap),
                resets("the stream in order: blocked", c.segment(n, &b)),
            ],
        },
        // The connection is picked up at the first segment seen, taken for
        // a message's start; what comes before it can never be judged, so
        // the server never gets a whole query.
        Script {
            desc: "the second half of a split query first".into(),
            steps: vec![
                passes("second half (picked up there)", c.segment(20, &b[20..]), Counter::DnsTcpPartial),
                unjudged("first half", c.segment(0, &b[..20]), Counter::DnsTcpBeforeStart),
                passes("second half again", c.segment(20, &b[20..]), Counter::DnsTcpRetransmission),
                unjudged("first half again", c.segment(0, &b[..20]), Counter::DnsTcpBeforeStart),
            ],
        },
        Script {
            desc: "a segment overlapping the query passed, its new bytes a blocked query".into(),
            steps: vec![
                passes("unlisted", c.segment(0, &a), Counter::PassNoMatch),
                resets("its last 5 bytes and a blocked one", c.segment(n - 5, &[&a[n - 5..], &b[..]].concat())),
            ],
        },
        Script {
            desc: "a segment overlapping with other bytes where it overlaps".into(),
            steps: vec![
                passes("unlisted", c.segment(0, &a), Counter::PassNoMatch),
                // The server keeps the bytes it has; what is new is the
                // blocked query.
                resets("5 other bytes and a blocked one", c.segment(n - 5, &[&[0xff; 5][..], &b[..]].concat())),
            ],
        },
        Script {
            desc: "picked up mid-stream, then bytes before that".into(),
            steps: vec![
                passes("a query at stream byte 1000", c.segment(1000, &a), Counter::PassNoMatch),
                resets("the next: blocked", c.segment(1000 + n, &b)),
                unjudged(
                    "bytes before byte 1000",
                    c.segment(990, &[&[0; 10][..], &a[..]].concat()),
                    Counter::DnsTcpBeforeStart,
                ),
            ],
        },
        Script {
            desc: "picked up mid-stream at a blocked query".into(),
            steps: vec![resets("blocked at stream byte 5000", c.segment(5000, &b))],
        },
        Script {
            desc: "an off-path segment far from the stream changes nothing".into(),
            steps: vec![
                passes("the first 20 bytes of a blocked query", c.segment(0, &b[..20]), Counter::DnsTcpPartial),
                unjudged(
                    "an unlisted query's end 2^21 bytes on",
                    c.segment(20 + (1 << 21), &a[20..]),
                    Counter::DnsTcpNotInWindow,
                ),
                resets("the blocked query's rest", c.segment(20, &b[20..])),
            ],
        },
    ];
    run(&mut nw, &scripts);
}

/// Segments the server never takes in (TTL running out at this router, no
/// ACK) and urgent data change nothing and decide nothing.
#[test]
fn decoys_change_nothing() {
    let mut nw = harness();
    let (a, b) = (query(UNLISTED), query(BLOCKED));
    // Same length: the decoy's bytes could complete the blocked query's head.
    assert_eq!(a.len(), b.len());
    let c = conn(32001);
    let cut = 14 + 4;
    // Decoys Linux discards for their headers, each carrying the rest of the
    // query with the other name.
    let rest = |seg: &Flow| seg.segment(cut, &a[cut..]);
    let bad_ip_checksum = {
        let mut f = rest(&c);
        f[14 + 10] ^= 0x5a;
        f
    };
    let with_options = |options: &[u8]| {
        segment_at(&c, c.seq_at(cut), |t| t.set_options_raw(options).expect("whole words of options"), &a[cut..])
    };
    let rst_with_data = segment_at(&c, c.seq_at(cut), |t| (t.rst, t.psh) = (true, false), &a[cut..]);
    let signed = |kind: u8| {
        let mut opt = vec![kind, 18];
        opt.resize(18, 0x42);
        opt.extend_from_slice(&[1, 1]);
        with_options(&opt)
    };
    // Loose source routing through 10.0.0.1 (RFC 791 §3.1), then an end.
    let routed = Flow::new(Spec::udp4().v4_options(&[0x83, 7, 4, 10, 0, 0, 1, 0])).dport(53).sport(32001);
    let discarded = |what: &str, decoy: Vec<u8>| Script {
        desc: format!("a decoy {what}"),
        steps: vec![
            passes("the blocked query's first bytes", c.segment(0, &b[..cut]), Counter::DnsTcpPartial),
            unjudged(format!("decoy, {what}"), decoy, Counter::TcpDiscarded),
            resets("the real rest", c.segment(cut, &b[cut..])),
        ],
    };
    let malformed_option = with_options(&[0xfd, 0, 1, 1]);
    let cipso = Flow::new(Spec::udp4().v4_options(&[0x86, 6, 0, 0, 0, 1, 0, 0])).dport(53).sport(32001);
    let mut scripts = vec![
        discarded("with a malformed TCP option (length 0)", malformed_option),
        discarded("with a CIPSO IPv4 option", rest(&cipso)),
        discarded("with a wrong IPv4 header checksum", bad_ip_checksum),
        discarded("RST with data", rst_with_data),
        discarded("with a TCP MD5 signature option", signed(19)),
        discarded("with a TCP-AO option", signed(29)),
        discarded("with IPv4 loose source routing", rest(&routed)),
    ];
    scripts.extend([
        Script {
            desc: "a TTL-1 decoy completing the query with another name".into(),
            steps: vec![
                passes("the blocked query's first bytes", c.segment(0, &b[..cut]), Counter::DnsTcpPartial),
                unjudged("decoy, TTL 1", with_ttl(c.segment(cut, &a[cut..]), 1), Counter::TcpTtlExpiring),
                resets("the real rest", c.segment(cut, &b[cut..])),
            ],
        },
        Script {
            desc: "a decoy without ACK".into(),
            steps: vec![
                passes("the blocked query's first bytes", c.segment(0, &b[..cut]), Counter::DnsTcpPartial),
                unjudged("decoy, no ACK", psh_only(c.segment(cut, &a[cut..])), Counter::TcpNoAck),
                resets("the real rest", c.segment(cut, &b[cut..])),
            ],
        },
        Script {
            desc: "a decoy with a wrong TCP checksum".into(),
            steps: vec![
                passes("the blocked query's first bytes", c.segment(0, &b[..cut]), Counter::DnsTcpPartial),
                unjudged("decoy, checksum wrong", bad_checksum(c.segment(cut, &a[cut..])), Counter::TcpBadChecksum),
                resets("the real rest", c.segment(cut, &b[cut..])),
            ],
        },
        Script {
            desc: "a first segment with a wrong TCP checksum starts nothing".into(),
            steps: vec![
                unjudged("an unlisted query, checksum wrong", bad_checksum(c.segment(0, &a)), Counter::TcpBadChecksum),
                resets("the real first segment, blocked", c.segment(0, &b)),
            ],
        },
        Script {
            desc: "urgent data".into(),
            steps: vec![unjudged("a query with URG", with_flags(c.segment(0, &a), 0x20), Counter::TcpUrgent)],
        },
    ]);
    run(&mut nw, &scripts);
}

/// A SYN carrying data (TCP Fast Open): not judged (the server takes the
/// data only with a valid cookie, which the filter cannot see). The stream
/// is anchored at the SYN all the same: the client sends the SYN again
/// without data (RFC 7413 §4.2.2) and its queries after the handshake are
/// judged from the stream's first byte.
#[test]
fn fast_open() {
    let mut nw = harness();
    let (unlisted, blocked) = (query(UNLISTED), query(BLOCKED));
    let c = conn(33001);
    let n = unlisted.len();
    let scripts = vec![
        Script {
            desc: "a blocked query in the SYN".into(),
            steps: vec![
                unjudged("SYN+data", syn_with(&c, &blocked), Counter::DnsTcpSynData),
                passes("the SYN again, without data", c.syn(), Counter::TcpSyn),
                resets("the query after the handshake", c.segment(0, &blocked)),
            ],
        },
        Script {
            desc: "an unlisted query in the SYN, then a blocked one in its place".into(),
            steps: vec![
                unjudged("SYN+data", syn_with(&c, &unlisted), Counter::DnsTcpSynData),
                resets("the first data segment", c.segment(0, &blocked)),
            ],
        },
        Script {
            desc: "an unlisted query in the SYN, then a query as if the server took it".into(),
            steps: vec![
                unjudged("SYN+data", syn_with(&c, &unlisted), Counter::DnsTcpSynData),
                unjudged("the next query", c.segment(n, &blocked), Counter::DnsTcpGap),
            ],
        },
    ];
    run(&mut nw, &scripts);
}

/// The stream is anchored at the connection's SYN: nothing comes before its
/// first byte. A first segment reaching before it is read from there, as
/// the receiver reads it (it drops the bytes before); another SYN on the
/// same addresses and ports within the stream's window (a new connection
/// reusing them, its number chosen among the bytes taken in) leaves no
/// segment there judged.
#[test]
fn streams_anchored_at_the_syn() {
    let mut nw = harness();
    let (unlisted, blocked) = (query(UNLISTED), query(BLOCKED));
    let c = conn(34001);
    let n = unlisted.len();
    // Data from `k` bytes before the stream's first byte.
    let early = |k: u32, payload: &[u8]| segment_at(&c, c.seq_at(0).wrapping_sub(k), |_| (), payload);
    // An unlisted query's first 20 bytes: a length prefix and a question
    // a filter reading from the segment's start would judge instead.
    let decoy_start = &unlisted[..20];
    let long = long_query(UNLISTED, 600);
    let scripts = vec![
        Script {
            desc: "a first segment reaching 20 bytes before the first byte".into(),
            steps: vec![
                passes("SYN", c.syn(), Counter::TcpSyn),
                resets("20 other bytes, then a blocked query", early(20, &[decoy_start, &blocked[..]].concat())),
            ],
        },
        Script {
            desc: "the same, the query unlisted".into(),
            steps: vec![
                passes("SYN", c.syn(), Counter::TcpSyn),
                passes(
                    "20 other bytes, then an unlisted query",
                    early(20, &[decoy_start, &unlisted[..]].concat()),
                    Counter::PassNoMatch,
                ),
                resets("then a blocked one", c.segment(n, &blocked)),
            ],
        },
        Script {
            desc: "bytes only before the first byte".into(),
            steps: vec![
                passes("SYN", c.syn(), Counter::TcpSyn),
                unjudged("20 bytes before it", early(20, decoy_start), Counter::DnsTcpNotInWindow),
                resets("the first data", c.segment(0, &blocked)),
            ],
        },
        Script {
            desc: "the first data past a gap".into(),
            steps: vec![
                passes("SYN", c.syn(), Counter::TcpSyn),
                unjudged("an unlisted query 5 bytes on", c.segment(5, &unlisted), Counter::DnsTcpGap),
                resets("the first data", c.segment(0, &blocked)),
            ],
        },
        Script {
            desc: "a new connection with the same number after a long query".into(),
            steps: vec![
                passes("SYN", c.syn(), Counter::TcpSyn),
                passes("a 600-byte unlisted query", c.segment(0, &long), Counter::PassNoMatch),
                passes("SYN, the same number", c.syn(), Counter::TcpSyn),
                unjudged("a blocked query at the first byte", c.segment(0, &blocked), Counter::DnsTcpReused),
                unjudged(
                    "an unlisted one after the old stream",
                    c.segment(long.len(), &unlisted),
                    Counter::DnsTcpReused,
                ),
            ],
        },
        Script {
            desc: "the connection's own SYN repeated before any data".into(),
            steps: vec![
                passes("SYN", c.syn(), Counter::TcpSyn),
                passes("SYN again", c.syn(), Counter::TcpSyn),
                resets("the first data", c.segment(0, &blocked)),
            ],
        },
        Script {
            desc: "a segment forged before the client's SYN holds no place".into(),
            steps: vec![
                passes("forged: an unlisted query, picked up", c.segment(1 << 30, &unlisted), Counter::PassNoMatch),
                passes("SYN", c.syn(), Counter::TcpSyn),
                resets("the client's first data, blocked", c.segment(0, &blocked)),
                resets("again", c.segment(0, &blocked)),
            ],
        },
        Script {
            desc: "a stream picked up and followed is not moved by a SYN".into(),
            steps: vec![
                passes("picked up: an unlisted query", c.segment(1 << 30, &unlisted), Counter::PassNoMatch),
                passes("its next query", c.segment((1 << 30) + n, &unlisted), Counter::PassNoMatch),
                passes("a SYN far from it", c.syn(), Counter::TcpSyn),
                unjudged("data after that SYN", c.segment(0, &unlisted), Counter::DnsTcpNotInWindow),
                resets("the stream goes on, judged", c.segment((1 << 30) + 2 * n, &blocked)),
            ],
        },
        Script {
            desc: "a segment forged ahead of the client's first, then its own".into(),
            steps: vec![
                passes("SYN", c.syn(), Counter::TcpSyn),
                unjudged("forged, far from the SYN", c.segment(1 << 30, &unlisted), Counter::DnsTcpNotInWindow),
                passes("the client's first data", c.segment(0, &unlisted), Counter::PassNoMatch),
            ],
        },
    ];
    run(&mut nw, &scripts);
}

/// A full stream table: a new connection is not judged (dropped by
/// default); connections it holds go on.
#[test]
fn a_full_stream_table() {
    let h = harness();
    h.filter.forget_dns_streams().expect("forget streams");
    let a = query(UNLISTED);
    let held = conn(1000);
    assert_eq!(h.run_in_stream(&held.segment(0, &a[..5])).outcome, Counter::DnsTcpPartial);
    let entries = dns_stream::ENTRIES as u16;
    for i in 1..entries {
        let o = h.run_in_stream(&conn(1000 + i).segment(0, &a[..5]));
        assert_eq!(o.outcome, Counter::DnsTcpPartial, "connection {i}");
    }
    assert_eq!(h.filter.dns_stream_count(), usize::from(entries));
    let o = h.run_in_stream(&conn(1000 + entries).segment(0, &a));
    assert_eq!((o.action, o.outcome), (XDP_DROP, Counter::DnsStreamTableFull));
    let o = h.run_in_stream(&held.segment(5, &a[5..]));
    assert_eq!((o.action, o.outcome), (XDP_PASS, Counter::PassNoMatch), "a held connection goes on");
    assert_eq!(h.filter.forget_dns_streams().expect("forget"), usize::from(entries));
}
