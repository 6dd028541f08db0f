//! `sim [--listen ADDR] [--world FILE]`: run the QingCloud API simulator in the foreground.
//!
//! The first line on stdout is `listening on http://ADDR/iaas/`, flushed at once, so scripts
//! and tests can start it on port 0 and read where it went. It serves until SIGINT or SIGTERM.

use std::io::Write as _;

use anyhow::Context as _;

use crate::cli::{GlobalOpts, SimArgs};
use crate::exit::{Coded, Exit};
use crate::sim::{self, World};

pub async fn run(_global: &GlobalOpts, args: SimArgs) -> anyhow::Result<Exit> {
    let world = match &args.world {
        Some(path) => World::load(path).map_err(|e| Coded::new(Exit::Config, e.to_string()))?,
        None => World::default(),
    };
    let handle = sim::start(world, args.listen)
        .await
        .map_err(|e| Coded::new(Exit::Unavailable, format!("cannot listen on {}: {e}", args.listen)))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", handle.endpoint()).context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    drop(out);
    stop_signal().await?;
    tracing::info!("simulator: stopping");
    handle.shutdown().await;
    Ok(Exit::Ok)
}

/// Wait for SIGINT (Ctrl-C) or SIGTERM.
async fn stop_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("installing the SIGINT handler")?,
        _ = term.recv() => {}
    }
    Ok(())
}
