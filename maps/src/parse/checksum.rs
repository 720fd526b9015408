//! Internet checksum (RFC 1071) pieces shared by the kernel's DNS answer
//! writer and the host tests that verify its output.

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

/// Adds the first `len` bytes of `buf` (a fixed-size buffer) as big-endian
/// 16-bit words, padding an odd last byte with zero. Written with a constant
/// loop bound and indices the compiler can prove in range, so the kernel
/// program can run it on map memory without a panic path.
#[inline(always)]
pub fn add_prefix<const N: usize>(mut sum: u64, buf: &[u8; N], len: usize) -> u64 {
    let mut i = 0;
    while i < N / 2 {
        let off = 2 * i;
        if off >= len {
            break;
        }
        let hi = buf[off];
        let lo = if off + 1 < len { buf[off + 1] } else { 0 };
        sum += u64::from(u16::from_be_bytes([hi, lo]));
        i += 1;
    }
    sum
}

/// Adds one 16-bit word.
#[inline(always)]
pub const fn add_u16(sum: u64, word: u16) -> u64 {
    sum + word as u64
}

/// Adds a 32-bit value as two 16-bit words.
#[inline(always)]
pub const fn add_u32(sum: u64, word: u32) -> u64 {
    sum + (word >> 16) as u64 + (word & 0xffff) as u64
}

/// Folds a running sum to 16 bits and complements it: the value to store in
/// a checksum field. A UDP checksum that computes to 0 is sent as 0xffff
/// (RFC 768); callers writing UDP use [`finish_udp`].
#[inline(always)]
pub const fn finish(mut sum: u64) -> u16 {
    // Four folds reduce any u64 to 16 bits; a fixed count pleases the verifier.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
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
    fn prefix_sum_matches_slice_sum() {
        let buf: [u8; 16] = core::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        for len in 0..=16 {
            assert_eq!(add_prefix(5, &buf, len), add_bytes(5, &buf[..len]), "len {len}");
        }
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
