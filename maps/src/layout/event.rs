//! Block events: what the kernel tells user space each time it blocks,
//! through the `EVENTS` ring buffer, within a per-second budget.

/// Bytes of the name an event carries: every DNS name (255 bytes on the
/// wire) and every host name (253 characters) fits.
pub const NAME_BYTES: usize = 256;

/// One block. Built in the per-CPU scratch memory (the BPF stack is too
/// small for it) and copied into the ring buffer whole.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `CLOCK_MONOTONIC` nanoseconds (`bpf_ktime_get_ns`).
    pub time_ns: u64,
    /// Key of the deciding rule; 0 when a policy blocked (ECH, no server
    /// name) rather than a rule.
    pub rule_key: u64,
    /// Interface the packet came in on.
    pub ifindex: u32,
    /// The packet's outcome counter ([`crate::Counter`] index): the action taken.
    pub outcome: u32,
    /// Client (source) and server (destination) addresses; IPv4 in the
    /// first four bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Source and destination ports as on the wire (big-endian).
    pub ports: [u8; 4],
    /// 1 for IPv6.
    pub ipv6: u8,
    /// IP protocol: 17 (UDP) or 6 (TCP).
    pub proto: u8,
    /// A [`crate::Protocol`] code: `Dns`: `name` is a QNAME in wire
    /// format; `Tls`: a host name as sent.
    pub name_kind: u8,
    /// Labels of the deciding rule.
    pub rule_labels: u8,
    /// Bytes of `name` in use.
    pub name_len: u16,
    pub pad: [u8; 6],
    /// The name, 8-byte words so the kernel copies it with word moves.
    pub name: [u64; NAME_BYTES / 8],
}

const _: () = assert!(core::mem::size_of::<Event>() == 328);

impl Event {
    pub fn sport(&self) -> u16 {
        u16::from_be_bytes([self.ports[0], self.ports[1]])
    }

    pub fn dport(&self) -> u16 {
        u16::from_be_bytes([self.ports[2], self.ports[3]])
    }

    /// The name's bytes.
    pub fn name_bytes(&self) -> &[u8] {
        // SAFETY: [u64; 32] is 256 initialised bytes, u8 has no alignment.
        let all: &[u8; NAME_BYTES] = unsafe { &*self.name.as_ptr().cast::<[u8; NAME_BYTES]>() };
        &all[..usize::from(self.name_len).min(NAME_BYTES)]
    }
}
