//! Shared test helpers.

#![allow(dead_code)]

use std::path::Path;

use assert_cmd::Command;

/// The real binary with an environment scrubbed of everything that could change its behaviour:
/// no credentials, no config, no database path from the outer shell, HOME pointing at `home`.
pub fn qc(home: &Path) -> Command {
    let mut cmd = Command::cargo_bin("qc-offboard").expect("binary built");
    cmd.env_clear()
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0");
    cmd
}

/// A fresh temporary directory, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

// ---------------------------------------------------------------------------------------------
// The simulator, in-process or as the real binary, and a small signed-request client for it.

use std::io::BufRead as _;
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use qc_offboard::qingcloud::signer::{self, Method, SignatureMethod};
use qc_offboard::sim::{self, SimHandle, World, DEFAULT_ACCESS_KEY_ID, DEFAULT_SECRET_ACCESS_KEY};

/// A world from YAML text (checked exactly as a world file is).
pub fn world(yaml: &str) -> World {
    World::parse(yaml, Path::new("test-world.yaml")).expect("test world is valid")
}

/// Start the simulator in-process on 127.0.0.1 with a free port.
pub async fn start_sim(world: World) -> SimHandle {
    sim::start(world, "127.0.0.1:0".parse().expect("address")).await.expect("simulator starts")
}

/// `qc-offboard sim --listen 127.0.0.1:0 --world FILE` as a child process. Killed when dropped.
pub struct SimProcess {
    child: Child,
    /// The first line the binary printed on stdout.
    pub first_line: String,
    /// The endpoint taken from that line.
    pub endpoint: String,
}

impl SimProcess {
    pub fn spawn(home: &Path, world_file: &Path) -> SimProcess {
        let bin = assert_cmd::cargo::cargo_bin("qc-offboard");
        let mut child = std::process::Command::new(bin)
            .env_clear()
            .env("HOME", home)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .args(["sim", "--listen", "127.0.0.1:0", "--world"])
            .arg(world_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qc-offboard sim starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut first_line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut first_line).expect("read the first stdout line");
        let first_line = first_line.trim_end().to_owned();
        let endpoint = first_line.strip_prefix("listening on ").unwrap_or_default().to_owned();
        SimProcess { child, first_line, endpoint }
    }

    /// Send SIGTERM and wait for the process to end.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("send SIGTERM");
        self.child.wait().expect("wait for the simulator")
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Builds and sends signed API requests the way the reference describes, with knobs to get
/// them wrong on purpose.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub endpoint: String,
    pub access_key: String,
    pub secret: String,
    pub method: Method,
    pub alg: SignatureMethod,
}

impl Api {
    /// The default credentials, GET, HmacSHA256.
    pub fn new(endpoint: &str) -> Api {
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().expect("HTTP client");
        Api {
            http,
            endpoint: endpoint.to_owned(),
            access_key: DEFAULT_ACCESS_KEY_ID.to_owned(),
            secret: DEFAULT_SECRET_ACCESS_KEY.to_owned(),
            method: Method::Get,
            alg: SignatureMethod::HmacSha256,
        }
    }

    /// The signed parameters of a request made at `at` (signature included).
    pub fn signed(&self, action: &str, zone: &str, extra: &[(&str, &str)], at: DateTime<Utc>) -> Vec<(String, String)> {
        let mut params = signer::common_params(action, zone, &self.access_key, at, self.alg);
        params.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let path = url::Url::parse(&self.endpoint).expect("endpoint URL").path().to_owned();
        let sig = signer::signature(self.method, &path, &params, self.secret.as_bytes(), self.alg);
        params.push(("signature".to_owned(), sig));
        params
    }

    /// Send already signed parameters as a GET query or a POST form body.
    pub async fn send(&self, params: &[(String, String)]) -> reqwest::Result<reqwest::Response> {
        let encoded: Vec<String> =
            params.iter().map(|(k, v)| format!("{}={}", signer::encode(k), signer::encode(v))).collect();
        let encoded = encoded.join("&");
        match self.method {
            Method::Get => self.http.get(format!("{}?{encoded}", self.endpoint)).send().await,
            Method::Post => {
                self.http
                    .post(&self.endpoint)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(encoded)
                    .send()
                    .await
            }
        }
    }

    /// Sign now, send, and parse the JSON answer (panics on a non-200 status).
    pub async fn call(&self, action: &str, zone: &str, extra: &[(&str, &str)]) -> reqwest::Result<serde_json::Value> {
        let resp = self.send(&self.signed(action, zone, extra, Utc::now())).await?;
        assert_eq!(resp.status(), 200, "HTTP status of {action}");
        let body = resp.bytes().await?;
        Ok(serde_json::from_slice(&body).expect("JSON body"))
    }

