//! The API client against a small HTTP/1.1 server written here, on 127.0.0.1 port 0. The server
//! verifies every signature with the signer (so a signing bug fails these tests) and can answer
//! with any ret_code, HTTP status or transport fault.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use qc_offboard::domain::{ClusterId, Zone};
use qc_offboard::qingcloud::client::{ApiError, Call, Client, ClusterQuery, Gate, JobFilter, MAX_BODY_BYTES};
use qc_offboard::qingcloud::config::{Credentials, Settings};
use qc_offboard::qingcloud::signer::{self, Method, SignatureMethod};
use qc_offboard::qingcloud::types::{DelUserParams, DescribeJobsResponse, DEL_USER, ROLE_MAININSTANCE};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const AK: &str = "QYACCESSKEYIDEXAMPLE";
/// Distinctive so a leak is easy to find in any output.
const SK: &str = "Zq9-SECRET-never-printed-7Kx";

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: String,
    content_type: Option<String>,
    user_agent: Option<String>,
    params: Vec<(String, String)>,
}

impl Seen {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn jobs(&self) -> Vec<String> {
        let mut jobs: Vec<(usize, String)> = self
            .params
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("jobs.").map(|n| (n.parse().unwrap(), v.clone())))
            .collect();
        jobs.sort();
        jobs.into_iter().map(|(_, v)| v).collect()
    }
}

/// What the server does with a request that passed signature checks.
enum Reply {
    Json(serde_json::Value),
    Raw {
        status: u16,
        body: Vec<u8>,
    },
    /// Close with RST after reading the request.
    Reset,
    /// Never answer.
    Hang,
    /// A chunked 200 that never ends.
    Endless,
    /// Promise 1000 bytes, send a few, close.
    CutShort,
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                tokio::spawn(serve_one(stream, handler.clone(), log.clone()));
            }
        });
        Server { url: format!("http://{addr}/iaas/"), seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn client(&self) -> Client {
        self.client_with(SK, Duration::from_secs(10))
    }

    fn client_with(&self, secret: &str, request_timeout: Duration) -> Client {
        let mut settings = Settings::new(self.url.parse().unwrap(), Credentials::new(AK, secret));
        settings.request_timeout = request_timeout;
        settings.connect_timeout = Duration::from_secs(5);
        Client::new(&settings).unwrap()
    }
}

