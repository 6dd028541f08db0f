//! What an API refusal or a failed job means for the account, in one table (SPEC §8):
//!
//! - **absent**: the account does not exist on the cluster — nothing to delete. Final after one
//!   attempt and done for the exit code. Which codes say so is not documented for the live
//!   service, so the rules are configurable (`--absent-on`, config key `absent_on`); the
//!   defaults are what the simulator answers: a job that fails with `error_codes` 2100, or a
//!   synchronous 2100 whose message says the user "does not exist".
//! - **busy**: 1400 because the cluster is running another job (another tool or person is using
//!   it). Waited out with backoff, never an attempt, bounded by `--job-timeout`.
//! - **refused action**: a 1400 that names neither the cluster nor the user of the request
//!   refuses the action or the key itself; every other task would get the same answer, so the
//!   run stops (exit 69).
//!
//! Pure: no I/O, no clock.

use std::fmt;
use std::str::FromStr;

use crate::qingcloud::types::ret;

/// One rule saying "the account was not there".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbsentRule {
    /// A failed job whose `error_codes` contain this code.
    Job { error_code: String },
    /// A synchronous refusal with this ret_code whose message contains `text` (any message when
    /// `text` is empty), compared without case.
    Refusal { ret_code: i64, text: String },
}

impl fmt::Display for AbsentRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbsentRule::Job { error_code } => write!(f, "job:{error_code}"),
            AbsentRule::Refusal { ret_code, text } if text.is_empty() => write!(f, "refusal:{ret_code}"),
            AbsentRule::Refusal { ret_code, text } => write!(f, "refusal:{ret_code}:{text}"),
        }
    }
}

impl FromStr for AbsentRule {
    type Err = String;

    /// `job:CODE` or `refusal:RET_CODE[:TEXT]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an absent rule; write job:CODE or refusal:RET_CODE[:TEXT]");
        let (kind, rest) = s.trim().split_once(':').ok_or_else(bad)?;
        match kind {
            "job" => {
                let code = rest.trim();
                if code.is_empty() || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(bad());
                }
                Ok(AbsentRule::Job { error_code: code.to_owned() })
            }
            "refusal" => {
                let (code, text) = rest.split_once(':').unwrap_or((rest, ""));
                let ret_code: i64 = code.trim().parse().map_err(|_| bad())?;
                if ret_code == ret::OK {
                    return Err(bad());
                }
                Ok(AbsentRule::Refusal { ret_code, text: text.trim().to_owned() })
            }
            _ => Err(bad()),
        }
    }
}

/// The table of [`AbsentRule`]s in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsentRules(pub Vec<AbsentRule>);

impl Default for AbsentRules {
    fn default() -> Self {
        AbsentRules(vec![
            AbsentRule::Job { error_code: "2100".to_owned() },
            AbsentRule::Refusal { ret_code: ret::NOT_FOUND, text: "does not exist".to_owned() },
        ])
    }
}

impl AbsentRules {
    /// Does a failed job with these `error_codes` mean the account was not there?
    pub fn job_says_absent(&self, error_codes: &str) -> bool {
        let codes: Vec<&str> =
            error_codes.split(|c: char| !c.is_ascii_alphanumeric()).filter(|c| !c.is_empty()).collect();
        self.0.iter().any(|r| matches!(r, AbsentRule::Job { error_code } if codes.contains(&error_code.as_str())))
    }

    /// Does a synchronous refusal mean the account was not there?
    pub fn refusal_says_absent(&self, code: i64, message: &str) -> bool {
        let message = message.to_lowercase();
        self.0.iter().any(|r| {
            matches!(r, AbsentRule::Refusal { ret_code, text } if *ret_code == code && message.contains(&text.to_lowercase()))
        })
    }
}

/// What a synchronous refusal of a `del_user` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The account is not there: the task ends `absent`.
    Absent,
    /// The cluster is running another job: wait and try again, no attempt used.
    Busy,
    /// The action or the key is refused: stop the run (exit 69).
    ActionRefused,
    /// Anything else: the task ends `failed` with the API's message.
    Failed,
}

/// Classify a non-zero ret_code answered to `del_user` of `user` on `cluster`.
pub fn refusal(rules: &AbsentRules, code: i64, message: &str, cluster: &str, user: &str) -> Refused {
    if rules.refusal_says_absent(code, message) {
        return Refused::Absent;
    }
    if code != ret::ACCESS_DENIED {
        return Refused::Failed;
    }
    let lower = message.to_lowercase();
    if ["running job", "is busy", "try again"].iter().any(|w| lower.contains(w)) {
        return Refused::Busy;
    }
    let names_resource = message.contains(&format!("[{cluster}]")) || message.contains(&format!("[{user}]"));
    if names_resource {
        Refused::Failed
    } else {
        Refused::ActionRefused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_print_back() {
        for text in ["job:2100", "refusal:2100", "refusal:2100:does not exist", "refusal:1400:no such user"] {
            assert_eq!(text.parse::<AbsentRule>().unwrap().to_string(), text);
        }
        for bad in ["", "job:", "job:21 00", "refusal:x", "refusal:0", "other:1", "2100"] {
            assert!(bad.parse::<AbsentRule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_table_reads_the_simulator_answers() {
        let rules = AbsentRules::default();
        assert!(rules.job_says_absent("2100"));
        assert!(rules.job_says_absent("1400,2100"));
        assert!(!rules.job_says_absent("21000"));
        assert!(!rules.job_says_absent(""));
        assert!(!rules.job_says_absent("5000"));
        let missing = "ResourceNotFound, user [bob] with host [%] does not exist in cluster [cl-x]";
        assert_eq!(refusal(&rules, 2100, missing, "cl-x", "bob"), Refused::Absent);
        // An unknown cluster is a wrong manifest, not a missing account.
        let no_cluster = "ResourceNotFound, cluster [cl-x] not found in zone [sh1a]";
        assert_eq!(refusal(&rules, 2100, no_cluster, "cl-x", "bob"), Refused::Failed);
    }

    #[test]
    fn a_1400_is_busy_resource_specific_or_a_refusal_of_the_action() {
        let rules = AbsentRules::default();
        let busy = "PermissionDenied, cluster [cl-x] is running job [j-1]; try again when it ends";
        assert_eq!(refusal(&rules, 1400, busy, "cl-x", "bob"), Refused::Busy);
        let protected = "PermissionDenied, user [root] is protected and cannot be deleted";
        assert_eq!(refusal(&rules, 1400, protected, "cl-x", "root"), Refused::Failed);
        let not_active = "PermissionDenied, cluster [cl-x] is not active";
        assert_eq!(refusal(&rules, 1400, not_active, "cl-x", "bob"), Refused::Failed);
        let action = "PermissionDenied, can't handle this request";
        assert_eq!(refusal(&rules, 1400, action, "cl-x", "bob"), Refused::ActionRefused);
        assert_eq!(refusal(&rules, 1100, "ParameterError, x", "cl-x", "bob"), Refused::Failed);
    }

    #[test]
    fn configured_rules_replace_the_defaults() {
        let rules = AbsentRules(vec!["refusal:1400:no such account".parse().unwrap()]);
        assert!(!rules.job_says_absent("2100"));
        assert_eq!(refusal(&rules, 1400, "PermissionDenied, No Such Account", "cl-x", "bob"), Refused::Absent);
    }
}
