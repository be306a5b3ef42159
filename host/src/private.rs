//! Directories and files only this user may read or write: the compiled
//! cache and its key, the control endpoint's token. A leaf module.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Makes `dir` (0700, parents too) or checks it: a directory (not a link)
/// of this user, closed to others; one this user owns but left open is
/// closed with a warning. `instead` says what to do when it is someone
/// else's ("use --cache-dir …").
pub fn private_dir(dir: &Path, instead: &str) -> Result<(), String> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| format!("cannot create it: {e}"))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.file_type().is_dir() || meta.uid() != effective_uid() {
        return Err(format!("it is not a directory of yours (owner uid {}); {instead}", meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), "{} was open to other users (mode {:o}); closing it to 0700", dir.display(), meta.mode() & 0o7777);
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("it is open to other users and cannot be closed: {e}"))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` as a new 0600 file that replaces any earlier
/// one at once (written beside it, then renamed), so a reader never sees
/// half of it and no other user ever can.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // NamedTempFile is created 0600.
    let mut file =
        tempfile::NamedTempFile::new_in(parent).map_err(|e| format!("cannot write into {}: {e}", parent.display()))?;
    file.write_all(bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.persist(path).map_err(|e| format!("cannot write {}: {}", path.display(), e.error))?;
    Ok(())
}

/// Opens `path` for appending, creating it 0600 if it is new: for files
/// that hold record payloads or state (the output and dead-letter files,
/// the checkpoint store). A file that exists keeps its mode.
pub fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

/// Reads a file that must be this user's and closed to others (a key, a
/// token), refusing anything else with what to do.
pub fn read_private_file(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.file_type().is_file() || meta.uid() != effective_uid() || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{shown} must be a file of yours that only you can read or write (mode {:o}, owner uid {})",
            meta.mode() & 0o7777,
            meta.uid()
        ));
    }
    if meta.len() > max {
        return Err(format!("{shown} holds {} bytes, more than the {max} expected", meta.len()));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))
}

/// `$XDG_DATA_HOME/kinesis-wasm-host` (or the platform's equivalent): the
/// user's data, where the cache key and control tokens live.
pub fn data_dir() -> Option<PathBuf> {
    dirs::data_local_dir().map(|d| d.join("kinesis-wasm-host"))
}

/// This process's effective user.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_made_0700_and_an_open_one_closed() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("a/b");
        private_dir(&dir, "x").expect("made");
        assert_eq!(std::fs::metadata(&dir).expect("meta").mode() & 0o777, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&dir, "x").expect("closed");
        assert_eq!(std::fs::metadata(&dir).expect("meta").mode() & 0o777, 0o700);
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        assert!(private_dir(&link, "x").is_err(), "a link could point anywhere");
    }

    #[test]
    fn a_private_file_is_0600_and_an_open_one_is_not_read() {
        let root = tempfile::tempdir().expect("tempdir");
        let path = root.path().join("token");
        write_private_file(&path, b"one").expect("written");
        write_private_file(&path, b"two").expect("replaced");
        assert_eq!(std::fs::metadata(&path).expect("meta").mode() & 0o777, 0o600);
        assert_eq!(read_private_file(&path, 16).expect("read"), b"two");
        assert!(read_private_file(&path, 2).is_err_and(|e| e.contains("more than")));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(read_private_file(&path, 16).is_err_and(|e| e.contains("only you can read")));
    }
}
