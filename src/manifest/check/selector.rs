//! The `discover:` entries of a manifest: zones, tags, a `name_matches` regular expression, the
//! account and the users to remove from every cluster found. Each becomes a [`Selector`] that
//! `plan` and `run` expand through the API.
//!
//! It checks the entry; it looks nothing up.

use crate::domain::{UserName, Zone};
use crate::manifest::locate::Seg;
use crate::manifest::model::{Selector, SelectorUser};
use crate::manifest::raw::{RawAccount, RawSelector};

use super::inherit::{path, Ctx};

/// Check `discover[si]`; `None` when something in it was refused (reported).
pub(super) fn selector(cx: &mut Ctx<'_>, si: usize, sel: &RawSelector) -> Option<Selector> {
    let at = [Seg::Key("discover"), Seg::Index(si)];
    let sub = |key: &'static str| [Seg::Key("discover"), Seg::Index(si), Seg::Key(key)];
    let before = cx.errors.len();
    let mut zones = Vec::new();
    match sel.zones.as_deref() {
        None | Some([]) => {
            cx.err(path(&at), "discover entry has no `zones`: list the zones to look in, e.g. [sh1a, pek3]")
        }
        Some(list) => {
            for (zi, z) in list.iter().enumerate() {
                let mut p = sub("zones").to_vec();
                p.push(Seg::Index(zi));
                if let Some(z) = cx.parse(z.trim(), Zone::parse, &p) {
                    if !zones.contains(&z) {
                        zones.push(z);
                    }
                }
            }
        }
    }
    let mut tags = Vec::new();
    for (ti, t) in sel.tags.iter().flatten().enumerate() {
        let mut p = sub("tags").to_vec();
        p.push(Seg::Index(ti));
        let t = t.trim();
        if t.is_empty() {
            cx.err(p, "tag name is empty");
        } else if t.chars().any(char::is_control) {
            cx.err(p, "tag name holds a control character");
        } else if !tags.iter().any(|have| have == t) {
            tags.push(t.to_owned());
        }
    }
    if let Some(re) = sel.name_matches.as_deref() {
        if let Err(e) = regex::Regex::new(re) {
            let first = e.to_string().lines().last().unwrap_or_default().trim().to_owned();
            cx.err(sub("name_matches").to_vec(), format!("name_matches {re:?} is not a regular expression: {first}"));
        }
    }
    let account = cx.account(sel.account.as_deref(), &at);
    let mut users = Vec::new();
    let list = sel.users.as_deref().unwrap_or_default();
    if list.is_empty() {
        cx.err(path(&at), "discover entry lists no users");
    }
    for (ui, a) in list.iter().enumerate() {
        let mut uat = sub("users").to_vec();
        uat.push(Seg::Index(ui));
        let entry = match a {
            RawAccount::Short(u) => {
                let user = cx.parse(u, UserName::parse, &uat);
                let host = cx.host(None, &uat);
                (user, host, None, cx.due_by, true)
            }
            RawAccount::Full(f) => {
                let mut user_at = uat.clone();
                user_at.push(Seg::Key("user"));
                let user = match f.user.as_deref() {
                    Some(u) => cx.parse(u, UserName::parse, &user_at),
                    None => {
                        cx.err(uat.clone(), "account has no `user`");
                        None
                    }
                };
                let host = cx.host(f.host.as_deref(), &uat);
                let (nb, due, ok) = cx.dates(f.not_before.as_deref(), f.due_by.as_deref(), &uat);
                (user, host, nb, due, ok)
            }
        };
        if let (Some(user), Some(host), nb, due, true) = entry {
            users.push(SelectorUser { user, host, not_before: nb, due_by: due });
        }
    }
    let account = account?;
    (cx.errors.len() == before).then(|| Selector {
        source: format!("discover[{si}]"),
        zones,
        tags,
        name_matches: sel.name_matches.clone(),
        users,
        account,
    })
}
