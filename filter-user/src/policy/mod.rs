//! What to filter: block and allow lists read into the rule set the kernel
//! holds.
//!
//! - [`names`]: domain names normalised and hashed into rule keys;
//! - [`blocklist`]: the list formats, line by line;
//! - [`rules`]: a rule set, one merged rule per name;
//! - [`listdiff`]: which lines of a list changed, so a reload reads only those;
//! - [`fetch`]: lists from URLs, cached on disk;
//! - [`PolicySource`] and [`Policy`]: the lists a deployment names, loaded
//!   whole or reloaded by their changed lines.
//!
//! Nothing here touches the kernel: the dataplane installs what this builds.

pub mod blocklist;
pub mod fetch;
pub mod listdiff;
mod load;
pub mod names;
pub mod rules;

pub use load::{LineChanges, ListStats, Policy, PolicyError, PolicySource, Reload};
