//! Healthcheck pings (`--ping-url`): `URL/start` when a command's first run starts,
//! `URL/<exit code>` when the command ends, however it ends. Best effort: a ping never changes
//! a run or its exit code. The URL is a bearer secret: logs name only the suffix.

use std::time::Duration;

/// Where pings go.
pub struct Pinger {
    url: String,
    http: reqwest::Client,
}

impl Pinger {
    /// A pinger for `--ping-url`, when one is set.
    pub fn of(url: Option<&str>) -> Option<Pinger> {
        url.map(Pinger::new)
    }

    pub fn new(url: &str) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        Self { url: url.trim_end_matches('/').to_owned(), http }
    }

    pub async fn send(&self, suffix: &str, body: String) {
        let url = format!("{}{}", self.url, suffix);
        match self.http.post(&url).body(body).send().await {
            Ok(r) if r.status().is_success() => tracing::debug!(ping = suffix, "ping sent"),
            Ok(r) => tracing::warn!(ping = suffix, status = r.status().as_u16(), "healthcheck ping refused"),
            // reqwest's error text names the URL: only its kind is logged.
            Err(e) => tracing::warn!(
                ping = suffix,
                timeout = e.is_timeout(),
                connect = e.is_connect(),
                "healthcheck ping failed"
            ),
        }
    }
}

/// A command that ended with an error (before its summary, or one that could not start: 65, 73,
/// 78) still reports it: the metrics file gets its exit code and the ping URL gets
/// `URL/<exit code>`, so a broken configuration shows where a failed run would.
pub async fn ended_with_error(
    ping_url: Option<&str>,
    metrics_file: Option<&std::path::Path>,
    outcome: anyhow::Result<crate::exit::Exit>,
) -> anyhow::Result<crate::exit::Exit> {
    if let Err(e) = &outcome {
        let code = crate::exit::code_for(e).code();
        super::metrics::write_metrics(metrics_file, code, &[]);
        if let Some(p) = Pinger::of(ping_url) {
            p.send(&format!("/{code}"), format!("qc-offboard ended with exit {code}: {e:#}")).await;
        }
    }
    outcome
}
