//! The TLS fixtures themselves: rustls `ClientHello`s, record-layer
//! refragmentation, TCP flows and the RST parser (no root needed), then
//! the namespace lab's TLS server and clients without namewall (root).

use std::time::Duration;

use etherparse::PacketBuilder;
use namewall_tests::{
    netns::{Topology, addr},
    packet::{self, Spec, V6Ext, Vlan},
    tls::{self, Flow, HelloKind, flags},
    tlslab,
};

const KINDS: [HelloKind; 4] = [HelloKind::Small, HelloKind::PostQuantum, HelloKind::Ech, HelloKind::NoSni];

#[test]
fn client_hello_sizes_and_extensions() {
    let mut seen = Vec::new();
    for kind in KINDS {
        for sni in [Some("www.example.com"), None] {
            let h = tls::client_hello(sni, kind);
            seen.push(format!("{kind:?}/{}: {}", sni.unwrap_or("-"), h.len()));
            assert!(tls::whole_records(&h), "{kind:?}: whole handshake records");
            match kind {
                HelloKind::Small | HelloKind::NoSni => assert!((200..600).contains(&h.len()), "{kind:?}: {}", h.len()),
                HelloKind::PostQuantum => assert!(h.len() > 1500, "{kind:?}: {}", h.len()),
                HelloKind::Ech => assert!((400..1500).contains(&h.len()), "{kind:?}: {}", h.len()),
            }
            assert_eq!(
                tls::has_extension(&h, tls::EXT_ECH),
                matches!(kind, HelloKind::Ech | HelloKind::PostQuantum),
                "{kind:?}: {:04x?}",
                tls::extension_types(&h)
            );
            let want = if kind == HelloKind::NoSni { None } else { sni };
            assert_eq!(tls::server_name(&h).as_deref(), want, "{kind:?}");
            assert_eq!(tls::has_extension(&h, tls::EXT_SERVER_NAME), want.is_some(), "{kind:?}");
            assert_eq!(tls::find(&h, b"www.example.com").is_some(), want.is_some(), "{kind:?}");
            assert_eq!(tls::acceptor_sni(&h).unwrap().as_deref(), want, "{kind:?}: rustls's server reads it back");
        }
    }
    eprintln!("ClientHello sizes: {}", seen.join(", "));
}

#[test]
fn client_hellos_share_nothing() {
    let a = tls::client_hello(Some("a.example"), HelloKind::Small);
    let b = tls::client_hello(Some("a.example"), HelloKind::Small);
    assert_ne!(a, b, "fresh random, key share and session id every time");
    // No session resumption from an earlier call.
    assert!(!tls::has_extension(&b, 41), "no pre_shared_key");
}

#[test]
fn refragment_round_trips() {
    let name = "deep.sub.refragment.example";
    for kind in KINDS {
        let hello = tls::client_hello(Some(name), kind);
        let original = tls::handshake_bytes(&hello);
        let len = original.len();
        let sni_at = tls::find(&original, name.as_bytes()).unwrap_or(len / 2);
        let ones = vec![1; 64];
        for sizes in [
            vec![],
            vec![1],
            vec![4],
            vec![5, 5],
            vec![100, 200, 300],
            vec![sni_at + 3],
            vec![len / 2],
            vec![len - 1],
            vec![len],
            vec![len + 10],
            ones,
            vec![512; 8],
        ] {
            let records = tls::refragment(&hello, &sizes);
            assert_eq!(tls::handshake_bytes(&records), original, "{kind:?} {sizes:?}");
            let lens: Vec<usize> = tls::records(&records).iter().map(|r| r.fragment.len()).collect();
            assert_eq!(lens.iter().sum::<usize>(), len);
            for (i, l) in lens.iter().enumerate() {
                if let Some(&want) = sizes.get(i) {
                    assert_eq!(*l, want.min(len - lens[..i].iter().sum::<usize>()), "{kind:?} {sizes:?}: {lens:?}");
                }
            }
            assert!(lens.len() <= sizes.len() + 1, "{sizes:?}: {lens:?}");
            let want = (kind != HelloKind::NoSni).then_some(name);
            assert_eq!(tls::acceptor_sni(&records).unwrap().as_deref(), want, "{kind:?} {sizes:?}");
        }
        // Every handshake byte in a record of its own.
        let singles = tls::refragment(&hello, &vec![1; len]);
        assert_eq!(tls::records(&singles).len(), len);
        assert_eq!(singles.len(), len * (tls::RECORD_HEADER_LEN + 1));
        assert_eq!(tls::handshake_bytes(&singles), original);
        // Back into one record: the bytes rustls wrote.
        assert_eq!(tls::refragment(&singles, &[]), hello, "{kind:?}");
    }
    // A forbidden empty record on purpose, and the first record's version kept.
    let hello = tls::client_hello(Some(name), HelloKind::Small);
    let r = tls::refragment(&hello, &[0, 10]);
    let recs = tls::records(&r);
    assert_eq!(recs[0].fragment.len(), 0);
    assert_eq!(recs[1].fragment.len(), 10);
    assert!(recs.iter().all(|x| x.version == 0x0301 && x.content_type == tls::CONTENT_HANDSHAKE));
}

