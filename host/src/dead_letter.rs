//! The dead-letter sink: where a record the plugin cannot process goes,
//! with everything needed to find, understand and replay it. Nothing is
//! ever skipped without a line here (and a count in the metrics).

use crate::kinesis::producer::{put_all, Outgoing};
use crate::sink::Destination;
use anyhow::Context;
use base64::Engine as _;
use serde::Serialize;
use std::io::Write;
use std::sync::Mutex;

/// Why a record was set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeadLetterReason {
    /// The plugin failed on it (after retries and bisecting).
    Poison,
    /// Older than `--max-record-age` when read.
    Expired,
}

impl DeadLetterReason {
    /// The name in metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Poison => "poison",
            DeadLetterReason::Expired => "expired",
        }
    }
}

/// One record set aside, as written (one JSON object per line, or the data
/// of one Kinesis record).
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub reason: DeadLetterReason,
    pub stream: String,
    pub shard_id: String,
    pub sequence_number: String,
    pub sub_sequence_number: u64,
    pub partition_key: String,
    /// Approximate arrival time, ms since the Unix epoch.
    pub arrival_millis: i64,
    /// The data as text when it is UTF-8…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// …else base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    /// What went wrong, in the plugin's or the host's words.
    pub error: String,
    /// Calls made on the record (or the slices holding it) before giving up.
    pub attempts: u32,
    /// Content hash of the plugin that failed on it.
    pub plugin_sha256: String,
    /// When it was set aside, ms since the Unix epoch.
    pub dead_lettered_at_millis: i64,
}

/// Where a dead letter comes from: the names and logic on the letter.
#[derive(Debug, Clone, Copy)]
pub struct LetterSource<'a> {
    pub stream: &'a str,
    pub shard_id: &'a str,
    /// Content hash of the plugin that failed on the record.
    pub plugin_sha256: &'a str,
}

impl DeadLetter {
    /// The letter for `record`: everything needed to find, understand and
    /// replay it. `now_millis` is when it is set aside.
    pub fn from_record(
        record: &kinesis_processor_sdk::Record<'_>,
        from: LetterSource<'_>,
        reason: DeadLetterReason,
        error: String,
        attempts: u32,
        now_millis: i64,
    ) -> Self {
        let mut letter = DeadLetter {
            reason,
            stream: from.stream.to_string(),
            shard_id: from.shard_id.to_string(),
            sequence_number: record.sequence_number().to_string(),
            sub_sequence_number: record.sub_sequence_number(),
            partition_key: String::from_utf8_lossy(record.partition_key_bytes()).into_owned(),
            arrival_millis: record.approximate_arrival_millis(),
            data: None,
            data_base64: None,
            error,
            attempts,
            plugin_sha256: from.plugin_sha256.to_string(),
            dead_lettered_at_millis: now_millis,
        };
        letter.set_data(record.data());
        letter
    }

    /// Stores `data` as text when it is UTF-8, else as base64.
    pub fn set_data(&mut self, data: &[u8]) {
        match std::str::from_utf8(data) {
            Ok(text) => (self.data, self.data_base64) = (Some(text.to_string()), None),
            Err(_) => {
                (self.data, self.data_base64) = (None, Some(base64::engine::general_purpose::STANDARD.encode(data)))
            }
        }
    }
}

/// Where dead letters go (`--dead-letter`).
pub enum DeadLetterSink {
    /// JSON lines appended to a file, flushed (and synced) before the
    /// checkpoint that skips the record.
    File {
        path: std::path::PathBuf,
        file: Mutex<std::fs::File>,
        /// A regular file is synced; a device or pipe (`/dev/null`) has
        /// nothing to make durable.
        durable: bool,
    },
    /// Records put to another stream, keyed by the original partition key.
    Stream { client: aws_sdk_kinesis::Client, stream: String },
}

impl std::fmt::Debug for DeadLetterSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeadLetterSink::File { path, .. } => write!(f, "file:{}", path.display()),
            DeadLetterSink::Stream { stream, .. } => write!(f, "kinesis:{stream}"),
        }
    }
}

impl DeadLetterSink {
    /// The sink for a parsed `--dead-letter` destination (never stdout:
    /// `Destination::dead_letter` refuses it).
    pub fn open(destination: &Destination, client: Option<&aws_sdk_kinesis::Client>) -> anyhow::Result<Self> {
        match destination {
            Destination::File(path) => Self::file(path),
            Destination::Kinesis(stream) => match client {
                Some(client) => Ok(DeadLetterSink::Stream { client: client.clone(), stream: stream.clone() }),
                None => {
                    anyhow::bail!("--dead-letter kinesis:{stream} needs a stream to put to; here only file:PATH works")
                }
            },
            Destination::Stdout => anyhow::bail!("--dead-letter must be `file:PATH` or `kinesis:STREAM`"),
        }
    }

    /// JSON lines appended to the file at `path`.
    pub fn file(path: &std::path::Path) -> anyhow::Result<Self> {
        // Dead letters hold whole records: the user's alone when we create it.
        let file = crate::private::open_append(path)
            .with_context(|| format!("cannot open the dead-letter file {}", path.display()))?;
        let durable = file.metadata().map(|m| m.is_file()).unwrap_or(true);
        Ok(DeadLetterSink::File { path: path.into(), file: Mutex::new(file), durable })
    }

    /// Writes the letters durably; only then may the checkpoint move past them.
    pub async fn write(&self, letters: &[DeadLetter]) -> anyhow::Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        match self {
            DeadLetterSink::File { path, file, durable } => {
                let mut lines = Vec::new();
                for letter in letters {
                    serde_json::to_writer(&mut lines, letter)?;
                    lines.push(b'\n');
                }
                let mut file = file.lock().map_err(|_| anyhow::anyhow!("dead-letter lock poisoned"))?;
                file.write_all(&lines)
                    .and_then(|_| if *durable { file.sync_data() } else { Ok(()) })
                    .with_context(|| format!("cannot write the dead-letter file {}", path.display()))
            }
            DeadLetterSink::Stream { client, stream } => {
                let records: Vec<Outgoing> = letters
                    .iter()
                    .map(|l| {
                        Ok(Outgoing {
                            partition_key: if l.partition_key.is_empty() {
                                "-".into()
                            } else {
                                l.partition_key.clone()
                            },
                            data: serde_json::to_vec(l)?,
                        })
                    })
                    .collect::<anyhow::Result<_>>()?;
                put_all(client, stream, &records)
                    .await
                    .map(|_| ())
                    .with_context(|| format!("cannot put dead letters to {stream}"))
            }
        }
    }
}
