//! `host test`'s input: JSON lines, each a record or a reshard at that
//! point of the stream (`{"reshard": "split"}`, `{"reshard": "merge"}`), so
//! authors replay a split or merge offline and see their state carried.

use crate::batch::InputRecord;
use anyhow::{bail, Context};
use base64::Engine as _;
use serde::Deserialize;
use std::io::{BufRead, Read};

/// A replay file read: its records, and where the stream was resharded.
#[derive(Debug, Default)]
pub struct ReplayInput {
    pub records: Vec<InputRecord>,
    /// Each reshard, after how many records (in file order) it happens.
    pub reshards: Vec<(usize, Reshard)>,
    /// Where each record came from (`FILE:LINE`, beside `records`): error
    /// lines name the author's input, not a batch index.
    pub lines: Vec<String>,
}

/// A reshard line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reshard {
    /// Split `shard` (the only open one when `None`) at hash key `at` (the
    /// middle of its range when `None`): the new child's starting hash key.
    Split { shard: Option<String>, at: Option<u128> },
    /// Merge two adjacent open shards (the only two when `None`).
    Merge { shards: Option<[String; 2]> },
}

/// `{"reshard": "split" | "merge", …}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReshardLine {
    reshard: String,
    /// The shard to split.
    shard: Option<String>,
    /// The new starting hash key of a split (decimal).
    at: Option<String>,
    /// The two shards to merge.
    shards: Option<Vec<String>>,
}

impl ReshardLine {
    fn into_reshard(self) -> Result<Reshard, String> {
        match self.reshard.as_str() {
            "split" if self.shards.is_none() => {
                let at =
                    match self.at {
                        Some(at) => Some(at.parse::<u128>().map_err(|_| {
                            format!("`at` must be a hash key: a decimal integer below 2^128, not {at:?}")
                        })?),
                        None => None,
                    };
                Ok(Reshard::Split { shard: self.shard, at })
            }
            "merge" if self.shard.is_none() && self.at.is_none() => match self.shards {
                None => Ok(Reshard::Merge { shards: None }),
                Some(shards) => match <[String; 2]>::try_from(shards) {
                    Ok(pair) => Ok(Reshard::Merge { shards: Some(pair) }),
                    Err(_) => Err("`shards` of a merge must name exactly two shards".into()),
                },
            },
            "split" => Err("a split takes `shard` and `at`, not `shards`".into()),
            "merge" => Err("a merge takes `shards`, not `shard` or `at`".into()),
            other => Err(format!("`reshard` must be \"split\" or \"merge\", not {other:?}")),
        }
    }
}

/// One line of a replay file (the Kinesis record fields, camelCase).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ReplayLine {
    partition_key: String,
    /// Text, or any JSON value (written out compactly as the data).
    data: Option<Box<serde_json::value::RawValue>>,
    data_base64: Option<String>,
    #[serde(alias = "arrival")]
    approximate_arrival_timestamp: Option<TimeValue>,
    sequence_number: Option<String>,
    sub_sequence_number: Option<u64>,
}

/// JSON text without the whitespace between its tokens (strings untouched).
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if !c.is_whitespace() {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// A time as epoch milliseconds or ISO-8601 text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TimeValue {
    Millis(i64),
    Text(String),
}

/// The longest input line read: a record's data is at most 10 MiB (what
/// Kinesis takes at most), more as base64 or escaped JSON; a longer line
/// is refused, never buffered.
const MAX_LINE: usize = 32 << 20;

/// What an input line holds.
#[derive(Debug)]
pub enum Item {
    Record(InputRecord),
    Reshard(Reshard),
}

/// How input lines are records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// One record object (or a reshard) per line.
    Json,
    /// Each line is one record's data, as it is, keyed as the key says.
    Lines(LineKey),
}

