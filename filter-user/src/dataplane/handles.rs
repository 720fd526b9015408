//! Typed handles on the program's maps, each looked up once when the
//! program is loaded, and the reads and writes user space makes through
//! them (settings, filter words, counters, the decision trace, flows).
//!
//! The handles hold their own file descriptors (duplicates of the loaded
//! object's), so the object keeps its maps for tools that inspect them.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::{
    Ebpf,
    maps::{Array, ArrayOfMaps, HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray, RingBuf},
};
use std::collections::HashMap as StdHashMap;

use maps::{
    Rule, Settings, Trace,
    counters::COUNT,
    layout::dns_stream::DnsStream,
    layout::flow::{FlowState, NewFlow, hint_slot},
    layout::names,
};

use super::{
    counters::{self, Counters},
    error::{FilterError, map_err},
    sys,
};

/// A rule set: rule keys (64-bit name hashes) to rules.
pub type RuleSetMap = HashMap<MapData, u64, Rule>;

/// The program's maps, typed.
pub struct Maps {
    rulesets: ArrayOfMaps<MapData, RuleSetMap>,
    settings_map: Array<MapData, Settings>,
    /// What `SETTINGS` holds: it follows only writes that succeeded.
    settings: Settings,
    filter: Array<MapData, u64>,
    flows: HashMap<MapData, u64, FlowState>,
    new_flows: HashMap<MapData, u64, NewFlow>,
    dns_streams: HashMap<MapData, u64, DnsStream>,
    flow_hint: Array<MapData, u64>,
    /// `FLOW_HINT` mapped into this process, for the flow sweep.
    hint: Option<sys::SharedCounters>,
    /// Hint slots whose count exceeded their flows at the last sweep: the
    /// count and the flows then (see [`Maps::sweep_flows`]).
    hint_excess: StdHashMap<u32, (u64, u64)>,
    counters: PerCpuArray<MapData, u64>,
    trace: Array<MapData, Trace>,
    /// Until the daemon takes it.
    events: Option<RingBuf<MapData>>,
}

/// A handle of its own on the map `name` of `ebpf`.
fn open<T: TryFrom<Map, Error = MapError>>(ebpf: &Ebpf, name: &'static str) -> Result<T, FilterError> {
    let map = ebpf.map(name).ok_or(FilterError::MissingMap(name))?;
    let (data, kind): (&MapData, fn(MapData) -> Map) = match map {
        Map::Array(d) => (d, Map::Array),
        Map::ArrayOfMaps(d) => (d, Map::ArrayOfMaps),
        // An LRU map's handle is a hash map's: the same calls.
        Map::HashMap(d) | Map::LruHashMap(d) => (d, Map::HashMap),
        Map::PerCpuArray(d) => (d, Map::PerCpuArray),
        Map::RingBuf(d) => (d, Map::RingBuf),
        _ => return Err(FilterError::MapKind(name)),
    };
    let fd = data.fd().as_fd().try_clone_to_owned().map_err(|e| map_err(name)(MapError::IoError(e)))?;
    let data = MapData::from_fd(fd).map_err(map_err(name))?;
    T::try_from(kind(data)).map_err(map_err(name))
}

impl Maps {
    /// Looks every map of the loaded object up.
    pub(super) fn open(ebpf: &Ebpf) -> Result<Self, FilterError> {
        Ok(Self {
            rulesets: open(ebpf, names::RULESETS)?,
            settings_map: open(ebpf, names::SETTINGS)?,
            settings: Settings::default(),
            filter: open(ebpf, names::FILTER)?,
            flows: open(ebpf, names::FLOWS)?,
            new_flows: open(ebpf, names::NEW_FLOWS)?,
            dns_streams: open(ebpf, names::DNS_STREAMS)?,
            flow_hint: open(ebpf, names::FLOW_HINT)?,
            hint: None,
            hint_excess: StdHashMap::new(),
            counters: open(ebpf, names::COUNTERS)?,
            trace: open(ebpf, names::TRACE)?,
            events: Some(open(ebpf, names::EVENTS)?),
        })
    }

