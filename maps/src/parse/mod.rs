//! The pure parsers the kernel program and user space share, written for
//! the verifier (constant loop bounds, masked indices, no panics) and
//! tested on the host: against real ClientHellos and names, randomised
//! inputs, and the kernel's own results on the same bytes.
//!
//! - [`name`]: DNS names in wire format and as text, normalised and hashed
//!   label by label into the suffix keys rules are found by;
//! - [`tls`]: the ClientHello state machine over a TCP byte stream;
//! - [`sni`]: its one-pass fast path for a ClientHello whose first segment
//!   holds the name;
//! - [`checksum`]: the one's-complement sums of the replies the kernel
//!   writes.

pub mod checksum;
pub mod name;
pub mod sni;
pub mod tls;