/// Reads input one line at a time (`host test`, `host produce --file`):
/// lines without an arrival time take the previous record's (the first
/// takes the start time); sequence numbers are generated in order when
/// absent. Errors name the line; the first one ends the input.
pub struct InputReader<R> {
    reader: R,
    source: String,
    format: Format,
    arrival: i64,
    /// Lines read so far.
    line: usize,
    /// Records read so far.
    records: usize,
    buf: Vec<u8>,
    failed: bool,
}

impl<R: BufRead> InputReader<R> {
    /// Reads `reader` (named `source` in errors) as `format`, from `start_millis`.
    pub fn new(reader: R, source: &str, start_millis: i64, format: Format) -> Self {
        InputReader {
            reader,
            source: source.into(),
            format,
            arrival: start_millis,
            line: 0,
            records: 0,
            buf: Vec::new(),
            failed: false,
        }
    }

    /// Where the last item read came from (`FILE:LINE`), for messages.
    pub fn at(&self) -> String {
        format!("{}:{}", self.source, self.line)
    }

    /// The next line that holds something.
    fn next_line(&mut self) -> anyhow::Result<bool> {
        loop {
            self.buf.clear();
            // One more than a line may hold, and its line end.
            let read = (&mut self.reader).take(MAX_LINE as u64 + 2).read_until(b'\n', &mut self.buf);
            self.line += 1;
            if read.with_context(|| self.at())? == 0 {
                return Ok(false);
            }
            while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
                self.buf.pop();
            }
            if self.buf.len() > MAX_LINE {
                bail!("{}: the line is longer than {} MiB; a record holds at most 10 MiB", self.at(), MAX_LINE >> 20);
            }
            if !self.buf.iter().all(u8::is_ascii_whitespace) {
                return Ok(true);
            }
        }
    }

    fn record(&mut self, partition_key: String, data: Vec<u8>, sequence: Option<String>, sub: u64) -> Item {
        self.records += 1;
        Item::Record(InputRecord {
            partition_key,
            data,
            sequence_number: sequence.unwrap_or_else(|| format!("49{:054}", self.records)),
            sub_sequence_number: sub,
            arrival_millis: self.arrival,
        })
    }

    fn parse(&mut self) -> anyhow::Result<Item> {
        let key = match &self.format {
            Format::Json => return self.parse_json(),
            Format::Lines(key) => key.clone(),
        };
        let partition_key = match key {
            LineKey::Fixed(key) => key,
            LineKey::Field(name) => {
                let value: serde_json::Value = serde_json::from_slice(&self.buf).with_context(|| {
                    format!("{}: not a JSON object, so it has no field `{name}` to key by", self.at())
                })?;
                match value.get(&name) {
                    Some(serde_json::Value::String(text)) if !text.is_empty() => text.clone(),
                    Some(number @ serde_json::Value::Number(_)) => number.to_string(),
                    _ => bail!("{}: no text or number in field `{name}` to key the record by", self.at()),
                }
            }
        };
        let data = self.buf.clone();
        Ok(self.record(partition_key, data, None, 0))
    }

    fn parse_json(&mut self) -> anyhow::Result<Item> {
        let at = self.at();
        let line =
            std::str::from_utf8(&self.buf).map_err(|_| anyhow::anyhow!("{at}: not UTF-8 text (JSON lines are)"))?;
        // Only a line that mentions it can be a reshard; a record whose data
        // does falls through to the record parser.
        if line.contains("\"reshard\"") {
            if let Ok(reshard) = serde_json::from_str::<ReshardLine>(line) {
                return Ok(Item::Reshard(reshard.into_reshard().map_err(|e| anyhow::anyhow!("{at}: {e}"))?));
            }
        }
        let parsed: ReplayLine = serde_json::from_str(line).with_context(|| {
            format!("{at}: not a record (expected {{\"partitionKey\": …, \"data\": …}}) or a reshard ({{\"reshard\": \"split\"}})")
        })?;
        let data = match (parsed.data, parsed.data_base64) {
            (Some(raw), None) if raw.get().starts_with('"') => serde_json::from_str::<String>(raw.get())
                .with_context(|| format!("{at}: `data` is not a valid JSON string"))?
                .into_bytes(),
            // Any other JSON, as written (key order kept), compact.
            (Some(raw), None) => compact(raw.get()).into_bytes(),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .with_context(|| format!("{at}: `dataBase64` is not valid base64"))?,
            (None, None) => bail!("{at}: a record needs `data` or `dataBase64`"),
            (Some(_), Some(_)) => bail!("{at}: give `data` or `dataBase64`, not both"),
        };
        if let Some(time) = parsed.approximate_arrival_timestamp {
            self.arrival = match time {
                TimeValue::Millis(ms) => ms,
                TimeValue::Text(text) => kinesis_processor_sdk::helpers::time::parse_timestamp_millis(text.as_bytes())
                    .with_context(|| format!("{at}: arrival time {text:?} is not ISO-8601"))?,
            };
        }
        Ok(self.record(parsed.partition_key, data, parsed.sequence_number, parsed.sub_sequence_number.unwrap_or(0)))
    }
}

