//! The HTTP driver (feature `http`): runs a [`Download`] against real servers with
//! HTTP/1.1 `GET` and `Range` over plain TCP, and keeps the resumable partial file.
//!
//! One short-lived thread performs each request; connections are kept alive and
//! reused per source; chunk buffers are recycled. Chunk bytes are hashed on the
//! request's thread and written by the driver thread only after the state machine
//! accepted them, so no unverified byte is ever recorded as done.
//!
//! On disk, beside the destination: `{dest}/.ssr-download-{version}/` holds
//! `manifest.json` (the manifest being fetched), `image.part` (the partial image, full
//! size, sparse) and `done` (the journal: one little-endian `u32` chunk index per
//! verified chunk, appended as chunks are written). On restart every journaled chunk
//! is hashed again from `image.part` and only the ones that still match are kept; a
//! torn last record is ignored. When the whole file matches the manifest's SHA-256 it
//! is fsynced and renamed atomically to `{dest}/{file}`, and the state directory goes.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use getrandom::SysRng;
use rand_core::UnwrapErr;
use sha2::{Digest, Sha256};

use crate::wire::{MAX_DOCUMENT, Sha256Digest};
use crate::{
    Action, ChunkVerdict, Config, Download, End, Error, Event, Failure, Fetch, Manifest, Progress,
    RequestId, Resource, Resume, Settings, SourceConfig, Status,
};

/// How often the observer gets a progress snapshot while bytes flow.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What the driver reports while it runs.
#[derive(Debug)]
pub enum Report<'a> {
    /// A state-machine event.
    Event(&'a Event),
    /// A progress snapshot (about four per second).
    Progress(Progress),
}

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The verified image.
    pub path: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// Chunks taken over from an earlier run.
    pub resumed_chunks: u32,
}

