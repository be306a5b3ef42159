//! Where plugin output goes. Plain text prints each record's data as a line
//! (UTF-8, else `base64:`…); JSON lines carry key and data.

use crate::plugin::PluginOutput;
use base64::Engine as _;
use std::io::Write;

/// How output records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// One line per record: its data.
    #[default]
    Plain,
    /// One JSON object per record: `{"key":…,"data":…}` (`data_base64` when not UTF-8).
    Json,
}

/// Where a call's output came from. JSON lines carry it, so one can tell
/// which logic (by content hash) produced which output, from which records.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub shard_id: &'a str,
    /// Content hash of the plugin that emitted the output.
    pub plugin_sha256: &'a str,
    /// First and last sequence number of the batch; `None` for timer and
    /// shutdown output.
    pub batch: Option<(&'a str, &'a str)>,
}

/// Writes output records to any `Write` (stdout, a file).
pub struct WriterSink<W: Write> {
    out: W,
    format: OutputFormat,
    /// Records written so far.
    written: u64,
}

impl<W: Write> WriterSink<W> {
    /// A sink over `out`.
    pub fn new(out: W, format: OutputFormat) -> Self {
        WriterSink { out, format, written: 0 }
    }

    /// Writes every record of one call's output.
    pub fn write(&mut self, output: &PluginOutput) -> std::io::Result<()> {
        self.write_from(output, None)
    }

    /// Writes one call's output; JSON lines also get `origin` as the fields
    /// `shard`, `plugin` (`sha256:` and the hash's first 12 digits) and
    /// `sequence_numbers` (first and last of the batch).
    pub fn write_from(&mut self, output: &PluginOutput, origin: Option<&Origin>) -> std::io::Result<()> {
        for (key, data) in output.iter() {
            match self.format {
                OutputFormat::Plain => match std::str::from_utf8(data) {
                    Ok(text) => writeln!(self.out, "{text}")?,
                    Err(_) => writeln!(self.out, "base64:{}", base64::engine::general_purpose::STANDARD.encode(data))?,
                },
                OutputFormat::Json => {
                    let mut line = match std::str::from_utf8(data) {
                        Ok(text) => serde_json::json!({ "key": key, "data": text }),
                        Err(_) => serde_json::json!({
                            "key": key,
                            "data_base64": base64::engine::general_purpose::STANDARD.encode(data),
                        }),
                    };
                    if let (Some(origin), Some(fields)) = (origin, line.as_object_mut()) {
                        fields.insert("shard".into(), origin.shard_id.into());
                        let short = &origin.plugin_sha256[..origin.plugin_sha256.len().min(12)];
                        fields.insert("plugin".into(), format!("sha256:{short}").into());
                        if let Some((first, last)) = origin.batch {
                            fields.insert("sequence_numbers".into(), serde_json::json!([first, last]));
                        }
                    }
                    writeln!(self.out, "{line}")?;
                }
            }
        }
        self.written += output.len() as u64;
        Ok(())
    }

    /// Flushes buffered lines.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Where output or dead letters go, parsed once from `--sink` or
/// `--dead-letter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Lines on stdout (`stdout`; not for dead letters).
    Stdout,
    /// Lines appended to a file (`file:PATH`).
    File(std::path::PathBuf),
    /// Records put to a stream (`kinesis:STREAM`).
    Kinesis(String),
}

impl Destination {
    fn parse(spec: &str) -> Option<Self> {
        match spec.split_once(':') {
            None if spec == "stdout" => Some(Destination::Stdout),
            Some(("file", path)) if !path.is_empty() => Some(Destination::File(path.into())),
            Some(("kinesis", stream)) if !stream.is_empty() => Some(Destination::Kinesis(stream.into())),
            _ => None,
        }
    }

    /// Parses `--sink`: `stdout`, `file:PATH` or `kinesis:STREAM`.
    pub fn sink(spec: &str) -> anyhow::Result<Self> {
        Self::parse(spec)
            .ok_or_else(|| anyhow::anyhow!("--sink {spec:?} must be `stdout`, `file:PATH` or `kinesis:STREAM`"))
    }

    /// Parses `--dead-letter`: `file:PATH` or `kinesis:STREAM` (a dead
    /// letter must be kept, so not stdout).
    pub fn dead_letter(spec: &str) -> anyhow::Result<Self> {
        match Self::parse(spec) {
            Some(Destination::Stdout) | None => {
                anyhow::bail!("--dead-letter {spec:?} must be `file:PATH` or `kinesis:STREAM`")
            }
            Some(destination) => Ok(destination),
        }
    }
}

