//! The loaded XDP program with a rule set, run one packet at a time.

use filter_user::{
    dataplane::{Filter, LoadOptions, TlsPolicy},
    policy::blocklist::{self, ListKind},
    policy::rules::RuleSet,
};
use maps::{
    Action, Counter, Trace,
    counters::{COUNT, CounterKind},
};

/// What the program did with one packet.
#[derive(Clone, Debug)]
pub struct Observed {
    pub action: u32,
    pub output: Vec<u8>,
    /// The outcome the program recorded.
    pub outcome: Counter,
    pub trace: Trace,
    /// Counter increments caused by this packet.
    pub delta: [u64; COUNT],
}

impl Observed {
    pub fn action_name(&self) -> &'static str {
        filter_user::dataplane::action_name(self.action)
    }

    /// Exactly one outcome counter moved, by one, and it is the traced outcome.
    pub fn one_outcome(&self) -> Result<(), String> {
        let moved: Vec<(&str, u64)> = Counter::ALL
            .iter()
            .filter(|c| c.kind() != CounterKind::Extra && self.delta[**c as usize] != 0)
            .map(|c| (c.name(), self.delta[*c as usize]))
            .collect();
        if self.outcome.kind() == CounterKind::Extra || moved != [(self.outcome.name(), 1)] {
            return Err(format!("outcome counters moved {moved:?}, want only the traced {} by 1", self.outcome.name()));
        }
        Ok(())
    }
}

/// A program loaded with tracing on and a rule set from list texts.
pub struct Harness {
    pub filter: Filter,
    pub rules: RuleSet,
}

impl Harness {
    /// Loads with `block` and `allow` list texts (any supported format).
    pub fn new(block: &str, allow: &str) -> Self {
        Self::with(block, allow, Action::Nxdomain, false)
    }

    pub fn with(block: &str, allow: &str, dns_action: Action, unjudged_drop: bool) -> Self {
        Self::with_options(block, allow, LoadOptions::default(), dns_action, unjudged_drop, TlsPolicy::default())
    }

    /// Loads with `block` and `allow` list texts and the TLS policy `tls`
    /// (NXDOMAIN for DNS, `--unjudged pass`, the default flow table).
    pub fn with_tls(block: &str, allow: &str, tls: TlsPolicy) -> Self {
        Self::with_options(block, allow, LoadOptions::default(), Action::Nxdomain, false, tls)
    }

    /// Loads with everything chosen: `opts` (tracing is forced on: every
    /// run reads the decision back), the DNS action and fail mode, the TLS policy.
    pub fn with_options(
        block: &str,
        allow: &str,
        opts: LoadOptions,
        dns_action: Action,
        unjudged_drop: bool,
        tls: TlsPolicy,
    ) -> Self {
        let mut filter = Filter::load(LoadOptions { trace: true, ..opts }).expect("load the XDP program");
        filter.configure(dns_action, unjudged_drop, 60).expect("configure");
        filter.configure_tls(tls).expect("configure TLS");
        let seed = rand::random();
        let mut rules = RuleSet::new(seed);
        for (text, kind) in [(block, ListKind::Block), (allow, ListKind::Allow)] {
            let parsed = blocklist::parse_bytes(text.as_bytes(), "test", kind);
            assert!(parsed.errors.is_empty(), "bad test list: {:?}", parsed.errors);
            assert!(rules.extend(&parsed.entries).is_empty());
        }
        filter.install(&rules).expect("install rules");
        Self { filter, rules }
    }

    /// Runs one packet as a table row: on its own, the first of its DNS
    /// connection if it is DNS over TCP (the streams of packets run before
    /// are forgotten). Panics if the run fails.
    pub fn run(&self, packet: &[u8]) -> Observed {
        self.filter.forget_dns_streams().expect("forget DNS streams");
        self.run_in_stream(packet)
    }

    /// Runs one packet after those run before, DNS streams kept (see
    /// `maps::layout::dns_stream`), and reports what happened. Panics if
    /// the run fails.
    pub fn run_in_stream(&self, packet: &[u8]) -> Observed {
        let before = self.filter.counters_of_rows(2).expect("counters");
        let seq = self.filter.trace().expect("trace").seq;
        let r = self.filter.run(packet).expect("test run");
        let after = self.filter.counters_of_rows(2).expect("counters");
        let trace = self.filter.trace().expect("trace");
        assert_eq!(trace.seq, seq + 1, "the program recorded no decision");
        let mut delta = [0u64; COUNT];
        for i in 0..COUNT {
            delta[i] = after[i] - before[i];
        }
        let outcome = Counter::from_index(trace.outcome).expect("valid outcome index");
        Observed { action: r.action, output: r.output, outcome, trace, delta }
    }

    /// Name of the rule that decided, from the trace and the packet.
    pub fn rule_name(&self, o: &Observed) -> Option<String> {
        (o.trace.rule_key != 0).then(|| {
            self.rules
                .get(o.trace.rule_key)
                .map_or_else(|| format!("?{:#x}", o.trace.rule_key), |r| r.domain.to_string())
        })
    }
}
