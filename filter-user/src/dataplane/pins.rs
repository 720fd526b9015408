//! What `namewall run` pins in bpffs so that a restarted or upgraded
//! daemon adopts a running filter instead of starting a new one: the maps
//! (rules, settings, counters, flows) and one XDP link per interface.
//!
//! Layout: `DIR/v{ABI}/maps/{MAP}` and `DIR/v{ABI}/links/{IFACE}`, where
//! `ABI` is [`maps::ABI_VERSION`]. bpffs holds only BPF objects and
//! directories, so the version is a directory: a daemon that finds another
//! version's directory refuses to start rather than read maps whose layout
//! it does not know. Each pinned map's shape is checked too, against its
//! row of `maps::layout::shapes`.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::maps::{MapError, MapInfo, MapType};
use maps::layout::{
    names,
    shapes::{self, Entries, MapKind, MapShape},
};
use thiserror::Error;

/// Where `run` pins unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/namewall";
/// The filesystem magic of bpffs (`statfs(2)` `f_type`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where systemd and the kernel documentation mount bpffs.
const SYS_FS_BPF: &str = "/sys/fs/bpf";

/// The maps a restarted daemon adopts (`maps::layout::shapes`, `pinned`).
fn pinned() -> impl Iterator<Item = &'static MapShape> {
    shapes::MAPS.iter().filter(|s| s.pinned)
}

/// The names of the pinned maps.
pub fn pinned_maps() -> impl Iterator<Item = &'static str> {
    pinned().map(|s| s.name)
}

/// The loader's type for a map kind of `maps::layout::shapes`.
pub fn map_type(kind: MapKind) -> MapType {
    match kind {
        MapKind::Array => MapType::Array,
        MapKind::PerCpuArray => MapType::PerCpuArray,
        MapKind::Hash => MapType::Hash,
        MapKind::LruHash => MapType::LruHash,
        MapKind::ArrayOfMaps => MapType::ArrayOfMaps,
        MapKind::RingBuf => MapType::RingBuf,
        MapKind::ProgramArray => MapType::ProgramArray,
    }
}

/// How a map differs from its row of `maps::layout::shapes`.
#[derive(Debug, Error)]
pub enum ShapeError {
    #[error("{0}")]
    Info(MapError),
    #[error("{found:?} {key}-byte keys {value}-byte values, expected {want:?} {want_key}/{want_value}")]
    Layout { found: MapType, key: u32, value: u32, want: MapType, want_key: u32, want_value: u32 },
    #[error("{found} entries, expected {want}")]
    Entries { found: u32, want: u32 },
}

/// Checks a map, as the kernel describes it, against its row: kind, key
/// and value sizes, and the number of entries where that is fixed.
pub fn check_shape(shape: &MapShape, info: &MapInfo) -> Result<(), ShapeError> {
    let found = info.map_type().map_err(ShapeError::Info)?;
    let want = map_type(shape.kind);
    if found != want || info.key_size() != shape.key_size || info.value_size() != shape.value_size {
        return Err(ShapeError::Layout {
            found,
            key: info.key_size(),
            value: info.value_size(),
            want,
            want_key: shape.key_size,
            want_value: shape.value_size,
        });
    }
    match shape.entries {
        Entries::Fixed(n) if info.max_entries() != n => Err(ShapeError::Entries { found: info.max_entries(), want: n }),
        _ => Ok(()),
    }
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
    BadMap { path: PathBuf, dir: PathBuf, why: Box<ShapeError> },
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
        for s in pinned() {
            let path = me.map(s.name);
            if !path.exists() {
                continue;
            }
            adopted = true;
            let bad = |why| PinError::BadMap { path: path.clone(), dir: dir.to_owned(), why: Box::new(why) };
            let info = MapInfo::from_pin(&path).map_err(|e| bad(ShapeError::Info(e)))?;
            check_shape(s, &info).map_err(bad)?;
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

    /// Where the `STAGES` program array of the entry program with id
    /// `prog_id` is pinned: `maps/STAGES-{prog_id}` (bpffs refuses dots in
    /// names). Each loaded program has its own (the stages it tail-calls
    /// are those of its own build, never another version's), and none is
    /// adopted. Pinned, because the kernel
    /// empties a program array once no process and no pin holds it, which
    /// would leave an attached entry program whose tail calls all fail.
    /// Beside the adopted maps, under a name no version adopts, so any
    /// version's `namewall stop` removes it with the rest.
    pub fn stages(&self, prog_id: u32) -> PathBuf {
        self.map(&format!("{}-{prog_id}", names::STAGES))
    }

    /// The pinned program arrays of entry programs other than `prog_id`
    /// (those of a filter this one replaced).
    pub fn other_stages(&self, prog_id: u32) -> Vec<PathBuf> {
        let keep = self.stages(prog_id);
        let prefix = format!("{}-", names::STAGES);
        let Ok(rd) = std::fs::read_dir(self.root.join("maps")) else { return Vec::new() };
        rd.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .filter(|p| *p != keep)
            .collect()
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
    let Ok(versions) = std::fs::read_dir(dir) else { return Ok(out) };
    for version in versions.flatten() {
        let v = version.path();
        let links = v.join("links");
        if let Ok(rd) = std::fs::read_dir(&links) {
            for e in rd.flatten() {
                unpin(&e.path())?;
                out.links.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        let maps = v.join("maps");
        if let Ok(rd) = std::fs::read_dir(&maps) {
            for e in rd.flatten() {
                unpin(&e.path())?;
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

/// Removes a pin (a map's or a link's); one already gone (another remover
/// got there first) is fine.
pub fn unpin(path: &Path) -> Result<(), PinError> {
    gone(std::fs::remove_file(path)).map_err(io_err("unpinning", path))
}

/// `r`, with "not found" as success.
fn gone(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
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
