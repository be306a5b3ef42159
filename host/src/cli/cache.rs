//! `host cache`: what the compiled-component cache holds, and emptying it.
//! Every cache is bounded anyway (`--cache-max-mb`): a store lets the
//! least recently used entries go.

use crate::plugin::CompiledCache;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// `host cache`.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// How many compiled components the cache holds, and their size.
    Show(CacheDirArgs),
    /// Delete every compiled component (each compiles again on next use).
    Clean(CacheDirArgs),
}

/// Which cache.
#[derive(Debug, Args)]
pub struct CacheDirArgs {
    /// The cache directory (default: the user cache directory).
    #[arg(long, value_name = "DIR", env = "HOST_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl CacheCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let (CacheCommand::Show(args) | CacheCommand::Clean(args)) = &self;
        let Some(dir) = args.cache_dir.clone().or_else(CompiledCache::default_dir) else {
            anyhow::bail!("no user cache directory here: give --cache-dir DIR");
        };
        let cache = CompiledCache::new(&dir);
        let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
        match self {
            CacheCommand::Show(_) => {
                let usage = cache.usage();
                println!("{}: {} compiled component(s), {:.1} MiB", dir.display(), usage.entries, mib(usage.bytes));
            }
            CacheCommand::Clean(_) => {
                let gone = cache.clean().map_err(|e| anyhow::anyhow!("cannot clean {}: {e}", dir.display()))?;
                println!(
                    "{}: removed {} compiled component(s), {:.1} MiB",
                    dir.display(),
                    gone.entries,
                    mib(gone.bytes)
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
