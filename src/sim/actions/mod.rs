//! The API's actions, one file each: `RunClusterCustomService` (`del_user`), `DescribeJobs`,
//! and `DescribeClusters` with `DescribeTags`. Each takes the parameters of an authenticated
//! request that the quota admitted and returns the JSON answer or a refusal.
//!
//! Actions read the checked world and change only the [`Cloud`] they are handed; they know
//! nothing of signatures, quotas, faults or HTTP.

pub mod custom_service;
pub mod describe_clusters;
pub mod describe_jobs;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::clock::Now;
use super::jobs::Book;
use super::world::Model;

/// `limit` of the Describe actions: default and ceiling (larger values are clamped, as list
/// APIs do).
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;

/// What the actions change: the book of clusters, accounts and jobs, and the random streams
/// jobs are drawn from.
pub struct Cloud {
    pub book: Book,
    /// Job ids and fail draws.
    jobs_rng: StdRng,
    /// Draws of job durations and listing positions: a stream of its own, so that worlds
    /// without a duration range or a random order keep the job ids of earlier versions.
    extra_rng: StdRng,
}

impl Cloud {
    pub fn new(model: &Model, seed: u64) -> Self {
        Self {
            // A separate stream from the faults', so job ids and fail draws do not shift the
            // fault sequence.
            jobs_rng: StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
            extra_rng: StdRng::seed_from_u64(seed ^ 0x6a09_e667_f3bc_c908),
            book: Book::new(model),
        }
    }

    /// Give the owner its unrelated jobs in the zone, if the world asks for them.
    fn seed_zone(&mut self, zone: &str, owner: &str, now: Now) {
        let Self { book, extra_rng, .. } = self;
        book.seed_zone(zone, owner, now, |b| loop {
            let id = new_job_id(extra_rng);
            if !b.has_job(&id) {
                break id;
            }
        });
    }
}

/// `j-` and 11 lower-case letters or digits, like `j-fcz8mvls4pr`.
fn new_job_id(rng: &mut StdRng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let tail: String = (0..11).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("j-{tail}")
}
