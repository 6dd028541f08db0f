//! The poll scheduler against the simulator: how many `DescribeJobs` a run spends. Bounds on
//! call counts, with room for a slow machine; no timing is asserted.

use crate::runner::{assert_all_deleted_exactly_once, code, manifest_text, run_calls, text, Rig};

/// Jobs of a fixed 300 ms.
const WORLD: &str = "jobs: {pending_ms: 100, working_ms: 200}\n";

fn polls(rig: &Rig) -> u64 {
    rig.stats().requests_of("DescribeJobs")
}

/// One cluster, one job at a time: once the first job has shown how long jobs take, every
/// later job is polled once, when it should have ended. (Polling on a timer, as before, spent
/// three rounds on each.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cluster_costs_one_poll_per_job_once_durations_are_known() {
    let users = 12;
    let rig = Rig::new(WORLD, &manifest_text(1, users, &["sh1a"])).await;
    let out = rig.run(&[]).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let stats = rig.stats();
    assert_all_deleted_exactly_once(&stats, users);
    assert_eq!(run_calls(&stats), users as u64);
    // The first job is probed (50 ms · 2, 4, 8: three rounds); each later one needs one.
    let spent = polls(&rig);
    assert!(spent <= users as u64 + 4, "{spent} DescribeJobs for {users} jobs: {:?}", stats.requests_by_action);
}

/// A later run starts from how long the account's jobs took before: its first job is not
/// probed at the poll interval but looked at when jobs like it have ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_run_starts_from_the_durations_of_earlier_runs() {
    let rig = Rig::new(WORLD, &manifest_text(1, 4, &["sh1a"])).await;
    let out = rig.run(&[]).await;
    assert_eq!(code(&out), 0, "stderr: {}", text(&out.stderr));
    let before = polls(&rig);
    // The same account, another cluster: nothing is skipped, nothing known of this run's jobs.
    let other = rig.home.path().join("other.yaml");
    std::fs::write(&other, manifest_text(1, 3, &["sh1a"]).replace("cl-t000", "cl-t100")).expect("write manifest");
    let out = Rig::output(rig.cmd(&[
        "run",
        other.to_str().expect("utf-8 path"),
        "--poll-interval",
        "50ms",
        "--rate",
        "200/s",
    ]))
    .await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let spent = polls(&rig) - before;
    // One poll per job, and one to spare for a slow moment; probing from zero would take three
    // rounds for the first job alone.
    assert!(spent <= 4, "{spent} DescribeJobs for 3 jobs of a known duration");
}

/// Jobs whose end lets nothing else go are not polled while they run: the run's last jobs
/// over many clusters are settled together, one call per zone, not round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_jobs_of_a_run_share_their_rounds() {
    let clusters = 40;
    let rig = Rig::new(WORLD, &manifest_text(clusters, 1, &["sh1a", "pek3"])).await;
    let out = rig.run(&["--max-in-flight", "40"]).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let stats = rig.stats();
    assert_all_deleted_exactly_once(&stats, clusters);
    // Probing finds the jobs ended in three rounds of two calls (one per zone); a job still
    // running at the last of them may need one more.
    let spent = polls(&rig);
    assert!(spent <= 10, "{spent} DescribeJobs for {clusters} jobs in two zones: {:?}", stats.requests_by_action);
}
