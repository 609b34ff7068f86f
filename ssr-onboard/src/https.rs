//! The HTTPS adapter (feature `https`): the conductor's onboarding endpoint (hyper 1
//! HTTP/1.1 over tokio-rustls, connections served concurrently) and the router's
//! client (rustls on a blocking std socket), both TLS 1.3 only with the ring provider;
//! plus the JSON-lines audit log. The used-token stores are in
//! [`crate::used_tokens`].
//!
//! Each onboarding runs on one TLS connection: the handshake's messages are HTTP/1.1
//! `POST /sco/v1` requests (JSON bodies, `Content-Length` framing, keep-alive), and
//! both sides bind the handshake to the TLS session with exported keying material
//! (label [`crate::transcript::EKM_LABEL`]).

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use getrandom::SysRng;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rand_core::UnwrapErr;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, StreamOwned};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use crate::audit::{AuditEvent, AuditKind};
use crate::conductor::{ConductorOutcome, ConductorPolicy, ConductorSession, UsedTokens};
use crate::config::{ConductorConfig, OnboardingConfig};
use crate::msg::{Legacy, MAX_MESSAGE_LEN, Message};
use crate::record::OnboardingRecord;
use crate::router::{HANDSHAKE_TIMEOUT, RouterHandshake, RouterParams};
use crate::signer::RouterSigner;
use crate::ssh::{Ed25519SshKey, SshPublicKey};
use crate::token::Token;
use crate::transcript::EKM_LABEL;
use crate::used_tokens::OnboardingRecords;
use crate::{Error, ErrorKind};

/// Socket read/write timeout.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP path of the onboarding endpoint.
pub const PATH: &str = "/sco/v1";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn storage(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Storage {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn net(e: impl std::fmt::Display) -> Error {
    Error::Network {
        reason: e.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A JSON-lines audit log (append-only, flushed per event).
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: Option<PathBuf>,
}

impl AuditLog {
    /// A log at `path` (`None`: events are dropped).
    pub fn new(path: Option<PathBuf>) -> Self {
        Self { path }
    }

    /// Appends one event.
    pub fn write(&self, ev: &AuditEvent) -> Result<(), Error> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| storage(path, e))?;
        f.write_all(ev.to_json_line().as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| storage(path, e))
    }
}

pub use crate::used_tokens::FileUsedTokens;

/// Reads all certificates from a PEM file.
pub fn read_certificates(
    path: &Path,
    field: &str,
    file: &str,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let err = |reason: String| Error::Config {
        file: file.into(),
        field: field.into(),
        reason,
    };
    let bytes = fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("{}: not PEM certificates: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(err(format!("{}: no certificate in file", path.display())));
    }
    Ok(certs)
}

// ---------------------------------------------------------------- HTTP framing

fn write_request(w: &mut impl Write, host: &str, body: &[u8]) -> io::Result<()> {
    let mut out = format!(
        "POST {PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()
}

/// Reads one HTTP/1.1 message head and body. Returns `None` on a clean EOF before
/// the first byte. The head is capped at 8 KiB, the body at [`MAX_MESSAGE_LEN`].
fn read_message(r: &mut impl Read) -> io::Result<Option<(String, Vec<u8>)>> {
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    loop {
        match r.read(&mut byte) {
            Ok(0) if head.is_empty() => return Ok(None),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "truncated HTTP head",
                ));
            }
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && head.is_empty() => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        if head.ends_with(b"\r\n\r\n") {
            break;
        }
        if head.len() > 8192 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "HTTP head too long",
            ));
        }
    }
    let head = String::from_utf8(head)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "HTTP head not UTF-8"))?;
    let mut len = None;
    for line in head.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse::<usize>().ok();
        }
    }
    let len = len.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Content-Length"))?;
    if len > MAX_MESSAGE_LEN {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "body too long"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let first = head.split("\r\n").next().unwrap_or("").to_owned();
    Ok(Some((first, body)))
}

// ---------------------------------------------------------------- conductor

