//! The fuzz run's mutator: seed frames changed by byte-level and
//! structure-aware operations, deterministically from one `u64` seed.
//!
//! Randomness is rand's `StdRng` seeded with [`rand::SeedableRng::seed_from_u64`]:
//! the same seed, corpus and rand version give the same packets.
//!
//! Structure comes from each seed frame as built (its layer offsets, its
//! length fields, its DNS label length octets, its ClientHello's length
//! fields and server name): operations aim at those "hot" bytes more often
//! than at random ones, change length fields consistently (a server name
//! grown by `k` bytes with every enclosing length grown by `k`) or not, and
//! splice header layers between seeds. After the operations, lengths and
//! checksums are made right again some of the time, so that packets a Linux
//! receiver would take keep coming.

use std::ops::Range;

use rand::{Rng as _, SeedableRng as _, rngs::StdRng, seq::IndexedRandom as _};

use super::reference::{add, fold};
use crate::tls;

/// A length field of a seed frame.
#[derive(Clone, Copy, Debug)]
struct LenField {
    at: usize,
    /// Bytes, big-endian: 1, 2 or 3.
    width: usize,
}

/// What the mutator knows of a seed frame.
#[derive(Clone, Debug, Default)]
struct Shape {
    /// Offsets of bytes worth aiming at.
    hot: Vec<usize>,
    /// Length fields (IP, UDP, DNS QDCOUNT and label lengths, TLS lengths).
    lens: Vec<LenField>,
    /// Where the IP header starts and the transport header starts.
    l3: Option<usize>,
    l4: Option<usize>,
    /// IPv6 extension headers: (offset, length, own type).
    v6_exts: Vec<(usize, usize, u8)>,
    /// The TLS host_name and the length fields that enclose it, outermost
    /// first (record, handshake, extensions block, extension, list, name).
    sni: Option<(Range<usize>, Vec<LenField>)>,
}

/// Where a frame's headers sit, walked by hand (the mutator must cope with
/// frames no parser accepts).
#[derive(Clone, Copy, Debug)]
struct Walk {
    l3: usize,
    ipv6: bool,
    l4: usize,
    proto: u8,
}

impl Walk {
    /// Whether the fixed IP header is in the frame.
    fn whole_ip_header(&self, f: &[u8]) -> bool {
        f.len() >= self.l3 + if self.ipv6 { 40 } else { 20 }
    }
}

fn be16(f: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?])))
}

fn walk(f: &[u8]) -> Option<Walk> {
    let mut at = 12;
    let mut ethertype = be16(f, at)?;
    for _ in 0..2 {
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        at += 4;
        ethertype = be16(f, at)?;
    }
    let l3 = at + 2;
    match ethertype {
        0x0800 => {
            let ihl = usize::from(*f.get(l3)? & 0x0f) * 4;
            Some(Walk { l3, ipv6: false, l4: l3 + ihl, proto: *f.get(l3 + 9)? })
        }
        0x86dd => {
            let mut next = *f.get(l3 + 6)?;
            let mut l4 = l3 + 40;
            for _ in 0..8 {
                let len = match next {
                    0 | 43 | 60 => 8 * (usize::from(*f.get(l4 + 1)?) + 1),
                    44 => 8,
                    _ => break,
                };
                next = *f.get(l4)?;
                l4 += len;
            }
            Some(Walk { l3, ipv6: true, l4, proto: next })
        }
        _ => None,
    }
}

fn v6_exts(f: &[u8], l3: usize) -> Vec<(usize, usize, u8)> {
    let mut out = Vec::new();
    let (Some(&first), mut at) = (f.get(l3 + 6), l3 + 40) else { return out };
    let mut next = first;
    while let (0 | 43 | 60 | 44, Some(&n), Some(&l)) = (next, f.get(at), f.get(at + 1)) {
        let len = if next == 44 { 8 } else { 8 * (usize::from(l) + 1) };
        out.push((at, len, next));
        next = n;
        at += len;
    }
    out
}

