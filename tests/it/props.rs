//! Property tests of everything that parses input from outside the process: manifests, API
//! answers, the signer's encoding, the simulator's requests and world files. Each property has
//! an explicit, small number of cases so the whole module runs in seconds; a failing case is
//! saved under `tests/regressions/` and replayed first on the next run. Inputs that once broke
//! something are kept as named tests at the end of each section.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use serde_json::{json, Value};

use qc_offboard::manifest::{self, ManifestErrors, Zone};
use qc_offboard::qingcloud::client::{classify_body, ApiError};
use qc_offboard::qingcloud::signer::{self, Method, SignatureMethod};
use qc_offboard::qingcloud::types::{DescribeJobsResponse, RunClusterCustomServiceResponse};
use qc_offboard::sim::{self, Limits, World};

use crate::helpers::{start_sim, world, Api};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel("regressions"))),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// YAML-ish documents: a tree of mappings, sequences, scalars, anchors and aliases, rendered in
// block or flow style with plain, single- or double-quoted scalars. Plain scalars are written
// as they are, so some documents are not YAML at all; that is part of the point.

#[derive(Debug, Clone)]
enum Scalar {
    Plain(String),
    Single(String),
    Double(String),
}

#[derive(Debug, Clone)]
enum Node {
    Scalar(Scalar),
    Seq { items: Vec<Node>, flow: bool },
    Map { entries: Vec<(Scalar, Node)>, flow: bool },
    Anchored(&'static str, Box<Node>),
    Alias(&'static str),
}

/// Text a scalar is made of: values that mean something to the schemas, hostile characters,
/// and arbitrary text.
fn scalar_text(meaningful: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(meaningful).prop_map(str::to_owned),
        2 => prop::sample::select(&[
            "", "~", "null", "true", "1", "007", "1e3", "-1", "0.5", "1e30", ".inf", ".nan", "18446744073709551616",
            "2026-12-01", "2026-11-28T12:00:00Z", "%", "'", "\"", "`", "a b", "a\tb", "a\u{0}b", "a\u{7}b",
            "\u{feff}x", "用户", "é", "\u{202e}evil", "- x", "? x", ": x", "[x", "{x", "x #c", "|", ">", "&a", "*a",
            "!!str", "!x y", "---", "...", "\\", "\r\n",
        ][..])
        .prop_map(str::to_owned),
        2 => "[a-z0-9_%.:-]{0,12}",
        1 => any::<String>().prop_map(|s| s.chars().take(40).collect()),
    ]
}

fn scalar(meaningful: &'static [&'static str]) -> impl Strategy<Value = Scalar> {
    (scalar_text(meaningful), 0..3u8).prop_map(|(s, style)| match style {
        0 => Scalar::Plain(s),
        1 => Scalar::Single(s),
        _ => Scalar::Double(s),
    })
}

fn node(keys: &'static [&'static str], values: &'static [&'static str]) -> impl Strategy<Value = Node> {
    let anchor = prop::sample::select(&["a", "b", "c"][..]);
    let leaf = prop_oneof![
        8 => scalar(values).prop_map(Node::Scalar),
        1 => anchor.prop_map(Node::Alias),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        let key = prop_oneof![
            6 => prop::sample::select(keys).prop_map(|k| Scalar::Plain(k.to_owned())),
            1 => scalar(values),
        ];
        prop_oneof![
            3 => (prop::collection::vec((key, inner.clone()), 0..6), any::<bool>())
                .prop_map(|(entries, flow)| Node::Map { entries, flow }),
            2 => (prop::collection::vec(inner.clone(), 0..6), any::<bool>())
                .prop_map(|(items, flow)| Node::Seq { items, flow }),
            1 => (prop::sample::select(&["a", "b", "c"][..]), inner).prop_map(|(a, n)| Node::Anchored(a, Box::new(n))),
        ]
    })
}

fn render_scalar(s: &Scalar) -> String {
    match s {
        Scalar::Plain(s) => s.clone(),
        Scalar::Single(s) => format!("'{}'", s.replace('\'', "''")),
        Scalar::Double(s) => {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
    }
}

fn is_block(n: &Node) -> bool {
    match n {
        Node::Seq { items, flow } => !flow && !items.is_empty(),
        Node::Map { entries, flow } => !flow && !entries.is_empty(),
        Node::Anchored(_, n) => is_block(n),
        _ => false,
    }
}

fn render_flow(n: &Node) -> String {
    match n {
        Node::Scalar(s) => render_scalar(s),
        Node::Alias(a) => format!("*{a}"),
        Node::Anchored(a, n) => format!("&{a} {}", render_flow(n)),
        Node::Seq { items, .. } => format!("[{}]", items.iter().map(render_flow).collect::<Vec<_>>().join(", ")),
        Node::Map { entries, .. } => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{}: {}", render_scalar(k), render_flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Render `n` as the value of a block entry whose line is already started (after `key:` or
/// `-`): inline when it is not a block container, else on the following lines at `indent`.
fn render_value(n: &Node, indent: usize, out: &mut String) {
    match n {
        Node::Anchored(a, inner) if is_block(inner) => {
            out.push_str(&format!(" &{a}\n"));
            render_block(inner, indent, out);
        }
        n if is_block(n) => {
            out.push('\n');
            render_block(n, indent, out);
        }
        n => {
            out.push(' ');
            out.push_str(&render_flow(n));
            out.push('\n');
        }
    }
}

fn render_block(n: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match n {
        Node::Map { entries, flow: false } if !entries.is_empty() => {
            for (k, v) in entries {
                out.push_str(&format!("{pad}{}:", render_scalar(k)));
                render_value(v, indent + 2, out);
            }
        }
        Node::Seq { items, flow: false } if !items.is_empty() => {
            for v in items {
                out.push_str(&format!("{pad}-"));
                render_value(v, indent + 2, out);
            }
        }
        n => {
            out.push_str(&pad);
            out.push_str(&render_flow(n));
            out.push('\n');
        }
    }
}

fn render(n: &Node) -> String {
    let mut out = String::new();
    render_block(n, 0, &mut out);
    out
}

/// A document that is usually a mapping of the schema's top-level keys.
fn document(keys: &'static [&'static str], values: &'static [&'static str]) -> impl Strategy<Value = String> {
    let top = prop::collection::vec((prop::sample::select(keys), node(keys, values)), 0..6).prop_map(|entries| {
        let entries = entries.into_iter().map(|(k, v)| (Scalar::Plain(k.to_owned()), v)).collect();
        Node::Map { entries, flow: false }
    });
    prop_oneof![4 => top.prop_map(|n| render(&n)), 1 => node(keys, values).prop_map(|n| render(&n))]
}

// Documents shaped like a schema: the right keys in the right places, hostile scalars at the
// leaves, and now and then a subtree replaced by anything, an alias, or an anchor, so that the
// checker and the locator (not only the YAML parser) see them.

type NodeStrategy = BoxedStrategy<Node>;

/// `s`, or once in a while something else in its place.
fn perturbed(s: NodeStrategy, keys: &'static [&'static str], values: &'static [&'static str]) -> NodeStrategy {
    let anchor = prop::sample::select(&["a", "b", "c"][..]);
    prop_oneof![
        16 => s.clone(),
        1 => node(keys, values),
        1 => anchor.clone().prop_map(Node::Alias),
        2 => (anchor, s).prop_map(|(a, n)| Node::Anchored(a, Box::new(n))),
    ]
    .boxed()
}

