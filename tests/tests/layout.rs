//! The layout rule: modules import downwards. Within each crate, no two
//! top-level modules (a folder counts as one) reach each other through
//! `crate::` paths, directly or round a longer circle; within a folder, no
//! two submodules do through `super::`. Read from the sources, so a new
//! import that closes a circle fails here, with the circle named.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Module name -> the modules it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The source without comments and string literals, which may mention
/// paths they do not import. Strings may span lines; a `'"'` character
/// literal opens none.
fn code(text: &str) -> String {
    let text = text.replace("'\"'", "' '");
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    let (mut in_str, mut line_comment, mut block_comment) = (false, false, false);
    while let Some(c) = chars.next() {
        if line_comment {
            if c == '\n' {
                line_comment = false;
                out.push(c);
            }
        } else if block_comment {
            if c == '*' && chars.peek() == Some(&'/') {
                chars.next();
                block_comment = false;
            }
        } else if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_str = false,
                _ => {}
            }
        } else if c == '/' && chars.peek() == Some(&'/') {
            line_comment = true;
        } else if c == '/' && chars.peek() == Some(&'*') {
            chars.next();
            block_comment = true;
        } else if c == '"' {
            in_str = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// The first segments of the paths that follow `prefix` (`crate::` or
/// `super::`), including each item of a `prefix{a, b::c}` group.
fn targets(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        // Not the tail of a longer name (`my_crate::`).
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest_trim = rest.trim_start();
        if let Some(group) = rest_trim.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            let mut at_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => {
                        at_start = true;
                        push_ident(&mut out, &item);
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    push_ident(&mut out, &item);
                    break;
                }
                if depth == 1 && at_start {
                    if c == ':' {
                        at_start = false;
                    } else {
                        item.push(c);
                    }
                }
            }
        } else {
            let ident: String = rest_trim.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            push_ident(&mut out, &ident);
        }
    }
    out
}

fn push_ident(out: &mut BTreeSet<String>, item: &str) {
    let ident: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    if !ident.is_empty() && ident != "self" {
        out.insert(ident);
    }
}

/// The `.rs` files below `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("read a source directory").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The top-level module a file of `src` belongs to (`None` for the crate
/// root and binaries).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy().into_owned();
    match first.as_str() {
        "lib.rs" | "main.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_owned()),
    }
}

/// A circle in `g`, if there is one.
fn circle(g: &Graph) -> Option<Vec<String>> {
    fn visit(g: &Graph, n: &str, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, m, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

/// The circles among the top-level modules of the crate in `src`, and
/// among the submodules of each of its folders.
fn circles(src: &Path) -> Vec<String> {
    let mut top = Graph::new();
    let mut folders: BTreeMap<PathBuf, Graph> = BTreeMap::new();
    for file in rust_files(src) {
        let text = code(&fs::read_to_string(&file).expect("read a source file"));
        if let Some(m) = top_module(src, &file) {
            let deps = top.entry(m.clone()).or_default();
            deps.extend(targets(&text, "crate::").into_iter().filter(|t| *t != m));
        }
        // A submodule's siblings, through `super::`.
        let dir = file.parent().expect("a parent").to_path_buf();
        let name = file.file_stem().expect("a name").to_string_lossy().into_owned();
        if dir != src && name != "mod" {
            let siblings: BTreeSet<String> = rust_files(&dir)
                .iter()
                .filter(|f| f.parent() == Some(dir.as_path()))
                .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .filter(|s| s != "mod" && *s != name)
                .collect();
            let deps = folders.entry(dir).or_default().entry(name).or_default();
            deps.extend(targets(&text, "super::").into_iter().filter(|t| siblings.contains(t)));
        }
    }
    let mut out = Vec::new();
    if let Some(c) = circle(&top) {
        out.push(format!("{}: {}", src.display(), c.join(" -> ")));
    }
    for (dir, g) in &folders {
        if let Some(c) = circle(g) {
            out.push(format!("{}: {}", dir.display(), c.join(" -> ")));
        }
    }
    out
}

#[test]
fn the_checker_finds_circles() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(circle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(circle(&g), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    let t = targets("use crate::{a::X, b, c::{d, e}};\nlet x = crate::f::g();\nmy_crate::h;", "crate::");
    assert_eq!(t, ["a", "b", "c", "f"].into_iter().map(String::from).collect());
    let text = "let u = \"https://x\"; // crate::no\nuse crate::yes;\n/* crate::no */ let q = '\"'; crate::also;";
    let t = targets(&code(text), "crate::");
    assert_eq!(t, ["also", "yes"].into_iter().map(String::from).collect());
}

#[test]
fn modules_import_downwards() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace");
    let mut all = Vec::new();
    for krate in ["maps", "filter-ebpf", "filter-user", "xtask", "tests"] {
        all.extend(circles(&root.join(krate).join("src")));
    }
    assert!(all.is_empty(), "import circles:\n{}", all.join("\n"));
}
