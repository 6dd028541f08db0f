//! The engine's tests: whole requests through [`Engine::call`], signed as a client signs them,
//! so each checks the order of the checks as well as the check itself (authentication, quota,
//! each action and the shape of its answer).
//!
//! They use only the engine's public face and the signer; no HTTP.

use std::time::Duration;

use crate::qingcloud::signer::{self, Method, SignatureMethod};
use crate::qingcloud::types::{
    ret, DelUserParams, JobStatus, DESCRIBE_CLUSTERS, DESCRIBE_JOBS, DESCRIBE_TAGS, MYSQL_PLUS_APP_ID,
    RUN_CLUSTER_CUSTOM_SERVICE,
};
use crate::sim::actions::describe_clusters::tag_id;
use crate::sim::answer::Reply;
use crate::sim::clock::Now;
use crate::sim::quota::QUOTA_MESSAGE;
use crate::sim::request::ApiRequest;
use crate::sim::world::{World, DEFAULT_ACCESS_KEY_ID as AK, DEFAULT_SECRET_ACCESS_KEY as SK};

use super::Engine;

fn engine(yaml: &str) -> Engine {
    let world = World::parse(yaml, std::path::Path::new("w.yaml")).unwrap();
    Engine::new(world.check().unwrap(), 1)
}

fn signed(action: &str, extra: &[(&str, &str)], now: Now) -> ApiRequest {
    signed_in("sh1a", action, extra, now)
}

fn signed_in(zone: &str, action: &str, extra: &[(&str, &str)], now: Now) -> ApiRequest {
    let mut params = signer::common_params(action, zone, AK, now.wall, SignatureMethod::HmacSha256);
    params.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let sig = signer::signature(Method::Get, "/iaas/", &params, SK.as_bytes(), SignatureMethod::HmacSha256);
    params.push(("signature".to_owned(), sig));
    ApiRequest { method: Method::Get, path: "/iaas/".to_owned(), params }
}

fn body(reply: &Reply) -> serde_json::Value {
    serde_json::from_slice(&reply.body).unwrap()
}

