//! The verifier's budget: every program of the object (the entry program
//! and each stage it tail-calls) is accepted within 40% of the verifier's
//! one-million-instruction limit, so each has room for what is planned
//! next. The bench reports the counts and fails past 60%.

use filter_user::dataplane::{Filter, LoadOptions};
use maps::Stage;

const LIMIT: u32 = 1_000_000;

#[test]
fn every_program_within_forty_percent_of_the_verifier_limit() {
    for (trace, debug_log) in [(false, false), (true, false), (false, true)] {
        let f = Filter::load(LoadOptions { trace, debug_log, ..LoadOptions::default() }).expect("load");
        let counts = f.verified_instructions().expect("program info");
        let names: Vec<&str> = counts.iter().map(|(n, _)| *n).collect();
        let mut want = vec![maps::layout::names::PROGRAM];
        want.extend(Stage::ALL.iter().map(|s| s.program()));
        assert_eq!(names, want, "every stage is loaded");
        for (name, n) in counts {
            let n = n.expect("the kernel reports verified instruction counts");
            let object = if debug_log {
                "debug object"
            } else if trace {
                "traced"
            } else {
                "release"
            };
            eprintln!("{name} ({object}): {n} instructions verified");
            assert!(n <= LIMIT / 100 * 40, "{name} ({object}) takes the verifier {n} instructions, over 40%");
        }
    }
}
