//! The shape of the source tree, as promised to its readers: every module says what it owns, no
//! library module reaches into the command line, and no two files import each other in a
//! circle (directly or through others). Read from `src/` as text: `use` paths and qualified
//! `crate::`/`super::` paths outside comments and unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, as (path relative to `src/`, text).
fn sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                out.insert(rel, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// The module path of a file: `store/mod.rs` → `[store]`, `store/tasks.rs` → `[store, tasks]`.
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.trim_end_matches(".rs").split('/').map(str::to_owned).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments, string literals and its unit-test module.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
    let text = text.split("#[cfg(test)]\npub(crate) mod tests").next().unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut kept = String::new();
        for c in line.chars() {
            if !in_str && c == '/' && prev == '/' {
                kept.pop();
                break;
            }
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                kept.push(c);
            }
            prev = c;
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// The `crate::`/`super::` paths a file names, resolved to module paths (groups expanded).
fn paths_named(rel: &str, code: &str) -> Vec<Vec<String>> {
    let me = module_of(rel);
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let starts = (rest.starts_with("crate::") || rest.starts_with("super::"))
            && (i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':'));
        if !starts {
            i += 1;
            continue;
        }
        // Read the path, with one level of `{…}` group.
        let mut j = i;
        let mut text = String::new();
        let mut depth = 0;
        while j < bytes.len() {
            let c = bytes[j];
            if c == '{' {
                depth += 1;
            } else if c == '}' {
                if depth == 0 {
                    break;
                }
                depth -= 1;
                if depth == 0 {
                    text.push(c);
                    j += 1;
                    break;
                }
            } else if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') {
                break;
            }
            text.push(c);
            j += 1;
        }
        i = j.max(i + 1);
        let (head, group) = match text.split_once("::{") {
            Some((h, g)) => (h.to_owned(), Some(g.trim_end_matches('}').to_owned())),
            None => (text.trim_end_matches("::").to_owned(), None),
        };
        let mut segs: Vec<String> = head.split("::").map(str::to_owned).collect();
        let mut base = if segs[0] == "crate" { Vec::new() } else { me.clone() };
        if segs[0] == "crate" {
            segs.remove(0);
        } else {
            // `super` in `a/b.rs` is `a`; in `a/b/mod.rs` (module `a::b`) it is `a` too.
            while segs.first().is_some_and(|s| s == "super") {
                segs.remove(0);
                base.pop();
            }
        }
        let mut prefix = base;
        prefix.extend(segs);
        match group {
            None => out.push(prefix),
            Some(g) => {
                for item in g.split(',') {
                    let item = item.split(" as ").next().unwrap_or_default().trim();
                    let item = item.split("::{").next().unwrap_or_default();
                    if item.is_empty() {
                        continue;
                    }
                    let mut p = prefix.clone();
                    p.extend(item.split("::").filter(|s| *s != "self").map(str::to_owned));
                    out.push(p);
                }
            }
        }
    }
    out
}

/// File → the other files it imports (the file of the longest module prefix of each path).
fn import_graph(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let by_module: BTreeMap<Vec<String>, String> =
        files.keys().filter(|r| *r != "main.rs").map(|r| (module_of(r), r.clone())).collect();
    let mut graph = BTreeMap::new();
    for (rel, text) in files.iter().filter(|(r, _)| *r != "main.rs") {
        let mut to = BTreeSet::new();
        for path in paths_named(rel, &code(text)) {
            let target = (0..=path.len()).rev().find_map(|n| by_module.get(&path[..n]));
            if let Some(t) = target.filter(|t| *t != rel) {
                to.insert(t.clone());
            }
        }
        graph.insert(rel.clone(), to);
    }
    graph
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on: BTreeSet<&'g str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(t: &mut T<'g>, v: &'g str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        for w in t.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_two_files_import_each_other_in_a_circle() {
    let graph = import_graph(&sources());
    assert!(graph["runner/submit.rs"].contains("store/mod.rs"), "the reader sees imports: {graph:#?}");
    let found = cycles(&graph);
    assert!(found.is_empty(), "files that import each other in a circle: {found:?}");
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let files: BTreeMap<String, String> = [
        ("a.rs", "use crate::b::X;"),
        ("b.rs", "use crate::{c::Y, d};"),
        ("c.rs", "fn f() { crate::a::g(); } // crate::d::h"),
        ("d.rs", "use super::x;"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    let graph = import_graph(&files);
    assert_eq!(cycles(&graph), vec![vec!["a.rs".to_owned(), "b.rs".to_owned(), "c.rs".to_owned()]]);
}

#[test]
fn no_library_module_imports_the_command_line() {
    for (rel, text) in sources() {
        if rel.starts_with("cli/") || rel == "main.rs" {
            continue;
        }
        let code = code(&text);
        assert!(!code.contains("crate::cli"), "{rel} imports crate::cli");
    }
}

#[test]
fn every_module_says_what_it_owns() {
    for (rel, text) in sources() {
        assert!(text.trim_start().starts_with("//!"), "src/{rel} opens without a //! paragraph");
    }
}
