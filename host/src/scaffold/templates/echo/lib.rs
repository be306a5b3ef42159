//! {{name}}: emits `partition-key : data` for every record (start from here).

use kinesis_processor_sdk::{export_processor, Batch, Output, ProcessError, Processor, ShardContext};

/// One per shard; add your state here (and snapshot/restore it).
pub struct App {
    separator: String,
}

impl Processor for App {
    const NAME: &'static str = "{{name}}";

    fn init(config: &str, _shard: &ShardContext) -> Result<Self, String> {
        let config: serde_json::Value = serde_json::from_str(config).map_err(|e| format!("invalid config: {e}"))?;
        let separator = config.get("separator").and_then(|s| s.as_str()).unwrap_or(" : ").to_string();
        Ok(App { separator })
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), ProcessError> {
        for record in batch.iter() {
            let line = format!("{}{}{}", record.partition_key(), self.separator, String::from_utf8_lossy(record.data()));
            out.emit(record.partition_key(), line.as_bytes());
        }
        Ok(())
    }
}

export_processor!(App);

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_processor_sdk::BatchBuilder;

    #[test]
    fn echoes_each_record() {
        let mut app = App::init("{}", &ShardContext::default()).expect("init");
        let mut batch = BatchBuilder::new();
        batch.push("8.8.8.8", b"hello", 0);
        let mut out = Output::new();
        app.process(&batch.batch(), &mut out).expect("process");
        let lines: Vec<Vec<u8>> = out.iter().map(|(_, data)| data.to_vec()).collect();
        assert_eq!(lines, vec![b"8.8.8.8 : hello".to_vec()]);
    }
}
