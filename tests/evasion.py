"""Evasion packets for namewall's namespace tests and lab, built with scapy.

Run inside the client namespace (`ip netns exec NS /usr/bin/python3
evasion.py CMD ...`). Each command makes one bounded attempt and prints one
JSON object on stdout saying what the client saw:

  udpfrag   a DNS query over UDP sent as IP fragments, the first holding
            the first --split bytes of the UDP datagram (--order reversed:
            the later fragments go first); waits for an answer
  multiq    a DNS query over UDP with two questions; waits for an answer
  dnstcp    a DNS query over TCP (TCP_NODELAY) written in two sends, cut
            after the length prefix (--cut prefix) or inside the name
            (--cut name); waits for an answer
  tls       a TLS ClientHello (python's ssl module, in memory) written over
            a plain socket; with --urgent, one extra byte is sent with
            MSG_OOB in the middle of the server name: Linux marks it urgent
            and a receiver without SO_OOBINLINE (nginx) drops it from the
            stream (RFC 9293 §3.8.5), so the server reads the real name
            while a filter reading the segments sees one byte more. Then
            the handshake goes on and a GET is sent. With --decoy, the
            ClientHello is sent in two writes cut inside the name, and
            between them a decoy segment (raw, scapy) carrying the rest with
            the name's remaining letters changed and a wrong TCP checksum:
            the server discards it, a filter that reads it sees another name
  synflood  --count SYNs to --dst --port from random addresses of --subnet
            (never .1 and .2: the router and the client) and random ports,
            spread over --seconds

Every loop is bounded in count and time. Nothing is sent outside the
namespace's own links.
"""

import argparse
import json
import random
import select
import socket
import ssl
import struct
import sys
import time

import threading

from scapy.all import (
    DNS,
    DNSQR,
    DNSRROPT,
    EDNS0TLV,
    IP,
    TCP,
    UDP,
    AsyncSniffer,
    Ether,
    IPv6,
    IPv6ExtHdrFragment,
    conf,
    raw,
    send,
)


def out(**kw):
    print(json.dumps(kw))
    sys.exit(0)


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def query(name, qid, pad=0, questions=None):
    """A DNS query (RD set) for NAME's A record, with an EDNS Padding option
    (RFC 7830) of PAD bytes when PAD > 0."""
    qd = DNSQR(qname=name, qtype="A")
    for extra in questions or []:
        qd = qd / DNSQR(qname=extra, qtype="A")
    q = DNS(id=qid, rd=1, qd=qd, qdcount=1 + len(questions or []))
    if pad:
        q.ar = DNSRROPT(rclass=1232, rdlen=None, rdata=[EDNS0TLV(optcode=12, optlen=pad, optdata=b"\0" * pad)])
        q.arcount = 1
    return raw(q)


