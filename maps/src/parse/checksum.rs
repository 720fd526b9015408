//! Internet checksum (RFC 1071) pieces shared by the kernel's reply
//! writers and the host tests that verify their output.

/// Adds `bytes` to a running one's-complement sum as big-endian 16-bit words.
/// An odd trailing byte is padded with zero, as RFC 1071 §4.1 prescribes; so
/// call this only on the last chunk of a message or on chunks of even length.
#[inline(always)]
pub fn add_bytes(mut sum: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

/// Folds a running sum to 16 bits (end-around carry), not complemented:
/// a partial sum to add into another, byte-swapped if it was summed at an
/// odd offset (RFC 1071 §2(B)).
#[inline(always)]
pub const fn fold(mut sum: u64) -> u16 {
    // Four folds reduce any u64 to 16 bits; a fixed count pleases the verifier.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Folds a running sum to 16 bits and complements it: the value to store in
/// a checksum field. A UDP checksum that computes to 0 is sent as 0xffff
/// (RFC 768); callers writing UDP use [`finish_udp`].
#[inline(always)]
pub const fn finish(sum: u64) -> u16 {
    !fold(sum)
}

/// [`finish`] for UDP, where 0 means "no checksum" and is replaced by 0xffff.
#[inline(always)]
pub const fn finish_udp(sum: u64) -> u16 {
    match finish(sum) {
        0 => 0xffff,
        c => c,
    }
}

/// The TCP pseudo-header (RFC 9293 §3.1; for IPv6, RFC 8200 §8.1) summed:
/// source and destination addresses (4 or 16 bytes each), the protocol
/// number and the TCP length (header and payload), as 32 bits, which for
/// IPv4 adds the same as its 16.
#[inline(always)]
pub fn pseudo_header<const N: usize>(src: &[u8; N], dst: &[u8; N], proto: u8, tcp_len: u32) -> u64 {
    add_bytes(add_bytes(0, src), dst) + u64::from(proto) + u64::from(tcp_len >> 16) + u64::from(tcp_len & 0xffff)
}

/// What a sender that leaves the checksum to its device (checksum offload,
/// `CHECKSUM_PARTIAL`) has in the field: the pseudo-header's sum, folded,
/// not complemented (Linux: `__tcp_v4_send_check` and `__tcp_v6_send_check`
/// write `~tcp_v4_check(len, saddr, daddr, 0)`; GRO writes the same form
/// into segments it merges, `tcp4_gro_complete`). The device then adds the
/// segment's words and stores the complement. Between two virtual devices
/// (veth) no device ever does: the receiver trusts the flag in the skb, and
/// the field stays in this form on the wire XDP sees.
#[inline(always)]
pub const fn offloaded_form(pseudo: u64) -> u16 {
    fold(pseudo)
}

/// Whether a segment's checksum is right: its pseudo-header's sum and the
/// sum of every word of the segment (the header with its checksum field,
/// and the payload) add up to negative zero (RFC 1071 §1), as the
/// receiver checks it (Linux: `tcp_checksum_complete`).
#[inline(always)]
pub const fn sums_to_zero(pseudo: u64, segment: u64) -> bool {
    finish(pseudo + segment) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 §3 worked example.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        let sum = add_bytes(0, &data);
        assert_eq!(finish(sum), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(add_bytes(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn data_with_its_checksum_sums_to_zero() {
        let mut data = [0x45u8, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let c = finish(add_bytes(0, &data));
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(finish(add_bytes(0, &data)), 0);
    }

    /// A real segment (the SYN of the veth capture in the kernel's
    /// `packet::checksum` docs: 10.77.0.1:39486 to 10.77.0.2:8080) with its
    /// full checksum, and in the offload form the sender's stack left.
    #[test]
    fn tcp_segments_full_and_offloaded() {
        let (src, dst) = ([10, 77, 0, 1], [10, 77, 0, 2]);
        let mut syn = [
            0x9a, 0x3e, 0x1f, 0x90, 0x69, 0xa9, 0x6b, 0x35, 0, 0, 0, 0, 0xa0, 0x02, 0xfa, 0xf0, 0x14, 0xcb, 0, 0, 0x02,
            0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x71, 0x5a, 0xcb, 0x57, 0, 0, 0, 0, 0x01, 0x03, 0x03, 0x0a,
        ];
        let pseudo = pseudo_header(&src, &dst, 6, syn.len() as u32);
        // As captured: the field holds the pseudo-header's sum (tcpdump:
        // "cksum 0x14cb (incorrect -> 0x6d10)").
        assert_eq!(offloaded_form(pseudo), 0x14cb);
        assert!(!sums_to_zero(pseudo, add_bytes(0, &syn)));
        syn[16..18].copy_from_slice(&0x6d10u16.to_be_bytes());
        assert!(sums_to_zero(pseudo, add_bytes(0, &syn)));
        // One bit off anywhere, in the segment or the pseudo-header: wrong.
        syn[39] ^= 1;
        assert!(!sums_to_zero(pseudo, add_bytes(0, &syn)));
        syn[39] ^= 1;
        assert!(!sums_to_zero(pseudo_header(&src, &[10, 77, 0, 3], 6, 40), add_bytes(0, &syn)));
    }

    #[test]
    fn ipv6_pseudo_header_counts_a_32_bit_length() {
        let a = [0xfdu8; 16];
        assert_eq!(pseudo_header(&a, &a, 6, 0x1_0002), add_bytes(add_bytes(0, &a), &a) + 6 + 1 + 2);
    }
}