fn shape(f: &[u8]) -> Shape {
    let mut s = Shape { hot: (0..14.min(f.len())).collect(), ..Shape::default() };
    let Some(w) = walk(f) else { return s };
    s.l3 = Some(w.l3);
    s.l4 = Some(w.l4);
    s.hot.extend(w.l3..w.l4);
    if w.ipv6 {
        s.lens.push(LenField { at: w.l3 + 4, width: 2 });
        s.v6_exts = v6_exts(f, w.l3);
    } else {
        s.lens.push(LenField { at: w.l3 + 2, width: 2 });
    }
    let payload = match w.proto {
        17 => {
            s.lens.push(LenField { at: w.l4 + 4, width: 2 });
            s.hot.extend(w.l4..w.l4 + 8);
            w.l4 + 8
        }
        6 => {
            s.hot.extend(w.l4..w.l4 + 20);
            let Some(&doff) = f.get(w.l4 + 12) else { return s };
            w.l4 + usize::from(doff >> 4) * 4
        }
        _ => return s,
    };
    let Some(p) = f.get(payload..) else { return s };
    s.hot.extend(payload..payload + p.len().min(64));
    let dport = be16(f, w.l4 + 2).unwrap_or(0);
    if dport == 53 {
        // Past a TCP length prefix; QDCOUNT and the QNAME's length octets.
        let dns = if w.proto == 6 { payload + 2 } else { payload };
        if w.proto == 6 {
            s.lens.push(LenField { at: payload, width: 2 });
        }
        s.lens.push(LenField { at: dns + 4, width: 2 });
        let mut at = dns + 12;
        while let Some(&len) = f.get(at) {
            s.lens.push(LenField { at, width: 1 });
            s.hot.push(at);
            if len == 0 || len > 63 {
                break;
            }
            at += 1 + usize::from(len);
        }
        s.hot.extend(at..(at + 5).min(f.len()));
    } else if w.proto == 6 && p.first() == Some(&22) && tls::whole_records(p) && p.get(5) == Some(&1) {
        let hs = payload + 5;
        let layout = tls::hello_layout(p);
        s.lens.push(LenField { at: payload + 3, width: 2 });
        s.lens.push(LenField { at: hs + 1, width: 3 });
        s.lens.push(LenField { at: hs + layout.session_id.start - 1, width: 1 });
        s.lens.push(LenField { at: hs + layout.cipher_suites.start - 2, width: 2 });
        s.lens.push(LenField { at: hs + layout.compression_methods.start - 1, width: 1 });
        let block = hs + layout.compression_methods.end;
        s.lens.push(LenField { at: block, width: 2 });
        for (_, data) in &layout.extensions {
            s.lens.push(LenField { at: hs + data.start - 2, width: 2 });
            s.hot.extend(hs + data.start - 4..hs + data.start);
        }
        if let Some(name) = layout.server_name() {
            let ext = hs + name.start - 9;
            s.hot.extend(ext..hs + name.end);
            let enclosing = vec![
                LenField { at: payload + 3, width: 2 },
                LenField { at: hs + 1, width: 3 },
                LenField { at: block, width: 2 },
                LenField { at: ext + 2, width: 2 },
                LenField { at: ext + 4, width: 2 },
                LenField { at: ext + 7, width: 2 },
            ];
            s.sni = Some((hs + name.start..hs + name.end, enclosing));
        }
    }
    s.hot.retain(|&i| i < f.len());
    s
}

fn read_len(f: &[u8], l: LenField) -> Option<usize> {
    let bytes = f.get(l.at..l.at + l.width)?;
    Some(bytes.iter().fold(0, |v, &b| v << 8 | usize::from(b)))
}

fn write_len(f: &mut [u8], l: LenField, v: usize) {
    if let Some(bytes) = f.get_mut(l.at..l.at + l.width) {
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (v >> (8 * (l.width - 1 - i))) as u8;
        }
    }
}

/// Values worth writing into a byte: zero, all ones, the DNS label type
/// boundaries (63, 64, 0xc0 pointer), a dot, upper case, the TLS handshake
/// record type.
const INTERESTING: &[u8] = &[0, 0xff, 0x3f, 0x40, 0x7f, 0x80, 0xc0, 0xc1, 1, 2, 0x2e, 0x41, 0x16, 0x03];

/// The shortest frame made: an Ethernet header.
pub const MIN_FRAME: usize = 14;

/// The mutator.
pub struct Mutator {
    rng: StdRng,
    seeds: Vec<(Vec<u8>, Shape)>,
}

