//! Trying to break the released binary: a secret that could leak through a malformed config, a
//! core dump or `--help`; environmental failures that are not bugs; hostile arguments. Every
//! case runs the real binary.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::helpers::{start_sim, tempdir, world};

const MANIFEST: &str =
    "version: 1\nticket: OPS-9\nclusters:\n  - id: cl-h001\n    zone: sh1a\n    users: [u1, u2, u3]\n";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The real binary with a scrubbed environment, HOME at `home`, the database at `db`.
fn qc(home: &Path, db: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("qc-offboard"));
    cmd.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("QC_OFFBOARD_DB", db)
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0")
        .arg("--no-progress")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn output(mut cmd: tokio::process::Command) -> Output {
    let child = cmd.spawn().expect("the command runs");
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the command finishes")
        .expect("the command runs")
}

/// Every byte of every file under `dir`, for "does the secret appear anywhere".
fn all_bytes_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The config file: the secret's line is indented under the key id's line, so YAML
/// reads one scalar, `AK qy_secret_access_key:…`. With a secret key in the environment the
/// pair looked complete and the secret went out as `access_key_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_folded_into_the_key_id_goes_nowhere() {
    const SECRET: &str = "Folded5ecretValueDoNotShow";
    let home = tempdir();
    let sim = start_sim(world("seed: 1\n")).await;
    let db = home.path().join("audit.db");
    let config = home.path().join("config.yaml");
    std::fs::write(&config, format!("qy_access_key_id: AK\n qy_secret_access_key:{SECRET}\nzone: sh1a\n")).unwrap();
    let manifest = home.path().join("m.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let plan_file = home.path().join("plan.json");
    let with_config = |args: &[&str]| {
        let mut cmd = qc(home.path(), &db);
        cmd.env("QINGCLOUD_CONFIG", &config)
            .env("QINGCLOUD_SECRET_KEY", "SECRETACCESSKEY")
            .env("QINGCLOUD_ENDPOINT", sim.endpoint())
            .args(args);
        cmd
    };
    let runs = [
        vec!["plan", manifest.to_str().unwrap(), "--out", plan_file.to_str().unwrap()],
        vec!["run", manifest.to_str().unwrap(), "--poll-interval", "20ms"],
    ];
    for args in runs {
        let out = output(with_config(&args)).await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(78), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains("qy_access_key_id") && stderr.contains("indented"), "says what to fix: {stderr}");
        assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET), "{args:?} printed the secret: {stdout}{stderr}");
    }
    assert!(!plan_file.exists(), "no plan file is written");
    for (path, bytes) in all_bytes_under(home.path()) {
        if path != config {
            assert!(!contains(&bytes, SECRET), "the secret is in {}", path.display());
        }
    }
    assert_eq!(sim.stats().requests_total, 0, "nothing was sent");
}

/// A healthcheck URL is a bearer secret; clap printed it as `[env: QC_OFFBOARD_PING_URL=…]`.
#[tokio::test]
async fn help_never_shows_secret_bearing_environment_values() {
    let home = tempdir();
    let db = home.path().join("audit.db");
    for command in ["run", "resume", "retry"] {
        let mut cmd = qc(home.path(), &db);
        cmd.env("QC_OFFBOARD_PING_URL", "https://hc.example.com/ping/PingTokenDoNotShow")
            .env("QINGCLOUD_ENDPOINT", "https://user:EndpointPassDoNotShow@h.example.com/iaas/")
            .args([command, "--help"]);
        let out = output(cmd).await;
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(stdout.contains("QC_OFFBOARD_PING_URL") && stdout.contains("QINGCLOUD_ENDPOINT"), "{stdout}");
        assert!(!stdout.contains("PingTokenDoNotShow") && !stdout.contains("EndpointPassDoNotShow"), "{stdout}");
    }
}

/// `--deadline 584542046090y` parsed, the run was recorded, and adding it to the clock
/// panicked (exit 101). Every duration is bounded where it is parsed: a usage error, nothing
/// recorded.
#[tokio::test]
async fn durations_too_large_to_use_are_usage_errors() {
    let home = tempdir();
    let db = home.path().join("audit.db");
    let manifest = home.path().join("m.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    for (flag, value) in [
        ("--deadline", "584542046090y"),
        ("--deadline", "1000y"),
        ("--job-timeout", "584542046090y"),
        ("--poll-interval", "584542046090y"),
    ] {
        let mut cmd = qc(home.path(), &db);
        cmd.args(["run", "--simulate", manifest.to_str().unwrap(), flag, value]);
        let out = output(cmd).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains("out of range"), "{stderr}");
    }
    let sim_db = home.path().join("sim-audit.db");
    assert!(!db.exists() && !sim_db.exists(), "nothing was recorded");
}

