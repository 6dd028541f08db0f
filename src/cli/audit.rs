//! `audit verify [--checkpoint SEQ:HASH[:HMAC] [--key KEYFILE]]` and
//! `audit checkpoint [--key KEYFILE [--create-key]]`: [`records`] reads the chain and the key
//! file; this file checks the checkpoint's signature and prints the verdicts.

use crate::app::records;
use crate::audit::key::SignedCheckpoint;
use crate::cli::{AuditCommand, GlobalOpts};
use crate::exit::{Coded, Exit};
use crate::store::Replay;

pub async fn run(global: &GlobalOpts, command: AuditCommand) -> anyhow::Result<Exit> {
    match command {
        AuditCommand::Checkpoint { key, create_key } => {
            // The key first: a bad key file must not leave a half-done job behind.
            let key = key.map(|path| records::audit_key(&path, create_key)).transpose()?;
            let cp = records::checkpoint(global.db.as_deref()).await?;
            match key {
                Some(key) => outln!("{}", key.sign(&cp)),
                None => outln!("{cp}"),
            }
            Ok(Exit::Ok)
        }
        AuditCommand::Verify { checkpoint, key } => {
            let checkpoint = checkpoint
                .map(|s| s.parse::<SignedCheckpoint>())
                .transpose()
                .map_err(|e| Coded::new(Exit::Usage, format!("--checkpoint: {e}")))?;
            if let (Some(signed), Some(path)) = (&checkpoint, &key) {
                let key = records::audit_key(path, false)?;
                if signed.hmac.is_none() {
                    outln!("checkpoint {signed} is NOT signed, but --key asks for a signed one (SEQ:HASH:HMAC)");
                    return Ok(Exit::AuditBroken);
                }
                if !key.verify(signed) {
                    outln!(
                        "checkpoint signature does NOT match: {} was not signed with the key in {} (forged or altered)",
                        signed.checkpoint,
                        path.display()
                    );
                    return Ok(Exit::AuditBroken);
                }
                outln!("checkpoint signature is valid");
            } else if checkpoint.as_ref().is_some_and(|c| c.hmac.is_some()) {
                eprintln!("note: the checkpoint's signature is not checked without --key KEYFILE");
            }
            let checkpoint = checkpoint.map(|c| c.checkpoint);
            let (v, replay) = records::verify(global.db.as_deref(), checkpoint.as_ref()).await?;
            let intact = match v.problem {
                None => {
                    outln!("audit log intact: {} records checked, tip {}", v.checked, v.tip);
                    if let Some(cp) = checkpoint {
                        outln!("checkpoint {cp} is present");
                    }
                    true
                }
                Some(problem) => {
                    outln!("audit log NOT intact: {problem}");
                    outln!("{} records before it are intact; last good record {}", v.checked, v.tip);
                    false
                }
            };
            let agree = print_replay(&replay)?;
            Ok(if intact && agree { Exit::Ok } else { Exit::AuditBroken })
        }
    }
}

/// What the tables hold compared with the chain; `true` when every row agrees.
fn print_replay(replay: &Replay) -> std::io::Result<bool> {
    let counts = format!(
        "{} runs, {} tasks, {} API calls",
        replay.runs.len(),
        replay.tasks.len(),
        replay.calls.len() as i64 + replay.unchained_calls
    );
    if replay.unchained_calls > 0 {
        outln!(
            "note: {} API calls were recorded before API calls were chained; nothing proves them",
            replay.unchained_calls
        );
    }
    if replay.discrepancies.is_empty() {
        outln!("tables agree with the audit chain: {counts}");
        return Ok(true);
    }
    let n = replay.discrepancies.len();
    outln!(
        "tables do NOT agree with the audit chain: {n} difference{} (edited outside the product)",
        if n == 1 { "" } else { "s" }
    );
    for d in &replay.discrepancies {
        outln!("  {d}");
    }
    Ok(false)
}
