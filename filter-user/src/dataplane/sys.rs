//! System calls aya 0.14 does not wrap.

use std::{io, os::fd::AsRawFd};

use thiserror::Error;

/// `BPF_MAP_UPDATE_BATCH` (Linux 5.6).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Errors from the raw calls.
#[derive(Debug, Error)]
pub enum SysError {
    #[error("bpf(BPF_MAP_UPDATE_BATCH) failed after {done} of {total} entries")]
    UpdateBatch { done: usize, total: usize, source: io::Error },
    #[error("keys and values differ in number ({keys} keys, {values} values)")]
    LengthMismatch { keys: usize, values: usize },
}

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Inserts or replaces `keys[i] -> values[i]` in a map with one system call
/// per chunk, instead of one per element: a million rules load in a
/// fraction of a second instead of seconds.
pub fn update_batch<K: aya::Pod, V: aya::Pod>(map: &impl AsRawFd, keys: &[K], values: &[V]) -> Result<(), SysError> {
    const CHUNK: usize = 1 << 16;
    if keys.len() != values.len() {
        return Err(SysError::LengthMismatch { keys: keys.len(), values: values.len() });
    }
    let mut done = 0;
    while done < keys.len() {
        let n = (keys.len() - done).min(CHUNK);
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values[done..].as_ptr() as u64,
            count: n as u32,
            map_fd: map.as_raw_fd().cast_unsigned(),
            ..BatchAttr::default()
        };
        // SAFETY: attr points at `n` keys and values of the map's key and
        // value sizes (aya::Pod types checked against the map by the caller);
        // the kernel reads them and writes back `count`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_BATCH,
                &raw mut attr,
                std::mem::size_of::<BatchAttr>() as libc::c_uint,
            )
        };
        if rc < 0 {
            return Err(SysError::UpdateBatch {
                done: done + attr.count as usize,
                total: keys.len(),
                source: io::Error::last_os_error(),
            });
        }
        done += n;
    }
    Ok(())
}

/// `BPF_MAP_LOOKUP_BATCH` (Linux 5.6).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// One `BPF_MAP_LOOKUP_BATCH` call; `Ok(true)` when it reached the end of
/// the map (the kernel says so with ENOENT; `attr.count` still says how
/// many entries this call wrote).
///
/// # Safety
/// `attr.keys` and `attr.values` must have room for `attr.count` keys and
/// values of the map's sizes, and `in_batch`/`out_batch` be 0 or point at
/// the map's batch token; the kernel writes them, `count` and `out_batch`.
unsafe fn lookup_batch(attr: &mut BatchAttr) -> io::Result<bool> {
    // SAFETY: as the caller promised.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &raw mut *attr, size_of::<BatchAttr>() as libc::c_uint)
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOENT) { Ok(true) } else { Err(e) };
    }
    Ok(false)
}

/// Every slot of a per-CPU array of `u64` summed over the CPUs, read with
/// one system call (a slot at a time would take thousands).
pub fn sum_percpu_u64(map: &impl AsRawFd, slots: usize) -> io::Result<Vec<u64>> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let mut keys = vec![0u32; slots];
    let mut values = vec![0u64; slots * cpus];
    let mut out_batch = 0u32;
    let mut attr = BatchAttr {
        out_batch: (&raw mut out_batch) as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: slots as u32,
        map_fd: map.as_raw_fd().cast_unsigned(),
        ..BatchAttr::default()
    };
    // SAFETY: keys and values have room for `count` entries of a per-CPU
    // array of u64 (8 bytes per CPU per slot).
    unsafe { lookup_batch(&mut attr)? };
    let mut sums = vec![0u64; slots];
    for i in 0..attr.count as usize {
        let slot = keys[i] as usize;
        if slot < slots {
            sums[slot] = values[i * cpus..(i + 1) * cpus].iter().sum();
        }
    }
    Ok(sums)
}

