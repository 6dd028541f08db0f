//! Where a node of a YAML document is: line and column for a path such as
//! `clusters[0].users[1].user`.
//!
//! serde_yaml reports positions for the errors it finds itself (syntax, types, unknown fields)
//! but the checker works on deserialized values that no longer know where they came from. So
//! when, and only when, a file has something to point at, this module reads the same text a
//! second time with yaml-rust2's event parser, follows the document's mappings and sequences,
//! and records the start mark of every node whose path was asked for. Valid files never pay
//! for this pass.
//!
//! It is deliberately forgiving: a path that runs through an alias (whose target serde_yaml
//! expanded but the event stream only names) resolves to the deepest node on the way that
//! exists in the text, and if the second parser disagrees with the first the answer falls back
//! to the document's start. A position is always produced.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Token, TokenType};

/// One step of a path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    Key(&'static str),
    Index(usize),
}

/// A path from the document root, e.g. `[Key("clusters"), Index(0), Key("id")]`.
pub(crate) type YamlPath = Vec<Seg>;

/// Render a path the way people write it: `clusters[0].users[1].user`.
#[cfg(test)]
pub(crate) fn display(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Line and column (both 1-based) of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };
}

/// The owned form of a step, as met in the text (keys can be anything there).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Key(String),
    Index(usize),
}

fn owned(path: &[Seg]) -> Vec<Step> {
    path.iter()
        .map(|s| match s {
            Seg::Key(k) => Step::Key((*k).to_owned()),
            Seg::Index(i) => Step::Index(*i),
        })
        .collect()
}

enum Frame {
    Seq {
        next: usize,
        ignored: bool,
    },
    /// `recorded`: the path under which this mapping's own position was recorded, until its
    /// first key has been seen (a block mapping's start mark is its first `:`, not its first
    /// key, so the first key's position replaces it when earlier).
    Map {
        key: Option<String>,
        want_key: bool,
        ignored: bool,
        recorded: Option<Vec<Step>>,
    },
}

impl Frame {
    fn ignored(&self) -> bool {
        match self {
            Frame::Seq { ignored, .. } | Frame::Map { ignored, .. } => *ignored,
        }
    }
}

/// Find the positions of `paths` in `text`. Every path gets an answer (see the module doc).
pub(crate) fn locate(text: &str, paths: &[&[Seg]]) -> Vec<Pos> {
    // Every prefix is wanted too, for the fallback to the deepest existing ancestor.
    let mut wanted: HashMap<Vec<Step>, Option<Pos>> = HashMap::new();
    for path in paths {
        let full = owned(path);
        for n in 0..=full.len() {
            wanted.entry(full[..n].to_vec()).or_insert(None);
        }
    }
    walk(text, &mut wanted);
    paths
        .iter()
        .map(|path| {
            let full = owned(path);
            (0..=full.len()).rev().find_map(|n| wanted.get(&full[..n]).copied().flatten()).unwrap_or(Pos::START)
        })
        .collect()
}

/// The position of the first alias (`*name`) in the text, if any: where an expansion that was
/// refused for its size starts.
pub(crate) fn first_alias(text: &str) -> Option<Pos> {
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((Event::Alias(_), mark)) => return Some(Pos { line: mark.line(), column: mark.col() + 1 }),
            Ok((Event::StreamEnd, _)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// The position of the first YAML tag (`!name`, `!!binary`, `!<uri>`) on a node, if any.
/// Tags change how a value is read (or are ignored by serde_yaml, which is worse: `!!binary
/// cm9vdA==` would become the user `cm9vdA==`), so a manifest may not carry any. A text the
/// event parser cannot read has no answer here; serde_yaml then reports its own error.
pub(crate) fn first_tag(text: &str) -> Option<Pos> {
    // Every tag starts with `!`; most manifests have none, and then nothing is parsed twice.
    if !text.contains('!') {
        return None;
    }
    // The scanner's token carries the tag's own position (the parser's event points past it).
    // It stops at the first syntax error, which serde_yaml then reports.
    yaml_rust2::scanner::Scanner::new(text.chars()).find_map(|Token(mark, kind)| {
        matches!(kind, TokenType::Tag(..)).then(|| Pos { line: mark.line(), column: mark.col() + 1 })
    })
}

fn walk(text: &str, wanted: &mut HashMap<Vec<Step>, Option<Pos>>) {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(x) => x,
            Err(_) => return,
        };
        let pos = Pos { line: mark.line(), column: mark.col() + 1 };
        match event {
            Event::StreamEnd => return,
            Event::Scalar(value, ..) => {
                first_key(&mut stack, wanted, pos);
                node_start(&mut stack, wanted, pos, Some(value));
                node_end(&mut stack);
            }
            Event::Alias(_) => {
                first_key(&mut stack, wanted, pos);
                node_start(&mut stack, wanted, pos, None);
                node_end(&mut stack);
            }
            Event::SequenceStart(..) => {
                first_key(&mut stack, wanted, pos);
                let (ignored, _) = node_start(&mut stack, wanted, pos, None);
                stack.push(Frame::Seq { next: 0, ignored });
            }
            Event::MappingStart(..) => {
                first_key(&mut stack, wanted, pos);
                let (ignored, recorded) = node_start(&mut stack, wanted, pos, None);
                stack.push(Frame::Map { key: None, want_key: true, ignored, recorded });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                stack.pop();
                node_end(&mut stack);
            }
            _ => {}
        }
    }
}

