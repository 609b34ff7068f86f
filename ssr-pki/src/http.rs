//! Feature `http`: fetching CRLs over plain HTTP/1.1 with `std::net`.
//!
//! CRL distribution points are `http://` URLs by convention (RFC 5280 §4.2.1.13; a
//! TLS-protected CDP would need revocation checking to fetch revocation data). A CRL
//! is signed by its CA, and the manager verifies that signature and refuses an older
//! CRL than the one it holds, so the transport needs no TLS. `https://` URLs are
//! refused with a clear error rather than fetched without checks.
//!
//! The client sends one `GET` with `Connection: close`, follows up to three redirects
//! to other `http://` URLs, accepts only `200`, decodes `Content-Length`, chunked or
//! close-delimited bodies, treats a short body as an error, caps the body size and
//! bounds the whole exchange by one deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::Error;
use crate::crl_manager::{CrlManager, Output};

/// Limits of one fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// Deadline for the whole exchange (connect, redirects, body).
    pub timeout: Duration,
    /// Largest body accepted, in bytes.
    pub max_body: usize,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_body: 64 << 20,
        }
    }
}

const MAX_HEAD: usize = 64 << 10;
const MAX_REDIRECTS: usize = 3;

/// GETs `url` (`http://` only) and returns the body.
pub fn fetch(url: &str, options: &FetchOptions) -> Result<Vec<u8>, Error> {
    let deadline = Instant::now() + options.timeout;
    let mut current = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        match get_once(&current, options, deadline).map_err(|reason| Error::Fetch {
            url: current.clone(),
            reason,
        })? {
            Answer::Body(body) => return Ok(body),
            Answer::Redirect(location) => current = location,
        }
    }
    Err(Error::Fetch {
        url: url.to_string(),
        reason: format!("more than {MAX_REDIRECTS} redirects"),
    })
}

/// Does the fetches the manager asks for, one after the other, feeding each answer
/// back at the time `clock` reads when it arrives. Returns every other output
/// (publish, alarms, audit events) in order, for the caller to act on.
pub fn drive(
    manager: &mut CrlManager,
    options: &FetchOptions,
    mut clock: impl FnMut() -> Instant,
) -> Vec<Output> {
    let mut rest = Vec::new();
    manager.handle_timeout(clock());
    while let Some(output) = manager.poll_output() {
        match output {
            Output::Fetch { url } => match fetch(&url, options) {
                Ok(body) => {
                    manager.handle_fetched(&url, &body, clock());
                }
                Err(e) => {
                    let reason = match &e {
                        Error::Fetch { reason, .. } => reason.clone(),
                        other => other.to_string(),
                    };
                    manager.handle_fetch_failed(&url, &reason, clock());
                }
            },
            other => rest.push(other),
        }
    }
    rest
}

enum Answer {
    Body(Vec<u8>),
    Redirect(String),
}

#[derive(Debug)]
struct Target {
    host_port: String,
    host_header: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    if url.starts_with("https://") {
        return Err("https:// CRL URLs are not supported (CRLs are signed; use http://)".into());
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if authority.is_empty() || authority.contains('@') {
        return Err("URL has no host (or carries credentials)".into());
    }
    if path.bytes().any(|b| !(0x21..=0x7e).contains(&b)) || path.contains('#') {
        return Err("URL path must be printable ASCII without spaces or fragments".into());
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let host_port = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(Target {
        host_port,
        host_header: authority.to_string(),
        path,
    })
}

fn remaining(deadline: Instant) -> Result<Duration, String> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "timed out".to_string())
}

fn get_once(url: &str, options: &FetchOptions, deadline: Instant) -> Result<Answer, String> {
    let target = parse_url(url)?;
    let addrs = target
        .host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.host_port))?;
    let mut last = format!("{} resolves to no address", target.host_port);
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, remaining(deadline)?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connect {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ssr-pki\r\nAccept: application/pkix-crl, application/x-pem-file, */*\r\nConnection: close\r\n\r\n",
        target.path, target.host_header
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending request: {e}"))?;
    let mut reader = BufReader::new(Deadlined { stream, deadline });

    let status_line = read_line(&mut reader)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| format!("malformed status line {:?}", truncate(&status_line)))?;
    let mut headers = Vec::new();
    let mut head_len = status_line.len();
    loop {
        let line = read_line(&mut reader)?;
        if line.is_empty() {
            break;
        }
        head_len += line.len();
        if head_len > MAX_HEAD {
            return Err("response head too large".into());
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("malformed header {:?}", truncate(&line)))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    match status {
        200 => {}
        301 | 302 | 303 | 307 | 308 => {
            let location = header("location").ok_or("redirect without Location")?;
            if !location.starts_with("http://") {
                return Err(format!(
                    "redirect to unsupported location {:?}",
                    truncate(location)
                ));
            }
            return Ok(Answer::Redirect(location.to_string()));
        }
        other => return Err(format!("HTTP status {other}")),
    }
    let too_big = || format!("body larger than {} bytes", options.max_body);
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let size_line = read_line(&mut reader)?;
            let size_hex = size_line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| format!("malformed chunk size {:?}", truncate(&size_line)))?;
            if size == 0 {
                break;
            }
            if body.len().saturating_add(size) > options.max_body {
                return Err(too_big());
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader
                .read_exact(&mut body[start..])
                .map_err(|e| format!("truncated chunked body: {e}"))?;
            if !read_line(&mut reader)?.is_empty() {
                return Err("chunk not followed by CRLF".into());
            }
        }
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("malformed Content-Length {:?}", truncate(len)))?;
        if len > options.max_body {
            return Err(too_big());
        }
        body.resize(len, 0);
        let mut got = 0;
        while got < len {
            match reader.read(&mut body[got..]) {
                Ok(0) => return Err(format!("truncated body: {got} of {len} bytes")),
                Ok(n) => got += n,
                Err(e) => return Err(format!("reading body after {got} of {len} bytes: {e}")),
            }
        }
    } else {
        reader
            .take(options.max_body as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("reading body: {e}"))?;
        if body.len() > options.max_body {
            return Err(too_big());
        }
    }
    Ok(Answer::Body(body))
}

fn read_line(reader: &mut impl BufRead) -> Result<String, String> {
    let mut line = Vec::new();
    reader
        .take(MAX_HEAD as u64)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("reading response: {e}"))?;
    if line.last() != Some(&b'\n') {
        return Err("connection closed in the middle of the response head".into());
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| "response head is not UTF-8".into())
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A stream whose reads give up at the deadline.
struct Deadlined {
    stream: TcpStream,
    deadline: Instant,
}

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = remaining(self.deadline)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::TimedOut, e))?;
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("http://crl.example:8080/a/b.crl?x=1").unwrap();
        assert_eq!(t.host_port, "crl.example:8080");
        assert_eq!(t.path, "/a/b.crl?x=1");
        let t = parse_url("http://[::1]/c").unwrap();
        assert_eq!(t.host_port, "[::1]:80");
        assert_eq!(t.host_header, "[::1]");
        assert_eq!(parse_url("http://h").unwrap().path, "/");
        assert!(parse_url("https://h/c").unwrap_err().contains("https"));
        assert!(parse_url("ftp://h/c").is_err());
        assert!(parse_url("http:///c").is_err());
        assert!(parse_url("http://u:p@h/c").is_err());
        assert!(parse_url("http://h/a b").is_err());
    }
}