impl Mutator {
    pub fn new(seed: u64, seeds: &[Vec<u8>]) -> Self {
        Self { rng: StdRng::seed_from_u64(seed), seeds: seeds.iter().map(|f| (f.clone(), shape(f))).collect() }
    }

    /// The next mutated frame, and the index of the seed it came from.
    pub fn next_frame(&mut self) -> (usize, Vec<u8>) {
        let i = self.rng.random_range(0..self.seeds.len());
        let mut f = self.seeds[i].0.clone();
        let ops = 1 + (self.rng.random::<u32>() | 0x80).trailing_zeros() as usize;
        for _ in 0..ops {
            self.op(i, &mut f);
        }
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header
        // (as no NIC delivers them).
        if f.len() < MIN_FRAME {
            f.resize(MIN_FRAME, 0);
        }
        if self.rng.random_ratio(1, 4) {
            fix_lengths(&mut f);
        }
        if self.rng.random_ratio(1, 2) {
            fix_checksums(&mut f);
        }
        (i, f)
    }

    /// A position in `f`: a hot byte of the seed most of the time.
    fn pos(&mut self, seed: usize, f: &[u8]) -> Option<usize> {
        if f.is_empty() {
            return None;
        }
        let hot = &self.seeds[seed].1.hot;
        if !hot.is_empty() && self.rng.random_ratio(2, 3) {
            let p = *hot.choose(&mut self.rng)?;
            if p < f.len() {
                return Some(p);
            }
        }
        Some(self.rng.random_range(0..f.len()))
    }

