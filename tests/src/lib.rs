//! Fixtures for namewall's integration tests and benchmark: packet
//! builders, DNS message helpers, a harness around the loaded XDP program,
//! and network-namespace fixtures that clean up on drop.

pub mod dnswire;
pub mod edits;
pub mod evasion;
pub mod fuzz;
pub mod harness;
pub mod netns;
pub mod packet;
pub mod report;
pub mod tls;
pub mod tlslab;
