//! Loading the XDP object and its program, and the [`Filter`] that owns
//! what was loaded: the object, its maps ([`Maps`]), the rule set writer
//! ([`RuleSetWriter`]) and the links to interfaces.

use std::time::Duration;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, ProgramArray, RingBuf},
    programs::{Xdp, XdpMode},
};
use maps::{Rule, Settings, Stage, Trace, layout::names};

use super::{
    attach::Links,
    counters::Counters,
    error::{FilterError, map_err, program_err},
    handles::Maps,
    kernel_log::{self, KernelLog},
    pins::{self, PinDir},
    ruleset::RuleSetWriter,
    sys,
    testrun::{RunResult, Runner, run_xdp},
};
use crate::policy::rules::RuleSet;

/// The namewall XDP object, built by build.rs.
pub static NAMEWALL_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/namewall-xdp"));
/// The namewall XDP object built with kernel debug records (filter-ebpf's
/// `debug` feature), loaded with [`LoadOptions::debug_log`].
pub static NAMEWALL_DEBUG_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/namewall-xdp-debug"));
/// aya-log's global in the debug object: the most detailed level written.
const KERNEL_LOG_LEVEL: &str = "AYA_LOG_LEVEL";
/// The benchmarks' baseline XDP object.
pub static BASELINE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baseline-xdp"));

/// How to load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Pin maps and links there, adopting what a running filter pinned.
    pub pin: Option<PinDir>,
    /// Record every decision in the `TRACE` map (replay and tests).
    pub trace: bool,
    /// Load the object that writes a debug record per packet, forwarded
    /// to tracing (target `namewall::xdp`); costs time on every packet.
    pub debug_log: bool,
    /// Rules the deployment expects, to size the negative-lookup filter
    /// (`maps::layout::filter`); more rules still work, with more lookups.
    pub expected_rules: usize,
    /// TLS flows tracked at once (`maps::layout::flow`); 0 means [`DEFAULT_MAX_FLOWS`].
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

/// The sizes of the maps that follow the configuration (see
/// `maps::layout::shapes::Entries::Configured`), checked.
struct Sizes {
    /// Words of the negative-lookup filter (a power of two).
    filter_words: usize,
    flows: u32,
    /// Words of `FLOW_HINT` (a power of two).
    hint_words: usize,
    /// Bytes of the event ring buffer.
    events: u32,
}

impl Sizes {
    fn of(opts: &LoadOptions) -> Result<Self, FilterError> {
        let filter_words = maps::layout::filter::words_for(opts.expected_rules);
        let flows = if opts.max_flows == 0 { DEFAULT_MAX_FLOWS } else { opts.max_flows };
        let flows = u32::try_from(flows).map_err(|_| FilterError::TooManyFlows(flows))?;
        let hint_words = maps::layout::flow::hint_words(flows as usize);
        let events = if opts.event_buffer == 0 { DEFAULT_EVENT_BUFFER } else { opts.event_buffer };
        if !events.is_power_of_two() || !(4096..=1 << 30).contains(&events) {
            return Err(FilterError::EventBuffer(events));
        }
        Ok(Self { filter_words, flows, hint_words, events: events as u32 })
    }
}

/// Loads the namewall object (`debug`: the one with kernel debug records),
/// its maps sized by `sizes` or, where `pin` holds a running filter's,
/// opened from their pins, and its XDP programs into the kernel (verifier
/// included): the entry program, and every stage it tail-calls in its
/// `STAGES` slot, so all are in place before it is attached anywhere.
fn load_object(sizes: &Sizes, trace: bool, debug: bool, pin: Option<&PinDir>) -> Result<Ebpf, FilterError> {
    let trace = u8::from(trace);
    let mut loader = EbpfLoader::new();
    loader
        .override_global(names::TRACE_ENABLED, &trace, true)
        .map_max_entries(names::FILTER, sizes.filter_words as u32)
        .map_max_entries(names::FLOWS, sizes.flows)
        .map_max_entries(names::NEW_FLOWS, sizes.flows)
        .map_max_entries(names::FLOW_HINT, sizes.hint_words as u32)
        .map_max_entries(names::FLOW_RING, maps::layout::flow::ring_slots(sizes.flows as usize) as u32)
        .map_max_entries(names::EVENTS, sizes.events);
    // Pinned maps are opened when they exist (a running filter's, with
    // their sizes), created and pinned otherwise.
    if let Some(pin) = pin {
        for name in pins::pinned_maps() {
            loader.map_pin_path(name, pin.map(name));
        }
    }
    let level;
    if debug {
        level = kernel_log::kernel_level();
        loader.override_global(KERNEL_LOG_LEVEL, &level, true);
    }
    let mut ebpf = loader.load(if debug { NAMEWALL_DEBUG_OBJECT } else { NAMEWALL_OBJECT })?;
    xdp_mut(&mut ebpf, names::PROGRAM)?.load().map_err(program_err("loading (verifier)"))?;
    let mut fds = Vec::new();
    for stage in Stage::ALL {
        let name = stage.name();
        let prog = xdp_mut(&mut ebpf, name)?;
        prog.load().map_err(program_err(format!("loading {name} (verifier)")))?;
        let fd = prog.fd().map_err(program_err(format!("{name} fd")))?;
        let fd = fd.try_clone().map_err(|source| FilterError::Stages { what: "holding", source })?;
        fds.push((stage, fd));
    }
    let map = ebpf.map_mut(names::STAGES).ok_or(FilterError::MissingMap(names::STAGES))?;
    let mut stages: ProgramArray<_> = ProgramArray::try_from(map).map_err(map_err(names::STAGES))?;
    for (stage, fd) in &fds {
        stages.set(stage.index(), fd, 0).map_err(map_err(names::STAGES))?;
    }
    Ok(ebpf)
}

