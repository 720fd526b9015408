//! The control API between `namewall run` and the CLI verbs (block, allow,
//! list, reload, events, ...): one JSON request per connection on a Unix
//! socket only root can use, one JSON reply.
//!
//! - [`protocol`]: the requests and replies, and [`frame`]: how they are
//!   framed on the socket;
//! - [`server`]: the daemon's end, which hands each request to the
//!   daemon's serving loop;
//! - [`client`]: the CLI's end.

pub mod client;
pub mod frame;
pub mod protocol;
pub mod server;

pub use client::{ClientError, call, call_raw, call_streaming};
pub use protocol::*;
