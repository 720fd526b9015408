//! Which lines of a list changed between two copies of it: what lets a
//! reload of a big list read only the lines that changed.
//!
//! Lines are matched by content, not by position: the k-th copy of a line
//! in the old text pairs with the k-th copy in the new one, wherever it
//! moved. Every old line either has a number in the new text or is gone;
//! every new line either came from an old one or is new. Hashes only find
//! candidates; a pair is made only when the bytes are equal, so a hash
//! collision can cost a line being re-read, never a wrong match.

use std::{collections::HashMap, hash::BuildHasher, sync::OnceLock};

use nohash_hasher::BuildNoHashHasher;

/// A line number that no line has: "gone" in [`LineDiff::old_to_new`].
pub const GONE: u32 = u32::MAX;

/// One hasher for every text of this process, so two texts' line hashes
/// compare; keyed at random so nobody can aim at its collisions.
fn hasher() -> &'static foldhash::fast::FixedState {
    static STATE: OnceLock<foldhash::fast::FixedState> = OnceLock::new();
    STATE.get_or_init(|| foldhash::fast::FixedState::with_seed(rand::random()))
}

/// A list's bytes and where its lines are, cut as the list parser cuts
/// them: no lines in an empty file; otherwise one final newline ends the
/// last line and every other newline starts one.
#[derive(Clone)]
pub struct ListText {
    bytes: Vec<u8>,
    /// Where each line starts, and one more entry one past the last
    /// line's end (as if it had a newline).
    starts: Vec<usize>,
    /// Each line's hash under [`hasher`].
    hashes: Vec<u64>,
}

impl ListText {
    /// Indexes `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        let mut starts = Vec::new();
        if !bytes.is_empty() {
            let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            starts.reserve(body.len() / 24 + 2);
            starts.push(0);
            starts.extend(memchr::memchr_iter(b'\n', body).map(|at| at + 1));
            starts.push(body.len() + 1);
        }
        let state = hasher();
        let hashes = starts.windows(2).map(|w| state.hash_one(&bytes[w[0]..w[1] - 1])).collect();
        Self { bytes, starts, hashes }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// How many lines the parser reads in it.
    pub fn lines(&self) -> usize {
        self.hashes.len()
    }

    /// Line `i` (from 0), without its newline.
    pub fn line(&self, i: usize) -> &[u8] {
        &self.bytes[self.starts[i]..self.starts[i + 1] - 1]
    }
}

impl std::fmt::Debug for ListText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ListText({} bytes, {} lines)", self.bytes.len(), self.lines())
    }
}

/// How the lines of an old text map to a new one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LineDiff {
    /// For each old line, the number of the same line in the new text
    /// (both from 0), or [`GONE`].
    pub old_to_new: Vec<u32>,
    /// New lines that came from no old line, in order.
    pub added: Vec<u32>,
    /// Old lines that went to no new line, in order.
    pub removed: Vec<u32>,
}

impl LineDiff {
    /// Whether some line that stayed has another number now.
    pub fn shifted(&self) -> bool {
        self.old_to_new.iter().enumerate().any(|(i, &j)| j != GONE && j as usize != i)
    }
}

/// How far ahead [`diff`] looks for a line that went out of step.
const LOOKAHEAD: usize = 256;

/// Lines comparisons the walk in step may spend per line before it gives
/// up on texts that are not mostly in step (a list rewritten or sorted
/// anew) and leaves the rest to the hash table.
const STEP_BUDGET: usize = 32;

/// The byte-order mark the parser ignores at the start of line 1 (only
/// there).
const BOM: &[u8] = "\u{feff}".as_bytes();

