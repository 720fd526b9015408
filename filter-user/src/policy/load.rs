//! Lists on disk to a rule set: what `run` and `replay` both load.

use std::{collections::HashMap, fmt::Write as _, path::PathBuf, sync::Arc};

use nohash_hasher::BuildNoHashHasher;
use thiserror::Error;

use super::{
    blocklist::{self, LineError, ListKind, LoadError, Parsed},
    fetch::UrlList,
    listdiff::{self, GONE, LineDiff, ListText},
    names::Domain,
    rules::{self, Collision, Contribution, KeyUpdate, RuleSet},
};

/// Which lists to load.
#[derive(Clone, Debug, Default)]
pub struct PolicySource {
    pub blocklists: Vec<PathBuf>,
    pub allowlists: Vec<PathBuf>,
    /// Fail on the first malformed line instead of skipping it.
    pub strict: bool,
    /// Lists fetched from URLs, read from their cached copies (a list not
    /// fetched yet is left out until it is).
    pub urls: Vec<UrlList>,
}

/// A loaded policy and what was wrong with its lists.
#[derive(Debug)]
pub struct Policy {
    pub rules: RuleSet,
    /// Malformed lines that were skipped (empty when strict), list by list
    /// in order, each list's by line.
    pub skipped: Vec<LineError>,
    /// Names left out because their key collided with another name's.
    pub collisions: Vec<Collision>,
    /// Lines read over all lists.
    pub lines: usize,
    /// What each list held, in the order given.
    pub lists: Vec<ListStats>,
    /// Each list's text (in `lists` order), for the next reload to find
    /// the lines that changed.
    texts: Vec<KeptText>,
}

/// A loaded list's text, and the name its entries' origins share.
#[derive(Debug)]
struct KeptText {
    file: Arc<str>,
    text: ListText,
}

/// One list's share of a policy.
#[derive(Clone, Debug)]
pub struct ListStats {
    pub path: String,
    pub kind: ListKind,
    /// Rules read (a hosts line may hold several).
    pub entries: usize,
    /// Malformed lines.
    pub skipped: usize,
}

/// Why a policy could not be loaded.
#[derive(Debug, Error)]
pub enum PolicyError {
    #[error(transparent)]
    Read(#[from] LoadError),
    /// Strict mode: the malformed lines, all of them (the message lists the first 20).
    #[error("{}", list_malformed(.0))]
    Malformed(Vec<LineError>),
}

/// A list as read from disk.
struct ReadList {
    name: String,
    kind: ListKind,
    text: ListText,
}

/// What a reload found.
#[derive(Debug)]
pub enum Reload {
    /// A new policy, every list read whole.
    Whole(Policy),
    /// The lines that changed, read into the rules they touch: for
    /// [`Policy::apply`].
    Lines(LineChanges),
}

/// A reload that read only the lines that changed: the new rule of every
/// name they touch, and the lists' new texts and figures.
#[derive(Debug)]
pub struct LineChanges {
    updates: Vec<KeyUpdate>,
    /// Per list: its new text and how its lines moved, when it changed.
    texts: Vec<Option<(ListText, LineDiff)>>,
    skipped: Vec<LineError>,
    collisions: Vec<Collision>,
    lines: usize,
    lists: Vec<ListStats>,
}

impl LineChanges {
    /// Every name a changed line touched, with its rule now (`None`: no
    /// list names it any more). Its rule before is in the old policy.
    pub fn updates(&self) -> &[KeyUpdate] {
        &self.updates
    }

    /// Lines added to or removed from the lists.
    pub fn changed_lines(&self) -> usize {
        self.texts.iter().flatten().map(|(_, d)| d.added.len() + d.removed.len()).sum()
    }

    /// Malformed lines in the new lists, as [`Policy::skipped`].
    pub fn skipped(&self) -> &[LineError] {
        &self.skipped
    }

    /// Rules read from the lists as they are now.
    pub fn list_rules(&self, before: &Policy) -> usize {
        let gone = self.updates.iter().filter(|u| u.rule.is_none() && before.rules.get(u.key).is_some()).count();
        let new = self.updates.iter().filter(|u| u.rule.is_some() && before.rules.get(u.key).is_none()).count();
        before.rules.len() + new - gone
    }
}

impl Policy {
    /// Brings the policy to what `changes` (computed from it) found.
    pub fn apply(&mut self, changes: LineChanges) {
        let shifted: Vec<(Arc<str>, &LineDiff)> = self
            .texts
            .iter()
            .zip(&changes.texts)
            .filter_map(|(kept, new)| new.as_ref().filter(|(_, d)| d.shifted()).map(|(_, d)| (kept.file.clone(), d)))
            .collect();
        if !shifted.is_empty() {
            // Rules of lines that moved; those of lines that went are
            // among the updates.
            self.rules.renumber(|o| {
                let (_, d) = shifted.iter().find(|(file, _)| Arc::ptr_eq(file, &o.file))?;
                let to = *d.old_to_new.get(o.line.checked_sub(1)?)?;
                (to != GONE).then_some(to as usize + 1)
            });
        }
        self.rules.apply(changes.updates);
        for (kept, new) in self.texts.iter_mut().zip(changes.texts) {
            if let Some((text, _)) = new {
                kept.text = text;
            }
        }
        self.skipped = changes.skipped;
        self.collisions = changes.collisions;
        self.lines = changes.lines;
        self.lists = changes.lists;
    }
}

/// Above this many changed lines, and a quarter of all lines, a reload
/// reads every list whole: cheaper than following that many changes.
const WHOLE_RELOAD_LINES: usize = 1024;

impl PolicySource {
    /// Reads every list and builds the rule set under `seed`.
    pub fn load(&self, seed: u64) -> Result<Policy, PolicyError> {
        Self::build(self.read()?, seed, self.strict)
    }

