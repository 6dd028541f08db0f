//! The application: what each command does, between the command line and the library. `cli`
//! turns arguments into the plain options here, calls in, and prints what comes back; this
//! layer resolves the target ([`target`]), opens the database each command needs
//! ([`database`]) and reads the records the read-only commands show ([`records`]).
//!
//! It must not import `cli` nor print to stdout: what the user reads is `cli`'s to write, from
//! the values this layer hands back. Logs (tracing, on stderr) are fine.

pub mod database;
pub mod records;
pub mod target;
