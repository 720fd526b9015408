//! namewall's user space: list parsing, rule sets, the program loader, and
//! the commands built on them.

pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod files;
pub mod policy;
pub mod replay;
