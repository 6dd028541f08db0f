//! `audit verify [--checkpoint SEQ:HASH]` and `audit checkpoint`.

use crate::cli::{AuditCommand, GlobalOpts};
use crate::exit::{Coded, Exit};
use crate::store::Checkpoint;

pub async fn run(global: &GlobalOpts, command: AuditCommand) -> anyhow::Result<Exit> {
    match command {
        AuditCommand::Checkpoint => {
            let store = super::status::open_existing(global).await?;
            let cp = store.audit_checkpoint().await?;
            store.close().await;
            println!("{cp}");
            Ok(Exit::Ok)
        }
        AuditCommand::Verify { checkpoint } => {
            let checkpoint = checkpoint
                .map(|s| s.parse::<Checkpoint>())
                .transpose()
                .map_err(|e| Coded::new(Exit::Usage, format!("--checkpoint: {e}")))?;
            let store = super::status::open_existing(global).await?;
            let v = store.verify_audit(checkpoint.as_ref()).await?;
            store.close().await;
            match v.problem {
                None => {
                    println!("audit log intact: {} records checked, tip {}", v.checked, v.tip);
                    if let Some(cp) = checkpoint {
                        println!("checkpoint {cp} is present");
                    }
                    Ok(Exit::Ok)
                }
                Some(problem) => {
                    println!("audit log NOT intact: {problem}");
                    println!("{} records before it are intact; last good record {}", v.checked, v.tip);
                    Ok(Exit::TasksFailed)
                }
            }
        }
    }
}