    /// The settings as the kernel holds them.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Reads the settings a running filter left (adoption).
    pub(super) fn read_settings(&mut self) -> Result<Settings, FilterError> {
        self.settings = self.settings_map.get(&0, 0).map_err(map_err(names::SETTINGS))?;
        Ok(self.settings)
    }

    /// Writes the settings; [`Maps::settings`] follows only on success.
    pub fn write_settings(&mut self, settings: Settings) -> Result<(), FilterError> {
        self.settings_map.set(0, settings, 0).map_err(map_err(names::SETTINGS))?;
        self.settings = settings;
        Ok(())
    }

    /// Every word of the negative-lookup filter.
    pub(super) fn read_filter(&self) -> Result<Vec<u64>, FilterError> {
        let f = &self.filter;
        (0..f.len()).map(|i| f.get(&i, 0)).collect::<Result<Vec<u64>, _>>().map_err(map_err(names::FILTER))
    }

    /// Writes filter word `i`.
    pub(super) fn write_filter_word(&mut self, i: u32, word: u64) -> Result<(), FilterError> {
        self.filter.set(i, word, 0).map_err(map_err(names::FILTER))
    }

    /// Writes the filter words `0..bits.len()` with one batch of updates.
    pub(super) fn write_filter(&self, bits: &[u64]) -> Result<(), sys::SysError> {
        let keys: Vec<u32> = (0..bits.len() as u32).collect();
        sys::update_batch(&self.filter.map().fd().as_fd(), &keys, bits)
    }

