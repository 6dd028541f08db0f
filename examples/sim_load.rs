//! Load generator for the simulator: N concurrent keep-alive clients send freshly signed
//! requests (9 `DescribeJobs` for each `RunClusterCustomService`/`del_user`) for a while, then
//! print the sustained rate, ret_codes and latency percentiles.
//!
//! Against a running simulator:
//!   cargo run --release --example sim_load -- --endpoint http://127.0.0.1:8787/iaas/
//! Or with a simulator started in-process (auto world, fast jobs):
//!   cargo run --release --example sim_load

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use qc_offboard::qingcloud::signer::{self, Method, SignatureMethod};
use qc_offboard::qingcloud::types::DelUserParams;
use qc_offboard::sim::{self, World, DEFAULT_ACCESS_KEY_ID, DEFAULT_SECRET_ACCESS_KEY};

#[derive(Debug, Parser)]
struct Args {
    /// Simulator endpoint [default: start one in-process on a free port]
    #[arg(long)]
    endpoint: Option<String>,
    /// Concurrent clients, each on its own keep-alive connection
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to send
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value = DEFAULT_ACCESS_KEY_ID)]
    access_key: String,
    #[arg(long, default_value = DEFAULT_SECRET_ACCESS_KEY)]
    secret: String,
}

#[derive(Default)]
struct Tally {
    ret_codes: BTreeMap<i64, u64>,
    errors: u64,
    latencies_us: Vec<u32>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let local = match &args.endpoint {
        Some(_) => None,
        None => Some(sim::start(World::auto_fast(), "127.0.0.1:0".parse()?).await?),
    };
    let endpoint = args.endpoint.clone().or_else(|| local.as_ref().map(|s| s.endpoint())).unwrap_or_default();
    let path = url::Url::parse(&endpoint)?.path().to_owned();

    let started = Instant::now();
    let until = started + args.duration;
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.concurrency {
        let (endpoint, path) = (endpoint.clone(), path.clone());
        let (ak, sk) = (args.access_key.clone(), args.secret.clone());
        workers.spawn(async move {
            let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(1).build().expect("client");
            let mut tally = Tally::default();
            let mut last_job = String::new();
            let mut i = 0u64;
            while Instant::now() < until {
                let mut params;
                if i % 10 == 0 || last_job.is_empty() {
                    params = signer::common_params(
                        "RunClusterCustomService",
                        "sh1a",
                        &ak,
                        Utc::now(),
                        SignatureMethod::HmacSha256,
                    );
                    let sp = DelUserParams::new(&format!("load{w}x{i}"), "%").to_json();
                    for (k, v) in [("cluster", "cl-load"), ("role", "maininstance"), ("service", "del_user")] {
                        params.push((k.to_owned(), v.to_owned()));
                    }
                    params.push(("service_params".to_owned(), sp));
                } else {
                    params =
                        signer::common_params("DescribeJobs", "sh1a", &ak, Utc::now(), SignatureMethod::HmacSha256);
                    params.push(("jobs.1".to_owned(), last_job.clone()));
                    params.push(("limit".to_owned(), "1".to_owned()));
                }
                let signed = signer::sign(Method::Get, &path, &params, sk.as_bytes(), SignatureMethod::HmacSha256);
                let t = Instant::now();
                let outcome = async {
                    let body = http.get(format!("{endpoint}?{}", signed.query_string())).send().await?.bytes().await?;
                    Ok::<_, reqwest::Error>(body)
                }
                .await;
                tally.latencies_us.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                match outcome.ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()) {
                    Some(v) => {
                        let code = v["ret_code"].as_i64().unwrap_or(-1);
                        *tally.ret_codes.entry(code).or_default() += 1;
                        if let Some(id) = v["job_id"].as_str() {
                            last_job = id.to_owned();
                        }
                    }
                    None => tally.errors += 1,
                }
                i += 1;
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(t) = workers.join_next().await {
        let t = t?;
        for (k, v) in t.ret_codes {
            *total.ret_codes.entry(k).or_default() += v;
        }
        total.errors += t.errors;
        total.latencies_us.extend(t.latencies_us);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = total.latencies_us.len();
    total.latencies_us.sort_unstable();
    let pct = |p: f64| total.latencies_us.get(((n as f64 * p) as usize).min(n.saturating_sub(1))).copied().unwrap_or(0);
    println!("endpoint     {endpoint}");
    println!("concurrency  {}", args.concurrency);
    println!("requests     {n} in {elapsed:.2} s = {:.0} req/s", n as f64 / elapsed);
    println!("ret_codes    {:?}   transport errors {}", total.ret_codes, total.errors);
    println!("latency      p50 {} µs   p99 {} µs   max {} µs", pct(0.50), pct(0.99), pct(1.0));
    if let Some(local) = local {
        local.shutdown().await;
    }
    Ok(())
}
