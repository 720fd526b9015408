//! Counter snapshots for people and machines.

use std::{collections::BTreeMap, fmt::Write as _};

use maps::{
    Counter,
    counters::{COUNT, CounterKind},
};

/// Counter totals indexed by [`Counter`].
pub type Counters = [u64; COUNT];

/// Totals over the interface rows of `COUNTERS` (see
/// `maps::counters::IFACE_BUCKETS`), per counter.
pub fn totals(rows: &[u64]) -> Counters {
    let mut out = [0u64; COUNT];
    for row in rows.chunks_exact(COUNT) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
    out
}

/// `after - before`, per counter.
pub fn delta(after: &Counters, before: &Counters) -> Counters {
    let mut d = [0; COUNT];
    for i in 0..COUNT {
        d[i] = after[i].wrapping_sub(before[i]);
    }
    d
}

/// Packets seen: the sum of the outcome counters (each packet bumps exactly one).
pub fn packets(c: &Counters) -> u64 {
    Counter::ALL.iter().filter(|k| k.kind() != CounterKind::Extra).map(|k| c[*k as usize]).sum()
}

/// Non-zero counters by name.
pub fn non_zero(c: &Counters) -> BTreeMap<&'static str, u64> {
    Counter::ALL.iter().filter(|k| c[**k as usize] != 0).map(|k| (k.name(), c[*k as usize])).collect()
}

/// One line: `packets=12 nxdomain=3 pass_no_match=9`.
pub fn one_line(c: &Counters) -> String {
    let mut s = format!("packets={}", packets(c));
    for k in Counter::ALL {
        let v = c[*k as usize];
        if v != 0 {
            let _ = write!(s, " {}={v}", k.name());
        }
    }
    s
}

/// A table of the non-zero counters, grouped by kind.
pub fn table(c: &Counters) -> String {
    let mut s = String::new();
    for (kind, title) in [
        (CounterKind::Verdict, "verdicts"),
        (CounterKind::Skipped, "not judged"),
        (CounterKind::Unjudged, "not judgeable (--unjudged)"),
        (CounterKind::Extra, "events"),
    ] {
        let rows: Vec<_> = Counter::ALL.iter().filter(|k| k.kind() == kind && c[**k as usize] != 0).collect();
        if rows.is_empty() {
            continue;
        }
        s.push_str(title);
        s.push('\n');
        for k in rows {
            let _ = writeln!(s, "  {:<24} {:>12}", k.name(), c[*k as usize]);
        }
    }
    if s.is_empty() {
        s.push_str("no packets seen\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_ignore_extras() {
        let mut c = [0; COUNT];
        c[Counter::Nxdomain as usize] = 2;
        c[Counter::NotIp as usize] = 3;
        c[Counter::RewriteFailed as usize] = 7;
        assert_eq!(packets(&c), 5);
        assert_eq!(one_line(&c), "packets=5 not_ip=3 nxdomain=2 rewrite_failed=7");
        assert!(table(&c).contains("verdicts\n  nxdomain"));
    }
}