fn specs() -> Vec<Spec> {
    vec![
        Spec::udp4(),
        Spec::udp4().v4_options(&[1, 1, 1, 0]),
        Spec::udp4().v4_options(&[0x44, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        Spec::udp4().vlan(Vlan::Single(7)),
        Spec::udp4().vlan(Vlan::Double(100, 200)).v4_options(&[1, 1, 1, 0]),
        Spec::udp6(),
        Spec::udp6().v6_ext(V6Ext::HopByHop),
        Spec::udp6().v6_ext(V6Ext::DestOpts),
        Spec::udp6().v6_ext(V6Ext::Routing),
        Spec::udp6().v6_ext(V6Ext::All).vlan(Vlan::Single(4094)),
        Spec::udp6().v6_ext(V6Ext::All).vlan(Vlan::Double(1, 2)),
    ]
}

#[test]
fn flow_frames_match_packet_rs_and_carry_the_stream() {
    let stream = tls::client_hello(Some("segments.example"), HelloKind::PostQuantum);
    for spec in specs() {
        for dport in [443, 8443, 53, 1] {
            let spec = spec.clone().tcp().dport(dport);
            // Same headers, bytes and checksums as packet.rs writes (seq 1000, ack 2000).
            let plain = Flow::new(spec.clone()).isns(999, 1999).without_timestamps();
            assert_eq!(plain.segment(0, b"hello"), spec.build(b"hello"), "{spec:?}");

            for flow in [Flow::new(spec.clone()), Flow::new(spec.clone()).isns(u32::MAX - 700, 7)] {
                let syn = tls::parse_tcp(&flow.syn()).unwrap();
                assert_eq!((syn.flags, syn.seq, syn.payload_len), (flags::SYN, flow.client_isn, 0), "{spec:?}");
                assert_eq!(syn.tcp_header_len, 40, "MSS, SACK permitted, timestamps, window scale");
                let ack = tls::parse_tcp(&flow.ack()).unwrap();
                assert_eq!((ack.flags, ack.seq, ack.ack), (flags::ACK, flow.seq_at(0), flow.server_seq()));
                let fin = tls::parse_tcp(&flow.fin_at(stream.len())).unwrap();
                assert_eq!((fin.flags, fin.seq), (flags::FIN | flags::ACK, flow.seq_at(stream.len())));

                let cuts = [1, 700, 1448, 1449];
                let frames = flow.segments(&stream, &cuts);
                assert_eq!(frames.len(), cuts.len() + 1);
                let mut joined = Vec::new();
                let mut next = flow.seq_at(0);
                for f in &frames {
                    let s = tls::parse_tcp(f).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
                    assert_eq!(s.seq, next, "{spec:?}: consecutive sequence numbers");
                    assert_eq!(s.ack, flow.server_seq());
                    assert_eq!(s.flags, flags::PSH | flags::ACK);
                    assert_eq!(s.tcp_header_len, 32, "NOP, NOP, timestamps");
                    assert_eq!((s.sport, s.dport, s.vlan_ids.clone()), (40000, dport, spec.vlan_ids()));
                    assert_eq!((s.src, s.dst), (flow.client_ip(), flow.server_ip()));
                    assert_eq!((s.src_mac, s.dst_mac, s.trailing), (packet::CLIENT_MAC, packet::SERVER_MAC, 0));
                    next = next.wrapping_add(s.payload_len as u32);
                    joined.extend_from_slice(&s.payload);
                }
                assert_eq!(joined, stream, "{spec:?}");
                assert_eq!(frames[2], flow.segment(700, &stream[700..1448]));
            }
        }
    }
}

/// A RST from the server back to `flow`'s client, as a program might write it.
fn rst_for(flow: &Flow, vlan: Vlan) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(flow.server_mac(), flow.client_mac());
    let ip = match (flow.server_ip(), flow.client_ip()) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(c)) => etherparse::IpHeaders::Ipv4(
            etherparse::Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, s.octets(), c.octets()).unwrap(),
            etherparse::Ipv4Extensions::default(),
        ),
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(c)) => etherparse::IpHeaders::Ipv6(
            etherparse::Ipv6Header {
                next_header: etherparse::IpNumber::TCP,
                hop_limit: 64,
                source: s.octets(),
                destination: c.octets(),
                ..Default::default()
            },
            etherparse::Ipv6Extensions::default(),
        ),
        _ => unreachable!(),
    };
    let step = match vlan {
        Vlan::None => eth.ip(ip),
        Vlan::Single(a) => eth.single_vlan(a.try_into().unwrap()).ip(ip),
        Vlan::Double(a, b) => eth.double_vlan(a.try_into().unwrap(), b.try_into().unwrap()).ip(ip),
    };
    let b = step.tcp(flow.server_port(), flow.client_port(), flow.server_seq(), 0).rst().ack(flow.seq_at(1234));
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

