//! Benchmark baseline: the same deletions driven the way the official SDK's `wait_job` drives
//! them — one `RunClusterCustomService` per account, then one `DescribeJobs` per job every 2 s
//! until it finishes. Used by `benches/runner.sh` and `benches/polling.py` to compare API calls
//! per deleted account. `--interval` scales the 2 s for simulated jobs that are scaled down too.
//!
//! Usage: sdk_style --endpoint URL --manifest FILE [--concurrency N] [--interval DUR]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use qc_offboard::qingcloud::client::Client;
use qc_offboard::qingcloud::config::{Credentials, Settings};
use qc_offboard::qingcloud::types::{DelUserParams, DEL_USER, ROLE_MAININSTANCE};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoint = arg("--endpoint").ok_or_else(|| anyhow::anyhow!("--endpoint URL is required"))?;
    let manifest = arg("--manifest").ok_or_else(|| anyhow::anyhow!("--manifest FILE is required"))?;
    let concurrency: usize = arg("--concurrency").map(|c| c.parse()).transpose()?.unwrap_or(20);
    let interval =
        arg("--interval").map(|i| humantime::parse_duration(&i)).transpose()?.unwrap_or(Duration::from_secs(2));
    let set = qc_offboard::manifest::load_set(&[manifest.into()], None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let settings = Settings::new(endpoint.parse()?, Credentials::new("QYACCESSKEYIDEXAMPLE", "SECRETACCESSKEY"));
    let client = Arc::new(Client::new(&settings)?);

    // One worker per cluster (jobs on a cluster run one at a time), `concurrency` at once.
    let mut by_cluster: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for t in set.tasks {
        by_cluster.entry(t.cluster.to_string()).or_default().push(t);
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = std::time::Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for (_, tasks) in by_cluster {
        let client = Arc::clone(&client);
        let permits = Arc::clone(&permits);
        workers.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            let mut deleted = 0u32;
            for t in tasks {
                let params = DelUserParams::new(t.user.as_str(), t.host.as_str());
                let call =
                    client.run_cluster_custom_service(&t.cluster, &t.zone, ROLE_MAININSTANCE, DEL_USER, &params).await;
                let Ok(resp) = call.result else { continue };
                loop {
                    tokio::time::sleep(interval).await;
                    let calls = client.describe_jobs(&t.zone, std::slice::from_ref(&resp.job_id)).await;
                    let status = calls
                        .into_iter()
                        .find_map(|c| c.result.ok())
                        .and_then(|r| r.job_set.into_iter().next())
                        .map(|j| j.status);
                    match status {
                        Some(s) if s.is_running() => continue,
                        Some(s) => {
                            deleted += u32::from(s.is_success());
                            break;
                        }
                        None => continue,
                    }
                }
            }
            deleted
        });
    }
    let mut deleted = 0;
    while let Some(n) = workers.join_next().await {
        deleted += n?;
    }
    println!("sdk_style: deleted={deleted} elapsed_s={:.1}", started.elapsed().as_secs_f64());
    Ok(())
}