async fn serve_one(mut stream: TcpStream, handler: Arc<Handler>, log: Arc<Mutex<Vec<Seen>>>) {
    let Some(seen) = read_request(&mut stream).await else { return };
    log.lock().unwrap().push(seen.clone());
    let reply = match check(&seen) {
        Some(refusal) => refusal,
        None => handler(&seen),
    };
    let (status, body) = match reply {
        Reply::Json(v) => (200, v.to_string().into_bytes()),
        Reply::Raw { status, body } => (status, body),
        Reply::Reset => {
            stream.set_zero_linger().unwrap();
            drop(stream);
            return;
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        Reply::Endless => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
            chunk.extend(std::iter::repeat_n(b' ', 64 * 1024));
            chunk.extend_from_slice(b"\r\n");
            // Until the client hangs up.
            while stream.write_all(&chunk).await.is_ok() {}
            return;
        }
        Reply::CutShort => {
            let msg =
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"ret_code\":0,";
            let _ = stream.write_all(msg.as_bytes()).await;
            let _ = stream.shutdown().await;
            return;
        }
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

async fn read_request(stream: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let header = |name: &str| {
        head.split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    let (path, query) =
        target.split_once('?').map_or((target.clone(), String::new()), |(p, q)| (p.to_owned(), q.to_owned()));
    let body = String::from_utf8(body).ok()?;
    let source = if method == "POST" { &body } else { &query };
    let params = url::form_urlencoded::parse(source.as_bytes()).into_owned().collect();
    Some(Seen {
        method,
        path,
        query,
        body,
        content_type: header("content-type"),
        user_agent: header("user-agent"),
        params,
    })
}

/// The API's own checks: signature (1200) and time stamp within 60 s (1300).
fn check(seen: &Seen) -> Option<Reply> {
    let method = if seen.method == "POST" { Method::Post } else { Method::Get };
    let given = seen.param("signature").unwrap_or_default().to_owned();
    let params: Vec<(String, String)> = seen.params.iter().filter(|(k, _)| k != "signature").cloned().collect();
    let alg = SignatureMethod::from_param(seen.param("signature_method").unwrap_or_default())?;
    if seen.param("access_key_id") != Some(AK)
        || !signer::verify(method, &seen.path, &params, SK.as_bytes(), alg, &given)
    {
        return Some(Reply::Json(json!({"ret_code": 1200, "message": "AuthFailure, signature not matched"})));
    }
    let ts = signer::parse_time_stamp(seen.param("time_stamp").unwrap_or_default())?;
    if (Utc::now() - ts).num_seconds().abs() > 60 {
        return Some(Reply::Json(json!({"ret_code": 1300, "message": "request expired"})));
    }
    None
}

/// A faithful-enough API: jobs for submitted requests, job_set for DescribeJobs.
fn api(seen: &Seen) -> Reply {
    match seen.param("action") {
        Some("RunClusterCustomService") => Reply::Json(json!({
            "action": "RunClusterCustomServiceResponse", "ret_code": 0, "job_id": "j-abcdefgh123",
            "service": seen.param("service"), "role": seen.param("role"), "cluster_id": seen.param("cluster"),
        })),
        Some("DescribeJobs") => {
            let jobs: Vec<_> = seen
                .jobs()
                .into_iter()
                .map(|id| json!({"job_id": id, "job_action": "RunClusterCustomService", "status": "successful"}))
                .collect();
            Reply::Json(
                json!({"action": "DescribeJobsResponse", "ret_code": 0, "total_count": jobs.len(), "job_set": jobs}),
            )
        }
        _ => Reply::Json(json!({"ret_code": 1101, "message": "no such action"})),
    }
}

fn zone() -> Zone {
    Zone::parse("sh1a").unwrap()
}

fn cluster() -> ClusterId {
    ClusterId::parse("cl-ouhutv70").unwrap()
}

async fn del_user(client: &Client) -> Call<qc_offboard::qingcloud::types::RunClusterCustomServiceResponse> {
    client
        .run_cluster_custom_service(&cluster(), &zone(), ROLE_MAININSTANCE, DEL_USER, &DelUserParams::new("u1", "%"))
        .await
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("j-{i:011}")).collect()
}

#[tokio::test]
async fn del_user_is_signed_sent_and_recorded() {
    let server = Server::start(api).await;
    let call = del_user(&server.client()).await;
    let resp = call.result.expect("accepted");
    assert_eq!(resp.job_id, "j-abcdefgh123");
    assert_eq!(call.record.job_id.as_deref(), Some("j-abcdefgh123"));
    assert_eq!((call.record.http_status, call.record.ret_code), (Some(200), Some(0)));
    assert_eq!(call.record.action, "RunClusterCustomService");
    assert!(call.record.params.iter().all(|(k, _)| k != "signature"));
    let names: Vec<&str> = call.record.params.iter().map(|(k, _)| k.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "params are recorded in canonical order");

    let seen = &server.seen()[0];
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("GET", "/iaas/"));
    assert_eq!(seen.param("service_params"), Some(r#"{"host":"%","user":"u1"}"#));
    assert_eq!(seen.param("zone"), Some("sh1a"));
    assert_eq!(seen.param("role"), Some("maininstance"));
    assert_eq!(seen.param("version"), Some("1"));
    assert_eq!(seen.user_agent.as_deref(), Some(concat!("qc-offboard/", env!("CARGO_PKG_VERSION"))));
    // The sent parameters are exactly the recorded ones plus the signature.
    let mut sent: Vec<_> = seen.params.iter().filter(|(k, _)| k != "signature").cloned().collect();
    sent.sort();
    assert_eq!(sent, call.record.params);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_verifying_server() {
    let server = Server::start(api).await;
    let call = del_user(&server.client_with("not-the-secret", Duration::from_secs(10))).await;
    let err = call.result.unwrap_err();
    assert!(matches!(err, ApiError::AuthFailed(_)), "{err:?}");
    assert_eq!(call.record.ret_code, Some(1200));
}

#[tokio::test]
async fn the_signed_path_is_the_endpoint_path() {
    // Without the trailing slash the path differs, and so must the signature.
    let server = Server::start(api).await;
    let settings = Settings::new(server.url.trim_end_matches('/').parse().unwrap(), Credentials::new(AK, SK));
    let call = del_user(&Client::new(&settings).unwrap()).await;
    assert!(call.result.is_ok(), "{:?}", call.result);
    assert_eq!(server.seen()[0].path, "/iaas");
}

#[tokio::test]
async fn describe_jobs_splits_into_batches_of_100() {
    let server = Server::start(api).await;
    let all = ids(250);
    let calls = server.client().describe_jobs(&zone(), &all).await;
    assert_eq!(calls.len(), 3);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    let mut echoed = Vec::new();
    for (i, (call, req)) in calls.iter().zip(&seen).enumerate() {
        let expect = if i < 2 { 100 } else { 50 };
        assert_eq!(req.jobs().len(), expect);
        assert_eq!(req.param("limit"), Some(expect.to_string().as_str()));
        assert_eq!(req.param("verbose"), Some("0"));
        let resp: &DescribeJobsResponse = call.result.as_ref().expect("signature verified and answered");
        echoed.extend(resp.job_set.iter().map(|j| j.job_id.clone()));
        assert!(call.record.params.iter().any(|(k, v)| k == "limit" && *v == expect.to_string()));
    }
    assert_eq!(echoed, all, "every id asked once, in order");
    assert!(server.client().describe_jobs(&zone(), &[]).await.is_empty());
    assert_eq!(server.seen().len(), 3, "no ids, no request");
}

#[tokio::test]
async fn long_queries_are_posted_as_forms() {
    let server = Server::start(api).await;
    let client = server.client();
    let short = client.describe_jobs(&zone(), &ids(10)).await;
    let long = client.describe_jobs(&zone(), &ids(100)).await;
    assert!(short[0].result.is_ok() && long[0].result.is_ok(), "both verified: {:?}", long[0].result);
    let seen = server.seen();
    assert_eq!(seen[0].method, "GET");
    assert!(seen[0].body.is_empty());
    assert_eq!(seen[1].method, "POST", "100 ids make a query longer than 2000 bytes");
    assert!(seen[1].query.is_empty(), "nothing in the URL of a POST");
    assert_eq!(seen[1].content_type.as_deref(), Some("application/x-www-form-urlencoded"));
    assert_eq!(seen[1].jobs().len(), 100);
    assert!(seen[1].body.contains("signature="));
}

#[tokio::test]
async fn filtered_pages_follow_total_count() {
    // 250 matching jobs, served in pages by offset/limit.
    let server = Server::start(|seen: &Seen| {
        let offset: usize = seen.param("offset").unwrap().parse().unwrap();
        let limit: usize = seen.param("limit").unwrap().parse().unwrap();
        assert_eq!(seen.param("job_action"), Some("RunClusterCustomService"));
        assert_eq!(seen.param("status.1"), Some("pending"));
        assert_eq!(seen.param("status.2"), Some("working"));
        let jobs: Vec<_> = (offset..(offset + limit).min(250))
            .map(|i| json!({"job_id": format!("j-{i}"), "status": "working"}))
            .collect();
        Reply::Json(json!({"ret_code": 0, "total_count": 250, "job_set": jobs}))
    })
    .await;
    let client = server.client();
    let filter = JobFilter {
        job_action: Some("RunClusterCustomService".into()),
        status: vec!["pending".into(), "working".into()],
        offset: 0,
        limit: 500,
    };
    let page = client.describe_jobs_filtered(&zone(), &filter).await;
    assert_eq!(page.result.unwrap().job_set.len(), 100, "limit is clamped to 100");

    let pages = client.describe_jobs_pages(&zone(), &filter, 10).await;
    let sizes: Vec<usize> = pages.iter().map(|c| c.result.as_ref().unwrap().job_set.len()).collect();
    assert_eq!(sizes, [100, 100, 50]);
    let offsets: Vec<_> = server.seen()[1..].iter().map(|s| s.param("offset").unwrap().to_owned()).collect();
    assert_eq!(offsets, ["0", "100", "200"]);

    let bounded = client.describe_jobs_pages(&zone(), &filter, 2).await;
    assert_eq!(bounded.len(), 2, "stops at the page bound");
}

/// An API that serves fewer items per page than asked: a short page is not the end while
/// `total_count` says more remain (the client stopped there, so discovery would have pinned 40
/// of 250 clusters without a word).
#[tokio::test]
async fn short_pages_are_followed_to_total_count() {
    let server = Server::start(|seen: &Seen| {
        let offset: usize = seen.param("offset").unwrap().parse().unwrap();
        let clusters: Vec<_> = (offset..(offset + 40).min(250))
            .map(|i| json!({"cluster_id": format!("cl-{i}"), "app_id": "app-00r26u27", "status": "active"}))
            .collect();
        Reply::Json(json!({"ret_code": 0, "total_count": 250, "cluster_set": clusters}))
    })
    .await;
    let query = ClusterQuery { apps: vec!["app-00r26u27".into()], status: Vec::new(), tags: Vec::new() };
    let pages = server.client().describe_clusters_pages(&zone(), &query, 100).await;
    let listed: usize = pages.iter().map(|c| c.result.as_ref().unwrap().cluster_set.len()).sum();
    assert_eq!((pages.len(), listed), (7, 250));
}

#[tokio::test]
async fn each_ret_code_maps_to_its_class() {
    let server = Server::start(|seen: &Seen| {
        let code: i64 = seen.param("cluster").unwrap().trim_start_matches("cl-c").parse().unwrap();
        Reply::Json(json!({"ret_code": code, "message": format!("message for {code}")}))
    })
    .await;
    let client = server.client();
    let cases = [
        (2500, "throttled"),
        (5000, "transient"),
        (5100, "transient"),
        (5300, "transient"),
        (1300, "expired"),
        (1200, "auth_failed"),
        (1100, "permanent"),
        (1101, "permanent"),
        (1400, "permanent"),
        (2100, "permanent"),
        (2400, "permanent"),
    ];
    for (code, class) in cases {
        let cluster = ClusterId::parse(&format!("cl-c{code}")).unwrap();
        let call = client
            .run_cluster_custom_service(&cluster, &zone(), ROLE_MAININSTANCE, DEL_USER, &DelUserParams::new("u1", "%"))
            .await;
        let err = call.result.unwrap_err();
        assert_eq!(err.class(), class, "{code}");
        assert_eq!((err.ret_code(), err.http_status()), (Some(code), Some(200)), "{code}");
        assert!(!err.may_have_taken_effect(), "the API answered {code}");
        let expected_message = format!("message for {code}");
        assert_eq!(err.message(), expected_message);
        assert_eq!(call.record.ret_code, Some(code));
        assert_eq!(call.record.message.as_deref(), Some(expected_message.as_str()));
        assert_eq!(call.record.job_id, None);
    }
}

#[tokio::test]
async fn accepted_without_a_job_id_is_not_ok() {
    let server =
        Server::start(|_: &Seen| Reply::Json(json!({"ret_code": 0, "action": "RunClusterCustomServiceResponse"})))
            .await;
    let call = del_user(&server.client()).await;
    let err = call.result.unwrap_err();
    assert!(matches!(err, ApiError::Permanent(_)), "{err:?}");
    assert!(err.may_have_taken_effect(), "it was accepted: the runner must look for the job");
    assert_eq!(call.record.ret_code, Some(0));
}

#[tokio::test]
async fn http_502_is_transient_and_ambiguous() {
    let server = Server::start(|_: &Seen| Reply::Raw { status: 502, body: b"<html>Bad Gateway</html>".to_vec() }).await;
    let call = del_user(&server.client()).await;
    let err = call.result.unwrap_err();
    assert!(matches!(err, ApiError::Transient(_)), "{err:?}");
    assert_eq!((err.http_status(), err.ret_code()), (Some(502), None));
    assert!(err.may_have_taken_effect());
    assert_eq!(call.record.http_status, Some(502));
}

#[tokio::test]
async fn a_non_json_200_is_not_the_api_and_a_del_user_so_answered_may_have_taken_effect() {
    let server =
        Server::start(|_: &Seen| Reply::Raw { status: 200, body: b"<html>captive portal</html>".to_vec() }).await;
    let call = del_user(&server.client()).await;
    let err = call.result.unwrap_err();
    assert!(matches!(err, ApiError::NotApi(_)) && err.is_not_api(), "{err:?}");
    assert_eq!(err.class(), "not_api");
    assert_eq!(err.message(), "the body is not JSON: <html>captive portal</html>");
    assert!(err.may_have_taken_effect(), "the request reached something that may have passed it on");
    assert_eq!((call.record.http_status, call.record.ret_code), (Some(200), None));

    let server = Server::start(|_: &Seen| Reply::Json(json!({"hello": "world"}))).await;
    let err = del_user(&server.client()).await.result.unwrap_err();
    assert!(matches!(err, ApiError::NotApi(_)) && err.message().contains("ret_code"), "{err:?}");
    let server = Server::start(|_: &Seen| Reply::Json(json!({"ret_code": "0"}))).await;
    let err = del_user(&server.client()).await.result.unwrap_err();
    assert!(err.is_not_api(), "a ret_code that is not an integer: {err:?}");

    // A read answered so changed nothing.
    let server = Server::start(|_: &Seen| Reply::Raw { status: 200, body: b"<!DOCTYPE html><p>hi</p>".to_vec() }).await;
    let calls = server.client().describe_jobs(&zone(), &ids(3)).await;
    let err = calls[0].result.as_ref().unwrap_err();
    assert!(err.is_not_api() && !err.may_have_taken_effect(), "{err:?}");
    let page = server.client().describe_jobs_filtered(&zone(), &JobFilter::default()).await;
    let err = page.result.unwrap_err();
    assert!(err.is_not_api() && !err.may_have_taken_effect(), "{err:?}");

    // A wrong shape under ret_code 0 is the API answering oddly, not something else.
    let server = Server::start(|_: &Seen| Reply::Json(json!({"ret_code": 0, "job_set": 7}))).await;
    let err = server.client().describe_jobs(&zone(), &ids(1)).await.remove(0).result.unwrap_err();
    assert!(matches!(err, ApiError::Permanent(_)), "{err:?}");
}

// Against the simulator: what the runner reads from a call beyond its result.

fn sim_client(sim: &qc_offboard::sim::SimHandle) -> Client {
    let settings = Settings::new(
        sim.endpoint().parse().unwrap(),
        Credentials::new(qc_offboard::sim::DEFAULT_ACCESS_KEY_ID, qc_offboard::sim::DEFAULT_SECRET_ACCESS_KEY),
    );
    Client::new(&settings).unwrap()
}

#[tokio::test]
async fn the_server_date_is_recorded_and_gives_the_clock_skew() {
    let sim = crate::helpers::start_sim(crate::helpers::world("{}")).await;
    let call = sim_client(&sim).describe_jobs_filtered(&zone(), &JobFilter::default()).await;
    assert!(call.result.is_ok(), "{:?}", call.result);
    let date = call.record.server_date.expect("the simulator sends a Date header");
    assert!((date - call.record.started_at).num_seconds().abs() <= 2, "{date} vs {}", call.record.started_at);
    let skew = call.record.clock_skew().unwrap();
    assert!(skew.num_milliseconds().abs() <= 2000, "{skew}");
    sim.shutdown().await;

    // The API's clock five minutes ahead: our time stamps are refused, and the Date says why.
    let sim = crate::helpers::start_sim(crate::helpers::world("clock_offset_s: 300")).await;
    let call = sim_client(&sim).describe_jobs_filtered(&zone(), &JobFilter::default()).await;
    assert!(matches!(call.result, Err(ApiError::Expired(_))), "{:?}", call.result);
    let skew = call.record.clock_skew().unwrap();
    assert!((298..=302).contains(&skew.num_seconds()), "{skew}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_2100_for_an_unknown_job_names_it_and_html_everywhere_is_not_the_api() {
    let sim = crate::helpers::start_sim(crate::helpers::world("{}")).await;
    let client = sim_client(&sim);
    let ok = del_user(&client).await.result.unwrap();
    let calls = client.describe_jobs(&zone(), &[ok.job_id.clone(), "j-nosuchjob01".to_owned()]).await;
    let err = calls[0].result.as_ref().unwrap_err();
    assert!(matches!(err, ApiError::Permanent(_)) && !err.may_have_taken_effect(), "{err:?}");
    assert_eq!(err.unknown_job_id(), Some("j-nosuchjob01"));
    assert_eq!(err.message(), "ResourceNotFound, job [j-nosuchjob01] not found");
    sim.shutdown().await;

    let sim = crate::helpers::start_sim(crate::helpers::world("api: {html_everywhere: true}")).await;
    let client = sim_client(&sim);
    let err = del_user(&client).await.result.unwrap_err();
    assert!(err.is_not_api() && err.may_have_taken_effect(), "{err:?}");
    let err = client.describe_jobs(&zone(), &ids(2)).await.remove(0).result.unwrap_err();
    assert!(err.is_not_api() && !err.may_have_taken_effect(), "{err:?}");
    assert!(err.to_string().starts_with("this is not the QingCloud API"), "{err}");
    let stats = sim.stats();
    assert_eq!((stats.jobs, stats.requests_of("RunClusterCustomService")), (0, 1));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_timeout_is_transient_and_ambiguous() {
    let server = Server::start(|_: &Seen| Reply::Hang).await;
    let call = del_user(&server.client_with(SK, Duration::from_millis(300))).await;
    let err = call.result.unwrap_err();
    assert!(matches!(err, ApiError::Transient(_)), "{err:?}");
    assert!(err.may_have_taken_effect(), "the request was sent");
    assert!(err.message().contains("timed out"), "{}", err.message());
    assert_eq!(call.record.http_status, None);
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn a_reset_connection_is_transient_and_ambiguous() {
    let server = Server::start(|_: &Seen| Reply::Reset).await;
    let err = del_user(&server.client()).await.result.unwrap_err();
    assert!(matches!(err, ApiError::Transient(_)), "{err:?}");
    assert!(err.may_have_taken_effect(), "the request reached the server before the reset");
    assert!(err.message().contains("connection lost before the answer"), "{}", err.message());
}

#[tokio::test]
async fn a_body_cut_short_is_transient_and_ambiguous() {
    let server = Server::start(|_: &Seen| Reply::CutShort).await;
    let err = del_user(&server.client()).await.result.unwrap_err();
    assert!(matches!(err, ApiError::Transient(_)), "{err:?}");
    assert_eq!(err.http_status(), Some(200));
    assert!(err.may_have_taken_effect());
}

#[tokio::test]
async fn a_refused_connection_sent_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let settings = Settings::new(format!("http://{addr}/iaas/").parse().unwrap(), Credentials::new(AK, SK));
    let call = del_user(&Client::new(&settings).unwrap()).await;
    let err = call.result.unwrap_err();
    assert!(matches!(err, ApiError::Transient(_)), "{err:?}");
    assert!(!err.may_have_taken_effect(), "connecting failed: nothing was sent");
    assert!(err.message().contains("cannot connect"), "{}", err.message());
}

#[tokio::test]
async fn oversized_bodies_are_not_read_into_memory() {
    // Declared too long: refused before reading.
    let server = Server::start(|_: &Seen| Reply::Raw { status: 200, body: vec![b' '; MAX_BODY_BYTES + 1] }).await;
    let err = del_user(&server.client()).await.result.unwrap_err();
    assert!(matches!(err, ApiError::Permanent(_)) && err.message().contains("longer than"), "{err:?}");

    // Never ends: reading stops at the limit (the test would hang or run out of memory otherwise).
    let server = Server::start(|_: &Seen| Reply::Endless).await;
    let err = del_user(&server.client()).await.result.unwrap_err();
    assert!(matches!(err, ApiError::Permanent(_)) && err.message().contains("longer than"), "{err:?}");
    assert!(err.may_have_taken_effect());
}

#[tokio::test]
async fn every_request_carries_a_fresh_time_stamp() {
    let server = Server::start(api).await;
    let client = server.client().with_clock_offset(TimeDelta::minutes(-10));
    let err = del_user(&client).await.result.unwrap_err();
    assert!(matches!(err, ApiError::Expired(_)), "{err:?}");
    client.set_clock_offset(TimeDelta::zero());
    assert!(del_user(&client).await.result.is_ok(), "the next request is stamped anew");
    let seen = server.seen();
    let stamps: Vec<_> =
        seen.iter().map(|s| signer::parse_time_stamp(s.param("time_stamp").unwrap()).unwrap()).collect();
    assert!(stamps[1] - stamps[0] >= TimeDelta::minutes(9));
}

/// Counts `ready()` and notes how many requests the server had seen at that moment.
struct CountingGate {
    server_seen: Arc<Mutex<Vec<Seen>>>,
    readies: AtomicUsize,
    seen_at_ready: Mutex<Vec<usize>>,
    permits: tokio::sync::Semaphore,
}

impl Gate for CountingGate {
    fn ready(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.readies.fetch_add(1, Ordering::SeqCst);
            self.permits.acquire().await.unwrap().forget();
            self.seen_at_ready.lock().unwrap().push(self.server_seen.lock().unwrap().len());
        })
    }
}

#[tokio::test]
async fn the_gate_is_awaited_before_every_request() {
    let server = Server::start(api).await;
    let gate = Arc::new(CountingGate {
        server_seen: server.seen.clone(),
        readies: AtomicUsize::new(0),
        seen_at_ready: Mutex::new(Vec::new()),
        permits: tokio::sync::Semaphore::new(0),
    });
    let client = Arc::new(server.client().with_gate(gate.clone()));

    let c = client.clone();
    let task = tokio::spawn(async move { c.describe_jobs(&zone(), &ids(250)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.seen().len(), 0, "nothing is sent while the gate is closed");
    assert_eq!(gate.readies.load(Ordering::SeqCst), 1);

    gate.permits.add_permits(3);
    let calls = task.await.unwrap();
    assert_eq!(calls.len(), 3);
    gate.permits.add_permits(1);
    assert!(del_user(&client).await.result.is_ok());

    assert_eq!(gate.readies.load(Ordering::SeqCst), 4, "once per HTTP request");
    assert_eq!(server.seen().len(), 4);
    assert_eq!(*gate.seen_at_ready.lock().unwrap(), [0, 1, 2, 3], "each request passed the gate before it was sent");
}

/// Everything written by a TRACE-level subscriber, for leak checks.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_secret_appears_in_no_output() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut outputs = Vec::new();
    let ok = Server::start(api).await;
    let client = ok.client();
    outputs.push(format!("{client:?}"));
    let call = del_user(&client).await;
    outputs.push(format!("{call:?}"));
    for call in client.describe_jobs(&zone(), &ids(150)).await {
        outputs.push(format!("{call:?}"));
    }
    let wrong = del_user(&ok.client_with("wrong", Duration::from_secs(5))).await;
    outputs.push(format!("{wrong:?}"));
    for reply in [
        (|_: &Seen| Reply::Raw { status: 502, body: b"bad gateway".to_vec() }) as fn(&Seen) -> Reply,
        |_: &Seen| Reply::Reset,
        |_: &Seen| Reply::CutShort,
        |_: &Seen| Reply::Raw { status: 200, body: b"not json".to_vec() },
        |_: &Seen| Reply::Json(json!({"ret_code": 1400, "message": "PermissionDenied"})),
    ] {
        let server = Server::start(reply).await;
        let call = del_user(&server.client()).await;
        let err = call.result.as_ref().unwrap_err();
        outputs.extend([format!("{call:?}"), format!("{err}"), format!("{err:?}")]);
    }
    let settings = Settings::new(ok.url.parse().unwrap(), Credentials::new(AK, SK));
    outputs.extend([
        format!("{settings:?}"),
        format!("{settings}"),
        settings.redacted_summary(),
        format!("{:?}", settings.credentials),
        format!("{}", settings.credentials),
    ]);

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("TRACE") && log.contains("DescribeJobs"), "the capture works: {log}");
    assert!(!log.contains(SK), "secret in the log");
    for out in &outputs {
        assert!(!out.contains(SK), "secret in {out}");
    }
    assert!(outputs.iter().any(|o| o.contains(AK)), "the access key id is shown");
}
