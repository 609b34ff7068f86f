//! A local HTTP/1.1 (and HTTPS) server on loopback with fault injection.
//!
//! One thread accepts, one thread serves each connection (keep-alive). Every request is
//! numbered from 0; the fault plan sees the request and its number and may answer with
//! a [`Fault`] instead of (or on top of) the handler's response. Everything served is
//! logged ([`HttpServer::served`]) so tests can count requests and body bytes.
//!
//! ```no_run
//! use ssr_testkit::http::{Fault, HttpServer, StaticFiles};
//!
//! let files = StaticFiles::new();
//! files.insert("/image.bin", vec![7u8; 1 << 20]);
//! let server = HttpServer::start(files)?;
//! // Every third request fails with a 503.
//! server.set_faults(|_req, n| (n % 3 == 2).then_some(Fault::Status(503)));
//! println!("GET {}/image.bin", server.url());
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Largest request head or body the server accepts (it is a test server).
const MAX_REQUEST: usize = 16 << 20;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent (path and query).
    pub path: String,
    /// Header names are lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response body: owned bytes, or a window into shared bytes (no copy for big files).
#[derive(Clone)]
pub enum Body {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>, Range<usize>),
}

impl Body {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Body::Owned(v) => v,
            Body::Shared(data, range) => &data[range.clone()],
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Body({} bytes)", self.as_bytes().len())
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body::Owned(v)
    }
}

impl From<&str> for Body {
    fn from(s: &str) -> Self {
        Body::Owned(s.as_bytes().to_vec())
    }
}

/// A response; `Content-Length` is added by the server.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Body>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl fmt::Display) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Answers requests. Closures `Fn(&Request) -> Response` are handlers.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: &Request) -> Response;
}

impl<F: Fn(&Request) -> Response + Send + Sync + 'static> Handler for F {
    fn handle(&self, request: &Request) -> Response {
        self(request)
    }
}

/// In-memory files served to `GET`/`HEAD` with `Range: bytes=a-b` / `bytes=a-` support
/// (206 with `Content-Range`, 416 when unsatisfiable). Files can be changed while the
/// server runs (share it through an `Arc`).
#[derive(Debug, Default)]
pub struct StaticFiles {
    files: Mutex<BTreeMap<String, Arc<[u8]>>>,
}

impl StaticFiles {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn insert(&self, path: &str, bytes: impl Into<Arc<[u8]>>) {
        lock(&self.files).insert(path.to_string(), bytes.into());
    }

    pub fn remove(&self, path: &str) {
        lock(&self.files).remove(path);
    }
}

impl Handler for Arc<StaticFiles> {
    fn handle(&self, request: &Request) -> Response {
        if request.method != "GET" && request.method != "HEAD" {
            return Response::new(405, "method not allowed");
        }
        let path = request.path.split('?').next().unwrap_or_default();
        let Some(data) = lock(&self.files).get(path).cloned() else {
            return Response::new(404, "not found");
        };
        let len = data.len();
        match request.header("range") {
            None => Response::new(200, Body::Shared(data, 0..len)),
            Some(spec) => match parse_range(spec, len) {
                Some(r) => {
                    let header = format!("bytes {}-{}/{len}", r.start, r.end - 1);
                    Response::new(206, Body::Shared(data, r)).with_header("Content-Range", header)
                }
                None => {
                    Response::new(416, "").with_header("Content-Range", format!("bytes */{len}"))
                }
            },
        }
    }
}

/// `bytes=a-b` or `bytes=a-` (a single range) within a body of `len` bytes.
fn parse_range(spec: &str, len: usize) -> Option<Range<usize>> {
    let (first, last) = spec.trim().strip_prefix("bytes=")?.split_once('-')?;
    let start: usize = first.trim().parse().ok()?;
    let end = match last.trim() {
        "" => len,
        l => l.parse::<usize>().ok()?.checked_add(1)?.min(len),
    };
    (start < end).then_some(start..end)
}