/// Downloads `version` with the sources and settings of `config` into `dest`,
/// reporting to `observer`. Blocks until the file is verified or the download failed
/// (after its retries and timeout).
pub fn download(
    config: &Config,
    version: &str,
    dest: &Path,
    observer: &mut dyn FnMut(Report<'_>),
) -> Result<Downloaded, Error> {
    download_from(
        &config.usable_sources(),
        config.settings,
        version,
        dest,
        observer,
    )
}

/// [`download`] with an explicit source list (priority order) and settings.
pub fn download_from(
    sources: &[SourceConfig],
    settings: Settings,
    version: &str,
    dest: &Path,
    observer: &mut dyn FnMut(Report<'_>),
) -> Result<Downloaded, Error> {
    crate::wire::check_version(version)?;
    let bases = sources
        .iter()
        .map(|s| Base::parse(&s.url))
        .collect::<Result<Vec<_>, _>>()?;
    let state = StateDir::new(dest, version)?;
    let resume = state.load()?;
    let resumed_chunks = resume.as_ref().map_or(0, |r| r.done.len() as u32);
    let kinds: Vec<_> = sources.iter().map(|s| s.kind).collect();
    let mut dl = Download::new(
        settings,
        version,
        &kinds,
        resume,
        UnwrapErr(SysRng),
        Instant::now(),
    )?;
    let mut driver = Driver {
        version: version.to_string(),
        bases,
        request_timeout: settings.health.request_timeout,
        pool: Arc::new(Pool::default()),
        aborts: BTreeMap::new(),
        state,
        image: None,
        hasher: FileHasher::default(),
    };
    if let Some(m) = dl.manifest().cloned() {
        driver.open_image(&m, false)?;
    }
    driver.run(&mut dl, observer)?;
    match dl.status() {
        Status::Succeeded => {
            let manifest = dl
                .manifest()
                .cloned()
                .ok_or_else(|| io_err("finish", dest, "no manifest"))?;
            let path = driver.finish(&manifest)?;
            Ok(Downloaded {
                path,
                manifest,
                resumed_chunks,
            })
        }
        Status::Failed(e) => Err(e),
        other => Err(io_err(
            "download",
            dest,
            &format!("stopped in state {other:?}"),
        )),
    }
}

fn io_err(what: &'static str, path: &Path, reason: &str) -> Error {
    Error::Io {
        what,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn io_map(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.display().to_string();
    move |e| Error::Io {
        what,
        path,
        reason: e.to_string(),
    }
}

/// A source's base URL, split for HTTP/1.1.
#[derive(Debug, Clone)]
struct Base {
    /// `host:port` to connect to.
    authority: String,
    /// Path prefix without a trailing slash.
    prefix: String,
}

impl Base {
    fn parse(url: &str) -> Result<Base, Error> {
        let bad = |reason: &str| Error::InvalidConfig {
            field: "source.url",
            reason: format!("{url:?}: {reason}"),
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// is supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty()
            || authority.contains('@')
            || !authority.is_ascii()
            || path.contains(['?', '#', ' '])
        {
            return Err(bad("expected http://host[:port][/path]"));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Base {
            authority,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }
}

/// Idle keep-alive connections per source and spare chunk buffers.
#[derive(Debug, Default)]
struct Pool {
    conns: Mutex<HashMap<usize, Vec<Conn>>>,
    buffers: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    fn take_conn(&self, source: usize) -> Option<Conn> {
        self.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&source)?
            .pop()
    }

    fn put_conn(&self, source: usize, conn: Conn) {
        self.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(source)
            .or_default()
            .push(conn);
    }

    fn take_buffer(&self) -> Vec<u8> {
        self.buffers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default()
    }

    fn put_buffer(&self, buf: Vec<u8>) {
        let mut b = self.buffers.lock().unwrap_or_else(PoisonError::into_inner);
        if b.len() < 16 {
            b.push(buf);
        }
    }
}

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
struct Conn {
    reader: BufReader<TcpStream>,
}

/// A response head.
#[derive(Debug)]
struct Head {
    status: u16,
    content_length: Option<u64>,
    content_range: Option<String>,
    chunked: bool,
    close: bool,
}

fn failure_of(e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Failure::TimedOut,
        io::ErrorKind::UnexpectedEof => Failure::ShortBody,
        _ => Failure::Connect,
    }
}

impl Conn {
    fn connect(authority: &str, timeout: Duration) -> Result<Conn, Failure> {
        let addrs = authority.to_socket_addrs().map_err(|_| Failure::Connect)?;
        let mut last = Failure::Connect;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    s.set_read_timeout(Some(timeout))
                        .map_err(|e| failure_of(&e))?;
                    s.set_write_timeout(Some(timeout))
                        .map_err(|e| failure_of(&e))?;
                    return Ok(Conn {
                        reader: BufReader::with_capacity(256 << 10, s),
                    });
                }
                Err(e) => last = failure_of(&e),
            }
        }
        Err(last)
    }

    fn send(&mut self, host: &str, path: &str, range: Option<(u64, u64)>) -> io::Result<Head> {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ssr-download\r\nAccept-Encoding: identity\r\n"
        );
        if let Some((a, b)) = range {
            req.push_str(&format!("Range: bytes={a}-{b}\r\n"));
        }
        req.push_str("\r\n");
        self.reader.get_mut().write_all(req.as_bytes())?;
        self.read_head()
    }

    fn read_head(&mut self) -> io::Result<Head> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
        let mut line = String::new();
        let mut total = 0usize;
        let mut head = Head {
            status: 0,
            content_length: None,
            content_range: None,
            chunked: false,
            close: false,
        };
        let mut first = true;
        loop {
            line.clear();
            let n = (&mut self.reader).take(8192).read_line(&mut line)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            total += n;
            if total > 64 << 10 {
                return Err(bad("response head too large"));
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if first {
                first = false;
                let mut parts = l.split_whitespace();
                let version = parts.next().unwrap_or_default();
                if !version.starts_with("HTTP/1.") {
                    return Err(bad("not HTTP/1.x"));
                }
                head.status = parts
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("bad status line"))?;
                head.close = version == "HTTP/1.0";
                continue;
            }
            if l.is_empty() {
                return Ok(head);
            }
            let Some((name, value)) = l.split_once(':') else {
                return Err(bad("bad header line"));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    head.content_length =
                        Some(value.parse().map_err(|_| bad("bad Content-Length"))?)
                }
                "content-range" => head.content_range = Some(value.to_string()),
                "transfer-encoding" => head.chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => head.close |= value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
    }

    /// A small body (versions, manifest), at most `limit` bytes.
    fn read_small_body(&mut self, head: &Head, limit: usize) -> io::Result<Vec<u8>> {
        let too_big = || io::Error::new(io::ErrorKind::InvalidData, "body too large");
        let mut body = Vec::new();
        if head.chunked {
            loop {
                let mut size_line = String::new();
                (&mut self.reader).take(1024).read_line(&mut size_line)?;
                let size =
                    usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
                        .map_err(|_| {
                            io::Error::new(io::ErrorKind::InvalidData, "bad chunk size")
                        })?;
                if body.len() + size > limit {
                    return Err(too_big());
                }
                let start = body.len();
                body.resize(start + size, 0);
                self.reader.read_exact(&mut body[start..])?;
                let mut crlf = String::new();
                (&mut self.reader).take(1024).read_line(&mut crlf)?;
                if size == 0 {
                    return Ok(body);
                }
            }
        }
        match head.content_length {
            Some(n) if n as usize > limit => Err(too_big()),
            Some(n) => {
                body.resize(n as usize, 0);
                self.reader.read_exact(&mut body)?;
                Ok(body)
            }
            None => {
                (&mut self.reader)
                    .take(limit as u64 + 1)
                    .read_to_end(&mut body)?;
                if body.len() > limit {
                    return Err(too_big());
                }
                Ok(body)
            }
        }
    }

    /// Reads and drops `n` body bytes.
    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut self.reader).take(n), &mut io::sink())?;
        if copied == n {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"))
        }
    }
}