/// A mapping with these fields, each present with its probability.
fn mapping(fields: Vec<(&'static str, f64, NodeStrategy)>) -> NodeStrategy {
    let entries: Vec<BoxedStrategy<Option<(Scalar, Node)>>> = fields
        .into_iter()
        .map(|(key, p, value)| {
            prop::option::weighted(p, value.prop_map(move |v| (Scalar::Plain(key.to_owned()), v))).boxed()
        })
        .collect();
    (entries, any::<bool>())
        .prop_map(|(entries, flow)| Node::Map { entries: entries.into_iter().flatten().collect(), flow })
        .boxed()
}

fn sequence(item: NodeStrategy, max: usize) -> NodeStrategy {
    (prop::collection::vec(item, 0..max), any::<bool>()).prop_map(|(items, flow)| Node::Seq { items, flow }).boxed()
}

fn manifest_tree() -> NodeStrategy {
    let (k, v) = (MANIFEST_KEYS, MANIFEST_VALUES);
    let leaf = || perturbed(scalar(v).prop_map(Node::Scalar).boxed(), k, v);
    let account = mapping(vec![
        ("user", 0.9, leaf()),
        ("host", 0.5, leaf()),
        ("not_before", 0.3, leaf()),
        ("due_by", 0.2, leaf()),
    ]);
    let cluster = mapping(vec![
        ("id", 0.9, leaf()),
        ("zone", 0.5, leaf()),
        ("users", 0.9, perturbed(sequence(prop_oneof![leaf(), perturbed(account.clone(), k, v)].boxed(), 4), k, v)),
    ]);
    let cluster_ref = mapping(vec![("id", 0.9, leaf()), ("zone", 0.5, leaf())]);
    let user = mapping(vec![
        ("user", 0.9, leaf()),
        ("host", 0.5, leaf()),
        ("not_before", 0.3, leaf()),
        ("due_by", 0.2, leaf()),
        ("clusters", 0.9, perturbed(sequence(prop_oneof![leaf(), perturbed(cluster_ref, k, v)].boxed(), 4), k, v)),
    ]);
    let defaults = mapping(vec![("zone", 0.7, leaf()), ("host", 0.5, leaf())]);
    mapping(vec![
        ("version", 0.9, leaf()),
        ("ticket", 0.2, leaf()),
        ("requested_by", 0.2, leaf()),
        ("reason", 0.2, leaf()),
        ("due_by", 0.3, leaf()),
        ("defaults", 0.5, perturbed(defaults, k, v)),
        ("clusters", 0.7, perturbed(sequence(perturbed(cluster, k, v), 4), k, v)),
        ("users", 0.5, perturbed(sequence(perturbed(user, k, v), 4), k, v)),
    ])
}

// ---------------------------------------------------------------------------------------------
// Manifests: anything either validates or is refused with errors that point into the file.

const MANIFEST_KEYS: &[&str] = &[
    "version",
    "ticket",
    "requested_by",
    "reason",
    "due_by",
    "defaults",
    "zone",
    "host",
    "clusters",
    "id",
    "users",
    "user",
    "not_before",
];

const MANIFEST_VALUES: &[&str] = &[
    "1",
    "cl-abc123",
    "cl-x",
    "CL-A",
    "sh1a",
    "pek3",
    "bob",
    "u1",
    "root",
    "ROOT",
    "qc_admin",
    "%",
    "10.0.0.%",
    "10.0.0.0/8",
    "::1",
    "db.example.com",
    "192.168.1.%;10.0.0.5",
    "2026-12-01",
    "2026-11-28T12:00:00Z",
    "HR-4711",
];

/// Write `bytes` to a fresh file and load it; check the outcome's shape.
fn check_manifest(bytes: &[u8], default_zone: Option<&Zone>) -> Result<(), TestCaseError> {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().expect("temporary file");
    file.write_all(bytes).expect("write the manifest");
    let path = file.path().to_owned();
    let lines = bytes.split(|&b| b == b'\n').count();
    match manifest::load_set(std::slice::from_ref(&path), default_zone) {
        Ok(set) => {
            prop_assert_eq!(set.files.len(), 1);
            prop_assert!(!set.tasks.is_empty(), "a valid manifest lists at least one account");
            prop_assert!(set.tasks.len() <= set.files[0].tasks.len());
        }
        Err(ManifestErrors(errors)) => {
            prop_assert!(!errors.is_empty());
            for e in &errors {
                prop_assert_eq!(&e.file, &path);
                prop_assert!(e.line >= 1 && e.column >= 1, "{}:{}: {}", e.line, e.column, e.reason);
                prop_assert!(e.line <= lines + 1, "line {} of {} lines: {}", e.line, lines, e.reason);
                prop_assert!(!e.reason.is_empty());
                let prefix = format!("{}:{}:{}: ", path.display(), e.line, e.column);
                prop_assert!(e.to_string().starts_with(&prefix));
            }
        }
    }
    Ok(())
}

fn zone(z: &str) -> Zone {
    Zone::parse(z).expect("valid zone")
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn manifest_arbitrary_bytes_are_loaded_or_refused_with_positions(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..1024),
            any::<String>().prop_map(String::into_bytes),
        ],
        fallback in any::<bool>(),
    ) {
        let z = zone("sh1a");
        check_manifest(&bytes, fallback.then_some(&z))?;
    }

    #[test]
    fn manifest_yaml_documents_are_loaded_or_refused_with_positions(
        text in document(MANIFEST_KEYS, MANIFEST_VALUES),
        version in any::<bool>(),
        fallback in any::<bool>(),
    ) {
        let text = if version { format!("version: 1\n{text}") } else { text };
        let z = zone("pek3");
        check_manifest(text.as_bytes(), fallback.then_some(&z))?;
    }

    #[test]
    fn manifest_shaped_documents_are_loaded_or_refused_with_positions(
        tree in manifest_tree(),
        fallback in any::<bool>(),
    ) {
        let z = zone("pek3");
        check_manifest(render(&tree).as_bytes(), fallback.then_some(&z))?;
    }
}

// A manifest made only of valid parts validates, and yields exactly the tasks it lists, merged.

