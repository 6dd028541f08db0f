//! The clusters and accounts the jobs act on: which cluster exists in which zone, which
//! accounts exist now, and what statistics show of them. In the auto world a well-formed
//! cluster exists in the zone it is first addressed in, and an account nobody has named yet
//! exists.
//!
//! It answers and notes; creating and settling jobs is the book's (`jobs`).

use crate::sim::stats::AccountStats;
use crate::sim::world::check_cluster_id;

use super::{AccountKey, AccountRec, Book};

impl Book {
    /// Does the account exist now (call after `settle`)? In the auto world an account nobody
    /// has named yet exists.
    pub fn account_exists(&self, cluster: &str, user: &str, host: &str) -> bool {
        let key: AccountKey = (cluster.to_owned(), user.to_owned(), host.to_owned());
        self.accounts.get(&key).map_or(self.auto, |a| a.exists)
    }

    /// Remember an account a refused request named, so statistics show it.
    pub fn note_account(&mut self, cluster: &str, zone: &str, user: &str, host: &str) {
        let key: AccountKey = (cluster.to_owned(), user.to_owned(), host.to_owned());
        let auto = self.auto;
        self.accounts.entry(key).or_insert_with(|| AccountRec {
            zone: zone.to_owned(),
            exists: auto,
            del_user_accepted: 0,
            deleted_by: None,
        });
    }

    /// Does `cluster` exist in `zone`? In the auto world every well-formed cluster exists, in
    /// the zone it is first addressed in.
    pub fn cluster_in_zone(&mut self, cluster: &str, zone: &str) -> bool {
        match self.clusters.get(cluster) {
            Some(z) => z == zone,
            None if self.auto && check_cluster_id(cluster).is_ok() => {
                self.clusters.insert(cluster.to_owned(), zone.to_owned());
                true
            }
            None => false,
        }
    }

    /// The clusters known in `zone`, sorted by id (the auto world's: those addressed so far).
    pub fn clusters_in_zone(&self, zone: &str) -> Vec<String> {
        let mut ids: Vec<String> = self.clusters.iter().filter(|(_, z)| *z == zone).map(|(id, _)| id.clone()).collect();
        ids.sort_unstable();
        ids
    }

    pub fn accounts(&self) -> Vec<AccountStats> {
        self.accounts
            .iter()
            .map(|((cluster, user, host), a)| AccountStats {
                cluster: cluster.clone(),
                zone: a.zone.clone(),
                user: user.clone(),
                host: host.clone(),
                exists: a.exists,
                del_user_accepted: a.del_user_accepted,
                deleted_by: a.deleted_by.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{book, LISTED};

    #[test]
    fn the_auto_world_places_clusters_where_first_seen() {
        let mut b = book("{}");
        assert!(b.cluster_in_zone("cl-x1", "pek3a"));
        assert!(!b.cluster_in_zone("cl-x1", "sh1a"));
        assert!(!b.cluster_in_zone("i-instance", "sh1a"));
        let mut listed = book(LISTED);
        assert!(!listed.cluster_in_zone("cl-b", "sh1a"));
        assert!(!listed.cluster_in_zone("cl-a", "pek3a"));
    }
}