#[test]
fn parse_rst_checks_what_a_stack_checks() {
    for spec in specs() {
        let flow = Flow::new(spec.clone().tcp().dport(443));
        let frame = rst_for(&flow, spec.vlan);
        let rst = tls::parse_rst(&frame).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
        flow.check_reply(&rst).unwrap();
        assert_eq!((rst.seq, rst.ack, rst.flags, rst.window), (flow.server_seq(), flow.seq_at(1234), 0x14, 0));
        assert_eq!((rst.payload_len, rst.trailing, rst.tcp_header_len), (0, 0, 20));
        assert!(rst.has(flags::RST) && rst.has(flags::ACK));

        // The client's own segment is no reply and has no RST.
        let seg = flow.segment(0, b"x");
        assert!(tls::parse_rst(&seg).unwrap_err().contains("RST flag not set"));
        assert!(flow.check_reply(&tls::parse_tcp(&seg).unwrap()).is_err());

        let l3 = spec.l3_offset();
        let l4 = frame.len() - 20;
        let mut bad = frame.clone();
        bad[l4 + 4] ^= 1; // seq, under the TCP checksum
        assert!(tls::parse_rst(&bad).unwrap_err().contains("TCP checksum"), "{spec:?}");
        if matches!(spec.ip, packet::Ip::V4 { .. }) {
            let mut bad = frame.clone();
            bad[l3 + 8] -= 1; // TTL, under the header checksum only
            assert!(tls::parse_rst(&bad).unwrap_err().contains("IPv4 header checksum"), "{spec:?}");
        }
        let mut padded = frame.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(tls::parse_rst(&padded).unwrap().trailing, 6);
        assert!(tls::parse_rst(&frame[..frame.len() - 1]).is_err(), "cut short");
    }
}

/// Real servers and clients through the router, no namewall: the lab
/// works, so a later failure with namewall is namewall's.
#[test]
fn lab_clients_load_the_page_through_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let t = Topology::new("tlsfx");
    let server = tlslab::start_tls_server(&t.server, dir.path(), 443, &["www.lab", "blocked.lab"]);
    let other = tlslab::start_tls_server(&t.server, dir.path(), 8443, &["www.lab"]);
    for addr in [addr::SERVER_V4, addr::SERVER_V6] {
        let r = tlslab::curl(&t.client, "https://www.lab/", addr);
        assert!(r.loaded(), "curl via {addr}: {r:?}");
        let r = tlslab::curl(&t.client, "https://www.lab:8443/x", addr);
        assert!(r.loaded(), "curl to 8443 via {addr}: {r:?}");
        for sni in [Some("www.lab"), None] {
            let r = tlslab::s_client(&t.client, addr, 443, sni);
            assert!(r.handshake && !r.reset && !r.timed_out, "s_client {sni:?} via {addr}:\n{}", r.output);
        }
        let r = tlslab::chromium(&t.client, "https://www.lab/", addr, dir.path());
        assert!(r.loaded, "chromium via {addr} ({:?}, {:?}):\n{}\n{}", r.status, r.elapsed, r.dom, r.stderr);
        assert_eq!(r.page_error(), Some(0), "{:#?}", r.requests);
    }
    // Nothing listens on 9443: refused at once, not a timeout.
    let r = tlslab::curl(&t.client, "https://www.lab:9443/", addr::SERVER_V4);
    assert_eq!((r.exit, r.http_status), (7, 0), "{r:?}");
    // curl and Chromium over both families; Chromium may add /favicon.ico
    // and background requests (mapped to the lab server too).
    let names = server.wait_served("www.lab", 4, Duration::from_secs(5));
    assert!(names.iter().all(|n| n != "blocked.lab"), "{names:?}");
    let names = other.wait_served("www.lab", 2, Duration::from_secs(5));
    assert_eq!(names, ["www.lab", "www.lab"], "{}", other.access_log());
}