/// What the server does instead of answering normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and an empty body.
    Status(u16),
    /// Send the handler's headers (full `Content-Length`) but only this many body bytes,
    /// then close the connection.
    Truncate(usize),
    /// Wait this long, then answer normally.
    Stall(Duration),
    /// Answer normally but claim a different range in `Content-Range` (same length,
    /// shifted by its length).
    WrongContentRange,
    /// Drop the `Range` header before the handler sees it (a full 200 answer).
    IgnoreRange,
    /// Flip the bits of the middle byte of the body.
    Corrupt,
    /// Close the connection without answering.
    Close,
    /// Send the body in pieces of `piece` bytes with `pause` before each piece after
    /// the first (a source that trickles, or stalls in the middle of a body).
    Trickle { piece: usize, pause: Duration },
}

/// One request as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// 0 for the first request this server saw.
    pub index: u64,
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    /// 0 when the connection was closed without an answer.
    pub status: u16,
    /// Body bytes handed to the socket (a chunk whose write failed is not counted).
    pub body_bytes: u64,
    pub fault: Option<Fault>,
}

/// Totals over everything served so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub requests: u64,
    pub body_bytes: u64,
}

type FaultPlan = dyn Fn(&Request, u64) -> Option<Fault> + Send + Sync;

struct Shared {
    handler: Box<dyn Handler>,
    faults: Mutex<Option<Arc<FaultPlan>>>,
    served: Mutex<Vec<Served>>,
    next_index: AtomicU64,
    shutdown: AtomicBool,
    connections: Mutex<BTreeMap<u64, TcpStream>>,
    next_connection: AtomicU64,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// The running server; stopped (listener closed, connections shut down) on drop.
pub struct HttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServer")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// Plain HTTP on 127.0.0.1, a free port.
    pub fn start(handler: impl Handler) -> io::Result<HttpServer> {
        Self::spawn(Box::new(handler), None, (Ipv4Addr::LOCALHOST, 0).into())
    }

    /// HTTPS on 127.0.0.1 with this identity (clients trust [`TlsIdentity::ca_pem`]).
    pub fn start_tls(handler: impl Handler, identity: &TlsIdentity) -> io::Result<HttpServer> {
        Self::spawn(
            Box::new(handler),
            Some(identity.server_config()?),
            (Ipv4Addr::LOCALHOST, 0).into(),
        )
    }

    /// Plain HTTP on a chosen address (e.g. inside a network namespace).
    pub fn start_on(handler: impl Handler, addr: SocketAddr) -> io::Result<HttpServer> {
        Self::spawn(Box::new(handler), None, addr)
    }