/// Pairs the lines of `old` and `new` (see the module's text). First a walk
/// down both texts in step: equal lines pair; where they differ, the
/// nearer of "this old line comes a little later" and "this new line
/// came a little later" (within [`LOOKAHEAD`] lines) brings them back in
/// step, and lines that match neither way are left for later. Edits to a
/// list are mostly a few lines here and there, so that walk pairs nearly
/// everything reading both texts once. Then the lines left over are
/// paired by content through a hash table, however far they moved.
///
/// A line that starts with a byte-order mark reads differently as line 1
/// (the mark is ignored there) than elsewhere: it pairs only with a line
/// in the same situation.
pub fn diff(old: &ListText, new: &ListText) -> LineDiff {
    let equal = |i: usize, j: usize| {
        old.hashes[i] == new.hashes[j]
            && old.line(i) == new.line(j)
            && ((i == 0) == (j == 0) || !old.line(i).starts_with(BOM))
    };
    let mut old_to_new = vec![GONE; old.lines()];
    let mut paired_new = vec![false; new.lines()];
    let (mut i, mut j) = (0, 0);
    let (mut left_old, mut left_new) = (Vec::new(), Vec::new());
    let mut budget = STEP_BUDGET * (old.lines() + new.lines());
    while i < old.lines() && j < new.lines() {
        if equal(i, j) {
            old_to_new[i] = j as u32;
            paired_new[j] = true;
            i += 1;
            j += 1;
            continue;
        }
        let Some(left) = budget.checked_sub(2 * LOOKAHEAD) else { break };
        budget = left;
        let later_in_new = (1..LOOKAHEAD).take_while(|a| j + a < new.lines()).find(|a| equal(i, j + a));
        let later_in_old = (1..LOOKAHEAD).take_while(|b| i + b < old.lines()).find(|b| equal(i + b, j));
        match (later_in_new, later_in_old) {
            (Some(a), b) if b.is_none_or(|b| a <= b) => {
                left_new.extend(j as u32..(j + a) as u32);
                j += a;
            }
            (_, Some(b)) => {
                left_old.extend(i as u32..(i + b) as u32);
                i += b;
            }
            _ => {
                left_old.push(i as u32);
                left_new.push(j as u32);
                i += 1;
                j += 1;
            }
        }
    }
    left_old.extend(i as u32..old.lines() as u32);
    left_new.extend(j as u32..new.lines() as u32);
    // The lines left: for each distinct old line, its first unpaired copy;
    // `next` chains the later copies in order.
    let mut next: HashMap<u32, u32, BuildNoHashHasher<u32>> = HashMap::default();
    let mut heads: HashMap<u64, u32, BuildNoHashHasher<u64>> =
        HashMap::with_capacity_and_hasher(left_old.len(), BuildNoHashHasher::default());
    for &i in left_old.iter().rev() {
        if let Some(later) = heads.insert(old.hashes[i as usize], i) {
            next.insert(i, later);
        }
    }
    for &j in &left_new {
        if let Some(head) = heads.get_mut(&new.hashes[j as usize])
            && *head != GONE
            && equal(*head as usize, j as usize)
        {
            old_to_new[*head as usize] = j;
            paired_new[j as usize] = true;
            *head = next.get(head).copied().unwrap_or(GONE);
        }
    }
    let added = left_new.into_iter().filter(|j| !paired_new[*j as usize]).collect();
    let removed = left_old.into_iter().filter(|i| old_to_new[*i as usize] == GONE).collect();
    LineDiff { old_to_new, added, removed }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> ListText {
        ListText::new(s.as_bytes().to_vec())
    }

    #[test]
    fn lines_are_cut_as_the_parser_cuts_them() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("\n", &[""]),
            ("a", &["a"]),
            ("a\n", &["a"]),
            ("a\n\n", &["a", ""]),
            ("a\r\nb", &["a\r", "b"]),
            ("\n\nx\n", &["", "", "x"]),
        ];
        for (s, want) in cases {
            let t = text(s);
            let got: Vec<&[u8]> = (0..t.lines()).map(|i| t.line(i)).collect();
            let want: Vec<&[u8]> = want.iter().map(|w| w.as_bytes()).collect();
            assert_eq!(got, want, "{s:?}");
        }
    }

    /// Checks the diff's promises against the texts themselves: pairs have
    /// equal bytes and are one to one, and `added`/`removed` are exactly
    /// the unpaired lines.
    fn check(old: &str, new: &str) -> LineDiff {
        let (a, b) = (text(old), text(new));
        let d = diff(&a, &b);
        assert_eq!(d.old_to_new.len(), a.lines());
        let mut paired = vec![false; b.lines()];
        for (i, &j) in d.old_to_new.iter().enumerate() {
            if j != GONE {
                assert_eq!(a.line(i), b.line(j as usize));
                assert!(!paired[j as usize], "new line {j} paired twice");
                paired[j as usize] = true;
            }
        }
        let added: Vec<u32> = (0..b.lines() as u32).filter(|j| !paired[*j as usize]).collect();
        assert_eq!(d.added, added);
        let removed: Vec<u32> = (0..a.lines() as u32).filter(|i| d.old_to_new[*i as usize] == GONE).collect();
        assert_eq!(d.removed, removed);
        d
    }

    #[test]
    fn pairs_kept_lines_and_names_the_rest() {
        let d = check("a\nb\nc\nd\n", "a\nc\nx\nd\ne\n");
        assert_eq!(d.old_to_new, [0, GONE, 1, 3]);
        assert_eq!(d.added, [2, 4]);
        assert_eq!(d.removed, [1]);
        assert!(d.shifted());
        // Replacing in place shifts nothing.
        let d = check("a\nb\nc\n", "a\nB\nc\n");
        assert_eq!((d.added.as_slice(), d.removed.as_slice()), (&[1][..], &[1][..]));
        assert!(!d.shifted());
        // Moves are kept lines with new numbers.
        let d = check("a\nb\nc\n", "c\na\nb\n");
        assert_eq!(d.old_to_new, [1, 2, 0]);
        assert!(d.added.is_empty() && d.removed.is_empty());
    }

    #[test]
    fn a_line_with_a_byte_order_mark_pairs_only_in_the_same_place() {
        // As line 1 the mark is ignored; elsewhere it is part of the line.
        let d = check("\u{feff}0.0.0.0 a.example\n", "# header\n\u{feff}0.0.0.0 a.example\n");
        assert_eq!((d.removed.as_slice(), d.added.as_slice()), (&[0][..], &[0, 1][..]));
        let d = check("x.example\n\u{feff}# title\n", "\u{feff}# title\n");
        assert_eq!((d.removed.as_slice(), d.added.as_slice()), (&[0, 1][..], &[0][..]));
        let d = check("\u{feff}a\nb\n", "\u{feff}a\nc\nb\n");
        assert_eq!(d.old_to_new, [0, 2]);
        let d = check("a\n\u{feff}b\n", "c\na\n\u{feff}b\n");
        assert_eq!(d.old_to_new, [1, 2]);
    }

    #[test]
    fn copies_of_a_line_pair_in_order() {
        let d = check("x\na\nx\nb\nx\n", "x\nx\nb\n");
        assert_eq!(d.old_to_new, [0, GONE, 1, 2, GONE]);
        let d = check("", "a\na\n");
        assert_eq!(d.added, [0, 1]);
        let d = check("a\n\n\n", "");
        assert_eq!(d.removed, [0, 1, 2]);
        check("\n", "\n\n");
    }

    #[test]
    fn random_edits_keep_the_promises() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..300 {
            let old: Vec<String> =
                (0..rng.random_range(0..40)).map(|_| format!("l{}", rng.random_range(0..12))).collect();
            let mut new = old.clone();
            for _ in 0..rng.random_range(0..8) {
                let at = rng.random_range(0..=new.len());
                match rng.random_range(0..3) {
                    0 => new.insert(at, format!("l{}", rng.random_range(0..20))),
                    1 if at < new.len() => drop(new.remove(at)),
                    _ if at < new.len() => {
                        let to = rng.random_range(0..new.len());
                        new.swap(at, to);
                    }
                    _ => {}
                }
            }
            let join = |v: &[String]| v.iter().flat_map(|l| [l.as_str(), "\n"]).collect::<String>();
            check(&join(&old), &join(&new));
        }
    }
}
