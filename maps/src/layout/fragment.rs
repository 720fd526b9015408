//! IP fragments of datagrams the program dropped (`FRAGMENTS`).
//!
//! The program does not reassemble. It judges what the first fragment of a
//! datagram shows (a DNS question that it holds whole), and drops the first
//! fragment when that cannot decide (the question goes on in later
//! fragments, a TCP segment of a flow not yet decided, a first fragment
//! too short for its transport header) or when it is blocked. Without its
//! first fragment no receiver reassembles the datagram; the later fragments
//! are dropped too, so they do not wait in the receiver's reassembly queue,
//! by their (source, destination, identification, protocol): the first
//! fragment's drop records that key here, and a later fragment with a key
//! recorded within [`TTL_NS`] is dropped.
//!
//! An LRU map of fixed size: a flood of fragments evicts older entries,
//! which only lets later fragments of an already incomplete datagram pass.
//! Not pinned: a restarted daemon starts with an empty table, with the same
//! harmless effect.

/// Entries of `FRAGMENTS`.
pub const ENTRIES: u32 = 8192;

/// How long a dropped datagram's later fragments are dropped: the longest
/// time Linux keeps an incomplete datagram (`ip6frag_time`, 60 s; IPv4's
/// `ipfrag_time` is 30 s). An identification is reused after that, and a
/// datagram that reuses it is another one.
pub const TTL_NS: u64 = 60_000_000_000;

const SALT: u64 = 0x4528_21e6_38d0_1377;

/// Key of an IPv4 datagram: source, destination, identification and
/// protocol (RFC 791 §3.2), hashed with the deployment's seed.
#[inline(always)]
pub const fn key_v4(seed: u64, src: u32, dst: u32, id: u16, proto: u8) -> u64 {
    super::flow::flow_key_v4(seed ^ SALT, src, dst, id, proto as u16)
}

/// Key of an IPv6 datagram: source, destination and the Fragment header's
/// 32-bit identification (RFC 8200 §4.5).
#[inline(always)]
pub const fn key_v6(seed: u64, src: [u64; 2], dst: [u64; 2], id: u32) -> u64 {
    super::flow::flow_key_v6(seed ^ SALT, src, dst, (id >> 16) as u16, id as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_every_part() {
        let base = key_v4(1, 10, 20, 7, 17);
        for other in [
            key_v4(2, 10, 20, 7, 17),
            key_v4(1, 11, 20, 7, 17),
            key_v4(1, 10, 21, 7, 17),
            key_v4(1, 10, 20, 8, 17),
            key_v4(1, 10, 20, 7, 6),
        ] {
            assert_ne!(base, other);
        }
        // Not a flow's key: the same numbers as a 4-tuple hash elsewhere.
        assert_ne!(base, super::super::flow::flow_key_v4(1, 10, 20, 7, 17));
        let v6 = key_v6(1, [1, 2], [3, 4], 0x0001_0002);
        for other in [
            key_v6(1, [1, 2], [3, 4], 0x0001_0003),
            key_v6(1, [1, 2], [3, 5], 0x0001_0002),
            key_v6(1, [2, 1], [3, 4], 0x0001_0002),
        ] {
            assert_ne!(v6, other);
        }
    }
}