/// A core dump of the process holds the secret key. The binary makes itself non-dumpable and
/// sets its core size limit to zero before reading anything. Checked on a running `sim`
/// (started with core dumps allowed): `/proc/PID` of a non-dumpable process belongs to root
/// whoever runs it, so the process runs as another user than root.
#[test]
fn the_process_cannot_dump_core() {
    use std::io::BufRead as _;
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::process::CommandExt as _;

    let bin = assert_cmd::cargo::cargo_bin("qc-offboard");
    let mut cmd = std::process::Command::new("sh");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["-c", "ulimit -c unlimited && exec \"$0\" sim --listen 127.0.0.1:0"])
        .arg(&bin)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let me = rustix::process::geteuid();
    if me.is_root() {
        cmd.uid(65534).gid(65534);
    }
    let mut child = cmd.spawn().expect("the simulator starts");
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{}", child.id()));
    let limits = std::fs::read_to_string(proc_dir.join("limits")).unwrap_or_default();
    let owner = std::fs::metadata(proc_dir.join("status")).map(|m| m.uid());
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.starts_with("listening on "), "{first}");
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap_or_default();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "soft core limit: {core}");
    assert_eq!(core.split_whitespace().nth(5), Some("0"), "hard core limit: {core}");
    assert_eq!(owner.unwrap(), 0, "a non-dumpable process's /proc entries belong to root");
}

/// `run --simulate` against `db` (3 accounts), which must succeed.
async fn simulated_run(home: &Path, db: &Path) {
    let manifest = home.join("m.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let mut cmd = qc(home, db);
    cmd.args(["run", "--simulate", manifest.to_str().unwrap()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
}

/// Names, sizes, bytes and modification times of everything in `dir`.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let meta = std::fs::metadata(&path).unwrap();
            (path.display().to_string(), std::fs::read(&path).unwrap_or_default(), meta.modified().unwrap())
        })
        .collect();
    entries.sort();
    entries
}

/// Run a reader as a user that cannot write `dir` (root ignores mode bits, so as root the
/// command runs as `nobody`).
fn as_reader(mut cmd: tokio::process::Command) -> tokio::process::Command {
    if rustix::process::geteuid().is_root() {
        cmd.uid(65534).gid(65534);
    }
    cmd
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Auditors get copies on read-only media. `status`, `report` and `audit verify` opened the
/// file for writing (and migrated it), so they failed with "cannot create the database file";
/// they must read it as it is and change nothing. Two copies: one checkpointed into a single
/// file, one taken with its -wal and -shm files while a connection had it open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_read_read_only_evidence_and_change_nothing() {
    use sqlx::Connection as _;
    let home = tempdir();
    chmod(home.path(), 0o755);
    let work = home.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let db = work.join("audit.db");
    simulated_run(home.path(), &db).await;
    let (single, with_wal) = (home.path().join("single"), home.path().join("with-wal"));
    for dir in [&single, &with_wal] {
        std::fs::create_dir(dir).unwrap();
    }
    let mut conn = crate::helpers::raw_connection(&db).await;
    for name in ["audit.db", "audit.db-wal", "audit.db-shm"] {
        if work.join(name).exists() {
            std::fs::copy(work.join(name), with_wal.join(name)).unwrap();
        }
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn).await.unwrap();
    std::fs::copy(&db, single.join("audit.db")).unwrap();
    conn.close().await.unwrap();

    for evidence in [single, with_wal] {
        for entry in std::fs::read_dir(&evidence).unwrap() {
            chmod(&entry.unwrap().path(), 0o444);
        }
        chmod(&evidence, 0o555);
        let before = snapshot(&evidence);
        let db = evidence.join("audit.db");
        for args in [
            vec!["status"],
            vec!["status", "1", "--output", "json"],
            vec!["report", "--format", "json"],
            vec!["audit", "verify"],
            vec!["audit", "checkpoint"],
        ] {
            let mut cmd = qc(home.path(), &db);
            cmd.args(&args);
            let out = output(as_reader(cmd)).await;
            assert_eq!(out.status.code(), Some(0), "{args:?} on {}: {}", evidence.display(), text(&out.stderr));
            if args[0] == "report" {
                let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report JSON");
                assert_eq!(rows.as_array().map(Vec::len), Some(3), "{rows}");
            }
        }
        assert_eq!(snapshot(&evidence), before, "reading changed {}", evidence.display());
        chmod(&evidence, 0o755);
    }
}

