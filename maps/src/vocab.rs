//! Codes both sides share, each declared once with its wire value and the
//! name user space prints, logs and labels metrics with: the protocols, the
//! rule actions, and what happens to a packet. The counters' table
//! (`crate::counters`) is written in these terms.

/// Declares a `#[repr(u8)]` code enum with its wire values and names:
/// `ALL` (by code), `name()`, `from_code()`, `TryFrom<u8>`.
macro_rules! vocabulary {
    (@unit $variant:ident) => { () };
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$doc:meta])* $variant:ident = $code:literal => $label:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$doc])* $variant = $code, )+
        }

        impl $name {
            /// Every value, in code order.
            pub const ALL: [$name; <[()]>::len(&[$($crate::vocab::vocabulary!(@unit $variant)),+])] = [$($name::$variant),+];

            /// Name in output, JSON and metric labels.
            pub const fn name(self) -> &'static str {
                match self { $($name::$variant => $label,)+ }
            }

            /// The value with this code.
            pub const fn from_code(code: u8) -> Option<$name> {
                match code {
                    $($code => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl TryFrom<u8> for $name {
            type Error = u8;
            fn try_from(code: u8) -> Result<Self, u8> {
                Self::from_code(code).ok_or(code)
            }
        }
    };
}

pub(crate) use vocabulary;

vocabulary! {
    /// The protocol a name (and the outcome of a packet) belongs to; the
    /// code of `Trace::name_kind` and `Event::name_kind`, and the `protocol`
    /// label of packet metrics.
    pub enum Protocol {
        /// No name judged; traffic namewall does not parse.
        Other = 0 => "other",
        /// A DNS QNAME, in wire format.
        Dns = 1 => "dns",
        /// A TLS server name, as sent.
        Tls = 2 => "tls",
        /// QUIC.
        Quic = 3 => "quic",
    }
}

vocabulary! {
    /// What a block rule does to a packet, the code of `Rule::action`.
    /// `Default` defers to the per-protocol default in `Settings`.
    pub enum Action {
        /// The protocol's default action from the settings.
        Default = 0 => "default",
        /// Answer the DNS query with RCODE 3 (NXDOMAIN).
        Nxdomain = 1 => "nxdomain",
        /// Answer the DNS query with RCODE 5 (REFUSED).
        Refused = 2 => "refused",
        /// Answer A queries with 0.0.0.0, AAAA with ::, anything else with NODATA.
        Sinkhole = 3 => "sinkhole",
        /// Drop the packet.
        Drop = 4 => "drop",
        /// Reset the connection (TLS); for DNS over UDP it means drop.
        Reset = 5 => "reset",
    }
}

vocabulary! {
    /// What happened to a packet: the `verdict` label of packet metrics.
    pub enum Fate {
        /// Passed on to the stack.
        Pass = 0 => "pass",
        /// Answered in place (a DNS answer sent back).
        Answer = 1 => "answer",
        /// Dropped, and the client sent a TCP reset.
        Reset = 2 => "reset",
        /// Dropped.
        Drop = 3 => "drop",
    }
}

vocabulary! {
    /// XDP actions (`enum xdp_action`), as replay and the tests print them.
    pub enum XdpAction {
        Aborted = 0 => "aborted",
        Drop = 1 => "drop",
        Pass = 2 => "pass",
        Tx = 3 => "tx",
        Redirect = 4 => "redirect",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::try_from(a as u8), Ok(a));
        }
        for p in Protocol::ALL {
            assert_eq!(Protocol::from_code(p as u8), Some(p));
        }
        assert_eq!(Action::try_from(6), Err(6));
        assert_eq!(XdpAction::from_code(3).map(XdpAction::name), Some("tx"));
    }
}