/// The kernel's id of the loaded entry program.
fn entry_id(ebpf: &Ebpf) -> Result<u32, FilterError> {
    Ok(xdp(ebpf, names::PROGRAM)?.info().map_err(program_err("program info"))?.id())
}

/// The XDP program `name` of `ebpf`.
pub(super) fn xdp<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a Xdp, FilterError> {
    ebpf.program(name).ok_or(FilterError::MissingProgram(name))?.try_into().map_err(program_err("program type"))
}

/// The XDP program `name` of `ebpf`, to load or attach.
pub(super) fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, FilterError> {
    ebpf.program_mut(name).ok_or(FilterError::MissingProgram(name))?.try_into().map_err(program_err("program type"))
}

/// The loaded program: the object, its maps, the rule set in force and the
/// interfaces it is attached to.
///
/// Fields drop in the order declared: the links first, then the object. An
/// unpinned `STAGES` lives only as long as the object's file descriptor,
/// and the kernel empties it when that closes: the program must be
/// detached by then, or its packets would pass unjudged.
pub struct Filter {
    links: Links,
    /// The reader of the kernel's debug records, when the object writes them.
    kernel_log: Option<KernelLog>,
    maps: Maps,
    rules: RuleSetWriter,
    /// Whether this object's `STAGES` is pinned (at the first pinned attach).
    stages_pinned: bool,
    ebpf: Ebpf,
}

impl Filter {
    /// Loads the program into the kernel (verifier included) without
    /// attaching it. With a pin directory where a running filter pinned
    /// its maps, takes over its state: its settings (the seed its rule set
    /// is hashed with, the filter and hint masks of its map sizes), its
    /// filter bits and its active rule set, so the next install widens,
    /// swaps and narrows around what packets use now.
    pub fn load(opts: LoadOptions) -> Result<Self, FilterError> {
        let sizes = Sizes::of(&opts)?;
        let adopted = opts.pin.as_ref().is_some_and(PinDir::adopted);
        let mut ebpf = load_object(&sizes, opts.trace, opts.debug_log, opts.pin.as_ref())?;
        let kernel_log = KernelLog::start(&mut ebpf)?;
        let mut maps = Maps::open(&ebpf)?;
        let rules = if adopted {
            maps.read_settings()?;
            RuleSetWriter::adopt(&maps)?
        } else {
            maps.write_settings(Settings {
                filter_mask: sizes.filter_words as u64 - 1,
                hint_mask: sizes.hint_words as u64 - 1,
                tls_action: maps::Action::Reset as u8,
                ..Settings::default()
            })?;
            RuleSetWriter::new(sizes.filter_words)
        };
        Ok(Self { links: Links::new(opts.pin), kernel_log, maps, rules, stages_pinned: false, ebpf })
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
        self.maps.settings()
    }

    /// Instructions the verifier processed to accept each program of the
    /// object (its limit is one million per program): the entry program,
    /// then each stage; the headroom left for new parsing paths.
    pub fn verified_instructions(&self) -> Result<Vec<(&'static str, Option<u32>)>, FilterError> {
        std::iter::once(names::PROGRAM)
            .chain(Stage::ALL.into_iter().map(Stage::name))
            .map(|name| {
                let info = xdp(&self.ebpf, name)?.info().map_err(program_err("program info"))?;
                Ok((name, info.verified_instruction_count()))
            })
            .collect()
    }

