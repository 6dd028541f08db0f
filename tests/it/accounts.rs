//! Several QingCloud accounts in one command: the config file's `accounts:`, a manifest's (or a
//! cluster's) `account`, one run per account with its own key pair, limiter and records, and
//! plan files and skipping keyed on the account. The real binary against the simulator.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::Value;

use crate::endings::{parse_with_prometheus_client, sample};
use crate::helpers::{start_sim, tempdir, world};
use crate::runner::{code, text, with_defaults, Rig};
use qc_offboard::sim::SimHandle;

const DEFAULT_KEY: &str = "QYACCESSKEYIDEXAMPLE";
const DEFAULT_SECRET: &str = "SECRETACCESSKEY";
const STAGING_KEY: &str = "QYSTAGINGKEY0000001";
const STAGING_SECRET: &str = "StagingSecret-77aa-do-not-print";

struct Accounts {
    home: tempfile::TempDir,
    sim: SimHandle,
    db: PathBuf,
    config: PathBuf,
}

impl Accounts {
    async fn new(jobs: &str) -> Accounts {
        let home = tempdir();
        let sim = start_sim(world(&format!(
            "credentials:\n  - {{access_key_id: {DEFAULT_KEY}, secret_access_key: {DEFAULT_SECRET}}}\n  \
             - {{access_key_id: {STAGING_KEY}, secret_access_key: '{STAGING_SECRET}'}}\n\
             quota: {{requests: 10000, window_s: 3600, scope: access_key}}\njobs: {jobs}\n"
        )))
        .await;
        let config = home.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "qy_access_key_id: {DEFAULT_KEY}\nqy_secret_access_key: {DEFAULT_SECRET}\nzone: sh1a\n\
                 accounts:\n  staging:\n    qy_access_key_id: {STAGING_KEY}\n    qy_secret_access_key: '{STAGING_SECRET}'\n    zone: pek3\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let db = home.path().join("audit.db");
        Accounts { home, sim, db, config }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.home.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The real binary with only the config file for credentials.
    fn cmd(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("qc-offboard"));
        cmd.env_clear()
            .env("HOME", self.home.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("QINGCLOUD_CONFIG", &self.config)
            .env("QINGCLOUD_ENDPOINT", self.sim.endpoint())
            .env("QC_OFFBOARD_DB", &self.db)
            .env("RUST_LOG", "qc_offboard=info")
            .arg("--no-progress")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, manifest: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["run", manifest.to_str().unwrap()];
        args.extend(with_defaults(extra));
        Rig::output(self.cmd(&args)).await
    }

    /// (cluster, access key) of every del_user the simulator received, in order.
    fn sent(&self) -> Vec<(String, String)> {
        self.sim.stats().requests.iter().map(|r| (r.cluster.clone(), r.access_key_id.clone())).collect()
    }

    async fn runs(&self) -> Vec<(i64, String, Option<String>)> {
        let mut conn = crate::helpers::raw_connection(&self.db).await;
        let rows: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT id, access_key_id, options FROM runs ORDER BY id")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        rows.into_iter()
            .map(|(id, key, options)| {
                let o: Value = serde_json::from_str(&options).unwrap();
                (id, key, o["account"].as_str().map(str::to_owned))
            })
            .collect()
    }
}

/// Two clusters of the default account and two of `staging`, named by a cluster entry of each
/// form; cl-b0 takes its zone from the staging account's, cl-a0/cl-a1 from the default's.
const TWO_ACCOUNTS: &str = "version: 1\nticket: OPS-7\nclusters:\n  \
    - {id: cl-a0, users: [bob]}\n  - {id: cl-a1, users: [bob]}\n  \
    - {id: cl-b0, account: staging, users: [bob]}\n\
    users:\n  - user: carol\n    clusters: [{id: cl-b1, zone: pek3, account: staging}]\n";

fn dump(out: &Output) -> String {
    format!("stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_account_runs_with_its_own_key_pair_and_run_and_a_second_run_skips_per_account() {
    let a = Accounts::new("{pending_ms: 10, working_ms: 10}").await;
    let m = a.write("m.yaml", TWO_ACCOUNTS);
    let out = a.run(&m, &[]).await;
    assert_eq!(code(&out), 0, "{}", dump(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("accounts: default run 1 exit 0, staging run 2 exit 0 — exit 0"), "{stdout}");

    let mut sent = a.sent();
    sent.sort();
    let expect = |c: &str, k: &str| (c.to_owned(), k.to_owned());
    assert_eq!(
        sent,
        vec![
            expect("cl-a0", DEFAULT_KEY),
            expect("cl-a1", DEFAULT_KEY),
            expect("cl-b0", STAGING_KEY),
            expect("cl-b1", STAGING_KEY)
        ],
        "every cluster's del_user signed with its account's key, once"
    );
    assert_eq!(
        a.runs().await,
        vec![(1, DEFAULT_KEY.to_owned(), None), (2, STAGING_KEY.to_owned(), Some("staging".to_owned()))],
        "one run per account, each on record with its key"
    );
    let mut conn = crate::helpers::raw_connection(&a.db).await;
    let zones: Vec<(String, String)> =
        sqlx::query_as("SELECT cluster, zone FROM tasks ORDER BY cluster").fetch_all(&mut conn).await.unwrap();
    let zone_pairs: Vec<(&str, &str)> = zones.iter().map(|(c, z)| (c.as_str(), z.as_str())).collect();
    assert_eq!(zone_pairs, [("cl-a0", "sh1a"), ("cl-a1", "sh1a"), ("cl-b0", "pek3"), ("cl-b1", "pek3")]);
    for (needle, what) in [(STAGING_SECRET, "the staging secret"), (DEFAULT_SECRET, "the default secret")] {
        assert!(!stdout.contains(needle) && !text(&out.stderr).contains(needle), "{what} printed");
    }
    let db_bytes = std::fs::read(&a.db).unwrap();
    assert!(!db_bytes.windows(STAGING_SECRET.len()).any(|w| w == STAGING_SECRET.as_bytes()), "secret in the database");

    // The next night: everything is done, per account; nothing is sent again.
    let again = a.run(&m, &[]).await;
    assert_eq!(code(&again), 0, "{}", dump(&again));
    assert_eq!(a.sent().len(), 4, "nothing sent twice: {:?}", a.sent());
    let again_out = text(&again.stdout);
    assert!(
        again_out.contains("run 3: 0 deleted, 2 skipped") && again_out.contains("run 4: 0 deleted, 2 skipped"),
        "{again_out}"
    );

    let audit = Rig::output(a.cmd(&["audit", "verify"])).await;
    assert_eq!(code(&audit), 0, "{}", dump(&audit));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_resume_use_the_key_pair_of_the_runs_account() {
    let a = Accounts::new("{pending_ms: 10, working_ms: 10, fail_rate: 1.0}").await;
    let m = a.write("m.yaml", "version: 1\naccount: staging\nclusters:\n  - {id: cl-b0, zone: pek3, users: [bob]}\n");
    let out = a.run(&m, &["--max-attempts", "1"]).await;
    assert_eq!(code(&out), 1, "{}", dump(&out));
    assert_eq!(a.runs().await[0].1, STAGING_KEY);
    // The default account alone would sign with the wrong key; the run's account is used.
    let retry = Rig::output(a.cmd(&["retry", "1", "--max-attempts", "1", "--poll-interval", "50ms"])).await;
    assert_eq!(code(&retry), 1, "{}", dump(&retry));
    let sent = a.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|(_, k)| k == STAGING_KEY), "{sent:?}");
    assert_eq!(a.runs().await[1], (2, STAGING_KEY.to_owned(), Some("staging".to_owned())));
    let resume = Rig::output(a.cmd(&["resume", "2"])).await;
    assert_eq!(code(&resume), 0, "a finished run is not resumed: {}", dump(&resume));
    assert!(text(&resume.stdout).contains("nothing to resume"), "{}", dump(&resume));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_and_the_metrics_file_cover_every_accounts_run() {
    let a = Accounts::new("{pending_ms: 10, working_ms: 10}").await;
    let m = a.write("m.yaml", TWO_ACCOUNTS);
    let metrics = a.home.path().join("qc.prom");
    let out = a.run(&m, &["--output", "json", "--metrics-file", metrics.to_str().unwrap()]).await;
    assert_eq!(code(&out), 0, "{}", dump(&out));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["exit_code"], 0, "{v}");
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{v}");
    assert_eq!((runs[0]["account"].as_str(), runs[0]["counts"]["deleted"].as_u64()), (Some("default"), Some(2)));
    assert_eq!((runs[1]["account"].as_str(), runs[1]["counts"]["deleted"].as_u64()), (Some("staging"), Some(2)));

    let file = std::fs::read_to_string(&metrics).unwrap();
    assert!(file.contains("qc_offboard_tasks{account=\"staging\",outcome=\"deleted\"} 2"), "{file}");
    assert!(file.contains("qc_offboard_last_run_exit_code 0"), "{file}");
    if let Some(families) = parse_with_prometheus_client(&metrics) {
        for acct in ["default", "staging"] {
            assert_eq!(sample(&families, "qc_offboard_tasks", &[("account", acct), ("outcome", "deleted")]), Some(2.0));
            assert!(sample(&families, "qc_offboard_last_run_id", &[("account", acct)]).is_some(), "{acct}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_account_or_a_cluster_under_two_accounts_sends_nothing() {
    let a = Accounts::new("{pending_ms: 10, working_ms: 10}").await;
    let unknown = a.write("u.yaml", "version: 1\ndefaults: {zone: sh1a}\nclusters:\n  - {id: cl-a0, users: [bob]}\n  - {id: cl-c0, account: prod, users: [bob]}\n");
    let out = a.run(&unknown, &[]).await;
    assert_eq!(code(&out), 78, "{}", dump(&out));
    let err = text(&out.stderr);
    assert!(err.contains("no QingCloud account \"prod\"") && err.contains("staging"), "{err}");
    assert!(!err.contains(STAGING_SECRET), "{err}");

    let twice = a.write(
        "t.yaml",
        "version: 1\ndefaults: {zone: sh1a}\nclusters:\n  - {id: cl-a0, users: [bob]}\n  - {id: cl-a0, account: staging, users: [carol]}\n",
    );
    let out = a.run(&twice, &[]).await;
    assert_eq!(code(&out), 65, "{}", dump(&out));
    let err = text(&out.stderr);
    assert!(err.contains("t.yaml:5:") && err.contains("under account staging here but under account default"), "{err}");
    let bad = a.write("b.yaml", "version: 1\naccount: Prod\nclusters:\n  - {id: cl-a0, zone: sh1a, users: [bob]}\n");
    let out = Rig::output(a.cmd(&["validate", bad.to_str().unwrap()])).await;
    assert_eq!(code(&out), 65, "{}", dump(&out));
    assert!(text(&out.stderr).contains("b.yaml:2:"), "{}", dump(&out));
    assert!(a.sent().is_empty(), "nothing sent: {:?}", a.sent());
    let ok = Rig::output(a.cmd(&["validate", unknown.to_str().unwrap()])).await;
    assert_eq!(code(&ok), 0, "validate checks the name's shape, not the config: {}", dump(&ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_file_is_for_one_account_and_runs_with_its_key_pair() {
    let a = Accounts::new("{pending_ms: 10, working_ms: 10}").await;
    let both = a.write("both.yaml", &TWO_ACCOUNTS.replace("ticket: OPS-7\n", "defaults: {zone: pek3}\n"));
    let plan = a.home.path().join("plan.json");
    let plan_s = plan.to_str().unwrap();
    let out = Rig::output(a.cmd(&["plan", both.to_str().unwrap(), "--out", plan_s])).await;
    assert_eq!(code(&out), 2, "a usage error: {}", dump(&out));
    assert!(text(&out.stderr).contains("one QingCloud account") && text(&out.stderr).contains("default, staging"));
    assert!(!plan.exists());

    let staging = a
        .write("s.yaml", "version: 1\naccount: staging\nclusters:\n  - {id: cl-b0, zone: pek3, users: [bob, carol]}\n");
    let out = Rig::output(a.cmd(&["plan", staging.to_str().unwrap(), "--out", plan_s])).await;
    assert_eq!(code(&out), 0, "{}", dump(&out));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    assert_eq!((doc["account"].as_str(), doc["access_key_id"].as_str()), (Some("staging"), Some(STAGING_KEY)));
    let out = Rig::output(a.cmd(&["run", "--plan", plan_s, "--poll-interval", "50ms"])).await;
    assert_eq!(code(&out), 0, "{}", dump(&out));
    let sent = a.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|(c, k)| c == "cl-b0" && k == STAGING_KEY), "{sent:?}");

    // The account is covered by the content hash: moving the plan to another account is an edit.
    let edited = std::fs::read_to_string(&plan).unwrap().replace("\"account\": \"staging\",\n", "");
    std::fs::write(&plan, edited).unwrap();
    let out = Rig::output(a.cmd(&["run", "--plan", plan_s, "--poll-interval", "50ms"])).await;
    assert_eq!(code(&out), 65, "{}", dump(&out));
    assert_eq!(a.sent().len(), 2);
}
