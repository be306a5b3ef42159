//! `host swap`: new logic for one running host (`--control-addr`), or for
//! every worker of a group (`--lease-table`).

use super::leases::TableArgs;
use super::shared::{seconds, AwsArgs};
use crate::group::{GroupProgress, Loader, PublishError, Published};
use crate::lease::{Deployment, DeploymentChange, LeaseTable, TableSetup};
use crate::swap::control::{call, token_file, ControlAddr, ControlCall};
use crate::swap::{PluginSource, SwapOutcome};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `host swap`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["plugin", "rollback", "status"])))]
#[command(group(clap::ArgGroup::new("where").required(true).args(["control_addr", "lease_table"])))]
pub struct SwapArgs {
    /// The running host's control address (its --control-addr).
    #[arg(long, value_name = "ADDR", env = "HOST_CONTROL_ADDR")]
    pub control_addr: Option<ControlAddr>,

    /// The token file that host wrote (default: the one for --control-addr
    /// in your data directory; give what was given to `host run`).
    #[arg(long, value_name = "FILE", env = "HOST_CONTROL_TOKEN_FILE", requires = "control_addr")]
    pub control_token_file: Option<PathBuf>,

    /// Swap to this component (checked before anything changes).
    #[arg(long, value_name = "FILE")]
    pub plugin: Option<PathBuf>,

    /// Undo the last swap: previous plugin, its pre-swap state, replay from
    /// the pre-swap checkpoints.
    #[arg(long)]
    pub rollback: bool,

    /// Show which logic each shard runs.
    #[arg(long)]
    pub status: bool,

    #[command(flatten)]
    pub group: GroupArgs,
}

/// The group a swap goes to: every worker of a lease table.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// Swap every worker of this lease table (the group's `--lease-table`).
    #[arg(long, value_name = "NAME", requires = "stream", help_heading = "Group")]
    pub lease_table: Option<String>,

    /// The stream the group consumes.
    #[arg(long, requires = "lease_table", help_heading = "Group")]
    pub stream: Option<String>,

    #[command(flatten)]
    pub aws: AwsArgs,

    /// A DynamoDB-compatible endpoint (default: --endpoint-url).
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL_DYNAMODB", help_heading = "Group")]
    pub dynamodb_endpoint_url: Option<String>,

    /// Return once the new logic is published, without waiting for the
    /// workers to switch.
    #[arg(long, requires = "lease_table", help_heading = "Group")]
    pub no_wait: bool,

    /// Longest wait for every running shard to switch, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 120.0, help_heading = "Group")]
    pub timeout: f64,
}

impl SwapArgs {
    pub async fn execute(self) -> anyhow::Result<ExitCode> {
        match (&self.control_addr, &self.group.lease_table) {
            (Some(addr), _) => self.one_host(addr.clone()).await,
            (None, Some(_)) => self.whole_group().await,
            (None, None) => anyhow::bail!("give --control-addr (one host) or --lease-table and --stream (a group)"),
        }
    }

    async fn one_host(&self, addr: ControlAddr) -> anyhow::Result<ExitCode> {
        let request = match (&self.plugin, self.rollback) {
            (Some(path), _) => {
                let bytes = std::fs::read(path).with_context(|| format!("cannot read --plugin {}", path.display()))?;
                let name = std::path::absolute(path).unwrap_or_else(|_| path.clone()).display().to_string();
                ControlCall::Swap { name, bytes }
            }
            (None, true) => ControlCall::Rollback,
            (None, false) => ControlCall::Status,
        };
        let token_file = token_file(&addr, self.control_token_file.as_deref())?;
        let (status, answer) = call(&addr, &token_file, request).await?;
        if self.status {
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

    async fn whole_group(&self) -> anyhow::Result<ExitCode> {
        let args = &self.group;
        let (Some(lease_table), Some(stream)) = (args.lease_table.clone(), args.stream.clone()) else {
            anyhow::bail!("--lease-table needs --stream");
        };
        let timeout = seconds(args.timeout, "--timeout")?;
        let table = TableArgs {
            aws: args.aws.clone(),
            lease_table,
            stream: stream.clone(),
            dynamodb_endpoint_url: args.dynamodb_endpoint_url.clone(),
        };
        let table = table.open(TableSetup::Inspect).await?;
        if self.status {
            let progress = crate::group::progress(&table).await?;
            print!("{}", crate::lease::render_table(&progress.leases, progress.deployment.as_ref()));
            return Ok(ExitCode::SUCCESS);
        }
        let me = format!("host swap on {}", hostname());
        let deployment = match &self.plugin {
            Some(path) => {
                let engine = crate::plugin::PluginEngine::new()?;
                let cache = crate::plugin::CompiledCache::default_dir().map(crate::plugin::CompiledCache::new);
                let settings = crate::plugin::InstanceSettings {
                    config: String::new(),
                    context: crate::plugin::bindings::ShardContext::new(&stream, "swap-check", "host"),
                    limits: Default::default(),
                    clock: crate::plugin::Clock::System,
                };
                let source = PluginSource::Path(path.clone());
                match crate::group::publish(&table, &Loader { engine, cache }, settings, source, &me).await {
                    Ok(Published::Deployed(deployment)) => deployment,
                    Ok(Published::Unchanged(deployment)) => {
                        println!("unchanged: the group runs {} already ({})", path.display(), deployment.describe());
                        return Ok(ExitCode::SUCCESS);
                    }
                    Err(PublishError::Refused(why)) => anyhow::bail!("refused: {why}; the group's logic stays"),
                    Err(e) => return Err(e.into()),
                }
            }
            None => {
                let result = crate::group::requested_rollback(&table, &me).await;
                if result.outcome != SwapOutcome::RolledBack {
                    anyhow::bail!("{}: {}", result.outcome, result.message);
                }
                table.deployment().await?.context("the group's logic vanished")?
            }
        };
        println!("published {}", deployment.describe());
        if args.no_wait {
            return Ok(ExitCode::SUCCESS);
        }
        wait_for_group(&table, &deployment, timeout).await
    }
}

/// Waits until every running shard runs `deployment`'s logic, printing
/// progress; fails when the group rolls it back or the wait times out.
async fn wait_for_group(
    table: &dyn LeaseTable,
    deployment: &Deployment,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut shown = None;
    loop {
        let progress: GroupProgress = crate::group::progress(table).await?;
        if let Some(now) = progress.deployment.as_ref().filter(|d| d.number > deployment.number) {
            if let DeploymentChange::Rollback { of, reason } = &now.change {
                if *of == deployment.number {
                    eprintln!("error: the group rolled deployment {of} back: {reason}");
                    return Ok(ExitCode::from(1));
                }
            }
            eprintln!("error: the group moved on before every shard switched: {}", now.describe());
            return Ok(ExitCode::from(1));
        }
        let (on, running) = progress.on_logic();
        if shown != Some((on, running)) {
            eprintln!(
                "{on}/{running} running shard(s) on {} ({:.1} s)",
                deployment.logic.short(),
                started.elapsed().as_secs_f64()
            );
            shown = Some((on, running));
        }
        if on == running {
            let what =
                if running == 0 { "no shard runs now; workers start on it" } else { "every running shard switched" };
            println!("swapped: {what} ({}) in {:.1} s", deployment.logic.short(), started.elapsed().as_secs_f64());
            return Ok(ExitCode::SUCCESS);
        }
        if started.elapsed() > timeout {
            eprintln!(
                "error: after {timeout:?}, {} shard(s) are not on {} yet: {}",
                running - on,
                deployment.logic.short(),
                progress.behind().join(", ")
            );
            return Ok(ExitCode::from(1));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "?".into())
}