    fn op(&mut self, seed: usize, f: &mut Vec<u8>) {
        match self.rng.random_range(0..13) {
            0 | 1 => {
                if let Some(p) = self.pos(seed, f) {
                    f[p] ^= 1 << self.rng.random_range(0..8);
                }
            }
            2 | 3 => {
                if let Some(p) = self.pos(seed, f) {
                    f[p] = match self.rng.random_range(0..3) {
                        0 => f[p].wrapping_add(1),
                        1 => f[p].wrapping_sub(1),
                        _ => *INTERESTING.choose(&mut self.rng).unwrap_or(&0),
                    };
                }
            }
            4 | 5 => self.length_field(seed, f),
            6 => {
                let cut = self.rng.random_range(0..=f.len());
                f.truncate(cut);
            }
            7 => {
                let at = self.pos(seed, f).unwrap_or(0);
                let n = self.rng.random_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.random()).collect();
                f.splice(at..at, bytes);
            }
            8 => {
                if let Some(at) = self.pos(seed, f) {
                    let end = (at + self.rng.random_range(1..=16)).min(f.len());
                    f.drain(at..end);
                }
            }
            9 => self.resize_name(seed, f),
            10 => self.splice_layers(seed, f),
            11 => self.vlan(f),
            _ => self.repeat_v6_ext(seed, f),
        }
    }

    /// A length field set to something near, something far, or what it was.
    fn length_field(&mut self, seed: usize, f: &mut [u8]) {
        let Some(&l) = self.seeds[seed].1.lens.choose(&mut self.rng) else { return };
        let Some(v) = read_len(f, l) else { return };
        let max = (1usize << (8 * l.width)) - 1;
        let new = match self.rng.random_range(0..6) {
            0 => v.wrapping_add(1) & max,
            1 => v.wrapping_sub(1) & max,
            2 => 0,
            3 => max,
            4 => self.rng.random_range(0..=max),
            _ => (v + self.rng.random_range(1..=8)) & max,
        };
        write_len(f, l, new);
    }

    /// Grows or shrinks a DNS label or the TLS host_name by a few bytes,
    /// with the length fields enclosing it changed to match (or, one time in
    /// four, left alone).
    fn resize_name(&mut self, seed: usize, f: &mut Vec<u8>) {
        let shape = &self.seeds[seed].1;
        let consistent = !self.rng.random_ratio(1, 4);
        if let Some((name, enclosing)) = shape.sni.clone() {
            if name.end > f.len() || enclosing.iter().any(|l| l.at + l.width > name.start) {
                return;
            }
            let grow = self.rng.random_ratio(1, 2);
            let k = self.rng.random_range(1..=8).min(if grow { 8 } else { name.len() });
            if grow {
                let at = self.rng.random_range(name.start..=name.end);
                let fill = *[b'a', b'.', b'-', 0, b'A'].choose(&mut self.rng).unwrap_or(&b'a');
                f.splice(at..at, std::iter::repeat_n(fill, k));
            } else {
                let at = self.rng.random_range(name.start..=name.end - k);
                f.drain(at..at + k);
            }
            if consistent {
                for l in enclosing {
                    if let Some(v) = read_len(f, l) {
                        write_len(f, l, if grow { v + k } else { v.saturating_sub(k) });
                    }
                }
                fix_lengths(f);
            }
            return;
        }
        let labels: Vec<LenField> = shape.lens.iter().copied().filter(|l| l.width == 1).collect();
        let Some(&l) = labels.choose(&mut self.rng) else { return };
        let Some(v) = read_len(f, l) else { return };
        if v == 0 || v > 63 || l.at + 1 + v > f.len() {
            return;
        }
        let k = self.rng.random_range(1..=8);
        if self.rng.random_ratio(1, 2) {
            let fill = *[b'x', b'.', 0, b'X', 0xff].choose(&mut self.rng).unwrap_or(&b'x');
            let at = l.at + 1;
            f.splice(at..at, std::iter::repeat_n(fill, k));
            if consistent {
                write_len(f, l, (v + k).min(255));
            }
        } else {
            let k = k.min(v);
            f.drain(l.at + 1..l.at + 1 + k);
            if consistent {
                write_len(f, l, v - k);
            }
        }
        if consistent {
            fix_lengths(f);
        }
    }

    /// The Ethernet and IP headers of another seed before this frame's
    /// transport header, or this frame cut at a random point and another
    /// seed's tail after it.
    fn splice_layers(&mut self, seed: usize, f: &mut Vec<u8>) {
        let other = self.rng.random_range(0..self.seeds.len());
        let (of, os) = (&self.seeds[other].0, &self.seeds[other].1);
        if let (true, Some(ol4), Some(l4)) = (self.rng.random_ratio(2, 3), os.l4, self.seeds[seed].1.l4) {
            if ol4 <= of.len() && l4 <= f.len() {
                let mut out = of[..ol4].to_vec();
                out.extend_from_slice(&f[l4..]);
                *f = out;
                if self.rng.random_ratio(3, 4) {
                    fix_lengths(f);
                }
            }
            return;
        }
        let cut = self.rng.random_range(0..=f.len());
        let from = self.rng.random_range(0..=of.len());
        f.truncate(cut);
        f.extend_from_slice(&of[from..]);
    }

    /// Adds a VLAN tag (of a TPID Linux takes, or 0x9100) or removes one.
    fn vlan(&mut self, f: &mut Vec<u8>) {
        if f.len() < 14 {
            return;
        }
        let tagged = matches!(be16(f, 12), Some(0x8100 | 0x88a8 | 0x9100));
        if tagged && f.len() >= 18 && self.rng.random_ratio(1, 2) {
            f.drain(12..16);
        } else {
            let tpid: u16 = *[0x8100, 0x88a8, 0x9100].choose(&mut self.rng).unwrap_or(&0x8100);
            let tci: u16 = self.rng.random_range(0..4096);
            let mut tag = tpid.to_be_bytes().to_vec();
            tag.extend_from_slice(&tci.to_be_bytes());
            f.splice(12..12, tag);
        }
    }

    /// Repeats one of the seed's IPv6 extension headers right after itself,
    /// the chain of next-header fields kept whole (and the payload length
    /// grown, most of the time).
    fn repeat_v6_ext(&mut self, seed: usize, f: &mut Vec<u8>) {
        let shape = &self.seeds[seed].1;
        let (Some(&(at, len, typ)), Some(l3)) = (shape.v6_exts.choose(&mut self.rng), shape.l3) else {
            return;
        };
        if at + len > f.len() {
            return;
        }
        let copy = f[at..at + len].to_vec();
        f.splice(at + len..at + len, copy);
        f[at] = typ;
        let times = self.rng.random_range(1..=6);
        for _ in 1..times {
            let copy = f[at..at + len].to_vec();
            f.splice(at..at, copy);
        }
        if self.rng.random_ratio(3, 4) {
            fix_lengths(f);
        } else {
            let _ = l3;
        }
    }
}

