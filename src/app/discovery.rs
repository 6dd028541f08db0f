//! The QingCloud accounts a set of manifests names, and its `discover:` selectors expanded into
//! tasks through each account's API — shared by `plan` (which shows and pins what is found now)
//! and `run` (which runs it).
//!
//! Nothing here decides what a task's state is (that is `plan`'s) or records anything.

use crate::discover::{self, Discovery};
use crate::limiter::Rate;
use crate::manifest::{AccountName, ManifestSet, Selector};

use super::target::Target;

/// Expand the `discover:` selectors of `target`'s account into tasks of `set`, with the
/// account's client and limiter; `None` when the account has none.
pub async fn discover_for(
    set: &mut ManifestSet,
    target: &Target,
    rate: Rate,
    burst: u32,
) -> anyhow::Result<Option<Discovery>> {
    let selectors: Vec<&Selector> = set.selectors.iter().filter(|s| s.account_name() == target.account).collect();
    if selectors.is_empty() {
        return Ok(None);
    }
    let client = target.client(rate, burst)?;
    let found = discover::expand(&client, &selectors).await.map_err(discover::DiscoverError::into_coded)?;
    let added = discover::merge_into(set, &found);
    tracing::info!(
        account = %target.account,
        clusters = found.found.len(),
        tasks = added,
        calls = found.calls.len(),
        "discover: clusters found"
    );
    for f in &found.passed_over {
        tracing::warn!(
            cluster = %f.cluster,
            zone = %f.zone,
            status = %f.status,
            "discover: a matching MySQL Plus cluster is not active and was not selected; its accounts stay"
        );
    }
    Ok(Some(found))
}

/// The accounts the tasks and selectors of `set` belong to, in the order first met.
pub fn accounts_of(set: &ManifestSet) -> Vec<AccountName> {
    let mut out: Vec<AccountName> = Vec::new();
    for a in set.tasks.iter().map(|t| t.account_name()).chain(set.selectors.iter().map(|s| s.account_name())) {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    if out.is_empty() {
        out.push(AccountName::default_account());
    }
    out
}
