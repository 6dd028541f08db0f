//! Compliance evidence: plan files and `run --plan` (content hash, target, two-person rule),
//! deadlines (`late`, on time vs late in `status`), the per-person evidence report, the HTML
//! page, and signed audit checkpoints.
//!
//! Tests marked `// run --plan` drive `run --plan` through the real binary against
//! the simulator.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use predicates::prelude::*;
use qc_offboard::report::{self, evidence, html};
use qc_offboard::sim::{SimHandle, Stats};
use qc_offboard::store::{ApiCallRow, Event, ReportFilter, Store, TaskChange, TaskState};
use serde_json::{json, Value};

use crate::helpers::{at, db_path, move_task, new_run, new_task, qc, raw_connection, start_sim, tempdir, world};

const ACCESS_KEY: &str = "QYACCESSKEYIDEXAMPLE";
const SECRET_KEY: &str = "SECRETACCESSKEY";

/// bob on two clusters, requested by alice.
const MANIFEST: &str = "version: 1
ticket: HR-9
requested_by: alice@example.com
reason: bob left
due_by: 2099-01-01T00:00:00Z
defaults: {zone: sh1a}
users:
  - user: bob
    clusters: [cl-a1, cl-b2]
";

struct Env {
    home: tempfile::TempDir,
    db: PathBuf,
    manifest: PathBuf,
    plan: PathBuf,
}

impl Env {
    fn new() -> Env {
        let home = tempdir();
        let manifest = home.path().join("hr-9.yaml");
        std::fs::write(&manifest, MANIFEST).unwrap();
        Env { db: db_path(home.path()), plan: home.path().join("plan.json"), manifest, home }
    }

    /// The binary with the simulator's credentials and this environment's database.
    fn qc(&self, endpoint: &str) -> assert_cmd::Command {
        let mut cmd = qc(self.home.path());
        cmd.env("QINGCLOUD_ACCESS_KEY", ACCESS_KEY)
            .env("QINGCLOUD_SECRET_KEY", SECRET_KEY)
            .env("QINGCLOUD_ENDPOINT", endpoint)
            .arg("--db")
            .arg(&self.db);
        cmd
    }

    fn make_plan(&self, endpoint: &str) -> Value {
        self.qc(endpoint).arg("plan").arg(&self.manifest).arg("--out").arg(&self.plan).assert().success();
        serde_json::from_str(&std::fs::read_to_string(&self.plan).unwrap()).unwrap()
    }

    fn run_plan(&self, endpoint: &str, extra: &[&str]) -> assert_cmd::assert::Assert {
        self.qc(endpoint)
            .args(["run", "--no-progress", "--poll-interval", "100ms", "--rate", "50/s", "--plan"])
            .arg(&self.plan)
            .args(extra)
            .assert()
    }
}

async fn fast_sim() -> SimHandle {
    start_sim(world("jobs: {pending_ms: 20, working_ms: 20}")).await
}

fn submissions(stats: &Stats) -> u64 {
    stats.requests_by_action.get("RunClusterCustomService").copied().unwrap_or(0)
}

#[test]
fn plan_out_needs_credentials() {
    let env = Env::new();
    qc(env.home.path())
        .arg("plan")
        .arg(&env.manifest)
        .arg("--out")
        .arg(&env.plan)
        .assert()
        .code(78)
        .stderr(predicate::str::contains("no API credentials"));
    assert!(!env.plan.exists());
}

#[test]
fn a_plan_file_names_its_target_and_hashes_its_content() {
    let env = Env::new();
    let plan = env.make_plan("http://127.0.0.1:1/iaas/");
    assert_eq!(plan["format"], "qc-offboard-plan/1");
    assert_eq!(plan["endpoint"], "http://127.0.0.1:1/iaas/");
    assert_eq!(plan["access_key_id"], ACCESS_KEY);
    assert_eq!(plan["requested_by"], "alice@example.com");
    assert_eq!(plan["tasks"].as_array().unwrap().len(), 2);
    let sha = qc_offboard::plan::file::content_hash(&{
        let mut v = plan.clone();
        v.as_object_mut().unwrap().remove("content_hash");
        v
    });
    assert_eq!(plan["content_hash"], json!(sha));
    let text = std::fs::read_to_string(&env.plan).unwrap();
    assert!(!text.contains(SECRET_KEY), "the secret key never appears in a plan");
    let loaded =
        qc_offboard::plan::file::PlanFile::load_verified(&env.plan, "http://127.0.0.1:1/iaas/", ACCESS_KEY).unwrap();
    assert_eq!(loaded.tasks.len(), 2);
    assert!(
        qc_offboard::plan::file::PlanFile::load_verified(&env.plan, "http://127.0.0.1:2/iaas/", ACCESS_KEY).is_err()
    );
}

