//! From the raw document to checked tasks, in one pass that collects every error of the file
//! instead of stopping at the first. Errors carry the YAML path of the offending node; the
//! caller turns paths into lines and columns only when there is something to report.
//!
//! What an entry inherits from the file (zone, account, host, dates) is `inherit`'s; the
//! `discover:` entries are `selector`'s. Pure: it reads nothing but the document it is given.

mod inherit;
mod selector;

use chrono::{DateTime, Utc};

use super::locate::{Seg, YamlPath};
use super::model::{Selector, Task};
use super::raw::{RawAccount, RawClusterRef, RawManifest};
use crate::domain::{AccountName, ClusterId, HostSpec, UserName, Zone};

use inherit::{path, Ctx, Inherited};
use selector::selector;

pub use inherit::{parse_date, parse_instant, DEFAULT_HOST};

/// The only manifest version that exists.
pub const VERSION: &str = "1";

/// Where a task was written, compact enough to keep one per task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `clusters[c].users[u]`
    Cluster { cluster: usize, user: usize },
    /// `users[u].clusters[c]`
    User { user: usize, cluster: usize },
}

impl Origin {
    pub fn path(self) -> YamlPath {
        match self {
            Origin::Cluster { cluster, user } => {
                vec![Seg::Key("clusters"), Seg::Index(cluster), Seg::Key("users"), Seg::Index(user)]
            }
            Origin::User { user, cluster } => {
                vec![Seg::Key("users"), Seg::Index(user), Seg::Key("clusters"), Seg::Index(cluster)]
            }
        }
    }
}

/// What a well-formed file says.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    pub ticket: Option<String>,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    pub due_by: Option<DateTime<Utc>>,
    pub tasks: Vec<Task>,
    /// Parallel to `tasks`.
    pub origins: Vec<Origin>,
    /// `discover[i]`, in file order (`source` is filled in by the loader).
    pub selectors: Vec<Selector>,
}