const CLUSTERS: &[&str] = &["cl-a1", "cl-b2", "cl-ouhutv70", "cl-0", "cl-zz9"];
const ZONES: &[&str] = &["sh1a", "pek3", "gd2", "ap-2a"];
const USERS: &[&str] =
    &["u1", "bob", "app_ro", "bö", "007", "x.y", "a-b", "ROOT_x", "用户", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"];
const HOSTS: &[&str] = &[
    "%",
    "10.0.0.%",
    "192.168.1.5",
    "db.example.com",
    "10.0.0.0/8",
    "::1",
    "fe80::%",
    "192.168.1.%;10.0.0.5",
    "10.0.0.0/255.0.0.0",
];

fn zone_of(cluster: usize) -> usize {
    cluster % ZONES.len()
}

/// (cluster, zone, user, host, not_before) of a task, as text.
type TaskRow = (String, String, String, String, Option<NaiveDate>);

#[derive(Debug, Clone)]
struct GenAccount {
    user: usize,
    host: Option<usize>,
    not_before: Option<NaiveDate>,
}

#[derive(Debug, Clone)]
struct GenCluster {
    cluster: usize,
    own_zone: bool,
    accounts: Vec<GenAccount>,
}

#[derive(Debug, Clone)]
struct GenUser {
    user: usize,
    host: Option<usize>,
    not_before: Option<NaiveDate>,
    /// (cluster, give its zone)
    clusters: Vec<(usize, bool)>,
}

#[derive(Debug, Clone)]
struct GenManifest {
    default_zone: Option<usize>,
    default_host: Option<usize>,
    clusters: Vec<GenCluster>,
    users: Vec<GenUser>,
    /// Write the users form to a second file.
    split: bool,
}

fn date() -> impl Strategy<Value = NaiveDate> {
    (0i64..60).prop_map(|d| NaiveDate::from_ymd_opt(2026, 12, 1).expect("date") + chrono::Days::new(d as u64))
}

fn gen_manifest() -> impl Strategy<Value = GenManifest> {
    let host = prop::option::of(0..HOSTS.len());
    let account = (0..USERS.len(), host.clone(), prop::option::of(date()))
        .prop_map(|(user, host, not_before)| GenAccount { user, host, not_before });
    let cluster = (0..CLUSTERS.len(), any::<bool>(), prop::collection::vec(account, 1..4))
        .prop_map(|(cluster, own_zone, accounts)| GenCluster { cluster, own_zone, accounts });
    let user = (
        0..USERS.len(),
        host.clone(),
        prop::option::of(date()),
        prop::collection::vec((0..CLUSTERS.len(), any::<bool>()), 1..4),
    )
        .prop_map(|(user, host, not_before, clusters)| GenUser { user, host, not_before, clusters });
    (
        prop::option::of(0..ZONES.len()),
        host,
        prop::collection::vec(cluster, 0..4),
        prop::collection::vec(user, 0..4),
        any::<bool>(),
    )
        .prop_filter("lists something", |(_, _, c, u, _)| !c.is_empty() || !u.is_empty())
        .prop_map(|(default_zone, default_host, clusters, users, split)| GenManifest {
            default_zone,
            default_host,
            clusters,
            users,
            split,
        })
}

impl GenManifest {
    /// Whether a cluster entry must name its zone (it cannot come from `defaults`).
    fn needs_zone(&self, cluster: usize, own: bool) -> bool {
        own || self.default_zone != Some(zone_of(cluster))
    }

    fn header(&self) -> serde_json::Map<String, Value> {
        let mut doc = serde_json::Map::new();
        doc.insert("version".into(), json!(1));
        let mut defaults = serde_json::Map::new();
        if let Some(z) = self.default_zone {
            defaults.insert("zone".into(), json!(ZONES[z]));
        }
        if let Some(h) = self.default_host {
            defaults.insert("host".into(), json!(HOSTS[h]));
        }
        if !defaults.is_empty() {
            doc.insert("defaults".into(), Value::Object(defaults));
        }
        doc
    }

    fn clusters_json(&self) -> Value {
        let list = self.clusters.iter().map(|c| {
            let users: Vec<Value> = c
                .accounts
                .iter()
                .map(|a| match (a.host, a.not_before) {
                    (None, None) => json!(USERS[a.user]),
                    (h, nb) => {
                        let mut m = serde_json::Map::new();
                        m.insert("user".into(), json!(USERS[a.user]));
                        if let Some(h) = h {
                            m.insert("host".into(), json!(HOSTS[h]));
                        }
                        if let Some(nb) = nb {
                            m.insert("not_before".into(), json!(nb.to_string()));
                        }
                        Value::Object(m)
                    }
                })
                .collect();
            let mut m = serde_json::Map::new();
            m.insert("id".into(), json!(CLUSTERS[c.cluster]));
            if self.needs_zone(c.cluster, c.own_zone) {
                m.insert("zone".into(), json!(ZONES[zone_of(c.cluster)]));
            }
            m.insert("users".into(), Value::Array(users));
            Value::Object(m)
        });
        Value::Array(list.collect())
    }

    fn users_json(&self) -> Value {
        let list = self.users.iter().map(|u| {
            let mut m = serde_json::Map::new();
            m.insert("user".into(), json!(USERS[u.user]));
            if let Some(h) = u.host {
                m.insert("host".into(), json!(HOSTS[h]));
            }
            if let Some(nb) = u.not_before {
                m.insert("not_before".into(), json!(nb.to_string()));
            }
            let refs: Vec<Value> = u
                .clusters
                .iter()
                .map(|&(c, own)| {
                    if self.needs_zone(c, own) {
                        json!({"id": CLUSTERS[c], "zone": ZONES[zone_of(c)]})
                    } else {
                        json!(CLUSTERS[c])
                    }
                })
                .collect();
            m.insert("clusters".into(), Value::Array(refs));
            Value::Object(m)
        });
        Value::Array(list.collect())
    }

    /// The manifest files' texts.
    fn files(&self) -> Vec<String> {
        let yaml = |v: Value| serde_yaml::to_string(&v).expect("JSON values serialize as YAML");
        let mut first = self.header();
        let mut second = self.header();
        if !self.clusters.is_empty() {
            first.insert("clusters".into(), self.clusters_json());
        }
        if !self.users.is_empty() {
            let target = if self.split && !self.clusters.is_empty() { &mut second } else { &mut first };
            target.insert("users".into(), self.users_json());
        }
        let mut out = vec![yaml(Value::Object(first))];
        if second.contains_key("users") {
            out.push(yaml(Value::Object(second)));
        }
        out
    }

    /// (cluster, zone, user, host, not_before) in the order first listed, merged, and how many
    /// entries were merged into an earlier one.
    fn expected(&self) -> (Vec<TaskRow>, usize) {
        let host = |own: Option<usize>| own.or(self.default_host).map_or("%".to_owned(), |h| HOSTS[h].to_owned());
        let mut listed = Vec::new();
        for c in &self.clusters {
            for a in &c.accounts {
                listed.push((c.cluster, a.user, host(a.host), a.not_before));
            }
        }
        for u in &self.users {
            for &(c, _) in &u.clusters {
                listed.push((c, u.user, host(u.host), u.not_before));
            }
        }
        let mut out: Vec<TaskRow> = Vec::new();
        let mut index: HashMap<(usize, usize, String), usize> = HashMap::new();
        let mut merged = 0;
        for (c, u, h, nb) in listed {
            match index.get(&(c, u, h.clone())) {
                Some(&i) => {
                    merged += 1;
                    // No date means "now", which is the earliest.
                    out[i].4 = match (out[i].4, nb) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        _ => None,
                    };
                }
                None => {
                    index.insert((c, u, h.clone()), out.len());
                    out.push((CLUSTERS[c].into(), ZONES[zone_of(c)].into(), USERS[u].into(), h, nb));
                }
            }
        }
        (out, merged)
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn manifests_of_valid_parts_validate_to_exactly_their_tasks(m in gen_manifest()) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let texts = m.files();
        let paths: Vec<PathBuf> = texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let p = dir.path().join(format!("m{i}.yaml"));
                std::fs::write(&p, text).expect("write the manifest");
                p
            })
            .collect();
        let set = match manifest::load_set(&paths, None) {
            Ok(set) => set,
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n{}", texts.join("---\n")))),
        };
        let got: Vec<_> = set
            .tasks
            .iter()
            .map(|t| {
                (
                    t.cluster.to_string(),
                    t.zone.to_string(),
                    t.user.to_string(),
                    t.host.to_string(),
                    t.not_before,
                )
            })
            .collect();
        let (want, merged) = m.expected();
        prop_assert_eq!(got, want, "{}", texts.join("---\n"));
        prop_assert_eq!(set.warnings.len(), merged, "{:?}", set.warnings);
        prop_assert!(set.tasks.iter().all(|t| t.due_by.is_none()));
    }
}