def answer(sock, qid, timeout):
    """The rcode and A records of the first answer to QID within TIMEOUT, or None."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        data = sock.recv(4096)
        if sock.type == socket.SOCK_STREAM:
            data = data[2:]
        d = DNS(data)
        if d.id != qid:
            continue
        addrs = [d.an[i].rdata for i in range(d.ancount)] if d.ancount else []
        return {"rcode": d.rcode, "aa": bool(d.aa), "answers": [str(a) for a in addrs]}
    return None


def stream(dst, timeout):
    """A TCP socket with Nagle off that resets on close (SO_LINGER 0), so
    no orphan keeps retransmitting after the helper exits."""
    sock = socket.socket(family(dst), socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.settimeout(timeout)
    return sock


def l2_send(iface, frames):
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((iface, 0))
        for f in frames:
            s.send(f)


def udpfrag(a):
    qid = random.randrange(1, 0xFFFF)
    fam = family(a.dst)
    sock = socket.socket(fam, socket.SOCK_DGRAM)
    sock.bind((a.src, 0))
    sport = sock.getsockname()[1]
    msg = query(a.name, qid, a.pad)
    ip = (IPv6 if fam == socket.AF_INET6 else IP)(src=a.src, dst=a.dst)
    # The UDP datagram with its checksum over the whole payload, then cut.
    dgram = raw(ip / UDP(sport=sport, dport=53) / msg)[len(raw(ip)) :]
    assert a.split % 8 == 0 and 8 <= a.split < len(dgram), "fragment data comes in 8-byte units"
    cuts = [0, a.split] + list(range(a.split + a.rest, len(dgram), a.rest)) + [len(dgram)]
    frag_id = random.randrange(1, 0xFFFF)
    frames = []
    for start, end in zip(cuts, cuts[1:]):
        more = end < len(dgram)
        if fam == socket.AF_INET6:
            pkt = ip / IPv6ExtHdrFragment(nh=17, offset=start // 8, m=int(more), id=frag_id)
        else:
            pkt = IP(src=a.src, dst=a.dst, proto=17, id=frag_id, flags="MF" if more else 0, frag=start // 8)
        frames.append(raw(Ether(dst=a.gw_mac) / pkt / dgram[start:end]))
    if a.order == "reversed":
        frames = frames[1:] + frames[:1]
    l2_send(a.iface, frames)
    first = dgram[8 + 12 : a.split]
    out(
        fragments=len(frames),
        qname_in_first=first.decode("latin-1"),
        answer=answer(sock, qid, a.timeout),
    )


def multiq(a):
    qid = random.randrange(1, 0xFFFF)
    sock = socket.socket(family(a.dst), socket.SOCK_DGRAM)
    sock.connect((a.dst, 53))
    sock.send(query(a.name, qid, questions=[a.second]))
    out(answer=answer(sock, qid, a.timeout))


def dnstcp(a):
    qid = random.randrange(1, 0xFFFF)
    msg = query(a.name, qid)
    msg = struct.pack("!H", len(msg)) + msg
    cut = 2 if a.cut == "prefix" else 2 + 12 + 1 + a.name.index(".") + 2
    sock = stream(a.dst, a.timeout)
    try:
        sock.connect((a.dst, 53))
        sock.send(msg[:cut])
        # Let the first segment be acknowledged (at most 1 s: a filter may
        # drop it), so the second send leaves in a segment of its own.
        wait_acked(sock, min(a.timeout, 1))
        sock.send(msg[cut:])
        result = {"cut": cut, "answer": answer(sock, qid, a.timeout), "error": None}
    except OSError as e:
        result = {"cut": cut, "answer": None, "error": type(e).__name__}
    sock.close()
    out(**result)


def unacked(sock):
    # struct tcp_info: tcpi_unacked is the 5th u32 after 8 u8 fields.
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("I", info, 8 + 4 * 4)[0]


def wait_acked(sock, timeout):
    """Polls until everything sent is acknowledged, up to TIMEOUT; a
    dropped segment stays unacknowledged and the caller goes on anyway."""
    deadline = time.monotonic() + timeout
    while unacked(sock) and time.monotonic() < deadline:
        select.select([], [], [], 0.01)


def tls(a):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, outg, server_hostname=a.name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outg.read()
    at = hello.find(a.name.encode()) + len(a.name) // 2
    sock = stream(a.dst, a.timeout)
    deadline = time.monotonic() + a.timeout
    step = "connect"
    try:
        sock.connect((a.dst, a.port))
        step = "clienthello"
        if a.urgent:
            sock.send(hello[:at])
            wait_acked(sock, a.timeout)
            sock.send(b"X", socket.MSG_OOB)
            sock.send(hello[at:])
        elif a.decoy:
            send_with_decoy(sock, a, hello, at)
        else:
            sock.send(hello)
        step = "handshake"
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            if data := outg.read():
                sock.sendall(data)
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            data = sock.recv(16384)
            if not data:
                raise ConnectionAbortedError("closed by the server")
            inc.write(data)
        if data := outg.read():
            sock.sendall(data)
        step = "request"
        tls.write(f"GET / HTTP/1.1\r\nHost: {a.name}\r\nConnection: close\r\n\r\n".encode())
        sock.sendall(outg.read())
        body = b""
        while time.monotonic() < deadline:
            try:
                body += tls.read(16384)
                continue
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            data = sock.recv(16384)
            if not data:
                break
            inc.write(data)
        out(handshake=True, response=body.decode("latin-1"), error=None, hello_bytes=len(hello), cut=at)
    except (OSError, ssl.SSLError) as e:
        out(handshake=False, response="", error=f"{step}: {type(e).__name__}: {e}", hello_bytes=len(hello), cut=at)


def send_with_decoy(sock, a, hello, at):
    """Sends HELLO in two writes cut at AT, and between them a decoy: the
    rest with the name's remaining letters made x, in a raw segment at the
    socket's next sequence number with a wrong TCP checksum. The socket's
    numbers are read off its first segment, sniffed as it leaves."""
    ready = threading.Event()
    sport = sock.getsockname()[1]
    sniffer = AsyncSniffer(
        iface=conf.route6.route(a.dst)[0] if ":" in a.dst else conf.route.route(a.dst)[0],
        lfilter=lambda p: TCP in p and p[TCP].sport == sport and p[TCP].dport == a.port and len(p[TCP].payload) > 0,
        started_callback=ready.set,
        store=True,
    )
    sniffer.start()
    ready.wait(a.timeout)
    sock.send(hello[:at])
    wait_acked(sock, a.timeout)
    sent = sniffer.stop()
    first = sent[-1][TCP]
    seq, ack = first.seq + len(first.payload), first.ack
    rest = hello[at:]
    tail = a.name[len(a.name) // 2 :]
    decoy = "".join(c if c == "." else "x" for c in tail).encode() + rest[len(tail) :]
    ip = IPv6(dst=a.dst) if ":" in a.dst else IP(dst=a.dst)
    seg = ip / TCP(sport=sport, dport=a.port, flags="PA", seq=seq, ack=ack, window=first.window) / decoy
    right = seg.__class__(raw(seg))[TCP].chksum
    seg[TCP].chksum = right ^ 0x5A5A
    send(seg, verbose=False)
    sock.send(rest)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def synflood(a):
    """scapy builds one frame; the loop patches source address, port and
    sequence number and recomputes both checksums (scapy itself builds
    well under 1000 frames a second here)."""
    template = bytearray(
        raw(Ether(dst=a.gw_mac) / IP(src="0.0.0.0", dst=a.dst, ttl=64) / TCP(dport=a.port, flags="S", window=64240))
    )
    ip_at, tcp_at = 14, 34
    dst = socket.inet_aton(a.dst)
    prefix = a.subnet.rsplit(".", 1)[0]
    sent, start = 0, time.monotonic()
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((a.iface, 0))
        while sent < a.count and (elapsed := time.monotonic() - start) < a.seconds:
            # Spread over the time given: never ahead of count * elapsed / seconds.
            if sent > a.count * elapsed / a.seconds + 50:
                select.select([], [], [], 0.002)
                continue
            f = template
            src = socket.inet_aton(f"{prefix}.{random.randrange(3, 255)}")
            f[ip_at + 12 : ip_at + 16] = src
            f[ip_at + 10 : ip_at + 12] = b"\0\0"
            f[ip_at + 10 : ip_at + 12] = struct.pack("!H", checksum(bytes(f[ip_at:tcp_at])))
            struct.pack_into("!HHI", f, tcp_at, random.randrange(1024, 65536), a.port, random.getrandbits(32))
            f[tcp_at + 16 : tcp_at + 18] = b"\0\0"
            seg = bytes(f[tcp_at:])
            pseudo = src + dst + struct.pack("!BBH", 0, 6, len(seg))
            f[tcp_at + 16 : tcp_at + 18] = struct.pack("!H", checksum(pseudo + seg))
            s.send(f)
            sent += 1
    out(sent=sent, seconds=round(time.monotonic() - start, 3))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("udpfrag")
    c.add_argument("--src", required=True)
    c.add_argument("--dst", required=True)
    c.add_argument("--gw-mac", required=True)
    c.add_argument("--iface", default="c0")
    c.add_argument("--name", required=True)
    c.add_argument("--split", type=int, required=True, help="UDP datagram bytes in the first fragment")
    c.add_argument("--rest", type=int, default=256, help="bytes in each later fragment")
    c.add_argument("--pad", type=int, default=0, help="EDNS padding bytes")
    c.add_argument("--order", choices=["first", "reversed"], default="first")
    c.add_argument("--timeout", type=float, default=2)
    c = sub.add_parser("multiq")
    c.add_argument("--dst", required=True)
    c.add_argument("--name", required=True)
    c.add_argument("--second", required=True)
    c.add_argument("--timeout", type=float, default=2)
    c = sub.add_parser("dnstcp")
    c.add_argument("--dst", required=True)
    c.add_argument("--name", required=True)
    c.add_argument("--cut", choices=["prefix", "name"], required=True)
    c.add_argument("--timeout", type=float, default=3)
    c = sub.add_parser("tls")
    c.add_argument("--dst", required=True)
    c.add_argument("--port", type=int, default=443)
    c.add_argument("--name", required=True)
    c.add_argument("--urgent", action="store_true")
    c.add_argument("--decoy", action="store_true")
    c.add_argument("--timeout", type=float, default=3)
    c = sub.add_parser("synflood")
    c.add_argument("--dst", required=True)
    c.add_argument("--port", type=int, default=443)
    c.add_argument("--gw-mac", required=True)
    c.add_argument("--iface", default="c0")
    c.add_argument("--subnet", required=True, help="a /24 such as 10.11.0.0")
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--seconds", type=float, required=True)
    a = p.parse_args()
    {"udpfrag": udpfrag, "multiq": multiq, "dnstcp": dnstcp, "tls": tls, "synflood": synflood}[a.cmd](a)


if __name__ == "__main__":
    main()