    /// The rule set packets use now, if any.
    pub(super) fn active_ruleset(&self) -> Result<Option<RuleSetMap>, FilterError> {
        match self.rulesets.get(&maps::ACTIVE_RULESET, 0) {
            Ok(m) => Ok(Some(m)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::RULESETS)(e)),
        }
    }

    /// Makes `set` the rule set packets use; the old one is freed by the
    /// kernel once no program run uses it (RCU).
    pub(super) fn swap_ruleset(&mut self, set: &RuleSetMap) -> Result<(), FilterError> {
        self.rulesets.set(maps::ACTIVE_RULESET, set, 0).map_err(map_err(names::RULESETS))
    }

    /// Kernel memory of the filter, as the kernel accounts it.
    pub fn filter_memory(&self) -> Result<u64, FilterError> {
        sys::map_memlock(&self.filter.map().fd().as_fd().as_raw_fd()).map_err(FilterError::Memory)
    }

    /// Counter totals over all CPUs, in rows of [`COUNT`], for the first
    /// `rows` interface buckets (see `maps::counters::IFACE_BUCKETS`).
    pub fn counter_rows(&self, rows: usize) -> Result<Vec<u64>, FilterError> {
        let rows = rows.min(maps::counters::IFACE_BUCKETS);
        sys::sum_percpu_u64(&self.counters.map().fd().as_fd().as_raw_fd(), rows * COUNT).map_err(FilterError::Counters)
    }

    /// Counter totals over all CPUs and the first `rows` interface buckets.
    pub fn counters(&self, rows: usize) -> Result<Counters, FilterError> {
        Ok(counters::totals(&self.counter_rows(rows)?))
    }

    /// The last decision record (only written when loaded with `trace`).
    pub fn trace(&self) -> Result<Trace, FilterError> {
        self.trace.get(&0, 0).map_err(map_err(names::TRACE))
    }

    /// The block event ring buffer, for the daemon to read (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, FilterError> {
        self.events.take().ok_or(FilterError::MissingMap(names::EVENTS))
    }

    /// Forgets flows idle past their time to live (`maps::layout::flow`): the kernel
    /// forgets an expired flow it meets, this sweeps the ones it never meets
    /// again. Then takes back hint counts left by entries the `NEW_FLOWS`
    /// LRU evicted. Returns how many flows were removed.
    pub fn sweep_flows(&mut self) -> Result<usize, FilterError> {
        let now = sys::monotonic_ns(libc::CLOCK_MONOTONIC_COARSE);
        let expired: Vec<u64> =
            self.flows.iter().filter_map(Result::ok).filter(|(_, v)| v.expired(now)).map(|(k, _)| k).collect();
        let expired_new: Vec<u64> =
            self.new_flows.iter().filter_map(Result::ok).filter(|(_, v)| v.expired(now)).map(|(k, _)| k).collect();
        let mut removed = 0;
        let mask = self.settings.hint_mask;
        self.map_hint()?;
        let Some(hint) = self.hint.as_ref() else { return Ok(0) };
        for key in expired {
            // Looked at again right before the delete: a packet may have
            // brought the flow back to life since the walk, and its state
            // (a ClientHello half parsed) must not be lost. Deleted here, or
            // already by the kernel (which then decremented the hint itself).
            let now = sys::monotonic_ns(libc::CLOCK_MONOTONIC_COARSE);
            if self.flows.get(&key, 0).is_ok_and(|v| v.expired(now)) && self.flows.remove(&key).is_ok() {
                hint.decrement(hint_slot(key, mask));
                removed += 1;
            }
        }
        for key in expired_new {
            // Looked at again before the delete: the LRU may have evicted it
            // and a new SYN put the key back since the walk.
            let now = sys::monotonic_ns(libc::CLOCK_MONOTONIC_COARSE);
            if self.new_flows.get(&key, 0).is_ok_and(|v| v.expired(now)) && self.new_flows.remove(&key).is_ok() {
                hint.decrement(hint_slot(key, mask));
                removed += 1;
            }
        }
        self.heal_hint(mask);
        Ok(removed + self.sweep_dns_streams())
    }

    /// Forgets DNS-over-TCP connections idle past their time to live
    /// (`maps::layout::dns_stream`); returns how many.
    fn sweep_dns_streams(&mut self) -> usize {
        let now = sys::monotonic_ns(libc::CLOCK_MONOTONIC_COARSE);
        let expired: Vec<u64> =
            self.dns_streams.iter().filter_map(Result::ok).filter(|(_, v)| v.expired(now)).map(|(k, _)| k).collect();
        let mut removed = 0;
        for key in expired {
            // Looked at again right before the delete, as flows are.
            let now = sys::monotonic_ns(libc::CLOCK_MONOTONIC_COARSE);
            if self.dns_streams.get(&key, 0).is_ok_and(|v| v.expired(now)) && self.dns_streams.remove(&key).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Forgets every DNS-over-TCP connection (`DNS_STREAMS`): table-driven
    /// tests run each packet as the first of its connection. Returns how
    /// many were removed. Through a handle of its own, so a shared
    /// reference does.
    pub fn forget_dns_streams(&self) -> Result<usize, FilterError> {
        let name = names::DNS_STREAMS;
        let fd = self
            .dns_streams
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| map_err(name)(MapError::IoError(e)))?;
        let mut map: HashMap<MapData, u64, DnsStream> =
            HashMap::try_from(Map::HashMap(MapData::from_fd(fd).map_err(map_err(name))?)).map_err(map_err(name))?;
        let keys: Vec<u64> = map.keys().filter_map(Result::ok).collect();
        Ok(keys.into_iter().filter(|k| map.remove(k).is_ok()).count())
    }

    /// DNS-over-TCP connections followed now (`DNS_STREAMS`).
    pub fn dns_stream_count(&self) -> usize {
        self.dns_streams.keys().flatten().count()
    }

    /// A DNS-over-TCP connection's stream state, by flow key.
    pub fn dns_stream(&self, key: u64) -> Option<DnsStream> {
        self.dns_streams.get(&key, 0).ok()
    }

    /// Makes every `FLOWS` entry `ns` nanoseconds older, as if no packet
    /// had touched it for that long: how tests see expiry (the sweep's, and
    /// the kernel's reclaiming of a full table) without waiting minutes.
    /// Returns the entries aged.
    pub fn age_flows(&mut self, ns: u64) -> Result<usize, FilterError> {
        /// `BPF_EXIST` (linux/bpf.h): update only a key that is there.
        const BPF_EXIST: u64 = 2;
        let entries: Vec<(u64, FlowState)> = self.flows.iter().filter_map(Result::ok).collect();
        let mut aged = 0;
        for (key, mut v) in entries {
            v.last_seen_ns = v.last_seen_ns.wrapping_sub(ns);
            if self.flows.insert(key, v, BPF_EXIST).is_ok() {
                aged += 1;
            }
        }
        Ok(aged)
    }

    /// Takes back hint counts no entry accounts for: an entry the
    /// `NEW_FLOWS` LRU evicts leaves its count behind (the kernel is not
    /// told), and the slot would cost every packet of its flows a lookup
    /// from then on. A slot's excess is taken back only when the count and
    /// the entries were the same at two sweeps in a row: an insert or
    /// delete in flight (the kernel counts before inserting, and after
    /// deleting) lasts microseconds, never from one sweep to the next, so
    /// only counts no entry will ever take back are taken. Subtracted
    /// atomically, so the kernel's own counting at the same time adds up.
    fn heal_hint(&mut self, mask: u64) {
        let Some(hint) = self.hint.as_ref() else { return };
        let mut entries: StdHashMap<u32, u64> = StdHashMap::new();
        for key in self.flows.keys().flatten().chain(self.new_flows.keys().flatten()) {
            *entries.entry(hint_slot(key, mask)).or_insert(0) += 1;
        }
        let mut excess = StdHashMap::new();
        for slot in 0..=(mask as u32) {
            let count = hint.get(slot);
            let have = entries.get(&slot).copied().unwrap_or(0);
            // A count below its entries is one being inserted right now
            // (or wrapped below zero by a delete in flight): not excess.
            if count <= have || count > 1 << 48 {
                continue;
            }
            if self.hint_excess.get(&slot) == Some(&(count, have)) {
                hint.subtract(slot, count - have);
            } else {
                excess.insert(slot, (count, have));
            }
        }
        self.hint_excess = excess;
    }

    /// Forgets every tracked flow and DNS stream, as if each had expired: the fuzz run
    /// judges each packet against an empty flow table, so that one packet's
    /// verdict does not depend on the packets before it. Returns how many
    /// were removed.
    pub fn forget_flows(&mut self) -> Result<usize, FilterError> {
        let streams = self.forget_dns_streams()?;
        let keys: Vec<u64> = self.flows.keys().filter_map(Result::ok).collect();
        let new_keys: Vec<u64> = self.new_flows.keys().filter_map(Result::ok).collect();
        if keys.is_empty() && new_keys.is_empty() {
            return Ok(streams);
        }
        let mask = self.settings.hint_mask;
        self.map_hint()?;
        let Some(hint) = self.hint.as_ref() else { return Ok(0) };
        let mut removed = streams;
        for key in keys {
            // Deleted here, or already by the kernel (which then decremented
            // the hint itself).
            if self.flows.remove(&key).is_ok() {
                hint.decrement(hint_slot(key, mask));
                removed += 1;
            }
        }
        for key in new_keys {
            if self.new_flows.remove(&key).is_ok() {
                hint.decrement(hint_slot(key, mask));
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Flows tracked now in the middle of a ClientHello or blocked (`FLOWS`).
    pub fn flow_count(&self) -> usize {
        self.flows.keys().flatten().count()
    }

    /// Flows between SYN and first data now (`NEW_FLOWS`).
    pub fn new_flow_count(&self) -> usize {
        self.new_flows.keys().flatten().count()
    }

    /// Maps `FLOW_HINT` into this process, once.
    fn map_hint(&mut self) -> Result<(), FilterError> {
        if self.hint.is_none() {
            let words = self.settings.hint_mask as usize + 1;
            let fd = self.flow_hint.map().fd().as_fd();
            self.hint = Some(sys::SharedCounters::map(&fd, words).map_err(FilterError::Memory)?);
        }
        Ok(())
    }
}