/// A missing path is not created, and neither a directory nor a file that is no database is
/// taken for one: 78 with a message, never "this is a bug".
#[tokio::test]
async fn readers_refuse_what_is_not_a_database() {
    let home = tempdir();
    let missing = home.path().join("nope/audit.db");
    let not_db = home.path().join("notes.txt");
    std::fs::write(&not_db, "these are not the droids\n".repeat(300)).unwrap();
    let empty_sqlite = home.path().join("empty.db");
    {
        use sqlx::ConnectOptions as _;
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&empty_sqlite).create_if_missing(true);
        let mut conn = opts.connect().await.unwrap();
        sqlx::query("CREATE TABLE t (x)").execute(&mut conn).await.unwrap();
    }
    for (db, needle) in [
        (missing.clone(), "no database at"),
        (home.path().to_path_buf(), "not a regular file"),
        (not_db.clone(), "not a database"),
        (empty_sqlite.clone(), "not a qc-offboard database"),
    ] {
        for args in [vec!["status"], vec!["report"], vec!["audit", "verify"]] {
            let mut cmd = qc(home.path(), &db);
            cmd.args(&args);
            let out = output(cmd).await;
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{args:?} on {}: {stderr}", db.display());
            assert!(stderr.contains(needle) && !stderr.contains("bug"), "{stderr}");
        }
    }
    assert!(!missing.exists() && !missing.parent().unwrap().exists(), "nothing is created");
}

/// A manifest of `n` accounts on `n` clusters.
fn many(n: usize) -> String {
    let mut s = String::from("version: 1\nclusters:\n");
    for i in 0..n {
        s.push_str(&format!("  - {{id: cl-m{i:04}, zone: sh1a, users: [u{i}]}}\n"));
    }
    s
}

/// A command against the in-process simulator at `endpoint`, with its credentials.
fn against(home: &Path, db: &Path, endpoint: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = qc(home, db);
    cmd.env("QINGCLOUD_ACCESS_KEY", "QYACCESSKEYIDEXAMPLE")
        .env("QINGCLOUD_SECRET_KEY", "SECRETACCESSKEY")
        .env("QINGCLOUD_ENDPOINT", endpoint)
        .args(args)
        .args(["--rate", "100/s", "--poll-interval", "20ms"]);
    cmd
}

fn raw_options(db: &Path) -> sqlx::sqlite::SqliteConnectOptions {
    sqlx::sqlite::SqliteConnectOptions::new().filename(db)
}

/// A second run while another process is stuck inside a write transaction waits the busy
/// timeout (10 s) and then gave up with "this is a bug" (70). It is an environmental
/// failure: 73, saying what holds the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_frozen_in_a_transaction_is_reported_as_busy() {
    use sqlx::{ConnectOptions as _, Connection as _};
    let home = tempdir();
    let db = home.path().join("audit.db");
    simulated_run(home.path(), &db).await;
    let mut holder = raw_options(&db).connect().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();
    let mut cmd = qc(home.path(), &db);
    cmd.args(["run", "--simulate", home.path().join("m.yaml").to_str().unwrap()]);
    let out = output(cmd).await;
    let stderr = text(&out.stderr);
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
    assert_eq!(out.status.code(), Some(73), "{stderr}");
    assert!(stderr.contains("write lock for more than 10 s") && !stderr.contains("bug"), "{stderr}");
}

/// Runs started at once on a new database raced to apply the migrations, and the losers
/// failed with "table already exists" or "database is locked" as bugs (70). Each run now
/// either runs or is refused by the run lock (73).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_started_at_once_on_a_new_database_do_not_fail_as_bugs() {
    let home = tempdir();
    let manifest = home.path().join("m.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    for round in 0..3 {
        let db = home.path().join(format!("race-{round}/audit.db"));
        let children: Vec<_> = (0..4)
            .map(|_| {
                let mut cmd = qc(home.path(), &db);
                cmd.args(["run", "--simulate", manifest.to_str().unwrap()]);
                cmd.spawn().expect("the command runs")
            })
            .collect();
        let mut ran = 0;
        for child in children {
            let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
                .await
                .expect("the command finishes")
                .unwrap();
            let stderr = text(&out.stderr);
            assert!(matches!(out.status.code(), Some(0 | 73)), "round {round}: {:?}: {stderr}", out.status);
            assert!(!stderr.contains("bug"), "{stderr}");
            ran += usize::from(out.status.code() == Some(0));
        }
        assert!(ran >= 1, "round {round}: no run ran");
    }
}