    /// Whether the kernel program's debug records are being forwarded.
    pub fn debug_log(&self) -> bool {
        self.kernel_log.is_some()
    }

    /// Changes settings other than the seed and depth mask, which follow the
    /// rule set. `unjudged_drop`: the "cannot judge" policy drops (see
    /// `maps::layout::settings::UNJUDGED_DROP`).
    pub fn configure(
        &mut self,
        dns_action: maps::Action,
        unjudged_drop: bool,
        answer_ttl: u32,
    ) -> Result<(), FilterError> {
        use maps::layout::settings::{UNJUDGED_DROP, UNJUDGED_PASS};
        let settings = Settings {
            dns_action: dns_action as u8,
            unjudged: if unjudged_drop { UNJUDGED_DROP } else { UNJUDGED_PASS },
            answer_ttl,
            ..self.maps.settings()
        };
        self.maps.write_settings(settings)
    }

    /// Sets what blocked TLS flows get and the ECH, no-SNI and QUIC policies.
    pub fn configure_tls(&mut self, tls: TlsPolicy) -> Result<(), FilterError> {
        use maps::layout::settings::policy;
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
        // The checksum bit follows the interfaces attached to, not the policy.
        let old = self.maps.settings();
        let settings =
            Settings { tls_action: tls.action as u8, policy: bits | (old.policy & policy::PARTIAL_CSUM), ..old };
        self.maps.write_settings(settings)
    }

    /// Whether TCP checksum fields holding only the pseudo-header's sum are
    /// taken as right (`maps::layout::settings::policy::PARTIAL_CSUM`):
    /// [`Filter::attach`] turns it on for interfaces where segments arrive
    /// in that form; tests set it directly.
    pub fn accept_offloaded_checksums(&mut self, on: bool) -> Result<(), FilterError> {
        use maps::layout::settings::policy::PARTIAL_CSUM;
        let old = self.maps.settings();
        let policy = if on { old.policy | PARTIAL_CSUM } else { old.policy & !PARTIAL_CSUM };
        self.maps.write_settings(Settings { policy, ..old })
    }

    /// Lets each CPU send at most `per_cpu` block events a second (0: none).
    pub fn configure_events(&mut self, per_cpu: u32) -> Result<(), FilterError> {
        self.maps.write_settings(Settings { event_budget: per_cpu, ..self.maps.settings() })
    }

