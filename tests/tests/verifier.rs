//! The verifier's budget: every program of the object (the entry program
//! and each stage it tail-calls) is accepted within 40% of the verifier's
//! one-million-instruction limit, so each has room for what is planned
//! next. The bench reports the counts and fails past 60%.

use aya::maps::ProgramArray;
use filter_user::dataplane::{Filter, LoadOptions};
use maps::Stage;

const LIMIT: u32 = 1_000_000;

#[test]
fn every_program_within_forty_percent_of_the_verifier_limit() {
    for (trace, debug_log) in [(false, false), (true, false), (false, true)] {
        let f = Filter::load(LoadOptions { trace, debug_log, ..LoadOptions::default() }).expect("load");
        let counts = f.verified_instructions().expect("program info");
        let map = f.ebpf().map(maps::layout::names::STAGES).expect("the STAGES map");
        let stages = ProgramArray::try_from(map).expect("a program array");
        let filled: Vec<u32> = stages.indices().map(|i| i.expect("a slot")).collect();
        for stage in Stage::ALL {
            assert!(filled.contains(&stage.index()), "{} is not in its STAGES slot {}", stage.name(), stage.index());
        }
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