/// Every entry of a hash map, read with one system call per 64k entries
/// (one per entry would take a second for a million rules). The map must
/// have keys of `K`'s size and values of `V`'s. Entries added or removed
/// meanwhile may or may not be seen; each one seen is whole.
pub fn dump_hash<K: aya::Pod + Default + Copy, V: aya::Pod + Default + Copy>(
    map: &impl AsRawFd,
) -> io::Result<Vec<(K, V)>> {
    const CHUNK: usize = 1 << 16;
    let mut out = Vec::new();
    let mut keys = vec![K::default(); CHUNK];
    let mut values = vec![V::default(); CHUNK];
    // Hash maps count their batches in buckets (a u32).
    let mut token = 0u32;
    let mut first = true;
    loop {
        let mut next = 0u32;
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { (&raw const token) as u64 },
            out_batch: (&raw mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: map.as_raw_fd().cast_unsigned(),
            ..BatchAttr::default()
        };
        // SAFETY: keys and values have room for `count` entries of the
        // map's key and value sizes (the caller's types).
        let end = unsafe { lookup_batch(&mut attr)? };
        let n = attr.count as usize;
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        if end {
            return Ok(out);
        }
        token = next;
        first = false;
    }
}

/// `BPF_PROG_TEST_RUN`.
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// Explicit, so it is zero: the kernel refuses non-zero bytes past the
    /// fields it knows.
    pad: u32,
}

/// Runs program `prog` once on `packet`: (XDP action, the packet as left).
pub fn test_run(prog: &impl AsRawFd, packet: &[u8]) -> io::Result<(u32, Vec<u8>)> {
    test_run_on(prog, packet, 0)
}

/// `struct xdp_md` as `BPF_PROG_TEST_RUN` takes it for its context.
#[repr(C)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// [`test_run`] as if the packet came in on interface `ifindex` of the
/// calling thread's network namespace (0: the loopback device, the
/// kernel's default).
pub fn test_run_on(prog: &impl AsRawFd, packet: &[u8], ifindex: u32) -> io::Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; packet.len() + 4096];
    let ctx = XdpMd {
        data: 0,
        data_end: packet.len() as u32,
        data_meta: 0,
        ingress_ifindex: ifindex,
        rx_queue_index: 0,
        egress_ifindex: 0,
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd().cast_unsigned(),
        data_size_in: packet.len() as u32,
        data_size_out: out.len() as u32,
        data_in: packet.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..TestRunAttr::default()
    };
    if ifindex != 0 {
        attr.ctx_size_in = size_of::<XdpMd>() as u32;
        attr.ctx_in = (&raw const ctx) as u64;
    }
    // SAFETY: the buffers outlive the call and their sizes are given.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &raw mut attr, size_of::<TestRunAttr>() as libc::c_uint)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    out.truncate(attr.data_size_out as usize);
    Ok((attr.retval, out))
}

/// [`update_batch`] from one thread per CPU (at most 8), each on its own
/// contiguous share: the kernel's hash maps take per-bucket locks and
/// per-CPU free lists, so the inserts of a big rule set scale with CPUs.
pub fn update_batch_parallel<K: aya::Pod + Sync, V: aya::Pod + Sync>(
    map: &(impl AsRawFd + Sync),
    keys: &[K],
    values: &[V],
) -> Result<(), SysError> {
    if keys.len() != values.len() {
        return Err(SysError::LengthMismatch { keys: keys.len(), values: values.len() });
    }
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(8);
    if threads == 1 || keys.len() < 1 << 16 {
        return update_batch(map, keys, values);
    }
    let share = keys.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = keys
            .chunks(share)
            .zip(values.chunks(share))
            .map(|(k, v)| s.spawn(move || update_batch(map, k, v)))
            .collect();
        parts.into_iter().map(|p| p.join().expect("a batch update thread")).collect::<Result<Vec<()>, _>>()
    })?;
    Ok(())
}

/// The kernel's own account of a map's memory: `memlock` in its fdinfo.
pub fn map_memlock(map: &impl AsRawFd) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", map.as_raw_fd()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no memlock line in fdinfo"))
}

/// Index of a network interface, if it exists.
pub fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// The name of interface `index`, if there is one.
/// The link type of interface `name` (`ARPHRD_*`, as
/// `/sys/class/net/NAME/type` says), if it exists.
pub fn link_type(name: &str) -> Option<u16> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/type")).ok()?.trim().parse().ok()
}

