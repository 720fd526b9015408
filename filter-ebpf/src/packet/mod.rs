//! Packet memory: the one bounds-checked cursor, typed header views, the
//! layer parser of the entry stage, the TCP checksum check and the options
//! Linux discards a segment for.

mod checksum;
mod cursor;
pub mod headers;
mod layers;
mod options;

pub use checksum::tcp_checksum_ok;
pub use cursor::Packet;
pub use layers::{Addrs, DNS_PORT, Fragment, Layers, MAX_L2_LEN, parse};
pub use options::headers_discarded;
