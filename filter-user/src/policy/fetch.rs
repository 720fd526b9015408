//! Lists from URLs: fetched with conditional requests (ETag,
//! If-Modified-Since) and cached on disk, so the last good copy is in
//! force through failed fetches and daemon restarts.
//!
//! A fetch never touches the cache until the new copy has been read whole
//! and parsed; the cache file and its metadata are then replaced
//! atomically (temporary file, fsync, rename).

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::blocklist::{LineError, ListKind};
use crate::files::write_atomically;

/// Largest list accepted from a URL: a 10M-line list is about 250 MB.
pub const MAX_LIST_BYTES: u64 = 1 << 30;
/// How long one fetch may take, connection and body included.
pub const FETCH_TIMEOUT: Duration = Duration::from_mins(2);

/// A list fetched from a URL, and where its copy is cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlList {
    pub url: String,
    pub kind: ListKind,
    /// The last good copy.
    pub cache: PathBuf,
}

impl UrlList {
    /// `url` cached in `dir`, under a name derived from the URL (its
    /// FNV-1a hash: stable across restarts, free of path characters).
    pub fn new(url: &str, kind: ListKind, dir: &Path) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in url.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Self { url: url.to_owned(), kind, cache: dir.join(format!("{h:016x}.list")) }
    }

    fn meta_path(&self) -> PathBuf {
        self.cache.with_extension("meta.json")
    }

    /// What the last good fetch said about the copy (for conditional requests).
    pub fn meta(&self) -> CacheMeta {
        std::fs::read(self.meta_path()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Replaces the cached copy and its metadata.
    pub fn store(&self, body: &[u8], meta: &CacheMeta) -> std::io::Result<()> {
        if let Some(dir) = self.cache.parent() {
            std::fs::create_dir_all(dir)?;
        }
        write_atomically(&self.cache, body)?;
        let m = serde_json::to_vec_pretty(meta).expect("metadata serialises");
        write_atomically(&self.meta_path(), &m)
    }
}

/// Validators of the cached copy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheMeta {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// What a fetch found.
#[derive(Debug)]
pub enum Fetched {
    /// 304: the cached copy is current.
    NotModified,
    /// A new copy, read once into memory that the parser and the cache
    /// then share, and its validators.
    New(Bytes, CacheMeta),
}

#[derive(Debug, Error)]
pub enum FetchError {
    #[error("{url}: only http:// and https:// URLs are fetched")]
    Scheme { url: String },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {source}")]
    Http { url: String, source: Box<ureq::Error> },
    #[error("{url}: larger than {MAX_LIST_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url}: reading the body: {source}")]
    Body { url: String, source: std::io::Error },
}

/// Fetches `list` if it changed since `meta` (a conditional GET).
pub fn fetch(list: &UrlList, meta: &CacheMeta) -> Result<Fetched, FetchError> {
    let url = &list.url;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(FetchError::Scheme { url: url.clone() });
    }
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder().timeout_global(Some(FETCH_TIMEOUT)).http_status_as_error(false).build(),
    );
    let mut req = agent.get(url).header("User-Agent", concat!("namewall/", env!("CARGO_PKG_VERSION")));
    // Validators only apply to the copy fetched from this very URL.
    if meta.url == *url {
        if let Some(e) = &meta.etag {
            req = req.header("If-None-Match", e);
        }
        if let Some(m) = &meta.last_modified {
            req = req.header("If-Modified-Since", m);
        }
    }
    let http = |source| FetchError::Http { url: url.clone(), source: Box::new(source) };
    let mut resp = req.call().map_err(http)?;
    let status = resp.status().as_u16();
    if status == 304 {
        return Ok(Fetched::NotModified);
    }
    if status != 200 {
        return Err(FetchError::Status { url: url.clone(), status });
    }
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let new_meta = CacheMeta { url: url.clone(), etag: header("etag"), last_modified: header("last-modified") };
    let mut body = Vec::new();
    resp.body_mut()
        .with_config()
        .limit(MAX_LIST_BYTES + 1)
        .reader()
        .read_to_end(&mut body)
        .map_err(|source| FetchError::Body { url: url.clone(), source })?;
    // Read straight into the vector, which `Bytes` then takes over as it is.
    let body = Bytes::from(body);
    if body.len() as u64 > MAX_LIST_BYTES {
        return Err(FetchError::TooLarge { url: url.clone() });
    }
    Ok(Fetched::New(body, new_meta))
}

