//! What only a program on this machine sends: no `Origin` header (every
//! browser adds one to a cross-origin request, and to any POST) and a
//! loopback `Host` (a DNS-rebinding page sends its own name). For the
//! endpoints that listen on loopback and act on what they are sent: the
//! control endpoint and `host local`. A leaf module.

use axum::http::{header, HeaderMap};

/// Refuses, with why, a request a web page could have sent.
pub fn from_local_program(headers: &HeaderMap) -> Result<(), String> {
    if headers.contains_key(header::ORIGIN) {
        return Err("a request with an Origin header comes from a web page, and is refused here".into());
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !is_loopback_host(host) {
        return Err(format!(
            "Host `{}` is not a loopback name (localhost, 127.0.0.1, [::1]); only requests to those are answered here",
            host.chars().take(256).collect::<String>().escape_debug()
        ));
    }
    Ok(())
}

/// Requests refused so far, and which of them to log: the first ten, then
/// one in a thousand, so a page that keeps trying cannot flood the log.
#[derive(Debug, Default)]
pub struct Refusals(std::sync::atomic::AtomicU64);

impl Refusals {
    pub const fn new() -> Self {
        Refusals(std::sync::atomic::AtomicU64::new(0))
    }

    /// Counts one refusal; the count so far when this one is to be logged.
    pub fn count(&self) -> Option<u64> {
        let count = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        (count <= 10 || count.is_multiple_of(1000)).then_some(count)
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map(|(ip, _)| ip).unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_host_names_pass() {
        for host in ["localhost", "localhost:7070", "LOCALHOST", "127.0.0.1:7070", "127.1.2.3", "[::1]:7070", "[::1]"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in
            ["", "evil.example", "evil.example:7070", "10.0.0.1:7070", "[::2]:1", "localhost.evil.example", "[::1"]
        {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn a_page_is_told_apart_from_a_program() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().expect("header"));
            }
            map
        };
        assert!(from_local_program(&headers(&[("host", "127.0.0.1:4567")])).is_ok());
        assert!(from_local_program(&headers(&[("host", "localhost"), ("origin", "null")])).is_err());
        assert!(from_local_program(&headers(&[("host", "rebound.evil.example:4567")])).is_err());
        assert!(from_local_program(&headers(&[])).is_err(), "no Host");
        let refusals = Refusals::new();
        let logged: Vec<u64> = (0..3000).filter_map(|_| refusals.count()).collect();
        assert_eq!(logged, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1000, 2000, 3000]);
    }
}
