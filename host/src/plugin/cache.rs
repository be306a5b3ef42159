//! Compiled components on disk, so a restart does not recompile.
//!
//! Entries are keyed by the SHA-256 of the `.wasm` and by wasmtime's
//! compatibility hash of the engine settings, so a new host version or
//! different settings never load stale code.
//!
//! Compiled code runs natively inside the host, so an entry is used only if
//! this user's host wrote it for this wasm: the directory is this user's and
//! closed to others (made 0700; tightened if it was open), and each entry
//! carries an HMAC-SHA256, under a per-user key kept outside the cache
//! directory (0600), of the wasm's SHA-256, the engine's compatibility hash
//! and the compiled bytes. An entry that fails the check is recompiled with a
//! warning, never loaded. A directory or key another user could have written
//! means no cache (one warning), never a failed load.

use crate::private::private_dir;
use hmac::{Hmac, Mac};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

type HmacSha256 = Hmac<sha2::Sha256>;

/// What every entry starts with: the format, then the 32-byte tag.
const MAGIC: &[u8; 8] = b"KWHCWA1\0";
const TAG_LEN: usize = 32;

/// A directory of `.cwasm` files written by this host, and the key that
/// proves it.
#[derive(Debug, Clone)]
pub struct CompiledCache {
    dir: PathBuf,
    /// The per-user key file (32 random bytes, 0600), outside `dir`.
    key_file: Option<PathBuf>,
    /// The most the entries may take: each store lets the least recently
    /// used go past it (a rebuild a minute would fill a disk otherwise).
    max_bytes: u64,
}

/// The default bound of a cache directory.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// What a cache directory holds (`host cache`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheUsage {
    pub entries: usize,
    pub bytes: u64,
}

/// Whether a component came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded precompiled code.
    Hit,
    /// Compiled (and stored, if the directory was writable).
    Compiled,
    /// Compiled; no cache in use (none asked for, or none to be trusted).
    Disabled,
}