/// Why a refresh left the cached copy as it was.
#[derive(Debug, Error)]
pub enum RefreshError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(
        "{count} malformed line(s), first {first}; the last good copy stays in force (--skip-bad-lines loads lists \
         without their bad lines)"
    )]
    Malformed { count: usize, first: LineError },
    /// An empty copy (a proxy's hiccup, an error page read with
    /// `--skip-bad-lines`) must not wipe out a list that had rules.
    #[error("the new copy has no rules (the cached one has {had}); the last good copy stays in force")]
    Emptied { had: usize },
    #[error("caching {url} in {}: {source}", .path.display())]
    Cache { url: String, path: PathBuf, source: std::io::Error },
    #[error("the fetch failed unexpectedly (panic)")]
    Panicked,
}

/// What a refresh did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshed {
    /// The cached copy is current (304).
    NotModified,
    /// A new copy was parsed and cached: its rules and skipped lines.
    Updated { rules: usize, skipped: usize },
}

/// Fetches `list`, checks that the new copy parses (with no malformed line
/// unless `skip_bad_lines`), and only then replaces the cached copy. Any
/// failure leaves the last good copy as it was; the message says why.
pub fn refresh(list: &UrlList, skip_bad_lines: bool) -> Result<Refreshed, RefreshError> {
    let (body, meta) = match fetch(list, &list.meta())? {
        Fetched::NotModified => return Ok(Refreshed::NotModified),
        Fetched::New(body, meta) => (body, meta),
    };
    let parsed = super::blocklist::parse_bytes(&body, &list.url, list.kind);
    if !skip_bad_lines && let Some(first) = parsed.errors.first() {
        return Err(RefreshError::Malformed { count: parsed.errors.len(), first: first.clone() });
    }
    if parsed.entries.is_empty()
        && let Ok(old) = std::fs::read(&list.cache)
    {
        let had = super::blocklist::parse_bytes(&old, &list.url, list.kind).entries.len();
        if had > 0 {
            return Err(RefreshError::Emptied { had });
        }
    }
    list.store(&body, &meta).map_err(|source| RefreshError::Cache {
        url: list.url.clone(),
        path: list.cache.clone(),
        source,
    })?;
    Ok(Refreshed::Updated { rules: parsed.entries.len(), skipped: parsed.errors.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_are_stable_and_distinct() {
        let dir = Path::new("/x");
        let a = UrlList::new("https://lists.example/ads.txt", ListKind::Block, dir);
        assert_eq!(a, UrlList::new("https://lists.example/ads.txt", ListKind::Block, dir));
        assert_ne!(a.cache, UrlList::new("https://lists.example/ads.txt?v=2", ListKind::Block, dir).cache);
        assert!(a.cache.starts_with(dir) && a.cache.extension().is_some_and(|e| e == "list"));
    }

    #[test]
    fn store_and_meta_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let l = UrlList::new("http://127.0.0.1:1/l", ListKind::Allow, dir.path());
        assert_eq!(l.meta(), CacheMeta::default());
        let m = CacheMeta { url: l.url.clone(), etag: Some("\"v1\"".into()), last_modified: None };
        l.store(b"a.example\n", &m).unwrap();
        assert_eq!(l.meta(), m);
        assert_eq!(std::fs::read(&l.cache).unwrap(), b"a.example\n");
        assert!(matches!(
            fetch(&UrlList::new("ftp://x/y", ListKind::Block, dir.path()), &m),
            Err(FetchError::Scheme { .. })
        ));
        // Nothing listens on port 1: an error, the cache untouched.
        assert!(matches!(fetch(&l, &m), Err(FetchError::Http { .. })));
        assert_eq!(std::fs::read(&l.cache).unwrap(), b"a.example\n");
    }
}
