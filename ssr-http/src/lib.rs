#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::io::{self, Read, Write};
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConnection, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme, StreamOwned};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, TcpConnector,
    Transport, TransportAdapter,
};

/// Everything that can go wrong, each with the URL (or setting) concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A client setting that is not usable (CA bundle, pin).
    #[error("HTTP client configuration: {what}: {reason}")]
    Config {
        /// The setting.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A URL that is not `http://` or `https://` with a host.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS handshake failed: the server certificate is not trusted by the
    /// configured CA bundle, matches none of the pins, or names another host.
    #[error("TLS with {url}: {reason}")]
    Tls {
        /// The URL.
        url: String,
        /// Why (from rustls).
        reason: String,
    },
    /// Name resolution or the TCP connection failed, or the connection broke.
    #[error("connecting to {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// The OS or protocol error.
        reason: String,
    },
    /// A connect, read or the whole exchange took longer than allowed.
    #[error("{url}: timed out ({reason})")]
    TimedOut {
        /// The URL.
        url: String,
        /// Which deadline.
        reason: String,
    },
    /// The server's answer is not acceptable HTTP/1.1 (or too many redirects).
    #[error("{url}: {reason}")]
    Protocol {
        /// The URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// A body longer than the caller's limit.
    #[error("{url}: body larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },
}

/// A pin of the server certificate: the SHA-256 of its `SubjectPublicKeyInfo` (DER)
/// or of the whole certificate (DER). Written `sha256-spki:<64 hex>` or
/// `sha256-cert:<64 hex>`.
///
/// ```
/// let pin: ssr_http::Pin = "sha256-spki:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
///     .parse()?;
/// assert_eq!(pin.to_string().len(), 12 + 64);
/// # Ok::<(), ssr_http::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// SHA-256 of the DER `SubjectPublicKeyInfo` (survives re-issuing with the same key).
    Spki([u8; 32]),
    /// SHA-256 of the DER certificate.
    Cert([u8; 32]),
}

impl Pin {
    /// The pin of `cert_der` of this kind (`spki` true: its public key).
    pub fn of_cert(cert_der: &[u8], spki: bool) -> Result<Pin, Error> {
        if spki {
            Ok(Pin::Spki(spki_sha256(cert_der).ok_or_else(|| {
                Error::Config {
                    what: "pin",
                    reason: "not a parsable X.509 certificate".into(),
                }
            })?))
        } else {
            Ok(Pin::Cert(Sha256::digest(cert_der).into()))
        }
    }

    fn matches(&self, cert_der: &[u8]) -> bool {
        match self {
            Pin::Cert(h) => Sha256::digest(cert_der).as_slice() == h,
            Pin::Spki(h) => spki_sha256(cert_der).is_some_and(|d| &d == h),
        }
    }
}

fn spki_sha256(cert_der: &[u8]) -> Option<[u8; 32]> {
    let der = CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der).ok()?;
    Some(Sha256::digest(cert.subject_public_key_info().as_ref()).into())
}

impl FromStr for Pin {
    type Err = Error;

    fn from_str(s: &str) -> Result<Pin, Error> {
        let bad = || Error::Config {
            what: "pin",
            reason: format!(
                "{:?}: expected sha256-spki:<64 hex> or sha256-cert:<64 hex>",
                s.chars().take(100).collect::<String>()
            ),
        };
        let (kind, hex_part) = s.split_once(':').ok_or_else(bad)?;
        let mut h = [0u8; 32];
        if hex_part.len() != 64 {
            return Err(bad());
        }
        hex::decode_to_slice(hex_part.to_ascii_lowercase(), &mut h).map_err(|_| bad())?;
        match kind {
            "sha256-spki" => Ok(Pin::Spki(h)),
            "sha256-cert" => Ok(Pin::Cert(h)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pin::Spki(h) => write!(f, "sha256-spki:{}", hex::encode(h)),
            Pin::Cert(h) => write!(f, "sha256-cert:{}", hex::encode(h)),
        }
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How a [`Client`] connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// PEM bundle of the CA certificates trusted for `https://` URLs. `None`: every
    /// `https://` URL is refused (there is no built-in or system trust).
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// When not empty, the server's end-entity certificate must also match one pin
    /// (after the chain was validated against `ca_bundle_pem`).
    pub pins: Vec<Pin>,
    /// Redirects followed (0: a 3xx is returned to the caller as it is).
    pub max_redirects: u32,
    /// Deadline of the TCP connect (and of the TLS handshake).
    pub connect_timeout: Duration,
    /// Per-read progress deadline: a read (or write) that moves no byte for this long
    /// fails with [`Error::TimedOut`], even in the middle of a body.
    pub read_timeout: Duration,
    /// Idle keep-alive connections kept per host.
    pub max_idle_per_host: usize,
    /// The `User-Agent` sent.
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            ca_bundle_pem: None,
            pins: Vec::new(),
            max_redirects: 0,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            max_idle_per_host: 16,
            user_agent: "ssr".into(),
        }
    }
}

