//! Optional building blocks for processors, outside the core API: the
//! shipped counters are built from them, and authors may be too.
//!
//! - [`time`]: ISO-8601 timestamps and fixed windows;
//! - [`select`]: the key and event time of a record, picked by config;
//! - [`count`]: per-key, per-window counts with snapshot and restore, and
//!   their share after a split and sum after a merge;
//! - [`state`]: map-like state across splits and merges.

pub mod count;
pub mod select;
pub mod state;
pub mod time;
