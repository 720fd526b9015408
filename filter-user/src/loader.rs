//! Loading the XDP program, filling its maps and running it.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::{
    Ebpf, EbpfError, EbpfLoader, TestRun as _,
    maps::{Array, ArrayOfMaps, HashMap, IterableMap as _, MapData, MapError, PerCpuArray},
    programs::{
        ProgramError, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use maps::{Rule, Settings, Trace, counters::COUNT, names};
use thiserror::Error;

use crate::{
    pins::PinDir,
    policy::rules::{self, RuleSet},
    sys,
};

/// The namewall XDP object, built by build.rs.
pub static NAMEWALL_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/namewall-xdp"));
/// The benchmarks' baseline XDP object.
pub static BASELINE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baseline-xdp"));

/// Errors from loading and driving the program. Messages name the step;
/// the cause is the error's source, which `{:#}` (anyhow) prints after it.
#[derive(Debug, Error)]
pub enum FilterError {
    #[error("loading the XDP object")]
    Load(#[from] EbpfError),
    #[error("{context}")]
    Program { context: String, source: ProgramError },
    #[error("map {map}")]
    Map { map: &'static str, source: MapError },
    #[error("map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("program {0} missing from the object")]
    MissingProgram(&'static str),
    #[error("filling the rule set")]
    Fill(#[from] sys::SysError),
    #[error("interface {0:?} does not exist")]
    NoSuchInterface(String),
    #[error("the rule set was hashed with seed {got:#x} but the program uses {want:#x}")]
    SeedMismatch { got: u64, want: u64 },
    #[error("{0} flows is more than a map can hold")]
    TooManyFlows(usize),
    #[error("rule set of {0} rules is larger than a map can hold")]
    TooManyRules(usize),
    #[error("an event buffer of {0} bytes: it must be a power of two from 4096 to 1 GiB")]
    EventBuffer(usize),
    #[error("adopting the pinned filter: {0}")]
    Adopt(String),
    #[error("{0}")]
    Pin(#[from] crate::pins::PinError),
    #[error("XDP link: {0}")]
    Link(String),
    #[error("no rule set installed yet")]
    NoRuleSet,
    #[error("the active rule set is full ({capacity} rules)")]
    RuleSetFull { capacity: usize },
    #[error("an earlier switch of rule generations did not finish; a new rule set must be installed")]
    Unsettled,
    #[error("reading the rule set (bpf_map_lookup_batch): {0}")]
    Dump(std::io::Error),
    #[error("waiting for packets in flight (membarrier): {0}")]
    Sync(std::io::Error),
    #[error("reading the counters: {0}")]
    Counters(std::io::Error),
    #[error("reading kernel memory use: {0}")]
    Memory(std::io::Error),
}

/// Removes `key` from the active set, counting it out of `len` if it was
/// there.
fn remove_key(active: &mut HashMap<MapData, u64, Rule>, len: &mut usize, key: u64) -> Result<(), FilterError> {
    match active.remove(&key) {
        Ok(()) => *len = len.saturating_sub(1),
        Err(MapError::KeyNotFound) => {}
        Err(e) => return Err(map_err("rule set")(e)),
    }
    Ok(())
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> FilterError {
    move |source| FilterError::Map { map, source }
}

/// How to load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Pin maps and links there, adopting what a running filter pinned.
    pub pin: Option<PinDir>,
    /// Record every decision in the `TRACE` map (replay and tests).
    pub trace: bool,
    /// Rules the deployment expects, to size the negative-lookup filter
    /// (`maps::filter`); more rules still work, with more lookups.
    pub expected_rules: usize,
    /// TLS flows tracked at once (`maps::flow`); 0 means [`DEFAULT_MAX_FLOWS`].
    pub max_flows: usize,
    /// Bytes of the block event ring buffer (a power of two of at least a
    /// page); 0 means [`DEFAULT_EVENT_BUFFER`].
    pub event_buffer: usize,
}

/// Bytes of the event ring buffer unless configured: some 3000 events.
pub const DEFAULT_EVENT_BUFFER: usize = 1 << 20;

/// Flows tracked at once unless configured: new connections between SYN
/// and first data, ClientHellos in progress, blocked flows.
pub const DEFAULT_MAX_FLOWS: usize = 65_536;

/// What blocked TLS flows get and how ECH, missing server names and QUIC
/// are treated.
#[derive(Clone, Copy, Debug)]
pub struct TlsPolicy {
    /// `Reset` (the default) or `Drop`.
    pub action: maps::Action,
    /// Block ClientHellos carrying encrypted_client_hello whose outer name is allowed.
    pub ech_block: bool,
    /// Block ClientHellos without server name.
    pub no_sni_block: bool,
    /// Drop QUIC Initial packets.
    pub quic_block: bool,
}

impl Default for TlsPolicy {
    fn default() -> Self {
        Self { action: maps::Action::Reset, ech_block: false, no_sni_block: false, quic_block: false }
    }
}

/// What the program did with one packet in a test run.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// XDP action code.
    pub action: u32,
    /// The packet as the program left it.
    pub output: Vec<u8>,
}

/// XDP action names, as `replay` prints them.
pub fn action_name(action: u32) -> &'static str {
    match action {
        0 => "aborted",
        1 => "drop",
        2 => "pass",
        3 => "tx",
        4 => "redirect",
        _ => "unknown",
    }
}

/// Headroom for rule sets: live additions fit without rebuilding the map.
fn capacity_for(rules: usize) -> Result<u32, FilterError> {
    let cap = rules + rules / 64 + 1024;
    u32::try_from(cap).map_err(|_| FilterError::TooManyRules(rules))
}

/// One interface the program is attached to.
struct Attached {
    iface: String,
    /// A BPF link (Linux 5.9+; namewall needs 5.18): pinnable, replaced
    /// atomically by the next version, detached when the last reference
    /// goes.
    link: FdLink,
    /// The link's pin, if pinned: the attachment outlives the process.
    pin: Option<std::path::PathBuf>,
}

/// The loaded program and its maps.
pub struct Filter {
    ebpf: Ebpf,
    settings: Settings,
    active: Option<HashMap<MapData, u64, Rule>>,
    /// The filter bits of the active set, as installed.
    installed_bits: Vec<u64>,
    /// `FLOW_HINT` mapped into this process, for the flow sweep.
    hint: Option<sys::SharedCounters>,
    links: Vec<Attached>,
    /// Where maps and links are pinned, if they are.
    pin: Option<PinDir>,
    /// Rules in the active set, and how many it can hold.
    active_len: usize,
    active_capacity: usize,
    /// A [`Filter::transition`] started and did not finish: the generation
    /// packets do not read may hold rules of neither set, so no further
    /// transition may flip to it; the next change installs a fresh set.
    unsettled: bool,
}

impl Filter {
    /// Loads the program into the kernel (verifier included) without attaching it.
    pub fn load(opts: LoadOptions) -> Result<Self, FilterError> {
        let trace = u8::from(opts.trace);
        let adopted = opts.pin.as_ref().is_some_and(PinDir::adopted);
        let words = maps::filter::words_for(opts.expected_rules);
        let flows = if opts.max_flows == 0 { DEFAULT_MAX_FLOWS } else { opts.max_flows };
        let flows = u32::try_from(flows).map_err(|_| FilterError::TooManyFlows(flows))?;
        let hint = maps::flow::hint_words(flows as usize);
        let events = if opts.event_buffer == 0 { DEFAULT_EVENT_BUFFER } else { opts.event_buffer };
        if !events.is_power_of_two() || !(4096..=1 << 30).contains(&events) {
            return Err(FilterError::EventBuffer(events));
        }
        let events = events as u32;
        let mut loader = EbpfLoader::new();
        loader
            .override_global(names::TRACE_ENABLED, &trace, true)
            .map_max_entries(names::FILTER, words as u32)
            .map_max_entries(names::FLOWS, flows)
            .map_max_entries(names::FLOW_HINT, hint as u32)
            .map_max_entries(names::EVENTS, events);
        // Pinned maps are opened when they exist (a running filter's, with
        // their sizes), created and pinned otherwise.
        if let Some(pin) = &opts.pin {
            for name in crate::pins::pinned_maps() {
                loader.map_pin_path(name, pin.map(name));
            }
        }
        let mut ebpf = loader.load(NAMEWALL_OBJECT)?;
        let prog: &mut Xdp = ebpf
            .program_mut(names::PROGRAM)
            .ok_or(FilterError::MissingProgram(names::PROGRAM))?
            .try_into()
            .map_err(|source| FilterError::Program { context: "program type".into(), source })?;
        prog.load().map_err(|source| FilterError::Program { context: "loading (verifier)".into(), source })?;
        let mut f = Self {
            ebpf,
            settings: Settings::default(),
            active: None,
            installed_bits: vec![0; words],
            hint: None,
            links: Vec::new(),
            active_len: 0,
            active_capacity: 0,
            unsettled: false,
            pin: opts.pin,
        };
        if adopted {
            f.adopt()?;
        } else {
            f.write_settings(Settings {
                filter_mask: words as u64 - 1,
                hint_mask: hint as u64 - 1,
                tls_action: maps::Action::Reset as u8,
                ..Settings::default()
            })?;
        }
        Ok(f)
    }

    /// Takes over the state of the running filter whose maps were pinned:
    /// its settings (the seed its rule set is hashed with, the filter and
    /// hint masks of its map sizes), its filter bits and its active rule
    /// set, so the next install widens, swaps and narrows around what
    /// packets use now.
    fn adopt(&mut self) -> Result<(), FilterError> {
        let settings = {
            let map = self.ebpf.map(names::SETTINGS).ok_or(FilterError::MissingMap(names::SETTINGS))?;
            let arr: Array<_, Settings> = Array::try_from(map).map_err(map_err(names::SETTINGS))?;
            arr.get(&0, 0).map_err(map_err(names::SETTINGS))?
        };
        let bits = {
            let map = self.ebpf.map(names::FILTER).ok_or(FilterError::MissingMap(names::FILTER))?;
            let arr: Array<_, u64> = Array::try_from(map).map_err(map_err(names::FILTER))?;
            (0..arr.len()).map(|i| arr.get(&i, 0)).collect::<Result<Vec<u64>, _>>().map_err(map_err(names::FILTER))?
        };
        if settings.filter_mask != bits.len() as u64 - 1 {
            return Err(FilterError::Adopt(format!(
                "the pinned settings' filter mask {:#x} does not fit the pinned filter of {} words",
                settings.filter_mask,
                bits.len()
            )));
        }
        let active = {
            let map = self.ebpf.map(names::RULESETS).ok_or(FilterError::MissingMap(names::RULESETS))?;
            let outer: ArrayOfMaps<_, HashMap<MapData, u64, Rule>> =
                ArrayOfMaps::try_from(map).map_err(map_err(names::RULESETS))?;
            match outer.get(&maps::ACTIVE_RULESET, 0) {
                Ok(m) => Some(m),
                Err(MapError::KeyNotFound) => None,
                Err(e) => return Err(map_err(names::RULESETS)(e)),
            }
        };
        if let Some(m) = &active {
            let cap = m.map().info().map_err(map_err("rule set"))?.max_entries() as usize;
            // Not counted (a walk of a million keys): the capacity is a
            // safe bound until the next install sets both.
            (self.active_len, self.active_capacity) = (cap, cap);
        }
        self.settings = settings;
        self.installed_bits = bits;
        self.active = active;
        Ok(())
    }

    /// The hash seed of the rule set a running filter pinned in `pin`, if
    /// any: lists for it must be hashed with the same seed (see `install`).
    pub fn pinned_seed(pin: &PinDir) -> Result<Option<u64>, FilterError> {
        if !pin.adopted() {
            return Ok(None);
        }
        let data = MapData::from_pin(pin.map(names::SETTINGS)).map_err(map_err(names::SETTINGS))?;
        let arr: Array<_, Settings> = Array::try_from(aya::maps::Map::Array(data)).map_err(map_err(names::SETTINGS))?;
        Ok(Some(arr.get(&0, 0).map_err(map_err(names::SETTINGS))?.seed))
    }

    /// The loaded object, for tests and tools that inspect maps directly.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Instructions the verifier processed to accept the program (its limit
    /// is one million): the headroom left for new parsing paths.
    pub fn verified_instructions(&self) -> Result<Option<u32>, FilterError> {
        let info =
            self.xdp_ref()?.info().map_err(|source| FilterError::Program { context: "program info".into(), source })?;
        Ok(info.verified_instruction_count())
    }

    /// Changes settings other than the seed and depth mask, which follow the rule set.
    pub fn configure(
        &mut self,
        dns_action: maps::Action,
        fail_closed: bool,
        answer_ttl: u32,
    ) -> Result<(), FilterError> {
        let settings =
            Settings { dns_action: dns_action as u8, fail_closed: u8::from(fail_closed), answer_ttl, ..self.settings };
        self.write_settings(settings)
    }

    /// Writes the settings; `self.settings` follows only on success.
    fn write_settings(&mut self, settings: Settings) -> Result<(), FilterError> {
        let map = self.ebpf.map_mut(names::SETTINGS).ok_or(FilterError::MissingMap(names::SETTINGS))?;
        let mut arr: Array<_, Settings> = Array::try_from(map).map_err(map_err(names::SETTINGS))?;
        arr.set(0, settings, 0).map_err(map_err(names::SETTINGS))?;
        self.settings = settings;
        Ok(())
    }

    /// Makes `inner` the active rule set; the old one is freed by the kernel
    /// once no program run uses it (RCU).
    fn swap(&mut self, inner: HashMap<MapData, u64, Rule>) -> Result<(), FilterError> {
        let map = self.ebpf.map_mut(names::RULESETS).ok_or(FilterError::MissingMap(names::RULESETS))?;
        let mut outer: ArrayOfMaps<_, HashMap<MapData, u64, Rule>> =
            ArrayOfMaps::try_from(map).map_err(map_err(names::RULESETS))?;
        outer.set(maps::ACTIVE_RULESET, &inner, 0).map_err(map_err(names::RULESETS))?;
        self.active = Some(inner);
        Ok(())
    }

    /// Sets what blocked TLS flows get and the ECH, no-SNI and QUIC policies.
    pub fn configure_tls(&mut self, tls: TlsPolicy) -> Result<(), FilterError> {
        use maps::settings::policy;
        let mut bits = 0;
        if tls.ech_block {
            bits |= policy::ECH_BLOCK;
        }
        if tls.no_sni_block {
            bits |= policy::NO_SNI_BLOCK;
        }
        if tls.quic_block {
            bits |= policy::QUIC_BLOCK;
        }
        let settings = Settings { tls_action: tls.action as u8, policy: bits, ..self.settings };
        self.write_settings(settings)
    }

    /// Lets each CPU send at most `per_cpu` block events a second (0: none).
    pub fn configure_events(&mut self, per_cpu: u32) -> Result<(), FilterError> {
        self.write_settings(Settings { event_budget: per_cpu, ..self.settings })
    }

    /// The block event ring buffer, for the daemon to read (once).
    pub fn take_events(&mut self) -> Result<aya::maps::RingBuf<MapData>, FilterError> {
        let map = self.ebpf.take_map(names::EVENTS).ok_or(FilterError::MissingMap(names::EVENTS))?;
        aya::maps::RingBuf::try_from(map).map_err(map_err(names::EVENTS))
    }

    /// Forgets flows idle past their time to live (`maps::flow`): the kernel
    /// forgets an expired flow it meets, this sweeps the ones it never meets
    /// again. Returns how many were removed.
    pub fn sweep_flows(&mut self) -> Result<usize, FilterError> {
        let now = monotonic_coarse_ns();
        let expired: Vec<u64> = {
            let map = self.ebpf.map(names::FLOWS).ok_or(FilterError::MissingMap(names::FLOWS))?;
            let flows: HashMap<_, u64, maps::flow::FlowState> =
                HashMap::try_from(map).map_err(map_err(names::FLOWS))?;
            flows.iter().filter_map(Result::ok).filter(|(_, v)| v.expired(now)).map(|(k, _)| k).collect()
        };
        let mut removed = 0;
        let mask = self.settings.hint_mask;
        self.map_hint()?;
        let Some(hint) = self.hint.as_ref() else { return Ok(0) };
        let map = self.ebpf.map_mut(names::FLOWS).ok_or(FilterError::MissingMap(names::FLOWS))?;
        let mut flows: HashMap<_, u64, maps::flow::FlowState> =
            HashMap::try_from(map).map_err(map_err(names::FLOWS))?;
        for key in expired {
            // Looked at again right before the delete: a packet may have
            // brought the flow back to life since the walk, and its state
            // (a ClientHello half parsed) must not be lost. Deleted here, or
            // already by the kernel (which then decremented the hint itself).
            let now = monotonic_coarse_ns();
            if flows.get(&key, 0).is_ok_and(|v| v.expired(now)) && flows.remove(&key).is_ok() {
                hint.decrement(maps::flow::hint_slot(key, mask));
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Flows tracked now.
    pub fn flow_count(&self) -> Result<usize, FilterError> {
        let map = self.ebpf.map(names::FLOWS).ok_or(FilterError::MissingMap(names::FLOWS))?;
        let flows: HashMap<_, u64, maps::flow::FlowState> = HashMap::try_from(map).map_err(map_err(names::FLOWS))?;
        Ok(flows.keys().flatten().count())
    }

    /// Maps `FLOW_HINT` into this process, once.
    fn map_hint(&mut self) -> Result<(), FilterError> {
        if self.hint.is_none() {
            let words = self.settings.hint_mask as usize + 1;
            let map = self.ebpf.map(names::FLOW_HINT).ok_or(FilterError::MissingMap(names::FLOW_HINT))?;
            let arr: Array<_, u64> = Array::try_from(map).map_err(map_err(names::FLOW_HINT))?;
            let fd = arr.map().fd().as_fd();
            self.hint = Some(sys::SharedCounters::map(&fd, words).map_err(FilterError::Memory)?);
        }
        Ok(())
    }

    /// Builds `set` in a fresh map and makes it the active rule set with one
    /// update of `RULESETS`: packets see the old set or the new one, never a
    /// mix. The first rule set decides the hash seed; later ones must use it.
    pub fn install(&mut self, set: &RuleSet) -> Result<(), FilterError> {
        let (keys, values) = set.to_arrays();
        self.install_arrays(set.seed(), &keys, &values)
    }

    /// [`Filter::install`] for rules given as parallel arrays of keys
    /// (hashed under `seed`) and values.
    pub fn install_arrays(&mut self, seed: u64, keys: &[u64], values: &[Rule]) -> Result<(), FilterError> {
        if self.active.is_some() && seed != self.settings.seed {
            return Err(FilterError::SeedMismatch { got: seed, want: self.settings.seed });
        }
        let cap = capacity_for(keys.len())?;
        let inner = HashMap::<MapData, u64, Rule>::create(cap, 0).map_err(map_err("rule set"))?;
        // Both generations hold the rule: a fresh set has no reload staged.
        let mut both: Vec<Rule> = values.iter().map(|v| v.both()).collect();
        self.carry_hits_over(keys, &mut both);
        sys::update_batch_parallel(&inner.map().fd().as_fd().as_raw_fd(), keys, &both)?;

        // The depth mask and the filter only let the kernel skip lookups, so
        // supersets are always safe. Widen both to old | new, wait until no
        // packet still uses the old ones, swap, wait until no packet still
        // uses the old set, then narrow them: no packet ever skips a lookup
        // its set needs. `self.settings` and `self.installed_bits` always
        // mirror what the kernel holds (they change only after a write
        // succeeded), so a failure part-way leaves a consistent, safe state:
        // at worst supersets, which cost lookups and nothing else.
        let new_mask = rules::depth_mask(values);
        let new_bits = rules::filter_bits(keys, self.installed_bits.len());
        let narrowed = Settings { seed, depth_mask: new_mask, ..self.settings };
        // Counted once the new set is the active one.
        let (len, capacity) = (keys.len(), cap as usize);
        if self.active.is_none() {
            self.write_filter(&new_bits)?;
            self.write_settings(narrowed)?;
            self.swap(inner)?;
            (self.active_len, self.active_capacity) = (len, capacity);
            self.unsettled = false;
            return Ok(());
        }
        let old = self.settings.depth_mask;
        let widened = Settings { depth_mask: [old[0] | new_mask[0], old[1] | new_mask[1]], ..narrowed };
        let union: Vec<u64> = self.installed_bits.iter().zip(&new_bits).map(|(a, b)| a | b).collect();
        self.write_filter(&union)?;
        self.write_settings(widened)?;
        sys::wait_for_packets_in_flight().map_err(FilterError::Sync)?;
        self.swap(inner)?;
        (self.active_len, self.active_capacity) = (len, capacity);
        self.unsettled = false;
        sys::wait_for_packets_in_flight().map_err(FilterError::Sync)?;
        self.write_filter(&new_bits)?;
        self.write_settings(narrowed)?;
        Ok(())
    }

    /// Changes rules of the active set in place, for live updates: `Some`
    /// inserts or replaces the rule of a key (keeping its hit count),
    /// `None` removes it. The depth mask and filter are widened first, so
    /// no packet skips a lookup a new rule needs; removals leave them wide
    /// (a superset costs a lookup, nothing else) until the next install.
    /// Packets see each key's old rule or new one. When the new keys do
    /// not fit the active map's headroom nothing is changed and
    /// [`FilterError::RuleSetFull`] says so: install a whole set instead.
    pub fn update_rules(&mut self, changes: &[(u64, Option<Rule>)]) -> Result<(), FilterError> {
        let (old, _) = self.current_rules(changes)?;
        self.widen_for(changes)?;
        let active = self.active.as_mut().ok_or(FilterError::NoRuleSet)?;
        for ((k, r), old) in changes.iter().zip(&old) {
            match r {
                Some(r) => {
                    let rule = Rule { hits: old.map_or(0, |o| o.hits), ..r.both() };
                    active.insert(k, rule, 0).map_err(map_err("rule set"))?;
                    if old.is_none() {
                        self.active_len += 1;
                    }
                }
                None => remove_key(active, &mut self.active_len, *k)?,
            }
        }
        Ok(())
    }

    /// Moves the active set to the one `keys` and `values` describe, given
    /// `changes`: the keys whose rule differs from the active set's (`None`:
    /// no rule any more). For a reload that changes a few rules of a big
    /// set, without building a new map: the changed rules are staged in the
    /// rule generation no packet reads (see `maps::Rule`), the filter and
    /// depth mask widened, then `Settings::generation` flipped, one byte:
    /// each packet is judged wholly by the old set or wholly by the new one.
    /// After a grace period both generations are made equal again and
    /// removed keys deleted; the filter and mask stay wide until
    /// [`Filter::narrow`] (a superset only costs lookups). When the new
    /// keys do not fit the active map, nothing changes and
    /// [`FilterError::RuleSetFull`] says so: install the set instead.
    pub fn transition(&mut self, changes: &[(u64, Option<Rule>)]) -> Result<(), FilterError> {
        if self.unsettled {
            return Err(FilterError::Unsettled);
        }
        let (old, new_keys) = self.current_rules(changes)?;
        // A key to remove that the set does not hold needs nothing.
        let (changes, old): (Vec<_>, Vec<_>) =
            changes.iter().copied().zip(old).filter(|((_, r), o)| r.is_some() || o.is_some()).unzip();
        let changes: &[(u64, Option<Rule>)] = &changes;
        let next = (self.settings.generation & 1) ^ 1;
        // 1. Stage: the next generation of every changed key; the current
        // one as it is (no rule, for keys new to the set).
        let (staged_keys, staged): (Vec<u64>, Vec<Rule>) = changes
            .iter()
            .zip(&old)
            .map(|((k, r), o)| {
                let base = o.unwrap_or(Rule { labels: r.map_or(0, |r| r.labels), ..Rule::default() });
                (*k, base.with_generation(next, *r))
            })
            .unzip();
        let fd = self.active.as_ref().ok_or(FilterError::NoRuleSet)?.map().fd().as_fd().as_raw_fd();
        // From here until settled, the generation packets do not read may
        // hold a mix: a failure leaves the set in force as it is, and the
        // next change installs a fresh set rather than flip to the mix.
        self.unsettled = true;
        sys::update_batch_parallel(&fd, &staged_keys, &staged)?;
        self.active_len += new_keys;
        // 2. Widen the filter and the depth mask to cover the new rules.
        let widened = self.widen_for(changes)?;
        // 3. Flip: the new set is in force.
        self.write_settings(Settings { generation: next, ..widened })?;
        // 4, 5. Settle; a failure here only leaves the other generation
        // untidy, which `unsettled` guards.
        match self.settle(changes, fd) {
            Ok(()) => self.unsettled = false,
            Err(e) => tracing::warn!(
                "tidying the rule set after switching generations: {e}; the next reload installs a fresh set"
            ),
        }
        Ok(())
    }

    /// After a flip: waits until no packet reads the old generation, then
    /// makes both generations of the changed keys equal (hit counts kept)
    /// and deletes the keys without a rule.
    fn settle(&mut self, changes: &[(u64, Option<Rule>)], fd: std::os::fd::RawFd) -> Result<(), FilterError> {
        sys::wait_for_packets_in_flight().map_err(FilterError::Sync)?;
        let active = self.active.as_mut().ok_or(FilterError::NoRuleSet)?;
        let mut settled_keys = Vec::with_capacity(changes.len());
        let mut settled = Vec::with_capacity(changes.len());
        for (k, r) in changes {
            match r {
                Some(r) => {
                    let hits = active.get(k, 0).map_or(0, |v| v.hits);
                    settled_keys.push(*k);
                    settled.push(Rule { hits, ..r.both() });
                }
                None => remove_key(active, &mut self.active_len, *k)?,
            }
        }
        sys::update_batch_parallel(&fd, &settled_keys, &settled)?;
        Ok(())
    }

    /// Narrows the filter and the depth mask to the active set, `rules`
    /// (each key with its rule's label count; a superset is fine), after a
    /// [`Filter::transition`] widened them.
    pub fn narrow(&mut self, rules: impl IntoIterator<Item = (u64, u8)>) -> Result<(), FilterError> {
        let mut bits = vec![0u64; self.installed_bits.len()];
        let mask = bits.len() as u64 - 1;
        let mut depths = Settings::default();
        for (key, labels) in rules {
            rules::mark_filter(&mut bits, mask, key);
            depths.set_depth(labels as usize);
        }
        self.write_filter_words(&bits)?;
        self.write_settings(Settings { depth_mask: depths.depth_mask, ..self.settings })
    }

    /// The active set's current values of the keys `changes` names, once
    /// the new keys among them are known to fit its headroom (else
    /// [`FilterError::RuleSetFull`], and nothing changed).
    fn current_rules(&self, changes: &[(u64, Option<Rule>)]) -> Result<(Vec<Option<Rule>>, usize), FilterError> {
        let Some(active) = self.active.as_ref() else { return Err(FilterError::NoRuleSet) };
        let old: Vec<Option<Rule>> = changes.iter().map(|(k, _)| active.get(k, 0).ok()).collect();
        let new_keys = changes.iter().zip(&old).filter(|((_, r), o)| r.is_some() && o.is_none()).count();
        if self.active_len + new_keys > self.active_capacity {
            return Err(FilterError::RuleSetFull { capacity: self.active_capacity });
        }
        Ok((old, new_keys))
    }

    /// Widens the filter and the depth mask to cover the rules `changes`
    /// adds (a superset only costs lookups); returns the settings written.
    fn widen_for(&mut self, changes: &[(u64, Option<Rule>)]) -> Result<Settings, FilterError> {
        let mut widened = self.settings;
        let mut bits = self.installed_bits.clone();
        let mask = bits.len() as u64 - 1;
        for (k, r) in changes {
            if let Some(r) = r {
                widened.set_depth(r.labels as usize);
                rules::mark_filter(&mut bits, mask, *k);
            }
        }
        // Only the words that changed are written.
        self.write_filter_words(&bits)?;
        if widened.depth_mask != self.settings.depth_mask {
            self.write_settings(widened)?;
        }
        Ok(widened)
    }

    /// The rule the kernel holds for `key` in the active set.
    pub fn active_rule(&self, key: u64) -> Option<Rule> {
        self.active.as_ref()?.get(&key, 0).ok()
    }

    /// Rules in the active set.
    pub fn active_len(&self) -> usize {
        self.active_len
    }

    /// Writes the filter words that differ from `installed_bits`, one by
    /// one; the mirror follows each write.
    fn write_filter_words(&mut self, bits: &[u64]) -> Result<(), FilterError> {
        let map = self.ebpf.map_mut(names::FILTER).ok_or(FilterError::MissingMap(names::FILTER))?;
        let mut arr: Array<_, u64> = Array::try_from(map).map_err(map_err(names::FILTER))?;
        for (i, (have, want)) in self.installed_bits.iter_mut().zip(bits).enumerate() {
            if have != want {
                arr.set(i as u32, *want, 0).map_err(map_err(names::FILTER))?;
                *have = *want;
            }
        }
        Ok(())
    }

    /// Writes the whole filter (one batch of word updates); `installed_bits`
    /// follows on success. A failed batch may have written part of it: the
    /// mirror then becomes the union, which covers both.
    fn write_filter(&mut self, bits: &[u64]) -> Result<(), FilterError> {
        let map = self.ebpf.map(names::FILTER).ok_or(FilterError::MissingMap(names::FILTER))?;
        let arr: Array<_, u64> = Array::try_from(map).map_err(map_err(names::FILTER))?;
        let fd = arr.map().fd().as_fd();
        let keys: Vec<u32> = (0..bits.len() as u32).collect();
        if let Err(e) = sys::update_batch(&fd, &keys, bits) {
            for (have, want) in self.installed_bits.iter_mut().zip(bits) {
                *have |= want;
            }
            return Err(e.into());
        }
        self.installed_bits = bits.to_vec();
        Ok(())
    }

    /// Kernel memory of the filter, as the kernel accounts it.
    pub fn filter_memory(&self) -> Result<u64, FilterError> {
        let map = self.ebpf.map(names::FILTER).ok_or(FilterError::MissingMap(names::FILTER))?;
        let arr: Array<_, u64> = Array::try_from(map).map_err(map_err(names::FILTER))?;
        sys::map_memlock(&arr.map().fd().as_fd().as_raw_fd()).map_err(FilterError::Memory)
    }

    /// Attaches to an interface. With a pin directory, an interface the
    /// running filter is attached to gets this program through an atomic
    /// link update (no packet goes unfiltered), and a new attachment is
    /// pinned so it outlives this process.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<(), FilterError> {
        if sys::if_index(iface).is_none() {
            return Err(FilterError::NoSuchInterface(iface.to_owned()));
        }
        let pin = self.pin.as_ref().map(|p| p.link(iface));
        let prog_err = |context: String| move |source| FilterError::Program { context, source };
        if let Some(path) = pin.as_ref().filter(|p| p.exists()) {
            let old = PinnedLink::from_pin(path).map_err(|e| FilterError::Link(format!("{}: {e}", path.display())))?;
            let link = XdpLink::try_from(FdLink::from(old))
                .map_err(|e| FilterError::Link(format!("{}: {e}", path.display())))?;
            let prog = self.xdp()?;
            match prog.attach_to_link(link) {
                Ok(id) => {
                    let link = prog.take_link(id).map_err(prog_err(format!("holding the link on {iface}")))?;
                    let link = FdLink::try_from(link).map_err(|e| FilterError::Link(e.to_string()))?;
                    self.links.push(Attached { iface: iface.to_owned(), link, pin });
                    return Ok(());
                }
                // The pinned link no longer works (its interface was deleted
                // and made again, so it is defunct): unpinned, and a fresh
                // attachment below takes its place.
                Err(e) => {
                    tracing::warn!("the pinned link on {iface} cannot take the new program ({e}); attaching afresh");
                    unpin(path)?;
                }
            }
        }
        let prog = self.xdp()?;
        let id = prog.attach(iface, mode).map_err(prog_err(format!("attaching to {iface} ({mode:?} mode)")))?;
        let link = prog.take_link(id).map_err(prog_err(format!("holding the link on {iface}")))?;
        // No BPF link (a netlink attachment) only on kernels older than
        // namewall supports.
        let link = FdLink::try_from(link).map_err(|e| {
            FilterError::Link(format!("{iface}: no BPF link for XDP ({e}); Linux 5.18 or later is needed"))
        })?;
        let link = match &pin {
            Some(path) => {
                let pinned =
                    link.pin(path).map_err(|e| FilterError::Link(format!("pinning {}: {e}", path.display())))?;
                FdLink::from(pinned)
            }
            None => link,
        };
        self.links.push(Attached { iface: iface.to_owned(), link, pin });
        Ok(())
    }

    /// Detaches from every interface, pinned or not.
    pub fn detach_all(&mut self) -> Result<(), FilterError> {
        for a in std::mem::take(&mut self.links) {
            if let Some(p) = &a.pin {
                unpin(p)?;
            }
            // The last reference gone, the kernel detaches it.
            drop(a.link);
        }
        Ok(())
    }

    /// Detaches from interfaces a running filter was attached to that this
    /// one is not (they were dropped from the configuration).
    pub fn detach_others(&mut self) -> Result<Vec<String>, FilterError> {
        let Some(pin) = &self.pin else { return Ok(Vec::new()) };
        let mine: Vec<&str> = self.attached().collect();
        let mut gone = Vec::new();
        for iface in pin.linked_interfaces() {
            if !mine.contains(&iface.as_str()) {
                unpin(&pin.link(&iface))?;
                gone.push(iface);
            }
        }
        Ok(gone)
    }

    /// Interfaces attached to.
    pub fn attached(&self) -> impl Iterator<Item = &str> {
        self.links.iter().map(|a| a.iface.as_str())
    }

    /// Whether attachments and maps outlive this process (pinned).
    pub fn pinned(&self) -> bool {
        self.pin.is_some()
    }

    fn xdp(&mut self) -> Result<&mut Xdp, FilterError> {
        self.ebpf
            .program_mut(names::PROGRAM)
            .ok_or(FilterError::MissingProgram(names::PROGRAM))?
            .try_into()
            .map_err(|source| FilterError::Program { context: "program type".into(), source })
    }

    fn xdp_ref(&self) -> Result<&Xdp, FilterError> {
        self.ebpf
            .program(names::PROGRAM)
            .ok_or(FilterError::MissingProgram(names::PROGRAM))?
            .try_into()
            .map_err(|source| FilterError::Program { context: "program type".into(), source })
    }

    /// A handle that runs the loaded program on packets from another
    /// thread while this one changes the maps (tests of rule-set swaps
    /// under traffic).
    pub fn runner(&self) -> Result<Runner, FilterError> {
        let fd =
            self.xdp_ref()?.fd().map_err(|source| FilterError::Program { context: "program fd".into(), source })?;
        let fd = fd.try_clone().map_err(|e| FilterError::Link(format!("duplicating the program fd: {e}")))?;
        Ok(Runner { fd })
    }

    /// Runs the loaded program once on `packet` (`BPF_PROG_TEST_RUN`).
    pub fn run(&self, packet: &[u8]) -> Result<RunResult, FilterError> {
        run_xdp(self.xdp_ref()?, packet, 1).map(|(r, _)| r)
    }

    /// Runs the program `repeat` times on `packet`; returns the mean time per run.
    pub fn bench(&self, packet: &[u8], repeat: u32) -> Result<(RunResult, std::time::Duration), FilterError> {
        run_xdp(self.xdp_ref()?, packet, repeat)
    }

    /// Counter totals over all CPUs and interfaces, indexed by [`Counter`].
    pub fn counters(&self) -> Result<[u64; COUNT], FilterError> {
        self.counters_of_rows(maps::counters::IFACE_BUCKETS)
    }

    /// [`Filter::counters`] over the first `rows` interface buckets only:
    /// row 0 has the extra counters, and test runs arrive on the loopback
    /// device (ifindex 1, row 1), so two rows cover them at a thirtieth of
    /// the cost of reading every row.
    pub fn counters_of_rows(&self, rows: usize) -> Result<[u64; COUNT], FilterError> {
        let rows = self.counter_rows_upto(rows.min(maps::counters::IFACE_BUCKETS))?;
        Ok(crate::stats::totals(&rows))
    }

    /// Counter totals over all CPUs, one row of [`COUNT`] per interface
    /// bucket (see `maps::counters::IFACE_BUCKETS`).
    pub fn counter_rows(&self) -> Result<Vec<u64>, FilterError> {
        self.counter_rows_upto(maps::counters::IFACE_BUCKETS)
    }

    fn counter_rows_upto(&self, rows: usize) -> Result<Vec<u64>, FilterError> {
        let map = self.ebpf.map(names::COUNTERS).ok_or(FilterError::MissingMap(names::COUNTERS))?;
        let arr: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(map_err(names::COUNTERS))?;
        sys::sum_percpu_u64(&arr.map().fd().as_fd().as_raw_fd(), rows * COUNT).map_err(FilterError::Counters)
    }

    /// The last decision record (only written when loaded with `trace`).
    pub fn trace(&self) -> Result<Trace, FilterError> {
        let map = self.ebpf.map(names::TRACE).ok_or(FilterError::MissingMap(names::TRACE))?;
        let arr: Array<_, Trace> = Array::try_from(map).map_err(map_err(names::TRACE))?;
        arr.get(&0, 0).map_err(map_err(names::TRACE))
    }

    /// Hit counts of the active rule set's rules that were hit at least once.
    pub fn rule_hits(&self) -> Result<Vec<(u64, u32)>, FilterError> {
        let rules = self.active_rules()?;
        Ok(rules.into_iter().filter(|(_, r)| r.hits != 0).map(|(k, r)| (k, r.hits)).collect())
    }

    /// Gives the rules of a set about to be installed the hit counts their
    /// keys have in the active set, so counts survive reloads that build a
    /// new set and restarts that adopt a pinned one (hits between this read
    /// and the swap are not carried). A failed read only loses the counts.
    fn carry_hits_over(&self, keys: &[u64], values: &mut [Rule]) {
        if self.active.is_none() {
            return;
        }
        match self.active_rules() {
            Ok(rules) => {
                let hits: std::collections::HashMap<u64, u32, nohash_hasher::BuildNoHashHasher<u64>> =
                    rules.into_iter().filter(|(_, r)| r.hits != 0).map(|(k, r)| (k, r.hits)).collect();
                if hits.is_empty() {
                    return;
                }
                for (k, v) in keys.iter().zip(values) {
                    if let Some(h) = hits.get(k) {
                        v.hits = *h;
                    }
                }
            }
            Err(e) => tracing::warn!("hit counts start again at 0 in the new rule set: {e}"),
        }
    }

    /// Every key of the active rule set with its rule, as the kernel holds
    /// them (one walk of the map).
    pub fn active_rules(&self) -> Result<Vec<(u64, Rule)>, FilterError> {
        let Some(active) = &self.active else { return Ok(Vec::new()) };
        sys::dump_hash(&active.map().fd().as_fd().as_raw_fd()).map_err(FilterError::Dump)
    }

    /// Kernel memory of the active rule set, as the kernel accounts it.
    pub fn ruleset_memory(&self) -> Result<u64, FilterError> {
        let Some(active) = &self.active else { return Ok(0) };
        sys::map_memlock(&active.map().fd().as_fd().as_raw_fd()).map_err(FilterError::Memory)
    }
}

/// Runs the program on packets (see [`Filter::runner`]).
pub struct Runner {
    fd: aya::programs::ProgramFd,
}

impl Runner {
    /// Runs the program once on `packet`.
    pub fn run(&self, packet: &[u8]) -> std::io::Result<RunResult> {
        let (action, output) = sys::test_run(&self.fd.as_fd().as_raw_fd(), packet)?;
        Ok(RunResult { action, output })
    }
}

/// Removes a link's pin; one already gone (`namewall stop` got there
/// first) is fine.
fn unpin(path: &std::path::Path) -> Result<(), FilterError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(FilterError::Link(format!("unpinning {}: {e}", path.display())))
        }
        _ => Ok(()),
    }
}

fn run_xdp(prog: &Xdp, packet: &[u8], repeat: u32) -> Result<(RunResult, std::time::Duration), FilterError> {
    // Room for answers longer than the query (a sinkhole record) and for
    // the kernel's frame layout.
    let mut out = vec![0u8; packet.len() + 4096];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(packet);
    opts.data_out = Some(&mut out);
    opts.repeat = repeat;
    let r =
        prog.test_run(opts).map_err(|source| FilterError::Program { context: "BPF_PROG_TEST_RUN".into(), source })?;
    out.truncate(r.data_size_out as usize);
    Ok((RunResult { action: r.return_value, output: out }, r.duration))
}

/// The benchmarks' baseline program, loaded.
pub struct Baseline {
    ebpf: Ebpf,
}

impl Baseline {
    pub fn load() -> Result<Self, FilterError> {
        let mut ebpf = Ebpf::load(BASELINE_OBJECT)?;
        let prog: &mut Xdp = ebpf
            .program_mut(names::BASELINE_PROGRAM)
            .ok_or(FilterError::MissingProgram(names::BASELINE_PROGRAM))?
            .try_into()
            .map_err(|source| FilterError::Program { context: "program type".into(), source })?;
        prog.load().map_err(|source| FilterError::Program { context: "loading baseline".into(), source })?;
        Ok(Self { ebpf })
    }

    pub fn bench(&self, packet: &[u8], repeat: u32) -> Result<(RunResult, std::time::Duration), FilterError> {
        let prog: &Xdp = self
            .ebpf
            .program(names::BASELINE_PROGRAM)
            .ok_or(FilterError::MissingProgram(names::BASELINE_PROGRAM))?
            .try_into()
            .map_err(|source| FilterError::Program { context: "program type".into(), source })?;
        run_xdp(prog, packet, repeat)
    }
}

/// `CLOCK_MONOTONIC_COARSE`, the clock of `bpf_ktime_get_coarse_ns`.
fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &raw mut ts) };
    ts.tv_sec.cast_unsigned() * 1_000_000_000 + ts.tv_nsec.cast_unsigned()
}