#[test]
fn require_approval_without_an_approver_is_a_usage_error() {
    let env = Env::new();
    env.make_plan("http://127.0.0.1:1/iaas/");
    env.run_plan("http://127.0.0.1:1/iaas/", &["--require-approval"])
        .code(2)
        .stderr(predicate::str::contains("--approved-by"));
    qc(env.home.path())
        .arg("run")
        .arg(&env.manifest)
        .arg("--plan")
        .arg(&env.plan)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_plan_is_refused_and_nothing_is_sent() {
    // run --plan
    let sim = fast_sim().await;
    let endpoint = sim.endpoint();
    let env = Env::new();
    let mut plan = env.make_plan(&endpoint);
    plan["tasks"][1]["user"] = json!("carol");
    std::fs::write(&env.plan, serde_json::to_string_pretty(&plan).unwrap()).unwrap();
    env.run_plan(&endpoint, &[]).code(65).stderr(predicate::str::contains("content_hash"));
    assert_eq!(submissions(&sim.stats()), 0, "nothing was sent");

    // Added whitespace is not an edit; a dropped hash is.
    let env = Env::new();
    let mut plan = env.make_plan(&endpoint);
    plan.as_object_mut().unwrap().remove("content_hash");
    std::fs::write(&env.plan, plan.to_string()).unwrap();
    env.run_plan(&endpoint, &[]).code(65);
    assert_eq!(submissions(&sim.stats()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_for_another_endpoint_or_key_is_refused() {
    // run --plan
    let sim = fast_sim().await;
    let endpoint = sim.endpoint();
    let env = Env::new();
    env.make_plan("http://127.0.0.1:1/iaas/");
    env.run_plan(&endpoint, &[]).code(65).stderr(predicate::str::contains("endpoint"));

    let mut other_key = env.qc(&endpoint);
    other_key.env("QINGCLOUD_ACCESS_KEY", "QYOTHERKEY").arg("plan").arg(&env.manifest).arg("--out").arg(&env.plan);
    other_key.assert().success();
    env.run_plan(&endpoint, &[]).code(65).stderr(predicate::str::contains("access key id"));
    assert_eq!(submissions(&sim.stats()), 0, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_two_person_rule() {
    // run --plan
    let sim = fast_sim().await;
    let endpoint = sim.endpoint();
    let env = Env::new();
    env.make_plan(&endpoint);
    env.run_plan(&endpoint, &["--approved-by", "Alice@Example.com", "--require-approval"])
        .code(65)
        .stderr(predicate::str::contains("another person"));
    assert_eq!(submissions(&sim.stats()), 0, "nothing was sent");

    env.run_plan(&endpoint, &["--approved-by", "carol@example.com", "--require-approval"]).code(0);
    let out = env.qc(&endpoint).args(["report", "--user", "bob", "--format", "json"]).assert().success();
    let rows: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert_eq!(r["outcome"], "deleted");
        assert_eq!(r["approved_by"], "carol@example.com");
        assert_eq!(r["requested_by"], "alice@example.com");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_plan_executes_exactly_the_planned_tasks() {
    // run --plan
    let sim = fast_sim().await;
    let endpoint = sim.endpoint();
    let env = Env::new();
    env.make_plan(&endpoint);
    // The manifest grows after the plan was approved; the run follows the plan, not the file.
    std::fs::write(&env.manifest, MANIFEST.replace("[cl-a1, cl-b2]", "[cl-a1, cl-b2, cl-c3]")).unwrap();
    env.run_plan(&endpoint, &["--approved-by", "carol@example.com"]).code(0);
    let stats = sim.stats();
    assert_eq!(submissions(&stats), 2);
    for cluster in ["cl-a1", "cl-b2"] {
        assert_eq!(stats.account(cluster, "bob", "%").map(|a| a.del_user_accepted), Some(1), "{cluster}");
    }
    assert!(stats.account("cl-c3", "bob", "%").is_none_or(|a| a.del_user_accepted == 0));
}

// ---------------------------------------------------------------------------------------------
// Deadlines and evidence over a database written with fixed times.

/// Run 1: bob on cl-a1 (deleted in time), cl-b2 (deleted late), cl-c3 (failed, deadline past),
/// bobby on cl-a1 (a different person whose name starts with bob), carol on cl-a1 (pending,
/// deadline ahead). API calls: one submission per started task and one DescribeJobs round
/// asking about every job.
async fn fixture(store: &Store) -> i64 {
    let mut tasks = vec![
        new_task("cl-a1", "bob"),
        new_task("cl-b2", "bob"),
        new_task("cl-c3", "bob"),
        new_task("cl-a1", "bobby"),
        new_task("cl-a1", "carol"),
    ];
    for t in &mut tasks[..4] {
        t.due_by = Some(at("2020-11-28T12:00:00Z"));
    }
    tasks[4].due_by = Some(at("2099-01-01T00:00:00Z"));
    let run_id = store.create_run(&new_run(Some("HR-4711")), &tasks).await.unwrap();
    let ids: Vec<i64> = store.tasks(run_id).await.unwrap().iter().map(|t| t.id).collect();
    use TaskState::*;
    let finish = [
        (ids[0], "j-a", Deleted, "2020-11-28T11:00:00Z", 0, ""),
        (ids[1], "j-b", Deleted, "2020-11-28T13:30:00Z", 0, ""),
        (ids[2], "j-c", Failed, "2020-11-28T11:30:00Z", 2100, "<script>alert(\"cluster\")</script> not found"),
        (ids[3], "j-d", Deleted, "2020-11-28T11:00:00Z", 0, ""),
    ];
    for (id, job, to, done, ret, message) in finish {
        let start = TaskChange::new().increment_attempts().intent_at(at("2020-11-28T10:00:00Z"));
        move_task(store, id, Pending, Submitting, &start, json!({})).await;
        let call = ApiCallRow {
            action: "RunClusterCustomService".into(),
            params_json: json!({"action": "RunClusterCustomService", "service": "del_user",
                "service_params": format!("{{\"user\":\"{id}\"}}")})
            .to_string(),
            http_status: Some(200),
            ret_code: Some(0),
            message: None,
            job_id: Some(job.into()),
            started_at: at("2020-11-28T10:00:01Z"),
            latency_ms: 40,
        };
        store.record_call(run_id, Some(id), &call).await.unwrap();
        let change = TaskChange::new().job_id(job).ret_code(ret).message(message).finished_at(at(done));
        store.step(id, Event::Accepted, &TaskChange::new().job_id(job).ret_code(0), json!({})).await.unwrap().unwrap();
        move_task(store, id, Submitted, to, &change, json!({})).await;
    }
    let describe = ApiCallRow {
        action: "DescribeJobs".into(),
        params_json: json!({"action": "DescribeJobs", "jobs.1": "j-a", "jobs.2": "j-b", "jobs.3": "j-c",
            "jobs.4": "j-d", "limit": "4", "zone": "sh1a"})
        .to_string(),
        http_status: Some(200),
        ret_code: Some(0),
        message: None,
        job_id: None,
        started_at: at("2020-11-28T10:05:00Z"),
        latency_ms: 30,
    };
    store.record_call(run_id, None, &describe).await.unwrap();
    // Another run's DescribeJobs naming the same job id is not bob's evidence.
    let other = store.create_run(&new_run(None), &[new_task("cl-z9", "zed")]).await.unwrap();
    store.record_call(other, None, &describe).await.unwrap();
    run_id
}

#[tokio::test]
async fn late_is_computed_from_recorded_times() {
    let dir = tempdir();
    let store = Store::open(db_path(dir.path())).await.unwrap();
    let run_id = fixture(&store).await;
    // due_by is 2020-11-28T12:00:00Z for all but carol's task (2099).
    let now = at("2020-12-01T00:00:00Z");
    let rows = report::rows(&store, &ReportFilter { run_id: Some(run_id), ..Default::default() }, now).await.unwrap();
    let late: Vec<_> = rows.iter().map(|r| (r.cluster.as_str(), r.user.as_str(), r.late)).collect();
    assert_eq!(
        late,
        [
            ("cl-a1", "bob", false),
            ("cl-b2", "bob", true),
            ("cl-c3", "bob", true),
            ("cl-a1", "bobby", false),
            ("cl-a1", "carol", false)
        ]
    );
    // Before the deadline the failed task is not late yet; a deletion after it stays late.
    let early = report::rows(&store, &ReportFilter::default(), at("2020-11-28T11:45:00Z")).await.unwrap();
    assert!(!early[2].late && early[1].late);

    // status counts the same way as the report, in SQL.
    let counts = store.deadline_counts(Some(run_id), now).await.unwrap()[&run_id];
    assert_eq!((counts.on_time, counts.late, counts.open, counts.no_deadline), (2, 2, 1, 0));
    assert_eq!(counts.late as usize, rows.iter().filter(|r| r.late).count());
    store.close().await;

    let path = db_path(dir.path());
    let out = qc(dir.path()).args(["status", "--output", "json", "--db"]).arg(&path).assert().success();
    let runs: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let run = runs.as_array().unwrap().iter().find(|r| r["id"] == json!(run_id)).unwrap();
    // Judged now (after 2020-11-28): the failed task is late, carol's deadline is ahead.
    assert_eq!(run["deadline"], json!({"on_time": 2, "late": 2, "open": 1, "no_deadline": 0}));
    qc(dir.path())
        .args(["status", &run_id.to_string(), "--db"])
        .arg(&path)
        .assert()
        .success()
        .stdout(predicate::str::contains("deadline    2 on time, 2 late, 1 open, 0 without due_by"));
}

/// Every combination of state, due date and finish time: the SQL of `status` and the rule of
/// `report` agree.
#[tokio::test]
async fn status_and_report_agree_on_lateness() {
    let dir = tempdir();
    let store = Store::open(db_path(dir.path())).await.unwrap();
    let now = at("2026-06-01T00:00:00Z");
    let dues = [None, Some("2026-05-01T00:00:00Z"), Some("2026-07-01T00:00:00Z")];
    let mut tasks = Vec::new();
    for (i, state) in [TaskState::Pending, TaskState::NotDue, TaskState::Skipped].into_iter().enumerate() {
        for (j, due) in dues.iter().enumerate() {
            let mut t = new_task(&format!("cl-s{i}d{j}"), "u");
            t.state = state;
            t.due_by = due.map(at);
            tasks.push(t);
        }
    }
    let mut finals = Vec::new();
    for (k, to) in [TaskState::Deleted, TaskState::Failed, TaskState::RetryWait].into_iter().enumerate() {
        for (j, due) in dues.iter().enumerate() {
            for (f, fin) in ["2026-04-01T00:00:00Z", "2026-05-15T00:00:00Z"].into_iter().enumerate() {
                let mut t = new_task(&format!("cl-f{k}d{j}x{f}"), "u");
                t.due_by = due.map(at);
                tasks.push(t);
                finals.push((to, fin));
            }
        }
    }
    let run_id = store.create_run(&new_run(None), &tasks).await.unwrap();
    let rows = store.tasks(run_id).await.unwrap();
    let moving: Vec<_> = rows.iter().filter(|t| t.cluster.starts_with("cl-f")).collect();
    for (t, (to, fin)) in moving.iter().zip(&finals) {
        let change = TaskChange::new().finished_at(at(fin));
        move_task(&store, t.id, TaskState::Pending, *to, &change, json!({})).await;
    }
    let rows = report::rows(&store, &ReportFilter::default(), now).await.unwrap();
    let counts = store.deadline_counts(Some(run_id), now).await.unwrap()[&run_id];
    let late = rows.iter().filter(|r| r.late).count() as i64;
    let no_deadline = rows.iter().filter(|r| r.due_by.is_none()).count() as i64;
    assert_eq!(counts.late, late);
    assert_eq!(counts.no_deadline, no_deadline);
    assert_eq!(counts.on_time + counts.late + counts.open + counts.no_deadline, rows.len() as i64);
    assert!(late > 0 && counts.on_time > 0 && counts.open > 0);
}

#[tokio::test]
async fn the_evidence_for_one_person_lists_exactly_their_tasks() {
    let dir = tempdir();
    let path = db_path(dir.path());
    let store = Store::open(&path).await.unwrap();
    let run_id = fixture(&store).await;
    store.close().await;

    let out =
        qc(dir.path()).args(["report", "--user", "bob", "--format", "json", "--db"]).arg(&path).assert().success();
    let rows: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let accounts: Vec<_> = rows.iter().map(|r| (r["user"].as_str().unwrap(), r["cluster"].as_str().unwrap())).collect();
    assert_eq!(accounts, [("bob", "cl-a1"), ("bob", "cl-b2"), ("bob", "cl-c3")]);
    let first = &rows[0];
    assert_eq!(first["run_id"], json!(run_id));
    assert_eq!(first["requested_by"], "alice@example.com");
    assert_eq!(first["operator"], "ops");
    assert_eq!(first["requested_at"], "2020-11-28T10:00:01Z");
    assert_eq!(first["job_id"], "j-a");
    assert_eq!(first["finished_at"], "2020-11-28T11:00:00Z");
    assert_eq!(first["due_by"], "2020-11-28T12:00:00Z");
    for r in rows {
        let calls = r["api_calls"].as_array().unwrap();
        let actions: Vec<_> = calls.iter().map(|c| c["action"].as_str().unwrap()).collect();
        // Its own submission and the one DescribeJobs round of its run that asked about its job.
        assert_eq!(actions, ["RunClusterCustomService", "DescribeJobs"], "{r}");
        assert_eq!(calls[0]["job_id"], r["job_id"]);
        assert!(calls[0]["params"]["service_params"].as_str().unwrap().contains(&r["task_id"].to_string()));
        let audit = &r["audit"];
        assert_eq!(audit["records"], json!(5), "created, submitting, its call, submitted, final: {r}");
        assert_eq!(audit["verified"], json!(true));
    }
    // The table names each task, its calls, and the chain's verdict.
    qc(dir.path()).args(["report", "--user", "bob", "--db"]).arg(&path).assert().success().stdout(
        predicate::str::contains("3 tasks: 2 deleted, 1 failed; 2 late")
            .and(predicate::str::contains("bobby").not())
            .and(predicate::str::contains("carol").not())
            .and(predicate::str::contains("verified by the hash chain"))
            .and(predicate::str::contains("audit chain: intact")),
    );
    let csv = qc(dir.path()).args(["report", "--user", "bob", "--format", "csv", "--db"]).arg(&path).assert().success();
    let csv = String::from_utf8(csv.get_output().stdout.clone()).unwrap();
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.lines().next().unwrap().ends_with("failed_attempts,audit_seq_first,audit_seq_last"));

    // Someone edits a record of bob's last task: the tasks before it are still vouched for.
    let last_seq: i64 = rows[2]["audit"]["last_seq"].as_i64().unwrap();
    let mut raw = raw_connection(&path).await;
    sqlx::query("DROP TRIGGER audit_log_no_update").execute(&mut raw).await.unwrap();
    sqlx::query("UPDATE audit_log SET detail = replace(detail, '2100', '0') WHERE seq = ?")
        .bind(last_seq)
        .execute(&mut raw)
        .await
        .unwrap();
    let out =
        qc(dir.path()).args(["report", "--user", "bob", "--format", "json", "--db"]).arg(&path).assert().success();
    let rows: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let verified: Vec<_> = rows.as_array().unwrap().iter().map(|r| r["audit"]["verified"].clone()).collect();
    assert_eq!(verified, [json!(true), json!(true), json!(false)]);
    let why = rows[2]["not_verified"].to_string();
    assert!(why.contains(&format!("the audit chain breaks at record {last_seq}, within this row's records")), "{why}");
}

/// HTML without tags: the text an auditor reads, one line per non-empty line of text.
fn text_content(html: &str) -> String {
    let body = &html[html.find("<body>").unwrap()..];
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#x27;", "'");
    let text = text.replace("&amp;", "&");
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn the_html_report_renders() {
    let dir = tempdir();
    let store = Store::open(db_path(dir.path())).await.unwrap();
    let run_id = fixture(&store).await;
    let now = at("2020-12-01T00:00:00Z");
    let filter = ReportFilter { user: Some("bob".into()), ..Default::default() };
    let ev = evidence::gather(&store, &filter, now).await.unwrap();
    let mut out = Vec::new();
    html::write_html(&mut out, &ev, "user bob").unwrap();
    let page = String::from_utf8(out).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
    assert!(!page.contains("<script"), "values are escaped and the page has no scripts");
    assert!(page.contains("&lt;script&gt;alert(&quot;cluster&quot;)"));
    assert!(!page.contains("src=") && !page.contains("href="), "self-contained");
    // The run's start is the wall clock of the test: name it.
    let started = report::time(store.run(run_id).await.unwrap().unwrap().started_at);
    let text = text_content(&page).replace(&started, "[run started]");
    // Records are stamped with the wall clock when the fixture is written: microseconds show it.
    let filters = vec![(r"[0-9a-f]{64}", "[hash]"), (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", "[recorded]")];
    insta::with_settings!({filters => filters}, {
        insta::assert_snapshot!("evidence_html_text", text);
    });
}

// ---------------------------------------------------------------------------------------------
// Signed checkpoints.

#[tokio::test]
async fn a_forged_checkpoint_signature_is_rejected() {
    let dir = tempdir();
    let path = db_path(dir.path());
    let store = Store::open(&path).await.unwrap();
    fixture(&store).await;
    store.close().await;
    let key = dir.path().join("audit.key");
    let run = |args: &[&str]| {
        let mut cmd = qc(dir.path());
        cmd.arg("--db").arg(&path).args(args);
        cmd.assert()
    };
    let key_s = key.to_str().unwrap();

    // Without --key, the checkpoint is unchanged: SEQ:HASH.
    let plain = run(&["audit", "checkpoint"]).success();
    let plain = String::from_utf8(plain.get_output().stdout.clone()).unwrap().trim().to_owned();
    assert_eq!(plain.split(':').count(), 2);

    run(&["audit", "checkpoint", "--key", key_s]).code(78).stderr(predicate::str::contains("audit.key"));
    let signed = run(&["audit", "checkpoint", "--key", key_s, "--create-key"]).success();
    let signed = String::from_utf8(signed.get_output().stdout.clone()).unwrap().trim().to_owned();
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let key_hex = std::fs::read_to_string(&key).unwrap().trim().to_owned();
    assert_eq!(key_hex.len(), 64);
    assert!(!signed.contains(&key_hex), "the key is never printed");
    assert!(signed.starts_with(&format!("{plain}:")), "{signed} signs {plain}");
    run(&["audit", "checkpoint", "--key", key_s, "--create-key"])
        .code(78)
        .stderr(predicate::str::contains("already exists"));

    run(&["audit", "verify", "--checkpoint", &signed, "--key", key_s])
        .success()
        .stdout(predicate::str::contains("checkpoint signature is valid").and(predicate::str::contains("intact")));

    // A forged signature, a signature moved to another checkpoint, another key, no signature.
    let (cp, mac) = signed.rsplit_once(':').unwrap();
    let flipped = format!("{cp}:{}{}", if mac.starts_with('0') { '1' } else { '0' }, &mac[1..]);
    let (seq, hash) = cp.split_once(':').unwrap();
    let moved = format!("{}:{hash}:{mac}", seq.parse::<i64>().unwrap() - 1);
    for forged in [flipped.as_str(), moved.as_str()] {
        run(&["audit", "verify", "--checkpoint", forged, "--key", key_s])
            .code(1)
            .stdout(predicate::str::contains("signature does NOT match"));
    }
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, format!("{}\n", "5a".repeat(32))).unwrap();
    run(&["audit", "verify", "--checkpoint", &signed, "--key", other_key.to_str().unwrap()])
        .code(1)
        .stdout(predicate::str::contains("signature does NOT match"));
    run(&["audit", "verify", "--checkpoint", cp, "--key", key_s])
        .code(1)
        .stdout(predicate::str::contains("NOT signed"));
}

// ---------------------------------------------------------------------------------------------
// Signed approvals: plan files signed with SSH keys, checked against an allowed_signers file.
// The keys and signatures come from the real ssh-keygen, so the check interoperates with it.

/// A new unencrypted ed25519 key `name` in `dir`; returns the private key's path and the
/// public key line.
fn keygen(dir: &std::path::Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen runs (install openssh-client)");
    assert!(status.success());
    let public = std::fs::read_to_string(dir.join(format!("{name}.pub"))).unwrap().trim().to_owned();
    (key, public)
}

/// `ssh-keygen -Y sign -f KEY -n NAMESPACE FILE`: writes FILE.sig.
fn ssh_sign(key: &std::path::Path, namespace: &str, file: &std::path::Path) {
    let out = std::process::Command::new("ssh-keygen")
        .args(["-Y", "sign", "-f"])
        .arg(key)
        .args(["-n", namespace])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `ssh-keygen -Y verify`, the auditor's independent check of a plan's signature.
fn ssh_verify(signers: &std::path::Path, principal: &str, file: &std::path::Path) -> bool {
    let out = std::process::Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f"])
        .arg(signers)
        .args(["-I", principal, "-n", "qc-offboard-plan", "-s"])
        .arg(qc_offboard::plan::approval::signature_path(file))
        .stdin(std::fs::File::open(file).unwrap())
        .output()
        .unwrap();
    out.status.success()
}

/// Keys for carol (an approver) and alice (the requester), both in allowed_signers; dave's
/// key is not listed.
struct Signers {
    carol: PathBuf,
    alice: PathBuf,
    dave: PathBuf,
    file: PathBuf,
}

fn signers(env: &Env) -> Signers {
    let dir = env.home.path();
    let (carol, carol_pub) = keygen(dir, "carol");
    let (alice, alice_pub) = keygen(dir, "alice");
    let (dave, _) = keygen(dir, "dave");
    let file = dir.join("allowed_signers");
    std::fs::write(
        &file,
        format!("# approvers\ncarol@example.com {carol_pub}\nalice@example.com namespaces=\"git,qc-offboard-plan\" {alice_pub}\n"),
    )
    .unwrap();
    Signers { carol, alice, dave, file }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_signed_by_an_allowed_approver_runs_and_the_signer_is_recorded() {
    // run --plan
    let sim = fast_sim().await;
    let endpoint = sim.endpoint();
    let env = Env::new();
    env.make_plan(&endpoint);
    let keys = signers(&env);
    ssh_sign(&keys.carol, "qc-offboard-plan", &env.plan);
    assert!(ssh_verify(&keys.file, "carol@example.com", &env.plan), "ssh-keygen accepts the signature");
    let signers = keys.file.to_str().unwrap();
    env.run_plan(&endpoint, &["--allowed-signers", signers, "--require-approval"]).code(0);
    assert_eq!(submissions(&sim.stats()), 2);

    let out = env.qc(&endpoint).args(["report", "--user", "bob", "--format", "json"]).assert().success();
    let rows: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    for r in rows.as_array().unwrap() {
        assert_eq!(r["approved_by"], "carol@example.com");
        assert_eq!(r["approval_signed"], json!(true));
        assert_eq!(r["verified"], json!(true), "{r}");
    }
    // The run_started record carries the signer's principal and key fingerprint.
    let mut raw = raw_connection(&env.db).await;
    let detail: String = sqlx::query_scalar("SELECT detail FROM audit_log WHERE kind = 'run_started'")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    let detail: Value = serde_json::from_str(&detail).unwrap();
    let approval = &detail["options"]["approval"];
    assert_eq!(approval["signed"], json!(true));
    assert_eq!(approval["principal"], "carol@example.com");
    assert!(approval["key_fingerprint"].as_str().unwrap().starts_with("SHA256:"), "{approval}");
    let table = env.qc(&endpoint).args(["report", "--user", "bob"]).assert().success();
    let table = String::from_utf8(table.get_output().stdout.clone()).unwrap();
    assert!(table.contains("carol@example.com (signed plan, key SHA256:"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_sign_writes_what_ssh_keygen_verifies() {
    let env = Env::new();
    env.make_plan("http://127.0.0.1:1/iaas/");
    let keys = signers(&env);
    qc(env.home.path())
        .args(["plan", "sign"])
        .arg(&env.plan)
        .arg("--key")
        .arg(&keys.carol)
        .assert()
        .success()
        .stdout(predicate::str::contains("signed").and(predicate::str::contains("SHA256:")));
    assert!(ssh_verify(&keys.file, "carol@example.com", &env.plan));
    assert!(!ssh_verify(&keys.file, "alice@example.com", &env.plan), "signed by carol, not alice");
    // A key protected by a passphrase is left to ssh-keygen.
    let locked = env.home.path().join("locked");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "secret words", "-f"])
        .arg(&locked)
        .status()
        .unwrap();
    assert!(status.success());
    qc(env.home.path())
        .args(["plan", "sign"])
        .arg(&env.plan)
        .arg("--key")
        .arg(&locked)
        .assert()
        .code(65)
        .stderr(predicate::str::contains("passphrase").and(predicate::str::contains("secret words").not()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_signatures_are_refused_and_nothing_is_sent() {
    // run --plan
    let sim = fast_sim().await;
    let endpoint = sim.endpoint();
    let env = Env::new();
    let plan = env.make_plan(&endpoint);
    let keys = signers(&env);
    let signers = keys.file.to_str().unwrap().to_owned();
    let sig = qc_offboard::plan::approval::signature_path(&env.plan);
    let refused = |extra: &[&str], why: &str| {
        let mut args = vec!["--allowed-signers", signers.as_str()];
        args.extend_from_slice(extra);
        env.run_plan(&endpoint, &args).code(65).stderr(predicate::str::contains(why));
        assert_eq!(submissions(&sim.stats()), 0, "nothing was sent ({why})");
    };

    // No .sig at all.
    refused(&["--require-approval"], "no signature");
    // The requester's own (valid, allowed) signature does not satisfy the two-person rule.
    ssh_sign(&keys.alice, "qc-offboard-plan", &env.plan);
    refused(&["--require-approval"], "signed by the requester");
    // A signature made for another purpose (git) is not an approval of the plan.
    std::fs::remove_file(&sig).unwrap();
    ssh_sign(&keys.carol, "git", &env.plan);
    refused(&[], "namespace \"git\"");
    // A key nobody listed.
    std::fs::remove_file(&sig).unwrap();
    ssh_sign(&keys.dave, "qc-offboard-plan", &env.plan);
    refused(&[], "does not allow");
    // A signature over the plan as it was, then the file is rewritten: same content hash
    // (whitespace is not content), different bytes.
    std::fs::remove_file(&sig).unwrap();
    ssh_sign(&keys.carol, "qc-offboard-plan", &env.plan);
    std::fs::write(&env.plan, plan.to_string()).unwrap();
    refused(&[], "does not match the plan file");
    // A typed name that is not the signer's.
    std::fs::write(&env.plan, serde_json::to_string_pretty(&plan).unwrap() + "\n").unwrap();
    std::fs::remove_file(&sig).unwrap();
    ssh_sign(&keys.carol, "qc-offboard-plan", &env.plan);
    refused(&["--approved-by", "mallory@example.com"], "is not the signer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_approval_is_shown_as_unsigned() {
    // run --plan
    let sim = fast_sim().await;
    let endpoint = sim.endpoint();
    let env = Env::new();
    env.make_plan(&endpoint);
    env.run_plan(&endpoint, &["--approved-by", "carol@example.com", "--require-approval"]).code(0);
    let out = env.qc(&endpoint).args(["report", "--user", "bob", "--format", "json"]).assert().success();
    let rows: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    for r in rows.as_array().unwrap() {
        assert_eq!(r["approval_signed"], json!(false), "{r}");
    }
    let table = env.qc(&endpoint).args(["report", "--user", "bob"]).assert().success();
    assert!(String::from_utf8_lossy(&table.get_output().stdout).contains("carol@example.com (UNSIGNED"));
    let html = env.qc(&endpoint).args(["report", "--format", "html"]).assert().success();
    assert!(String::from_utf8_lossy(&html.get_output().stdout).contains("unsigned"));
    let csv = env.qc(&endpoint).args(["report", "--user", "bob", "--format", "csv"]).assert().success();
    let csv = String::from_utf8(csv.get_output().stdout.clone()).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "approval_signed").unwrap();
    for line in csv.lines().skip(1) {
        assert_eq!(line.split(',').nth(col), Some("false"), "{line}");
    }
}

// ---------------------------------------------------------------------------------------------
// One row per account across retry runs, and why each attempt failed.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_failed_runs_roll_up_into_one_account_with_every_error() {
    // Every job fails (error_codes 5000): one attempt per run, then two retries.
    let sim = start_sim(world("jobs: {pending_ms: 20, working_ms: 20, fail_rate: 1.0}")).await;
    let endpoint = sim.endpoint();
    let env = Env::new();
    std::fs::write(&env.manifest, MANIFEST.replace("[cl-a1, cl-b2]", "[cl-a1]")).unwrap();
    let exec = ["--no-progress", "--poll-interval", "50ms", "--rate", "50/s", "--max-attempts", "1"];
    env.qc(&endpoint).arg("run").args(exec).arg(&env.manifest).assert().code(1);
    for run in ["1", "2"] {
        env.qc(&endpoint).args(["retry", run]).args(exec).assert().code(1);
    }
    let out = env.qc(&endpoint).args(["report", "--user", "bob", "--format", "json"]).assert().success();
    let rows: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 3, "one task per run");
    for r in rows.as_array().unwrap() {
        let failed = r["failed_attempts"].as_array().unwrap();
        assert_eq!(failed.len(), 1, "{r}");
        assert_eq!(failed[0]["error_codes"], "5000", "{r}");
        assert_eq!(failed[0]["to"], "failed");
    }

    let out = env.qc(&endpoint).args(["report", "--latest", "--format", "json"]).assert().success();
    let latest: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let latest = latest.as_array().unwrap();
    assert_eq!(latest.len(), 1, "{latest:?}");
    assert_eq!(latest[0]["outcome"], "failed");
    assert_eq!(latest[0]["summary"], "failed after 3 attempts in 3 runs");
    assert_eq!(latest[0]["runs"], json!([1, 2, 3]));
    assert_eq!(latest[0]["verified"], json!(true));
    env.qc(&endpoint).args(["report", "--latest"]).assert().success().stdout(
        predicate::str::contains("failed after 3 attempts in 3 runs").and(predicate::str::contains("1 accounts")),
    );

    // The page says why, for every attempt, in the API's words.
    let html = env.qc(&endpoint).args(["report", "--format", "html"]).assert().success();
    let text = text_content(&String::from_utf8(html.get_output().stdout.clone()).unwrap());
    assert!(text.contains("Where each account stands"), "{text}");
    assert!(text.contains("failed after 3 attempts in 3 runs"), "{text}");
    let attempts = text.lines().filter(|l| l.contains("→ failed") && l.contains("error_codes 5000")).count();
    assert_eq!(attempts, 3, "{text}");

    // Filters: the ticket, and an instant before anything started.
    let count = |args: &[&str]| {
        let out = env.qc(&endpoint).args(["report", "--format", "json"]).args(args).assert().success();
        serde_json::from_slice::<Value>(&out.get_output().stdout).unwrap().as_array().unwrap().len()
    };
    assert_eq!(count(&["--ticket", "HR-9"]), 3);
    assert_eq!(count(&["--ticket", "HR-10"]), 0);
    assert_eq!(count(&["--until", "2000-01-01T00:00:00Z"]), 0);
    assert_eq!(count(&["--until", "2999-01-01T00:00:00Z", "--run", "2"]), 1);
}