/// Sets the IP and UDP length fields to what the frame holds.
pub fn fix_lengths(f: &mut [u8]) {
    let Some(w) = walk(f).filter(|w| w.whole_ip_header(f)) else { return };
    if w.ipv6 {
        if let Some(len) = f.len().checked_sub(w.l3 + 40).and_then(|l| u16::try_from(l).ok()) {
            f[w.l3 + 4..w.l3 + 6].copy_from_slice(&len.to_be_bytes());
        }
    } else if let Some(len) = f.len().checked_sub(w.l3).and_then(|l| u16::try_from(l).ok()) {
        f[w.l3 + 2..w.l3 + 4].copy_from_slice(&len.to_be_bytes());
    }
    if w.proto == 17
        && f.len() >= w.l4 + 8
        && let Ok(len) = u16::try_from(f.len() - w.l4)
    {
        f[w.l4 + 4..w.l4 + 6].copy_from_slice(&len.to_be_bytes());
    }
}

/// Recomputes the IPv4 header checksum and the UDP or TCP checksum over
/// the IP packet as its length field says (cut to the frame).
pub fn fix_checksums(f: &mut [u8]) {
    let Some(w) = walk(f).filter(|w| w.whole_ip_header(f)) else { return };
    let ip_end = if w.ipv6 { be16(f, w.l3 + 4).map(|l| w.l3 + 40 + l) } else { be16(f, w.l3 + 2).map(|l| w.l3 + l) };
    let Some(ip_end) = ip_end.map(|e| e.min(f.len())) else { return };
    if !w.ipv6 && w.l4 <= f.len() && w.l4 >= w.l3 + 20 {
        f[w.l3 + 10..w.l3 + 12].copy_from_slice(&[0, 0]);
        let sum = !fold(add(0, &f[w.l3..w.l4]));
        f[w.l3 + 10..w.l3 + 12].copy_from_slice(&sum.to_be_bytes());
    }
    let at = match w.proto {
        17 => w.l4 + 6,
        6 => w.l4 + 16,
        _ => return,
    };
    if at + 2 > ip_end || w.l4 > ip_end {
        return;
    }
    let end = if w.proto == 17 { be16(f, w.l4 + 4).map_or(ip_end, |l| (w.l4 + l).min(ip_end)) } else { ip_end };
    if end < at + 2 {
        return;
    }
    f[at..at + 2].copy_from_slice(&[0, 0]);
    let mut sum = if w.ipv6 { add(0, &f[w.l3 + 8..w.l3 + 40]) } else { add(0, &f[w.l3 + 12..w.l3 + 20]) };
    let len = (end - w.l4) as u32;
    sum = add(sum, &[0, w.proto]);
    sum = add(sum, &len.to_be_bytes()[if w.ipv6 { 0 } else { 2 }..]);
    sum = add(sum, &f[w.l4..end]);
    let mut c = !fold(sum);
    if c == 0 && w.proto == 17 {
        c = 0xffff;
    }
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        fuzz::reference,
        packet::{Spec, V6Ext},
    };

    #[test]
    fn same_seed_same_frames() {
        let seeds =
            vec![Spec::udp4().build(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01")];
        let (mut a, mut b) = (Mutator::new(7, &seeds), Mutator::new(7, &seeds));
        let mut c = Mutator::new(8, &seeds);
        let (xs, ys, zs): (Vec<_>, Vec<_>, Vec<_>) =
            (0..100).map(|_| (a.next_frame().1, b.next_frame().1, c.next_frame().1)).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn fixed_checksums_verify() {
        for spec in [Spec::udp4(), Spec::udp6().v6_ext(V6Ext::All), Spec::udp4().tcp()] {
            let mut f = spec.build(b"0123456789abcdef");
            // A payload byte changed and four bytes added: checksum and
            // lengths wrong until fixed.
            let last = f.len() - 1;
            f[last] ^= 0xff;
            f.extend_from_slice(b"more");
            assert_ne!(reference::layers(&f).ok().and_then(|l| reference::checksum(&f, &l)), Some(0));
            fix_lengths(&mut f);
            fix_checksums(&mut f);
            let l = reference::layers(&f).expect("layers");
            assert_eq!(reference::checksum(&f, &l), Some(0), "{spec:?}");
            assert_eq!(l.payload.1 - l.payload.0, 20);
        }
    }
}