    /// `RunClusterCustomService` with `service=del_user` for `user@host`.
    pub async fn del_user(
        &self,
        zone: &str,
        cluster: &str,
        user: &str,
        host: &str,
    ) -> reqwest::Result<serde_json::Value> {
        let params = qc_offboard::qingcloud::types::DelUserParams::new(user, host).to_json();
        let extra =
            [("cluster", cluster), ("role", "maininstance"), ("service", "del_user"), ("service_params", &params)];
        self.call("RunClusterCustomService", zone, &extra).await
    }

    pub async fn describe_jobs(&self, zone: &str, extra: &[(&str, &str)]) -> reqwest::Result<serde_json::Value> {
        self.call("DescribeJobs", zone, extra).await
    }

    /// GET /sim/stats (unsigned) on the same host.
    pub async fn sim_stats(&self) -> sim::Stats {
        let url = url::Url::parse(&self.endpoint).expect("endpoint URL").join("/sim/stats").expect("stats URL");
        let body = self.http.get(url).send().await.expect("stats request").bytes().await.expect("stats body");
        serde_json::from_slice(&body).expect("stats JSON")
    }
}

/// Poll `check` every 20 ms until it returns `Some`, for at most 10 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Store fixtures.

/// A database path inside `dir` (the file does not exist yet).
pub fn db_path(dir: &Path) -> std::path::PathBuf {
    dir.join("data/audit.db")
}

/// An instant written in RFC 3339.
pub fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s).expect("RFC 3339").with_timezone(&chrono::Utc)
}

/// A run as the runner would record it, with a ticket.
pub fn new_run(ticket: Option<&str>) -> qc_offboard::store::NewRun {
    qc_offboard::store::NewRun {
        manifests: vec![("manifests/hr-4711.yaml".into(), "ab".repeat(32))],
        ticket: ticket.map(String::from),
        requested_by: Some("alice@example.com".into()),
        reason: Some("bob left".into()),
        due_by: Some(at("2026-11-28T12:00:00Z")),
        operator: "ops".into(),
        host: "build-1".into(),
        endpoint: "http://127.0.0.1:1/iaas/".into(),
        access_key_id: "QYACCESSKEYIDEXAMPLE".into(),
        options: serde_json::json!({"rate": "50/s", "max_in_flight": 20}),
        retry_of: None,
        simulated: false,
        discovered: None,
    }
}

/// A pending task removing `user`@% from `cluster`.
pub fn new_task(cluster: &str, user: &str) -> qc_offboard::store::NewTask {
    qc_offboard::store::NewTask {
        cluster: cluster.into(),
        zone: "sh1a".into(),
        user: user.into(),
        host: "%".into(),
        state: qc_offboard::store::TaskState::Pending,
        not_before: None,
        due_by: Some(at("2026-11-28T12:00:00Z")),
    }
}

/// The shortest chain of events the state table allows from `from` to `to` (found by a
/// breadth-first walk over the table), so a fixture reaches a state the way a run would.
pub fn events_between(
    from: qc_offboard::store::TaskState,
    to: qc_offboard::store::TaskState,
) -> Vec<qc_offboard::store::Event> {
    use qc_offboard::runner::state::apply;
    use qc_offboard::store::Event;
    let mut paths = std::collections::VecDeque::from([(from, Vec::new())]);
    let mut seen = std::collections::HashSet::from([from]);
    while let Some((state, path)) = paths.pop_front() {
        if state == to {
            return path;
        }
        for event in Event::ALL {
            if let Ok(step) = apply(state, event) {
                if seen.insert(step.to) {
                    let mut next = path.clone();
                    next.push(event);
                    paths.push_back((step.to, next));
                }
            }
        }
    }
    panic!("the state table has no way from {from} to {to}")
}

/// Move a task from `from` to `to` through the store's guarded steps, `change` and `detail`
/// applied by the last one; the new row.
pub async fn move_task(
    store: &qc_offboard::store::Store,
    task_id: i64,
    from: qc_offboard::store::TaskState,
    to: qc_offboard::store::TaskState,
    change: &qc_offboard::store::TaskChange,
    detail: serde_json::Value,
) -> qc_offboard::store::TaskRow {
    let events = events_between(from, to);
    let none = qc_offboard::store::TaskChange::new();
    let mut row = None;
    for (i, event) in events.iter().enumerate() {
        let last = i + 1 == events.len();
        let (c, d) = if last { (change, detail.clone()) } else { (&none, serde_json::json!({})) };
        row = store.step(task_id, *event, c, d).await.unwrap();
        assert!(row.is_some(), "task {task_id}: {event:?} on the way from {from} to {to} was refused");
    }
    row.unwrap_or_else(|| panic!("task {task_id} is already {to}"))
}

/// A connection that bypasses the product, as someone holding the database file could open it.
pub async fn raw_connection(path: &Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    sqlx::sqlite::SqliteConnectOptions::new().filename(path).connect().await.expect("raw connection")
}

/// A healthcheck service on loopback: its URL, and the whole requests it got (head and body).
pub async fn ping_listener() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/ping/abc", listener.local_addr().expect("addr"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen2 = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let mut buf = vec![0u8; 8192];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            seen2.lock().expect("lock").push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        }
    });
    (url, seen)
}