    /// Reads every list again and finds what changed since `before` was
    /// loaded from this source: the lines that changed, parsed into the
    /// rules they touch; or, when the lists are not the same ones or too
    /// much changed, a whole new policy. Either gives what [`Self::load`]
    /// would: the same rules, origins, malformed lines and figures.
    pub fn reload(&self, before: &Policy) -> Result<Reload, PolicyError> {
        let read = self.read()?;
        let seed = before.rules.seed();
        let same_lists = read.len() == before.lists.len()
            && read.iter().zip(&before.lists).all(|(r, l)| r.name == l.path && r.kind == l.kind)
            && read.iter().all(|r| r.text.lines() < GONE as usize)
            && before.collisions.is_empty();
        if !same_lists {
            return Self::build(read, seed, self.strict).map(Reload::Whole);
        }
        let diffs: Vec<Option<LineDiff>> = read
            .iter()
            .zip(&before.texts)
            .map(|(r, kept)| (r.text.bytes() != kept.text.bytes()).then(|| listdiff::diff(&kept.text, &r.text)))
            .collect();
        let moved: usize = diffs.iter().flatten().map(|d| d.added.len() + d.removed.len()).sum();
        let lines: usize = read.iter().map(|r| r.text.lines()).sum();
        if moved > WHOLE_RELOAD_LINES && moved > lines / 4 {
            return Self::build(read, seed, self.strict).map(Reload::Whole);
        }
        match Self::changed_lines(&read, &diffs, before, self.strict)? {
            Some(found) => {
                let texts = read.into_iter().zip(diffs).map(|(r, d)| d.map(|d| (r.text, d))).collect();
                Ok(Reload::Lines(LineChanges { texts, ..found }))
            }
            None => Self::build(read, seed, self.strict).map(Reload::Whole),
        }
    }

