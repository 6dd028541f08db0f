//! The last check before a `del_user` request is signed (SPEC §8). Whatever the database or a
//! plan file says, a request leaves only if, at that very moment:
//! - the run is not stopping (a stop withdraws every intent whose request had not left);
//! - the account is not protected (`root`, `qc_admin`, `qc_repl`, `qc_check`);
//! - the task is still `submitting` in this run, and no other run of the same endpoint and key
//!   has removed the account or holds a live attempt at it.
//!
//! The client races the rate gate against [`TaskGuard::cancelled`], so an intent queued behind
//! the limiter is withdrawn at once when the run stops, not when its turn comes.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use super::context::Ctx;
use super::task::TaskRef;
use crate::domain::{HostSpec, UserName, PROTECTED_USERS};
use crate::qingcloud::client::SendGuard;
use crate::store::{Refusal, StoreError};

/// Why a request was withheld.
#[derive(Debug, Clone)]
pub enum Withhold {
    Stopped,
    Protected,
    /// The user or host read from the database is not one the manifest rules accept.
    Invalid(String),
    Refused(Refusal),
    /// The database could not answer the last check: nothing is sent on a guess.
    Unchecked(Arc<StoreError>),
}

pub struct TaskGuard<'a> {
    ctx: &'a Ctx,
    task: &'a TaskRef,
    why: Mutex<Option<Withhold>>,
}

impl<'a> TaskGuard<'a> {
    pub fn new(ctx: &'a Ctx, task: &'a TaskRef) -> Self {
        TaskGuard { ctx, task, why: Mutex::new(None) }
    }

    /// Why the request was withheld (`Stopped` when the guard was cancelled before its check).
    pub fn reason(&self) -> Withhold {
        self.why.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or(Withhold::Stopped)
    }

    fn refuse(&self, why: Withhold) -> String {
        let text = match &why {
            Withhold::Stopped => "the run is stopping".to_owned(),
            Withhold::Protected => format!("user {:?} is protected and is never sent", self.task.user),
            Withhold::Invalid(why) => why.clone(),
            Withhold::Refused(r) => r.describe(),
            Withhold::Unchecked(e) => format!("the last check could not be made: {e}"),
        };
        *self.why.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        text
    }
}

/// A protected account, whatever its case or the spaces, control or invisible characters
/// around or inside it (`"root\0"`, `"ROOT\u{200b}"`).
pub fn is_protected(user: &str) -> bool {
    let bare: String = user.chars().filter(|c| c.is_alphanumeric() || *c == '_').collect();
    PROTECTED_USERS.iter().any(|p| p.eq_ignore_ascii_case(&bare))
}

impl SendGuard for TaskGuard<'_> {
    fn cancelled(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let mut rx = self.ctx.stop.subscribe();
            if rx.wait_for(|stopped| *stopped).await.is_err() {
                // The run's stop switch is gone: nothing will cancel this request.
                std::future::pending::<()>().await;
            }
        })
    }

    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            if self.ctx.stopping() {
                return Err(self.refuse(Withhold::Stopped));
            }
            if is_protected(&self.task.user) {
                return Err(self.refuse(Withhold::Protected));
            }
            // Parsed again as the manifest would: the database may have been edited.
            if let Err(why) = UserName::parse(&self.task.user).and_then(|_| HostSpec::parse(&self.task.host)) {
                return Err(self.refuse(Withhold::Invalid(why)));
            }
            let checked = super::journal::once_more_if_disconnected("the last check", || {
                self.ctx.store.last_check(self.task.id, &self.ctx.identity_runs)
            })
            .await;
            match checked {
                Ok(Ok(())) => {}
                Ok(Err(refusal)) => return Err(self.refuse(Withhold::Refused(refusal))),
                Err(e) => return Err(self.refuse(Withhold::Unchecked(Arc::new(e)))),
            }
            // A shared run: the lease is renewed for the request's whole time, or it is gone.
            if let Some(shared) = &self.ctx.shared {
                let renewed = super::journal::once_more_if_disconnected("renewing the task's lease", || {
                    shared.renew_for_request(self.task.id)
                })
                .await;
                match renewed {
                    Ok(true) => {}
                    Ok(false) => return Err(self.refuse(Withhold::Refused(Refusal::LeaseLost))),
                    Err(e) => return Err(self.refuse(Withhold::Unchecked(Arc::new(e)))),
                }
            }
            // Checked again after the database answered: a stop during the query wins.
            if self.ctx.stopping() {
                return Err(self.refuse(Withhold::Stopped));
            }
            self.ctx.mark_sent(self.task.id, true);
            Ok(())
        })
    }
}