/// Parses a PEM bundle of certificates (at least one; other PEM blocks are refused).
pub fn parse_ca_bundle(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bad = |reason: String| Error::Config {
        what: "ca-bundle",
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM bundle of certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// The one HTTP client: an agent with keep-alive connections, TLS by rustls (ring
/// provider) against the configured CA bundle and pins. Cheap to clone (shared pool).
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    https: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("https", &self.https)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with these settings.
    pub fn new(config: &ClientConfig) -> Result<Client, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = match &config.ca_bundle_pem {
            None if !config.pins.is_empty() => {
                return Err(Error::Config {
                    what: "pins",
                    reason: "pins need a ca-bundle (the chain is validated, then pinned)".into(),
                });
            }
            None => None,
            Some(pem) => Some(Arc::new(tls_config(pem, &config.pins, provider)?)),
        };
        let https = tls.is_some();
        let ureq_config = ureq::config::Config::builder()
            .http_status_as_error(false)
            .max_redirects(config.max_redirects)
            .max_redirects_will_error(true)
            .timeout_connect(Some(config.connect_timeout))
            .timeout_per_read(Some(config.read_timeout))
            .timeout_per_write(Some(config.read_timeout))
            .max_idle_connections_per_host(config.max_idle_per_host)
            .max_idle_connections(config.max_idle_per_host.saturating_mul(8))
            .input_buffer_size(256 << 10)
            .user_agent(config.user_agent.as_str())
            .build();
        let connector = ().chain(TcpConnector::default()).chain(TlsConnector { tls });
        Ok(Client {
            agent: ureq::Agent::with_parts(ureq_config, connector, DefaultResolver::default()),
            https,
        })
    }

    /// `GET url`, with `Range: bytes=a-b` when `range` is given; `timeout` bounds the
    /// whole exchange (answer and body) on top of the per-read deadline. Any status is
    /// returned (the caller decides); transport failures are errors.
    pub fn get(
        &self,
        url: &str,
        range: Option<RangeInclusive<u64>>,
        timeout: Option<Duration>,
    ) -> Result<Response, Error> {
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok {
            return Err(Error::Url {
                url: url.into(),
                reason: "only http:// and https:// are supported".into(),
            });
        }
        if url.starts_with("https://") && !self.https {
            return Err(Error::Tls {
                url: url.into(),
                reason: "https:// needs a CA bundle in the configuration (none is configured)"
                    .into(),
            });
        }
        let mut req = self.agent.get(url);
        if let Some(r) = range {
            req = req.header("Range", format!("bytes={}-{}", r.start(), r.end()));
        }
        if let Some(t) = timeout {
            req = req.config().timeout_global(Some(t)).build();
        }
        let res = req.call().map_err(|e| map_ureq(url, e))?;
        let status = res.status().as_u16();
        let header = |n: &str| {
            res.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_length = match header("content-length") {
            Some(v) => Some(v.trim().parse::<u64>().map_err(|_| Error::Protocol {
                url: url.into(),
                reason: "malformed Content-Length".into(),
            })?),
            None => None,
        };
        let content_range = header("content-range");
        let chunked = header("transfer-encoding").is_some();
        let location = header("location");
        Ok(Response {
            url: url.to_string(),
            status,
            content_length,
            content_range,
            chunked,
            location,
            body: res.into_body().into_reader(),
        })
    }
}

/// An answer whose head has been read; the body is read through [`Read`] (errors
/// carry the kind `TimedOut`, `UnexpectedEof`, ...) or [`Response::read_limited`].
pub struct Response {
    url: String,
    status: u16,
    content_length: Option<u64>,
    content_range: Option<String>,
    chunked: bool,
    location: Option<String>,
    body: ureq::BodyReader<'static>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("url", &self.url)
            .field("status", &self.status)
            .field("content_length", &self.content_length)
            .field("content_range", &self.content_range)
            .finish_non_exhaustive()
    }
}

impl Response {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// `Content-Length`, if sent.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// `Content-Range`, if sent.
    pub fn content_range(&self) -> Option<&str> {
        self.content_range.as_deref()
    }

    /// Whether the body came with a `Transfer-Encoding`.
    pub fn chunked(&self) -> bool {
        self.chunked
    }

    /// `Location`, if sent (a 3xx when redirects are not followed).
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// Reads the whole body, refusing more than `limit` bytes and a body shorter than
    /// its `Content-Length`.
    pub fn read_limited(mut self, limit: u64) -> Result<Vec<u8>, Error> {
        if self.content_length.is_some_and(|n| n > limit) {
            return Err(Error::TooLarge {
                url: self.url,
                limit,
            });
        }
        let mut body = Vec::new();
        (&mut self)
            .take(limit.saturating_add(1))
            .read_to_end(&mut body)
            .map_err(|e| io_error(&self.url, &e))?;
        if body.len() as u64 > limit {
            return Err(Error::TooLarge {
                url: self.url,
                limit,
            });
        }
        Ok(body)
    }
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.body.read(buf).map_err(timeouts_as_kind)
    }
}

