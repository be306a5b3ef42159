//! Choosing what to count and when a record happened, from a processor's
//! JSON config: shared by every processor that groups records by key and time.

use crate::helpers::time::{parse_leading_timestamp, parse_timestamp_millis};
use crate::Record;
use serde::Deserialize;

/// Where a record's grouping key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySelector {
    /// The Kinesis partition key (seed 000 counts by IP this way).
    PartitionKey,
    /// A top-level field of the record's JSON data (seed 001's `name`).
    JsonField(String),
}

/// Where a record's event time comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeSelector {
    /// The data itself when it is, or begins with, an ISO-8601 timestamp
    /// (seed 000's records; log lines), else arrival time.
    DataOrArrival,
    /// A top-level JSON field: an ISO-8601 string or epoch milliseconds; the
    /// arrival time when the field is absent.
    JsonField(String),
    /// Kinesis' approximate arrival time.
    Arrival,
}

/// The `key_field` / `time_field` / `event_time` part of a processor config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorConfig {
    /// JSON field of the data to group by; the partition key when absent.
    pub key_field: Option<String>,
    /// JSON field of the data holding the event time.
    pub time_field: Option<String>,
    /// `"auto"` (default: `time_field`, else the data as a timestamp, else
    /// arrival time) or `"arrival"`.
    pub event_time: Option<String>,
}

impl SelectorConfig {
    /// Validates the config into selectors; the error names the bad field.
    pub fn selectors(&self) -> Result<(KeySelector, TimeSelector), String> {
        let key = match &self.key_field {
            Some(field) if field.is_empty() => return Err("`key_field` must not be empty".into()),
            Some(field) => KeySelector::JsonField(field.clone()),
            None => KeySelector::PartitionKey,
        };
        let time = match (self.event_time.as_deref(), &self.time_field) {
            (Some("arrival"), Some(_)) => {
                return Err("`event_time: \"arrival\"` and `time_field` contradict each other; keep one".into())
            }
            (Some("arrival"), None) => TimeSelector::Arrival,
            (None | Some("auto"), Some(field)) => TimeSelector::JsonField(field.clone()),
            (None | Some("auto"), None) => TimeSelector::DataOrArrival,
            (Some(other), _) => return Err(format!("`event_time` must be \"auto\" or \"arrival\", not {other:?}")),
        };
        Ok((key, time))
    }
}

/// Why a record could not be grouped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectError {
    /// The key comes from JSON but the data is not a JSON object with that
    /// field as a string or number.
    MissingKey(String),
}

impl std::fmt::Display for SelectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SelectError::MissingKey(field) => {
                write!(f, "record data is not a JSON object with a string or number field `{field}`")
            }
        }
    }
}

/// Extracts (key, event time in millis) from records; parses each record's
/// JSON at most once.
#[derive(Debug, Clone)]
pub struct Selector {
    key: KeySelector,
    time: TimeSelector,
}

impl Selector {
    /// A selector from validated parts.
    pub fn new(key: KeySelector, time: TimeSelector) -> Self {
        Selector { key, time }
    }

    /// Whether the record's data must be parsed as JSON.
    fn needs_json(&self) -> bool {
        matches!(self.key, KeySelector::JsonField(_)) || matches!(self.time, TimeSelector::JsonField(_))
    }

    /// Calls `f` with the record's key (as bytes: a partition key is passed
    /// straight from the batch, unvalidated) and event time.
    pub fn with_key_and_time<R>(&self, record: &Record<'_>, f: impl FnOnce(&[u8], i64) -> R) -> Result<R, SelectError> {
        let arrival = record.approximate_arrival_millis();
        if !self.needs_json() {
            let time = match self.time {
                TimeSelector::DataOrArrival => parse_leading_timestamp(record.data()).unwrap_or(arrival),
                _ => arrival,
            };
            return Ok(f(record.partition_key_bytes(), time));
        }
        let json: Option<serde_json::Map<String, serde_json::Value>> = serde_json::from_slice(record.data()).ok();
        let field = |name: &str| json.as_ref().and_then(|map| map.get(name));
        let time = match &self.time {
            TimeSelector::JsonField(name) => match field(name) {
                Some(serde_json::Value::String(s)) => parse_timestamp_millis(s.as_bytes()).unwrap_or(arrival),
                Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(arrival),
                _ => arrival,
            },
            TimeSelector::DataOrArrival => parse_leading_timestamp(record.data()).unwrap_or(arrival),
            TimeSelector::Arrival => arrival,
        };
        match &self.key {
            KeySelector::PartitionKey => Ok(f(record.partition_key_bytes(), time)),
            KeySelector::JsonField(name) => match field(name) {
                Some(serde_json::Value::String(s)) => Ok(f(s.as_bytes(), time)),
                Some(serde_json::Value::Number(n)) => Ok(f(n.to_string().as_bytes(), time)),
                _ => Err(SelectError::MissingKey(name.clone())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BatchBuilder;

    fn config(json: &str) -> Result<Selector, String> {
        let cfg: SelectorConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let (k, t) = cfg.selectors()?;
        Ok(Selector::new(k, t))
    }

    #[test]
    fn default_counts_partition_key_at_data_time() {
        let mut b = BatchBuilder::new();
        b.push("8.8.8.8", b"2018-07-29T22:35:46.694763", 5);
        b.push("8.8.8.9", b"not a time", 7);
        let sel = config("{}").expect("valid");
        let got: Vec<(String, i64)> = b
            .batch()
            .iter()
            .map(|r| sel.with_key_and_time(&r, |k, t| (String::from_utf8_lossy(k).into_owned(), t)).expect("selects"))
            .collect();
        assert_eq!(got, vec![("8.8.8.8".into(), 1_532_903_746_694), ("8.8.8.9".into(), 7)]);
    }

    #[test]
    fn json_fields_select_key_and_time() {
        let mut b = BatchBuilder::new();
        b.push("a01", br#"{"number": 1, "name": "ruan", "age": 30, "ts": "2019-06-22T19:20:27Z"}"#, 5);
        b.push("a01", br#"{"number": 2, "name": 7}"#, 9);
        b.push("a01", b"[1,2]", 9);
        let sel = config(r#"{"key_field": "name", "time_field": "ts"}"#).expect("valid");
        let batch = b.batch();
        let pick = |i: usize| {
            let r = batch.get(i).expect("record");
            sel.with_key_and_time(&r, |k, t| (String::from_utf8_lossy(k).into_owned(), t))
        };
        assert_eq!(pick(0), Ok(("ruan".into(), 1_561_231_227_000)));
        assert_eq!(pick(1), Ok(("7".into(), 9)));
        assert_eq!(pick(2), Err(SelectError::MissingKey("name".into())));
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        assert!(config(r#"{"key_feild": "x"}"#).unwrap_err().contains("key_feild"));
        assert!(config(r#"{"event_time": "soon"}"#).unwrap_err().contains("event_time"));
        assert!(config(r#"{"event_time": "arrival", "time_field": "ts"}"#).unwrap_err().contains("contradict"));
    }
}
