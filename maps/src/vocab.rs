//! Codes both sides share, each declared once with its wire value and the
//! name user space prints, logs and labels metrics with.

/// The protocol a name (and the outcome of a packet) belongs to; the code
/// of `Trace::name_kind` and `Event::name_kind`, and the `protocol` label of
/// packet metrics.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// No name judged; traffic namewall does not parse.
    Other = 0,
    /// A DNS QNAME, in wire format.
    Dns = 1,
    /// A TLS server name, as sent.
    Tls = 2,
    /// QUIC.
    Quic = 3,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [Protocol::Other, Protocol::Dns, Protocol::Tls, Protocol::Quic];

    /// Name in output, JSON and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Other => "other",
            Protocol::Dns => "dns",
            Protocol::Tls => "tls",
            Protocol::Quic => "quic",
        }
    }

    /// The protocol with this code.
    pub const fn from_code(code: u8) -> Option<Protocol> {
        if (code as usize) < Self::ALL.len() { Some(Self::ALL[code as usize]) } else { None }
    }
}

/// What happened to a packet: the `verdict` label of packet metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fate {
    /// Passed on to the stack.
    Pass,
    /// Answered in place (a DNS answer sent back).
    Answer,
    /// Dropped, and the client sent a TCP reset.
    Reset,
    /// Dropped.
    Drop,
}

impl Fate {
    pub const ALL: [Fate; 4] = [Fate::Pass, Fate::Answer, Fate::Reset, Fate::Drop];

    /// Name in output, JSON and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Fate::Pass => "pass",
            Fate::Answer => "answer",
            Fate::Reset => "reset",
            Fate::Drop => "drop",
        }
    }
}
