//! The HTTP driver (feature `http`): runs a [`Download`] against real servers with
//! HTTP/1.1 `GET` and `Range` through the workspace's one HTTP client (`ssr-http`:
//! ureq over rustls; `http://` and `https://` sources), and keeps the resumable
//! partial file.
//!
//! One short-lived thread performs each request; connections are kept alive and
//! reused by the client's pool; chunk buffers are recycled. Manifests are checked
//! against the [`ManifestTrust`] (signed by a trusted release key) on the request
//! thread; the state machine only ever sees manifests that passed. Chunk bytes are hashed on the
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

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
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

use crate::wire::{ChunkDigest, MAX_DOCUMENT, Sha256Digest};
use crate::{
    Action, ChunkVerdict, Config, Download, End, Error, Event, Failure, Fetch, Manifest,
    ManifestTrust, Progress, ReleaseKey, RequestId, Resource, Resume, Settings, SourceConfig,
    SourceId, Status,
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
    /// Why a request to a source failed, when there is more to say than the state
    /// machine's [`Failure`] (a TLS refusal, a refused manifest signature).
    SourceError {
        /// The source.
        source: SourceId,
        /// One line for the operator.
        reason: String,
    },
}

/// Transport and trust of a download.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// PEM CA certificates that `https://` sources must chain to (`None`: https refused).
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Server certificate pins, checked after the chain.
    pub pins: Vec<ssr_http::Pin>,
    /// Which manifests are accepted (default: signed by no one, so every manifest is
    /// refused: configure release keys).
    pub trust: ManifestTrust,
    /// Also hash the assembled file as a whole and compare it with the manifest's
    /// `sha256` (a second pass over every byte). Off by default: every chunk's SHA-256
    /// is checked against the authenticated manifest, which binds every byte already
    /// (see the README's speed section).
    pub whole_file_sha256: bool,
}