impl<R: BufRead> Iterator for InputReader<R> {
    type Item = anyhow::Result<Item>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = match self.next_line() {
            Ok(false) => return None,
            Ok(true) => self.parse(),
            Err(e) => Err(e),
        };
        self.failed = item.is_err();
        Some(item)
    }
}

/// Reads JSON-lines records and reshards (see [`InputReader`]).
pub fn read_input(reader: impl BufRead, source: &str, start_millis: i64) -> anyhow::Result<ReplayInput> {
    collect(InputReader::new(reader, source, start_millis, Format::Json))
}

/// Where a raw line's partition key comes from (`--input-format lines`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKey {
    /// The same key for every line.
    Fixed(String),
    /// A field of the line, read as a JSON object (a string or a number).
    Field(String),
}

impl LineKey {
    /// `field:NAME` takes field NAME of each line; anything else is the key
    /// itself (1 to 256 bytes, as Kinesis takes).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        match text.strip_prefix("field:") {
            Some("") => bail!("--partition-key field:NAME needs a field name"),
            Some(name) => Ok(LineKey::Field(name.to_string())),
            None if text.is_empty() || text.len() > 256 => bail!("--partition-key must have 1 to 256 bytes"),
            None => Ok(LineKey::Fixed(text.to_string())),
        }
    }
}

/// Reads raw lines, each one record's data (as it is, without its line
/// end), all arriving at `start_millis`. Errors name the line.
pub fn read_lines(reader: impl BufRead, source: &str, start_millis: i64, key: &LineKey) -> anyhow::Result<ReplayInput> {
    collect(InputReader::new(reader, source, start_millis, Format::Lines(key.clone())))
}

fn collect<R: BufRead>(mut items: InputReader<R>) -> anyhow::Result<ReplayInput> {
    let mut input = ReplayInput::default();
    while let Some(item) = items.next() {
        match item? {
            Item::Record(record) => {
                input.records.push(record);
                input.lines.push(items.at());
            }
            Item::Reshard(reshard) => input.reshards.push((input.records.len(), reshard)),
        }
    }
    Ok(input)
}

