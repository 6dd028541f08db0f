//! Nothing: the `--metrics-file` text and its atomic write are `app::metrics`, beside the run
//! summary they export. This file stays only because `cli/mod.rs` still declares the module;
//! drop both together.
