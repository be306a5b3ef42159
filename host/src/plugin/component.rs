//! Loading a processor: read, check it is a component of the right world,
//! compile (or take from the cache), and pre-link it once for all shards.

use super::cache::{CacheOutcome, CompiledCache};
use super::contract::{check_exports, Contract, Indices};
use super::engine::PluginEngine;
use super::error::PluginError;
use super::state::HostState;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use wasmtime::component::{Component, InstancePre};

/// A validated, compiled, pre-linked processor; instantiated once per shard.
pub struct Plugin {
    /// Where it was loaded from, for messages.
    path: PathBuf,
    /// SHA-256 of the file, so output can be traced to the exact logic.
    sha256: String,
    /// Imports resolved once; instantiating per shard is then cheap.
    pre: InstancePre<HostState>,
    /// Where its exports are, and so which package version it was built for.
    indices: Indices,
    /// The engine it was compiled for.
    engine: PluginEngine,
    /// Whether compiled code came from the cache.
    cache: CacheOutcome,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("path", &self.path).field("sha256", &self.sha256).finish_non_exhaustive()
    }
}

impl Plugin {
    /// Loads the component at `path`.
    pub fn load(engine: &PluginEngine, path: &Path, cache: Option<&CompiledCache>) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => PluginError::NotFound { path: path.to_path_buf() },
            _ => PluginError::Unreadable { path: path.to_path_buf(), source },
        })?;
        Self::from_bytes(engine, path, &bytes, cache)
    }

    /// Loads a component from memory; `path` only names it in messages.
    pub fn from_bytes(
        engine: &PluginEngine,
        path: &Path,
        bytes: &[u8],
        cache: Option<&CompiledCache>,
    ) -> Result<Plugin, PluginError> {
        let path = path.to_path_buf();
        if !bytes.starts_with(b"\0asm") {
            return Err(PluginError::NotWasm { path });
        }
        if wasmparser::Parser::is_core_wasm(bytes) {
            return Err(PluginError::CoreModule { path });
        }
        if !wasmparser::Parser::is_component(bytes) {
            return Err(PluginError::Invalid { path, reason: "unknown WebAssembly binary version".into() });
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        let compiled = match cache {
            Some(cache) => cache.load_or_compile(engine.engine(), bytes, &sha256),
            None => Component::new(engine.engine(), bytes).map(|c| (c, CacheOutcome::Disabled)),
        };
        let (component, cache) =
            compiled.map_err(|e| PluginError::Invalid { path: path.clone(), reason: first_line(&e) })?;
        let ty = component.component_type();
        let exports: Vec<&str> = ty.exports(engine.engine()).map(|(name, _)| name).collect();
        // The world first: a component of another world needs other imports
        // too, and "exports X instead" is the message that helps.
        check_exports(&exports).map_err(|reason| PluginError::WrongWorld { path: path.clone(), reason })?;
        let pre = engine
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| PluginError::UnsupportedImport { path: path.clone(), reason: first_line(&e) })?;
        let indices = Indices::new(&component, &exports, &pre)
            .map_err(|reason| PluginError::WrongWorld { path: path.clone(), reason })?;
        Ok(Plugin { path, sha256, pre, indices, engine: engine.clone(), cache })
    }

    /// The file it came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 (hex) of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether the compiled code came from the cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache
    }

    /// The contract version it was built for (and whether it merges state).
    pub fn contract(&self) -> Contract {
        self.indices.contract()
    }

    pub(crate) fn pre(&self) -> &InstancePre<HostState> {
        &self.pre
    }

    pub(crate) fn indices(&self) -> &Indices {
        &self.indices
    }

    pub(crate) fn engine(&self) -> &PluginEngine {
        &self.engine
    }
}

/// wasmtime errors carry a context chain; the first line (with its cause)
/// is what a user needs.
pub(crate) fn first_line(e: &wasmtime::Error) -> String {
    let full = format!("{e:#}");
    full.lines().next().unwrap_or_default().to_string()
}
