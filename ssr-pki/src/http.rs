//! Feature `http`: fetching CRLs with the workspace's one HTTP client (`ssr-http`:
//! ureq 3 over rustls with the ring provider).
//!
//! CRL distribution points are `http://` URLs by convention (RFC 5280 §4.2.1.13). A
//! CRL is signed by its CA, and the manager verifies that signature and refuses an
//! older CRL than the one it holds, so the transport needs no TLS. [`fetch`] uses a
//! client without TLS trust, so it refuses `https://` URLs with a clear error;
//! [`fetch_with`] / [`drive_with`] take a caller's [`Client`] (built with
//! [`crl_client`] or [`ssr_http::Client::new`]) whose configured CA bundle (and
//! optional pins) authenticate `https://` distribution points.
//!
//! One `GET`, up to three redirects, only `200` accepted, `Content-Length`, chunked
//! or close-delimited bodies, a short body is an error, the body size is capped and
//! the whole exchange is bounded by one deadline.

use std::time::{Duration, Instant};

pub use ssr_http::{Client, ClientConfig, Pin};

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

/// Redirects a CRL fetch follows.
pub const MAX_REDIRECTS: u32 = 3;

/// A client for CRL fetching: `ca_bundle_pem` (PEM certificates) is what
/// `https://` distribution points must chain to; `None` refuses `https://`.
pub fn crl_client(ca_bundle_pem: Option<Vec<u8>>, pins: Vec<Pin>) -> Result<Client, Error> {
    Client::new(&ClientConfig {
        ca_bundle_pem,
        pins,
        max_redirects: MAX_REDIRECTS,
        max_idle_per_host: 0,
        user_agent: "ssr-pki".into(),
        ..ClientConfig::default()
    })
    .map_err(|e| Error::Fetch {
        url: String::new(),
        reason: e.to_string(),
    })
}

/// GETs `url` (`http://` only: no TLS trust is configured here) and returns the body.
pub fn fetch(url: &str, options: &FetchOptions) -> Result<Vec<u8>, Error> {
    let client = crl_client(None, Vec::new())?;
    fetch_with(&client, url, options)
}

/// GETs `url` (`http://`, or `https://` when `client` has a CA bundle) and returns
/// the body.
pub fn fetch_with(client: &Client, url: &str, options: &FetchOptions) -> Result<Vec<u8>, Error> {
    let fail = |reason: String| Error::Fetch {
        url: url.to_string(),
        reason,
    };
    let describe = |e: ssr_http::Error| match e {
        ssr_http::Error::TooLarge { limit, .. } => format!("body larger than {limit} bytes"),
        ssr_http::Error::Protocol { reason, .. } if reason.starts_with("body ended") => {
            format!("truncated body: {reason}")
        }
        ssr_http::Error::Connect { reason, .. } => format!("connect: {reason}"),
        other => other.to_string(),
    };
    let started = Instant::now();
    let response = client
        .get(url, None, Some(options.timeout))
        .map_err(|e| fail(describe(e)))?;
    match response.status() {
        200 => {}
        s @ 300..=399 => return Err(fail(format!("HTTP status {s} (redirect not followed)"))),
        s => return Err(fail(format!("HTTP status {s}"))),
    }
    let declared = response.content_length();
    let body = response
        .read_limited(options.max_body as u64)
        .map_err(|e| match e {
            ssr_http::Error::Connect { reason, .. } | ssr_http::Error::Protocol { reason, .. } => {
                fail(format!("truncated body: {reason}"))
            }
            other => fail(describe(other)),
        })?;
    if declared.is_some_and(|n| n != body.len() as u64) {
        return Err(fail(format!(
            "truncated body: {} of {} bytes",
            body.len(),
            declared.unwrap_or_default()
        )));
    }
    if started.elapsed() > options.timeout {
        return Err(fail("timed out".into()));
    }
    Ok(body)
}

/// Does the fetches the manager asks for, one after the other, feeding each answer
/// back at the time `clock` reads when it arrives. Returns every other output
/// (publish, alarms, audit events) in order, for the caller to act on. `http://`
/// only; see [`drive_with`].
pub fn drive(
    manager: &mut CrlManager,
    options: &FetchOptions,
    clock: impl FnMut() -> Instant,
) -> Vec<Output> {
    match crl_client(None, Vec::new()) {
        Ok(client) => drive_with(manager, &client, options, clock),
        Err(_) => Vec::new(),
    }
}

/// [`drive`] with the caller's client (its CA bundle authenticates `https://` points).
pub fn drive_with(
    manager: &mut CrlManager,
    client: &Client,
    options: &FetchOptions,
    mut clock: impl FnMut() -> Instant,
) -> Vec<Output> {
    let mut rest = Vec::new();
    manager.handle_timeout(clock());
    while let Some(output) = manager.poll_output() {
        match output {
            Output::Fetch { url } => match fetch_with(client, &url, options) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_without_a_ca_bundle_is_refused_clearly() {
        let e = fetch("https://127.0.0.1:1/c.crl", &FetchOptions::default()).unwrap_err();
        assert!(e.to_string().contains("CA bundle"), "{e}");
        let e = fetch("ftp://h/c", &FetchOptions::default()).unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
    }
}
