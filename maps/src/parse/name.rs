//! DNS names: the wire-format parser and the suffix hash.
//!
//! # Keys
//! A rule for `example.com` must match `example.com` and every name below it
//! at a label boundary. The kernel therefore looks up every suffix of a
//! queried name, and each suffix needs a fixed-size key. Keys are built
//! label by label from the right:
//!
//! ```text
//! key(.)            = root_key(seed)
//! key(example.com)  = child_key(key(com), label_hash(seed, "example"))
//! ```
//!
//! so one pass over a name yields the keys of all its suffixes, and the key
//! of a suffix does not depend on what lies to its left. Labels are hashed
//! with ASCII case folded (resolvers randomise case, draft-vixie-dnsext-dns0x20),
//! so `WWW.Example.COM` and `www.example.com` share keys.
//!
//! # Text names
//! The `server_name` of a TLS `ClientHello` is a dotted text name, not wire
//! format. [`parse_text_label`] walks it label by label and yields exactly the
//! label hashes [`parse_label`] yields for the same name on the wire (the
//! hashing loop is shared), so `www.Example.com` in a `ClientHello` is judged by
//! the keys of the QNAME `www.example.com`.
//!
//! # Collision odds
//! Keys are 64 bits and the mixing is seeded with a per-deployment random
//! seed, so collisions cannot be precomputed. With `n` rules installed, one
//! lookup of a name that matches none of them hits a wrong key with
//! probability about `n / 2^64`: at 10M rules that is 5.4e-13 per lookup, or
//! one wrong match in about 4.6e11 queries of 4 labels. The kernel also
//! compares the rule's label count with the lookup depth, which rejects
//! collisions between names of different depths at no cost (counted as
//! `key_collision`). Two *rules* colliding with each other has probability
//! about `n^2 / 2^65` (2.7e-6 at 10M rules); user space sees every key it
//! inserts and reports such a pair instead of silently merging it.
//!
//! The hash is not cryptographic: each label is absorbed eight bytes at a
//! time (case folded with a SWAR trick, multiply and xor-shift per word),
//! finished with the `MurmurHash3` 64-bit finaliser, then chained. A typical
//! label costs one word, which the kernel program can afford on every query.

/// Longest name on the wire, length octets and root label included (RFC 1035 §2.3.4).
pub const MAX_NAME_WIRE: usize = 255;
/// Longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// Most labels a 255-byte name can have (127 one-byte labels and the root).
pub const MAX_LABELS: usize = 127;
/// Slots for per-label hashes: a power of two so indices can be masked.
pub const LABEL_SLOTS: usize = (MAX_LABELS + 1).next_power_of_two();
/// Bytes the kernel copies for a question: QNAME (255) + QTYPE + QCLASS, rounded
/// up to a power of two so indices can be masked.
pub const QUESTION_BUF: usize = 512;
/// QNAME + QTYPE + QCLASS at most.
pub const MAX_QUESTION: usize = MAX_NAME_WIRE + 4;

/// Why a wire-format name was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// The name runs past the available bytes.
    Truncated,
    /// A compression pointer (0b11 prefix): not valid in a question we judge.
    Compressed,
    /// Label type 0b01 or 0b10 (extended/reserved, RFC 6891 §5, RFC 2673).
    BadLabelType,
    /// More than 255 bytes on the wire (so also more than 127 labels); for a
    /// text name, more than 253 bytes without its trailing dot.
    TooLong,
    /// Text names only: an empty label (a leading dot, `..`, an empty name or `.` alone).
    EmptyLabel,
    /// Text names only: a label of more than 63 bytes (its wire length octet
    /// would not be a plain length, RFC 1035 §2.3.4).
    LabelTooLong,
}

/// A parsed wire-format name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireName {
    /// Bytes on the wire, including length octets and the root label.
    pub len: usize,
    /// Number of labels, root excluded.
    pub labels: usize,
}

/// An odd 64-bit constant (from `MurmurHash3`'s finaliser) that multiplies each word in.
const WORD_MIX: u64 = 0xff51_afd7_ed55_8ccd;
const LEN_MIX: u64 = 0x9e37_79b9_7f4a_7c15;
const ROOT_MIX: u64 = 0x6a09_e667_f3bc_c909;