/// Reads records only (a reshard line is an error): for callers that
/// replay one shard.
pub fn read_records(reader: impl BufRead, source: &str, start_millis: i64) -> anyhow::Result<Vec<InputRecord>> {
    let input = read_input(reader, source, start_millis)?;
    if !input.reshards.is_empty() {
        bail!("{source}: reshard lines need a multi-shard replay (`host test`)");
    }
    Ok(input.records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_text_json_and_base64_records() {
        let input = r#"{"partitionKey": "8.8.8.8", "data": "2018-07-29T22:35:46.694763", "approximateArrivalTimestamp": "2018-07-29T22:35:47Z"}
{"partitionKey": "a01", "data": {"name": "ruan"}}

{"partitionKey": "b", "dataBase64": "/w==", "arrival": 7, "sequenceNumber": "42"}
"#;
        let records = read_records(input.as_bytes(), "in.jsonl", 0).expect("valid");
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].arrival_millis, 1_532_903_747_000);
        assert_eq!(records[1].data, br#"{"name":"ruan"}"#);
        assert_eq!(records[1].arrival_millis, 1_532_903_747_000, "inherits the previous arrival");
        assert_eq!(records[2].data, vec![0xff]);
        assert_eq!(records[2].sequence_number, "42");
        assert!(records[0].sequence_number < records[1].sequence_number);
    }

    #[test]
    fn json_data_keeps_its_key_order_and_raw_lines_are_records() {
        let input = r#"{"partitionKey": "k", "data": {"b": 1, "a": [2, "x y"], "c": "\" }"}}"#;
        let records = read_records(input.as_bytes(), "in.jsonl", 0).expect("valid");
        assert_eq!(records[0].data, br#"{"b":1,"a":[2,"x y"],"c":"\" }"}"#);
        let lines = "GET /a 500\r\n\nGET /b 200\n";
        let got = read_lines(lines.as_bytes(), "log", 7, &LineKey::parse("web").expect("a key")).expect("valid");
        let data: Vec<&[u8]> = got.records.iter().map(|r| r.data.as_slice()).collect();
        assert_eq!(data, [b"GET /a 500".as_slice(), b"GET /b 200"]);
        assert!(got.records.iter().all(|r| r.partition_key == "web" && r.arrival_millis == 7));
        let keyed = "{\"ip\": \"1.2.3.4\"}\n{\"ip\": 7}\n";
        let got = read_lines(keyed.as_bytes(), "log", 0, &LineKey::parse("field:ip").expect("a field")).expect("valid");
        assert_eq!(got.records[1].partition_key, "7");
        let err = read_lines("{}\nnot json".as_bytes(), "log", 0, &LineKey::parse("field:ip").expect("a field"))
            .expect_err("no key");
        assert!(format!("{err:#}").contains("log:1: no text or number in field `ip`"), "{err:#}");
    }

    #[test]
    fn reads_reshards_between_records() {
        let input = r#"{"partitionKey": "a", "data": "x"}
{"reshard": "split"}
{"partitionKey": "b", "data": "{\"reshard\": 1}"}
{"reshard": "split", "shard": "shardId-000000000001", "at": "12"}
{"reshard": "merge", "shards": ["shardId-000000000003", "shardId-000000000004"]}
"#;
        let got = read_input(input.as_bytes(), "in.jsonl", 0).expect("valid");
        assert_eq!(got.records.len(), 2, "a record mentioning `reshard` in its data is a record");
        assert_eq!(
            got.reshards,
            vec![
                (1, Reshard::Split { shard: None, at: None }),
                (2, Reshard::Split { shard: Some("shardId-000000000001".into()), at: Some(12) }),
                (
                    2,
                    Reshard::Merge {
                        shards: Some(["shardId-000000000003".to_string(), "shardId-000000000004".to_string()])
                    }
                ),
            ]
        );
    }

    #[test]
    fn bad_lines_are_named() {
        for (input, needle) in [
            ("{\"data\": \"x\"}", "in.jsonl:1: not a record"),
            ("{\"partitionKey\": \"k\"}", "in.jsonl:1: a record needs `data`"),
            ("\n{\"partitionKey\": \"k\", \"dataBase64\": \"%%\"}", "in.jsonl:2: `dataBase64` is not valid base64"),
            ("{\"partitionKey\": \"k\", \"data\": \"x\", \"arrival\": \"soon\"}", "is not ISO-8601"),
            ("{\"reshard\": \"splat\"}", "in.jsonl:1: `reshard` must be \"split\" or \"merge\""),
            ("{\"reshard\": \"split\", \"at\": \"-1\"}", "`at` must be a hash key"),
            ("{\"reshard\": \"merge\", \"shards\": [\"a\"]}", "exactly two shards"),
        ] {
            let err = read_input(input.as_bytes(), "in.jsonl", 0).expect_err(input);
            assert!(format!("{err:#}").contains(needle), "{input}: {err:#}");
        }
    }
}
