//! {{name}}: keeps the records whose JSON field `field` holds one of the
//! `keep` values, and emits them unchanged (start from here).
//!
//! Config (JSON, all optional): `{"field": "level", "keep": ["ERROR"]}`.
//! A record that is not a JSON object is refused with a `ProcessError`
//! naming it: bad data, set aside by the host's failure policy.

use kinesis_processor_sdk::{export_processor, Batch, Output, ProcessError, Processor, ShardContext};
use serde::Deserialize;
use serde_json::Value;

/// The settings, parsed once: a typo is an error at `init`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_field")]
    field: String,
    #[serde(default = "default_keep")]
    keep: Vec<Value>,
}

fn default_field() -> String {
    "level".into()
}

fn default_keep() -> Vec<Value> {
    vec![Value::from("ERROR")]
}

/// One per shard; stateless, so nothing to snapshot.
pub struct App {
    config: Config,
}

impl Processor for App {
    const NAME: &'static str = "{{name}}";

    fn init(config: &str, _shard: &ShardContext) -> Result<Self, String> {
        let config: Config = serde_json::from_str(config).map_err(|e| format!("invalid config: {e}"))?;
        if config.field.is_empty() {
            return Err("invalid config: `field` must not be empty".into());
        }
        Ok(App { config })
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), ProcessError> {
        for (index, record) in batch.iter().enumerate() {
            let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(record.data()) else {
                // The records before it are done; this one is bad data.
                return Err(ProcessError::fatal("the data is not a JSON object").at_record(index));
            };
            if fields.get(&self.config.field).is_some_and(|value| self.config.keep.contains(value)) {
                out.emit(record.partition_key(), record.data());
            }
        }
        Ok(())
    }
}

export_processor!(App);

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_processor_sdk::BatchBuilder;

    fn run(config: &str, records: &[&str]) -> (Vec<String>, Result<(), ProcessError>) {
        let mut app = App::init(config, &ShardContext::default()).expect("init");
        let mut batch = BatchBuilder::new();
        for data in records {
            batch.push("web-1", data.as_bytes(), 0);
        }
        let mut out = Output::new();
        let result = app.process(&batch.batch(), &mut out);
        (out.iter().map(|(_, data)| String::from_utf8_lossy(data).into_owned()).collect(), result)
    }

    #[test]
    fn keeps_the_records_whose_field_matches() {
        let records = [r#"{"level":"INFO"}"#, r#"{"level":"ERROR","msg":"x"}"#, r#"{"msg":"no level"}"#];
        let (kept, result) = run("{}", &records);
        assert!(result.is_ok());
        assert_eq!(kept, vec![r#"{"level":"ERROR","msg":"x"}"#]);
        let (kept, _) = run(r#"{"field": "status", "keep": [500, 503]}"#, &[r#"{"status":503}"#, r#"{"status":200}"#]);
        assert_eq!(kept, vec![r#"{"status":503}"#]);
    }

    #[test]
    fn refuses_a_record_that_is_not_json_naming_it() {
        let (kept, result) = run("{}", &[r#"{"level":"ERROR"}"#, "not json"]);
        assert_eq!(kept.len(), 1, "the record before it is done");
        let error = result.expect_err("refused");
        assert_eq!(error.record_index, Some(1), "{error}");
    }

    #[test]
    fn a_typo_in_the_config_is_an_error() {
        assert!(App::init(r#"{"feild": "level"}"#, &ShardContext::default()).is_err());
    }
}