/// What a request thread sends back to the driver.
#[derive(Debug)]
enum Msg {
    Body(RequestId, Result<Vec<u8>, Failure>),
    Chunk(RequestId, u32, Vec<u8>, Sha256Digest),
    End(RequestId, End),
}

/// One request handed to a thread.
struct Job {
    fetch: Fetch,
    base: Base,
    version: String,
    manifest: Option<Arc<Manifest>>,
    timeout: Duration,
    pool: Arc<Pool>,
    abort: Arc<AtomicBool>,
    tx: Sender<Msg>,
}

impl Job {
    fn run(self) {
        let source = self.fetch.source.0;
        let id = self.fetch.id;
        let p = &self.base.prefix;
        let v = &self.version;
        match &self.fetch.resource {
            Resource::Versions | Resource::Manifest => {
                let path = match self.fetch.resource {
                    Resource::Versions => format!("{p}/versions"),
                    _ => format!("{p}/images/{v}/manifest.json"),
                };
                let result = self.request(&path, None).and_then(|(mut conn, head)| {
                    if head.status != 200 {
                        return Err(Failure::Status(head.status));
                    }
                    let body = conn
                        .read_small_body(&head, MAX_DOCUMENT)
                        .map_err(|e| failure_of(&e))?;
                    if !head.close {
                        self.pool.put_conn(source, conn);
                    }
                    Ok(body)
                });
                let _ = self.tx.send(Msg::Body(id, result));
            }
            Resource::Chunks {
                first,
                last,
                start,
                end,
            } => {
                let Some(m) = self.manifest.clone() else {
                    return self.fail(Failure::Malformed);
                };
                let path = format!("{p}/images/{v}/{}", m.file());
                let (mut conn, head) =
                    match self.request(&path, Some((*start, end.saturating_sub(1)))) {
                        Ok(x) => x,
                        Err(f) => return self.fail(f),
                    };
                let outcome = self.chunks(&mut conn, &head, &m, (*first, *last, *start, *end));
                match outcome {
                    Ok((ranged, reusable)) => {
                        // A 200 answer was not read to its end: that connection is done.
                        if reusable {
                            self.pool.put_conn(source, conn);
                        }
                        let _ = self.tx.send(Msg::End(id, End::Complete { ranged }));
                    }
                    Err(Some(f)) => self.fail(f),
                    Err(None) => {}
                }
            }
        }
    }