/// A node begins at `pos` inside a mapping that waits for its first key: that key's position
/// is where the mapping starts, if earlier than the recorded one.
fn first_key(stack: &mut [Frame], wanted: &mut HashMap<Vec<Step>, Option<Pos>>, pos: Pos) {
    if let Some(Frame::Map { want_key: true, recorded, .. }) = stack.last_mut() {
        if let Some(path) = recorded.take() {
            if let Some(Some(p)) = wanted.get_mut(&path) {
                if (pos.line, pos.column) < (p.line, p.column) {
                    *p = pos;
                }
            }
        }
    }
}

/// A node begins at `pos`. Record it when its path is wanted. Returns whether its children
/// are to be ignored (it is itself a mapping key, or inside one), and the path it was
/// recorded under, if any.
fn node_start(
    stack: &mut [Frame],
    wanted: &mut HashMap<Vec<Step>, Option<Pos>>,
    pos: Pos,
    scalar: Option<String>,
) -> (bool, Option<Vec<Step>>) {
    match stack.last_mut() {
        Some(f) if f.ignored() => return (true, None),
        Some(Frame::Map { key, want_key: true, .. }) => {
            // A mapping key: remember it; a complex key is never on a path we ask for.
            let complex = scalar.is_none();
            *key = scalar;
            return (complex, None);
        }
        _ => {}
    }
    let path: Vec<Step> = stack
        .iter()
        .map(|f| match f {
            Frame::Seq { next, .. } => Step::Index(*next),
            Frame::Map { key, .. } => Step::Key(key.clone().unwrap_or_default()),
        })
        .collect();
    match wanted.get_mut(&path) {
        Some(slot @ None) => {
            *slot = Some(pos);
            (false, Some(path))
        }
        _ => (false, None),
    }
}

/// A node (scalar, alias, or a whole container) is finished: move its parent along.
fn node_end(stack: &mut [Frame]) {
    match stack.last_mut() {
        Some(Frame::Seq { next, .. }) => *next += 1,
        Some(Frame::Map { want_key, .. }) => *want_key = !*want_key,
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "version: 1\nclusters:\n  - id: cl-a\n    users:\n      - u1\n      - user: root\n        host: '%'\n  - {id: cl-b, users: [x]}\n";

    #[test]
    fn finds_nested_nodes() {
        let p1 = [Seg::Key("clusters"), Seg::Index(0), Seg::Key("users"), Seg::Index(1), Seg::Key("user")];
        let p2 = [Seg::Key("clusters"), Seg::Index(1), Seg::Key("users"), Seg::Index(0)];
        let p3 = [Seg::Key("version")];
        let p4 = [Seg::Key("clusters"), Seg::Index(0), Seg::Key("users"), Seg::Index(0)];
        let p5 = [Seg::Key("clusters"), Seg::Index(0)];
        let p6 = [Seg::Key("clusters"), Seg::Index(0), Seg::Key("users"), Seg::Index(1)];
        let got = locate(DOC, &[&p1, &p2, &p3, &p4, &p5, &p6, &[]]);
        assert_eq!(got[0], Pos { line: 6, column: 15 });
        assert_eq!(got[1], Pos { line: 8, column: 24 });
        assert_eq!(got[2], Pos { line: 1, column: 10 });
        assert_eq!(got[3], Pos { line: 5, column: 9 });
        // Block mappings start at their first key.
        assert_eq!(got[4], Pos { line: 3, column: 5 });
        assert_eq!(got[5], Pos { line: 6, column: 9 });
        assert_eq!(got[6], Pos { line: 1, column: 1 });
    }

    #[test]
    fn missing_paths_fall_back_to_the_deepest_ancestor() {
        let p = [Seg::Key("clusters"), Seg::Index(1), Seg::Key("zone")];
        assert_eq!(locate(DOC, &[&p])[0], Pos { line: 8, column: 5 });
        assert_eq!(locate("", &[&p])[0], Pos::START);
        assert_eq!(locate(": : [", &[&p])[0], Pos::START);
    }

    #[test]
    fn renders_paths() {
        assert_eq!(
            display(&[Seg::Key("users"), Seg::Index(2), Seg::Key("clusters"), Seg::Index(0)]),
            "users[2].clusters[0]"
        );
    }

    #[test]
    fn finds_the_first_alias() {
        assert_eq!(first_alias("a: &x [1]\nb: *x\n"), Some(Pos { line: 2, column: 4 }));
        assert_eq!(first_alias("a: 1\n"), None);
    }
}
