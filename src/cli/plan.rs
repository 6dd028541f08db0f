//! `plan MANIFEST... [--output human|json] [--out PLAN_FILE]` and `plan sign`: the flags become
//! an [`app::preview::PlanRequest`], [`app::preview`] makes the plan (and its file), and this
//! file prints it on stdout and what happened on the way on stderr. Nothing is sent; nothing is
//! written but the plan file of `--out`.

use crate::app::preview::{self, Note, PlanRequest};
use crate::cli::{GlobalOpts, OutputFormat, PlanArgs, PlanCommand};
use crate::exit::Exit;
use crate::plan::Plan;
use crate::qingcloud::config::ConfigInput;

pub async fn run(global: &GlobalOpts, args: PlanArgs) -> anyhow::Result<Exit> {
    if let Some(PlanCommand::Sign { plan, key }) = &args.command {
        let (sig, fingerprint) = preview::sign(plan, key)?;
        println!("signed {} with key {fingerprint}: {}", plan.display(), sig.display());
        return Ok(Exit::Ok);
    }
    let req = PlanRequest {
        manifests: args.manifests,
        db: global.db.clone(),
        api: ConfigInput::from(&args.api),
        rate: args.rate.rate,
        out: args.out,
        today: args.today,
        no_preflight: args.no_preflight,
    };
    let made = preview::make(&req, &mut note).await?;
    print_built(&made.plan, args.output);
    preview::preflight(&req, &made, &mut note).await;
    if let Some(w) = &made.written {
        eprintln!(
            "plan written to {}: {} tasks for {} (access key {}), content hash {}",
            w.path.display(),
            w.tasks,
            w.endpoint,
            w.access_key_id,
            w.content_hash
        );
    }
    Ok(Exit::Ok)
}

fn print_built(plan: &Plan, output: OutputFormat) {
    match output {
        OutputFormat::Human => print!("{}", plan.to_human()),
        OutputFormat::Json => println!("{}", plan.to_json()),
    }
}

/// What happened while the plan was made, on stderr.
fn note(note: Note<'_>) {
    match note {
        Note::Warning(w) => eprintln!("warning: {w}"),
        Note::Discovered(d) => eprint!("{}", d.to_human()),
        Note::NotMarked { account, error } => {
            eprintln!("note: tasks of account {account} done by earlier runs are not marked ({error})");
        }
        Note::PreflightNotMade { account, error } => {
            eprintln!("note: preflight not made for account {account}: {error}");
        }
        Note::WouldFail(m) => eprintln!("preflight: would fail: {m}"),
        Note::NotReady(m) => eprintln!("preflight: not ready: {m}"),
        Note::PreflightDone { account, clusters, calls, refused, not_ready, unchecked } => eprintln!(
            "preflight{}: {clusters} clusters checked in {calls} DescribeClusters calls: {refused} tasks would fail, {not_ready} not ready{}",
            if account.is_default() { String::new() } else { format!(" (account {account})") },
            if unchecked > 0 { format!(", {unchecked} clusters unchecked (no usable answer)") } else { String::new() },
        ),
    }
}
