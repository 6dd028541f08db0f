//! `run`, `resume` and `retry`: their flags become [`app::RunOptions`] and an [`app::Source`],
//! [`app::run`] does the work, and this file prints what the user reads as it happens — the
//! summary of each run, the accounts line, or the one JSON object of `--output json`.

use serde_json::json;

use crate::app::{self, Event, Idle, Source};
use crate::cli::{ApiOpts, ExecOpts, GlobalOpts, LogFormat, OutputFormat, ResumeArgs, RetryArgs, RunArgs};
use crate::exit::Exit;
use crate::manifest::AccountName;
use crate::qingcloud::config::ConfigInput;

impl From<&ApiOpts> for ConfigInput {
    fn from(api: &ApiOpts) -> ConfigInput {
        ConfigInput { endpoint: api.endpoint.clone(), config: api.config.clone() }
    }
}

/// The options of `run`, `resume` and `retry`, from their flags and the global ones.
fn run_options(global: &GlobalOpts, exec: &ExecOpts) -> app::RunOptions {
    app::RunOptions {
        db: global.db.clone(),
        progress: !(global.no_progress || global.log_format == LogFormat::Json),
        api: ConfigInput::from(&exec.api),
        rate: exec.rate.rate,
        burst: exec.rate.burst,
        max_in_flight: exec.max_in_flight,
        max_attempts: exec.max_attempts,
        job_timeout: exec.job_timeout,
        poll_interval: exec.poll_interval,
        deadline: exec.deadline,
        max_fail: exec.max_fail,
        operator: exec.operator.clone(),
        metrics_file: exec.metrics_file.clone(),
        ping_url: exec.ping_url.clone(),
        absent_on: exec.absent_on.clone(),
        reconcile_settle: exec.reconcile_settle,
        retry_base: exec.retry_base,
        no_preflight: exec.no_preflight,
        lease: exec.lease,
    }
}

pub async fn run(global: &GlobalOpts, args: RunArgs) -> anyhow::Result<Exit> {
    let source = match args.plan {
        Some(path) => Source::PlanFile {
            path,
            approved_by: args.approved_by,
            allowed_signers: args.allowed_signers,
            require_approval: args.require_approval,
            dry_run: args.dry_run,
        },
        None => Source::Manifests { paths: args.manifests, dry_run: args.dry_run },
    };
    execute(global, &args.exec, &source, args.simulate).await
}

pub async fn resume(global: &GlobalOpts, args: ResumeArgs) -> anyhow::Result<Exit> {
    execute(global, &args.exec, &Source::Resume(args.run_id), args.simulate).await
}

pub async fn retry(global: &GlobalOpts, args: RetryArgs) -> anyhow::Result<Exit> {
    execute(global, &args.exec, &Source::Retry(args.run_id), args.simulate).await
}

async fn execute(global: &GlobalOpts, exec: &ExecOpts, source: &Source, simulate: bool) -> anyhow::Result<Exit> {
    let output = exec.output;
    app::run(&run_options(global, exec), source, simulate, &mut |event| show(output, event)).await
}

/// Print what the user is told of `event`.
fn show(output: OutputFormat, event: Event<'_>) -> anyhow::Result<()> {
    match event {
        // `--dry-run` shows the plan for people, whatever `--output` says.
        Event::Idle(Idle::Preview(plan)) => print!("{}", plan.to_human()),
        Event::Idle(Idle::PlanValid { path, content_hash, tasks }) => {
            println!("plan {} ({content_hash}) is valid: {tasks} tasks; nothing was sent", path.display());
        }
        Event::Idle(Idle::NothingToResume) => say(output, "no unfinished run to resume"),
        Event::Idle(Idle::Finished { run_id, finished_at, exit_code }) => say(
            output,
            &format!(
                "run {run_id} finished at {} (exit {}); nothing to resume",
                finished_at.format("%Y-%m-%dT%H:%M:%SZ"),
                exit_code.map_or_else(|| "?".to_owned(), |c| c.to_string())
            ),
        ),
        Event::Idle(Idle::NoFailedTasks { run_id }) => {
            say(output, &format!("run {run_id} has no failed tasks; nothing to retry"));
        }
        Event::Created { run_id, retry_of: Some(old), tasks } => {
            say(output, &format!("run {run_id} retries the {tasks} failed task(s) of run {old}"));
        }
        Event::Created { retry_of: None, .. } => {}
        Event::RunEnded(ending) => {
            if output == OutputFormat::Human {
                println!("{}", ending.summary);
            }
        }
        Event::Concluded(end) => match output {
            OutputFormat::Human => {
                if let Some(line) = &end.accounts_line {
                    println!("{line}");
                }
            }
            OutputFormat::Json if end.accounts_line.is_some() => {
                let not_started: Vec<&str> = end.not_started.iter().map(AccountName::as_str).collect();
                let all = json!({ "exit_code": end.exit.code(), "runs": end.results(), "not_started": not_started });
                println!("{}", serde_json::to_string(&all)?);
            }
            OutputFormat::Json => {
                if let Some(r) = end.results().first() {
                    println!("{}", serde_json::to_string(r)?);
                }
            }
        },
    }
    Ok(())
}

/// A line for people: on stdout, or on stderr when stdout carries the one JSON object.
fn say(output: OutputFormat, line: &str) {
    match output {
        OutputFormat::Human => println!("{line}"),
        OutputFormat::Json => eprintln!("{line}"),
    }
}