/// Check a whole document. `None` is an empty document. `fallback_zone` is the zone for
/// clusters that name none, neither themselves nor in `defaults`.
pub(crate) fn check(
    raw: Option<RawManifest>,
    fallback_zone: Option<&Zone>,
    account_zones: &std::collections::HashMap<AccountName, Zone>,
) -> (Checked, Vec<(YamlPath, String)>) {
    let mut out = Checked::default();
    let Some(raw) = raw else {
        return (
            out,
            vec![(Vec::new(), "manifest is empty; it needs `version: 1` and `clusters:` or `users:`".into())],
        );
    };
    let mut cx = Ctx {
        errors: Vec::new(),
        zone: Inherited::Absent,
        host: Inherited::Absent,
        fallback_zone,
        account_zones,
        due_by: None,
        account: Inherited::Absent,
    };

    match raw.version.as_deref() {
        None => cx.err(Vec::new(), "version is missing; start the manifest with `version: 1`"),
        Some(v) if v.trim() == VERSION => {}
        Some(v) => cx.err(path(&[Seg::Key("version")]), format!("unknown version {v:?}; only version 1 exists")),
    }
    out.ticket = raw.ticket;
    out.requested_by = raw.requested_by;
    out.reason = raw.reason;
    if let Some(a) = raw.account.as_deref() {
        cx.account = match cx.parse(a.trim(), AccountName::parse, &[Seg::Key("account")]) {
            Some(a) if a.is_default() => Inherited::Absent,
            Some(a) => Inherited::Given(a),
            None => Inherited::Refused,
        };
    }
    if let Some(s) = raw.due_by.as_deref() {
        out.due_by = cx.parse(s, parse_instant, &[Seg::Key("due_by")]);
        cx.due_by = out.due_by;
    }
    if let Some(d) = raw.defaults {
        if let Some(z) = d.zone.as_deref() {
            cx.zone = match cx.parse(z, Zone::parse, &[Seg::Key("defaults"), Seg::Key("zone")]) {
                Some(z) => Inherited::Given(z),
                None => Inherited::Refused,
            };
        }
        if let Some(h) = d.host.as_deref() {
            cx.host = match cx.parse(h, HostSpec::parse, &[Seg::Key("defaults"), Seg::Key("host")]) {
                Some(h) => Inherited::Given(h),
                None => Inherited::Refused,
            };
        }
    }

    let clusters = raw.clusters.unwrap_or_default();
    let users = raw.users.unwrap_or_default();
    let discover = raw.discover.unwrap_or_default();
    if clusters.is_empty() && users.is_empty() && discover.is_empty() {
        cx.err(Vec::new(), "manifest is empty: it lists no accounts; add `clusters:`, `users:` or `discover:`");
    }
    for (si, sel) in discover.iter().enumerate() {
        if let Some(s) = selector(&mut cx, si, sel) {
            out.selectors.push(s);
        }
    }

    for (ci, c) in clusters.iter().enumerate() {
        let at = [Seg::Key("clusters"), Seg::Index(ci)];
        let id = match c.id.as_deref() {
            Some(id) => cx.parse(id, ClusterId::parse, &[Seg::Key("clusters"), Seg::Index(ci), Seg::Key("id")]),
            None => {
                cx.err(path(&at), "cluster has no `id`");
                None
            }
        };
        let account = cx.account(c.account.as_deref(), &at);
        let zone = cx.zone_of(c.zone.as_deref(), &at, c.id.as_deref().unwrap_or("?"), account.as_ref());
        let accounts = c.users.as_deref().unwrap_or_default();
        if accounts.is_empty() {
            cx.err(path(&at), format!("cluster {:?} lists no users", c.id.as_deref().unwrap_or("?")));
        }
        for (ui, a) in accounts.iter().enumerate() {
            let at = [Seg::Key("clusters"), Seg::Index(ci), Seg::Key("users"), Seg::Index(ui)];
            let (user, host, nb, due, ok) = match a {
                RawAccount::Short(u) => {
                    let user = cx.parse(u, UserName::parse, &at);
                    let host = cx.host(None, &at);
                    (user, host, None, cx.due_by, true)
                }
                RawAccount::Full(f) => {
                    let mut user_at = at.to_vec();
                    user_at.push(Seg::Key("user"));
                    let user = match f.user.as_deref() {
                        Some(u) => cx.parse(u, UserName::parse, &user_at),
                        None => {
                            cx.err(path(&at), "account has no `user`");
                            None
                        }
                    };
                    let host = cx.host(f.host.as_deref(), &at);
                    let (nb, due, ok) = cx.dates(f.not_before.as_deref(), f.due_by.as_deref(), &at);
                    (user, host, nb, due, ok)
                }
            };
            if let (Some(cluster), Some(zone), Some(account), Some(user), Some(host), true) =
                (&id, &zone, &account, user, host, ok)
            {
                out.tasks.push(Task {
                    cluster: cluster.clone(),
                    zone: zone.clone(),
                    user,
                    host,
                    not_before: nb,
                    due_by: due,
                    account: account.clone(),
                });
                out.origins.push(Origin::Cluster { cluster: ci, user: ui });
            }
        }
    }

    for (ui, u) in users.iter().enumerate() {
        let at = [Seg::Key("users"), Seg::Index(ui)];
        let user = match u.user.as_deref() {
            Some(name) => cx.parse(name, UserName::parse, &[Seg::Key("users"), Seg::Index(ui), Seg::Key("user")]),
            None => {
                cx.err(path(&at), "entry has no `user`");
                None
            }
        };
        let host = cx.host(u.host.as_deref(), &at);
        let (nb, due, ok) = cx.dates(u.not_before.as_deref(), u.due_by.as_deref(), &at);
        let refs = u.clusters.as_deref().unwrap_or_default();
        if refs.is_empty() {
            cx.err(path(&at), format!("user {:?} lists no clusters", u.user.as_deref().unwrap_or("?")));
        }
        for (ci, r) in refs.iter().enumerate() {
            let at = [Seg::Key("users"), Seg::Index(ui), Seg::Key("clusters"), Seg::Index(ci)];
            let (id, zone, account) = match r {
                RawClusterRef::Short(id) => {
                    let cluster = cx.parse(id, ClusterId::parse, &at);
                    let account = cx.account(None, &at);
                    (cluster, cx.zone_of(None, &at, id, account.as_ref()), account)
                }
                RawClusterRef::Full(f) => {
                    let mut id_at = at.to_vec();
                    id_at.push(Seg::Key("id"));
                    let cluster = match f.id.as_deref() {
                        Some(id) => cx.parse(id, ClusterId::parse, &id_at),
                        None => {
                            cx.err(path(&at), "cluster has no `id`");
                            None
                        }
                    };
                    let account = cx.account(f.account.as_deref(), &at);
                    let zone = cx.zone_of(f.zone.as_deref(), &at, f.id.as_deref().unwrap_or("?"), account.as_ref());
                    (cluster, zone, account)
                }
            };
            if let (Some(cluster), Some(zone), Some(account), Some(user), Some(host), true) =
                (id, zone, account, &user, &host, ok)
            {
                out.tasks.push(Task {
                    cluster,
                    zone,
                    user: user.clone(),
                    host: host.clone(),
                    not_before: nb,
                    due_by: due,
                    account,
                });
                out.origins.push(Origin::User { user: ui, cluster: ci });
            }
        }
    }
    (out, cx.errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn run(yaml: &str, zone: Option<&str>) -> (Checked, Vec<String>) {
        let raw = super::super::raw::from_yaml(yaml).expect("well-formed");
        let z = zone.map(|z| Zone::parse(z).unwrap());
        let (c, errs) = check(raw, z.as_ref(), &Default::default());
        (c, errs.into_iter().map(|(p, r)| format!("{}: {r}", super::super::locate::display(&p))).collect())
    }

    #[test]
    fn zone_precedence() {
        let doc = "version: 1\ndefaults: {zone: pek3}\nclusters:\n  - {id: cl-a, zone: sh1a, users: [u1]}\n  - {id: cl-b, users: [u1]}\nusers:\n  - {user: bob, clusters: [cl-c, {id: cl-d, zone: gd2}]}\n";
        let (c, errs) = run(doc, Some("ap2a"));
        assert!(errs.is_empty(), "{errs:?}");
        let zones: Vec<_> = c.tasks.iter().map(|t| t.zone.as_str()).collect();
        assert_eq!(zones, ["sh1a", "pek3", "pek3", "gd2"]);
        let doc = "version: 1\nclusters:\n  - {id: cl-b, users: [u1]}\n";
        assert_eq!(run(doc, Some("ap2a")).0.tasks[0].zone.as_str(), "ap2a");
        let errs = run(doc, None).1;
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("clusters[0]: zone missing"), "{errs:?}");
    }

    #[test]
    fn hosts_and_dates_flow_down() {
        let doc = "version: 1\ndue_by: 2026-11-28T12:00:00+08:00\ndefaults: {zone: sh1a, host: '10.%'}\nclusters:\n  - id: cl-a\n    users:\n      - u1\n      - {user: u2, host: '%', not_before: 2026-12-01, due_by: 2026-12-02T00:00:00Z}\n";
        let (c, errs) = run(doc, None);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(c.tasks[0].host.as_str(), "10.%");
        assert_eq!(c.tasks[0].due_by.unwrap().to_rfc3339(), "2026-11-28T04:00:00+00:00");
        assert_eq!(c.tasks[1].host.as_str(), "%");
        assert_eq!(c.tasks[1].not_before, NaiveDate::from_ymd_opt(2026, 12, 1));
        assert_eq!(c.tasks[1].due_by.unwrap().to_rfc3339(), "2026-12-02T00:00:00+00:00");
    }

    #[test]
    fn not_before_after_due_by_is_refused() {
        let doc = "version: 1\ndue_by: 2026-12-01T00:00:00Z\ndefaults: {zone: sh1a}\nclusters:\n  - id: cl-a\n    users:\n      - {user: u1, not_before: 2026-12-01}\n      - {user: u2, not_before: 2026-12-02}\n      - {user: u3, not_before: 2026-12-02, due_by: 2026-12-03T00:00:00Z}\n";
        let errs = run(doc, None).1;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("clusters[0].users[1].not_before: not_before 2026-12-02 is after due_by"),
            "{errs:?}"
        );
    }

    #[test]
    fn default_host_is_any() {
        let (c, _) = run("version: 1\nclusters: [{id: cl-a, zone: sh1a, users: [u1]}]\n", None);
        assert_eq!(c.tasks[0].host.as_str(), "%");
    }

    #[test]
    fn every_error_is_collected() {
        let doc = "version: 2\ndefaults: {zone: SH1A}\nclusters:\n  - {id: CL-A, users: [root, '', {user: 'a b', not_before: tomorrow}]}\n  - {zone: sh1a}\nusers:\n  - {user: bob, host: 'x y', clusters: []}\n";
        let errs = run(doc, None).1;
        let expected = [
            "version: unknown version \"2\"",
            "defaults.zone: zone \"SH1A\"",
            "clusters[0].id: cluster id \"CL-A\"",
            "clusters[0].users[0]: user \"root\" is protected",
            "clusters[0].users[1]: user is empty",
            "clusters[0].users[2].user: user \"a b\" contains whitespace",
            "clusters[0].users[2].not_before: date \"tomorrow\"",
            "clusters[1]: cluster has no `id`",
            "clusters[1]: cluster \"?\" lists no users",
            "users[0].host: host \"x y\"",
            "users[0]: user \"bob\" lists no clusters",
        ];
        assert_eq!(errs.len(), expected.len(), "{errs:#?}");
        for (e, want) in errs.iter().zip(expected) {
            assert!(e.starts_with(want), "{e} does not start with {want}");
        }
    }

    #[test]
    fn empty_documents() {
        assert!(run("", None).1[0].contains("manifest is empty"));
        assert!(run("# nothing\n", None).1[0].contains("manifest is empty"));
        assert!(run("version: 1\n", None).1[0].contains("lists no accounts"));
        assert!(run("version: 1\nclusters: []\nusers: []\n", None).1[0].contains("lists no accounts"));
    }
}