const DEL_BOB: [(&str, &str); 4] = [
    ("cluster", "cl-a"),
    ("role", "maininstance"),
    ("service", "del_user"),
    ("service_params", r#"{"host":"%","user":"bob"}"#),
];

#[test]
fn the_path_and_method_are_signed() {
    let e = engine("{}");
    let now = Now::current();
    let mut req = signed(RUN_CLUSTER_CUSTOM_SERVICE, &DEL_BOB, now);
    assert_eq!(e.call(&req, now).ret_code, ret::OK);
    req.path = "/iaas".to_owned();
    assert_eq!(e.call(&req, now).ret_code, ret::AUTH_FAILED);
    req.path = "/iaas/".to_owned();
    req.method = Method::Post;
    assert_eq!(e.call(&req, now).ret_code, ret::AUTH_FAILED);
}

#[test]
fn refusals_carry_the_right_codes() {
    let e = engine("{}");
    let now = Now::current();
    let with = |k: &str, v: &str| {
        let extra: Vec<(&str, &str)> = DEL_BOB.iter().map(|&(a, b)| if a == k { (a, v) } else { (a, b) }).collect();
        e.call(&signed(RUN_CLUSTER_CUSTOM_SERVICE, &extra, now), now).ret_code
    };
    assert_eq!(with("service_params", r#"{"host":"%","user":"root"}"#), ret::ACCESS_DENIED);
    assert_eq!(with("service_params", r#"{"host":"%","user":"bob","x":1}"#), ret::MALFORMED);
    assert_eq!(with("service_params", r#"{"host":"%","user":7}"#), ret::MALFORMED);
    assert_eq!(with("service_params", r#"["bob"]"#), ret::MALFORMED);
    assert_eq!(with("role", "analysis"), ret::MALFORMED);
    assert_eq!(with("service", "add_user"), ret::MALFORMED);
    assert_eq!(with("cluster", "i-abc"), ret::NOT_FOUND);
    let unknown = e.call(&signed("RunInstances", &[], now), now);
    assert_eq!(unknown.ret_code, ret::ACCESS_DENIED);
    assert_eq!(
        body(&unknown),
        serde_json::json!({"message": "PermissionDenied, can't handle this request", "ret_code": 1400})
    );
    let stale = signed(DESCRIBE_JOBS, &[], now);
    assert_eq!(e.call(&stale, now.after(Duration::from_secs(61))).ret_code, ret::EXPIRED);
    assert_eq!(e.call(&stale, now.after(Duration::from_secs(59))).ret_code, ret::OK);
    let mut dup = signed(DESCRIBE_JOBS, &[("zone", "pek3a")], now);
    assert_eq!(e.call(&dup, now).ret_code, ret::MALFORMED);
    dup.params.retain(|(k, _)| k != "time_stamp");
    assert_eq!(body(&e.call(&dup, now))["message"], "ParameterError, parameter [zone] is given more than once");
    let stats = e.stats(now);
    assert_eq!(stats.ret_code(ret::MALFORMED), 7);
}

#[test]
fn quota_windows_refuse_then_recover_and_refusals_do_not_count() {
    let e = engine("quota: {requests: 2, window_s: 10}");
    let t0 = Now::current();
    let code = |t: Now| e.call(&signed(DESCRIBE_JOBS, &[], t), t).ret_code;
    assert_eq!(code(t0), ret::OK);
    assert_eq!(code(t0.after(Duration::from_secs(1))), ret::OK);
    assert_eq!(code(t0.after(Duration::from_secs(2))), ret::QUOTA_EXCEEDED);
    assert_eq!(code(t0.after(Duration::from_secs(9))), ret::QUOTA_EXCEEDED);
    assert_eq!(code(t0.after(Duration::from_secs(10))), ret::OK);
    assert_eq!(code(t0.after(Duration::from_secs(11))), ret::OK);
    assert_eq!(code(t0.after(Duration::from_secs(12))), ret::QUOTA_EXCEEDED);
}

fn signed_as(ak: &str, sk: &str, action: &str, now: Now) -> ApiRequest {
    let mut params = signer::common_params(action, "sh1a", ak, now.wall, SignatureMethod::HmacSha256);
    let sig = signer::signature(Method::Get, "/iaas/", &params, sk.as_bytes(), SignatureMethod::HmacSha256);
    params.push(("signature".to_owned(), sig));
    ApiRequest { method: Method::Get, path: "/iaas/".to_owned(), params }
}

#[test]
fn a_penalty_block_refuses_everything_for_its_length_whatever_the_window() {
    let e = engine("quota: {requests: 2, window_s: 1, penalty_s: 30}");
    let t0 = Now::current();
    let code = |t: Now| e.call(&signed(DESCRIBE_JOBS, &[], t), t).ret_code;
    assert_eq!((code(t0), code(t0)), (ret::OK, ret::OK));
    let refused = e.call(&signed(DESCRIBE_JOBS, &[], t0), t0);
    assert_eq!(body(&refused), serde_json::json!({"message": QUOTA_MESSAGE, "ret_code": 2500}));
    // The window would have reopened after 1 s; the block lasts 30 s.
    assert_eq!(code(t0.after(Duration::from_secs(5))), ret::QUOTA_EXCEEDED);
    assert_eq!(code(t0.after(Duration::from_millis(29_900))), ret::QUOTA_EXCEEDED);
    assert_eq!(code(t0.after(Duration::from_secs(30))), ret::OK);
    assert_eq!(code(t0.after(Duration::from_secs(30))), ret::OK);
    assert_eq!(code(t0.after(Duration::from_secs(30))), ret::QUOTA_EXCEEDED);
}

#[test]
fn the_quota_is_shared_by_the_keys_of_one_account_unless_scoped_to_the_key() {
    let keys = "credentials: [{access_key_id: A, secret_access_key: a, account: acme}, \
                {access_key_id: B, secret_access_key: b, account: acme}, {access_key_id: C, secret_access_key: c}]";
    for (scope, b_after_a) in [("account", ret::QUOTA_EXCEEDED), ("access_key", ret::OK)] {
        let e = engine(&format!("{keys}\nquota: {{requests: 2, window_s: 60, scope: {scope}}}"));
        let now = Now::current();
        let code = |ak: &str, sk: &str| e.call(&signed_as(ak, sk, DESCRIBE_JOBS, now), now).ret_code;
        assert_eq!((code("A", "a"), code("A", "a")), (ret::OK, ret::OK));
        assert_eq!(code("A", "a"), ret::QUOTA_EXCEEDED);
        assert_eq!(code("B", "b"), b_after_a, "{scope}");
        assert_eq!(code("C", "c"), ret::OK, "{scope}: another account");
    }
}

#[test]
fn durations_are_drawn_from_the_range_and_jobs_end_in_the_order_of_their_ends() {
    let e = engine("jobs: {pending_ms: 0, working_ms: 100, working_ms_max: 10000}\nseed: 3");
    let t0 = Now::current();
    let mut ids = Vec::new();
    for i in 0..20 {
        let params = format!(r#"{{"host":"%","user":"u{i}"}}"#);
        let extra =
            [("cluster", "cl-a"), ("role", "maininstance"), ("service", "del_user"), ("service_params", &params)];
        let r = body(&e.call(&signed(RUN_CLUSTER_CUSTOM_SERVICE, &extra, t0), t0));
        ids.push(r["job_id"].as_str().unwrap().to_owned());
    }
    let mut ends = Vec::new();
    for id in &ids {
        let t = t0.after(Duration::from_secs(11));
        let d = body(&e.call(&signed(DESCRIBE_JOBS, &[("jobs.1", id)], t), t));
        let job: crate::qingcloud::types::Job = serde_json::from_value(d["job_set"][0].clone()).unwrap();
        assert_eq!(job.status, JobStatus::Successful);
        let status_time = signer::parse_time_stamp(&job.status_time).unwrap();
        ends.push((status_time - job.create_time().unwrap()).num_seconds());
    }
    assert!(ends.iter().all(|s| (0..=10).contains(s)), "{ends:?}");
    let distinct: std::collections::BTreeSet<_> = ends.iter().collect();
    assert!(distinct.len() >= 4, "20 draws from 0.1–10 s give several whole seconds: {ends:?}");
    // Each account was deleted by its own job, whatever order they ended in.
    assert_eq!(e.stats(t0.after(Duration::from_secs(11))).jobs_by_status.get("successful"), Some(&20));
}

fn call_tags(e: &Engine, extra: &[(&str, &str)], now: Now) -> serde_json::Value {
    body(&e.call(&signed(DESCRIBE_TAGS, extra, now), now))
}

#[test]
fn describe_clusters_filters_and_pages_past_a_hundred() {
    let mut yaml = String::from("clusters:\n");
    for i in 0..130 {
        let (zone, tags) = if i % 2 == 0 { ("sh1a", "[prod]") } else { ("sh1a", "[]") };
        yaml.push_str(&format!("  - {{id: cl-c{i:03}, zone: {zone}, name: orders-{i}, tags: {tags}}}\n"));
    }
    yaml.push_str("  - {id: cl-p1, zone: pek3, status: stopped, app_id: app-other}\n");
    let e = engine(&yaml);
    let now = Now::current();
    let call = |extra: &[(&str, &str)]| body(&e.call(&signed(DESCRIBE_CLUSTERS, extra, now), now));
    let first = call(&[("limit", "500")]);
    assert_eq!(first["total_count"], 130);
    assert_eq!(first["cluster_set"].as_array().unwrap().len(), 100, "limit is clamped to 100");
    let second = call(&[("limit", "100"), ("offset", "100")]);
    assert_eq!(second["cluster_set"].as_array().unwrap().len(), 30);
    assert_eq!(second["cluster_set"][0]["cluster_id"], "cl-c100");
    assert_eq!(call(&[("tags.1", "prod")])["total_count"], 0, "tags.N are tag ids, not names");
    let tags = call_tags(&e, &[("search_word", "pro")], now);
    assert_eq!(tags["total_count"], 1);
    assert_eq!(tags["tag_set"][0]["tag_name"], "prod");
    let prod = tags["tag_set"][0]["tag_id"].as_str().unwrap().to_owned();
    assert_eq!(prod, tag_id("prod"));
    let tagged = call(&[("tags.1", &prod)]);
    assert_eq!(tagged["total_count"], 65);
    assert_eq!(tagged["cluster_set"][0]["tags"][0]["tag_name"], "prod");
    let by_id = call(&[("clusters.1", "cl-c007"), ("clusters.2", "cl-p1")]);
    assert_eq!(by_id["total_count"], 1, "cl-p1 is in another zone: {by_id}");
    assert_eq!(by_id["cluster_set"][0]["app_id"], MYSQL_PLUS_APP_ID);
    assert_eq!(by_id["cluster_set"][0]["status"], "active");
    let pek3 = |extra: &[(&str, &str)]| body(&e.call(&signed_in("pek3", DESCRIBE_CLUSTERS, extra, now), now));
    assert_eq!(pek3(&[])["cluster_set"][0]["status"], "stopped");
    assert_eq!(pek3(&[("apps.1", MYSQL_PLUS_APP_ID)])["total_count"], 0);
    let refused = e.call(
        &signed_in(
            "pek3",
            RUN_CLUSTER_CUSTOM_SERVICE,
            &[("cluster", "cl-p1"), DEL_BOB[1], DEL_BOB[2], DEL_BOB[3]],
            now,
        ),
        now,
    );
    assert_eq!(refused.ret_code, ret::ACCESS_DENIED);
    assert!(body(&refused)["message"].as_str().unwrap().contains("[cl-p1] is [stopped]"));
}

#[test]
fn directive_and_response_shape() {
    let e = engine("{}");
    let now = Now::current();
    let r = body(&e.call(&signed(RUN_CLUSTER_CUSTOM_SERVICE, &DEL_BOB, now), now));
    assert_eq!(r["action"], "RunClusterCustomServiceResponse");
    assert_eq!(r["cluster_id"], "cl-a");
    let id = r["job_id"].as_str().unwrap();
    assert!(id.len() == 13 && id[2..].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{id}");
    let d = body(&e.call(&signed(DESCRIBE_JOBS, &[("jobs.1", id)], now), now));
    assert_eq!(d["action"], "DescribeJobsResponse");
    let job: crate::qingcloud::types::Job = serde_json::from_value(d["job_set"][0].clone()).unwrap();
    let target = job.directive_target().unwrap();
    assert_eq!((target.cluster.as_str(), target.service.as_str()), ("cl-a", "del_user"));
    assert_eq!(target.params.unwrap(), DelUserParams::new("bob", "%"));
    assert!(!job.directive.contains("signature") && !job.directive.contains(AK), "{}", job.directive);
    assert_eq!(job.resource_ids, "cl-a");
    assert!(job.owner.starts_with("usr-"));
}

fn del_user(e: &Engine, cluster: &str, user: &str, now: Now) -> i64 {
    let params = format!(r#"{{"host":"%","user":"{user}"}}"#);
    let extra = [("cluster", cluster), ("role", "maininstance"), ("service", "del_user"), ("service_params", &params)];
    e.call(&signed(RUN_CLUSTER_CUSTOM_SERVICE, &extra, now), now).ret_code
}

#[test]
fn a_job_created_while_another_runs_on_its_cluster_is_an_overlap_and_one_after_it_is_not() {
    let e = engine("jobs: {pending_ms: 100, working_ms: 200}");
    let t0 = Now::current();
    let at = |ms| t0.after(Duration::from_millis(ms));
    assert_eq!(del_user(&e, "cl-a", "bob", t0), ret::OK);
    assert_eq!(del_user(&e, "cl-b", "bob", t0), ret::OK);
    // cl-a: eve while bob's job is still pending.
    assert_eq!(del_user(&e, "cl-a", "eve", at(100)), ret::OK);
    // cl-b: eve the moment bob's job has ended.
    assert_eq!(del_user(&e, "cl-b", "eve", at(300)), ret::OK);
    let stats = e.stats(at(1_000));
    let [o] = stats.cluster_overlaps.as_slice() else { panic!("one overlap: {:?}", stats.cluster_overlaps) };
    assert_eq!(
        (o.cluster.as_str(), o.zone.as_str(), o.user.as_str(), o.running_user.as_str()),
        ("cl-a", "sh1a", "eve", "bob")
    );
    assert_eq!(o.running_left_ms, 200);
    assert_eq!(stats.cluster_overlaps_not_logged, 0);
    // Overlapping or not, every job ran and deleted its own account.
    assert_eq!(stats.jobs_by_status.get("successful"), Some(&4));
}

#[test]
fn sequential_jobs_and_refused_ones_are_no_overlap() {
    let e = engine("jobs: {pending_ms: 100, working_ms: 200}\none_job_per_cluster: true");
    let t0 = Now::current();
    let at = |ms| t0.after(Duration::from_millis(ms));
    assert_eq!(del_user(&e, "cl-a", "bob", t0), ret::OK);
    assert_eq!(del_user(&e, "cl-a", "eve", at(100)), ret::ACCESS_DENIED, "refused: bob's job runs");
    assert_eq!(del_user(&e, "cl-a", "eve", at(400)), ret::OK);
    assert_eq!(del_user(&e, "cl-a", "ann", at(700)), ret::OK);
    let stats = e.stats(at(1_000));
    assert!(stats.cluster_overlaps.is_empty(), "{:?}", stats.cluster_overlaps);
    assert_eq!(stats.jobs, 3);
}

#[test]
fn every_request_of_every_action_has_its_arrival_time() {
    let e = engine("{}");
    let t0 = chrono::Utc::now();
    e.admit(DESCRIBE_JOBS, t0);
    e.admit(RUN_CLUSTER_CUSTOM_SERVICE, t0 + chrono::TimeDelta::milliseconds(5));
    e.admit("NoSuchAction", t0 + chrono::TimeDelta::milliseconds(9));
    let ms = t0.timestamp_millis();
    assert_eq!(e.stats(Now::current()).arrivals_ms, [ms, ms + 5, ms + 9]);
}
