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
}