/// `MurmurHash3`'s 64-bit finaliser: every input bit affects every output bit.
#[inline(always)]
pub const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// ASCII-only case folding: DNS compares names case-insensitively for ASCII
/// letters only (RFC 4343 §3); other bytes are kept as they are.
#[inline(always)]
pub const fn fold_case(b: u8) -> u8 {
    if b.wrapping_sub(b'A') < 26 { b | 0x20 } else { b }
}

/// [`fold_case`] on the eight bytes of a word at once (SWAR): a byte gets
/// 0x20 set when it lies in 0x41..=0x5a. Adding to the low seven bits of a
/// byte never carries into the next byte, and bytes with their top bit set
/// are excluded explicitly.
#[inline(always)]
pub const fn fold_case_word(w: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low = w & LOW7;
    // Top bit of each byte: above '@' (0x40), and above 'Z' (0x5a).
    let above_at = low.wrapping_add(0x3f3f_3f3f_3f3f_3f3f);
    let above_z = low.wrapping_add(0x2525_2525_2525_2525);
    let upper = above_at & !above_z & !w & HIGH;
    w | (upper >> 2)
}

/// State at the start of a label of `len` bytes.
#[inline(always)]
pub const fn label_start(seed: u64, len: u8) -> u64 {
    seed ^ (len as u64).wrapping_mul(LEN_MIX)
}

/// Absorbs up to eight bytes of a label, as a little-endian word whose bytes
/// past the label's end are zero; case is folded here.
#[inline(always)]
pub const fn label_step(h: u64, word: u64) -> u64 {
    let h = (h ^ fold_case_word(word)).wrapping_mul(WORD_MIX);
    h ^ (h >> 29)
}

/// The label's hash once all its bytes are absorbed.
#[inline(always)]
pub const fn label_finish(h: u64) -> u64 {
    fmix64(h)
}

/// The little-endian word of `buf` at byte `i` (`i` <= 255 + 56, so the
/// eight bytes lie inside the buffer).
#[inline(always)]
fn load_word(buf: &[u8; QUESTION_BUF], i: usize) -> u64 {
    const _: () = assert!(0xff + 56 + 8 <= QUESTION_BUF);
    // SAFETY: the callers' masks keep i + 8 within the buffer, and
    // read_unaligned has no alignment needs.
    u64::from_le(unsafe { core::ptr::read_unaligned(buf.as_ptr().add(i).cast::<u64>()) })
}

/// The little-endian word of a text name's buffer at byte `i`, with zeros for
/// the bytes past its end.
///
/// Unlike the question buffer this one has no slack after the name: a label
/// may start at 253 and the hashing loop reads a whole word. Rather than copy
/// the name into a larger buffer, the load is clamped to the last word that
/// fits (at `MAX_SNI - 8`) and shifted down, which yields zeros where the
/// buffer ends; those bytes are past the label's end anyway, and the caller
/// masks them off. Words wholly past the end (`i >= MAX_SNI`, never a label's
/// bytes) are zero.
#[inline(always)]
fn load_text_word(buf: &[u8; crate::parse::tls::MAX_SNI], i: usize) -> u64 {
    const LAST: usize = crate::parse::tls::MAX_SNI - 8;
    let at = if i < LAST { i } else { LAST };
    // SAFETY: at <= MAX_SNI - 8, so the eight bytes lie inside the buffer;
    // read_unaligned has no alignment needs.
    let w = u64::from_le(unsafe { core::ptr::read_unaligned(buf.as_ptr().add(at).cast::<u64>()) });
    let shift = 8 * (i - at);
    if shift < 64 { w >> shift } else { 0 }
}

/// Hash of the `len` bytes of `buf` from `start` (a label's bytes), eight at
/// a time. `start` is below 255 (a label starts within the 255 bytes of a
/// name) and `len` at most 63; the masks restate that for the verifier.
#[inline(always)]
fn hash_label_bytes(buf: &[u8; QUESTION_BUF], start: usize, len: usize, seed: u64) -> u64 {
    hash_words(|i| load_word(buf, i), start, len, seed)
}