/// Whether interface `name` is virtual (veth, bridge, bond, VLAN, ...):
/// sysfs links a device backed by hardware (a PCI NIC, a virtio device) to
/// it as `/sys/class/net/NAME/device`, and a virtual one has none.
pub fn is_virtual(name: &str) -> bool {
    !std::path::Path::new(&format!("/sys/class/net/{name}/device")).exists()
}

/// Whether XDP on an interface of link type `t` sees Ethernet frames: an
/// Ethernet device (`ARPHRD_ETHER`: NICs, veth, bridges, VLAN and bond
/// devices), or loopback, which frames packets with a zeroed Ethernet header.
pub const fn frames_are_ethernet(t: u16) -> bool {
    t == libc::ARPHRD_ETHER || t == libc::ARPHRD_LOOPBACK
}

/// A name for a link type, for error messages.
pub fn link_type_name(t: u16) -> &'static str {
    match t {
        libc::ARPHRD_PPP => "ppp",
        libc::ARPHRD_NONE => "raw IP (tun, WireGuard)",
        libc::ARPHRD_TUNNEL => "IPIP tunnel",
        libc::ARPHRD_TUNNEL6 => "IPv6 tunnel",
        libc::ARPHRD_SIT => "SIT tunnel",
        libc::ARPHRD_IPGRE => "GRE tunnel",
        // ARPHRD_IP6GRE, which libc does not name.
        823 => "IPv6 GRE tunnel",
        libc::ARPHRD_INFINIBAND => "InfiniBand",
        _ => "not Ethernet",
    }
}

pub fn if_name(index: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// Waits for an RCU grace period: every XDP program run that started before
/// the call has finished when it returns. `MEMBARRIER_CMD_GLOBAL` is
/// implemented with `synchronize_rcu()` (kernel/sched/membarrier.c), and XDP
/// programs run inside RCU read-side sections.
///
/// Kernels booted with `nohz_full` refuse that command (EINVAL). There the
/// wait falls back to a pause of 50 ms: an XDP program run goes to
/// completion in microseconds, without sleeping, so that is thousands of
/// times longer than any run that could have started before the call.
pub fn wait_for_packets_in_flight() -> io::Result<()> {
    const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
    // SAFETY: membarrier takes no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EINVAL) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        return Ok(());
    }
    Err(err)
}

/// A BPF array of u64 counters mapped into this process (`BPF_F_MMAPABLE`),
/// so user space can change them with atomic operations the kernel program
/// also uses.
pub struct SharedCounters {
    ptr: *mut u64,
    words: usize,
    bytes: usize,
}

// SAFETY: the mapping is plain shared memory accessed only through atomics.
unsafe impl Send for SharedCounters {}

impl SharedCounters {
    /// Maps the first `words` counters of the array behind `fd`.
    pub fn map(fd: &impl AsRawFd, words: usize) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let bytes = (words * 8).div_ceil(page) * page;
        // SAFETY: a shared read-write mapping of a BPF array fd; the kernel
        // checks the length against the map.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr: ptr.cast(), words, bytes })
    }

    /// Atomically subtracts one from counter `i`.
    pub fn decrement(&self, i: u32) {
        self.subtract(i, 1);
    }

    /// Atomically subtracts `n` from counter `i`.
    pub fn subtract(&self, i: u32, n: u64) {
        if let Some(a) = self.word(i) {
            a.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Counter `i` now.
    pub fn get(&self, i: u32) -> u64 {
        self.word(i).map_or(0, |a| a.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn word(&self, i: u32) -> Option<&std::sync::atomic::AtomicU64> {
        let i = i as usize;
        // SAFETY: in bounds of the mapping; u64 array elements are 8-byte aligned.
        (i < self.words).then(|| unsafe { std::sync::atomic::AtomicU64::from_ptr(self.ptr.add(i)) })
    }
}

impl Drop for SharedCounters {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.bytes) };
    }
}

/// Nanoseconds on `clock` (a `CLOCK_*` id): `CLOCK_MONOTONIC` is
/// `bpf_ktime_get_ns`'s clock, `CLOCK_MONOTONIC_COARSE` that of
/// `bpf_ktime_get_coarse_ns`.
pub fn monotonic_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    ts.tv_sec.cast_unsigned() * 1_000_000_000 + ts.tv_nsec.cast_unsigned()
}
