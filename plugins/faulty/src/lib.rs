//! Test fixture: behaves like echo until a record's data names a fault.
//!
//! Data `trap` panics (a wasm trap), `loop` spins forever, `alloc` grows
//! memory without end, `emit-flood` emits without end, `log-flood` logs
//! without end, `sleep` sleeps 30 s in one host call, `sleep-loop` sleeps
//! 10 ms at a time without end, `poll` waits 30 s on a clock through
//! `wasi:io/poll.poll` (as Python's `time.sleep` does), `fail` returns a non-retryable error naming that record,
//! `retry` a retryable one, `bad-index` names a record index past the batch,
//! `probe-sandbox` reports what env, args, files and network it can reach,
//! `count` emits how many records it passed so far (its state).
//! Config `{"panic_in_init": true}` panics in `init`; `{"fail_init": true}`
//! returns an init error; `{"corrupt_snapshot": true}` writes state its
//! `restore` rejects; `{"forget_state": true}` snapshots a count of 0 (the
//! bug of a `snapshot` that leaves something out).

use kinesis_processor_sdk::{export_processor, log, Batch, LogLevel, Output, ProcessError, Processor, ShardContext};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultyConfig {
    #[serde(default)]
    panic_in_init: bool,
    #[serde(default)]
    fail_init: bool,
    #[serde(default)]
    corrupt_snapshot: bool,
    #[serde(default)]
    forget_state: bool,
}

/// Counts records it passed, so state round-trips can be checked.
pub struct Faulty {
    config: FaultyConfig,
    seen: u64,
}

impl Processor for Faulty {
    const NAME: &'static str = "faulty";
    const STATE_VERSION: u32 = 1;

    fn init(config: &str, _shard: &ShardContext) -> Result<Self, String> {
        let config: FaultyConfig = serde_json::from_str(config).map_err(|e| format!("invalid faulty config: {e}"))?;
        if config.panic_in_init {
            panic!("faulty: panic in init as configured");
        }
        if config.fail_init {
            return Err("faulty: init refused as configured".into());
        }
        Ok(Faulty { config, seen: 0 })
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), ProcessError> {
        for (index, record) in batch.iter().enumerate() {
            match record.data() {
                b"trap" => panic!("faulty: trap on record {index}"),
                b"loop" => {
                    let mut n = 0u64;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                // Waiting in the host (WASI clocks + poll), not spinning in
                // wasm: the epoch cannot interrupt it, the call deadline must.
                b"sleep" => std::thread::sleep(std::time::Duration::from_secs(30)),
                b"sleep-loop" => loop {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                },
                b"poll" => {
                    #[cfg(target_arch = "wasm32")]
                    {
                        let timer = wasip2::clocks::monotonic_clock::subscribe_duration(30_000_000_000);
                        let _ = wasip2::io::poll::poll(&[&timer]);
                    }
                }
                b"alloc" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                b"emit-flood" => loop {
                    // Straight through the host import, as a plugin streaming
                    // its output would: the host must cap it.
                    #[cfg(target_arch = "wasm32")]
                    kinesis_processor_sdk::wit::kinesis::processor::host::emit("flood", &[0u8; 4096]);
                    #[cfg(not(target_arch = "wasm32"))]
                    out.emit("flood", &[0u8; 4096]);
                },
                b"log-flood" => loop {
                    log(LogLevel::Info, "faulty: log flood");
                },
                b"probe-sandbox" => {
                    // What the sandbox lets through: the host grants no env,
                    // args, files or network, so all of these must come back empty.
                    let env = std::env::vars().count();
                    let args = std::env::args().count();
                    let file = std::fs::read("/etc/passwd").is_ok() || std::fs::read_dir(".").is_ok();
                    let net = std::net::TcpStream::connect("127.0.0.1:1").is_ok()
                        || std::net::UdpSocket::bind("127.0.0.1:0").is_ok();
                    let report = format!(r#"{{"env":{env},"args":{args},"file":{file},"net":{net}}}"#);
                    out.emit("probe", report.as_bytes());
                }
                b"fail" => return Err(ProcessError::fatal("faulty: poison record").at_record(index)),
                b"retry" => return Err(ProcessError::retryable("faulty: try again later").at_record(index)),
                b"bad-index" => return Err(ProcessError::fatal("faulty: bad index").at_record(batch.len() + 10)),
                // Strings a host must bound and keep on one line: a 1 MiB
                // error, and a log message that forges a second log line.
                b"huge-error" => {
                    let message = format!("faulty: huge\nerror{}", "x".repeat(1 << 20));
                    return Err(ProcessError::fatal(message).at_record(index));
                }
                b"forged-log" => {
                    log(LogLevel::Info, &format!("faulty: one\nERROR host: forged{}", "y".repeat(1 << 20)));
                    out.emit(record.partition_key(), b"logged");
                }
                // A KPL aggregate the host could not unpack reaches a
                // processor whole; this one takes user records only.
                [0xF3, 0x89, 0x9A, 0xC2, ..] => {
                    return Err(ProcessError::fatal("faulty: a KPL aggregate reached me whole").at_record(index));
                }
                b"count" => out.emit(record.partition_key(), self.seen.to_string().as_bytes()),
                data => out.emit(record.partition_key(), data),
            }
            self.seen += 1;
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        if self.config.corrupt_snapshot {
            // Not 8 bytes, so `restore` cannot read it as a count.
            return b"\xffbad".to_vec();
        }
        if self.config.forget_state {
            return 0u64.to_le_bytes().to_vec();
        }
        self.seen.to_le_bytes().to_vec()
    }

    fn restore(&mut self, state: &[u8], _version: u32) -> Result<(), String> {
        let bytes: [u8; 8] = state.try_into().map_err(|_| format!("faulty: corrupt state of {} bytes", state.len()))?;
        self.seen = u64::from_le_bytes(bytes);
        Ok(())
    }
}

export_processor!(Faulty);