/// [`hash_label_bytes`] for a label of a text name: the same loop over
/// different loads, so a label hashes alike in both forms.
#[inline(always)]
fn hash_text_label_bytes(buf: &[u8; crate::parse::tls::MAX_SNI], start: usize, len: usize, seed: u64) -> u64 {
    hash_words(|i| load_text_word(buf, i), start, len, seed)
}

/// The label hashing loop, over words read by `load` at byte offsets. Written
/// without branches but the loop's own, so the verifier has few paths to walk.
#[inline(always)]
fn hash_words(load: impl Fn(usize) -> u64, start: usize, len: usize, seed: u64) -> u64 {
    let start = start & 0xff;
    let len = len & 0x3f;
    let mut h = label_start(seed, len as u8);
    let mut k = 0;
    // At most 63 bytes: eight words.
    while k < 8 {
        let done = 8 * k;
        if done >= len {
            break;
        }
        let rest = (len - done) as u64;
        // All ones when at least 8 bytes remain, else the low `rest` bytes
        // (little-endian), which are the label's: (rest + 56) >> 6 is 1 for
        // rest >= 8 and 0 below (rest <= 63).
        let full = (rest + 56) >> 6;
        let mask = (1u64 << ((8 * rest) & 63)).wrapping_sub(1) | 0u64.wrapping_sub(full);
        h = label_step(h, load(start + done) & mask);
        k += 1;
    }
    label_finish(h)
}

/// Hash of one label (at most 63 bytes; longer ones are cut): the same
/// words and loop as the kernel's, from a buffer just big enough for them.
pub fn label_hash(seed: u64, label: &[u8]) -> u64 {
    let mut buf = [0u8; 72];
    let n = if label.len() < MAX_LABEL_LEN { label.len() } else { MAX_LABEL_LEN };
    let mut i = 0;
    while i < n {
        buf[i] = label[i];
        i += 1;
    }
    hash_words(
        |i| {
            let mut w = [0u8; 8];
            let mut j = 0;
            while j < 8 {
                w[j] = buf[(i + j) & 63];
                j += 1;
            }
            u64::from_le_bytes(w)
        },
        0,
        n,
        seed,
    )
}

/// Key of the root: the start of every chain.
#[inline(always)]
pub const fn root_key(seed: u64) -> u64 {
    fmix64(seed ^ ROOT_MIX)
}

/// Key of the name made of `label` under the name whose key is `parent`.
/// Bijective in `parent` for a fixed label, so distinct parents never merge.
#[inline(always)]
pub const fn child_key(parent: u64, label_hash: u64) -> u64 {
    fmix64(parent.rotate_left(29) ^ label_hash)
}

/// One step of parsing a wire-format name: the label at `pos`, or the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelStep {
    /// A label: its hash, and where the next length octet is.
    Label { hash: u64, next: usize },
    /// The root label: the name is `len` bytes long on the wire.
    End { len: usize },
}

/// Parses the label whose length octet is at `pos` in `buf`, of which only
/// the first `avail` bytes are valid.
///
/// This is the step the kernel program runs once per label (from a
/// `bpf_loop` callback, so the verifier checks it once rather than once per
/// label) and [`parse_wire_name`] runs in a loop. It is written for the
/// verifier: a constant loop bound, indices masked to the buffer size, no
/// slicing and no panics.
#[inline(always)]
pub fn parse_label(buf: &[u8; QUESTION_BUF], avail: usize, pos: usize, seed: u64) -> Result<LabelStep, NameError> {
    if pos >= avail {
        return Err(NameError::Truncated);
    }
    let len = buf[pos & (QUESTION_BUF - 1)];
    if len == 0 {
        return Ok(LabelStep::End { len: pos + 1 });
    }
    match len & 0xc0 {
        0 => {}
        0xc0 => return Err(NameError::Compressed),
        _ => return Err(NameError::BadLabelType),
    }
    // A no-op after the check above, but it tells the verifier len <= 63.
    let len = len & 0x3f;
    let next = pos + 1 + len as usize;
    // The root label still has to fit: the whole name is at most 255 bytes.
    if next >= MAX_NAME_WIRE {
        return Err(NameError::TooLong);
    }
    if next > avail {
        return Err(NameError::Truncated);
    }
    Ok(LabelStep::Label { hash: hash_label_bytes(buf, pos + 1, len as usize, seed), next })
}

