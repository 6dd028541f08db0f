//! What an entry inherits from its file, and the checks of the values it may give itself: a
//! cluster's zone (its own, `defaults.zone`, its account's, the caller's fallback), its
//! QingCloud account, an account's host (`defaults.host`, else `%`) and dates (`due_by` falls
//! back to the file's; `not_before` may not be after it). Every refusal is collected with the
//! YAML path of the node at fault.
//!
//! It checks values it is handed; it walks no document.

use chrono::{DateTime, NaiveDate, Utc};

use crate::domain::{AccountName, HostSpec, Zone};
use crate::manifest::locate::{Seg, YamlPath};

/// Host of an account when neither the account nor `defaults.host` gives one: any host, as in
/// MySQL's own `'user'@'%'`.
pub const DEFAULT_HOST: &str = "%";

/// A value given once for the whole file: present, absent, or present but refused (already
/// reported, so entries that would inherit it report nothing more).
pub(super) enum Inherited<T> {
    Given(T),
    Absent,
    Refused,
}

pub(super) struct Ctx<'a> {
    pub(super) errors: Vec<(YamlPath, String)>,
    pub(super) zone: Inherited<Zone>,
    pub(super) host: Inherited<HostSpec>,
    pub(super) fallback_zone: Option<&'a Zone>,
    /// Zones of named accounts, for their clusters that give none.
    pub(super) account_zones: &'a std::collections::HashMap<AccountName, Zone>,
    pub(super) due_by: Option<DateTime<Utc>>,
    /// The file's `account` (`None`: the default account).
    pub(super) account: Inherited<AccountName>,
}

pub(super) fn path(segs: &[Seg]) -> YamlPath {
    segs.to_vec()
}

impl Ctx<'_> {
    pub(super) fn err(&mut self, at: YamlPath, reason: impl Into<String>) {
        self.errors.push((at, reason.into()));
    }

    /// Parse `value` with `parse`, reporting a refusal at `at`.
    pub(super) fn parse<T>(&mut self, value: &str, parse: fn(&str) -> Result<T, String>, at: &[Seg]) -> Option<T> {
        match parse(value) {
            Ok(v) => Some(v),
            Err(why) => {
                self.err(path(at), why);
                None
            }
        }
    }

    /// A cluster's zone: its own, else `defaults.zone`, else its account's, else the caller's
    /// fallback.
    pub(super) fn zone_of(
        &mut self,
        own: Option<&str>,
        at: &[Seg],
        cluster: &str,
        account: Option<&Option<AccountName>>,
    ) -> Option<Zone> {
        if own.is_none() && matches!(self.zone, Inherited::Absent) {
            if let Some(z) = account.and_then(Option::as_ref).and_then(|a| self.account_zones.get(a)) {
                return Some(z.clone());
            }
        }
        self.zone(own, at, cluster)
    }

    /// A cluster's zone: its own, else `defaults.zone`, else the caller's fallback.
    pub(super) fn zone(&mut self, own: Option<&str>, at: &[Seg], cluster: &str) -> Option<Zone> {
        if let Some(z) = own {
            let mut p = path(at);
            p.push(Seg::Key("zone"));
            return self.parse(z, Zone::parse, &p);
        }
        match &self.zone {
            Inherited::Given(z) => Some(z.clone()),
            Inherited::Refused => None,
            Inherited::Absent => match self.fallback_zone {
                Some(z) => Some(z.clone()),
                None => {
                    self.err(
                        path(at),
                        format!(
                            "zone missing for cluster {cluster:?}: give `zone:` here or in `defaults`, or set QINGCLOUD_ZONE"
                        ),
                    );
                    None
                }
            },
        }
    }

    /// A cluster's QingCloud account: its own, else the file's, else the default account
    /// (`Some(None)`). `None` when a value was refused (already reported).
    pub(super) fn account(&mut self, own: Option<&str>, at: &[Seg]) -> Option<Option<AccountName>> {
        if let Some(a) = own {
            let mut p = path(at);
            p.push(Seg::Key("account"));
            return self.parse(a.trim(), AccountName::parse, &p).map(|a| (!a.is_default()).then_some(a));
        }
        match &self.account {
            Inherited::Given(a) => Some(Some(a.clone())),
            Inherited::Refused => None,
            Inherited::Absent => Some(None),
        }
    }

    /// An account's host: its own, else `defaults.host`, else `%`.
    pub(super) fn host(&mut self, own: Option<&str>, at: &[Seg]) -> Option<HostSpec> {
        if let Some(h) = own {
            let mut p = path(at);
            p.push(Seg::Key("host"));
            return self.parse(h, HostSpec::parse, &p);
        }
        match &self.host {
            Inherited::Given(h) => Some(h.clone()),
            Inherited::Refused => None,
            // DEFAULT_HOST is the constant "%", which every host rule accepts.
            Inherited::Absent => Some(HostSpec::parse(DEFAULT_HOST).expect("% is a valid host")),
        }
    }

    /// `not_before` and `due_by` of one account; `due_by` falls back to the file's.
    pub(super) fn dates(
        &mut self,
        not_before: Option<&str>,
        due_by: Option<&str>,
        at: &[Seg],
    ) -> (Option<NaiveDate>, Option<DateTime<Utc>>, bool) {
        let mut ok = true;
        let nb = not_before.and_then(|s| {
            let mut p = path(at);
            p.push(Seg::Key("not_before"));
            let d = self.parse(s, parse_date, &p);
            ok &= d.is_some();
            d
        });
        let due = match due_by {
            Some(s) => {
                let mut p = path(at);
                p.push(Seg::Key("due_by"));
                let d = self.parse(s, parse_instant, &p);
                ok &= d.is_some();
                d
            }
            None => self.due_by,
        };
        if let (Some(nb), Some(due)) = (nb, due) {
            if due < nb.and_time(chrono::NaiveTime::MIN).and_utc() {
                let mut p = path(at);
                p.push(Seg::Key("not_before"));
                self.err(
                    p,
                    format!(
                        "not_before {nb} is after due_by {}: the task could never be done on time; give this entry its own due_by",
                        due.format("%Y-%m-%dT%H:%M:%SZ")
                    ),
                );
                ok = false;
            }
        }
        (nb, due, ok)
    }
}

/// `not_before`: a calendar date, read as UTC.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|e| format!("date {s:?} does not parse ({e}); write YYYY-MM-DD, e.g. 2026-12-01"))
}

/// `due_by`: an RFC 3339 instant, kept in UTC.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| format!("time {s:?} does not parse ({e}); write RFC 3339, e.g. 2026-11-28T12:00:00Z"))
}
