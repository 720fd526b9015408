//! BENCHMARKS.md, written by more than one tool: `cargo xtask bench` writes
//! the file, `cargo xtask fuzz --record` its "Fuzzing" section, and each
//! keeps what the other wrote.

/// The heading of the section the fuzz run records.
pub const FUZZ_HEADING: &str = "## Fuzzing";

/// The machine, for reports: kernel, CPU model and count.
pub fn machine() -> String {
    let uname = std::process::Command::new("uname")
        .arg("-srm")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or_default().trim().to_owned())
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!("{uname}, {cpu}, {cpus} CPUs")
}

/// Where the section with `heading` (a `## ` line) starts and ends in `doc`:
/// from its heading to the next `## ` heading or the end.
fn span(doc: &str, heading: &str) -> Option<(usize, usize)> {
    let start = if doc.starts_with(&format!("{heading}\n")) { 0 } else { doc.find(&format!("\n{heading}\n"))? + 1 };
    let body = start + heading.len();
    let end = doc[body..].find("\n## ").map_or(doc.len(), |i| body + i + 1);
    Some((start, end))
}

/// The section with `heading` of `doc`, heading included.
pub fn section<'a>(doc: &'a str, heading: &str) -> Option<&'a str> {
    span(doc, heading).map(|(s, e)| &doc[s..e])
}

/// `doc` with the section of `section`'s heading (its first line) replaced
/// by `section`, or `section` appended.
pub fn with_section(doc: &str, section: &str) -> String {
    let heading = section.lines().next().unwrap_or_default();
    let section = format!("{}\n", section.trim_end_matches('\n'));
    match span(doc, heading) {
        Some((s, e)) => {
            let rest = &doc[e..];
            let sep = if rest.is_empty() { "" } else { "\n" };
            format!("{}{section}{sep}{rest}", &doc[..s])
        }
        None if doc.is_empty() => section,
        None => format!("{}\n\n{section}", doc.trim_end_matches('\n')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_or_appended() {
        let doc = "# B\n\n## One\n\na\n\n## Fuzzing\n\nold\n\n## Two\n\nb\n";
        assert_eq!(section(doc, FUZZ_HEADING), Some("## Fuzzing\n\nold\n\n"));
        let new = with_section(doc, "## Fuzzing\n\nnew\n");
        assert_eq!(new, "# B\n\n## One\n\na\n\n## Fuzzing\n\nnew\n\n## Two\n\nb\n");
        assert_eq!(with_section("# B\n", "## Fuzzing\n\nx\n"), "# B\n\n## Fuzzing\n\nx\n");
        assert_eq!(with_section("# B\n\n## Fuzzing\n\nold\n", "## Fuzzing\n\nx\n"), "# B\n\n## Fuzzing\n\nx\n");
        assert_eq!(section("# B\n", FUZZ_HEADING), None);
    }
}
