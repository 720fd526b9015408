//! namewall's user space, as a library; the `namewall` binary (`main.rs`
//! and its `cli/` folder) parses the command line and calls it.
//!
//! - [`policy`]: what to filter: block and allow lists (files and URLs)
//!   read into a rule set, and reloaded by their changed lines;
//! - [`control`]: the control API between the daemon and the CLI verbs:
//!   the messages, the daemon's socket server and the CLI's client;
//! - [`dataplane`]: the kernel side: the XDP object loaded, its maps,
//!   rule sets put in force, links to interfaces, pinning, test runs;
//! - [`daemon`]: `namewall run`'s state and serving loop: control
//!   requests, the operator's rules, reloads, block events, metrics;
//! - [`replay`]: a capture through the loaded program, packet by packet;
//! - [`files`]: durable writes and root-only directories; [`errors`]:
//!   errors as one line of text.
//!
//! Imports go downward, never in a circle: a module uses only modules of
//! the layers below its own.
//!
//! ```text
//! 3  daemon   replay     what `run` and `replay` do
//! 2  dataplane           the kernel side
//! 1  control  policy     the messages; the lists and their rules
//! 0  files    errors     durable writes; errors as text
//! ```
//!
//! `daemon` uses `control`, `dataplane`, `policy` and `files`; `replay`
//! uses `dataplane` and `policy`; `dataplane` uses `policy` (the rule sets
//! it installs); `control` and `policy` use `files`; `errors` is used
//! throughout and uses nothing. Within a folder the same holds between its
//! files (`tests/tests/layout.rs` checks that no two import each other, in
//! any circle).

pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod errors;
pub mod files;
pub mod policy;
pub mod replay;
