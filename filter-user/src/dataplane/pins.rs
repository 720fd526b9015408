//! What `namewall run` pins in bpffs so that a restarted or upgraded
//! daemon adopts a running filter instead of starting a new one: the maps
//! (rules, settings, counters, flows) and one XDP link per interface.
//!
//! Layout: `DIR/v{ABI}/maps/{MAP}` and `DIR/v{ABI}/links/{IFACE}`, where
//! `ABI` is [`maps::ABI_VERSION`]. bpffs holds only BPF objects and
//! directories, so the version is a directory: a daemon that finds another
//! version's directory refuses to start rather than read maps whose layout
//! it does not know. Each pinned map's shape is checked too.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::maps::{MapInfo, MapType};
use maps::{names, settings::Settings};
use thiserror::Error;

/// Where `run` pins unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/namewall";
/// The filesystem magic of bpffs (`statfs(2)` `f_type`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where systemd and the kernel documentation mount bpffs.
const SYS_FS_BPF: &str = "/sys/fs/bpf";

/// A map that is pinned, and the shape a pinned copy must have.
struct Shape {
    name: &'static str,
    kind: MapType,
    key: u32,
    value: u32,
    /// `None` where the size follows configuration (and the pinned size is kept).
    entries: Option<u32>,
}

/// The maps a restarted daemon adopts. SCRATCH (per-packet working memory)
/// and TRACE (replay only) are the program's own and not pinned.
const SHAPES: &[Shape] = &[
    Shape { name: names::RULESETS, kind: MapType::ArrayOfMaps, key: 4, value: 4, entries: Some(1) },
    Shape {
        name: names::SETTINGS,
        kind: MapType::Array,
        key: 4,
        value: size_of::<Settings>() as u32,
        entries: Some(1),
    },
    Shape { name: names::FILTER, kind: MapType::Array, key: 4, value: 8, entries: None },
    Shape {
        name: names::FLOWS,
        kind: MapType::Hash,
        key: 8,
        value: size_of::<maps::flow::FlowState>() as u32,
        entries: None,
    },
    Shape { name: names::FLOW_HINT, kind: MapType::Array, key: 4, value: 8, entries: None },
    Shape { name: names::EVENTS, kind: MapType::RingBuf, key: 0, value: 0, entries: None },
    Shape {
        name: names::COUNTERS,
        kind: MapType::PerCpuArray,
        key: 4,
        value: 8,
        entries: Some(maps::counters::SLOTS as u32),
    },
];

/// The names of the pinned maps.
pub fn pinned_maps() -> impl Iterator<Item = &'static str> {
    SHAPES.iter().map(|s| s.name)
}

#[derive(Debug, Error)]
pub enum PinError {
    #[error(
        "{dir} holds pinned state of namewall ABI version {found}, this namewall uses version {want}: stop the \
         running filter with that version's `namewall stop`, or remove {dir}"
    )]
    Incompatible { dir: PathBuf, found: String, want: u32 },
    #[error(
        "pinned map {path} is not what this namewall expects ({why}); remove {dir} (`namewall stop`) to start afresh"
    )]
    BadMap { path: PathBuf, dir: PathBuf, why: String },
    #[error("{0} is not on a BPF filesystem: mount one there (mount -t bpf bpf {0}) or pass --pin-dir")]
    NotBpffs(PathBuf),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: io::Error },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PinError {
    let path = path.to_owned();
    move |source| PinError::Io { what, path, source }
}

/// The pin directory of this ABI version, ready to use.
#[derive(Clone, Debug)]
pub struct PinDir {
    /// `DIR/v{ABI}`.
    root: PathBuf,
    /// Whether maps were pinned there already: a running filter to adopt.
    adopted: bool,
}