impl CompiledCache {
    /// A cache in `dir` (created on first write), authenticated with the
    /// user's key ([`CompiledCache::default_key_file`]).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompiledCache { dir: dir.into(), key_file: Self::default_key_file(), max_bytes: DEFAULT_MAX_BYTES }
    }

    /// The same cache bounded to `max_bytes` (least recently used go first).
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Every entry: path, size, last use (its modification time, renewed
    /// on each hit).
    fn entries(&self) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        dir.filter_map(Result::ok)
            .filter(|e| is_entry_name(&e.file_name().to_string_lossy()))
            .filter_map(|e| {
                let meta = e.metadata().ok().filter(|m| m.is_file())?;
                Some((e.path(), meta.len(), meta.modified().unwrap_or(std::time::UNIX_EPOCH)))
            })
            .collect()
    }

    /// How many entries and bytes the directory holds.
    pub fn usage(&self) -> CacheUsage {
        let entries = self.entries();
        CacheUsage { entries: entries.len(), bytes: entries.iter().map(|(_, len, _)| len).sum() }
    }

    /// Deletes every entry; returns what went.
    pub fn clean(&self) -> std::io::Result<CacheUsage> {
        let mut gone = CacheUsage::default();
        for (path, len, _) in self.entries() {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                // Another host trimmed it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            gone.entries += 1;
            gone.bytes += len;
        }
        Ok(gone)
    }

    /// Lets the least recently used entries go until the rest fit the
    /// bound (`keep`, just written, always stays).
    fn trim(&self, keep: &Path) {
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort_by_key(|(_, _, used)| *used);
        for (path, len, _) in entries {
            if total <= self.max_bytes {
                break;
            }
            if path != keep && std::fs::remove_file(&path).is_ok() {
                total -= len;
                tracing::debug!(path = %path.display(), "compiled cache over its bound: least recently used entry removed");
            }
        }
    }

    /// The same cache with its key in `key_file` instead (tests, or a key
    /// kept elsewhere).
    pub fn with_key_file(mut self, key_file: impl Into<PathBuf>) -> Self {
        self.key_file = Some(key_file.into());
        self
    }

    /// `$XDG_CACHE_HOME/kinesis-wasm-host` or the platform's equivalent.
    pub fn default_dir() -> Option<PathBuf> {
        dirs::cache_dir().map(|d| d.join("kinesis-wasm-host"))
    }

    /// `$XDG_DATA_HOME/kinesis-wasm-host/cache.key`: the user's data, not
    /// their cache, so whoever can write into a cache directory cannot
    /// also mint tags for it.
    pub fn default_key_file() -> Option<PathBuf> {
        crate::private::data_dir().map(|d| d.join("cache.key"))
    }

    /// The directory in use.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, engine: &Engine, content_sha256: &str) -> (PathBuf, u64) {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat = hasher.finish();
        (self.dir.join(format!("{content_sha256}-{compat:016x}.cwasm")), compat)
    }

    /// Loads the compiled form of `wasm`, compiling and storing it on a miss.
    /// An untrusted, corrupt or unwritable cache never fails the load; it
    /// only costs a compile.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        content_sha256: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let key = match self.key_file.as_deref().ok_or("no data directory for its key".to_string()).and_then(load_key) {
            Ok(key) => key,
            Err(why) => {
                tracing::warn!(dir = %self.dir.display(), "compiled cache not used: {why}");
                return Ok((Component::new(engine, wasm)?, CacheOutcome::Disabled));
            }
        };
        if let Err(why) = private_dir(&self.dir, "use --cache-dir with a directory of your own") {
            tracing::warn!(dir = %self.dir.display(), "compiled cache not used: {why}");
            return Ok((Component::new(engine, wasm)?, CacheOutcome::Disabled));
        }
        let (path, compat) = self.entry_path(engine, content_sha256);
        // Read into memory rather than `deserialize_file`'s mmap: a mapped
        // file truncated in place by anyone else would crash the host (SIGBUS).
        if let Ok(bytes) = std::fs::read(&path) {
            match authentic(&key, content_sha256, compat, &bytes) {
                // SAFETY: wasmtime requires bytes produced by
                // `Component::serialize` of a compatible engine. These bytes
                // carry a tag only this user's key makes, over this wasm's
                // hash and this engine's compatibility hash, and this host
                // writes only `serialize`'s output under it; wasmtime also
                // checks the header and version, which lands in the `Err` arm.
                Ok(compiled) => match unsafe { Component::deserialize(engine, compiled) } {
                    Ok(component) => {
                        // Used now: the bound lets others go first.
                        let now = std::time::SystemTime::now();
                        let _ = std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(now));
                        return Ok((component, CacheOutcome::Hit));
                    }
                    Err(e) => tracing::warn!(path = %path.display(), "ignoring unusable compiled cache entry: {e}"),
                },
                Err(why) => tracing::warn!(path = %path.display(), "compiled cache entry refused, recompiling: {why}"),
            }
        }
        let component = Component::new(engine, wasm)?;
        match self.store(&path, &key, content_sha256, compat, &component) {
            Ok(()) => self.trim(&path),
            Err(e) => tracing::warn!(dir = %self.dir.display(), "cannot write the compiled-component cache: {e:#}"),
        }
        Ok((component, CacheOutcome::Compiled))
    }

    fn store(
        &self,
        path: &Path,
        key: &[u8; TAG_LEN],
        content_sha256: &str,
        compat: u64,
        component: &Component,
    ) -> anyhow::Result<()> {
        let compiled = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
        let tag = tag(key, content_sha256, compat, &compiled);
        // NamedTempFile creates 0600; the rename makes the entry appear whole.
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(MAGIC)?;
        file.write_all(&tag)?;
        file.write_all(&compiled)?;
        file.persist(path)?;
        Ok(())
    }
}

/// Whether a file name is one of this cache's entries
/// (`<sha256 hex>-<16 hex>.cwasm`): nothing else in the directory is
/// counted, trimmed or cleaned.
fn is_entry_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".cwasm") else { return false };
    let Some((sha, compat)) = stem.split_once('-') else { return false };
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    hex(sha, 64) && hex(compat, 16)
}

