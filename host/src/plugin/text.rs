//! Strings from a plugin (error messages, log lines, its name) as the host
//! shows them: bounded, and on one line. A plugin must not flood the host's
//! log, nor forge a line of it with an embedded newline or escape sequence.

/// The longest error message or log line kept, in bytes.
pub const MAX_MESSAGE: usize = 4096;
/// The longest plugin name kept, in bytes.
pub const MAX_NAME: usize = 128;

/// `text` cut to `max` bytes (at a character boundary, saying how much was
/// left out) with control characters escaped (`\n`, `\u{1b}`, …).
pub fn from_plugin(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 32);
    for (at, c) in text.char_indices() {
        let before = out.len();
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > max {
            out.truncate(before);
            out.push_str(&format!("… ({} more bytes)", text.len() - at));
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_text_is_bounded_and_on_one_line() {
        assert_eq!(from_plugin("plain é", 100), "plain é");
        assert_eq!(from_plugin("one\nERROR host: forged\r\x1b[31m", 100), "one\\nERROR host: forged\\r\\u{1b}[31m");
        let long = from_plugin(&"é".repeat(10_000), 101);
        assert!(long.starts_with("éé") && long.ends_with("… (19900 more bytes)"), "{long}");
        assert!(long.len() <= 101 + 24, "{}", long.len());
        assert!(!from_plugin(&"\n".repeat(10_000), 50).contains('\n'));
    }
}
