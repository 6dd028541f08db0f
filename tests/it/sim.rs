//! The simulator over real TCP: signatures, both actions, job lifecycles, quota, every fault
//! kind, seeded repeatability, statistics, and the `sim` binary.

use std::time::Duration;

use chrono::Utc;
use qc_offboard::qingcloud::signer::{Method, SignatureMethod};
use qc_offboard::qingcloud::types::ret;
use qc_offboard::sim::{Fault, Stats, ERROR_NO_SUCH_ACCOUNT};
use serde_json::Value;

use crate::helpers::{eventually, start_sim, world, Api, SimProcess};

const CLUSTERS: &str = r#"
clusters:
  - id: cl-a
    zone: sh1a
    users: ["bob@%", "carol@10.0.0.%"]
  - id: cl-b
    zone: pek3a
    users: ["bob@%"]
"#;

fn code(v: &Value) -> i64 {
    v["ret_code"].as_i64().unwrap_or_else(|| panic!("no ret_code in {v}"))
}

fn job_id(v: &Value) -> String {
    assert_eq!(code(v), 0, "{v}");
    v["job_id"].as_str().expect("job_id").to_owned()
}

fn ids(v: &Value) -> Vec<String> {
    v["job_set"].as_array().expect("job_set").iter().map(|j| j["job_id"].as_str().unwrap().to_owned()).collect()
}

/// Wait until the job is no longer pending or working; return its job_set entry.
async fn final_job(api: &Api, zone: &str, id: &str) -> Value {
    eventually(&format!("job {id} to end"), || async move {
        let r = api.describe_jobs(zone, &[("jobs.1", id)]).await.expect("DescribeJobs");
        let job = r["job_set"][0].clone();
        (job["status"] != "pending" && job["status"] != "working").then_some(job)
    })
    .await
}

/// Does the error (or anything under it) say the peer reset the connection?
fn is_reset(err: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionReset) {
            return true;
        }
        cause = e.source();
    }
    false
}