/// The conductor endpoint's limits. Defaults: TLS handshake 10 s, each request (head
/// and body) 10 s, a whole connection 40 s from its accept (the onboarding handshake's
/// own deadline is 30 s), 32 concurrent connections per source address, 512 in all.
/// Request heads are capped at 8 KiB and bodies at [`MAX_MESSAGE_LEN`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// The TLS handshake must complete within this after the TCP accept.
    pub tls_handshake_timeout: Duration,
    /// Each HTTP request, head and body, must arrive within this.
    pub request_timeout: Duration,
    /// Every connection is closed this long after its accept, whatever it is doing.
    pub connection_deadline: Duration,
    /// Concurrent connections (TLS and onboarding handshakes in progress) from one
    /// source address; further ones from that address are closed at once.
    pub handshakes_per_source: usize,
    /// Concurrent connections in all; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            tls_handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            connection_deadline: HANDSHAKE_TIMEOUT + Duration::from_secs(10),
            handshakes_per_source: 32,
            max_connections: 512,
        }
    }
}

/// The request head cap (hyper's smallest read buffer).
const MAX_HEAD: usize = 8192;

/// The conductor's onboarding endpoint: hyper (HTTP/1.1) over tokio-rustls (TLS 1.3),
/// each connection served concurrently on its own task. The onboarding handshake's
/// state lives per connection and is bound to it by the TLS exporter; the used-token
/// store, the audit log and `authorized-keys` are shared by all connections.
#[derive(Debug)]
pub struct ConductorServer {
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: ServerLimits,
}

struct Shared {
    tls: TlsAcceptor,
    policy: ConductorPolicy,
    used: Mutex<Box<dyn UsedTokens + Send>>,
    audit: AuditLog,
    authorized_keys: Mutex<PathBuf>,
    records: Option<Mutex<Box<dyn OnboardingRecords>>>,
    sources: Mutex<HashMap<IpAddr, usize>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("policy", &self.policy)
            .field("audit", &self.audit)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One connection's place in its source address's count.
struct SourceSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl SourceSlot {
    fn admit(shared: &Arc<Shared>, ip: IpAddr, cap: usize) -> Option<SourceSlot> {
        let mut sources = lock(&shared.sources);
        let n = sources.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut sources = lock(&self.shared.sources);
        if let Some(n) = sources.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                sources.remove(&self.ip);
            }
        }
    }
}

/// The shared store, locked for one `consume` at a time.
struct LockedStore<'a>(&'a Mutex<Box<dyn UsedTokens + Send>>);

impl UsedTokens for LockedStore<'_> {
    fn consume(&mut self, jti: &str, exp: u64) -> Result<bool, Error> {
        match self.0.lock() {
            Ok(mut store) => store.consume(jti, exp),
            Err(_) => Err(Error::Storage {
                path: "used-token store".into(),
                reason: "an earlier update panicked".into(),
            }),
        }
    }
}

/// One connection: its handshake state.
struct Conn {
    shared: Arc<Shared>,
    session: Mutex<ConductorSession>,
    outcomes: mpsc::UnboundedSender<ConductorOutcome>,
    request_timeout: Duration,
}

struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    close: bool,
}

impl Reply {
    fn close(status: StatusCode) -> Reply {
        Reply {
            status,
            body: Vec::new(),
            close: true,
        }
    }
}

/// Builds the conductor's policy from its configuration (reads the token-signing key
/// and the SSH host key; refuses a token key that is the TLS key). The routers' PSKs
/// move out of `cfg` into the policy.
pub fn conductor_policy(cfg: &mut ConductorConfig) -> Result<ConductorPolicy, Error> {
    use p256::pkcs8::DecodePrivateKey;
    let file = "conductor-config.json";
    let cerr = |field: &str, reason: String| Error::Config {
        file: file.into(),
        field: field.into(),
        reason,
    };
    let pem = Zeroizing::new(
        fs::read_to_string(&cfg.token_key)
            .map_err(|e| cerr("token-key", format!("{}: {e}", cfg.token_key.display())))?,
    );
    let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| cerr("token-key", format!("not a PKCS#8 P-256 key: {e}")))?;
    if let Ok(tls_pem) = fs::read_to_string(&cfg.private_key).map(Zeroizing::new)
        && let Ok(tls_key) = p256::ecdsa::SigningKey::from_pkcs8_pem(&tls_pem)
        && tls_key.verifying_key() == key.verifying_key()
    {
        return Err(cerr(
            "token-key",
            "is the TLS key (private-key): tokens must be signed with a key of their own".into(),
        ));
    }
    let host = fs::read_to_string(&cfg.ssh_host_key).map_err(|e| {
        cerr(
            "ssh-host-key",
            format!("{}: {e}", cfg.ssh_host_key.display()),
        )
    })?;
    let host = SshPublicKey::parse(host.trim()).map_err(|e| cerr("ssh-host-key", e.to_string()))?;
    let routers = std::mem::take(&mut cfg.routers);
    let mut policy = ConductorPolicy::new(cfg.name.clone(), key, routers, host);
    policy.set_sco_enabled(cfg.sco_enabled);
    Ok(policy)
}