    /// Sends the request on an idle pooled connection, or a new one. A pooled
    /// connection that fails before an answer (the server closed it while idle) is
    /// retried once on a fresh connection, so it does not count as a source failure.
    fn request(&self, path: &str, range: Option<(u64, u64)>) -> Result<(Conn, Head), Failure> {
        let host = &self.base.authority;
        if let Some(mut conn) = self.pool.take_conn(self.fetch.source.0)
            && let Ok(head) = conn.send(host, path, range)
        {
            return Ok((conn, head));
        }
        let mut conn = Conn::connect(host, self.timeout)?;
        let head = conn.send(host, path, range).map_err(|e| failure_of(&e))?;
        Ok((conn, head))
    }

    fn fail(&self, f: Failure) {
        let msg = match self.fetch.resource {
            Resource::Chunks { .. } => Msg::End(self.fetch.id, End::Failed(f)),
            _ => Msg::Body(self.fetch.id, Err(f)),
        };
        let _ = self.tx.send(msg);
    }

    /// Fetches a span of chunks: `Ok((ranged, reusable connection))`, `Err(None)` when
    /// aborted by the driver.
    fn chunks(
        &self,
        conn: &mut Conn,
        head: &Head,
        m: &Manifest,
        (first, last, start, end): (u32, u32, u64, u64),
    ) -> Result<(bool, bool), Option<Failure>> {
        let ranged = match head.status {
            206 => {
                let expected = format!("bytes {start}-{}/{}", end.saturating_sub(1), m.size());
                if head.content_range.as_deref() != Some(expected.as_str())
                    || head
                        .content_length
                        .is_some_and(|n| n != end.saturating_sub(start))
                    || head.chunked
                {
                    return Err(Some(Failure::WrongRange));
                }
                true
            }
            200 => {
                if head.content_length != Some(m.size()) {
                    return Err(Some(Failure::WrongRange));
                }
                conn.skip(start).map_err(|e| Some(failure_of(&e)))?;
                false
            }
            s => return Err(Some(Failure::Status(s))),
        };
        for index in first..=last {
            if self.abort.load(Ordering::Relaxed) {
                return Err(None);
            }
            let r = m.chunk_range(index);
            let mut buf = self.pool.take_buffer();
            buf.resize((r.end - r.start) as usize, 0);
            if let Err(e) = conn.reader.read_exact(&mut buf) {
                self.pool.put_buffer(buf);
                return Err(Some(failure_of(&e)));
            }
            let digest: Sha256Digest = Sha256::digest(&buf).into();
            if self
                .tx
                .send(Msg::Chunk(self.fetch.id, index, buf, digest))
                .is_err()
            {
                return Err(None);
            }
        }
        Ok((ranged, ranged && !head.close))
    }
}

/// The state directory beside the destination.
#[derive(Debug)]
struct StateDir {
    dest: PathBuf,
    dir: PathBuf,
}

impl StateDir {
    fn new(dest: &Path, version: &str) -> Result<StateDir, Error> {
        fs::create_dir_all(dest).map_err(io_map("create directory", dest))?;
        Ok(StateDir {
            dest: dest.to_path_buf(),
            dir: dest.join(format!(".ssr-download-{version}")),
        })
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.join("manifest.json")
    }

    fn image_path(&self) -> PathBuf {
        self.dir.join("image.part")
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.join("done")
    }

    /// The resumable state, re-verified chunk by chunk; `None` when there is none.
    fn load(&self) -> Result<Option<Resume>, Error> {
        let Ok(bytes) = fs::read(self.manifest_path()) else {
            return Ok(None);
        };
        let Ok(manifest) = Manifest::parse(&bytes) else {
            // Unreadable state is worth nothing: start over.
            let _ = fs::remove_dir_all(&self.dir);
            return Ok(None);
        };
        let journal = fs::read(self.journal_path()).unwrap_or_default();
        let Ok(image) = File::open(self.image_path()) else {
            return Ok(Some(Resume {
                manifest,
                done: Vec::new(),
            }));
        };
        let mut done = Vec::new();
        let mut buf = Vec::new();
        let mut seen = vec![false; manifest.chunk_count() as usize];
        for rec in journal.chunks_exact(4) {
            let index = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
            let Some(expected) = manifest.chunk_sha256(index) else {
                continue;
            };
            if std::mem::replace(&mut seen[index as usize], true) {
                continue;
            }
            let r = manifest.chunk_range(index);
            buf.resize((r.end - r.start) as usize, 0);
            if image.read_exact_at(&mut buf, r.start).is_ok()
                && Sha256::digest(&buf).as_slice() == expected
            {
                done.push(index);
            }
        }
        Ok(Some(Resume { manifest, done }))
    }

