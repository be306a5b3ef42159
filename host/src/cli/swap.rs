//! `host swap`: new logic for one running host (`--control-addr`), or for
//! every worker of a group (`--lease-table`).

use super::leases::TableArgs;
use super::shared::{seconds, AwsArgs};
use crate::group::{GroupProgress, Loader, PublishError, Published};
use crate::lease::logic::SwapRules;
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

    /// Do not wait for the new logic's probation: return once every shard
    /// switched (one host), or once it is published, before the workers
    /// switch (a group).
    #[arg(long)]
    pub no_wait: bool,

    /// Batches each shard must get through on the new logic; a failure
    /// within them rolls the whole group back (default: the group's).
    #[arg(long, value_name = "N", requires = "lease_table", help_heading = "Group")]
    pub swap_probation: Option<u32>,

    /// When the new logic rejects the running state: refuse (the group
    /// rolls back) or fresh (start it with empty state). Default: the group's.
    #[arg(long, value_name = "WHAT", value_parser = ["refuse", "fresh"], requires = "lease_table", help_heading = "Group")]
    pub on_rejected_state: Option<String>,

    /// Once every shard switched, how long to wait for each to pass
    /// probation (idle shards stay on it), in seconds; then exits 0 (1 for
    /// a group's canary, which must pass).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub probation_wait: f64,

    /// Run the new logic on N running shards first (the busiest); the rest
    /// of the group follows once they pass probation. A failure rolls back
    /// those N alone.
    #[arg(long, value_name = "N", requires = "plugin", help_heading = "Group")]
    pub canary: Option<usize>,

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
        let wait = seconds(self.group.probation_wait, "--probation-wait")?;
        let (status, answer) = call(&addr, &token_file, request).await?;
        if self.status {
            println!("{}", serde_json::to_string_pretty(&answer)?);
            return Ok(ExitCode::SUCCESS);
        }
        let outcome = answer["outcome"].as_str().unwrap_or("?");
        let message = answer["message"].as_str().unwrap_or_default();
        if status != 200 {
            anyhow::bail!("{outcome}: {message}")
        }
        println!("{outcome}: {message}");
        // Generation 0: a group worker published it; its workers switch on their own.
        let generation = answer["generation"].as_u64().unwrap_or(0);
        if outcome != SwapOutcome::Swapped.as_str() || self.group.no_wait || generation == 0 {
            return Ok(ExitCode::SUCCESS);
        }
        wait_for_probation(&addr, &token_file, generation, wait).await
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
                let rules = match (args.swap_probation, &args.on_rejected_state) {
                    (None, None) => None,
                    (probation, on_rejected) => {
                        let group = table.deployment().await?.map(|d| d.rules).unwrap_or_default();
                        Some(SwapRules {
                            probation_batches: probation.unwrap_or(group.probation_batches),
                            fresh_on_rejected_state: on_rejected
                                .as_ref()
                                .map_or(group.fresh_on_rejected_state, |w| w == "fresh"),
                        })
                    }
                };
                let canary = match args.canary {
                    Some(n) => canary_shards(&table, n).await?,
                    None => Vec::new(),
                };
                let loader = Loader { engine, cache };
                let request = crate::group::Publish { source, rules, canary, promote: true };
                match crate::group::publish(&table, &loader, settings, request, &me).await {
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
        let probation_wait = seconds(args.probation_wait, "--probation-wait")?;
        let waited = wait_for_group(&table, &deployment, timeout, probation_wait).await?;
        if deployment.canary.is_empty() || waited != ExitCode::SUCCESS {
            return Ok(waited);
        }
        // The canary passed: every shard follows.
        let promoted = deployment.promoted(&me);
        table.deploy(&promoted).await.context("cannot promote the canary (did the group move on?)")?;
        println!("published {}", promoted.describe());
        wait_for_group(&table, &promoted, timeout, probation_wait).await
    }
}