impl ConductorServer {
    /// Binds the endpoint from a parsed configuration and opens its used-token store.
    pub fn from_config(mut cfg: ConductorConfig) -> Result<ConductorServer, Error> {
        let file = "conductor-config.json";
        let certs = read_certificates(&cfg.certificate, "certificate", file)?;
        let key = PrivateKeyDer::from_pem_file(&cfg.private_key).map_err(|e| Error::Config {
            file: file.into(),
            field: "private-key".into(),
            reason: e.to_string(),
        })?;
        let tls = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(net)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| Error::Config {
                file: file.into(),
                field: "private-key".into(),
                reason: format!("does not match the certificate: {e}"),
            })?;
        let policy = conductor_policy(&mut cfg)?;
        let used = crate::used_tokens::open(&cfg.used_tokens)?;
        let records = crate::used_tokens::open_records(&cfg)?;
        let listener = TcpListener::bind(&cfg.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| Error::Config {
                file: file.into(),
                field: "listen".into(),
                reason: e.to_string(),
            })?;
        Ok(ConductorServer {
            listener,
            shared: Arc::new(Shared {
                tls: TlsAcceptor::from(Arc::new(tls)),
                policy,
                used: Mutex::new(used),
                audit: AuditLog::new(Some(cfg.audit_log.clone())),
                authorized_keys: Mutex::new(cfg.authorized_keys.clone()),
                records: records.map(Mutex::new),
                sources: Mutex::new(HashMap::new()),
            }),
            limits: ServerLimits::default(),
        })
    }

    /// Replaces the limits (for the next [`ConductorServer::serve`]).
    pub fn set_limits(&mut self, limits: ServerLimits) {
        self.limits = limits;
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(net)
    }

    /// Serves connections concurrently until `connections` of them (admitted, not
    /// refused by the per-source cap) have been accepted and finished; `None`: forever.
    /// `on_outcome` is called for each onboarded router (its key is then in
    /// `authorized-keys`). Per-connection failures end that connection only; an error
    /// here means the endpoint itself could not run.
    pub fn serve(
        &self,
        connections: Option<u64>,
        on_outcome: &mut dyn FnMut(&ConductorOutcome),
    ) -> Result<(), Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(64)
            .enable_all()
            .build()
            .map_err(net)?;
        let std_listener = self.listener.try_clone().map_err(net)?;
        let limits = self.limits.clone();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::from_std(std_listener).map_err(net)?;
            let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut tasks = JoinSet::new();
            let mut accepted = 0u64;
            loop {
                let more = connections.is_none_or(|n| accepted < n);
                if !more && tasks.is_empty() {
                    break;
                }
                tokio::select! {
                    Some(o) = rx.recv() => on_outcome(&o),
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                    r = listener.accept(), if more && permits.available_permits() > 0 => {
                        let (tcp, peer) = match r {
                            Ok(a) => a,
                            Err(_) => {
                                // Out of descriptors or a connection reset before
                                // accept: back off instead of spinning.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        };
                        let Some(slot) =
                            SourceSlot::admit(&self.shared, peer.ip(), limits.handshakes_per_source)
                        else {
                            drop(tcp);
                            continue;
                        };
                        let Ok(permit) = permits.clone().try_acquire_owned() else {
                            continue;
                        };
                        accepted += 1;
                        let _ = tcp.set_nodelay(true);
                        let shared = self.shared.clone();
                        let tx = tx.clone();
                        let limits = limits.clone();
                        tasks.spawn(async move {
                            serve_connection(shared, &limits, tcp, tx).await;
                            drop(slot);
                            drop(permit);
                        });
                    }
                }
            }
            while let Ok(o) = rx.try_recv() {
                on_outcome(&o);
            }
            Ok(())
        })
    }

    /// Serves one connection: one onboarding. `Ok(Some(_))` when a router was
    /// onboarded (its key is then in `authorized-keys`).
    pub fn serve_one(&mut self) -> Result<Option<ConductorOutcome>, Error> {
        let mut out = None;
        self.serve(Some(1), &mut |o| out = Some(o.clone()))?;
        Ok(out)
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    limits: &ServerLimits,
    tcp: tokio::net::TcpStream,
    outcomes: mpsc::UnboundedSender<ConductorOutcome>,
) {
    let request_timeout = limits.request_timeout;
    let handshake_timeout = limits.tls_handshake_timeout;
    let whole = async move {
        let Ok(Ok(tls)) = tokio::time::timeout(handshake_timeout, shared.tls.accept(tcp)).await
        else {
            return;
        };
        let mut ekm = Zeroizing::new([0u8; 32]);
        if tls
            .get_ref()
            .1
            .export_keying_material(&mut *ekm, EKM_LABEL, None)
            .is_err()
        {
            return;
        }
        let conn = Arc::new(Conn {
            shared,
            session: Mutex::new(ConductorSession::new(*ekm, Instant::now())),
            outcomes,
            request_timeout,
        });
        drop(ekm);
        let svc = service_fn(move |req| handle_request(conn.clone(), req));
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(request_timeout)
            .max_buf_size(MAX_HEAD)
            .keep_alive(true);
        let _ = http.serve_connection(TokioIo::new(tls), svc).await;
    };
    let _ = tokio::time::timeout(limits.connection_deadline, whole).await;
}

