//! Packet memory: the one bounds-checked cursor, typed header views, and
//! the layer parser of the entry stage.

mod cursor;
pub mod headers;
mod layers;

pub use cursor::Packet;
pub use layers::{Addrs, DNS_PORT, Fragment, Layers, MAX_L2_LEN, parse};
