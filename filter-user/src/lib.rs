//! namewall's user space: list parsing, rule sets, the program loader, and
//! the commands built on them.

pub mod blocklist;
pub mod loader;
pub mod names;
pub mod policy;
pub mod replay;
pub mod rules;
pub mod stats;
pub mod sys;
