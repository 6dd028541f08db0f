//! Write a large manifest for benchmarks: `CLUSTERS` clusters × `USERS` accounts each, in
//! block style, spread over four zones.
//!
//! ```text
//! cargo run --release --example gen_manifest -- 1000 100 > /tmp/bench-100k.yaml
//! ```

use std::io::{self, BufWriter, Write};

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let clusters: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let users: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let zones = ["sh1a", "pek3", "gd2", "ap2a"];
    let mut out = BufWriter::new(io::stdout().lock());
    writeln!(out, "version: 1")?;
    writeln!(out, "ticket: BENCH-1")?;
    writeln!(out, "requested_by: bench@example.com")?;
    writeln!(out, "reason: \"benchmark: {clusters} clusters x {users} accounts\"")?;
    writeln!(out, "due_by: 2030-12-31T00:00:00Z")?;
    writeln!(out, "defaults:\n  host: \"%\"")?;
    writeln!(out, "clusters:")?;
    for c in 0..clusters {
        writeln!(out, "  - id: cl-bench{c:06}")?;
        writeln!(out, "    zone: {}", zones[c % zones.len()])?;
        writeln!(out, "    users:")?;
        for u in 0..users {
            match u % 10 {
                // Every tenth account in the full form, with its own host and a date.
                0 => writeln!(
                    out,
                    "      - user: svc_{u:04}\n        host: \"10.{}.%\"\n        not_before: 2030-01-01",
                    c % 256
                )?,
                _ => writeln!(out, "      - user_{u:04}")?,
            }
        }
    }
    out.flush()
}