    /// Starts a new partial file for `manifest`.
    fn prepare(&self, manifest: &Manifest) -> Result<(), Error> {
        let dir = &self.dir;
        fs::create_dir_all(dir).map_err(io_map("create directory", dir))?;
        let tmp = dir.join("manifest.json.tmp");
        let path = self.manifest_path();
        let write = || -> io::Result<()> {
            let _ = fs::remove_file(self.journal_path());
            let image = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(self.image_path())?;
            image.set_len(manifest.size())?;
            let mut f = File::create(&tmp)?;
            f.write_all(&manifest.to_json())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()
        };
        write().map_err(io_map("prepare", &path))
    }
}

/// The whole-file SHA-256, advanced over the verified prefix as chunks arrive.
#[derive(Debug, Default)]
struct FileHasher {
    next: u32,
    sha: Sha256,
}

struct Driver {
    version: String,
    bases: Vec<Base>,
    request_timeout: Duration,
    pool: Arc<Pool>,
    aborts: BTreeMap<RequestId, Arc<AtomicBool>>,
    state: StateDir,
    image: Option<(File, File, Arc<Manifest>)>,
    hasher: FileHasher,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Driver {
    fn open_image(&mut self, m: &Manifest, fresh: bool) -> Result<(), Error> {
        if fresh {
            self.state.prepare(m)?;
        }
        let image_path = self.state.image_path();
        let image = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&image_path)
            .map_err(io_map("open", &image_path))?;
        image
            .set_len(m.size())
            .map_err(io_map("size", &image_path))?;
        let jpath = self.state.journal_path();
        let journal = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&jpath)
            .map_err(io_map("open", &jpath))?;
        self.image = Some((image, journal, Arc::new(m.clone())));
        self.hasher = FileHasher::default();
        Ok(())
    }

    fn run<R: rand_core::Rng>(
        &mut self,
        dl: &mut Download<R>,
        observer: &mut dyn FnMut(Report<'_>),
    ) -> Result<(), Error> {
        let (tx, rx): (Sender<Msg>, Receiver<Msg>) = mpsc::channel();
        let mut last_progress = Instant::now();
        loop {
            while let Some(action) = dl.poll_action() {
                self.act(dl, action, &tx)?;
            }
            while let Some(event) = dl.poll_event() {
                observer(Report::Event(&event));
            }
            if dl.is_finished() {
                for flag in self.aborts.values() {
                    flag.store(true, Ordering::Relaxed);
                }
                return Ok(());
            }
            let now = Instant::now();
            if now.duration_since(last_progress) >= PROGRESS_EVERY {
                last_progress = now;
                observer(Report::Progress(dl.progress(now)));
            }
            let wake = dl.poll_timeout();
            if wake.is_some_and(|t| t <= now) {
                dl.handle_timeout(now);
                continue;
            }
            let wait = wake.map_or(PROGRESS_EVERY, |t| (t - now).min(PROGRESS_EVERY));
            match rx.recv_timeout(wait) {
                Ok(msg) => self.deliver(dl, msg)?,
                Err(RecvTimeoutError::Timeout) => dl.handle_timeout(Instant::now()),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(io_err("download", &self.state.dest, "request threads gone"));
                }
            }
        }
    }

    fn act<R: rand_core::Rng>(
        &mut self,
        dl: &mut Download<R>,
        action: Action,
        tx: &Sender<Msg>,
    ) -> Result<(), Error> {
        match action {
            Action::Prepare(m) => self.open_image(&m, true),
            Action::VerifyFile => {
                let digest = self.catch_up(dl, true)?;
                if let Some(d) = digest {
                    dl.handle_file_digest(&d, Instant::now());
                }
                Ok(())
            }
            Action::Fetch(fetch) => {
                let abort = Arc::new(AtomicBool::new(false));
                self.aborts.insert(fetch.id, Arc::clone(&abort));
                let Some(base) = self.bases.get(fetch.source.0).cloned() else {
                    return Ok(());
                };
                let job = Job {
                    fetch,
                    base,
                    version: self.version.clone(),
                    manifest: self.image.as_ref().map(|(_, _, m)| Arc::clone(m)),
                    timeout: self.request_timeout,
                    pool: Arc::clone(&self.pool),
                    abort,
                    tx: tx.clone(),
                };
                thread::Builder::new()
                    .name("ssr-download-req".into())
                    .spawn(move || job.run())
                    .map(|_| ())
                    .map_err(io_map("spawn", &self.state.dest))
            }
        }
    }

    fn deliver<R: rand_core::Rng>(&mut self, dl: &mut Download<R>, msg: Msg) -> Result<(), Error> {
        let now = Instant::now();
        match msg {
            Msg::Body(id, body) => {
                self.aborts.remove(&id);
                dl.handle_body(id, body.as_deref().map_err(|f| *f), now);
            }
            Msg::End(id, end) => {
                self.aborts.remove(&id);
                dl.handle_end(id, end, now);
            }
            Msg::Chunk(id, index, buf, digest) => {
                match dl.handle_chunk(id, index, &digest, now) {
                    ChunkVerdict::Accept => self.store(dl, index, &buf)?,
                    ChunkVerdict::Reject => {
                        if let Some(flag) = self.aborts.remove(&id) {
                            flag.store(true, Ordering::Relaxed);
                        }
                    }
                }
                self.pool.put_buffer(buf);
            }
        }
        Ok(())
    }

    /// Writes an accepted chunk, journals it, and advances the whole-file hash.
    fn store<R: rand_core::Rng>(
        &mut self,
        dl: &Download<R>,
        index: u32,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let path = self.state.image_path();
        let Some((image, journal, m)) = &mut self.image else {
            return Err(io_err("write", &path, "no partial file"));
        };
        let offset = m.chunk_range(index).start;
        image
            .write_all_at(bytes, offset)
            .map_err(io_map("write", &path))?;
        journal
            .write_all(&index.to_le_bytes())
            .map_err(io_map("journal", &self.state.journal_path()))?;
        if self.hasher.next == index {
            self.hasher.sha.update(bytes);
            self.hasher.next += 1;
        }
        self.catch_up(dl, false).map(|_| ())
    }

    /// Hashes verified chunks that follow the hashed prefix, reading them back; with
    /// `finish`, returns the digest once the whole file is hashed.
    fn catch_up<R: rand_core::Rng>(
        &mut self,
        dl: &Download<R>,
        finish: bool,
    ) -> Result<Option<Sha256Digest>, Error> {
        let path = self.state.image_path();
        let Some((image, _, m)) = &self.image else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        while self.hasher.next < m.chunk_count() && dl.is_chunk_done(self.hasher.next) {
            let r = m.chunk_range(self.hasher.next);
            buf.resize((r.end - r.start) as usize, 0);
            image
                .read_exact_at(&mut buf, r.start)
                .map_err(io_map("read", &path))?;
            self.hasher.sha.update(&buf);
            self.hasher.next += 1;
        }
        if finish && self.hasher.next == m.chunk_count() {
            let sha = std::mem::take(&mut self.hasher.sha);
            self.hasher.next = 0;
            return Ok(Some(sha.finalize().into()));
        }
        Ok(None)
    }

    /// Moves the verified image into place.
    fn finish(&mut self, m: &Manifest) -> Result<PathBuf, Error> {
        let part = self.state.image_path();
        if let Some((image, _, _)) = self.image.take() {
            image.sync_all().map_err(io_map("sync", &part))?;
        }
        let target = self.state.dest.join(m.file());
        fs::rename(&part, &target).map_err(io_map("rename", &target))?;
        File::open(&self.state.dest)
            .and_then(|d| d.sync_all())
            .map_err(io_map("sync", &self.state.dest))?;
        let _ = fs::remove_dir_all(&self.state.dir);
        Ok(target)
    }
}
