//! Compiled components on disk, so a restart does not recompile.
//!
//! Entries are keyed by the SHA-256 of the `.wasm` and by wasmtime's
//! compatibility hash of the engine settings, so a new host version or
//! different settings never load stale code.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

/// A directory of `.cwasm` files written by this host.
#[derive(Debug, Clone)]
pub struct CompiledCache {
    dir: PathBuf,
}

/// Whether a component came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded precompiled code.
    Hit,
    /// Compiled (and stored, if the directory was writable).
    Compiled,
    /// Compiled; no cache in use.
    Disabled,
}

impl CompiledCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompiledCache { dir: dir.into() }
    }

    /// `$XDG_CACHE_HOME/kinesis-wasm-host` or the platform's equivalent.
    pub fn default_dir() -> Option<PathBuf> {
        dirs::cache_dir().map(|d| d.join("kinesis-wasm-host"))
    }

    /// The directory in use.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, engine: &Engine, content_sha256: &str) -> PathBuf {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir.join(format!("{content_sha256}-{:016x}.cwasm", hasher.finish()))
    }

    /// Loads the compiled form of `wasm`, compiling and storing it on a miss.
    /// A corrupt or unwritable cache never fails the load; it only costs a compile.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        content_sha256: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.entry_path(engine, content_sha256);
        // Read into memory rather than `deserialize_file`'s mmap: a mapped
        // file truncated in place by anyone else would crash the host (SIGBUS).
        if let Ok(bytes) = std::fs::read(&path) {
            // SAFETY: wasmtime requires bytes produced by `Component::serialize`
            // of a compatible engine. Only this host writes into this
            // directory, by atomic rename, under a name that includes the
            // engine's compatibility hash; wasmtime also checks the header and
            // version and rejects anything else, which lands in the `Err` arm.
            match unsafe { Component::deserialize(engine, &bytes) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => tracing::warn!(path = %path.display(), "ignoring unusable compiled cache entry: {e}"),
            }
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(dir = %self.dir.display(), "cannot write the compiled-component cache: {e:#}");
        }
        Ok((component, CacheOutcome::Compiled))
    }

    fn store(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        let bytes = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
        std::fs::create_dir_all(&self.dir)?;
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::io::Write::write_all(&mut file, &bytes)?;
        file.persist(path)?;
        Ok(())
    }
}
