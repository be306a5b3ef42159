//! `host swap`: talk to a running `host run --control-addr`.

use crate::swap::control::{call, token_file, ControlAddr, ControlCall};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// `host swap`: talk to a running `host run --control-addr`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["plugin", "rollback", "status"])))]
pub struct SwapArgs {
    /// The running host's control address (its --control-addr).
    #[arg(long, value_name = "ADDR", env = "HOST_CONTROL_ADDR")]
    pub control_addr: ControlAddr,

    /// The token file that host wrote (default: the one for --control-addr
    /// in your data directory; give what was given to `host run`).
    #[arg(long, value_name = "FILE", env = "HOST_CONTROL_TOKEN_FILE")]
    pub control_token_file: Option<PathBuf>,

    /// Swap to this component (sent to the host, which checks it first).
    #[arg(long, value_name = "FILE")]
    pub plugin: Option<PathBuf>,

    /// Undo the last swap: previous plugin, its pre-swap state, replay from
    /// the pre-swap checkpoints.
    #[arg(long)]
    pub rollback: bool,

    /// Show which logic each shard runs.
    #[arg(long)]
    pub status: bool,
}

impl SwapArgs {
    pub async fn execute(self) -> anyhow::Result<ExitCode> {
        let args = self;
        let request = match (&args.plugin, args.rollback) {
            (Some(path), _) => {
                let bytes = std::fs::read(path).with_context(|| format!("cannot read --plugin {}", path.display()))?;
                let name = std::path::absolute(path).unwrap_or_else(|_| path.clone()).display().to_string();
                ControlCall::Swap { name, bytes }
            }
            (None, true) => ControlCall::Rollback,
            (None, false) => ControlCall::Status,
        };
        let token_file = token_file(&args.control_addr, args.control_token_file.as_deref())?;
        let (status, answer) = call(&args.control_addr, &token_file, request).await?;
        if args.status {
            println!("{}", serde_json::to_string_pretty(&answer)?);
            return Ok(ExitCode::SUCCESS);
        }
        let outcome = answer["outcome"].as_str().unwrap_or("?");
        let message = answer["message"].as_str().unwrap_or_default();
        if status == 200 {
            println!("{outcome}: {message}");
            Ok(ExitCode::SUCCESS)
        } else {
            anyhow::bail!("{outcome}: {message}")
        }
    }
}
