//! A plugin's stdout and stderr: each line goes to the host's log at debug
//! level, attributed to the plugin and shard (at most a few hundred lines a
//! second, so a chatty plugin cannot flood the log), and stderr's last few
//! KiB are kept for the error line of a crash: the panic message, the Python
//! exception or the JavaScript error, not the runtime's generic trap text.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// How much of a plugin's stderr is kept for error messages.
const TAIL_BYTES: usize = 4096;
/// Lines forwarded to the log per second and stream; the rest are counted.
const LINES_PER_SECOND: u32 = 200;
/// A line longer than this is cut (a plugin writing without newlines).
const MAX_LINE: usize = 1024;

/// One of a plugin's output streams. Never fails a write: Rust's `eprintln!`
/// panics when stderr errors, so a stream that errors would turn a chatty
/// plugin into a crashing one.
#[derive(Debug, Clone)]
pub struct PluginStdio {
    /// `stdout` or `stderr`, for the log line.
    stream: &'static str,
    /// `plugin@shard`.
    label: Arc<str>,
    inner: Arc<Mutex<Lines>>,
}

/// What the stream has seen.
#[derive(Debug)]
struct Lines {
    /// The last bytes written, for [`PluginStdio::take_summary`].
    tail: Vec<u8>,
    /// The line being written (no newline yet).
    partial: Vec<u8>,
    /// Start of the current one-second forwarding window.
    window: Instant,
    /// Lines forwarded / dropped in it.
    forwarded: u32,
    dropped: u32,
}

impl PluginStdio {
    pub fn new(stream: &'static str, label: Arc<str>) -> Self {
        let lines = Lines { tail: Vec::new(), partial: Vec::new(), window: Instant::now(), forwarded: 0, dropped: 0 };
        PluginStdio { stream, label, inner: Arc::new(Mutex::new(lines)) }
    }

    fn push(&self, bytes: &[u8]) {
        let Ok(mut lines) = self.inner.lock() else { return };
        lines.tail.extend_from_slice(bytes);
        if lines.tail.len() > TAIL_BYTES * 2 {
            let cut = lines.tail.len() - TAIL_BYTES;
            lines.tail.drain(..cut);
        }
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            if lines.partial.len() < MAX_LINE {
                let room = MAX_LINE - lines.partial.len();
                lines.partial.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            if chunk.ends_with(b"\n") || lines.partial.len() >= MAX_LINE {
                let line = std::mem::take(&mut lines.partial);
                self.forward(&mut lines, &line);
            }
        }
    }

    fn forward(&self, lines: &mut Lines, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        if lines.window.elapsed() >= Duration::from_secs(1) {
            if lines.dropped > 0 {
                tracing::debug!(target: "plugin", plugin = &*self.label, stream = self.stream, "{} more lines not shown", lines.dropped);
            }
            (lines.window, lines.forwarded, lines.dropped) = (Instant::now(), 0, 0);
        }
        if lines.forwarded >= LINES_PER_SECOND {
            lines.dropped += 1;
            return;
        }
        lines.forwarded += 1;
        tracing::debug!(target: "plugin", plugin = &*self.label, stream = self.stream, "{text}");
    }

    /// What the last error written says, for a crash's error line (clears
    /// the tail): a Python traceback's exception and where it was raised, a
    /// Rust panic's message and place, else the last line.
    pub fn take_summary(&self) -> Option<String> {
        let mut lines = self.inner.lock().ok()?;
        let text = String::from_utf8_lossy(&lines.tail).into_owned();
        lines.tail.clear();
        summarize(&text)
    }
}

/// See [`PluginStdio::take_summary`].
fn summarize(text: &str) -> Option<String> {
    let lines: Vec<&str> =
        text.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("note: run with")).collect();
    // Python: "Traceback (most recent call last):", indented frames, then
    // the exception line; the last traceback is the one that escaped.
    if let Some(start) = lines.iter().rposition(|l| l.starts_with("Traceback (most recent call last):")) {
        let rest = &lines[start + 1..];
        if let Some(exception) = rest.iter().find(|l| !l.starts_with([' ', '\t'])) {
            let frames: Vec<(bool, String)> =
                rest.iter().take_while(|l| l.starts_with([' ', '\t'])).filter_map(|l| python_frame(l)).collect();
            // The author's innermost frame: not the SDK's, not Python's own.
            let authors = frames.iter().rev().find(|(theirs, _)| *theirs).or(frames.last());
            let frame = authors.map(|(_, place)| place.clone());
            return Some(match frame {
                Some(place) => format!("{} ({place})", exception.trim()),
                None => exception.trim().to_string(),
            });
        }
    }
    // JavaScript (the SDK, like SpiderMonkey itself): "Uncaught TypeError: …";
    // the engine's abort lines follow it.
    if let Some(uncaught) = lines.iter().rev().find_map(|l| l.trim().strip_prefix("Uncaught ")) {
        return Some(uncaught.to_string());
    }
    let trimmed: Vec<&str> = lines.iter().map(|l| l.trim()).collect();
    match trimmed.as_slice() {
        [] => None,
        // A Rust panic prints "panicked at file:line:col:" then the message.
        [.., at, msg] if at.contains("panicked at ") => {
            let place = at.rsplit("panicked at ").next().unwrap_or_default().trim_end_matches(':');
            Some(format!("{msg} (panicked at {place})"))
        }
        [.., last] => Some(last.to_string()),
    }
}