/// Parses the wire-format name at the start of `buf`, of which only the
/// first `avail` bytes are valid, and stores each label's hash in `hashes`
/// (leftmost label at index 0). The host-side loop around [`parse_label`].
pub fn parse_wire_name(
    buf: &[u8; QUESTION_BUF],
    avail: usize,
    seed: u64,
    hashes: &mut [u64; LABEL_SLOTS],
) -> Result<WireName, NameError> {
    collect_labels(|pos| parse_label(buf, avail, pos, seed), hashes)
}

/// The host-side loop of the name parsers: steps label by label from the
/// start, storing each hash, until the end. A 255-byte name has at most
/// 127 labels and the root: 128 steps.
fn collect_labels(
    mut step: impl FnMut(usize) -> Result<LabelStep, NameError>,
    hashes: &mut [u64; LABEL_SLOTS],
) -> Result<WireName, NameError> {
    let mut pos = 0;
    let mut labels = 0;
    while labels < LABEL_SLOTS {
        match step(pos)? {
            LabelStep::Label { hash, next } => {
                hashes[labels] = hash;
                labels += 1;
                pos = next;
            }
            LabelStep::End { len } => return Ok(WireName { len, labels }),
        }
    }
    Err(NameError::TooLong)
}

/// Offset of the first `.` in a word's eight bytes (little-endian order), or 8.
///
/// SWAR: bytes equal to `.` become zero after the xor; `(x - 0x01..) & !x &
/// 0x80..` sets the top bit of every zero byte, and of no byte below the
/// first zero one (the borrow only runs upwards), so the lowest set bit marks
/// the first dot. Its byte index comes from a multiply instead of a
/// trailing-zeros count, which BPF has no instruction for.
#[inline(always)]
const fn first_dot(w: u64) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let x = w ^ (ONES * b'.' as u64);
    let zero = x.wrapping_sub(ONES) & !x & HIGH;
    if zero == 0 {
        return 8;
    }
    // The lowest flag is bit 8k + 7; shifted to bit 8k, it multiplies the
    // constant so that byte 7 of the product is k.
    let lowest = (zero & zero.wrapping_neg()) >> 7;
    (lowest.wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize
}

/// Parses the label of a dotted text name (a TLS `server_name`) that starts at
/// `pos` in `buf`, of which the first `len` bytes are the name.
///
/// The counterpart of [`parse_label`] for text: text offset `p` is the wire
/// offset of the same label's length octet, so `next` and the `End` length
/// are the wire format's, and the hash is the wire label's. A single trailing
/// dot is allowed and changes nothing. The dot is searched eight bytes at a
/// time, at most 64 bytes (a label of 63 and its dot); bytes of `buf` past
/// `len` are never taken as part of the name.
#[inline(always)]
pub fn parse_text_label(
    buf: &[u8; crate::parse::tls::MAX_SNI],
    len: usize,
    pos: usize,
    seed: u64,
) -> Result<LabelStep, NameError> {
    let len = if len < crate::parse::tls::MAX_SNI { len } else { crate::parse::tls::MAX_SNI };
    if pos >= len {
        if len == 0 {
            return Err(NameError::EmptyLabel);
        }
        // After the last label (pos = len + 1) or after a trailing dot (pos = len).
        return Ok(LabelStep::End { len: pos + 1 });
    }
    let limit = len - pos;
    let mut label = 64;
    let mut k = 0;
    while k < 8 {
        let done = 8 * k;
        if done >= limit {
            break;
        }
        let at = first_dot(load_text_word(buf, (pos & 0xff) + done));
        if at < 8 {
            label = done + at;
            break;
        }
        k += 1;
    }
    // A dot past the name's end is not the name's.
    let label = if label < limit { label } else { limit };
    if label == 0 {
        return Err(NameError::EmptyLabel);
    }
    if label > MAX_LABEL_LEN {
        return Err(NameError::LabelTooLong);
    }
    // Past the label's dot, or past a virtual one at the end: where the next
    // length octet would be on the wire.
    let next = pos + label + 1;
    // The root label still has to fit: the whole name is at most 255 bytes.
    if next >= MAX_NAME_WIRE {
        return Err(NameError::TooLong);
    }
    Ok(LabelStep::Label { hash: hash_text_label_bytes(buf, pos, label, seed), next })
}