async fn handle_request(
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = if req.method() != Method::POST || req.uri().path() != PATH {
        Reply::close(StatusCode::NOT_FOUND)
    } else {
        let body = Limited::new(req.into_body(), MAX_MESSAGE_LEN);
        match tokio::time::timeout(conn.request_timeout, body.collect()).await {
            Err(_) => Reply::close(StatusCode::REQUEST_TIMEOUT),
            Ok(Err(_)) => Reply::close(StatusCode::PAYLOAD_TOO_LARGE),
            Ok(Ok(body)) => {
                let body = body.to_bytes();
                let c = conn.clone();
                tokio::task::spawn_blocking(move || c.step(&body))
                    .await
                    .unwrap_or_else(|_| Reply::close(StatusCode::INTERNAL_SERVER_ERROR))
            }
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() = reply.status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if reply.close {
        resp.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

impl Conn {
    /// One message of the handshake (blocking: signatures, fsync, the database).
    fn step(&self, body: &[u8]) -> Reply {
        let shared = &self.shared;
        let mut session = lock(&self.session);
        let mut rng = UnwrapErr(SysRng);
        let res = session.handle_message(
            &shared.policy,
            &mut LockedStore(&shared.used),
            body,
            &mut rng,
            Instant::now(),
            unix_now(),
        );
        let mut stored = Ok(());
        while let Some(ev) = session.poll_audit() {
            stored = stored.and(shared.audit.write(&ev));
        }
        if let Some(o) = session.poll_outcome() {
            // The same lock orders the records and the authorized keys.
            let ak = lock(&shared.authorized_keys);
            if let Some(records) = &shared.records {
                let record = OnboardingRecord::new(&o.router, &o.router_key, &o.jti, unix_now());
                stored = stored.and(lock(records).append(&record));
            }
            stored = stored.and(append_line(
                &ak,
                &o.router_ssh_key.router_authorized_keys_line(&o.router),
            ));
            if stored.is_ok() {
                let _ = self.outcomes.send(o);
            }
        }
        if stored.is_err() {
            // Without its audit record or authorized key the onboarding must not be
            // confirmed to the router.
            return Reply::close(StatusCode::INTERNAL_SERVER_ERROR);
        }
        match (&res, session.poll_transmit()) {
            (Ok(()), Some(b)) => Reply {
                status: StatusCode::OK,
                body: b,
                close: session.poll_timeout().is_none(),
            },
            (Err(e), Some(b)) => Reply {
                status: if e.kind() == ErrorKind::Other {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::FORBIDDEN
                },
                body: b,
                close: true,
            },
            (_, None) => Reply::close(StatusCode::NOT_FOUND),
        }
    }
}

/// Reads the onboarding records (`router-keys`); a missing file has none, a line that
/// does not parse is an error naming it.
pub fn read_records(path: &Path) -> Result<Vec<OnboardingRecord>, Error> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(storage(path, e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            OnboardingRecord::parse(l).map_err(|e| storage(path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// Checks a certificate request (PEM `CERTIFICATE REQUEST` or DER) for `router`
/// against the conductor's onboarding records (`router-keys`, or the database with
/// `used-tokens-database`): its key must be the one the router proved at
/// onboarding. See [`crate::record::check_csr`].
pub fn check_router_csr(cfg: &ConductorConfig, router: &str, csr: &[u8]) -> Result<(), Error> {
    let mut records = crate::used_tokens::open_records(cfg)?.ok_or_else(|| Error::Config {
        file: "conductor-config.json".into(),
        field: "router-keys".into(),
        reason: "missing: the conductor keeps no onboarding records to check against".into(),
    })?;
    let der = if csr.starts_with(b"-----BEGIN") {
        use der::DecodePem;
        use der::Encode;
        x509_cert::request::CertReq::from_pem(csr)
            .and_then(|r| r.to_der())
            .map_err(|e| Error::MalformedCsr {
                reason: e.to_string(),
            })?
    } else {
        csr.to_vec()
    };
    let latest = records.latest(router)?;
    crate::record::check_csr(router, latest.as_ref(), &der)
}

/// Appends one line to a 0600 file and fsyncs it.
pub(crate) fn append_line(path: &Path, line: &str) -> Result<(), Error> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| storage(path, e))?;
    f.write_all(line.as_bytes())
        .and_then(|()| f.sync_data())
        .map_err(|e| storage(path, e))
}

// ---------------------------------------------------------------- router

/// What `join` leaves behind on the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOutcome {
    /// The router's SSH private key (OpenSSH format, mode 0600).
    pub ssh_private_key: PathBuf,
    /// The router's known_hosts with the conductor's host key for port 930.
    pub known_hosts: PathBuf,
    /// An ssh_config stanza `Host conductor` for the next connections.
    pub ssh_config: PathBuf,
    /// The conductor's host key.
    pub conductor_host_key: SshPublicKey,
    /// The conductor host (from `conductor-address`).
    pub conductor_host: String,
    /// The port of all further router-conductor traffic (930).
    pub ssh_port: u16,
}

fn client_tls(cfg: &OnboardingConfig) -> Result<(Arc<ClientConfig>, Vec<u8>), Error> {
    let file = "onboarding-config.json";
    let mut roots = RootCertStore::empty();
    for c in read_certificates(&cfg.ca_certificate, "ca-certificate", file)? {
        roots.add(c).map_err(|e| Error::Config {
            file: file.into(),
            field: "ca-certificate".into(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let pinned = read_certificates(&cfg.conductor_certificate, "conductor-certificate", file)?
        .into_iter()
        .next()
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    let tls = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(net)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(tls), pinned))
}

fn tls_error(e: io::Error) -> Error {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        match inner {
            rustls::Error::InvalidCertificate(c) => {
                return Error::ConductorNotTrusted {
                    reason: format!("certificate rejected: {c:?}"),
                };
            }
            rustls::Error::AlertReceived(a) => {
                return net(format!("TLS alert from conductor: {a:?}"));
            }
            other => return net(format!("TLS: {other}")),
        }
    }
    net(e)
}

/// Opens the TLS connection to the conductor, checking its certificate chains to the
/// configured CA, names `conductor-name`, and is the configured conductor certificate.
fn connect(cfg: &OnboardingConfig) -> Result<StreamOwned<ClientConnection, TcpStream>, Error> {
    let (tls, pinned) = client_tls(cfg)?;
    let addrs: Vec<SocketAddr> = cfg
        .conductor_address
        .to_socket_addrs()
        .map_err(|e| net(format!("{}: {e}", cfg.conductor_address)))?
        .collect();
    let mut last = None;
    let mut tcp = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, IO_TIMEOUT) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = tcp.ok_or_else(|| {
        net(format!(
            "{}: {}",
            cfg.conductor_address,
            last.map_or("no address".into(), |e| e.to_string())
        ))
    })?;
    tcp.set_read_timeout(Some(IO_TIMEOUT)).map_err(net)?;
    tcp.set_write_timeout(Some(IO_TIMEOUT)).map_err(net)?;
    let name = ServerName::try_from(cfg.conductor_name.clone()).map_err(|e| Error::Config {
        file: "onboarding-config.json".into(),
        field: "conductor-name".into(),
        reason: e.to_string(),
    })?;
    let conn = ClientConnection::new(tls, name).map_err(net)?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(tls_error)?;
    }
    let presented = s
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    if presented.as_deref() != Some(pinned.as_slice()) {
        return Err(Error::ConductorNotTrusted {
            reason: "the presented certificate is not the configured conductor-certificate".into(),
        });
    }
    Ok(s)
}

fn post(
    s: &mut StreamOwned<ClientConnection, TcpStream>,
    host: &str,
    body: &[u8],
) -> Result<Vec<u8>, Error> {
    write_request(s, host, body).map_err(tls_error)?;
    let (status, body) = read_message(s)
        .map_err(tls_error)?
        .ok_or_else(|| net("conductor closed the connection"))?;
    if !status.starts_with("HTTP/1.1 ") {
        return Err(net(format!("unexpected response {status:?}")));
    }
    Ok(body)
}

/// Writes `data` to `path` with `mode` (e.g. 0600) atomically: a fresh temporary file
/// beside it, fsynced, then renamed over `path`.
pub fn write_private(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| storage(&tmp, e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| storage(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| storage(path, e))
}

fn audit_refusal(log: &AuditLog, cfg: &OnboardingConfig, token: &Token, e: &Error) {
    let _ = log.write(&AuditEvent {
        time: unix_now(),
        event: if e.kind() == ErrorKind::BadToken {
            AuditKind::TokenRejected
        } else {
            AuditKind::Refused
        },
        side: "router",
        router: Some(cfg.router_name.clone()),
        jti: Some(token.unverified_claims().jti.clone()),
        detail: e.to_string(),
    });
}

/// Reads the conductor's token-signing public keys (`token-public-key`): one or more
/// PEM `PUBLIC KEY` blocks, P-256.
pub fn read_token_public_keys(path: &Path) -> Result<Vec<p256::ecdsa::VerifyingKey>, Error> {
    use p256::pkcs8::DecodePublicKey;
    let err = |reason: String| Error::Config {
        file: "onboarding-config.json".into(),
        field: "token-public-key".into(),
        reason: format!("{}: {reason}", path.display()),
    };
    let pem = fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    const END: &str = "-----END PUBLIC KEY-----";
    let mut keys = Vec::new();
    let mut rest = pem.as_str();
    while let Some(start) = rest.find("-----BEGIN PUBLIC KEY-----") {
        let Some(len) = rest[start..].find(END) else {
            return Err(err("unterminated PEM block".into()));
        };
        let block = &rest[start..start + len + END.len()];
        keys.push(
            p256::ecdsa::VerifyingKey::from_public_key_pem(block)
                .map_err(|e| err(format!("not a P-256 public key: {e}")))?,
        );
        rest = &rest[start + len + END.len()..];
    }
    if keys.is_empty() {
        return Err(err("no PUBLIC KEY block".into()));
    }
    Ok(keys)
}

/// The router's own check of a token against the conductor's token-signing keys it
/// trusts: the signature must verify under one of them (and the claims hold).
fn check_token_signature(
    token: &Token,
    keys: &[p256::ecdsa::VerifyingKey],
    unix_now: u64,
) -> Result<(), Error> {
    let iss = token.unverified_claims().iss.clone();
    let mut last = Error::TokenSignature;
    for k in keys {
        match token.verify(k, &iss, unix_now) {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Onboards this router: TLS to the conductor (validated against the CA and the
/// pinned conductor certificate), the SCO handshake, then the SSH key exchange: the
/// router's new ed25519 key goes to the conductor, the conductor's host key into
/// `ssh-dir/known_hosts` for port 930.
pub fn join(
    cfg: &OnboardingConfig,
    token: &Token,
    signer: &dyn RouterSigner,
) -> Result<JoinOutcome, Error> {
    let log = AuditLog::new(cfg.audit_log.clone());
    let res = join_inner(cfg, token, signer, &log);
    if let Err(e) = &res {
        audit_refusal(&log, cfg, token, e);
    }
    res
}

fn join_inner(
    cfg: &OnboardingConfig,
    token: &Token,
    signer: &dyn RouterSigner,
    log: &AuditLog,
) -> Result<JoinOutcome, Error> {
    let mut rng = UnwrapErr(SysRng);
    if !cfg.ssh_dir.is_dir() {
        return Err(Error::Config {
            file: "onboarding-config.json".into(),
            field: "ssh-dir".into(),
            reason: format!("{}: not a directory", cfg.ssh_dir.display()),
        });
    }
    if let Some(path) = &cfg.token_public_key {
        check_token_signature(token, &read_token_public_keys(path)?, unix_now())?;
    }
    crate::router::check_token(&cfg.router_name, token, signer, unix_now())?;
    let ssh_key = Ed25519SshKey::generate(&mut rng)?;
    let mut s = connect(cfg)?;
    let mut ekm = [0u8; 32];
    s.conn
        .export_keying_material(&mut ekm, EKM_LABEL, None)
        .map_err(net)?;
    let params = RouterParams {
        router_name: cfg.router_name.clone(),
        psk: crate::Psk::parse(cfg.psk.secret_str())?,
        token: token.clone(),
        ssh_key: ssh_key.public_key(),
    };
    let mut hs = RouterHandshake::start(params, signer, ekm, &mut rng, Instant::now(), unix_now())?;
    let host = cfg.conductor_name.clone();
    let mut outcome = None;
    while let Some(m) = hs.poll_transmit() {
        let reply = post(&mut s, &host, &m)?;
        let r = hs.handle_message(&reply, signer, Instant::now(), unix_now());
        while let Some(ev) = hs.poll_audit() {
            // Failures are audited once, by `join`.
            if ev.event == AuditKind::Onboarded {
                log.write(&ev)?;
            }
        }
        if let Err(e) = r {
            if let Some(refusal) = hs.poll_transmit() {
                let _ = post(&mut s, &host, &refusal);
            }
            return Err(e);
        }
        if let Some(o) = hs.poll_outcome() {
            outcome = Some(o);
        }
    }
    s.conn.send_close_notify();
    let _ = s.flush();
    let o = outcome.ok_or_else(|| net("handshake ended without the conductor's confirmation"))?;
    let conductor_host = cfg
        .conductor_address
        .rsplit_once(':')
        .map_or(cfg.conductor_address.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let key_path = cfg.ssh_dir.join("id_ed25519");
    let mut check = [0u8; 4];
    rand_core::Rng::fill_bytes(&mut rng, &mut check);
    let private = ssh_key.to_openssh_private(
        &format!("ssr-router:{}", cfg.router_name),
        u32::from_be_bytes(check),
    );
    write_private(&key_path, private.as_bytes(), 0o600)?;
    write_private(
        &cfg.ssh_dir.join("id_ed25519.pub"),
        ssh_key
            .public_key()
            .authorized_keys_line(&format!("ssr-router:{}", cfg.router_name))
            .as_bytes(),
        0o644,
    )?;
    let known_hosts = cfg.ssh_dir.join("known_hosts");
    write_private(
        &known_hosts,
        o.conductor_host_key
            .known_hosts_line(&conductor_host, o.ssh_port)
            .as_bytes(),
        0o644,
    )?;
    let ssh_config = cfg.ssh_dir.join("config");
    let stanza = format!(
        "Host conductor\n    HostName {conductor_host}\n    Port {}\n    IdentityFile {}\n    IdentitiesOnly yes\n    UserKnownHostsFile {}\n    StrictHostKeyChecking yes\n",
        o.ssh_port,
        key_path.display(),
        known_hosts.display()
    );
    write_private(&ssh_config, stanza.as_bytes(), 0o644)?;
    Ok(JoinOutcome {
        ssh_private_key: key_path,
        known_hosts,
        ssh_config,
        conductor_host_key: o.conductor_host_key,
        conductor_host,
        ssh_port: o.ssh_port,
    })
}

/// A legacy (asset-id) onboarding attempt. Refused locally and audited when SCO is
/// enabled in `cfg`; otherwise sent to the conductor (which refuses it when it has
/// SCO enabled).
pub fn legacy_onboard(cfg: &OnboardingConfig, asset_id: &str) -> Result<(), Error> {
    let log = AuditLog::new(cfg.audit_log.clone());
    if cfg.sco_enabled {
        let e = Error::LegacyRefused {
            asset_id: asset_id
                .chars()
                .filter(|c| !c.is_control())
                .take(128)
                .collect(),
        };
        log.write(&AuditEvent {
            time: unix_now(),
            event: AuditKind::LegacyRefused,
            side: "router",
            router: Some(cfg.router_name.clone()),
            jti: None,
            detail: e.to_string(),
        })?;
        return Err(e);
    }
    let mut s = connect(cfg)?;
    let body = Message::Legacy(Legacy {
        asset_id: asset_id.to_owned(),
    })
    .encode();
    let reply = post(&mut s, &cfg.conductor_name.clone(), &body)?;
    match Message::parse(&reply)? {
        Message::Refusal(r) => Err(Error::Refused {
            code: r.code,
            detail: r.detail,
        }),
        _ => Ok(()),
    }
}
