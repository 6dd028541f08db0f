//! The checked manifest: tasks and `discover:` selectors, built from the raw YAML by `check`
//! out of the domain types of [`crate::domain`]. Nothing downstream checks them again.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::domain::{AccountName, ClusterId, HostSpec, TaskKey, UserName, Zone};

/// One unit of work: remove `account` from `cluster` in `zone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    pub cluster: ClusterId,
    pub zone: Zone,
    pub user: UserName,
    pub host: HostSpec,
    /// Skip until this date (UTC).
    pub not_before: Option<NaiveDate>,
    /// Deadline; `report` marks tasks finished after it as late.
    pub due_by: Option<DateTime<Utc>>,
    /// The QingCloud account (config profile) the cluster belongs to; `None` is the default
    /// account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountName>,
}

/// One account of a `discover:` selector, with its dates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelectorUser {
    pub user: UserName,
    pub host: HostSpec,
    pub not_before: Option<NaiveDate>,
    pub due_by: Option<DateTime<Utc>>,
}

/// `discover[i]`: every active MySQL Plus cluster in `zones` that carries every tag of `tags`
/// and whose name matches `name_matches`, each with every account of `users`. Expanded into
/// ordinary tasks through the API by `plan` and `run` (see `crate::discover`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Selector {
    /// Where it was written: `FILE: discover[i]`.
    pub source: String,
    pub zones: Vec<Zone>,
    /// Tag names (not ids).
    pub tags: Vec<String>,
    /// The regular expression's source; checked to compile when the manifest was loaded.
    pub name_matches: Option<String>,
    pub users: Vec<SelectorUser>,
    /// The QingCloud account; `None` is the default account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountName>,
}

impl Selector {
    /// The account this selector looks in.
    pub fn account_name(&self) -> AccountName {
        self.account.clone().unwrap_or_else(AccountName::default_account)
    }
}

impl Task {
    /// The account this task runs under.
    pub fn account_name(&self) -> AccountName {
        self.account.clone().unwrap_or_else(AccountName::default_account)
    }

    pub fn key(&self) -> TaskKey {
        TaskKey { cluster: self.cluster.clone(), user: self.user.clone(), host: self.host.clone() }
    }

    /// Not due yet on `today` (UTC)?
    pub fn is_not_due(&self, today: NaiveDate) -> bool {
        self.not_before.is_some_and(|d| d > today)
    }
}
