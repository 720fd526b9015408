//! Random lists and random edits to them, for reload tests: lines of every
//! format a list may hold (malformed ones too), drawn from a small pool of
//! names so lines repeat and names meet across lines and lists.

use std::path::Path;

use rand::{Rng, rngs::StdRng};

/// One list line; names from a pool of about `names` × 5.
pub fn random_line(rng: &mut StdRng, names: u32) -> String {
    let name = |rng: &mut StdRng| match rng.random_range(0..4) {
        0 => format!("n{}.example", rng.random_range(0..names)),
        1 => format!("s{}.n{}.example", rng.random_range(0..4), rng.random_range(0..names)),
        2 => format!("N{}.Example.", rng.random_range(0..names)),
        _ => "example".to_owned(),
    };
    match rng.random_range(0..15) {
        0 => format!("0.0.0.0 {} {}", name(rng), name(rng)),
        1 => format!("||{}^", name(rng)),
        2 => format!("||{}^$dnsrewrite=REFUSED", name(rng)),
        3 => format!("||{}^$action=drop", name(rng)),
        4 => format!("@@||{}^", name(rng)),
        5 => format!("*.{}", name(rng)),
        6 => "# comment".to_owned(),
        7 => String::new(),
        8 => format!("bad..{}", name(rng)),
        9 => format!("0.0.0.0 {} bad!name", name(rng)),
        10 => format!("{}\r", name(rng)),
        // Ignored as the start of line 1, part of the line elsewhere.
        11 => format!("\u{feff}{}", name(rng)),
        _ => name(rng),
    }
}

/// Up to `most` edits: lines inserted, removed, replaced, moved.
pub fn edit(rng: &mut StdRng, lines: &mut Vec<String>, most: usize, names: u32) {
    for _ in 0..rng.random_range(0..=most) {
        let at = rng.random_range(0..=lines.len());
        match rng.random_range(0..5) {
            0 | 1 => lines.insert(at, random_line(rng, names)),
            2 if at < lines.len() => drop(lines.remove(at)),
            3 if at < lines.len() => lines[at] = random_line(rng, names),
            4 if at < lines.len() => {
                let to = rng.random_range(0..lines.len());
                let l = lines.remove(at);
                lines.insert(to, l);
            }
            _ => {}
        }
    }
}

/// Inserts a block of `n` new lines at a random place: more than a walk in
/// step looks ahead, so the lines after it pair by content.
pub fn insert_block(rng: &mut StdRng, lines: &mut Vec<String>, n: usize, names: u32) {
    let at = rng.random_range(0..=lines.len());
    let block: Vec<String> = (0..n).map(|_| random_line(rng, names)).collect();
    lines.splice(at..at, block);
}

/// Writes `lines` to `path`, with a byte-order mark and a final newline
/// or not.
pub fn write(path: &Path, lines: &[String], bom: bool, final_newline: bool) {
    let mut text = if bom { "\u{feff}".to_owned() } else { String::new() };
    text.push_str(&lines.join("\n"));
    if final_newline && !lines.is_empty() {
        text.push('\n');
    }
    std::fs::write(path, text).expect("write a list");
}
