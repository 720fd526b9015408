//! Run-time settings the kernel program reads for every packet.

/// The single element of the `SETTINGS` array.
///
/// All-zero settings (before user space writes them) mean: seed 0, no rule
/// depths and the "cannot judge" policy pass: every packet passes until
/// user space configures the program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Seed of the name hash. Chosen at random when a deployment starts and
    /// kept for the life of its rule sets: keys depend on it.
    pub seed: u64,
    /// Bit `d - 1` is set when some installed rule has `d` labels (`d` in
    /// 1..=128). The kernel skips lookups at depths without rules, so a
    /// superset of the true mask is always safe. A packet reads the mask
    /// once, then the rule set. To swap rule sets, user space widens the
    /// mask to old | new, waits for an RCU grace period, swaps, waits again,
    /// and only then narrows it to the new mask: no packet ever skips a
    /// depth its rule set needs.
    pub depth_mask: [u64; 2],
    /// TTL of sinkhole answers, seconds.
    pub answer_ttl: u32,
    /// Default [`crate::Action`] code for blocked DNS queries.
    pub dns_action: u8,
    /// The "cannot judge" policy, [`UNJUDGED_DROP`] or [`UNJUDGED_PASS`]:
    /// what happens to a packet that may carry a name but cannot be parsed
    /// to a verdict (a malformed or split query, a fragmented query or
    /// ClientHello segment, too many tags or extension headers, a flow the
    /// full table cannot follow, a ClientHello longer than the parser walks).
    /// Packets that cannot carry a name always pass.
    pub unjudged: u8,
    /// Default [`crate::Action`] code for blocked TLS flows: reset or drop.
    pub tls_action: u8,
    /// [`policy`] bits: what ECH, missing SNI and QUIC get.
    pub policy: u8,
    /// Words in `FILTER` minus one (a power of two minus one): see [`crate::layout::filter`].
    pub filter_mask: u64,
    /// Words in `FLOW_HINT` minus one: see [`crate::layout::flow`].
    pub hint_mask: u64,
    /// Block events each CPU may send per second ([`crate::layout::event`]); 0: none.
    pub event_budget: u32,
    /// Which generation of each rule value packets read (bit 0; see
    /// [`crate::Rule`]). A reload that stages changed rules in the other
    /// generation flips it: one byte, so a packet reads the old or the new
    /// one, and every lookup of a packet uses the value it read first.
    pub generation: u8,
    pub pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<Settings>() == 56);

/// [`Settings::unjudged`]: pass what cannot be judged (fail open).
pub const UNJUDGED_PASS: u8 = 0;
/// [`Settings::unjudged`]: drop what cannot be judged (the default: a
/// client that cannot be judged is a client trying to slip past).
pub const UNJUDGED_DROP: u8 = 1;

/// Bits of [`Settings::policy`].
pub mod policy {
    /// Block a ClientHello carrying encrypted_client_hello whose outer name is allowed.
    pub const ECH_BLOCK: u8 = 1 << 0;
    /// Block a ClientHello without server_name.
    pub const NO_SNI_BLOCK: u8 = 1 << 1;
    /// Drop QUIC Initial packets, so browsers fall back to TCP and TLS.
    pub const QUIC_BLOCK: u8 = 1 << 2;
    /// Take a TCP checksum field holding only the pseudo-header's sum (the
    /// form a sender offloading its checksum leaves, see
    /// `crate::parse::checksum::offloaded_form`) as right. Set by the daemon
    /// when it attaches to a virtual interface (veth: segments from a local
    /// stack cross it in that form and the receiver trusts them unchecked)
    /// or in skb mode (generic XDP runs after GRO, whose merged segments
    /// are in that form). Off, as on a physical NIC in native mode, which
    /// hands XDP frames as they were on the wire: a field in that form is
    /// a wrong checksum there, and the receiver discards the segment.
    pub const PARTIAL_CSUM: u8 = 1 << 3;
}

/// Whether `mask` (a [`Settings::depth_mask`]) has a rule depth of
/// `depth` labels. The kernel's suffix loop calls it with a copy of the
/// mask on its stack; the masks keep every index in bounds.
#[inline(always)]
pub const fn mask_has_depth(mask: &[u64; 2], depth: u64) -> bool {
    let bit = depth.wrapping_sub(1) & 127;
    mask[(bit >> 6) as usize & 1] & (1u64 << (bit & 63)) != 0
}

impl Settings {
    /// Whether any rule has `depth` labels.
    #[inline(always)]
    pub const fn has_depth(&self, depth: usize) -> bool {
        mask_has_depth(&self.depth_mask, depth as u64)
    }

    /// Marks `depth` (1..=128) as having rules.
    pub const fn set_depth(&mut self, depth: usize) {
        let bit = depth.wrapping_sub(1) & 127;
        self.depth_mask[bit >> 6] |= 1u64 << (bit & 63);
    }

    /// The deepest depth with rules, 0 if none.
    #[inline(always)]
    pub const fn max_depth(&self) -> usize {
        if self.depth_mask[1] != 0 {
            128 - self.depth_mask[1].leading_zeros() as usize
        } else {
            64 - self.depth_mask[0].leading_zeros() as usize
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_mask() {
        let mut s = Settings::default();
        assert_eq!(s.max_depth(), 0);
        for d in [1, 2, 64, 65, 127] {
            assert!(!s.has_depth(d));
            s.set_depth(d);
            assert!(s.has_depth(d));
            assert_eq!(s.max_depth(), d);
        }
        assert!(!s.has_depth(3));
        assert!(!s.has_depth(128));
    }
}