    /// The block event ring buffer, for the daemon to read (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, FilterError> {
        self.maps.take_events()
    }

    /// See [`Maps::sweep_flows`].
    pub fn sweep_flows(&mut self) -> Result<usize, FilterError> {
        self.maps.sweep_flows()
    }

    /// See [`Maps::forget_dns_streams`].
    pub fn forget_dns_streams(&self) -> Result<usize, FilterError> {
        self.maps.forget_dns_streams()
    }

    /// See [`Maps::dns_stream_count`].
    pub fn dns_stream_count(&self) -> usize {
        self.maps.dns_stream_count()
    }

    /// See [`Maps::dns_stream`].
    pub fn dns_stream(&self, key: u64) -> Option<maps::layout::dns_stream::DnsStream> {
        self.maps.dns_stream(key)
    }

    /// See [`Maps::age_flows`].
    pub fn age_flows(&mut self, ns: u64) -> Result<usize, FilterError> {
        self.maps.age_flows(ns)
    }

    /// See [`Maps::forget_flows`].
    pub fn forget_flows(&mut self) -> Result<usize, FilterError> {
        self.maps.forget_flows()
    }

    /// Flows tracked now.
    pub fn flow_count(&self) -> Result<usize, FilterError> {
        Ok(self.maps.flow_count())
    }

    /// See [`Maps::new_flow_count`].
    pub fn new_flow_count(&self) -> Result<usize, FilterError> {
        Ok(self.maps.new_flow_count())
    }

    /// Builds `set` in a fresh map and makes it the active rule set (see
    /// [`RuleSetWriter::install`]).
    pub fn install(&mut self, set: &RuleSet) -> Result<(), FilterError> {
        let (keys, values) = set.to_arrays();
        self.install_arrays(set.seed(), &keys, &values)
    }

    /// [`Filter::install`] for rules given as parallel arrays of keys
    /// (hashed under `seed`) and values.
    pub fn install_arrays(&mut self, seed: u64, keys: &[u64], values: &[Rule]) -> Result<(), FilterError> {
        self.rules.install(&mut self.maps, seed, keys, values)
    }

    /// Changes rules of the active set in place (see [`RuleSetWriter::update`]).
    pub fn update_rules(&mut self, changes: &[(u64, Option<Rule>)]) -> Result<(), FilterError> {
        self.rules.update(&mut self.maps, changes)
    }

    /// Switches the active set over to changed rules in one step (see
    /// [`RuleSetWriter::transition`]).
    pub fn transition(&mut self, changes: &[(u64, Option<Rule>)]) -> Result<(), FilterError> {
        self.rules.transition(&mut self.maps, changes)
    }

    /// Narrows the filter and the depth mask after a transition (see
    /// [`RuleSetWriter::narrow`]).
    pub fn narrow(&mut self, rules: impl IntoIterator<Item = (u64, u8)>) -> Result<(), FilterError> {
        self.rules.narrow(&mut self.maps, rules)
    }

    /// The rule the kernel holds for `key` in the active set.
    pub fn active_rule(&self, key: u64) -> Option<Rule> {
        self.rules.active_rule(key)
    }

    /// Rules in the active set.
    pub fn active_len(&self) -> usize {
        self.rules.active_len()
    }

    /// Every key of the active rule set with its rule, as the kernel holds them.
    pub fn active_rules(&self) -> Result<Vec<(u64, Rule)>, FilterError> {
        self.rules.active_rules()
    }

    /// Hit counts of the active rule set's rules that were hit at least once.
    pub fn rule_hits(&self) -> Result<Vec<(u64, u32)>, FilterError> {
        self.rules.rule_hits()
    }

    /// Kernel memory of the active rule set, as the kernel accounts it.
    pub fn ruleset_memory(&self) -> Result<u64, FilterError> {
        self.rules.memory()
    }

    /// Kernel memory of the filter, as the kernel accounts it.
    pub fn filter_memory(&self) -> Result<u64, FilterError> {
        self.maps.filter_memory()
    }

    /// Refuses an interface whose frames XDP does not see with an Ethernet
    /// header (see [`check_ethernet`]).
    pub fn check_interface(iface: &str) -> Result<(), FilterError> {
        if sys::if_index(iface).is_none() {
            return Err(FilterError::NoSuchInterface(iface.to_owned()));
        }
        check_ethernet(iface)
    }

    /// Attaches to an interface (see `attach`): with a pin directory, an
    /// interface a running filter is attached to gets this program without
    /// a gap, and the attachment outlives this process.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<(), FilterError> {
        if sys::if_index(iface).is_none() {
            return Err(FilterError::NoSuchInterface(iface.to_owned()));
        }
        check_ethernet(iface)?;
        self.pin_stages()?;
        let prog = xdp_mut(&mut self.ebpf, names::PROGRAM)?;
        self.links.attach(prog, iface, mode)?;
        // Segments from a local stack cross a virtual interface with the
        // checksum their sender left to a device that never computes it,
        // and generic XDP sees GRO's merged segments in the same form (see
        // `maps::parse::checksum::offloaded_form`): accepted there, or the
        // lab's and containers' clients would be dropped as decoys. Only
        // ever turned on: one such interface makes every interface lenient.
        if matches!(mode, XdpMode::Skb) || sys::is_virtual(iface) {
            tracing::info!(iface, ?mode, "TCP checksums in the offload form accepted (virtual interface or skb mode)");
            self.accept_offloaded_checksums(true)?;
        }
        Ok(())
    }

    /// Detaches from every interface, pinned or not.
    pub fn detach_all(&mut self) -> Result<(), FilterError> {
        self.links.detach_all()
    }

    /// Detaches from interfaces a running filter was attached to that this
    /// one is not (they were dropped from the configuration).
    pub fn detach_others(&mut self) -> Result<Vec<String>, FilterError> {
        self.links.detach_others()
    }

    /// Pins this object's `STAGES` (see [`PinDir::stages`]) when
    /// attachments are pinned, before the first: an attached entry program
    /// must keep its stages after this process is gone. Not at load, so a
    /// start that fails before attaching leaves nothing behind.
    fn pin_stages(&mut self) -> Result<(), FilterError> {
        let Some(pin) = self.links.pin_dir() else { return Ok(()) };
        if self.stages_pinned {
            return Ok(());
        }
        let path = pin.stages(entry_id(&self.ebpf)?);
        let map = self.ebpf.map(names::STAGES).ok_or(FilterError::MissingMap(names::STAGES))?;
        map.pin(&path).map_err(|source| FilterError::PinStages { path, source })?;
        self.stages_pinned = true;
        Ok(())
    }

    /// Unpins the stage arrays of the filter this one replaced, once this
    /// one is attached everywhere (see [`PinDir::stages`]), after the
    /// packets in flight in the replaced program are done: the kernel
    /// empties an array no pin holds, and a packet still in the old entry
    /// program would find no stage.
    pub fn unpin_replaced_stages(&self) -> Result<(), FilterError> {
        let Some(pin) = self.links.pin_dir() else { return Ok(()) };
        let replaced = pin.other_stages(entry_id(&self.ebpf)?);
        if replaced.is_empty() {
            return Ok(());
        }
        sys::wait_for_packets_in_flight().map_err(FilterError::Sync)?;
        for path in replaced {
            pins::unpin(&path)?;
        }
        Ok(())
    }

    /// Interfaces attached to.
    pub fn attached(&self) -> impl Iterator<Item = &str> {
        self.links.interfaces()
    }

    /// Whether attachments and maps outlive this process (pinned).
    pub fn pinned(&self) -> bool {
        self.links.pin_dir().is_some()
    }

    /// A handle that runs the loaded program on packets from another
    /// thread while this one changes the maps (tests of rule-set swaps
    /// under traffic).
    pub fn runner(&self) -> Result<Runner, FilterError> {
        let fd = xdp(&self.ebpf, names::PROGRAM)?.fd().map_err(program_err("program fd"))?;
        let fd = fd.try_clone().map_err(|e| FilterError::Link(format!("duplicating the program fd: {e}")))?;
        Ok(Runner { fd })
    }

    /// Runs the loaded program once on `packet` (`BPF_PROG_TEST_RUN`).
    pub fn run(&self, packet: &[u8]) -> Result<RunResult, FilterError> {
        run_xdp(xdp(&self.ebpf, names::PROGRAM)?, packet, 1).map(|(r, _)| r)
    }

    /// Runs the program `repeat` times on `packet`; returns the mean time per run.
    pub fn bench(&self, packet: &[u8], repeat: u32) -> Result<(RunResult, Duration), FilterError> {
        run_xdp(xdp(&self.ebpf, names::PROGRAM)?, packet, repeat)
    }

    /// Counter totals over all CPUs and interfaces, indexed by `maps::Counter`.
    pub fn counters(&self) -> Result<Counters, FilterError> {
        self.maps.counters(maps::counters::IFACE_BUCKETS)
    }

    /// [`Filter::counters`] over the first `rows` interface buckets only:
    /// row 0 has the extra counters, and test runs arrive on the loopback
    /// device (ifindex 1, row 1), so two rows cover them at a thirtieth of
    /// the cost of reading every row.
    pub fn counters_of_rows(&self, rows: usize) -> Result<Counters, FilterError> {
        self.maps.counters(rows)
    }

    /// Counter totals over all CPUs, one row of `maps::counters::COUNT` per
    /// interface bucket (see `maps::counters::IFACE_BUCKETS`).
    pub fn counter_rows(&self) -> Result<Vec<u64>, FilterError> {
        self.maps.counter_rows(maps::counters::IFACE_BUCKETS)
    }

    /// The last decision record (only written when loaded with `trace`).
    pub fn trace(&self) -> Result<Trace, FilterError> {
        self.maps.trace()
    }
}