/// `  File "/app/app.py", line 25, in process` as `app.py:25 in process`,
/// and whether the file is the author's (not the SDK's, not Python's own).
fn python_frame(line: &str) -> Option<(bool, String)> {
    let rest = line.trim().strip_prefix("File \"")?;
    let (path, rest) = rest.split_once('"')?;
    let file = path.rsplit('/').next().unwrap_or(path);
    let rest = rest.strip_prefix(", line ")?;
    let (number, function) = rest.split_once(", in ").unwrap_or((rest, ""));
    let authors = !(path.contains("kinesis_processor/") || path.contains("/lib/python") || path.starts_with('<'));
    Some((
        authors,
        if function.is_empty() { format!("{file}:{number}") } else { format!("{file}:{number} in {function}") },
    ))
}

impl IsTerminal for PluginStdio {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginStdio {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for PluginStdio {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for PluginStdio {
    async fn ready(&mut self) {}
}

impl OutputStream for PluginStdio {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_traceback_gives_the_exception_and_where() {
        let text = "faulty starts\nTraceback (most recent call last):\n  File \"/build/app.py\", line 25, in process\n    lookup[k] += 1\n    ~~~~~~^^^\nKeyError: 'a'\nthread '<unnamed>' panicked at runtime/src/lib.rs:1293:29:\nPython function threw an unexpected exception\n";
        assert_eq!(summarize(text).as_deref(), Some("KeyError: 'a' (app.py:25 in process)"));
    }

    #[test]
    fn a_python_error_inside_the_sdk_names_the_authors_line_that_called_it() {
        let text = "Traceback (most recent call last):\n  File \"/app/kinesis_processor/_glue.py\", line 81, in call\n    method(*args, out)\n  File \"/app/app.py\", line 14, in process\n    out.emit(7, b\"x\")\n  File \"/app/kinesis_processor/_records.py\", line 97, in emit\n    raise TypeError(...)\nTypeError: emit(key, data): the key must be a str, not int (7)\n";
        assert_eq!(
            summarize(text).as_deref(),
            Some("TypeError: emit(key, data): the key must be a str, not int (7) (app.py:14 in process)")
        );
        let stdlib = "Traceback (most recent call last):\n  File \"/app/app.py\", line 3, in process\n  File \"/usr/lib/python3.11/json/__init__.py\", line 346, in loads\njson.decoder.JSONDecodeError: Expecting value\n";
        assert_eq!(
            summarize(stdlib).as_deref(),
            Some("json.decoder.JSONDecodeError: Expecting value (app.py:3 in process)")
        );
    }

    #[test]
    fn an_uncaught_javascript_error_wins_over_the_engine_abort_after_it() {
        let text = "Uncaught TypeError: x is undefined (process@echo.js:12:9)\nexpected a string, received [undefined]\nStack:\n  _utf8AllocateAndEncode@initializer.js:65:11\nRedirecting call to abort() to mozalloc_abort\n";
        assert_eq!(summarize(text).as_deref(), Some("TypeError: x is undefined (process@echo.js:12:9)"));
    }

    #[test]
    fn a_rust_panic_gives_its_message_and_place() {
        let text = "thread '<unnamed>' panicked at src/lib.rs:9:5:\nboom\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(summarize(text).as_deref(), Some("boom (panicked at src/lib.rs:9:5)"));
        assert_eq!(summarize("one\ntwo\n").as_deref(), Some("two"));
        assert_eq!(summarize("\n"), None);
    }

    #[test]
    fn lines_are_forwarded_whole_and_bounded() {
        let out = PluginStdio::new("stdout", Arc::from("p@s"));
        out.push(b"par");
        out.push(b"tial\nnext");
        let lines = out.inner.lock().expect("lock");
        assert_eq!(lines.forwarded, 1, "one whole line so far");
        assert_eq!(lines.partial, b"next");
        drop(lines);
        for _ in 0..(LINES_PER_SECOND + 5) {
            out.push(b"x\n");
        }
        let lines = out.inner.lock().expect("lock");
        assert_eq!(lines.forwarded, LINES_PER_SECOND);
        assert!(lines.dropped >= 5);
    }
}