/// Waits until no shard of one host is on probation for the swap that
/// made `generation`: exit 0 once all passed (or `wait` ran out with no
/// failure: idle shards stay on probation), 1 when the host rolled it back.
async fn wait_for_probation(
    addr: &ControlAddr,
    token_file: &std::path::Path,
    generation: u64,
    wait: Duration,
) -> anyhow::Result<ExitCode> {
    let deadline = Instant::now() + wait;
    let mut shown = None;
    loop {
        let status = match call(addr, token_file, ControlCall::Status).await {
            Ok((_, status)) => status,
            // A host whose last shard stopped on the new logic ends its run.
            Err(e) => {
                eprintln!("error: the host stopped while the new logic was on probation (its log says why): {e:#}");
                return Ok(ExitCode::from(1));
            }
        };
        let (now, last) = (status["generation"].as_u64().unwrap_or(0), &status["last"]);
        if now < generation {
            anyhow::bail!("the host restarted while the new logic was on probation; see `host swap --status`");
        }
        let probation: Vec<(&String, &serde_json::Value)> = status["probation"]
            .as_object()
            .map(|p| p.iter().filter(|(_, p)| p["generation"].as_u64() == Some(generation)).collect())
            .unwrap_or_default();
        // A shard that failed says so at once (its rollback follows).
        if let Some((shard, failed)) = probation.iter().find_map(|(s, p)| Some((s, p["failed"].as_str()?))) {
            eprintln!("error: the new logic failed its probation on shard {shard}: {failed}");
            return Ok(ExitCode::from(1));
        }
        let settled = last["generation"].as_u64().unwrap_or(0);
        // Once a later change settled, it says what became of this one (a
        // later change still under way is waited for).
        if now > generation && settled >= now {
            let (outcome, message) = (last["outcome"].as_str().unwrap_or("?"), last["message"].as_str().unwrap_or(""));
            if outcome == SwapOutcome::RolledBack.as_str() {
                eprintln!("error: the host rolled the swap back in probation: {message}");
                return Ok(ExitCode::from(1));
            }
            println!("another change followed before probation ended: {outcome}: {message}");
            return Ok(ExitCode::SUCCESS);
        }
        let left = probation.len();
        if left == 0 && now == generation {
            println!("passed probation on every shard");
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() >= deadline {
            println!(
                "{left} shard(s) still on probation after {:.0} s, no failure so far (a shard passes after its first batches; an idle one stays on probation: `host swap --status`)",
                wait.as_secs_f64()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if shown != Some(left) {
            eprintln!("waiting for probation on {left} shard(s)");
            shown = Some(left);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every running shard runs `deployment`'s logic, then for
/// its probation (each shard's first batches on it), printing progress.
/// Fails when the group rolls it back or the switch times out; shards that
/// read nothing within `probation_wait` stay on probation, and it says so.
async fn wait_for_group(
    table: &dyn LeaseTable,
    deployment: &Deployment,
    timeout: Duration,
    probation_wait: Duration,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut switched_at: Option<Instant> = None;
    let mut shown = None;
    // The switch commit, then one per batch (at --checkpoint-every 1).
    let passed = match deployment.change {
        // A rollback returns to logic that already ran: nothing to prove.
        DeploymentChange::Rollback { .. } => 0,
        _ => u64::from(deployment.rules.probation_batches) + 1,
    };
    loop {
        let progress: GroupProgress = crate::group::progress(table).await?;
        if let Some(now) = progress.deployment.as_ref().filter(|d| d.number > deployment.number) {
            if let DeploymentChange::Rollback { of, reason } = &now.change {
                if *of == deployment.number {
                    eprintln!("error: the group rolled deployment {of} back: {reason}");
                    return Ok(ExitCode::from(1));
                }
            }
            eprintln!("error: the group moved on before this deployment was through: {}", now.describe());
            return Ok(ExitCode::from(1));
        }
        let (on, running) = progress.on_logic();
        let sha = Some(deployment.logic.sha256.as_str());
        let through = progress.running().filter(|l| l.logic.as_deref() == sha && l.logic_commits >= passed).count();
        if shown != Some((on, running, through)) {
            eprintln!(
                "{on}/{running} running shard(s) on {}, {through} through probation ({:.1} s)",
                deployment.logic.short(),
                started.elapsed().as_secs_f64()
            );
            shown = Some((on, running, through));
        }
        let elapsed = started.elapsed().as_secs_f64();
        if on == running && switched_at.is_none() {
            switched_at = Some(Instant::now());
            if running == 0 && !deployment.canary.is_empty() {
                eprintln!("error: no canary shard runs now (ended or unowned): nothing to judge the canary by");
                return Ok(ExitCode::from(1));
            }
            if running == 0 {
                println!("swapped: no shard runs now; workers start on {}", deployment.logic.short());
                return Ok(ExitCode::SUCCESS);
            }
            println!("every running shard ({running}) switched to {} in {elapsed:.1} s", deployment.logic.short());
        }
        if let Some(at) = switched_at {
            if through == running {
                println!(
                    "swapped: every running shard passed probation on {} ({elapsed:.1} s)",
                    deployment.logic.short()
                );
                return Ok(ExitCode::SUCCESS);
            }
            if at.elapsed() > probation_wait && !deployment.canary.is_empty() {
                eprintln!(
                    "error: {through}/{running} canary shard(s) passed probation within {probation_wait:?}; the canary \
                     stays: run the same `host swap --plugin` again to promote it, or `--rollback`"
                );
                return Ok(ExitCode::from(1));
            }
            if at.elapsed() > probation_wait {
                println!(
                    "swapped: {through}/{running} shard(s) passed probation on {}; the others read too little within \
                     {probation_wait:?} and stay on probation (`host swap --status` shows them)",
                    deployment.logic.short()
                );
                return Ok(ExitCode::SUCCESS);
            }
        } else if started.elapsed() > timeout {
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

/// The `n` running shards that committed most lately (likely to read
/// records, so their probation means something), by shard id.
async fn canary_shards(table: &dyn LeaseTable, n: usize) -> anyhow::Result<Vec<String>> {
    if n == 0 || n > crate::lease::logic::MAX_CANARY_SHARDS {
        anyhow::bail!("--canary takes 1 to {} shards", crate::lease::logic::MAX_CANARY_SHARDS);
    }
    let mut running: Vec<_> = table
        .scan()
        .await
        .context("cannot read the leases")?
        .into_iter()
        .filter(|l| l.owner.is_some() && !l.ended())
        .collect();
    running.sort_by_key(|l| std::cmp::Reverse(l.updated_millis));
    let mut picked: Vec<String> = running.into_iter().take(n).map(|l| l.key).collect();
    picked.sort();
    Ok(picked)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "?".into())
}
