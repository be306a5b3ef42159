//! The single-host checkpoint store: one SQLite file, one row per
//! (application, stream, shard), position and state committed in one
//! fsynced transaction. Nobody else writes it, so no commit is ever fenced.

use super::{Checkpoint, CheckpointStore, CommitError, ShardKey};
use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The store: one SQLite file in WAL mode with full fsync on commit.
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    /// One connection serialises writers; commits are short.
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the checkpoint directory {}", dir.display()))?;
        }
        // Plugin state may hold anything from the records: a new store is
        // the user's alone (SQLite gives its -wal and -shm files the same mode).
        crate::private::open_append(path)
            .with_context(|| format!("cannot create the checkpoint store {}", path.display()))?;
        let conn =
            Connection::open(path).with_context(|| format!("cannot open the checkpoint store {}", path.display()))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS checkpoints (
                 application TEXT NOT NULL,
                 stream TEXT NOT NULL,
                 shard_id TEXT NOT NULL,
                 sequence_number TEXT,
                 sub_sequence_number INTEGER NOT NULL DEFAULT 0,
                 shard_end INTEGER NOT NULL DEFAULT 0,
                 state_version INTEGER,
                 state BLOB,
                 updated_at_millis INTEGER NOT NULL,
                 PRIMARY KEY (application, stream, shard_id)
             );",
        )
        .with_context(|| {
            format!("{} is not a usable checkpoint store (is it another kind of file?)", path.display())
        })?;
        Ok(SqliteStore { path: path.to_path_buf(), conn: Arc::new(Mutex::new(conn)) })
    }

    /// The file backing the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| anyhow::anyhow!("checkpoint store lock poisoned by a panic"))
    }

    /// The checkpoint of a shard, if any.
    pub fn load(&self, application: &str, stream: &str, shard_id: &str) -> anyhow::Result<Option<Checkpoint>> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT sequence_number, sub_sequence_number, shard_end, state_version, state
             FROM checkpoints WHERE application = ?1 AND stream = ?2 AND shard_id = ?3",
            params![application, stream, shard_id],
            |row| {
                let version: Option<u32> = row.get(3)?;
                let state: Option<Vec<u8>> = row.get(4)?;
                Ok(Checkpoint {
                    sequence_number: row.get(0)?,
                    sub_sequence_number: row.get::<_, i64>(1)? as u64,
                    shard_end: row.get::<_, i64>(2)? != 0,
                    state: version.zip(state),
                    ..Checkpoint::default()
                })
            },
        )
        .optional()
        .with_context(|| format!("cannot read the checkpoint of {shard_id} from {}", self.path.display()))
    }

    /// Commits a shard's checkpoint atomically (one transaction, fsynced).
    pub fn commit(
        &self,
        application: &str,
        stream: &str,
        shard_id: &str,
        checkpoint: &Checkpoint,
    ) -> anyhow::Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let (version, state) = match &checkpoint.state {
            Some((v, s)) => (Some(*v), Some(s.as_slice())),
            None => (None, None),
        };
        let mut conn = self.conn()?;
        let tx = conn.transaction().context("cannot start a checkpoint transaction")?;
        tx.execute(
            "INSERT INTO checkpoints
                 (application, stream, shard_id, sequence_number, sub_sequence_number, shard_end, state_version, state, updated_at_millis)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (application, stream, shard_id) DO UPDATE SET
                 sequence_number = excluded.sequence_number,
                 sub_sequence_number = excluded.sub_sequence_number,
                 shard_end = excluded.shard_end,
                 state_version = CASE WHEN excluded.shard_end = 1 AND excluded.state IS NULL
                                      THEN checkpoints.state_version ELSE excluded.state_version END,
                 state = CASE WHEN excluded.shard_end = 1 AND excluded.state IS NULL
                              THEN checkpoints.state ELSE excluded.state END,
                 updated_at_millis = excluded.updated_at_millis",
            params![
                application,
                stream,
                shard_id,
                checkpoint.sequence_number,
                checkpoint.sub_sequence_number as i64,
                checkpoint.shard_end as i64,
                version,
                state,
                now
            ],
        )
        .with_context(|| format!("cannot write the checkpoint of {shard_id}"))?;
        tx.commit().with_context(|| format!("cannot commit the checkpoint of {shard_id} to {}", self.path.display()))
    }

    /// All checkpoints of an application's stream: (shard id, checkpoint).
    pub fn list(&self, application: &str, stream: &str) -> anyhow::Result<Vec<(String, Checkpoint)>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT shard_id, sequence_number, sub_sequence_number, shard_end, state_version, state
             FROM checkpoints WHERE application = ?1 AND stream = ?2 ORDER BY shard_id",
        )?;
        let rows = stmt.query_map(params![application, stream], |row| {
            let version: Option<u32> = row.get(4)?;
            let state: Option<Vec<u8>> = row.get(5)?;
            Ok((
                row.get::<_, String>(0)?,
                Checkpoint {
                    sequence_number: row.get(1)?,
                    sub_sequence_number: row.get::<_, i64>(2)? as u64,
                    shard_end: row.get::<_, i64>(3)? != 0,
                    state: version.zip(state),
                    ..Checkpoint::default()
                },
            ))
        })?;
        rows.collect::<Result<Vec<_>, _>>().context("cannot list checkpoints")
    }
}

