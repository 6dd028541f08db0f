//! The verdict of walking the whole audit chain, as the evidence states it: intact or where it
//! breaks, and whether a row's records lie in the intact part.
//!
//! It judges a verification it is given; it walks nothing itself.

use serde::Serialize;

use crate::store::{SeqRange, Verification};

/// The verdict of walking the whole audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainCheck {
    pub intact: bool,
    pub checked: u64,
    /// `SEQ:HASH` of the last intact record.
    pub tip: String,
    /// The first bad record and what is wrong with it.
    pub problem: Option<String>,
    pub first_bad_seq: Option<i64>,
}

impl ChainCheck {
    pub(super) fn of(v: &Verification) -> ChainCheck {
        ChainCheck {
            intact: v.is_intact(),
            checked: v.checked,
            tip: v.tip.to_string(),
            problem: v.problem.as_ref().map(ToString::to_string),
            first_bad_seq: v.problem.as_ref().map(|p| p.seq()),
        }
    }

    /// Are the records `range` covered by the intact part of the chain?
    pub fn covers(&self, range: Option<SeqRange>) -> bool {
        match (range, self.first_bad_seq) {
            (None, _) => false,
            (Some(_), None) => self.intact,
            (Some(r), Some(bad)) => r.last < bad,
        }
    }

    /// Why records `first..=last` are not covered, if they are not.
    pub(super) fn breaks_within(&self, first: i64, last: i64) -> Option<String> {
        let bad = self.first_bad_seq?;
        let problem = self.problem.as_deref().unwrap_or("the chain is broken");
        (bad <= last).then(|| {
            if bad < first {
                format!("the audit chain breaks at record {bad}, before this row's records {first}..{last} ({problem})")
            } else {
                format!("the audit chain breaks at record {bad}, within this row's records {first}..{last} ({problem})")
            }
        })
    }

    /// One line: `intact (N records, tip SEQ:HASH)` or the problem.
    pub fn describe(&self) -> String {
        match &self.problem {
            None => format!("intact ({} records checked, tip {})", self.checked, self.tip),
            Some(p) => format!(
                "NOT intact: {p}; records 1..{} are intact, nothing from record {} on is proven",
                self.checked,
                self.first_bad_seq.unwrap_or(0)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_chain_is_named_where_it_breaks() {
        let chain = ChainCheck {
            intact: false,
            checked: 9,
            tip: "9:x".into(),
            problem: Some("record 10: hash mismatch".into()),
            first_bad_seq: Some(10),
        };
        assert_eq!(chain.breaks_within(3, 9), None);
        assert!(chain.breaks_within(8, 12).unwrap().contains("breaks at record 10, within this row's records 8..12"));
        assert!(chain.breaks_within(11, 12).unwrap().contains("before this row's records 11..12"));
        assert!(chain.describe().contains("nothing from record 10 on is proven"));
    }
}