/// The benchmarks' baseline program, loaded.
pub struct Baseline {
    ebpf: Ebpf,
}

impl Baseline {
    pub fn load() -> Result<Self, FilterError> {
        let mut ebpf = Ebpf::load(BASELINE_OBJECT)?;
        xdp_mut(&mut ebpf, names::BASELINE_PROGRAM)?.load().map_err(program_err("loading baseline"))?;
        Ok(Self { ebpf })
    }

    /// Runs the program `repeat` times on `packet`; returns the mean time per run.
    pub fn bench(&self, packet: &[u8], repeat: u32) -> Result<(RunResult, Duration), FilterError> {
        run_xdp(xdp(&self.ebpf, names::BASELINE_PROGRAM)?, packet, repeat)
    }
}

/// The program parses frames from their Ethernet header: on a ppp, tun,
/// WireGuard or IP tunnel interface XDP sees bare IP packets, which would
/// all pass as `not_ip`. Refused, rather than attached to filter nothing.
fn check_ethernet(iface: &str) -> Result<(), FilterError> {
    match sys::link_type(iface) {
        Some(t) if !sys::frames_are_ethernet(t) => {
            Err(FilterError::NotEthernet { iface: iface.to_owned(), link_type: t, kind: sys::link_type_name(t) })
        }
        _ => Ok(()),
    }
}