/// The tag of `compiled` as the entry for `content_sha256` under `compat`.
fn tag(key: &[u8; TAG_LEN], content_sha256: &str, compat: u64, compiled: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = mac(key, content_sha256, compat);
    mac.update(compiled);
    mac.finalize().into_bytes().into()
}

fn mac(key: &[u8; TAG_LEN], content_sha256: &str, compat: u64) -> HmacSha256 {
    // HMAC takes a key of any length; 32 bytes cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key"));
    mac.update(content_sha256.as_bytes());
    mac.update(&[0]);
    mac.update(&compat.to_le_bytes());
    mac
}

/// The compiled bytes of an entry whose tag checks out, or why not.
fn authentic<'a>(key: &[u8; TAG_LEN], content_sha256: &str, compat: u64, entry: &'a [u8]) -> Result<&'a [u8], String> {
    let Some(rest) = entry.strip_prefix(MAGIC.as_slice()) else {
        return Err("not in this host's cache format".into());
    };
    if rest.len() < TAG_LEN {
        return Err("truncated".into());
    }
    let (tag, compiled) = rest.split_at(TAG_LEN);
    let mut mac = mac(key, content_sha256, compat);
    mac.update(compiled);
    // Constant-time comparison.
    mac.verify_slice(tag).map_err(|_| "its tag does not match: not written by this host for this wasm".to_string())?;
    Ok(compiled)
}

/// The user's key, made on first use: 32 random bytes in a 0600 file that
/// is theirs; anything else is refused with why.
fn load_key(path: &Path) -> Result<[u8; TAG_LEN], String> {
    let shown = path.display();
    if !path.exists() {
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            let mut key = [0u8; TAG_LEN];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
            let mut file = tempfile::NamedTempFile::new_in(parent)
                .map_err(|e| format!("cannot write a key into {}: {e}", parent.display()))?;
            file.write_all(&key).map_err(|e| format!("cannot write {shown}: {e}"))?;
            // Another host may have made it meanwhile: theirs wins, read below.
            let _ = file.persist_noclobber(path);
        }
    }
    let bytes = crate::private::read_private_file(path, TAG_LEN as u64)
        .map_err(|why| format!("its key: {why}; `chmod 600 {shown}`, or delete it to make a new one"))?;
    bytes.try_into().map_err(|_| format!("its key {shown} is not 32 bytes; delete it to make a new one"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn only_the_caches_own_names_are_entries() {
        assert!(is_entry_name(&format!("{}-{}.cwasm", "a".repeat(64), "0".repeat(16))));
        for other in ["app.cwasm", "x-y.cwasm", &format!("{}-{}.cwasm.tmp", "a".repeat(64), "0".repeat(16))] {
            assert!(!is_entry_name(other), "{other}");
        }
    }

    #[test]
    fn a_tag_binds_the_entry_to_its_wasm_engine_and_key() {
        let (key, other) = ([1u8; TAG_LEN], [2u8; TAG_LEN]);
        let entry = [MAGIC.as_slice(), &tag(&key, "aa", 7, b"code"), b"code"].concat();
        assert_eq!(authentic(&key, "aa", 7, &entry), Ok(b"code".as_slice()));
        assert!(authentic(&key, "bb", 7, &entry).is_err(), "another wasm's entry");
        assert!(authentic(&key, "aa", 8, &entry).is_err(), "another engine's entry");
        assert!(authentic(&other, "aa", 7, &entry).is_err(), "another user's entry");
        let mut changed = entry.clone();
        *changed.last_mut().expect("byte") ^= 1;
        assert!(authentic(&key, "aa", 7, &changed).is_err(), "changed code");
        assert!(authentic(&key, "aa", 7, b"\x7fELF").is_err(), "a raw .cwasm");
        assert!(authentic(&key, "aa", 7, MAGIC).is_err(), "truncated");
    }

    #[test]
    fn a_key_is_made_private_and_an_open_one_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/cache.key");
        let key = load_key(&path).expect("made");
        assert_eq!(load_key(&path).expect("read again"), key);
        let mode = std::fs::metadata(&path).expect("meta").mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let refused = load_key(&path).expect_err("readable by others");
        assert!(refused.contains("chmod 600"), "{refused}");
    }
}