/// ureq reports its deadlines as `ErrorKind::Other`; give them the kind `TimedOut`.
fn timeouts_as_kind(e: io::Error) -> io::Error {
    let timeout = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<ureq::Error>())
        .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)));
    if timeout {
        io::Error::new(io::ErrorKind::TimedOut, e.to_string())
    } else {
        e
    }
}

/// Maps a body-read error to this crate's error for `url`.
pub fn io_error(url: &str, e: &io::Error) -> Error {
    let url = url.to_string();
    let reason = e.to_string();
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::TimedOut { url, reason },
        io::ErrorKind::UnexpectedEof => Error::Protocol {
            url,
            reason: format!("body ended early: {reason}"),
        },
        _ if e.get_ref().is_some_and(|i| i.is::<TlsFailure>()) => Error::Tls { url, reason },
        _ => Error::Connect { url, reason },
    }
}

fn map_ureq(url: &str, e: ureq::Error) -> Error {
    let u = url.to_string();
    match e {
        ureq::Error::Io(io) => io_error(url, &timeouts_as_kind(io)),
        ureq::Error::Timeout(t) => Error::TimedOut {
            url: u,
            reason: t.to_string(),
        },
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => Error::Connect {
            url: u,
            reason: e.to_string(),
        },
        ureq::Error::BadUri(reason) => Error::Url { url: u, reason },
        ureq::Error::BodyExceedsLimit(limit) => Error::TooLarge { url: u, limit },
        other => Error::Protocol {
            url: u,
            reason: other.to_string(),
        },
    }
}

fn tls_config(
    pem: &[u8],
    pins: &[Pin],
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ClientConfig, Error> {
    let bad = |reason: String| Error::Config {
        what: "ca-bundle",
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in parse_ca_bundle(pem)? {
        roots
            .add(cert)
            .map_err(|e| bad(format!("unusable CA certificate: {e}")))?;
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let verifier = PinningVerifier {
        inner,
        pins: pins.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// rustls' WebPKI verifier (chain to the configured roots, name, validity), then the
/// pins, if any, on the end-entity certificate.
#[derive(Debug)]
struct PinningVerifier {
    inner: Arc<WebPkiServerVerifier>,
    pins: Vec<Pin>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if self.pins.is_empty() || self.pins.iter().any(|p| p.matches(end_entity)) {
            Ok(verified)
        } else {
            Err(rustls::Error::General(
                "server certificate matches none of the configured pins".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A TLS failure, kept recognisable through ureq's `io::Error` plumbing.
#[derive(Debug)]
struct TlsFailure(String);

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailure {}

fn tls_failure(reason: String) -> ureq::Error {
    ureq::Error::Io(io::Error::other(TlsFailure(reason)))
}

/// Wraps the TCP transport in rustls for `https://` URLs (our config, our verifier).
struct TlsConnector {
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

impl<In: Transport> Connector<In> for TlsConnector {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails<'_>,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let Some(config) = self.tls.clone() else {
            return Err(tls_failure(
                "https:// needs a CA bundle in the configuration (none is configured)".into(),
            ));
        };
        let host = details
            .uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| tls_failure(format!("server name {host:?}: {e}")))?;
        let mut conn = ClientConnection::new(config, name)
            .map_err(|e| tls_failure(format!("TLS setup: {e}")))?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                return Err(match e.kind() {
                    io::ErrorKind::TimedOut => ureq::Error::Io(e),
                    _ => tls_failure(format!("handshake: {e}")),
                });
            }
        }
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TlsTransport {
            buffers,
            stream: StreamOwned { conn, sock },
        })))
    }
}

/// A rustls stream as a ureq transport.
struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport").finish_non_exhaustive()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_strictly() {
        let h = "ab".repeat(32);
        assert_eq!(
            format!("sha256-spki:{h}").parse::<Pin>().unwrap(),
            Pin::Spki([0xab; 32])
        );
        assert_eq!(
            format!("sha256-cert:{}", h.to_uppercase())
                .parse::<Pin>()
                .unwrap(),
            Pin::Cert([0xab; 32])
        );
        for bad in [
            "",
            "sha256-spki:",
            "sha256-spki:abab",
            "sha1-spki:abab",
            &format!("sha256-key:{h}"),
            &format!("sha256-spki:{h}00"),
            &format!("sha256-spki:{}zz", &h[..62]),
        ] {
            assert!(bad.parse::<Pin>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bundles_parse_strictly() {
        assert!(parse_ca_bundle(b"").is_err());
        assert!(parse_ca_bundle(b"not pem").is_err());
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = Client::new(&ClientConfig {
            ca_bundle_pem: Some(garbage.to_vec()),
            ..ClientConfig::default()
        })
        .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Config {
                    what: "ca-bundle",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
