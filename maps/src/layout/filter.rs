//! A bit filter in front of the rule-set hash map.
//!
//! Most suffixes of most queried names match no rule, and a hash-map lookup
//! (hashing the key again, walking a bucket) costs as much as parsing a
//! label. `FILTER` is an array of 64-bit words with one bit per key position:
//! a clear bit proves the key is in no installed rule set, so the kernel
//! skips the lookup; a set bit means "maybe". Keys are already uniformly
//! mixed, so the bit position is taken straight from them. At 16 bits per
//! rule about 6% of absent keys still take the lookup.
//!
//! The filter only ever needs to be a superset of the active rule set's
//! keys. User space sets bits before it adds a rule, and when it swaps rule
//! sets it installs the union of both sets' bits first, and the new set's
//! bits only after no packet can still be using the old set. A stale bit
//! costs a lookup; a missing bit would lose a rule, and never happens.

/// Bits of filter per rule when sizing it.
pub const BITS_PER_RULE: usize = 16;
/// Smallest filter, in 64-bit words (8 KiB).
pub const MIN_WORDS: usize = 1 << 10;
/// Largest filter, in 64-bit words (128 MiB, 64M rules at 16 bits).
pub const MAX_WORDS: usize = 1 << 24;

/// Words of filter for `rules` rules: a power of two.
pub const fn words_for(rules: usize) -> usize {
    let want = (rules * BITS_PER_RULE).div_ceil(64);
    let w = if want < MIN_WORDS { MIN_WORDS } else { want.next_power_of_two() };
    if w > MAX_WORDS { MAX_WORDS } else { w }
}

/// The word index and bit of `key` in a filter of `mask + 1` words.
#[inline(always)]
pub const fn position(key: u64, mask: u64) -> (u32, u64) {
    (((key >> 6) & mask) as u32, 1u64 << (key & 63))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_powers_of_two_within_bounds() {
        assert_eq!(words_for(0), MIN_WORDS);
        assert_eq!(words_for(1_000_000), 1 << 18);
        assert_eq!(words_for(usize::MAX / 64), MAX_WORDS);
        for n in [1, 1000, 4097, 100_000, 10_000_000] {
            let w = words_for(n);
            assert!(w.is_power_of_two() && w * 64 >= (n * BITS_PER_RULE).min(MAX_WORDS * 64), "{n}");
        }
    }

    #[test]
    fn positions_stay_in_the_filter() {
        for key in [0u64, 1, 63, 64, u64::MAX, 0x1234_5678_9abc_def0] {
            let (w, b) = position(key, 1023);
            assert!(w < 1024);
            assert_eq!(b.count_ones(), 1);
        }
    }
}