/// Parses the dotted text name in the first `len` bytes of `buf` and stores
/// each label's hash in `hashes` (leftmost label at index 0). The host-side
/// loop around [`parse_text_label`]; the returned length is the name's length
/// on the wire (text length + 2, or + 1 with a trailing dot).
pub fn parse_text_name(
    buf: &[u8; crate::parse::tls::MAX_SNI],
    len: usize,
    seed: u64,
    hashes: &mut [u64; LABEL_SLOTS],
) -> Result<WireName, NameError> {
    collect_labels(|pos| parse_text_label(buf, len, pos, seed), hashes)
}

/// Parses a dotted text name held in a slice and returns its key and wire
/// length and label count; the text counterpart of [`wire_name_key`].
pub fn text_name_key(seed: u64, text: &[u8]) -> Result<(u64, WireName), NameError> {
    let mut buf = [0u8; crate::parse::tls::MAX_SNI];
    if text.len() > crate::parse::tls::MAX_SNI {
        return Err(NameError::TooLong);
    }
    let mut i = 0;
    while i < text.len() {
        buf[i] = text[i];
        i += 1;
    }
    let mut hashes = [0u64; LABEL_SLOTS];
    let name = parse_text_name(&buf, text.len(), seed, &mut hashes)?;
    Ok((suffix_key(seed, &hashes[..name.labels], name.labels), name))
}

/// Key of the suffix made of the rightmost `depth` labels, from per-label hashes.
pub fn suffix_key(seed: u64, hashes: &[u64], depth: usize) -> u64 {
    let mut key = root_key(seed);
    let n = hashes.len();
    let mut d = 1;
    while d <= depth && d <= n {
        key = child_key(key, hashes[n - d]);
        d += 1;
    }
    key
}