#[async_trait::async_trait]
impl CheckpointStore for SqliteStore {
    async fn load(&self, key: &ShardKey) -> anyhow::Result<Option<Checkpoint>> {
        let (store, key) = (self.clone(), key.clone());
        tokio::task::spawn_blocking(move || SqliteStore::load(&store, &key.application, &key.stream, &key.shard_id))
            .await
            .context("checkpoint load panicked")?
    }

    async fn commit(&self, key: &ShardKey, _tenure: super::Tenure, checkpoint: &Checkpoint) -> Result<(), CommitError> {
        let (store, key, checkpoint) = (self.clone(), key.clone(), checkpoint.clone());
        tokio::task::spawn_blocking(move || {
            SqliteStore::commit(&store, &key.application, &key.stream, &key.shard_id, &checkpoint)
        })
        .await
        .context("checkpoint commit panicked")?
        .map_err(CommitError::Store)
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linked_sqlite_has_the_fix_for_cve_2025_6965() {
        // 3.50.2 fixed it; dynoxide's pin would give 3.49.2 (see
        // host/vendor/libsqlite3-sys/PATCHED.md).
        assert!(rusqlite::version_number() >= 3_050_002, "SQLite {}", rusqlite::version());
    }

    #[test]
    fn commits_survive_reopening_and_replace_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/checkpoints.db");
        let store = SqliteStore::open(&path).expect("open");
        assert_eq!(store.load("app", "s", "shard-1").expect("load"), None);
        let first = Checkpoint {
            sequence_number: Some("49".into()),
            sub_sequence_number: 0,
            shard_end: false,
            state: Some((1, b"state".to_vec())),
            ..Checkpoint::default()
        };
        store.commit("app", "s", "shard-1", &first).expect("commit");
        let cleared = Checkpoint { sequence_number: Some("50".into()), state: None, ..first.clone() };
        store.commit("app", "s", "shard-1", &cleared).expect("commit");
        assert_eq!(store.load("app", "s", "shard-1").expect("load"), Some(cleared), "no state: none kept");
        store.commit("app", "s", "shard-1", &first).expect("commit");
        // At a shard's end the last state stays, for the shard's children.
        let end = Checkpoint { sequence_number: Some("51".into()), shard_end: true, state: None, ..first.clone() };
        store.commit("app", "s", "shard-1", &end).expect("commit");
        drop(store);
        let store = SqliteStore::open(&path).expect("reopen");
        let kept = Checkpoint { state: first.state.clone(), ..end };
        assert_eq!(store.load("app", "s", "shard-1").expect("load"), Some(kept));
        assert_eq!(store.load("other-app", "s", "shard-1").expect("load"), None, "keyed by application");
        assert_eq!(store.list("app", "s").expect("list").len(), 1);
    }

    #[test]
    fn a_file_that_is_not_a_store_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("not-a-db");
        std::fs::write(&path, b"this is plain text, not SQLite, and long enough to have a header").expect("write");
        let err = SqliteStore::open(&path).expect_err("refused");
        assert!(format!("{err:#}").contains("is not a usable checkpoint store"), "{err:#}");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"this is plain text, not SQLite, and long enough to have a header",
            "left untouched"
        );
    }
}