/// Where `host run` sends plugin output. Output of a batch is written (and
/// flushed) before the batch's checkpoint is committed: at-least-once.
pub enum Sink {
    /// Lines on stdout or in a file.
    Writer(std::sync::Mutex<WriterSink<Box<dyn Write + Send>>>),
    /// Records put to another Kinesis stream, keyed by the output key.
    Stream { client: aws_sdk_kinesis::Client, stream: String },
}

impl Sink {
    /// Lines on stdout.
    pub fn stdout(format: OutputFormat) -> Self {
        Sink::Writer(std::sync::Mutex::new(WriterSink::new(Box::new(std::io::stdout()), format)))
    }

    /// Lines appended to a file.
    pub fn file(path: &std::path::Path, format: OutputFormat) -> anyhow::Result<Self> {
        use anyhow::Context;
        // Output holds record payloads: the user's alone when we create it.
        let file = crate::private::open_append(path)
            .with_context(|| format!("cannot open the output file {}", path.display()))?;
        let out: Box<dyn Write + Send> = Box::new(std::io::BufWriter::new(file));
        Ok(Sink::Writer(std::sync::Mutex::new(WriterSink::new(out, format))))
    }

    /// The sink for a parsed `--sink` destination.
    pub fn open(
        destination: &Destination,
        format: OutputFormat,
        client: &aws_sdk_kinesis::Client,
    ) -> anyhow::Result<Self> {
        match destination {
            Destination::Stdout => Ok(Sink::stdout(format)),
            Destination::File(path) => Sink::file(path, format),
            Destination::Kinesis(stream) => Ok(Sink::Stream { client: client.clone(), stream: stream.clone() }),
        }
    }

    /// Writes one call's output durably (flushed, or accepted by Kinesis).
    /// A Kinesis record has no room for `origin`; lines and JSON do.
    pub async fn write(&self, output: &PluginOutput, origin: &Origin<'_>) -> anyhow::Result<()> {
        if output.is_empty() {
            return Ok(());
        }
        match self {
            Sink::Writer(writer) => {
                let mut writer = writer.lock().map_err(|_| anyhow::anyhow!("output lock poisoned"))?;
                writer.write_from(output, Some(origin))?;
                writer.flush()?;
                Ok(())
            }
            Sink::Stream { client, stream } => {
                let records: Vec<crate::kinesis::producer::Outgoing> = output
                    .iter()
                    .map(|(key, data)| crate::kinesis::producer::Outgoing {
                        // Kinesis needs a 1–256 character key.
                        partition_key: if key.is_empty() { "-".into() } else { key.chars().take(256).collect() },
                        data: data.to_vec(),
                    })
                    .collect();
                crate::kinesis::producer::put_all(client, stream, &records).await.map(|_| ())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_once_with_one_line_errors() {
        assert_eq!(Destination::sink("stdout").expect("ok"), Destination::Stdout);
        assert_eq!(Destination::sink("file:/tmp/x").expect("ok"), Destination::File("/tmp/x".into()));
        assert_eq!(Destination::dead_letter("kinesis:dl").expect("ok"), Destination::Kinesis("dl".into()));
        let e = Destination::sink("s3://b").expect_err("refused").to_string();
        assert_eq!(e, "--sink \"s3://b\" must be `stdout`, `file:PATH` or `kinesis:STREAM`");
        let e = Destination::dead_letter("stdout").expect_err("refused").to_string();
        assert_eq!(e, "--dead-letter \"stdout\" must be `file:PATH` or `kinesis:STREAM`");
        assert!(Destination::dead_letter("file:").is_err());
    }

    #[test]
    fn formats_plain_and_json() {
        let mut output = PluginOutput::default();
        output.push("a", b"hello");
        output.push("b", &[0xff]);
        let mut plain = WriterSink::new(Vec::new(), OutputFormat::Plain);
        plain.write(&output).expect("write");
        assert_eq!(String::from_utf8_lossy(&plain.into_inner()), "hello\nbase64:/w==\n");
        let mut json = WriterSink::new(Vec::new(), OutputFormat::Json);
        json.write(&output).expect("write");
        assert_eq!(
            String::from_utf8_lossy(&json.into_inner()),
            "{\"data\":\"hello\",\"key\":\"a\"}\n{\"data_base64\":\"/w==\",\"key\":\"b\"}\n"
        );
        let mut json = WriterSink::new(Vec::new(), OutputFormat::Json);
        let origin = Origin { shard_id: "shardId-1", plugin_sha256: "0123456789abcdef", batch: Some(("10", "12")) };
        json.write_from(&output, Some(&origin)).expect("write");
        let first = String::from_utf8_lossy(&json.into_inner()).lines().next().unwrap_or_default().to_string();
        assert_eq!(
            first,
            "{\"data\":\"hello\",\"key\":\"a\",\"plugin\":\"sha256:0123456789ab\",\"sequence_numbers\":[\"10\",\"12\"],\"shard\":\"shardId-1\"}"
        );
    }
}