/// Parses a wire-format name held in a slice and returns its key and label count.
/// The host-side entry point: user space computes rule keys with it.
pub fn wire_name_key(seed: u64, wire: &[u8]) -> Result<(u64, WireName), NameError> {
    let mut buf = [0u8; QUESTION_BUF];
    let n = if wire.len() < QUESTION_BUF { wire.len() } else { QUESTION_BUF };
    let mut i = 0;
    while i < n {
        buf[i] = wire[i];
        i += 1;
    }
    let mut hashes = [0u64; LABEL_SLOTS];
    let name = parse_wire_name(&buf, n, seed, &mut hashes)?;
    Ok((suffix_key(seed, &hashes[..name.labels], name.labels), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(text: &str) -> ([u8; QUESTION_BUF], usize) {
        let mut buf = [0u8; QUESTION_BUF];
        let mut n = 0;
        for label in text.split('.').filter(|l| !l.is_empty()) {
            buf[n] = label.len() as u8;
            buf[n + 1..n + 1 + label.len()].copy_from_slice(label.as_bytes());
            n += 1 + label.len();
        }
        buf[n] = 0;
        (buf, n + 1)
    }

    fn key(seed: u64, text: &str) -> u64 {
        let (buf, n) = wire(text);
        wire_name_key(seed, &buf[..n]).unwrap().0
    }

    #[test]
    fn word_folding_matches_byte_folding() {
        for b in 0..=255u8 {
            let w = u64::from_le_bytes([b, b'A', b'z', 0x80 | b, b'Z', b'@', b'[', b]);
            let want =
                u64::from_le_bytes([fold_case(b), b'a', b'z', fold_case(0x80 | b), b'z', b'@', b'[', fold_case(b)]);
            assert_eq!(fold_case_word(w), want, "byte {b:#x}");
        }
    }

    #[test]
    fn label_hash_depends_on_every_byte_and_the_length() {
        let base = label_hash(3, b"abcdefghijklmnopq");
        for i in 0..17 {
            let mut l = *b"abcdefghijklmnopq";
            l[i] = b'#';
            assert_ne!(label_hash(3, &l), base, "byte {i}");
        }
        assert_ne!(label_hash(3, b"abcdefgh"), label_hash(3, b"abcdefgh\0"));
        assert_eq!(label_hash(3, b"ABCdefGHIJKLMNOPQ"), base);
    }

    #[test]
    fn case_is_folded() {
        assert_eq!(key(7, "WWW.Example.COM"), key(7, "www.example.com"));
        assert_ne!(key(7, "www.example.com"), key(7, "www.example.con"));
    }

    #[test]
    fn only_ascii_letters_fold() {
        // '@' (0x40) and '`' (0x60) differ only by the case bit but are not letters.
        assert_ne!(key(1, "a@b"), key(1, "a`b"));
        assert_ne!(key(1, "x[y"), key(1, "x{y"));
    }

    #[test]
    fn suffix_keys_chain_from_the_right() {
        let (buf, n) = wire("a.b.example.com");
        let mut hashes = [0; LABEL_SLOTS];
        let name = parse_wire_name(&buf, n, 9, &mut hashes).unwrap();
        assert_eq!(name, WireName { len: n, labels: 4 });
        assert_eq!(suffix_key(9, &hashes[..4], 2), key(9, "example.com"));
        assert_eq!(suffix_key(9, &hashes[..4], 3), key(9, "b.example.com"));
        assert_eq!(suffix_key(9, &hashes[..4], 4), key(9, "a.b.example.com"));
        assert_eq!(suffix_key(9, &hashes[..4], 0), root_key(9));
    }

    #[test]
    fn label_boundaries_matter() {
        assert_ne!(key(3, "ab.c"), key(3, "a.bc"));
        assert_ne!(key(3, "notexample.com"), key(3, "example.com"));
        assert_ne!(key(3, "example.com.evil.net"), key(3, "example.com"));
    }

    #[test]
    fn seed_changes_keys() {
        assert_ne!(key(1, "example.com"), key(2, "example.com"));
    }

    #[test]
    fn root_name() {
        let (buf, n) = wire("");
        assert_eq!(n, 1);
        let mut h = [0; LABEL_SLOTS];
        assert_eq!(parse_wire_name(&buf, n, 0, &mut h), Ok(WireName { len: 1, labels: 0 }));
    }

    #[test]
    fn rejects_pointer_and_reserved_label_types() {
        let mut h = [0; LABEL_SLOTS];
        let mut buf = [0u8; QUESTION_BUF];
        buf[..4].copy_from_slice(&[1, b'a', 0xc0, 12]);
        assert_eq!(parse_wire_name(&buf, 4, 0, &mut h), Err(NameError::Compressed));
        buf[2] = 0x41;
        assert_eq!(parse_wire_name(&buf, 4, 0, &mut h), Err(NameError::BadLabelType));
        buf[2] = 0x80;
        assert_eq!(parse_wire_name(&buf, 4, 0, &mut h), Err(NameError::BadLabelType));
    }

    #[test]
    fn every_truncation_is_truncated() {
        let (buf, n) = wire("www.example.com");
        let mut h = [0; LABEL_SLOTS];
        for avail in 0..n {
            assert_eq!(parse_wire_name(&buf, avail, 0, &mut h), Err(NameError::Truncated), "avail {avail}");
        }
    }

    #[test]
    fn longest_names() {
        // 127 one-byte labels: 254 bytes + root = 255: accepted.
        let mut buf = [0u8; QUESTION_BUF];
        for i in 0..127 {
            buf[2 * i] = 1;
            buf[2 * i + 1] = b'a' + (i % 26) as u8;
        }
        buf[254] = 0;
        let mut h = [0; LABEL_SLOTS];
        assert_eq!(parse_wire_name(&buf, 255, 0, &mut h), Ok(WireName { len: 255, labels: 127 }));
        // One more byte of name: 256 bytes: too long.
        buf[254] = 1;
        buf[255] = b'z';
        buf[256] = 0;
        assert_eq!(parse_wire_name(&buf, 257, 0, &mut h), Err(NameError::TooLong));
        // Four 63-byte labels: 4 * 64 + 1 = 257 bytes: too long.
        let mut buf = [b'x'; QUESTION_BUF];
        for i in 0..4 {
            buf[64 * i] = 63;
        }
        buf[256] = 0;
        assert_eq!(parse_wire_name(&buf, 300, 0, &mut h), Err(NameError::TooLong));
        // Three 63-byte labels and one 61-byte label: 3*64 + 62 + 1 = 255 bytes.
        buf[192] = 61;
        buf[254] = 0;
        assert_eq!(parse_wire_name(&buf, 300, 0, &mut h), Ok(WireName { len: 255, labels: 4 }));
    }

    fn text(name: &[u8]) -> [u8; crate::parse::tls::MAX_SNI] {
        let mut buf = [0u8; crate::parse::tls::MAX_SNI];
        buf[..name.len()].copy_from_slice(name);
        buf
    }

    /// The wire form of a dotted name whose labels contain no dot.
    fn wire_bytes(name: &[u8]) -> ([u8; QUESTION_BUF], usize) {
        let mut buf = [0u8; QUESTION_BUF];
        let mut n = 0;
        let name = name.strip_suffix(b".").unwrap_or(name);
        for label in name.split(|&b| b == b'.') {
            buf[n] = label.len() as u8;
            buf[n + 1..n + 1 + label.len()].copy_from_slice(label);
            n += 1 + label.len();
        }
        (buf, n + 1)
    }

    /// Parses `name` as text and as wire format and checks that both give the
    /// same labels, hashes, offsets and length.
    fn assert_text_matches_wire(seed: u64, name: &[u8]) {
        let buf = text(name);
        let (wire, wire_len) = wire_bytes(name);
        let (mut th, mut wh) = ([0; LABEL_SLOTS], [0; LABEL_SLOTS]);
        let t = parse_text_name(&buf, name.len(), seed, &mut th);
        let w = parse_wire_name(&wire, wire_len, seed, &mut wh);
        assert_eq!(t, w, "{:?}", core::str::from_utf8(name));
        let t = t.unwrap();
        assert_eq!(t.len, wire_len);
        assert_eq!(th[..t.labels], wh[..t.labels]);
        // Label by label, the text offsets are the wire offsets.
        let (mut tp, mut wp) = (0, 0);
        loop {
            let a = parse_text_label(&buf, name.len(), tp, seed).unwrap();
            let b = parse_label(&wire, wire_len, wp, seed).unwrap();
            assert_eq!(a, b);
            match a {
                LabelStep::Label { next, .. } => (tp, wp) = (next, next),
                LabelStep::End { .. } => break,
            }
        }
        assert_eq!(text_name_key(seed, name).unwrap().0, wire_name_key(seed, &wire[..wire_len]).unwrap().0);
    }

    /// A small deterministic generator (xorshift), so these tests need no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn text_names_hash_like_wire_names() {
        for name in [
            &b"com"[..],
            b"example.com",
            b"www.Example.com",
            b"www.example.com.",
            b"a.b.c.d.e.f.g.h",
            b"xn--bcher-kva.example",
            b"under_score.-hyphen-.example",
        ] {
            assert_text_matches_wire(11, name);
        }
        assert_eq!(text_name_key(5, b"WWW.Example.COM"), text_name_key(5, b"www.example.com."));
        assert_eq!(text_name_key(5, b"www.Example.com").unwrap().0, key(5, "www.example.com"));
    }

    #[test]
    fn random_text_names_hash_like_wire_names() {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..5000 {
            // Up to 253 bytes of name, labels of 1..=63 bytes, bytes of any
            // value but '.' one time in four.
            let total = 1 + rng.below(253);
            let mut name = [0u8; 256];
            let mut n = 0;
            while n < total {
                let room = total - n;
                let len = 1 + rng.below(room.min(63));
                for _ in 0..len {
                    name[n] = if rng.below(4) == 0 {
                        let b = rng.next() as u8;
                        if b == b'.' { b'x' } else { b }
                    } else {
                        CHARS[rng.below(CHARS.len())]
                    };
                    n += 1;
                }
                if n + 1 < total {
                    name[n] = b'.';
                    n += 1;
                } else {
                    break;
                }
            }
            if i % 3 == 0 && n < 254 {
                name[n] = b'.';
                n += 1;
            }
            assert_text_matches_wire(rng.next(), &name[..n]);
        }
    }

    #[test]
    fn text_name_limits() {
        let mut h = [0; LABEL_SLOTS];
        let parse = |name: &[u8], h: &mut [u64; LABEL_SLOTS]| parse_text_name(&text(name), name.len(), 1, h);
        for bad in [&b""[..], b".", b".a", b"a..b", b"a.b..", b"..", b"a.."] {
            assert_eq!(parse(bad, &mut h), Err(NameError::EmptyLabel), "{bad:?}");
        }
        let mut long = [b'a'; 256];
        assert_eq!(parse(&long[..63], &mut h), Ok(WireName { len: 65, labels: 1 }));
        assert_eq!(parse(&long[..64], &mut h), Err(NameError::LabelTooLong));
        assert_eq!(parse(&long[..200], &mut h), Err(NameError::LabelTooLong));
        long[3] = b'.';
        assert_eq!(parse(&long[..67], &mut h), Ok(WireName { len: 69, labels: 2 }));
        assert_eq!(parse(&long[..68], &mut h), Err(NameError::LabelTooLong));
        // 253 bytes of text are 255 on the wire; a trailing dot adds nothing.
        let mut name = [b'b'; 256];
        for i in (50..256).step_by(50) {
            name[i] = b'.';
        }
        assert_eq!(parse(&name[..253], &mut h), Ok(WireName { len: 255, labels: 6 }));
        name[253] = b'.';
        assert_eq!(parse(&name[..254], &mut h), Ok(WireName { len: 255, labels: 6 }));
        name[253] = b'b';
        assert_eq!(parse(&name[..254], &mut h), Err(NameError::TooLong));
        name[254] = b'.';
        assert_eq!(parse(&name[..255], &mut h), Err(NameError::TooLong));
        assert_eq!(parse(&name[..256], &mut h), Err(NameError::TooLong));
        assert_eq!(text_name_key(1, &[b'a'; 300]), Err(NameError::TooLong));
        // 127 one-byte labels: 253 bytes of text.
        let mut many = [b'.'; 256];
        for i in 0..127 {
            many[2 * i] = b'q';
        }
        assert_eq!(parse(&many[..253], &mut h), Ok(WireName { len: 255, labels: 127 }));
        assert_eq!(parse(&many[..254], &mut h), Ok(WireName { len: 255, labels: 127 }));
        // A 128th label.
        many[254] = b'q';
        assert_eq!(parse(&many[..255], &mut h), Err(NameError::TooLong));
    }

    #[test]
    fn text_labels_at_the_end_of_the_buffer() {
        // Labels ending at the buffer's last bytes, where the hashing loop's
        // words would run past it, hash like their wire forms.
        for last in 1..=63 {
            let mut name = [b'c'; 253];
            let dot = 253 - last - 1;
            name[dot] = b'.';
            for i in (61..dot - 1).step_by(61) {
                name[i] = b'.';
            }
            assert_text_matches_wire(3, &name);
        }
    }

    #[test]
    fn bytes_past_the_text_name_are_ignored() {
        let mut h1 = [0; LABEL_SLOTS];
        let mut h2 = [0; LABEL_SLOTS];
        let clean = text(b"www.example.com");
        let mut dirty = [b'.'; crate::parse::tls::MAX_SNI];
        dirty[..15].copy_from_slice(b"www.example.com");
        dirty[16] = b'z';
        let a = parse_text_name(&clean, 15, 7, &mut h1);
        let b = parse_text_name(&dirty, 15, 7, &mut h2);
        assert_eq!(a, b);
        assert_eq!(h1[..3], h2[..3]);
        let mut dirty = [b'Q'; crate::parse::tls::MAX_SNI];
        dirty[..15].copy_from_slice(b"www.example.com");
        assert_eq!(parse_text_name(&dirty, 15, 7, &mut h2), a);
        assert_eq!(h1[..3], h2[..3]);
    }

    #[test]
    fn first_dot_matches_a_byte_search() {
        let mut rng = Rng(77);
        for _ in 0..100_000 {
            let mut bytes = rng.next().to_le_bytes();
            // Plenty of dots and near-dots ('-' and '/' differ from '.' by one bit).
            for b in &mut bytes {
                match rng.below(6) {
                    0 => *b = b'.',
                    1 => *b = b'/',
                    2 => *b = b'-',
                    3 => *b = 0x2e ^ 0x80,
                    _ => {}
                }
            }
            let want = bytes.iter().position(|&b| b == b'.').unwrap_or(8);
            assert_eq!(first_dot(u64::from_le_bytes(bytes)), want, "{bytes:x?}");
        }
    }
}