impl PinDir {
    /// Checks `dir` (mounting bpffs on /sys/fs/bpf when that is where it
    /// lives and nothing is mounted there), refuses other ABI versions'
    /// state and maps of the wrong shape, and creates the layout.
    pub fn prepare(dir: &Path) -> Result<Self, PinError> {
        ensure_bpffs(dir)?;
        let root = dir.join(format!("v{}", maps::ABI_VERSION));
        if dir.is_dir() {
            for entry in std::fs::read_dir(dir).map_err(io_err("reading", dir))? {
                let name = entry.map_err(io_err("reading", dir))?.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('v') && name != format!("v{}", maps::ABI_VERSION) {
                    return Err(PinError::Incompatible {
                        dir: dir.to_owned(),
                        found: name[1..].to_owned(),
                        want: maps::ABI_VERSION,
                    });
                }
            }
        }
        for sub in ["maps", "links"] {
            let d = root.join(sub);
            std::fs::create_dir_all(&d).map_err(io_err("creating", &d))?;
        }
        let me = Self { root, adopted: false };
        let mut adopted = false;
        for s in SHAPES {
            let path = me.map(s.name);
            if !path.exists() {
                continue;
            }
            adopted = true;
            let bad = |why: String| PinError::BadMap { path: path.clone(), dir: dir.to_owned(), why };
            let info = MapInfo::from_pin(&path).map_err(|e| bad(e.to_string()))?;
            let kind = info.map_type().map_err(|e| bad(e.to_string()))?;
            if kind != s.kind || info.key_size() != s.key || info.value_size() != s.value {
                return Err(bad(format!(
                    "{kind:?} {}-byte keys {}-byte values, expected {:?} {}/{}",
                    info.key_size(),
                    info.value_size(),
                    s.kind,
                    s.key,
                    s.value
                )));
            }
            if let Some(n) = s.entries
                && info.max_entries() != n
            {
                return Err(bad(format!("{} entries, expected {n}", info.max_entries())));
            }
        }
        Ok(Self { adopted, ..me })
    }

    /// Whether a running filter's maps were found.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }

    pub fn link(&self, iface: &str) -> PathBuf {
        self.root.join("links").join(iface)
    }

    /// Interfaces with a pinned link.
    pub fn linked_interfaces(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.root.join("links")) else { return Vec::new() };
        let mut v: Vec<String> = rd.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned())).collect();
        v.sort();
        v
    }
}

/// What [`remove`] took away.
#[derive(Debug, Default)]
pub struct Removed {
    pub links: Vec<String>,
    pub maps: usize,
}

/// Unpins everything under `dir` (every version): links first, which
/// detaches the program from their interfaces once no process holds them,
/// then maps, then the directories.
pub fn remove(dir: &Path) -> Result<Removed, PinError> {
    let mut out = Removed::default();
    // Whatever is already gone (another remover got there first) is fine.
    let gone = |r: io::Result<()>| match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    let Ok(versions) = std::fs::read_dir(dir) else { return Ok(out) };
    for version in versions.flatten() {
        let v = version.path();
        let links = v.join("links");
        if let Ok(rd) = std::fs::read_dir(&links) {
            for e in rd.flatten() {
                gone(std::fs::remove_file(e.path())).map_err(io_err("unpinning", &e.path()))?;
                out.links.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        let maps = v.join("maps");
        if let Ok(rd) = std::fs::read_dir(&maps) {
            for e in rd.flatten() {
                gone(std::fs::remove_file(e.path())).map_err(io_err("unpinning", &e.path()))?;
                out.maps += 1;
            }
        }
        for d in [&links, &maps, &v] {
            gone(std::fs::remove_dir(d)).map_err(io_err("removing", d))?;
        }
    }
    gone(std::fs::remove_dir(dir)).map_err(io_err("removing", dir))?;
    Ok(out)
}

/// Whether `path` (or its nearest existing ancestor) is on bpffs.
fn on_bpffs(path: &Path) -> io::Result<bool> {
    let mut p = path;
    while !p.exists() {
        p = p.parent().unwrap_or(Path::new("/"));
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: a valid path and a statfs to write into.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &raw mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type == BPF_FS_MAGIC)
}

/// Mounts bpffs on /sys/fs/bpf when `dir` is below it and nothing is
/// mounted there yet (as bpftool does); anything else must be bpffs already.
fn ensure_bpffs(dir: &Path) -> Result<(), PinError> {
    if on_bpffs(dir).map_err(io_err("checking", dir))? {
        return Ok(());
    }
    let sys = Path::new(SYS_FS_BPF);
    if dir.starts_with(sys) && sys.is_dir() && !on_bpffs(sys).map_err(io_err("checking", sys))? {
        let target = std::ffi::CString::new(SYS_FS_BPF).expect("no NUL");
        // SAFETY: valid C strings; mount(2) copies them.
        let rc =
            unsafe { libc::mount(c"bpf".as_ptr(), target.as_ptr(), c"bpf".as_ptr(), 0, c"mode=0700".as_ptr().cast()) };
        if rc != 0 {
            return Err(PinError::Io {
                what: "mounting bpffs on",
                path: sys.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        if on_bpffs(dir).map_err(io_err("checking", dir))? {
            return Ok(());
        }
    }
    Err(PinError::NotBpffs(dir.to_owned()))
}