impl Options {
    /// Reads the files `config` names (`[tls]` CA bundle, `[manifest]` release keys)
    /// and parses the pins.
    pub fn from_config(config: &Config) -> Result<Options, Error> {
        let read = |field: &'static str, path: &Path| {
            fs::read(path).map_err(|e| Error::InvalidConfig {
                field,
                reason: format!("{}: {e}", path.display()),
            })
        };
        let ca_bundle_pem = match &config.tls.ca_bundle {
            Some(p) => Some(read("tls.ca-bundle", p)?),
            None => None,
        };
        let pins = config
            .tls
            .pins
            .iter()
            .map(|p| {
                p.parse()
                    .map_err(|e: ssr_http::Error| Error::InvalidConfig {
                        field: "tls.pins",
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut keys = Vec::new();
        for path in &config.trust.release_keys {
            let pem = read("manifest.release-keys", path)?;
            let key = ReleaseKey::from_pem(&String::from_utf8_lossy(&pem)).map_err(|e| {
                Error::InvalidConfig {
                    field: "manifest.release-keys",
                    reason: format!("{}: {e}", path.display()),
                }
            })?;
            keys.push(key);
        }
        Ok(Options {
            ca_bundle_pem,
            pins,
            trust: ManifestTrust {
                keys,
                allow_unsigned: config.trust.allow_unsigned,
                sha256_chunks_only: config.trust.sha256_chunks_only,
            },
            whole_file_sha256: config.trust.whole_file_sha256,
        })
    }
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
    /// The verified image was already in place (recorded by an earlier run and
    /// unchanged, or re-hashed): nothing was fetched.
    pub already_present: bool,
}

/// The partial file and its journal are fsynced after this many bytes written ...
pub const SYNC_BYTES: u64 = 64 << 20;
/// ... or this long after the last sync, whichever comes first: a power loss loses at
/// most that much progress (the journal is re-verified against the file on restart).
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// Bytes written to the partial file since its last fsync, and when that was.
#[derive(Debug)]
struct Unsynced {
    bytes: u64,
    since: Instant,
}

impl Unsynced {
    fn new(now: Instant) -> Self {
        Unsynced {
            bytes: 0,
            since: now,
        }
    }

    /// Records `n` bytes written at `now`; true when the file and journal are to be
    /// fsynced now ([`SYNC_BYTES`] written or [`SYNC_INTERVAL`] passed since the last
    /// sync), which restarts the count.
    fn wrote(&mut self, n: u64, now: Instant) -> bool {
        self.bytes += n;
        let due = self.bytes >= SYNC_BYTES || now.duration_since(self.since) >= SYNC_INTERVAL;
        if due {
            *self = Unsynced::new(now);
        }
        due
    }
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
    let options = Options::from_config(config)?;
    download_with(
        &config.usable_sources(),
        config.settings,
        &options,
        version,
        dest,
        observer,
    )
}

/// [`download_with`] with the default [`Options`]: no `https://` trust and no trusted
/// release key, so every manifest is refused (fail closed). Pass [`Options`] to
/// [`download_with`] instead.
pub fn download_from(
    sources: &[SourceConfig],
    settings: Settings,
    version: &str,
    dest: &Path,
    observer: &mut dyn FnMut(Report<'_>),
) -> Result<Downloaded, Error> {
    download_with(
        sources,
        settings,
        &Options::default(),
        version,
        dest,
        observer,
    )
}

/// [`download`] with an explicit source list (priority order), settings and options.
pub fn download_with(
    sources: &[SourceConfig],
    settings: Settings,
    options: &Options,
    version: &str,
    dest: &Path,
    observer: &mut dyn FnMut(Report<'_>),
) -> Result<Downloaded, Error> {
    crate::wire::check_version(version)?;
    let bases = sources
        .iter()
        .map(|s| base_url(&s.url))
        .collect::<Result<Vec<_>, _>>()?;
    let client = ssr_http::Client::new(&ssr_http::ClientConfig {
        ca_bundle_pem: options.ca_bundle_pem.clone(),
        pins: options.pins.clone(),
        max_redirects: 0,
        connect_timeout: settings.health.request_timeout,
        read_timeout: settings.health.request_timeout,
        max_idle_per_host: settings.parallel as usize + 2,
        user_agent: "ssr-download".into(),
    })
    .map_err(|e| Error::InvalidConfig {
        field: "tls",
        reason: e.to_string(),
    })?;
    let state = StateDir::new(dest, version)?;
    // A placed image is trusted again only under today's chunk-hash policy.
    let allowed = |d: &Downloaded| options.trust.allows(d.manifest.chunk_hash());
    if let Some(done) = state.already_verified().filter(allowed) {
        return Ok(done);
    }
    let resume = state.load()?;
    let resumed_chunks = resume.as_ref().map_or(0, |r| r.done.len() as u32);
    let kinds: Vec<_> = sources.iter().map(|s| s.kind).collect();
    let now = Instant::now();
    let mut dl = Download::new(settings, version, &kinds, resume, UnwrapErr(SysRng), now)?;
    // The overall deadline and the attempt count survive a restart.
    match state.load_clock() {
        Some(clock) => dl.restore_clock(clock.spent(), clock.failed_attempts, now),
        None => state.save_clock(&Clock {
            started_unix: unix_now(),
            failed_attempts: 0,
        })?,
    }
    let mut driver = Driver {
        version: version.to_string(),
        bases,
        client,
        trust: Arc::new(options.trust.clone()),
        request_timeout: settings.health.request_timeout,
        min_rate: settings.health.min_rate,
        pool: Arc::new(Pool::default()),
        aborts: BTreeMap::new(),
        state,
        image: None,
        hasher: FileHasher::default(),
        whole_file: options.whole_file_sha256,
        unsynced: Unsynced::new(Instant::now()),
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
                already_present: false,
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

/// A source's base URL without a trailing slash (`http://` or `https://`).
fn base_url(url: &str) -> Result<String, Error> {
    let bad = |reason: &str| Error::InvalidConfig {
        field: "source.url",
        reason: format!("{url:?}: {reason}"),
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("only http:// and https:// are supported"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty()
        || authority.contains('@')
        || !rest.is_ascii()
        || rest.contains(['?', '#', ' '])
    {
        return Err(bad("expected http[s]://host[:port][/path]"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Spare chunk buffers.
#[derive(Debug, Default)]
struct Pool {
    buffers: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
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

fn failure_of(e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Failure::TimedOut,
        io::ErrorKind::UnexpectedEof => Failure::ShortBody,
        _ => Failure::Connect,
    }
}

/// A client error as the state machine's failure, and a line for the operator when
/// the failure alone would hide the cause.
fn failure_of_http(e: &ssr_http::Error) -> (Failure, Option<String>) {
    match e {
        ssr_http::Error::TimedOut { .. } => (Failure::TimedOut, None),
        ssr_http::Error::Tls { .. } | ssr_http::Error::Url { .. } => {
            (Failure::Connect, Some(e.to_string()))
        }
        ssr_http::Error::TooLarge { .. } => (Failure::Malformed, None),
        ssr_http::Error::Protocol { reason, .. } if reason.starts_with("body ended") => {
            (Failure::ShortBody, None)
        }
        _ => (Failure::Connect, None),
    }
}

/// What a request thread sends back to the driver.
#[derive(Debug)]
enum Msg {
    Body(RequestId, Result<Vec<u8>, Failure>),
    Detail(SourceId, String),
    Chunk(RequestId, u32, Vec<u8>, ChunkDigest),
    End(RequestId, End),
}

/// One request handed to a thread.
struct Job {
    fetch: Fetch,
    base: String,
    client: ssr_http::Client,
    trust: Arc<ManifestTrust>,
    version: String,
    manifest: Option<Arc<Manifest>>,
    timeout: Duration,
    min_rate: u64,
    pool: Arc<Pool>,
    abort: Arc<AtomicBool>,
    tx: Sender<Msg>,
}

impl Job {
    fn run(self) {
        let id = self.fetch.id;
        let p = &self.base;
        let v = &self.version;
        match &self.fetch.resource {
            Resource::Versions | Resource::Manifest => {
                let manifest = matches!(self.fetch.resource, Resource::Manifest);
                let url = match manifest {
                    false => format!("{p}/versions"),
                    true => format!("{p}/images/{v}/manifest.json"),
                };
                let result = self.document(&url).and_then(|body| {
                    if !manifest {
                        return Ok(body);
                    }
                    // Only manifests the trust accepts reach the state machine, in
                    // their canonical (unsigned) encoding.
                    match crate::verify_manifest(&body, &self.trust) {
                        Ok(m) => Ok(m.to_json()),
                        Err(e) => {
                            self.detail(format!("{url}: {e}"));
                            Err(Failure::Malformed)
                        }
                    }
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
                let url = format!("{p}/images/{v}/{}", m.file());
                let started = Instant::now();
                let range = *start..=end.saturating_sub(1);
                let response = match self.client.get(&url, Some(range), None) {
                    Ok(r) => r,
                    Err(e) => return self.fail_http(&e),
                };
                let outcome = self.chunks(response, &m, (*first, *last, *start, *end), started);
                match outcome {
                    Ok(ranged) => {
                        let _ = self.tx.send(Msg::End(id, End::Complete { ranged }));
                    }
                    Err(Some(f)) => self.fail(f),
                    Err(None) => {}
                }
            }
        }
    }

    /// A small document (versions, manifest): `200` and at most `MAX_DOCUMENT` bytes.
    fn document(&self, url: &str) -> Result<Vec<u8>, Failure> {
        let response = self
            .client
            .get(url, None, None)
            .map_err(|e| self.http_failure(&e))?;
        if response.status() != 200 {
            return Err(Failure::Status(response.status()));
        }
        response
            .read_limited(MAX_DOCUMENT as u64)
            .map_err(|e| self.http_failure(&e))
    }

    fn detail(&self, reason: String) {
        let _ = self.tx.send(Msg::Detail(self.fetch.source, reason));
    }

    fn http_failure(&self, e: &ssr_http::Error) -> Failure {
        let (f, detail) = failure_of_http(e);
        if let Some(d) = detail {
            self.detail(d);
        }
        f
    }

    fn fail_http(&self, e: &ssr_http::Error) {
        let f = self.http_failure(e);
        self.fail(f);
    }

    fn fail(&self, f: Failure) {
        let msg = match self.fetch.resource {
            Resource::Chunks { .. } => Msg::End(self.fetch.id, End::Failed(f)),
            _ => Msg::Body(self.fetch.id, Err(f)),
        };
        let _ = self.tx.send(msg);
    }

    /// Fetches a span of chunks: `Ok(ranged)`, `Err(None)` when aborted by the driver.
    fn chunks(
        &self,
        mut response: ssr_http::Response,
        m: &Manifest,
        (first, last, start, end): (u32, u32, u64, u64),
        started: Instant,
    ) -> Result<bool, Option<Failure>> {
        let ranged = match response.status() {
            206 => {
                let expected = format!("bytes {start}-{}/{}", end.saturating_sub(1), m.size());
                if response.content_range() != Some(expected.as_str())
                    || response.content_length() != Some(end.saturating_sub(start))
                {
                    return Err(Some(Failure::WrongRange));
                }
                true
            }
            200 => {
                if response.content_length() != Some(m.size()) {
                    return Err(Some(Failure::WrongRange));
                }
                let skipped = io::copy(&mut (&mut response).take(start), &mut io::sink())
                    .map_err(|e| Some(failure_of(&e)))?;
                if skipped != start {
                    return Err(Some(Failure::ShortBody));
                }
                false
            }
            s => return Err(Some(Failure::Status(s))),
        };
        let mut progress = Progressing {
            started,
            received: 0,
            min_rate: self.min_rate,
            grace: self.timeout,
        };
        for index in first..=last {
            if self.abort.load(Ordering::Relaxed) {
                return Err(None);
            }
            let r = m.chunk_range(index);
            let mut buf = self.pool.take_buffer();
            buf.resize((r.end - r.start) as usize, 0);
            if let Err(f) = self.read_chunk(&mut response, &mut buf, &mut progress) {
                self.pool.put_buffer(buf);
                return Err(f);
            }
            let digest = m.chunk_hash().digest(&buf);
            if self
                .tx
                .send(Msg::Chunk(self.fetch.id, index, buf, digest))
                .is_err()
            {
                return Err(None);
            }
        }
        Ok(ranged)
    }

    /// Fills `buf` from the body, cutting the request off as soon as it falls behind
    /// the rate floor (see [`Progressing`]) or the driver aborts it.
    fn read_chunk(
        &self,
        response: &mut ssr_http::Response,
        buf: &mut [u8],
        progress: &mut Progressing,
    ) -> Result<(), Option<Failure>> {
        let mut got = 0;
        while got < buf.len() {
            let n = match response.read(&mut buf[got..]) {
                Ok(0) => return Err(Some(Failure::ShortBody)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Some(failure_of(&e))),
            };
            got += n;
            progress.received += n as u64;
            if progress.behind(Instant::now()) {
                return Err(Some(Failure::TooSlow));
            }
            if self.abort.load(Ordering::Relaxed) {
                return Err(None);
            }
        }
        Ok(())
    }
}

/// The per-request progress deadline: a request may lag the `min-rate` floor by at
/// most `request-timeout`'s worth of time; once `received < min_rate × (elapsed −
/// request_timeout)` it is cut off while it runs (a source that trickles is not
/// waited for until its request ends). A read that moves nothing for
/// `request-timeout` fails in the client.
#[derive(Debug)]
struct Progressing {
    started: Instant,
    received: u64,
    min_rate: u64,
    grace: Duration,
}

impl Progressing {
    fn behind(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.started);
        let Some(late) = elapsed.checked_sub(self.grace) else {
            return false;
        };
        let floor = (self.min_rate as f64 * late.as_secs_f64()) as u64;
        self.min_rate > 0 && self.received < floor
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

    fn clock_path(&self) -> PathBuf {
        self.dir.join("clock")
    }

    /// `{dest}/.ssr-download-{version}.verified`: what the last successful run put in
    /// place (survives the state directory).
    fn record_path(&self) -> PathBuf {
        let mut name = self.dir.as_os_str().to_owned();
        name.push(".verified");
        PathBuf::from(name)
    }

    /// The clock of an earlier run of this download, if any (an unreadable one is
    /// ignored: the download then starts a new deadline).
    fn load_clock(&self) -> Option<Clock> {
        Clock::parse(&fs::read(self.clock_path()).ok()?)
    }

    fn save_clock(&self, clock: &Clock) -> Result<(), Error> {
        fs::create_dir_all(&self.dir).map_err(io_map("create directory", &self.dir))?;
        let path = self.clock_path();
        let tmp = self.dir.join("clock.tmp");
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(clock.encode().as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(io_map("write", &path))
    }

    fn remove_clock(&self) {
        let _ = fs::remove_file(self.clock_path());
        // Nothing else in it (no partial file): leave no empty directory behind.
        let _ = fs::remove_dir(&self.dir);
    }

    /// Records the verified image `target` of `m`: its manifest, size and mtime.
    fn record_verified(&self, m: &Manifest, target: &Path) -> Result<(), Error> {
        let meta = fs::metadata(target).map_err(io_map("stat", target))?;
        let record = Verified {
            manifest: String::from_utf8_lossy(&m.to_json()).into_owned(),
            size: meta.len(),
            mtime_ns: mtime_ns(&meta),
        };
        let path = self.record_path();
        let tmp = self.dir.join("verified.tmp");
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&record).unwrap_or_default())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(io_map("write", &path))
    }

    /// The image of an earlier successful run, if it is still in place: same size and
    /// mtime as recorded, or else re-hashed and equal to the manifest's SHA-256.
    fn already_verified(&self) -> Option<Downloaded> {
        let record: Verified = serde_json::from_slice(&fs::read(self.record_path()).ok()?).ok()?;
        let manifest = Manifest::parse(record.manifest.as_bytes()).ok()?;
        let path = self.dest.join(manifest.file());
        let meta = fs::metadata(&path).ok()?;
        if meta.len() != manifest.size() {
            return None;
        }
        if meta.len() != record.size || mtime_ns(&meta) != record.mtime_ns {
            let mut sha = Sha256::new();
            let mut file = File::open(&path).ok()?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => sha.update(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return None,
                }
            }
            if sha.finalize().as_slice() != manifest.sha256() {
                return None;
            }
        }
        Some(Downloaded {
            path,
            manifest,
            resumed_chunks: 0,
            already_present: true,
        })
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
            let Some(expected) = manifest.chunk_digest(index) else {
                continue;
            };
            if std::mem::replace(&mut seen[index as usize], true) {
                continue;
            }
            let r = manifest.chunk_range(index);
            buf.resize((r.end - r.start) as usize, 0);
            if image.read_exact_at(&mut buf, r.start).is_ok()
                && manifest.chunk_hash().digest(&buf) == *expected
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

/// `{state}/clock`: when this download first started (Unix seconds, wall clock, so it
/// survives a reboot) and how many attempts have failed. One line:
/// `ssr-download-clock 1 <started> <failed>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Clock {
    started_unix: u64,
    failed_attempts: u32,
}

impl Clock {
    fn encode(&self) -> String {
        format!(
            "ssr-download-clock 1 {} {}\n",
            self.started_unix, self.failed_attempts
        )
    }

    fn parse(bytes: &[u8]) -> Option<Clock> {
        let text = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
        let mut parts = text.split(' ');
        let (Some("ssr-download-clock"), Some("1"), Some(started), Some(failed), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        Some(Clock {
            started_unix: started.parse().ok()?,
            failed_attempts: failed.parse().ok()?,
        })
    }

    /// Time since the download started (0 if the wall clock went back).
    fn spent(&self) -> Duration {
        Duration::from_secs(unix_now().saturating_sub(self.started_unix))
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn mtime_ns(meta: &fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// `{dest}/.ssr-download-{version}.verified` (JSON).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Verified {
    manifest: String,
    size: u64,
    mtime_ns: i64,
}

/// The whole-file SHA-256, advanced over the verified prefix as chunks arrive.
#[derive(Debug, Default)]
struct FileHasher {
    next: u32,
    sha: Sha256,
}

struct Driver {
    version: String,
    bases: Vec<String>,
    client: ssr_http::Client,
    trust: Arc<ManifestTrust>,
    request_timeout: Duration,
    min_rate: u64,
    pool: Arc<Pool>,
    aborts: BTreeMap<RequestId, Arc<AtomicBool>>,
    state: StateDir,
    image: Option<(File, File, Arc<Manifest>)>,
    hasher: FileHasher,
    /// Hash the whole file too ([`Options::whole_file_sha256`]).
    whole_file: bool,
    /// What was written since the last fsync.
    unsynced: Unsynced,
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
                match &event {
                    Event::AttemptFailed {
                        attempt,
                        retry_in: Some(_),
                        ..
                    } => {
                        if let Some(mut clock) = self.state.load_clock() {
                            clock.failed_attempts = *attempt;
                            self.state.save_clock(&clock)?;
                        }
                    }
                    // A download that ended (either way) leaves no clock: running it
                    // again is a new download with a new deadline.
                    Event::Failed(_) | Event::Succeeded => self.state.remove_clock(),
                    _ => {}
                }
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
                Ok(Msg::Detail(source, reason)) => {
                    observer(Report::SourceError { source, reason });
                }
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
            Action::VerifyFile if !self.whole_file => {
                // Every chunk matched its digest in the authenticated manifest: the
                // file is the manifest's file, whose digest it names.
                if let Some(m) = dl.manifest().map(|m| *m.sha256()) {
                    dl.handle_file_digest(&m, Instant::now());
                }
                Ok(())
            }
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
                    client: self.client.clone(),
                    trust: Arc::clone(&self.trust),
                    version: self.version.clone(),
                    manifest: self.image.as_ref().map(|(_, _, m)| Arc::clone(m)),
                    timeout: self.request_timeout,
                    min_rate: self.min_rate,
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
            Msg::Detail(..) => {}
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
        if self.unsynced.wrote(bytes.len() as u64, Instant::now()) {
            image.sync_data().map_err(io_map("sync", &path))?;
            journal
                .sync_data()
                .map_err(io_map("sync", &self.state.journal_path()))?;
        }
        if !self.whole_file {
            return Ok(());
        }
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
        self.state.record_verified(m, &target)?;
        File::open(&self.state.dest)
            .and_then(|d| d.sync_all())
            .map_err(io_map("sync", &self.state.dest))?;
        let _ = fs::remove_dir_all(&self.state.dir);
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partial_file_is_synced_every_64_mib_or_2_s_whichever_comes_first() {
        let t0 = Instant::now();
        let mut u = Unsynced::new(t0);
        let chunk = 4 << 20;
        // 15 chunks of 4 MiB within a second: 60 MiB, no sync; the 16th reaches 64 MiB.
        for i in 1..=15 {
            assert!(
                !u.wrote(chunk, t0 + Duration::from_millis(i * 60)),
                "chunk {i}"
            );
        }
        assert!(u.wrote(chunk, t0 + Duration::from_secs(1)));
        // The count restarted at that sync: a small write 1.9 s later is not due, one
        // 2 s after the sync is.
        let synced = t0 + Duration::from_secs(1);
        assert!(!u.wrote(1, synced + Duration::from_millis(1900)));
        assert!(u.wrote(1, synced + SYNC_INTERVAL));
        // And again 64 MiB in one write.
        assert!(u.wrote(SYNC_BYTES, synced + SYNC_INTERVAL));
    }
}
