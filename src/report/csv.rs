//! The CSV export (RFC 4180, through the `csv` crate): the columns in their fixed order and
//! the writer the evidence and `--latest` exports share.
//!
//! It writes rows it is given; it decides nothing about them.

use std::io::{self, Write};

use chrono::{DateTime, Utc};

use super::instant::time;
use super::row::ReportRow;

/// The columns of the CSV export, in order (`pre_state` came last, so that the columns before it
/// kept their places).
pub const CSV_HEADER: [&str; 19] = [
    "run_id",
    "task_id",
    "ticket",
    "cluster",
    "zone",
    "user",
    "host",
    "outcome",
    "attempts",
    "job_id",
    "ret_code",
    "message",
    "started_at",
    "finished_at",
    "due_by",
    "late",
    "verified",
    "not_verified",
    "pre_state",
];

pub(crate) fn fields(r: &ReportRow) -> [String; 19] {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let opt_t = |t: Option<DateTime<Utc>>| t.map(time).unwrap_or_default();
    [
        r.run_id.to_string(),
        r.task_id.to_string(),
        opt(&r.ticket),
        r.cluster.clone(),
        r.zone.clone(),
        r.user.clone(),
        r.host.clone(),
        r.outcome.as_str().to_string(),
        r.attempts.to_string(),
        opt(&r.job_id),
        r.ret_code.map(|c| c.to_string()).unwrap_or_default(),
        opt(&r.message),
        opt_t(r.started_at),
        opt_t(r.finished_at),
        opt_t(r.due_by),
        r.late.to_string(),
        r.verified.to_string(),
        r.not_verified.join("; "),
        opt(&r.pre_state),
    ]
}

/// RFC 4180 through the `csv` crate: a header line, then one record per row, every line ending
/// in CRLF, a field quoted only when it holds a comma, a quote, CR or LF (quotes doubled).
pub fn write_csv_records<W: Write>(
    w: W,
    header: &[&str],
    records: impl IntoIterator<Item = Vec<String>>,
) -> io::Result<()> {
    let mut out = ::csv::WriterBuilder::new().terminator(::csv::Terminator::CRLF).from_writer(w);
    out.write_record(header).map_err(csv_io)?;
    for r in records {
        out.write_record(&r).map_err(csv_io)?;
    }
    out.flush()
}

/// A CSV writer's error as the I/O error it wraps (a closed pipe stays a closed pipe).
fn csv_io(e: ::csv::Error) -> io::Error {
    match e.into_kind() {
        ::csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

/// RFC 4180: a header line, then one record per row (see [`write_csv_records`]).
pub fn write_csv(w: impl Write, rows: &[ReportRow]) -> io::Result<()> {
    write_csv_records(w, &CSV_HEADER, rows.iter().map(|r| fields(r).to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let csv_field = |f: &str| {
            let mut out = Vec::new();
            write_csv_records(&mut out, &["h", "x"], [vec![f.to_string(), "x".to_string()]]).unwrap();
            let text = String::from_utf8(out).unwrap();
            let record = text.strip_prefix("h,x\r\n").unwrap().strip_suffix(",x\r\n").unwrap();
            record.to_string()
        };
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