#[tokio::test]
async fn correctly_signed_requests_are_accepted_on_every_method_path_and_algorithm() {
    let sim = start_sim(world("{}")).await;
    let base = sim.endpoint();
    let no_slash = base.trim_end_matches('/').to_owned();
    for (endpoint, method, alg) in [
        (&base, Method::Get, SignatureMethod::HmacSha256),
        (&base, Method::Post, SignatureMethod::HmacSha256),
        (&no_slash, Method::Get, SignatureMethod::HmacSha256),
        (&no_slash, Method::Post, SignatureMethod::HmacSha1),
        (&base, Method::Get, SignatureMethod::HmacSha1),
    ] {
        let api = Api { method, alg, ..Api::new(endpoint) };
        let r = api.describe_jobs("sh1a", &[("verbose", "0")]).await.unwrap();
        assert_eq!(code(&r), 0, "{endpoint} {method:?} {alg:?}: {r}");
        assert_eq!(r["action"], "DescribeJobsResponse");
        // A value that needs escaping (`%`, `{`, `"`) survives both encodings.
        let r = api.del_user("sh1a", "cl-x1", &format!("u-{}", method.as_str()), "10.0.0.%").await.unwrap();
        assert_eq!(r["action"], "RunClusterCustomServiceResponse");
        assert_eq!(r["service"], "del_user");
        assert_eq!(r["role"], "maininstance");
        assert_eq!(r["cluster_id"], "cl-x1");
        assert!(r["job_id"].as_str().unwrap().starts_with("j-"), "{r}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn authentication_time_and_parameter_errors() {
    let sim = start_sim(world("credentials: [{access_key_id: AK1, secret_access_key: right}]")).await;
    let good = Api { access_key: "AK1".into(), secret: "right".into(), ..Api::new(&sim.endpoint()) };
    assert_eq!(code(&good.describe_jobs("sh1a", &[]).await.unwrap()), 0);

    let wrong_secret = Api { secret: "wrong".into(), ..good.clone() };
    let r = wrong_secret.describe_jobs("sh1a", &[]).await.unwrap();
    assert_eq!((code(&r), r["message"].as_str().unwrap()), (ret::AUTH_FAILED, "AuthFailure, signature not matched"));
    let unknown_key = Api::new(&sim.endpoint());
    assert_eq!(code(&unknown_key.describe_jobs("sh1a", &[]).await.unwrap()), ret::AUTH_FAILED);

    // A signature over other parameters than those sent.
    let mut tampered = good.signed("DescribeJobs", "sh1a", &[], Utc::now());
    tampered.iter_mut().find(|(k, _)| k == "zone").unwrap().1 = "pek3a".into();
    let body: Value = serde_json::from_slice(&good.send(&tampered).await.unwrap().bytes().await.unwrap()).unwrap();
    assert_eq!(code(&body), ret::AUTH_FAILED);

    for skew in [-120, 90] {
        let stale = good.signed("DescribeJobs", "sh1a", &[], Utc::now() + chrono::Duration::seconds(skew));
        let body: Value = serde_json::from_slice(&good.send(&stale).await.unwrap().bytes().await.unwrap()).unwrap();
        assert_eq!(code(&body), ret::EXPIRED, "skew {skew}: {body}");
    }

    let mut unsigned = good.signed("DescribeJobs", "sh1a", &[], Utc::now());
    unsigned.retain(|(k, _)| k != "signature");
    let body: Value = serde_json::from_slice(&good.send(&unsigned).await.unwrap().bytes().await.unwrap()).unwrap();
    assert_eq!(
        (code(&body), body["message"].as_str().unwrap()),
        (ret::MALFORMED, "ParameterError, missing parameter [signature]")
    );

    let r = good.call("DescribeJobs", "", &[]).await.unwrap();
    assert_eq!(code(&r), ret::MALFORMED, "missing zone: {r}");
    // Unknown actions, and errors in general, answer as the service does: no `action`.
    let r = good.call("RunInstances", "sh1a", &[]).await.unwrap();
    assert_eq!(r, serde_json::json!({"message": "PermissionDenied, can't handle this request", "ret_code": 1400}));
    let r = good.call("RunClusterCustomService", "sh1a", &[("cluster", "cl-a")]).await.unwrap();
    assert_eq!(
        (code(&r), r["message"].as_str().unwrap()),
        (ret::MALFORMED, "ParameterError, missing parameter [service]")
    );
    let bad_params =
        [("cluster", "cl-a"), ("role", "maininstance"), ("service", "del_user"), ("service_params", "bob")];
    assert_eq!(code(&good.call("RunClusterCustomService", "sh1a", &bad_params).await.unwrap()), ret::MALFORMED);

    let stats = sim.stats();
    assert_eq!(stats.ret_code(ret::AUTH_FAILED), 3);
    assert_eq!(stats.ret_code(ret::EXPIRED), 2);
    assert_eq!(stats.ret_code(ret::MALFORMED), 4);
    assert_eq!(stats.ret_code(ret::ACCESS_DENIED), 1);
    assert_eq!(stats.ret_code(ret::OK), 1);
    assert_eq!(stats.requests_total, 11);
    sim.shutdown().await;
}

#[tokio::test]
async fn del_user_deletes_an_existing_account_and_fails_for_a_missing_one() {
    let sim = start_sim(world(&format!("{CLUSTERS}\njobs: {{pending_ms: 100, working_ms: 150}}"))).await;
    let api = Api::new(&sim.endpoint());

    let bob = job_id(&api.del_user("sh1a", "cl-a", "bob", "%").await.unwrap());
    let first = api.describe_jobs("sh1a", &[("jobs.1", &bob)]).await.unwrap();
    assert_eq!(first["job_set"][0]["status"], "pending", "{first}");
    let eve = job_id(&api.del_user("sh1a", "cl-a", "eve", "%").await.unwrap());
    // carol exists on 10.0.0.%, not on %: a different MySQL account.
    let carol = job_id(&api.del_user("sh1a", "cl-a", "carol", "%").await.unwrap());

    let done = final_job(&api, "sh1a", &bob).await;
    assert_eq!(done["status"], "successful", "{done}");
    assert_eq!(done["error_codes"], "");
    assert_eq!(done["resource_ids"], "cl-a");
    assert_eq!(done["job_action"], "RunClusterCustomService");
    assert!(done["owner"].as_str().unwrap().starts_with("usr-"));
    assert!(done["create_time"].as_str().unwrap().ends_with('Z'));
    assert!(done["status_time"].as_str().unwrap() >= done["create_time"].as_str().unwrap());
    let directive: Value = serde_json::from_str(done["directive"].as_str().unwrap()).unwrap();
    assert_eq!(directive["cluster"], "cl-a");
    assert_eq!(directive["zone"], "sh1a");
    assert_eq!(directive["service"], "del_user");
    assert_eq!(directive["service_params"], r#"{"host":"%","user":"bob"}"#);
    assert!(directive.get("signature").is_none());

    for missing in [&eve, &carol] {
        let failed = final_job(&api, "sh1a", missing).await;
        assert_eq!(failed["status"], "failed", "{failed}");
        assert_eq!(failed["error_codes"], ERROR_NO_SUCH_ACCOUNT);
    }
    // Deleting bob again: accepted, then failed, because he is gone.
    let again = job_id(&api.del_user("sh1a", "cl-a", "bob", "%").await.unwrap());
    assert_eq!(final_job(&api, "sh1a", &again).await["status"], "failed");

    let stats = api.sim_stats().await;
    let bob_a = stats.account("cl-a", "bob", "%").unwrap();
    assert!(!bob_a.exists);
    assert_eq!((bob_a.del_user_accepted, bob_a.zone.as_str()), (2, "sh1a"));
    assert_eq!(bob_a.deleted_by.as_deref(), Some(bob.as_str()));
    assert!(stats.account("cl-b", "bob", "%").unwrap().exists, "another cluster's bob is untouched");
    assert!(stats.account("cl-a", "carol", "10.0.0.%").unwrap().exists);
    let eve_a = stats.account("cl-a", "eve", "%").unwrap();
    assert!(!eve_a.exists);
    assert_eq!(eve_a.del_user_accepted, 1);
    assert_eq!(stats.jobs, 4);
    assert_eq!(stats.jobs_by_status.get("failed"), Some(&3));
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_clusters_zone_mismatches_and_protected_accounts_are_refused() {
    let sim = start_sim(world(CLUSTERS)).await;
    let api = Api::new(&sim.endpoint());
    let r = api.del_user("sh1a", "cl-nope", "bob", "%").await.unwrap();
    assert_eq!(code(&r), ret::NOT_FOUND, "{r}");
    let r = api.del_user("pek3a", "cl-a", "bob", "%").await.unwrap();
    assert_eq!(code(&r), ret::NOT_FOUND, "cl-a is in sh1a: {r}");
    for user in ["root", "qc_admin", "qc_repl", "qc_check"] {
        let r = api.del_user("sh1a", "cl-a", user, "%").await.unwrap();
        assert_eq!(code(&r), ret::ACCESS_DENIED, "{r}");
        assert_eq!(r["message"], format!("PermissionDenied, user [{user}] is protected and cannot be deleted"));
    }
    let stats = sim.stats();
    assert_eq!(stats.jobs, 0);
    assert!(stats.accounts.iter().all(|a| a.del_user_accepted == 0 && a.exists));
    sim.shutdown().await;

    // The auto world: any cl-* exists, in the zone it is first named in.
    let auto = start_sim(world("{}")).await;
    let api = Api::new(&auto.endpoint());
    assert_eq!(code(&api.del_user("gd2", "cl-zz9", "app", "%").await.unwrap()), 0);
    assert_eq!(code(&api.del_user("sh1a", "cl-zz9", "app", "%").await.unwrap()), ret::NOT_FOUND);
    assert_eq!(code(&api.del_user("gd2", "vol-1", "app", "%").await.unwrap()), ret::NOT_FOUND);
    assert_eq!(code(&api.del_user("gd2", "cl-zz9", "root", "%").await.unwrap()), ret::ACCESS_DENIED);
    auto.shutdown().await;
}

#[tokio::test]
async fn describe_jobs_pages_newest_first_and_stays_in_its_zone() {
    let sim = start_sim(world(
        "jobs: {pending_ms: 60000, working_ms: 1000}
credentials:
  - {access_key_id: QYACCESSKEYIDEXAMPLE, secret_access_key: SECRETACCESSKEY}
  - {access_key_id: OTHER, secret_access_key: other}",
    ))
    .await;
    let api = Api::new(&sim.endpoint());
    let mut sh1a = Vec::new();
    for i in 0..25 {
        sh1a.push(job_id(&api.del_user("sh1a", "cl-s", &format!("u{i}"), "%").await.unwrap()));
    }
    let mut pek3a = Vec::new();
    for i in 0..3 {
        pek3a.push(job_id(&api.del_user("pek3a", "cl-p", &format!("u{i}"), "%").await.unwrap()));
    }
    let newest_first: Vec<String> = sh1a.iter().rev().cloned().collect();

    let r = api.describe_jobs("sh1a", &[]).await.unwrap();
    assert_eq!(r["total_count"], 25);
    assert_eq!(ids(&r), newest_first[..20], "default limit 20, newest first");
    let r = api.describe_jobs("sh1a", &[("offset", "20"), ("limit", "10")]).await.unwrap();
    assert_eq!((r["total_count"].as_u64(), ids(&r)), (Some(25), newest_first[20..].to_vec()));
    let r = api.describe_jobs("sh1a", &[("offset", "3"), ("limit", "2")]).await.unwrap();
    assert_eq!(ids(&r), newest_first[3..5]);
    let r = api.describe_jobs("sh1a", &[("limit", "1000")]).await.unwrap();
    assert_eq!(ids(&r).len(), 25, "limit above 100 is clamped, not refused");
    let r = api.describe_jobs("sh1a", &[("limit", "-1")]).await.unwrap();
    assert_eq!(code(&r), ret::MALFORMED);

    let r = api.describe_jobs("pek3a", &[]).await.unwrap();
    assert_eq!((r["total_count"].as_u64(), ids(&r)), (Some(3), pek3a.iter().rev().cloned().collect::<Vec<_>>()));
    // jobs.N of another zone's job is an unknown job in this zone: the whole call is refused,
    // naming the first one.
    let r = api.describe_jobs("sh1a", &[("jobs.1", &pek3a[0]), ("jobs.2", &pek3a[1])]).await.unwrap();
    assert_eq!(r["message"].as_str(), Some(format!("ResourceNotFound, job [{}] not found", pek3a[0]).as_str()));
    assert_eq!(code(&r), ret::NOT_FOUND);
    let r = api.describe_jobs("sh1a", &[("jobs.1", &sh1a[0]), ("jobs.10", &sh1a[7])]).await.unwrap();
    assert_eq!(ids(&r), [sh1a[7].clone(), sh1a[0].clone()]);
    // Another access key's jobs are not visible either (it is another account).
    let other = Api { access_key: "OTHER".into(), secret: "other".into(), ..api.clone() };
    let r = other.describe_jobs("sh1a", &[]).await.unwrap();
    assert_eq!((code(&r), r["total_count"].as_u64()), (0, Some(0)));
    assert_eq!(code(&other.describe_jobs("sh1a", &[("jobs.1", &sh1a[0])]).await.unwrap()), ret::NOT_FOUND);
    sim.shutdown().await;
}

#[tokio::test]
async fn status_and_job_action_filters() {
    let sim = start_sim(world(&format!("{CLUSTERS}\njobs: {{pending_ms: 0, working_ms: 50}}"))).await;
    let api = Api::new(&sim.endpoint());
    let ok = job_id(&api.del_user("sh1a", "cl-a", "bob", "%").await.unwrap());
    let bad = job_id(&api.del_user("sh1a", "cl-a", "nobody", "%").await.unwrap());
    final_job(&api, "sh1a", &ok).await;
    final_job(&api, "sh1a", &bad).await;

    let r = api.describe_jobs("sh1a", &[("status.1", "failed")]).await.unwrap();
    assert_eq!(ids(&r), vec![bad.clone()]);
    let r = api.describe_jobs("sh1a", &[("status.1", "successful")]).await.unwrap();
    assert_eq!(ids(&r), vec![ok.clone()]);
    let r = api.describe_jobs("sh1a", &[("status.1", "successful"), ("status.2", "failed")]).await.unwrap();
    assert_eq!(r["total_count"], 2);
    let r = api.describe_jobs("sh1a", &[("status.1", "pending"), ("status.2", "working")]).await.unwrap();
    assert_eq!(r["total_count"], 0);
    let r = api.describe_jobs("sh1a", &[("status.1", "done")]).await.unwrap();
    assert_eq!(code(&r), ret::MALFORMED);
    let r = api.describe_jobs("sh1a", &[("job_action", "RunClusterCustomService")]).await.unwrap();
    assert_eq!(r["total_count"], 2);
    let r = api.describe_jobs("sh1a", &[("job_action", "StopClusters")]).await.unwrap();
    assert_eq!(r["total_count"], 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_quota_refuses_with_2500_and_recovers_after_the_window() {
    let sim = start_sim(world(
        "credentials: [{access_key_id: A, secret_access_key: a}, {access_key_id: B, secret_access_key: b}]\nquota: {requests: 3, window_s: 1}",
    ))
    .await;
    let a = Api { access_key: "A".into(), secret: "a".into(), ..Api::new(&sim.endpoint()) };
    let b = Api { access_key: "B".into(), secret: "b".into(), ..a.clone() };
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(code(&a.describe_jobs("sh1a", &[]).await.unwrap()));
    }
    assert_eq!(codes[..3], [0, 0, 0]);
    assert!(codes[3..].iter().all(|c| *c == ret::QUOTA_EXCEEDED), "{codes:?}");
    // The quota is per access key.
    assert_eq!(code(&b.describe_jobs("sh1a", &[]).await.unwrap()), 0);
    let a = &a;
    eventually("the quota window to pass", || async move {
        (code(&a.describe_jobs("sh1a", &[]).await.unwrap()) == 0).then_some(())
    })
    .await;
    assert!(sim.stats().ret_code(ret::QUOTA_EXCEEDED) >= 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn each_fault_kind_is_observable_by_a_client() {
    for (rate, fault) in [("busy_rate", Fault::Busy), ("internal_rate", Fault::Internal)] {
        let sim = start_sim(world(&format!("faults: {{{rate}: 1.0}}"))).await;
        let api = Api::new(&sim.endpoint());
        let r = api.del_user("sh1a", "cl-a", "bob", "%").await.unwrap();
        let expected = if fault == Fault::Busy { ret::BUSY } else { ret::INTERNAL };
        assert_eq!(code(&r), expected, "{r}");
        assert!(r.get("action").is_none() && r["message"].is_string(), "{r}");
        let stats = sim.stats();
        assert_eq!((stats.faults(fault), stats.ret_code(expected), stats.jobs), (1, 1, 0));
        sim.shutdown().await;
    }

    let sim = start_sim(world("faults: {http_502_rate: 1.0}")).await;
    let api = Api::new(&sim.endpoint());
    let resp = api.send(&api.signed("DescribeJobs", "sh1a", &[], Utc::now())).await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(sim.stats().faults(Fault::Http502), 1);
    sim.shutdown().await;

    let sim = start_sim(world("faults: {reset_rate: 1.0}")).await;
    let api = Api::new(&sim.endpoint());
    let err = api.del_user("sh1a", "cl-a", "bob", "%").await.unwrap_err();
    assert!(is_reset(&err), "expected a connection reset, got {err:?}");
    let stats = sim.stats();
    assert_eq!((stats.faults(Fault::Reset), stats.jobs), (1, 0), "a reset request has no effect");
    sim.shutdown().await;

    let sim = start_sim(world("jobs: {pending_ms: 50, working_ms: 50}\nfaults: {lost_response_rate: 1.0}")).await;
    let api = Api::new(&sim.endpoint());
    let err = api.del_user("sh1a", "cl-a", "bob", "%").await.unwrap_err();
    assert!(is_reset(&err), "expected a dropped connection, got {err:?}");
    let api = &api;
    let stats = eventually("the lost request's job to delete the account", || async move {
        let stats = api.sim_stats().await;
        stats.account("cl-a", "bob", "%").is_some_and(|a| !a.exists).then_some(stats)
    })
    .await;
    let bob = stats.account("cl-a", "bob", "%").unwrap();
    assert_eq!(bob.del_user_accepted, 1);
    assert_eq!((stats.jobs, stats.faults(Fault::LostResponse), stats.ret_code(0)), (1, 1, 1));
    sim.shutdown().await;
}

#[tokio::test]
async fn added_latency_delays_answers() {
    let sim = start_sim(world("faults: {delay_ms: 150}")).await;
    let api = Api::new(&sim.endpoint());
    let started = std::time::Instant::now();
    assert_eq!(code(&api.describe_jobs("sh1a", &[]).await.unwrap()), 0);
    // A lower bound only: the delay is a sleep before the answer, so it cannot be shorter.
    assert!(started.elapsed() >= Duration::from_millis(150));
    sim.shutdown().await;
}

/// What a client saw for one request.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Seen {
    RetCode(i64),
    Http(u16),
    ConnectionError,
}

async fn fault_sequence(seed: u64) -> Vec<Seen> {
    let yaml = format!(
        "seed: {seed}\nfaults: {{busy_rate: 0.15, internal_rate: 0.15, http_502_rate: 0.15, reset_rate: 0.15, lost_response_rate: 0.1}}"
    );
    let sim = start_sim(world(&yaml)).await;
    let api = Api::new(&sim.endpoint());
    let mut seen = Vec::new();
    for i in 0..40 {
        let action = if i % 2 == 0 { "DescribeJobs" } else { "RunClusterCustomService" };
        let params = if i % 2 == 0 {
            api.signed(action, "sh1a", &[], Utc::now())
        } else {
            let sp = format!(r#"{{"host":"%","user":"u{i}"}}"#);
            let extra =
                [("cluster", "cl-a"), ("role", "maininstance"), ("service", "del_user"), ("service_params", &sp)];
            api.signed(action, "sh1a", &extra, Utc::now())
        };
        seen.push(match api.send(&params).await {
            Err(_) => Seen::ConnectionError,
            Ok(resp) if resp.status() != 200 => Seen::Http(resp.status().as_u16()),
            Ok(resp) => Seen::RetCode(code(&serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap())),
        });
    }
    let stats = sim.stats();
    assert_eq!(stats.seed, seed);
    sim.shutdown().await;
    seen
}

#[tokio::test]
async fn the_same_seed_gives_the_same_fault_sequence() {
    let first = fault_sequence(7).await;
    let second = fault_sequence(7).await;
    assert_eq!(first, second);
    let kinds: std::collections::HashSet<&Seen> = first.iter().collect();
    assert!(kinds.len() >= 4, "the sequence should mix outcomes: {first:?}");
    assert_ne!(first, fault_sequence(8).await, "another seed, another sequence");
}

#[tokio::test]
async fn one_job_per_cluster_refuses_a_second_job_while_the_first_runs() {
    let sim =
        start_sim(world(&format!("{CLUSTERS}\none_job_per_cluster: true\njobs: {{pending_ms: 100, working_ms: 100}}")))
            .await;
    let api = Api::new(&sim.endpoint());
    let first = job_id(&api.del_user("sh1a", "cl-a", "bob", "%").await.unwrap());
    let r = api.del_user("sh1a", "cl-a", "carol", "10.0.0.%").await.unwrap();
    assert_eq!(code(&r), ret::ACCESS_DENIED, "{r}");
    assert!(r["message"].as_str().unwrap().contains(&first), "{r}");
    // Another cluster is free.
    job_id(&api.del_user("pek3a", "cl-b", "bob", "%").await.unwrap());
    final_job(&api, "sh1a", &first).await;
    job_id(&api.del_user("sh1a", "cl-a", "carol", "10.0.0.%").await.unwrap());
    assert_eq!(sim.stats().account("cl-a", "carol", "10.0.0.%").unwrap().del_user_accepted, 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_are_exact_under_concurrency_and_served_unsigned() {
    let sim = start_sim(world("jobs: {pending_ms: 0, working_ms: 0}")).await;
    let api = Api::new(&sim.endpoint());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let api = api.clone();
        tasks.spawn(async move {
            let r = api.del_user("sh1a", "cl-c", &format!("u{}", i % 10), "%").await.unwrap();
            let d = api.describe_jobs("sh1a", &[("limit", "1")]).await.unwrap();
            (code(&r), code(&d))
        });
    }
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done.unwrap(), (0, 0));
    }
    let wrong = Api { secret: "nope".into(), ..api.clone() };
    assert_eq!(code(&wrong.describe_jobs("sh1a", &[]).await.unwrap()), ret::AUTH_FAILED);

    let served: Stats = api.sim_stats().await;
    assert_eq!(served, sim.stats());
    assert_eq!(served.requests_total, 201);
    assert_eq!(served.requests_by_action.get("RunClusterCustomService"), Some(&100));
    assert_eq!(served.requests_by_action.get("DescribeJobs"), Some(&101));
    assert_eq!((served.ret_code(0), served.ret_code(ret::AUTH_FAILED)), (200, 1));
    assert_eq!(served.jobs, 100);
    assert_eq!(served.accounts.len(), 10);
    assert!(served.accounts.iter().all(|a| a.del_user_accepted == 10 && !a.exists));
    // Each account was deleted once; the nine later jobs per account found it gone.
    assert_eq!(served.jobs_by_status.get("successful"), Some(&10));
    assert_eq!(served.jobs_by_status.get("failed"), Some(&90));
    assert_eq!(served.faults_injected.values().sum::<u64>(), 0);
    let raw: Value = serde_json::from_slice(
        &api.http.get(format!("http://{}/sim/stats", sim.addr)).send().await.unwrap().bytes().await.unwrap(),
    )
    .unwrap();
    assert_eq!(raw["ret_codes"]["0"], 200, "ret_codes are keyed by the code as a string");
    assert_eq!(raw["accounts"][0]["cluster"], "cl-c");
    sim.shutdown().await;
}

#[tokio::test]
async fn other_paths_and_methods_are_not_the_api() {
    let sim = start_sim(world("{}")).await;
    let http = Api::new(&sim.endpoint()).http;
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(http.get(format!("http://{}/", sim.addr)).send().await.unwrap()), 404);
    assert_eq!(status(http.delete(sim.endpoint()).send().await.unwrap()), 405);
    assert_eq!(status(http.post(format!("http://{}/sim/stats", sim.addr)).send().await.unwrap()), 405);
    assert_eq!(sim.stats().requests_total, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_sim_binary_prints_where_it_listens_then_serves_until_sigterm() {
    let home = crate::helpers::tempdir();
    let world_file = home.path().join("world.yaml");
    std::fs::write(&world_file, format!("{CLUSTERS}\njobs: {{pending_ms: 10, working_ms: 10}}\nseed: 3\n")).unwrap();
    let proc = SimProcess::spawn(home.path(), &world_file);
    assert!(proc.first_line.starts_with("listening on http://127.0.0.1:"), "{:?}", proc.first_line);
    assert!(proc.endpoint.ends_with("/iaas/"), "{:?}", proc.endpoint);
    let api = Api::new(&proc.endpoint);
    let id = job_id(&api.del_user("sh1a", "cl-a", "bob", "%").await.unwrap());
    assert_eq!(final_job(&api, "sh1a", &id).await["status"], "successful");
    let stats = api.sim_stats().await;
    assert_eq!(stats.seed, 3);
    assert!(!stats.account("cl-a", "bob", "%").unwrap().exists);
    let status = tokio::task::spawn_blocking(move || proc.terminate()).await.unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

#[test]
fn the_sim_binary_rejects_a_bad_world_file() {
    let home = crate::helpers::tempdir();
    let world_file = home.path().join("world.yaml");
    std::fs::write(&world_file, "faults: {reset: 0.5}\n").unwrap();
    crate::helpers::qc(home.path())
        .args(["sim", "--listen", "127.0.0.1:0", "--world"])
        .arg(&world_file)
        .assert()
        .code(78)
        .stdout("")
        .stderr(predicates::str::contains("world.yaml: faults: unknown field `reset`"));
}

// ---------------------------------------------------------------------------------------------
// The `api:` block, quota scope and penalty, drawn durations, the shifted clock, the request log.

/// `n` del_user jobs on `cl-s` in sh1a that stay pending (the world's jobs must be slow).
async fn pending_jobs(api: &Api, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(job_id(&api.del_user("sh1a", "cl-s", &format!("u{i}"), "%").await.unwrap()));
    }
    out
}

const SLOW: &str = "jobs: {pending_ms: 600000, working_ms: 1000}";

#[tokio::test]
async fn an_unknown_job_id_refuses_the_whole_call_or_is_dropped() {
    let sim = start_sim(world(SLOW)).await;
    let api = Api::new(&sim.endpoint());
    let known = pending_jobs(&api, 1).await.remove(0);
    let r = api
        .describe_jobs("sh1a", &[("jobs.1", &known), ("jobs.2", "j-unknown0001"), ("jobs.3", "j-unknown0002")])
        .await
        .unwrap();
    assert_eq!(r, serde_json::json!({"message": "ResourceNotFound, job [j-unknown0001] not found", "ret_code": 2100}));
    sim.shutdown().await;

    let sim = start_sim(world(&format!("{SLOW}\napi: {{describe_jobs_unknown_id: drop}}"))).await;
    let api = Api::new(&sim.endpoint());
    let known = pending_jobs(&api, 1).await.remove(0);
    let r = api.describe_jobs("sh1a", &[("jobs.1", "j-unknown0001"), ("jobs.2", &known)]).await.unwrap();
    assert_eq!((code(&r), r["total_count"].as_u64(), ids(&r)), (0, Some(1), vec![known]));
    sim.shutdown().await;
}

#[tokio::test]
async fn listings_come_in_the_order_the_world_says() {
    for order in ["newest_first", "oldest_first", "random"] {
        let sim = start_sim(world(&format!("{SLOW}\nseed: 11\napi: {{describe_jobs_order: {order}}}"))).await;
        let api = Api::new(&sim.endpoint());
        let created = pending_jobs(&api, 8).await;
        let listed = ids(&api.describe_jobs("sh1a", &[("limit", "100")]).await.unwrap());
        let mut sorted = listed.clone();
        sorted.sort();
        let mut all = created.clone();
        all.sort();
        assert_eq!(sorted, all, "{order}: every job once");
        let newest: Vec<String> = created.iter().rev().cloned().collect();
        match order {
            "newest_first" => assert_eq!(listed, newest),
            "oldest_first" => assert_eq!(listed, created),
            _ => assert!(listed != newest && listed != created, "{listed:?}"),
        }
        // The order is the same for every call, so pages by offset add up to the listing.
        let first = ids(&api.describe_jobs("sh1a", &[("limit", "5")]).await.unwrap());
        let rest = ids(&api.describe_jobs("sh1a", &[("offset", "5"), ("limit", "5")]).await.unwrap());
        assert_eq!([first, rest].concat(), listed, "{order}");
        // Answers by id follow the same order.
        let by_id: Vec<(&str, &str)> = vec![("jobs.1", &created[0]), ("jobs.2", &created[1]), ("jobs.3", &created[2])];
        let answer = ids(&api.describe_jobs("sh1a", &by_id).await.unwrap());
        let expected: Vec<String> = listed.iter().filter(|id| created[..3].contains(id)).cloned().collect();
        assert_eq!(answer, expected, "{order}");
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn an_ignored_job_action_filter_lists_every_kind_of_job() {
    let sim = start_sim(world(&format!("{SLOW}\napi: {{job_action_filter: false}}"))).await;
    let api = Api::new(&sim.endpoint());
    let mine = pending_jobs(&api, 2).await;
    let r = api.describe_jobs("sh1a", &[("job_action", "RunClusterCustomService"), ("limit", "100")]).await.unwrap();
    let actions: Vec<&str> =
        r["job_set"].as_array().unwrap().iter().map(|j| j["job_action"].as_str().unwrap()).collect();
    assert_eq!(r["total_count"], 7, "two of ours and the zone's five unrelated jobs: {actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == "RunClusterCustomService").count(), 2);
    assert!(actions.contains(&"StopClusters"), "{actions:?}");
    // The unrelated jobs are older than ours, finished, and not counted as created.
    assert_eq!(ids(&r)[..2], [mine[1].clone(), mine[0].clone()]);
    assert!(r["job_set"][2]["create_time"].as_str() < r["job_set"][1]["create_time"].as_str());
    assert_eq!(r["job_set"][2]["status"], "successful");
    assert_eq!(sim.stats().jobs, 2);
    sim.shutdown().await;

    let sim = start_sim(world(&format!("{SLOW}\napi: {{unrelated_jobs_per_zone: 3}}"))).await;
    let api = Api::new(&sim.endpoint());
    pending_jobs(&api, 2).await;
    let filtered = api.describe_jobs("sh1a", &[("job_action", "RunClusterCustomService")]).await.unwrap();
    assert_eq!(filtered["total_count"], 2, "the filter is honoured by default");
    assert_eq!(api.describe_jobs("sh1a", &[]).await.unwrap()["total_count"], 5);
    assert_eq!(api.describe_jobs("pek3a", &[]).await.unwrap()["total_count"], 3, "each zone has its own");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_new_job_shows_in_listings_only_after_the_lag_but_by_id_at_once() {
    let sim = start_sim(world(&format!("{SLOW}\napi: {{list_lag_ms: 600000}}"))).await;
    let api = Api::new(&sim.endpoint());
    let id = pending_jobs(&api, 1).await.remove(0);
    assert_eq!(ids(&api.describe_jobs("sh1a", &[("jobs.1", &id)]).await.unwrap()), vec![id.clone()]);
    let listed = api.describe_jobs("sh1a", &[("job_action", "RunClusterCustomService")]).await.unwrap();
    assert_eq!((code(&listed), listed["total_count"].as_u64()), (0, Some(0)));
    sim.shutdown().await;

    let sim = start_sim(world(&format!("{SLOW}\napi: {{list_lag_ms: 300}}"))).await;
    let api = Api::new(&sim.endpoint());
    let id = pending_jobs(&api, 1).await.remove(0);
    let api = &api;
    let listed = eventually("the job to show in listings", || async move {
        let r = api.describe_jobs("sh1a", &[]).await.unwrap();
        (r["total_count"] == 1).then(|| ids(&r))
    })
    .await;
    assert_eq!(listed, vec![id]);
    sim.shutdown().await;
}

#[tokio::test]
async fn del_user_of_a_missing_account_fails_its_job_succeeds_or_is_rejected() {
    let fast = "jobs: {pending_ms: 0, working_ms: 20}";
    for (choice, status, error_codes) in [("fail_job", "failed", ERROR_NO_SUCH_ACCOUNT), ("succeed", "successful", "")]
    {
        let sim = start_sim(world(&format!("{CLUSTERS}\n{fast}\napi: {{missing_account: {choice}}}"))).await;
        let api = Api::new(&sim.endpoint());
        let id = job_id(&api.del_user("sh1a", "cl-a", "nobody", "%").await.unwrap());
        let job = final_job(&api, "sh1a", &id).await;
        assert_eq!(
            (job["status"].as_str(), job["error_codes"].as_str()),
            (Some(status), Some(error_codes)),
            "{choice}"
        );
        let stats = sim.stats();
        let acc = stats.account("cl-a", "nobody", "%").unwrap();
        assert_eq!((acc.exists, acc.del_user_accepted, acc.deleted_by.as_deref()), (false, 1, None), "{choice}");
        sim.shutdown().await;
    }

    let sim = start_sim(world(&format!("{CLUSTERS}\n{fast}\napi: {{missing_account: reject}}"))).await;
    let api = Api::new(&sim.endpoint());
    let r = api.del_user("sh1a", "cl-a", "nobody", "%").await.unwrap();
    let message = "ResourceNotFound, user [nobody] with host [%] does not exist in cluster [cl-a]";
    assert_eq!(r, serde_json::json!({"message": message, "ret_code": 2100}));
    // An existing account is deleted as usual; the second request for it is then rejected.
    let id = job_id(&api.del_user("sh1a", "cl-a", "bob", "%").await.unwrap());
    assert_eq!(final_job(&api, "sh1a", &id).await["status"], "successful");
    let again = api.del_user("sh1a", "cl-a", "bob", "%").await.unwrap();
    assert_eq!(code(&again), ret::NOT_FOUND, "{again}");
    let r = api.del_user("sh1a", "cl-zz", "bob", "%").await.unwrap();
    assert_eq!(r["message"], "ResourceNotFound, cluster [cl-zz] not found in zone [sh1a]");
    let stats = sim.stats();
    assert_eq!(stats.jobs, 1);
    assert_eq!(stats.account("cl-a", "nobody", "%").unwrap().del_user_accepted, 0);
    assert_eq!(stats.account("cl-a", "bob", "%").unwrap().del_user_accepted, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn html_everywhere_answers_every_request_with_a_page_while_stats_keep_working() {
    let sim = start_sim(world("api: {html_everywhere: true}")).await;
    for method in [Method::Get, Method::Post] {
        let api = Api { method, ..Api::new(&sim.endpoint()) };
        let params = api.signed("DescribeJobs", "sh1a", &[], Utc::now());
        let resp = api.send(&params).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(resp.headers().contains_key("date"));
        let body = resp.text().await.unwrap();
        assert!(body.starts_with("<!DOCTYPE html>") && serde_json::from_str::<Value>(&body).is_err(), "{body}");
        let unsigned = api.http.get(format!("{}?action=Nothing", sim.endpoint())).send().await.unwrap();
        assert_eq!(unsigned.text().await.unwrap(), qc_offboard::sim::HTML_PAGE);
        let elsewhere = api.http.delete(sim.endpoint().replace("/iaas/", "/login")).send().await.unwrap();
        assert_eq!(elsewhere.status(), 200, "any path and method");
        assert_eq!(elsewhere.text().await.unwrap(), qc_offboard::sim::HTML_PAGE);
        let params = qc_offboard::qingcloud::types::DelUserParams::new("bob", "%").to_json();
        let extra =
            [("cluster", "cl-a"), ("role", "maininstance"), ("service", "del_user"), ("service_params", &params)];
        let resp = api.send(&api.signed("RunClusterCustomService", "sh1a", &extra, Utc::now())).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let stats = Api::new(&sim.endpoint()).sim_stats().await;
    assert_eq!(
        (stats.jobs, stats.requests_of("RunClusterCustomService"), stats.requests_of("DescribeJobs")),
        (0, 2, 2)
    );
    assert!(stats.ret_codes.is_empty(), "the API answered nothing: {:?}", stats.ret_codes);
    assert_eq!(stats.requests.len(), 2);
    assert!(stats.requests.iter().all(|r| r.ret_code.is_none() && r.user == "bob" && r.job_id.is_none()));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_penalty_block_and_a_quota_shared_by_one_accounts_keys() {
    let keys = "credentials: [{access_key_id: A, secret_access_key: a, account: acme}, \
                {access_key_id: B, secret_access_key: b, account: acme}, {access_key_id: C, secret_access_key: c}]";
    let sim = start_sim(world(&format!("{keys}\nquota: {{requests: 3, window_s: 0.2, penalty_s: 600}}"))).await;
    let a = Api { access_key: "A".into(), secret: "a".into(), ..Api::new(&sim.endpoint()) };
    let b = Api { access_key: "B".into(), secret: "b".into(), ..a.clone() };
    let c = Api { access_key: "C".into(), secret: "c".into(), ..a.clone() };
    let mut codes = Vec::new();
    for api in [&a, &b, &a, &b] {
        codes.push(code(&api.describe_jobs("sh1a", &[]).await.unwrap()));
    }
    assert_eq!(codes, [0, 0, 0, ret::QUOTA_EXCEEDED], "one count for both keys of acme");
    // Well past the window, the block still holds, with the documented text.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = a.describe_jobs("sh1a", &[]).await.unwrap();
    assert_eq!(r, serde_json::json!({"message": qc_offboard::sim::QUOTA_MESSAGE, "ret_code": 2500}));
    assert_eq!(code(&b.describe_jobs("sh1a", &[]).await.unwrap()), ret::QUOTA_EXCEEDED);
    assert_eq!(code(&c.describe_jobs("sh1a", &[]).await.unwrap()), 0, "another account");
    sim.shutdown().await;

    // Keys of one account also see each other's jobs; with `scope: access_key` each key counts
    // for itself.
    let sim = start_sim(world(&format!("{keys}\nquota: {{requests: 1, window_s: 600, scope: access_key}}"))).await;
    let a = Api { endpoint: sim.endpoint(), ..a };
    let b = Api { endpoint: sim.endpoint(), ..b };
    let c = Api { endpoint: sim.endpoint(), ..c };
    let id = job_id(&a.del_user("sh1a", "cl-x", "u", "%").await.unwrap());
    assert_eq!(ids(&b.describe_jobs("sh1a", &[("jobs.1", &id)]).await.unwrap()), vec![id.clone()]);
    assert_eq!(code(&c.describe_jobs("sh1a", &[("jobs.1", &id)]).await.unwrap()), ret::NOT_FOUND, "another account");
    assert_eq!(code(&a.describe_jobs("sh1a", &[]).await.unwrap()), ret::QUOTA_EXCEEDED, "A used its one request");
    assert_eq!(code(&c.describe_jobs("sh1a", &[]).await.unwrap()), ret::QUOTA_EXCEEDED, "so did C");
    sim.shutdown().await;
}

#[tokio::test]
async fn durations_drawn_from_a_range_and_the_request_log() {
    let sim = start_sim(world("jobs: {pending_ms: 0, working_ms: 10, working_ms_max: 300}\nseed: 5")).await;
    let api = Api::new(&sim.endpoint());
    let before = Utc::now().timestamp_millis();
    let mut created = Vec::new();
    for i in 0..6 {
        created.push(job_id(&api.del_user("sh1a", "cl-r", &format!("u{i}"), "10.0.0.%").await.unwrap()));
    }
    api.describe_jobs("sh1a", &[]).await.unwrap();
    let _ = code(&api.del_user("sh1a", "cl-r", "root", "%").await.unwrap());
    let after = Utc::now().timestamp_millis();
    for id in &created {
        assert_eq!(final_job(&api, "sh1a", id).await["status"], "successful");
    }
    let stats = sim.stats();
    assert_eq!(stats.requests.len(), 7, "RunClusterCustomService only: {:?}", stats.requests);
    for (record, id) in stats.requests.iter().zip(&created) {
        assert_eq!(record.job_id.as_ref(), Some(id));
        assert_eq!(
            (record.action.as_str(), record.cluster.as_str(), record.host.as_str()),
            ("RunClusterCustomService", "cl-r", "10.0.0.%")
        );
        assert_eq!(record.ret_code, Some(0));
        assert!((before..=after).contains(&record.at_ms), "{record:?}");
    }
    let refused = &stats.requests[6];
    assert_eq!(
        (refused.user.as_str(), refused.ret_code, refused.job_id.as_deref()),
        ("root", Some(ret::ACCESS_DENIED), None)
    );
    assert!(stats.requests.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    sim.shutdown().await;

    // A request the API never saw is logged without a ret_code.
    let sim = start_sim(world("faults: {http_502_rate: 1.0}")).await;
    let api = Api::new(&sim.endpoint());
    let params = api.signed("RunClusterCustomService", "sh1a", &[("cluster", "cl-a")], Utc::now());
    assert_eq!(api.send(&params).await.unwrap().status(), 502);
    let stats = sim.stats();
    assert_eq!(stats.requests.len(), 1);
    assert_eq!((stats.requests[0].cluster.as_str(), stats.requests[0].ret_code), ("cl-a", None));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_shifted_clock_moves_the_date_header_job_times_and_the_time_stamp_check() {
    let sim = start_sim(world("clock_offset_s: -600\njobs: {pending_ms: 0, working_ms: 10}")).await;
    let api = Api::new(&sim.endpoint());
    let host_now = Utc::now();
    let resp = api.send(&api.signed("DescribeJobs", "sh1a", &[], host_now)).await.unwrap();
    let date = resp.headers()["date"].to_str().unwrap().to_owned();
    let date = qc_offboard::qingcloud::client::parse_http_date(&date).expect("an HTTP date");
    assert!(((date - host_now).num_seconds() + 600).abs() <= 2, "{date} vs {host_now}");
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(code(&body), ret::EXPIRED, "the host's time is 10 minutes ahead of the API: {body}");
    // Stamped by the API's clock, requests pass; the job's times are on that clock too.
    let params = qc_offboard::qingcloud::types::DelUserParams::new("bob", "%").to_json();
    let extra = [("cluster", "cl-a"), ("role", "maininstance"), ("service", "del_user"), ("service_params", &params)];
    let shifted = Utc::now() - chrono::Duration::seconds(600);
    let resp = api.send(&api.signed("RunClusterCustomService", "sh1a", &extra, shifted)).await.unwrap();
    let id = job_id(&serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap());
    let resp = api.send(&api.signed("DescribeJobs", "sh1a", &[("jobs.1", &id)], shifted)).await.unwrap();
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let created =
        qc_offboard::qingcloud::signer::parse_time_stamp(body["job_set"][0]["create_time"].as_str().unwrap()).unwrap();
    assert!(((created - Utc::now()).num_seconds() + 600).abs() <= 2, "{created}");
    sim.shutdown().await;
}