/// A database written by a newer version ("migration 9999 was previously applied but is
/// missing") is a configuration matter: 78, for writers and readers, and nothing is changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_a_newer_version_is_refused() {
    use sqlx::{ConnectOptions as _, Connection as _};
    let home = tempdir();
    let db = home.path().join("audit.db");
    simulated_run(home.path(), &db).await;
    let mut conn = raw_options(&db).connect().await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
         VALUES (9999, 'from the future', CURRENT_TIMESTAMP, 1, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let manifest = home.path().join("m.yaml");
    for args in [vec!["run", "--simulate", manifest.to_str().unwrap()], vec!["status"], vec!["audit", "verify"]] {
        let mut cmd = qc(home.path(), &db);
        cmd.args(&args);
        let out = output(cmd).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {stderr}");
        assert!(stderr.contains("newer version") && stderr.contains("9999") && !stderr.contains("bug"), "{stderr}");
    }
}

/// A damaged page: 78 with what to do, for readers and writers, never "this is a bug".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_is_not_a_bug() {
    use sqlx::{ConnectOptions as _, Connection as _};
    use std::io::{Seek as _, Write as _};
    let home = tempdir();
    let db = home.path().join("audit.db");
    simulated_run(home.path(), &db).await;
    let mut conn = raw_options(&db).connect().await.unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    // Every page but the first (the schema) overwritten.
    let len = std::fs::metadata(&db).unwrap().len();
    let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.seek(std::io::SeekFrom::Start(4096)).unwrap();
    f.write_all(&vec![0xA5; (len - 4096) as usize]).unwrap();
    drop(f);
    let manifest = home.path().join("m.yaml");
    for args in
        [vec!["status"], vec!["audit", "verify"], vec!["report"], vec!["run", "--simulate", manifest.to_str().unwrap()]]
    {
        let mut cmd = qc(home.path(), &db);
        cmd.args(&args);
        let out = output(cmd).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {stderr}");
        assert!(stderr.contains("damaged") && !stderr.contains("bug"), "{stderr}");
    }
}

/// A full disk mid-run (here a file size limit, which SQLite meets the same way: a short
/// write) stops the run safely with 75, and `resume` finishes it once there is space, every
/// account deleted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_with_75_and_resume_finishes() {
    let home = tempdir();
    let sim = start_sim(world("seed: 3\njobs: {pending_ms: 10, working_ms: 10}\n")).await;
    let db = home.path().join("audit.db");
    let manifest = home.path().join("m.yaml");
    std::fs::write(&manifest, many(300)).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("qc-offboard");
    // 1200 blocks of 512 bytes: room for the schema and part of the run. SIGXFSZ ignored, as
    // a full disk sends no signal.
    let mut full = against(home.path(), &db, &sim.endpoint(), &["run", manifest.to_str().unwrap()]);
    let args: Vec<_> = full.as_std().get_args().map(|a| a.to_owned()).collect();
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg("trap '' XFSZ; ulimit -f 1200 && exec \"$0\" \"$@\"").arg(&bin).args(&args);
    cmd.env_clear();
    for (k, v) in full.as_std().get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    full = cmd;
    let out = output(full).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{}{stderr}", text(&out.stdout));
    assert!(stderr.contains("resume") && !stderr.contains("bug"), "{stderr}");

    let out = output(against(home.path(), &db, &sim.endpoint(), &["resume"])).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let stats = sim.stats();
    let ours: Vec<_> = stats.accounts.iter().filter(|a| a.cluster.starts_with("cl-m")).collect();
    assert_eq!(ours.len(), 300);
    assert!(ours.iter().all(|a| !a.exists && a.del_user_accepted == 1), "exactly once each");
}

/// The -wal file deleted mid-run: the process kept writing to the file it had open and printed
/// "80 deleted" with exit 0, while the database kept fewer (and the next run sent the rest
/// again). The run reads its newest audit record back from the file before reporting, and
/// fails loudly instead of printing a summary the database does not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_wal_file_is_deleted_fails_loudly() {
    let home = tempdir();
    let sim = start_sim(world("seed: 4\njobs: {pending_ms: 100, working_ms: 200}\n")).await;
    let db = home.path().join("audit.db");
    let manifest = home.path().join("m.yaml");
    std::fs::write(&manifest, many(80)).unwrap();
    let child = against(home.path(), &db, &sim.endpoint(), &["run", manifest.to_str().unwrap()]).spawn().unwrap();
    crate::helpers::eventually("some accounts deleted", || {
        let accepted: u64 = sim.stats().accounts.iter().map(|a| a.del_user_accepted).sum();
        async move { (accepted >= 10).then_some(()) }
    })
    .await;
    let wal = home.path().join("audit.db-wal");
    std::fs::remove_file(&wal).expect("the run has a -wal file");
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output()).await.unwrap().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(78), "{stdout}{stderr}");
    assert!(stderr.contains("lost records this process wrote"), "{stderr}");
    assert!(!stdout.contains(" deleted, "), "no summary: {stdout}");
}