/// The client's, router's and server's subnets, link-local and multicast.
fn in_lab(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(a) => matches!(a.octets(), [10, 11 | 12, 0, _]) || a.is_multicast(),
        std::net::IpAddr::V6(a) => {
            matches!(a.segments(), [0xfd11 | 0xfd12, 0, 0, 0, ..]) || a.is_multicast() || a.is_unicast_link_local()
        }
    }
}

/// With segmentation offloads off on the client, Chromium's post-quantum
/// `ClientHello` crosses the router as several MTU-sized segments.
#[test]
fn chromium_client_hello_spans_segments() {
    let dir = tempfile::tempdir().unwrap();
    let t = Topology::new("tlsseg");
    t.real_segments();
    let _server = tlslab::start_tls_server(&t.server, dir.path(), 443, &["www.lab"]);
    let mut seen = Vec::new();
    for attempt in 0..3 {
        let everything = tlslab::Capture::start(&t.client, "c0", "ip or ip6", dir.path());
        let on_client = tlslab::Capture::start(&t.client, "c0", "tcp port 443", dir.path());
        let on_router = tlslab::Capture::start(&t.router, "r0", "tcp port 443", dir.path());
        let r = tlslab::chromium(&t.client, "https://www.lab/", addr::SERVER_V4, dir.path());
        assert!(r.loaded, "attempt {attempt}: {:?}\n{}", r.status, r.stderr);
        let client = tlslab::first_flights(&on_client.stop(), 443);
        for f in everything.stop() {
            let dst = etherparse::SlicedPacket::from_ethernet(&f).ok().and_then(|p| match p.net? {
                etherparse::NetSlice::Ipv4(ip) => Some(std::net::IpAddr::from(ip.header().destination_addr())),
                etherparse::NetSlice::Ipv6(ip) => Some(ip.header().destination_addr().into()),
                etherparse::NetSlice::Arp(_) => None,
            });
            assert!(dst.is_none_or(in_lab), "Chromium sent to {dst:?}, outside the lab");
        }
        let router = tlslab::first_flights(&on_router.stop(), 443);
        assert_eq!(client, router, "the router receives what the client sends");
        let page = client.iter().find(|f| f.sni.as_deref() == Some("www.lab")).expect("the page's connection");
        assert!(page.segments.iter().all(|&s| s <= 1448), "MTU-sized: {page:?}");
        let split = page.segments.len() >= 2;
        seen.push(client);
        if split {
            break;
        }
    }
    eprintln!("Chromium first flights (client port, segment sizes, SNI) per attempt: {seen:?}");
    assert!(
        seen.iter().flatten().any(|f| f.sni.as_deref() == Some("www.lab") && f.segments.len() >= 2),
        "a ClientHello of two segments or more: {seen:?}"
    );
}

/// A server that resets after the `ClientHello`: each client's reading
/// says "reset", not "timeout" or "loaded".
#[test]
fn lab_clients_report_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let t = Topology::new("tlsrst");
    let server = tlslab::ResetServer::start(&t.server, 443);
    for addr in [addr::SERVER_V4, addr::SERVER_V6] {
        let r = tlslab::curl(&t.client, "https://www.lab/", addr);
        assert!(r.reset() && r.exit == 35 && r.http_status == 0, "curl via {addr}: {r:?}");
        let r = tlslab::s_client(&t.client, addr, 443, Some("www.lab"));
        assert!(r.reset && !r.handshake && !r.timed_out, "s_client via {addr}:\n{}", r.output);
        let r = tlslab::chromium(&t.client, "https://www.lab/", addr, dir.path());
        assert!(!r.loaded && r.reset(), "chromium via {addr}: {:?} {:?}\n{:#?}", r.status, r.elapsed, r.requests);
    }
    let reads = server.first_reads.lock().unwrap().clone();
    // curl's and s_client's ClientHellos (OpenSSL pads curl's to 512
    // bytes), then Chromium's, which it retries after each reset.
    assert!(reads.len() >= 6 && reads.iter().all(|&n| n > 0), "{reads:?}");
}