// ---------------------------------------------------------------------------------------------
// API answers: any status and any body classify, and the class follows the documented rules.

fn json_value() -> impl Strategy<Value = Value> {
    let ret_code = prop::sample::select(&[0i64, 1100, 1101, 1200, 1300, 1400, 2100, 2500, 5000, 5100, 5300, -1, 7][..]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        ret_code.prop_map(|c| json!(c)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(&["pending", "working", "successful", "failed", "done with failure", "j-1", ""][..])
            .prop_map(|s| json!(s)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            4 => prop::sample::select(&[
                "ret_code", "message", "action", "job_id", "job_set", "total_count", "status", "directive",
                "create_time", "service", "role", "cluster_id", "resource_ids",
            ][..]).prop_map(str::to_owned),
            1 => any::<String>(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Objects shaped like answers, most with a `ret_code`.
fn answer() -> impl Strategy<Value = Value> {
    let ret_code = prop_oneof![
        4 => prop::sample::select(&[0i64, 1100, 1200, 1300, 1400, 2100, 2500, 5000, 5100, 5300][..]).prop_map(|c| json!(c)),
        1 => any::<i64>().prop_map(|c| json!(c)),
        1 => json_value(),
    ];
    (ret_code, prop::option::of(any::<String>()), prop::option::of(json_value()), prop::option::of(json_value()))
        .prop_map(|(code, message, job_id, job_set)| {
            let mut m = serde_json::Map::new();
            m.insert("ret_code".into(), code);
            if let Some(s) = message {
                m.insert("message".into(), json!(s));
            }
            if let Some(v) = job_id {
                m.insert("job_id".into(), v);
            }
            if let Some(v) = job_set {
                m.insert("job_set".into(), v);
            }
            Value::Object(m)
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => answer().prop_map(|v| v.to_string().into_bytes()),
        2 => json_value().prop_map(|v| v.to_string().into_bytes()),
        // A JSON answer cut anywhere.
        2 => (answer(), any::<prop::sample::Index>()).prop_map(|(v, i)| {
            let text = v.to_string().into_bytes();
            let cut = i.index(text.len() + 1);
            text[..cut].to_vec()
        }),
        1 => prop::collection::vec(any::<u8>(), 0..512),
        1 => Just(b"<html><body><h1>502 Bad Gateway</h1></body></html>".to_vec()),
    ]
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => Just(200u16),
        2 => prop::sample::select(&[201u16, 204, 301, 302, 400, 403, 404, 408, 413, 429, 500, 502, 503, 504, 599][..]),
        1 => any::<u16>(),
    ]
}

/// The integer `ret_code` of a JSON object body, when it has one that fits an i64.
fn body_ret_code(body: &[u8]) -> Option<i64> {
    serde_json::from_slice::<Value>(body).ok()?.get("ret_code")?.as_i64()
}

fn check_classified<T: std::fmt::Debug>(
    status: u16,
    body: &[u8],
    result: &Result<T, ApiError>,
) -> Result<(), TestCaseError> {
    let code = body_ret_code(body);
    match result {
        Ok(_) => {
            prop_assert_eq!(status, 200);
            prop_assert_eq!(code, Some(0));
        }
        Err(e) => {
            prop_assert_eq!(e.http_status(), Some(status));
            let _shown = e.to_string();
            match code {
                Some(c) if c != 0 => {
                    // The API said what happened: its ret_code decides the class.
                    let expected = ApiError::from_ret_code(c, e.message(), Some(status));
                    prop_assert_eq!(e, &expected);
                    prop_assert!(!e.may_have_taken_effect());
                }
                None if status == 200 => {
                    // Something that is not the API answered 200.
                    prop_assert!(matches!(e, ApiError::NotApi(_)), "{:?}", e);
                    prop_assert!(e.may_have_taken_effect());
                }
                _ if status == 200 => {
                    // A ret_code 0 in the wrong shape.
                    prop_assert!(matches!(e, ApiError::Permanent(_)), "{:?}", e);
                    prop_assert!(e.may_have_taken_effect());
                }
                _ => {
                    let class = match status {
                        429 => "throttled",
                        408 | 500..=599 => "transient",
                        _ => "not_api",
                    };
                    prop_assert_eq!(e.class(), class);
                    prop_assert!(e.message().chars().all(|c| !c.is_control()), "{:?}", e.message());
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn any_answer_classifies(status in status(), body in body()) {
        let run = classify_body::<RunClusterCustomServiceResponse>(status, &body);
        check_classified(status, &body, &run)?;
        let jobs = classify_body::<DescribeJobsResponse>(status, &body);
        check_classified(status, &body, &jobs)?;
        // The class does not depend on the action, only whether the shape fits.
        if let (Err(a), Err(b)) = (&run, &jobs) {
            if body_ret_code(&body).is_some_and(|c| c != 0) || status != 200 {
                prop_assert_eq!(a, b);
            }
        }
    }
}

/// Found by `any_answer_classifies`: a `null` message hid the ret_code, so a refusal was taken
/// for an unreadable answer (and a 2500 or 1200 would have lost its meaning).
#[test]
fn a_null_or_odd_message_does_not_hide_the_ret_code() {
    for (body, class) in [
        (r#"{"message":null,"ret_code":1100}"#, "permanent"),
        (r#"{"ret_code":2500,"message":null}"#, "throttled"),
        (r#"{"ret_code":1200,"message":42,"action":null}"#, "auth_failed"),
        (r#"{"ret_code":5100,"message":{"x":1}}"#, "transient"),
    ] {
        let err = classify_body::<RunClusterCustomServiceResponse>(200, body.as_bytes()).unwrap_err();
        assert_eq!(err.class(), class, "{body}: {err:?}");
        assert!(!err.may_have_taken_effect(), "{body}");
    }
    let ok = r#"{"action":null,"ret_code":0,"message":null,"job_id":"j-1","service":null}"#;
    let resp = classify_body::<RunClusterCustomServiceResponse>(200, ok.as_bytes()).expect("accepted");
    assert_eq!((resp.job_id.as_str(), resp.message.as_str()), ("j-1", ""));
}

#[test]
fn a_body_at_the_size_limit_is_classified_not_parsed_as_an_answer() {
    let body = vec![b' '; qc_offboard::qingcloud::client::MAX_BODY_BYTES];
    let err = classify_body::<DescribeJobsResponse>(200, &body).unwrap_err();
    assert!(matches!(err, ApiError::NotApi(_)) && err.may_have_taken_effect(), "{err:?}");
    assert_eq!(err.message(), "the body is not JSON");
}

// ---------------------------------------------------------------------------------------------
// The signer: total, deterministic, and its encoding is reversible (hence injective).

/// Strict inverse of `signer::encode`: only unreserved characters and `%XX` in upper-case hex.
fn decode_strict(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => bytes.push(b),
            b'%' => {
                let hex = |b: u8| match b {
                    b'0'..=b'9' => Some(b - b'0'),
                    b'A'..=b'F' => Some(b - b'A' + 10),
                    _ => None,
                };
                let hi = hex(it.next()?)?;
                let lo = hex(it.next()?)?;
                bytes.push(hi << 4 | lo);
            }
            _ => return None,
        }
    }
    String::from_utf8(bytes).ok()
}

/// Strings over a small alphabet full of characters that need escaping, so that distinct
/// inputs often look alike.
fn confusable() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&['%', '2', '5', 'A', 'a', ' ', '+', '~', '.', 'é', '=', '&'][..]), 0..8)
        .prop_map(|cs| cs.into_iter().collect())
}

fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((prop_oneof![any::<String>(), confusable()], any::<String>()), 0..8)
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn encode_is_reversible_and_uses_only_unreserved_and_upper_hex(s in prop_oneof![any::<String>(), confusable()]) {
        let e = signer::encode(&s);
        prop_assert_eq!(decode_strict(&e), Some(s.clone()), "{}", e);
        // Unreserved characters are never escaped, so the encoding is canonical.
        prop_assert_eq!(e.len(), s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { 1 } else { 3 }).sum::<usize>());
    }

    #[test]
    fn encode_is_injective(a in confusable(), b in confusable()) {
        prop_assert_eq!(a == b, signer::encode(&a) == signer::encode(&b));
    }

    #[test]
    fn signing_is_total_deterministic_and_order_free(
        params in params(),
        path in prop_oneof![Just("/iaas/".to_owned()), any::<String>()],
        secret in prop::collection::vec(any::<u8>(), 0..80),
        post in any::<bool>(),
        sha1 in any::<bool>(),
        rotate in any::<prop::sample::Index>(),
    ) {
        let method = if post { Method::Post } else { Method::Get };
        let alg = if sha1 { SignatureMethod::HmacSha1 } else { SignatureMethod::HmacSha256 };
        let signed = signer::sign(method, &path, &params, &secret, alg);
        prop_assert_eq!(&signed, &signer::sign(method, &path, &params, &secret, alg));

        // The canonical query decodes back to the parameters, sorted by name, without `signature`.
        let mut want: Vec<(String, String)> = params.iter().filter(|(k, _)| k != "signature").cloned().collect();
        want.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let got: Vec<(String, String)> = if signed.canonical_query.is_empty() {
            Vec::new()
        } else {
            signed
                .canonical_query
                .split('&')
                .map(|pair| {
                    let (k, v) = pair.split_once('=').expect("name=value");
                    (decode_strict(k).expect("encoded name"), decode_strict(v).expect("encoded value"))
                })
                .collect()
        };
        prop_assert_eq!(got, want);

        // With distinct names, the order given does not matter.
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<(String, String)> = params.iter().filter(|(k, _)| seen.insert(k.clone())).cloned().collect();
        let mut rotated = unique.clone();
        if !rotated.is_empty() {
            let n = rotate.index(rotated.len());
            rotated.rotate_left(n);
        }
        prop_assert_eq!(
            signer::signature(method, &path, &unique, &secret, alg),
            signer::signature(method, &path, &rotated, &secret, alg)
        );
        let q = signed.query_string();
        prop_assert!(q.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%&=".contains(&b)), "{}", q);
    }
}

// ---------------------------------------------------------------------------------------------
// The simulator: whatever arrives, it answers and keeps serving.

const PARAM_NAMES: &[&str] = &[
    "action",
    "zone",
    "access_key_id",
    "signature",
    "signature_method",
    "signature_version",
    "time_stamp",
    "expires",
    "version",
    "jobs.1",
    "jobs.2",
    "jobs.0",
    "jobs.x",
    "jobs.",
    "jobs.99999999999",
    "status.1",
    "limit",
    "offset",
    "verbose",
    "cluster",
    "role",
    "service",
    "service_params",
    "job_action",
];

const PARAM_VALUES: &[&str] = &[
    "",
    "DescribeJobs",
    "RunClusterCustomService",
    "sh1a",
    "SH1A",
    "cl-abc",
    "cl-",
    "maininstance",
    "del_user",
    "HmacSHA256",
    "HmacSHA1",
    "MD5",
    "1",
    "2",
    "0",
    "-1",
    "18446744073709551615",
    "18446744073709551616",
    "pending",
    "done with failure",
    "2024-05-01T08:00:00Z",
    "9999-12-31T23:59:59Z",
    "-262143-01-01T00:00:00Z",
    r#"{"host":"%","user":"bob"}"#,
    r#"{"host":"%","user":"root"}"#,
    r#"{"host":"","user":"bob"}"#,
    r#"{"host":"%","user":"bob","x":1}"#,
    r#"[1,2]"#,
    "QYACCESSKEYIDEXAMPLE",
];

fn param_pair() -> impl Strategy<Value = (String, String)> {
    (
        prop_oneof![4 => prop::sample::select(PARAM_NAMES).prop_map(str::to_owned), 1 => any::<String>()],
        prop_oneof![4 => prop::sample::select(PARAM_VALUES).prop_map(str::to_owned), 1 => any::<String>()],
    )
}

/// Extra parameters of a signed request: mostly the actions' own (the common ones would only
/// be refused as given twice).
fn action_params() -> impl Strategy<Value = Vec<(String, String)>> {
    let own = prop::sample::select(&PARAM_NAMES[7..]).prop_map(str::to_owned);
    let pair = prop_oneof![
        6 => (own, prop_oneof![4 => prop::sample::select(PARAM_VALUES).prop_map(str::to_owned), 1 => any::<String>()]),
        1 => param_pair(),
    ];
    prop::collection::vec(pair, 0..6)
}

/// A well-formed `del_user` for any user and host text, and perhaps one more parameter.
fn del_user_params() -> impl Strategy<Value = Vec<(String, String)>> {
    (
        prop::sample::select(&["cl-abc", "cl-x1", "cl-", "i-abc"][..]),
        prop_oneof![3 => prop::sample::select(&["bob", "root", "", "a\"b", "用户"][..]).prop_map(str::to_owned), 2 => any::<String>()],
        prop_oneof![3 => prop::sample::select(&["%", "10.0.0.%", ""][..]).prop_map(str::to_owned), 1 => any::<String>()],
        prop::option::weighted(0.2, param_pair()),
    )
        .prop_map(|(cluster, user, host, more)| {
            let service_params = qc_offboard::qingcloud::types::DelUserParams::new(&user, &host).to_json();
            let mut p: Vec<(String, String)> = [
                ("cluster", cluster),
                ("role", "maininstance"),
                ("service", "del_user"),
                ("service_params", service_params.as_str()),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
            p.extend(more);
            p
        })
}

/// Characters allowed in a request target's query, `%` escapes (good and bad) and separators.
fn raw_query() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        4 => "[A-Za-z0-9._~!$'()*,;:@/?-]{1,8}",
        2 => prop::sample::select(&["&", "=", "+", "%", "%2", "%zz", "%20", "%00", "%FF", "%C3%A9", "&&", "==", "action=DescribeJobs"][..])
            .prop_map(str::to_owned),
        1 => param_pair().prop_map(|(k, v)| format!("{}={}", signer::encode(&k), signer::encode(&v))),
    ];
    prop::collection::vec(token, 0..24).prop_map(|t| t.concat())
}

#[derive(Debug, Clone, Copy)]
enum When {
    Now,
    MinuteAgo,
    Earliest,
    Latest,
}

impl When {
    fn at(self) -> chrono::DateTime<chrono::Utc> {
        use chrono::{DateTime, TimeDelta, Utc};
        match self {
            When::Now => Utc::now(),
            When::MinuteAgo => Utc::now() - TimeDelta::seconds(61),
            When::Earliest => DateTime::<Utc>::MIN_UTC,
            When::Latest => DateTime::<Utc>::MAX_UTC,
        }
    }
}

#[derive(Debug, Clone)]
enum SimRequest {
    /// An unsigned GET with this query string.
    Query(String),
    /// An unsigned POST form with this body.
    Form(Vec<u8>),
    /// A correctly signed request of `action` with arbitrary extra parameters, so that the
    /// action's own parameter parsing is reached, sent at a time stamp now or far off.
    Signed { action: String, extra: Vec<(String, String)>, post: bool, when: When },
    /// Bytes that may not be HTTP at all, then the end of the stream.
    Raw(Vec<u8>),
}

fn sim_request() -> impl Strategy<Value = SimRequest> {
    prop_oneof![
        2 => raw_query().prop_map(SimRequest::Query),
        1 => prop_oneof![
            raw_query().prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..512),
        ].prop_map(SimRequest::Form),
        4 => (
            prop_oneof![
                3 => (Just("RunClusterCustomService".to_owned()), del_user_params()),
                3 => (prop::sample::select(&["DescribeJobs", "RunClusterCustomService"][..]).prop_map(str::to_owned), action_params()),
                1 => (any::<String>(), action_params()),
            ],
            any::<bool>(),
            prop_oneof![
                6 => Just(When::Now),
                1 => prop::sample::select(&[When::MinuteAgo, When::Earliest, When::Latest][..]),
            ],
        ).prop_map(|((action, extra), post, when)| SimRequest::Signed { action, extra, post, when }),
        1 => prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            raw_query().prop_map(|q| format!("GET /iaas/?{q} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()),
            raw_query().prop_map(|q| format!("POST /iaas/ HTTP/1.1\r\nContent-Length: 9\r\n\r\n{q}").into_bytes()),
        ].prop_map(SimRequest::Raw),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("HTTP client")
}

/// The `ret_code` of a 200 JSON answer.
async fn ret_code_of(resp: reqwest::Response) -> Result<i64, String> {
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
    if status != 200 {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    let v: Value =
        serde_json::from_slice(&body).map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(&body)))?;
    v["ret_code"].as_i64().ok_or_else(|| format!("no ret_code: {v}"))
}

/// Send raw bytes, close the sending side, and read what comes back (at most 5 s).
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(bytes).await?;
    stream.shutdown().await?;
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await {
        Ok(r) => r.map(|_| out),
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer and no close within 5 s")),
    }
}

async fn send_sim_request(
    api: &Api,
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    req: &SimRequest,
) -> Result<(), String> {
    match req {
        SimRequest::Query(q) => {
            let resp = http.get(format!("{}?{q}", api.endpoint)).send().await.map_err(|e| e.to_string())?;
            let code = ret_code_of(resp).await?;
            if code == 0 {
                return Err("an unsigned request was accepted".into());
            }
        }
        SimRequest::Form(body) => {
            let resp = http
                .post(&api.endpoint)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.clone())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let code = ret_code_of(resp).await?;
            if code == 0 {
                return Err("an unsigned request was accepted".into());
            }
        }
        SimRequest::Signed { action, extra, post, when } => {
            let mut api = api.clone();
            api.method = if *post { Method::Post } else { Method::Get };
            let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let params = api.signed(action, "sh1a", &extra, when.at());
            let resp = api.send(&params).await.map_err(|e| e.to_string())?;
            ret_code_of(resp).await?;
        }
        SimRequest::Raw(bytes) => {
            let answer = raw_exchange(addr, bytes).await.map_err(|e| e.to_string())?;
            if !answer.is_empty() && !answer.starts_with(b"HTTP/1.1 ") {
                return Err(format!("not an HTTP answer: {:?}", String::from_utf8_lossy(&answer)));
            }
        }
    }
    Ok(())
}

#[test]
fn the_simulator_answers_anything_and_keeps_serving() {
    let rt = runtime();
    let sim = rt.block_on(start_sim(world("seed: 1\njobs: {pending_ms: 0, working_ms: 0}")));
    let api = Api::new(&sim.endpoint());
    let http = http_client();
    let mut runner = TestRunner::new(config(256));
    let result = runner.run(&sim_request(), |req| {
        rt.block_on(async {
            send_sim_request(&api, &http, sim.addr, &req).await.map_err(TestCaseError::fail)?;
            // A valid request still succeeds afterwards.
            let v = api.describe_jobs("sh1a", &[]).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(v["ret_code"].as_i64(), Some(0), "{}", v);
            Ok(())
        })
    });
    rt.block_on(sim.shutdown());
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// The simulator's per-connection limits.

async fn still_serves(api: &Api) {
    let v = api.describe_jobs("sh1a", &[]).await.expect("a valid request after the abuse");
    assert_eq!(v["ret_code"], 0, "{v}");
}

/// Send `send` without closing our side and read until the server closes: only the server can
/// end this (within 10 s, or the test fails).
async fn held(addr: std::net::SocketAddr, send: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(send).await.expect("send");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection was held open; sent {:?}", String::from_utf8_lossy(send));
    out
}

/// Send `send` (as much as the server takes) and read the first 12 bytes of the answer: the
/// status line's start. The server refuses before reading everything, so no more is read: the
/// rest may be lost to a reset.
async fn first_bytes(addr: std::net::SocketAddr, send: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let send = send.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&send).await;
        wr
    });
    let mut out = vec![0u8; 12];
    let read = tokio::time::timeout(Duration::from_secs(10), rd.read_exact(&mut out)).await;
    writer.abort();
    assert!(matches!(read, Ok(Ok(_))), "no answer: {read:?}");
    out
}

#[tokio::test]
async fn the_simulator_refuses_oversized_queries_and_bodies() {
    let sim = start_sim(world("{}")).await;
    let api = Api::new(&sim.endpoint());
    let max = Limits::default();

    let long_query =
        format!("GET /iaas/?action=DescribeJobs&x={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(max.max_head_bytes));
    let answer = raw_exchange(sim.addr, long_query.as_bytes()).await.expect("an answer to an oversized query");
    let head = String::from_utf8_lossy(&answer[..answer.len().min(12)]).into_owned();
    assert!(head == "HTTP/1.1 414" || head == "HTTP/1.1 431", "{head:?}");
    // The same bound holds for the whole head, headers included (hyper's own default would
    // take six times as much).
    let pad = "a".repeat(3 * max.max_head_bytes);
    let long_head = format!("GET /iaas/?action=DescribeJobs HTTP/1.1\r\nHost: x\r\nX-Pad: {pad}\r\n\r\n");
    let answer = first_bytes(sim.addr, long_head.as_bytes()).await;
    assert_eq!(String::from_utf8_lossy(&answer), "HTTP/1.1 431");

    // Announced too long: refused at once, without waiting for (or reading) the body.
    let declared = format!(
        "POST /iaas/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        max.max_body_bytes + 1
    );
    let answer = held(sim.addr, declared.as_bytes()).await;
    assert!(answer.starts_with(b"HTTP/1.1 413"), "{:?}", String::from_utf8_lossy(&answer));

    // A chunked body with no declared length is cut at the limit as it streams in.
    let mut chunked = b"POST /iaas/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..(max.max_body_bytes / chunk.len() + 1) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    // The server stops reading at the limit, so the rest may be met with a reset instead.
    if let Ok(answer) = raw_exchange(sim.addr, &chunked).await {
        assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 413"), "{:?}", String::from_utf8_lossy(&answer));
    }
    still_serves(&api).await;
    let stats = sim.stats();
    assert_eq!(stats.requests_total, 1, "refused requests never reach the API: {stats:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_simulator_does_not_wait_for_slow_clients() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let sim = sim::start_with_limits(World::auto_fast(), "127.0.0.1:0".parse().expect("address"), limits)
        .await
        .expect("simulator starts");
    let addr = sim.addr;

    // Idle: nothing sent at all.
    held(addr, b"").await;
    // Half a request head.
    held(addr, b"GET /iaas/?action=Desc").await;
    // A head, then less body than announced.
    let answer = held(addr, b"POST /iaas/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\naction=").await;
    assert!(answer.starts_with(b"HTTP/1.1 408"), "{:?}", String::from_utf8_lossy(&answer));

    still_serves(&Api::new(&sim.endpoint())).await;
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// World files: any YAML parses or is refused, and an accepted world runs.

const WORLD_KEYS: &[&str] = &[
    "credentials",
    "access_key_id",
    "secret_access_key",
    "clusters",
    "id",
    "zone",
    "users",
    "jobs",
    "pending_ms",
    "working_ms",
    "fail_rate",
    "quota",
    "requests",
    "window_s",
    "faults",
    "busy_rate",
    "internal_rate",
    "http_502_rate",
    "reset_rate",
    "lost_response_rate",
    "delay_ms",
    "one_job_per_cluster",
    "seed",
];

const WORLD_VALUES: &[&str] = &[
    "0",
    "1",
    "0.5",
    "1.5",
    "-1",
    "1e30",
    "1e-30",
    "18446744073709551615",
    ".inf",
    "-.inf",
    ".nan",
    "true",
    "AK1",
    "SK1",
    "cl-abc",
    "sh1a",
    "bob@%",
    "we@ird@%",
    "@",
    "bob",
];

/// Submit a `del_user` in `world` and read the job back: every request is answered.
async fn exercise(sim: &sim::SimHandle, world: &World) -> Result<(), TestCaseError> {
    let f = &world.faults;
    let faulty = f.busy_rate + f.internal_rate + f.http_502_rate + f.reset_rate + f.lost_response_rate > 0.0;
    if faulty || f.delay_ms > 50 {
        // Faults are meant to break answers; latency would only slow the suite down.
        let _ = sim.stats();
        return Ok(());
    }
    let mut api = Api::new(&sim.endpoint());
    api.access_key = world.credentials[0].access_key_id.clone();
    api.secret = world.credentials[0].secret_access_key.clone();
    let (cluster, zone) = match world.clusters.as_ref().and_then(|c| c.first()) {
        Some(c) => (c.id.clone(), c.zone.clone()),
        None => ("cl-a".to_owned(), "sh1a".to_owned()),
    };
    let submitted = api.del_user(&zone, &cluster, "bob", "%").await;
    prop_assert!(submitted.is_ok(), "{:?}", submitted.err());
    let described = api.describe_jobs(&zone, &[]).await;
    prop_assert!(described.is_ok(), "{:?}", described.err());
    let _ = sim.stats();
    Ok(())
}

fn world_tree() -> NodeStrategy {
    let (k, v) = (WORLD_KEYS, WORLD_VALUES);
    let leaf = || perturbed(scalar(v).prop_map(Node::Scalar).boxed(), k, v);
    let numbers =
        &["0", "1", "3", "0.5", "1.5", "-1", "1e30", "1e-30", "86400001", "18446744073709551615", ".inf", ".nan"][..];
    let number = || {
        let n = prop::sample::select(numbers).prop_map(|n| Node::Scalar(Scalar::Plain(n.to_owned())));
        prop_oneof![3 => n, 1 => leaf()].boxed()
    };
    let credential = mapping(vec![("access_key_id", 0.9, leaf()), ("secret_access_key", 0.9, leaf())]);
    let cluster =
        mapping(vec![("id", 0.9, leaf()), ("zone", 0.9, leaf()), ("users", 0.7, perturbed(sequence(leaf(), 4), k, v))]);
    let jobs =
        mapping(vec![("pending_ms", 0.7, number()), ("working_ms", 0.7, number()), ("fail_rate", 0.5, number())]);
    let quota = mapping(vec![("requests", 0.9, number()), ("window_s", 0.9, number())]);
    let faults = mapping(
        ["busy_rate", "internal_rate", "http_502_rate", "reset_rate", "lost_response_rate", "delay_ms"]
            .into_iter()
            .map(|key| (key, 0.3, number()))
            .collect(),
    );
    mapping(vec![
        ("credentials", 0.4, perturbed(sequence(perturbed(credential, k, v), 3), k, v)),
        ("clusters", 0.5, perturbed(sequence(perturbed(cluster, k, v), 3), k, v)),
        ("jobs", 0.6, perturbed(jobs, k, v)),
        ("quota", 0.6, perturbed(quota, k, v)),
        ("faults", 0.4, perturbed(faults, k, v)),
        ("one_job_per_cluster", 0.3, leaf()),
        ("seed", 0.5, number()),
    ])
}

fn check_world(text: &str) -> Result<(), TestCaseError> {
    match World::parse(text, Path::new("world.yaml")) {
        Ok(w) => {
            // An accepted world builds a simulator that runs a job to its end (its timings and
            // windows are representable).
            let w_copy = w.clone();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                let sim = sim::start(w, "127.0.0.1:0".parse().expect("address")).await;
                prop_assert!(sim.is_ok(), "{:?}", sim.err());
                if let Ok(sim) = sim {
                    exercise(&sim, &w_copy).await?;
                    sim.shutdown().await;
                }
                Ok(())
            })?;
        }
        Err(e) => prop_assert!(e.to_string().starts_with("world.yaml: "), "{}", e),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn world_yaml_parses_or_is_refused(text in document(WORLD_KEYS, WORLD_VALUES)) {
        check_world(&text)?;
    }

    #[test]
    fn world_shaped_yaml_parses_or_is_refused(tree in world_tree()) {
        check_world(&render(&tree))?;
    }

    #[test]
    fn world_arbitrary_text_parses_or_is_refused(text in any::<String>()) {
        check_world(&text)?;
    }
}

/// Found by `world_shaped_yaml_parses_or_is_refused`: a quota window too large for a
/// `Duration` panicked while the world was checked. Job phases of `u64::MAX` ms were accepted
/// and would overflow the clock when the first job settled.
#[test]
fn huge_durations_in_a_world_are_refused_not_panicked_on() {
    for (text, needle) in [
        ("quota: {requests: 1, window_s: 1e30}", "quota.window_s must be a positive number of seconds up to 86400"),
        ("quota: {requests: 1, window_s: .inf}", "quota.window_s"),
        ("quota: {requests: 1, window_s: .nan}", "quota.window_s"),
        ("quota: {requests: 1, window_s: 1e-30}", "quota.window_s"),
        ("jobs: {pending_ms: 18446744073709551615}", "jobs.pending_ms must be at most 86400000"),
        ("jobs: {working_ms: 86400001}", "jobs.working_ms must be at most 86400000"),
        ("faults: {delay_ms: 18446744073709551615}", "faults.delay_ms must be at most"),
    ] {
        let err = World::parse(text, Path::new("w.yaml")).expect_err(text).to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
    let day = World::parse("quota: {requests: 1, window_s: 86400}\njobs: {pending_ms: 86400000}", Path::new("w.yaml"));
    assert!(day.is_ok(), "{day:?}");
}

// ---------------------------------------------------------------------------------------------
// Config files (SPEC §5): lines of the known keys (and some unknown ones) with any
// indentation, separator and quoting, so that lines fold into each other, the secret lands in
// other keys' values or is missing, plus credentials in the environment, possibly misplaced.
// Whatever comes out, the secret is in no error, no warning, and nothing that is sent (access
// key id, endpoint, zone) or stored.

use qc_offboard::qingcloud::config::{resolve, ConfigInput};

const CONFIG_KEYS: &[&str] = &[
    "qy_access_key_id",
    "qy_secret_access_key",
    "zone",
    "host",
    "port",
    "protocol",
    "uri",
    "connection_retries",
    "connection_timeout",
    "http_socket_timeout",
    "log_level",
];

/// A secret as QingCloud issues them (mixed-case letters and digits), long enough that finding
/// it in a text is no accident.
fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{12,40}".prop_map(|s| format!("Sk{s}q"))
}

#[derive(Debug, Clone)]
enum ConfigValue {
    Secret,
    AccessKey,
    Text(String),
}

fn config_line() -> impl Strategy<Value = (usize, String, &'static str, usize, ConfigValue)> {
    let value = prop_oneof![
        3 => Just(ConfigValue::Secret),
        2 => Just(ConfigValue::AccessKey),
        2 => prop::sample::select(&["sh1a", "pek3", "http", "https", "/iaas/", "443", "5", "api.example.com", "", "[x]"][..])
            .prop_map(|s| ConfigValue::Text(s.to_owned())),
        1 => "[ -~]{0,12}".prop_map(ConfigValue::Text),
    ];
    (
        0usize..4, // indentation
        prop::sample::select(CONFIG_KEYS).prop_map(str::to_owned),
        prop::sample::select(&[": ", ":", " : ", ":\t"][..]), // separator
        0usize..3,                                            // quoting: plain, single, double
        value,
    )
}

fn render_config(lines: &[(usize, String, &'static str, usize, ConfigValue)], secret: &str) -> String {
    let mut out = String::new();
    for (indent, key, sep, quote, value) in lines {
        let v = match value {
            ConfigValue::Secret => secret.to_owned(),
            ConfigValue::AccessKey => "QYACCESSKEYIDEXAMPLE".to_owned(),
            ConfigValue::Text(t) => t.clone(),
        };
        let v = match quote {
            0 => v,
            1 => format!("'{v}'"),
            _ => format!("\"{v}\""),
        };
        out.push_str(&format!("{}{key}{sep}{v}\n", " ".repeat(*indent)));
    }
    out
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn no_config_file_shows_the_secret_anywhere(
        lines in prop::collection::vec(config_line(), 0..8),
        secret in secret(),
        env_ak in prop_oneof![Just(None), Just(Some("QYACCESSKEYIDEXAMPLE")), Just(Some("SECRET"))],
        env_sk in any::<bool>(),
    ) {
        let home = crate::helpers::tempdir();
        std::fs::create_dir_all(home.path().join(".qingcloud")).unwrap();
        let text = render_config(&lines, &secret);
        std::fs::write(home.path().join(".qingcloud/config.yaml"), &text).unwrap();
        let env_secret = format!("{secret}E");
        let vars = |name: &str| match name {
            "QINGCLOUD_ACCESS_KEY" => env_ak.map(|a| if a == "SECRET" { env_secret.clone() } else { a.to_owned() }),
            "QINGCLOUD_SECRET_KEY" => env_sk.then(|| env_secret.clone()),
            _ => None,
        };
        let shown = match resolve(&ConfigInput::default(), &vars, Some(home.path())) {
            Err(e) => format!("{e}\n{e:?}"),
            Ok(r) => {
                let s = &r.settings;
                format!(
                    "{}\n{}\n{:?}\n{}\n{:?}\n{}\n{}",
                    s.credentials.access_key_id,
                    s.endpoint,
                    s.zone,
                    s.redacted_summary(),
                    r,
                    s.credentials,
                    r.warnings.join("\n"),
                )
            }
        };
        // `secret` is a prefix of `env_secret`: one check covers both.
        prop_assert!(!shown.contains(&secret), "the secret shows for\n{}\n{}", text, shown);
    }
}
