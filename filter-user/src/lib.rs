//! namewall's user space: list parsing, rule sets, the program loader, and
//! the commands built on them.

pub mod blocklist;
pub mod loader;
pub mod names;
pub mod rules;
pub mod sys;