    /// The rules the lines in `diffs` touch, rebuilt from what still names
    /// them and what is new (texts left out: the caller adds them). `None`
    /// when a rule's origin is in no list (never: then read whole).
    fn changed_lines(
        read: &[ReadList],
        diffs: &[Option<LineDiff>],
        before: &Policy,
        strict: bool,
    ) -> Result<Option<LineChanges>, PolicyError> {
        let seed = before.rules.seed();
        // Every key a changed line names, with the entries new lines add.
        let mut touched: HashMap<u64, Vec<(usize, Domain, Contribution)>, BuildNoHashHasher<u64>> = HashMap::default();
        let mut skipped = Vec::new();
        let mut lists = before.lists.clone();
        let mut old_errors = before.skipped.iter();
        for (i, (r, d)) in read.iter().zip(diffs).enumerate() {
            let errors: Vec<&LineError> = old_errors.by_ref().take(before.lists[i].skipped).collect();
            let Some(d) = d else {
                skipped.extend(errors.into_iter().cloned());
                continue;
            };
            let kept = &before.texts[i];
            let mut gone = Parsed::default();
            for &l in &d.removed {
                blocklist::parse_line_into(kept.text.line(l as usize), &kept.file, l as usize, r.kind, &mut gone);
            }
            let mut new = Parsed::default();
            for &l in &d.added {
                blocklist::parse_line_into(r.text.line(l as usize), &kept.file, l as usize, r.kind, &mut new);
            }
            for e in &gone.entries {
                touched.entry(e.domain.key(seed)).or_default();
            }
            lists[i].entries = lists[i].entries + new.entries.len() - gone.entries.len();
            for e in new.entries {
                let c = Contribution::of(&e);
                touched.entry(e.domain.key(seed)).or_default().push((i, e.domain, c));
            }
            // The malformed lines that stayed (renumbered), and the new ones.
            let mut list_errors: Vec<LineError> = errors
                .into_iter()
                .filter_map(|e| {
                    let to = *d.old_to_new.get(e.origin.line - 1)?;
                    (to != GONE).then(|| {
                        let mut e = e.clone();
                        e.origin.line = to as usize + 1;
                        e
                    })
                })
                .collect();
            list_errors.extend(new.errors);
            list_errors.sort_by_key(|e| e.origin.line);
            lists[i].skipped = list_errors.len();
            skipped.extend(list_errors);
        }
        if strict && !skipped.is_empty() {
            return Err(PolicyError::Malformed(skipped));
        }
        let list_of = |file: &Arc<str>| before.texts.iter().position(|k| Arc::ptr_eq(&k.file, file));
        // A name several entries make is rebuilt, too, when lines that
        // moved put its entries in another order: the first action wins.
        for (key, own) in before.rules.shared() {
            let mut order = Vec::with_capacity(own.len());
            for c in own {
                let Some(i) = list_of(&c.origin.file) else { return Ok(None) };
                let line = match &diffs[i] {
                    Some(d) => d.old_to_new.get(c.origin.line - 1).copied().unwrap_or(GONE),
                    None => c.origin.line as u32,
                };
                order.push((i, line));
            }
            if !order.is_sorted() {
                touched.entry(key).or_default();
            }
        }
        let mut updates = Vec::with_capacity(touched.len());
        let mut collisions = Vec::new();
        for (key, new) in touched {
            let mut items: Vec<(usize, Domain, Contribution)> = Vec::with_capacity(new.len() + 1);
            if let Some((domain, old)) = before.rules.contributions(key) {
                for mut c in old {
                    let Some(i) = list_of(&c.origin.file) else { return Ok(None) };
                    if let Some(d) = &diffs[i] {
                        let Some(&to) = d.old_to_new.get(c.origin.line - 1) else { return Ok(None) };
                        if to == GONE {
                            continue;
                        }
                        c.origin.line = to as usize + 1;
                    }
                    items.push((i, domain.clone(), c));
                }
            }
            items.extend(new);
            // List order: by list, then line (stable: a line's entries
            // keep theirs).
            items.sort_by_key(|(i, _, c)| (*i, c.origin.line));
            let (update, lost) = rules::rebuild(key, items.into_iter().map(|(_, d, c)| (d, c)).collect());
            updates.push(update);
            collisions.extend(lost);
        }
        // In list order, as a whole load finds them.
        collisions.sort_by_key(|c| (list_of(&c.origin.file), c.origin.line));
        let lines = read.iter().map(|r| r.text.lines()).sum();
        Ok(Some(LineChanges { updates, texts: Vec::new(), skipped, collisions, lines, lists }))
    }

    /// Reads every list: files (all must be there), then the cached copies
    /// of URL lists (one not fetched yet is left out until it is).
    fn read(&self) -> Result<Vec<ReadList>, LoadError> {
        let mut out = Vec::new();
        for (path, kind) in self
            .blocklists
            .iter()
            .map(|p| (p, ListKind::Block))
            .chain(self.allowlists.iter().map(|p| (p, ListKind::Allow)))
        {
            let bytes = blocklist::read_list(path)?;
            out.push(ReadList { name: path.display().to_string(), kind, text: ListText::new(bytes) });
        }
        for list in &self.urls {
            let bytes = match blocklist::read_list(&list.cache) {
                Ok(b) => b,
                Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            out.push(ReadList { name: list.url.clone(), kind: list.kind, text: ListText::new(bytes) });
        }
        Ok(out)
    }

    /// Parses lists read whole into a policy.
    fn build(read: Vec<ReadList>, seed: u64, strict: bool) -> Result<Policy, PolicyError> {
        let mut rules = RuleSet::new(seed);
        let mut skipped = Vec::new();
        let mut collisions = Vec::new();
        let mut lines = 0;
        let mut stats = Vec::new();
        let mut texts = Vec::new();
        for r in read {
            let file: Arc<str> = Arc::from(r.name.as_str());
            let parsed = blocklist::parse_bytes_of(r.text.bytes(), &file, r.kind);
            stats.push(ListStats {
                path: r.name,
                kind: r.kind,
                entries: parsed.entries.len(),
                skipped: parsed.errors.len(),
            });
            lines += parsed.lines;
            skipped.extend(parsed.errors);
            collisions.extend(rules.extend_owned(parsed.entries));
            texts.push(KeptText { file, text: r.text });
        }
        if strict && !skipped.is_empty() {
            return Err(PolicyError::Malformed(skipped));
        }
        Ok(Policy { rules, skipped, collisions, lines, lists: stats, texts })
    }
}

fn list_malformed(errors: &[LineError]) -> String {
    const SHOWN: usize = 20;
    let mut s = format!("{} malformed line(s), refused (--strict):", errors.len());
    for e in errors.iter().take(SHOWN) {
        s.push_str("\n  ");
        s.push_str(&e.to_string());
    }
    if errors.len() > SHOWN {
        let _ = write!(s, "\n  ... and {} more", errors.len() - SHOWN);
    }
    s
}
