//! namewall's user space: list parsing, rule sets, the program loader, and
//! the commands built on them.

pub mod config;
pub mod control;
pub mod daemon;
pub mod events;
pub mod files;
pub mod loader;
pub mod metrics;
pub mod pins;
pub mod policy;
pub mod replay;
pub mod state;
pub mod stats;
pub mod sys;
