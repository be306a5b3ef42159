//! Echo: emits `partition-key : data` per record, like seed 000's EchoWorker.
//! Data is shown as UTF-8, or as base64 (prefixed `base64:`) when it is not.

use base64::Engine as _;
use kinesis_processor_sdk::{export_processor, Batch, Output, ProcessError, Processor, ShardContext};
use serde::Deserialize;

/// Echo's config: nothing to set, but typos are still reported.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoConfig {
    /// Text between key and data; ` : ` as in the seed.
    separator: Option<String>,
}

/// Stateless: every record becomes one output line.
pub struct Echo {
    separator: String,
}

impl Processor for Echo {
    const NAME: &'static str = "echo";

    fn init(config: &str, _shard: &ShardContext) -> Result<Self, String> {
        let config: EchoConfig = serde_json::from_str(config).map_err(|e| format!("invalid echo config: {e}"))?;
        Ok(Echo { separator: config.separator.unwrap_or_else(|| " : ".into()) })
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), ProcessError> {
        for record in batch.iter() {
            let key = record.partition_key();
            out.emit_with(key, |buf| {
                buf.extend_from_slice(key.as_bytes());
                buf.extend_from_slice(self.separator.as_bytes());
                match std::str::from_utf8(record.data()) {
                    Ok(text) => buf.extend_from_slice(text.as_bytes()),
                    Err(_) => {
                        buf.extend_from_slice(b"base64:");
                        let mut encoded = String::new();
                        base64::engine::general_purpose::STANDARD.encode_string(record.data(), &mut encoded);
                        buf.extend_from_slice(encoded.as_bytes());
                    }
                }
            });
        }
        Ok(())
    }
}

export_processor!(Echo);

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_processor_sdk::BatchBuilder;

    #[test]
    fn echoes_like_the_seed() {
        let mut echo = Echo::init("{}", &ShardContext::default()).expect("init");
        let mut batch = BatchBuilder::new();
        batch.push("8.8.8.8", b"2018-07-29T22:35:46.694763", 0).push("8.8.8.9", &[0xff, 0xfe], 0);
        let mut out = Output::new();
        echo.process(&batch.batch(), &mut out).expect("process");
        let lines: Vec<_> = out.iter().map(|(k, d)| (k.to_string(), String::from_utf8_lossy(d).into_owned())).collect();
        assert_eq!(
            lines,
            vec![
                ("8.8.8.8".to_string(), "8.8.8.8 : 2018-07-29T22:35:46.694763".to_string()),
                ("8.8.8.9".to_string(), "8.8.8.9 : base64://4=".to_string()),
            ]
        );
    }

    #[test]
    fn rejects_unknown_settings() {
        let err = Echo::init(r#"{"seperator": "-"}"#, &ShardContext::default()).err().unwrap_or_default();
        assert!(err.contains("seperator"), "{err}");
    }
}