    fn spawn(
        handler: Box<dyn Handler>,
        tls: Option<Arc<rustls::ServerConfig>>,
        addr: SocketAddr,
    ) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            handler,
            faults: Mutex::new(None),
            served: Mutex::new(Vec::new()),
            next_index: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            connections: Mutex::new(BTreeMap::new()),
            next_connection: AtomicU64::new(0),
            tls,
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("http-{addr}"))
                .spawn(move || accept_loop(&listener, &shared))?
        };
        Ok(HttpServer {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:P` or `https://localhost:P` (TLS: the certificate names
    /// `localhost` and `127.0.0.1`).
    pub fn url(&self) -> String {
        match self.shared.tls {
            Some(_) => format!("https://localhost:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }

    /// Installs the fault plan: called with each request and its index (from 0).
    pub fn set_faults(
        &self,
        plan: impl Fn(&Request, u64) -> Option<Fault> + Send + Sync + 'static,
    ) {
        *lock(&self.shared.faults) = Some(Arc::new(plan));
    }

    /// Removes the fault plan.
    pub fn clear_faults(&self) {
        *lock(&self.shared.faults) = None;
    }

    /// Everything served so far, in order of completion.
    pub fn served(&self) -> Vec<Served> {
        lock(&self.shared.served).clone()
    }

    /// Body bytes served so far for paths ending in `suffix` (e.g. an image file).
    pub fn body_bytes_for(&self, suffix: &str) -> u64 {
        lock(&self.shared.served)
            .iter()
            .filter(|s| s.path.ends_with(suffix))
            .map(|s| s.body_bytes)
            .sum()
    }

    pub fn stats(&self) -> Stats {
        let served = lock(&self.shared.served);
        Stats {
            requests: served.len() as u64,
            body_bytes: served.iter().map(|s| s.body_bytes).sum(),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Wake the acceptor, then cut every open connection.
        let _ = TcpStream::connect(self.addr);
        for (_, conn) in std::mem::take(&mut *lock(&self.shared.connections)) {
            let _ = conn.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        let Ok(closer) = stream.try_clone() else {
            continue;
        };
        let id = shared.next_connection.fetch_add(1, Ordering::SeqCst);
        lock(&shared.connections).insert(id, closer);
        let shared = Arc::clone(shared);
        let _ = thread::Builder::new()
            .name("http-conn".into())
            .spawn(move || {
                let _ = match shared.tls.clone() {
                    Some(config) => match rustls::ServerConnection::new(config) {
                        Ok(conn) => {
                            serve_connection(rustls::StreamOwned::new(conn, stream), &shared)
                        }
                        Err(e) => Err(io::Error::other(e)),
                    },
                    None => serve_connection(stream, &shared),
                };
                // The tracked clone keeps the socket open: close it for real.
                if let Some(closer) = lock(&shared.connections).remove(&id) {
                    let _ = closer.shutdown(Shutdown::Both);
                }
            });
    }
}

fn serve_connection<S: Read + Write>(stream: S, shared: &Shared) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    loop {
        let Some(request) = read_request(&mut reader)? else {
            return Ok(());
        };
        let index = shared.next_index.fetch_add(1, Ordering::SeqCst);
        let plan = lock(&shared.faults).clone();
        let fault = plan.and_then(|plan| plan(&request, index));
        let keep_alive = !request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let served = Served {
            index,
            method: request.method.clone(),
            path: request.path.clone(),
            range: request.header("range").map(str::to_string),
            status: 0,
            body_bytes: 0,
            fault: fault.clone(),
        };
        // Logged before answering and updated as bytes go out, so a client that has
        // read everything always finds its request in the log.
        let slot = {
            let mut log = lock(&shared.served);
            log.push(served);
            log.len() - 1
        };
        let record = Record { shared, slot };
        let outcome = answer(reader.get_mut(), shared, request, fault, &record);
        match outcome {
            Ok(true) if keep_alive => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// One request's entry in the served log.
struct Record<'a> {
    shared: &'a Shared,
    slot: usize,
}

impl Record<'_> {
    fn update(&self, f: impl FnOnce(&mut Served)) {
        if let Some(entry) = lock(&self.shared.served).get_mut(self.slot) {
            f(entry);
        }
    }
}

/// Writes the answer; `Ok(false)` when the connection must close afterwards.
fn answer<S: Write>(
    stream: &mut S,
    shared: &Shared,
    mut request: Request,
    fault: Option<Fault>,
    record: &Record<'_>,
) -> io::Result<bool> {
    match &fault {
        Some(Fault::Close) => return Ok(false),
        Some(Fault::Stall(d)) => thread::sleep(*d),
        Some(Fault::IgnoreRange) => request.headers.retain(|(n, _)| n != "range"),
        _ => {}
    }
    let mut response = match fault {
        Some(Fault::Status(code)) => Response::new(code, ""),
        _ => shared.handler.handle(&request),
    };
    if fault == Some(Fault::WrongContentRange) {
        let shifted = response
            .header("content-range")
            .and_then(shift_content_range);
        response
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("content-range"));
        let len = response.body.as_bytes().len();
        response.headers.push((
            "Content-Range".into(),
            shifted.unwrap_or_else(|| format!("bytes 1-{len}/{}", len + 1)),
        ));
    }
    if fault == Some(Fault::Corrupt) {
        let mut bytes = response.body.as_bytes().to_vec();
        if let Some(mid) = bytes.len().checked_sub(1).map(|last| last / 2) {
            bytes[mid] ^= 0xff;
        }
        response.body = Body::Owned(bytes);
    }
    let body = response.body.as_bytes();
    let head_only = request.method == "HEAD";
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let status = response.status;
    record.update(|s| s.status = status);
    stream.write_all(head.as_bytes())?;
    if head_only {
        stream.flush()?;
        return Ok(true);
    }
    let (to_send, keep) = match fault {
        Some(Fault::Truncate(n)) => (&body[..n.min(body.len())], false),
        _ => (body, true),
    };
    let (piece, pause) = match fault {
        Some(Fault::Trickle { piece, pause }) => (piece.max(1), Some(pause)),
        _ => (256 * 1024, None),
    };
    for (i, chunk) in to_send.chunks(piece).enumerate() {
        if let Some(p) = pause.filter(|_| i > 0) {
            stream.flush()?;
            thread::sleep(p);
        }
        let n = chunk.len() as u64;
        record.update(|s| s.body_bytes += n);
        if let Err(e) = stream.write_all(chunk) {
            // How much of this chunk left is unknown: count none of it.
            record.update(|s| s.body_bytes -= n);
            return Err(e);
        }
    }
    stream.flush()?;
    Ok(keep)
}

/// `bytes a-b/n` → `bytes (a+len)-(b+len)/n`: same length, different place.
fn shift_content_range(value: &str) -> Option<String> {
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    let len = b.checked_sub(a)? + 1;
    Some(format!("bytes {}-{}/{total}", a + len, b + len))
}

fn read_request<R: BufRead>(reader: &mut R) -> io::Result<Option<Request>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = reader
            .by_ref()
            .take((MAX_REQUEST - before) as u64)
            .read_until(b'\n', &mut head)?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(bad("truncated request head"))
            };
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
        if head.len() >= MAX_REQUEST {
            return Err(bad("request head too large"));
        }
    }
    let text = std::str::from_utf8(&head).map_err(|_| bad("request head is not UTF-8"))?;
    let mut lines = text.lines();
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(path)) = (first.next(), first.next()) else {
        return Err(bad("bad request line"));
    };
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length = match headers.iter().find(|(n, _)| n == "content-length") {
        Some((_, v)) => v.parse::<usize>().map_err(|_| bad("bad Content-Length"))?,
        None => 0,
    };
    if length > MAX_REQUEST {
        return Err(bad("request body too large"));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some(Request {
        method: method.to_string(),
        path: path.to_string(),
        headers,
        body,
    }))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A throwaway CA and a server certificate for `localhost` / `127.0.0.1` signed by it
/// (ECDSA P-256), all in PEM and DER.
pub struct TlsIdentity {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// A new CA and a server certificate for `names` (DNS names or IP addresses).
    pub fn generate(names: &[&str]) -> io::Result<TlsIdentity> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let err = |e: rcgen::Error| io::Error::other(format!("rcgen: {e}"));

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ssr-testkit CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(err)?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "ssr-testkit server");
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        Ok(TlsIdentity {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }

    /// The CA certificate clients must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server certificate.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The server's private key (PKCS#8 PEM).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A rustls server configuration (ring provider) for this identity.
    pub fn server_config(&self) -> io::Result<Arc<rustls::ServerConfig>> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )
            .map_err(io::Error::other)?;
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_parsing() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(0..10));
        assert_eq!(parse_range("bytes=90-", 100), Some(90..100));
        assert_eq!(parse_range("bytes=90-500", 100), Some(90..100));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-4", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(
            shift_content_range("bytes 0-9/100").as_deref(),
            Some("bytes 10-19/100")
        );
    }
}
