//! The download state machine: source choice, health window, probing, resume
//! bookkeeping, retries inside the overall timeout, HA sequencing. No I/O: time is an
//! argument, jitter comes from the caller's RNG.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::{HaMode, Settings, SourceKind, retry_delay};
use crate::wire::{ChunkDigest, Manifest, Sha256Digest, check_version, parse_versions};
use crate::{AttemptFailure, Error};

/// Index of a source in the list given to [`Download::new`] (priority order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId(pub usize);

/// Identifies one request handed out by [`Download::poll_action`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// What to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// `GET {base}/versions`; answer with [`Download::handle_body`].
    Versions,
    /// `GET {base}/images/{version}/manifest.json`; answer with [`Download::handle_body`].
    Manifest,
    /// `GET {base}/images/{version}/{file}` with `Range: bytes={start}-{end-1}` covering
    /// chunks `first..=last`. Report every chunk in order with
    /// [`Download::handle_chunk`], then the end with [`Download::handle_end`].
    Chunks {
        /// First chunk index.
        first: u32,
        /// Last chunk index (inclusive).
        last: u32,
        /// The byte range of those chunks in the image.
        start: u64,
        /// End of the byte range (exclusive).
        end: u64,
    },
}

/// One request the caller must perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// Quote it in the answer.
    pub id: RequestId,
    /// Where to fetch from.
    pub source: SourceId,
    /// What to fetch.
    pub resource: Resource,
}

/// What the caller must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Perform this request.
    Fetch(Fetch),
    /// A new image: record the manifest durably and (re)create an empty partial file
    /// of `manifest.size()` bytes; any earlier partial data is void.
    Prepare(Manifest),
    /// Every chunk is in: compute the whole file's SHA-256 and pass it to
    /// [`Download::handle_file_digest`].
    VerifyFile,
}

/// Why a request failed. Each counts as one failure in the source's health window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Could not connect, or the connection broke before an answer.
    Connect,
    /// An HTTP status other than 200/206 (5xx, 404, ...).
    Status(u16),
    /// The body ended before the requested bytes.
    ShortBody,
    /// `Content-Range` or `Content-Length` not the requested bytes.
    WrongRange,
    /// A versions list or manifest that does not parse (or names another version).
    Malformed,
    /// A chunk whose SHA-256 is not the manifest's.
    BadChunk,
    /// Connect or read took longer than the request timeout.
    TimedOut,
    /// The request completed slower than the `min-rate` floor (bytes are kept).
    TooSlow,
}

/// The answer to [`Download::handle_chunk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkVerdict {
    /// Write the chunk at its offset and record it as done.
    Accept,
    /// Drop the chunk and abandon the request (it has been counted as failed).
    Reject,
}

/// How a chunk request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Every chunk was reported. `ranged` is false when the server ignored `Range`
    /// (answered 200 with the whole file); later requests to it then cover every
    /// missing chunk in one go, so the file is read once, not once per chunk.
    Complete {
        /// The server honoured `Range`.
        ranged: bool,
    },
    /// The request failed after the chunks reported so far.
    Failed(Failure),
}

/// Something that happened, for the operator's log or progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A sequenced second node saw its peer list the version.
    PeerReady,
    /// A sequenced second node gave up waiting for a peer that stopped answering.
    PeerFailed,
    /// Version discovery finished: these sources have the version, in priority order.
    Discovered {
        /// Sources with the version.
        sources: Vec<SourceId>,
    },
    /// Chunks now come from this source.
    SourceSelected {
        /// The source.
        source: SourceId,
    },
    /// The window rule marked a source unavailable.
    SourceUnavailable {
        /// The source.
        source: SourceId,
        /// Failures in its window.
        failures: u32,
    },
    /// A probe after the cool-down succeeded.
    SourceRestored {
        /// The source.
        source: SourceId,
    },
    /// The source serves another manifest; its bytes are never used.
    ManifestMismatch {
        /// The source.
        source: SourceId,
    },
    /// A chunk failed its hash and will be fetched again.
    ChunkRejected {
        /// The source that sent it.
        source: SourceId,
        /// The chunk.
        index: u32,
    },
    /// The resumed partial file belongs to a manifest no source serves any more.
    PartialDiscarded,
    /// An attempt failed; `retry_in` is `None` when no retry follows.
    AttemptFailed {
        /// The attempt number (from 1).
        attempt: u32,
        /// Why.
        reason: AttemptFailure,
        /// Delay before the next attempt.
        retry_in: Option<Duration>,
    },
    /// The file is complete and verified.
    Succeeded,
    /// The download failed for good.
    Failed(Error),
}

/// Where the download stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// A sequenced second node waits for its peer.
    WaitingForPeer,
    /// Asking every source for its versions.
    Discovering,
    /// Fetching chunks.
    Fetching,
    /// Waiting for the whole-file digest.
    Verifying,
    /// Waiting before the next attempt.
    RetryWait {
        /// When the next attempt starts.
        until: Instant,
    },
    /// Done: the file is verified.
    Succeeded,
    /// Failed for good.
    Failed(Error),
}

/// What a restarted download already has: the manifest it was fetching and the
/// chunks recorded (and re-checked against their hashes) as done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The manifest of the partial file.
    pub manifest: Manifest,
    /// Chunks whose bytes in the partial file match their hash.
    pub done: Vec<u32>,
}

/// A progress snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Verified bytes.
    pub done_bytes: u64,
    /// Image size, once a manifest is known.
    pub total_bytes: Option<u64>,
    /// Recent rate (bytes per second over the last few seconds).
    pub bytes_per_sec: u64,
    /// Time left at the recent rate.
    pub eta: Option<Duration>,
    /// The source chunks come from.
    pub source: Option<SourceId>,
    /// The attempt number (from 1).
    pub attempt: u32,
}

/// The last `size` request outcomes of a source.
#[derive(Debug, Clone)]
struct Window {
    outcomes: VecDeque<bool>,
    size: usize,
}

impl Window {
    fn new(size: u32) -> Self {
        Self {
            outcomes: VecDeque::new(),
            size: size.max(1) as usize,
        }
    }

    fn record(&mut self, ok: bool) {
        self.outcomes.push_back(ok);
        while self.outcomes.len() > self.size {
            self.outcomes.pop_front();
        }
    }

    fn failures(&self) -> u32 {
        self.outcomes.iter().filter(|ok| !**ok).count() as u32
    }

    /// More than half of the window's size failed.
    fn tripped(&self) -> bool {
        self.failures() as usize * 2 > self.size
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Avail {
    Up,
    Down { until: Instant },
    ProbeDue,
    Probing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    Unknown,
    Pending,
    Same,
    Differs,
}

#[derive(Debug, Clone)]
struct Src {
    kind: SourceKind,
    health: Window,
    avail: Avail,
    has_version: Option<bool>,
    manifest: Match,
    ranged: bool,
    in_flight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Missing,
    InFlight,
    Done,
}

#[derive(Debug, Clone, Copy)]
enum ReqKind {
    Versions,
    Manifest,
    Chunks { first: u32, last: u32, next: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Req {
    source: usize,
    kind: ReqKind,
    issued: Instant,
    probe: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    WaitingForPeer { next_poll: Option<Instant> },
    Discovering,
    Fetching,
    Verifying,
    RetryWait { until: Instant },
    Done,
    Failed(Error),
}

/// How far back the rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// One download of one version from several sources.
///
/// Inputs: [`handle_body`](Self::handle_body), [`handle_chunk`](Self::handle_chunk),
/// [`handle_end`](Self::handle_end), [`handle_file_digest`](Self::handle_file_digest),
/// [`handle_timeout`](Self::handle_timeout). Outputs: drain
/// [`poll_action`](Self::poll_action) (requests to perform) and
/// [`poll_event`](Self::poll_event) after every input, then sleep until
/// [`poll_timeout`](Self::poll_timeout) or the next answer. Extra `handle_timeout`
/// calls are harmless; answers to requests the machine no longer waits for are ignored.
#[derive(Debug)]
pub struct Download<R> {
    settings: Settings,
    version: String,
    rng: R,
    sources: Vec<Src>,
    manifest: Option<Manifest>,
    from_resume: bool,
    chunks: Vec<Slot>,
    done_count: u32,
    done_bytes: u64,
    requests: BTreeMap<u64, Req>,
    next_id: u64,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    phase: Phase,
    attempt: u32,
    deadline: Option<Instant>,
    active: Option<usize>,
    samples: VecDeque<(Instant, u64)>,
    /// Chunks that failed their hash, with the sources that sent them corrupt (this
    /// attempt): such a chunk is asked of another source first.
    rejected: BTreeMap<u32, Vec<usize>>,
}

impl<R: rand_core::Rng> Download<R> {
    /// Starts downloading `version` from `sources` (in priority order; use
    /// [`Config::usable_sources`](crate::Config::usable_sources)), continuing from
    /// `resume` when given. Fails on settings outside their ranges.
    pub fn new(
        settings: Settings,
        version: &str,
        sources: &[SourceKind],
        resume: Option<Resume>,
        rng: R,
        now: Instant,
    ) -> Result<Self, Error> {
        settings.validate()?;
        check_version(version)?;
        let mut dl = Download {
            settings,
            version: version.to_string(),
            rng,
            sources: sources
                .iter()
                .map(|&kind| Src {
                    kind,
                    health: Window::new(settings.health.window),
                    avail: Avail::Up,
                    has_version: None,
                    manifest: Match::Unknown,
                    ranged: true,
                    in_flight: 0,
                })
                .collect(),
            manifest: None,
            from_resume: false,
            chunks: Vec::new(),
            done_count: 0,
            done_bytes: 0,
            requests: BTreeMap::new(),
            next_id: 0,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            phase: Phase::Discovering,
            attempt: 1,
            deadline: settings
                .retry
                .enable_timeout
                .then(|| now + settings.retry.timeout),
            active: None,
            samples: VecDeque::new(),
            rejected: BTreeMap::new(),
        };
        if let Some(resume) = resume.filter(|r| r.manifest.version() == version) {
            dl.adopt(resume.manifest);
            dl.from_resume = true;
            for index in resume.done {
                dl.mark_done(index);
            }
        }
        let peer = dl.peer();
        match (settings.ha, peer) {
            (HaMode::SequencedSecond, Some(peer)) => {
                dl.phase = Phase::WaitingForPeer { next_poll: None };
                dl.issue(peer, ReqKind::Versions, false, now);
            }
            _ => dl.start_attempt(now),
        }
        Ok(dl)
    }

    /// Continues the overall deadline and the attempt count of an earlier run of the
    /// same download (a restarted process): `spent` is the time since that run
    /// started, `failed_attempts` the attempts that failed in it. Call right after
    /// [`Download::new`]. The deadline becomes `now + timeout - spent` (expired: the
    /// download fails with [`Error::TimedOut`] at once); the attempt number continues
    /// after `failed_attempts`, leaving at least this attempt.
    pub fn restore_clock(&mut self, spent: Duration, failed_attempts: u32, now: Instant) {
        if self.settings.retry.enable_timeout {
            let left = self.settings.retry.timeout.saturating_sub(spent);
            self.deadline = Some(now + left);
        }
        let cap = match self.settings.retry.attempts {
            0 => u32::MAX,
            n => n,
        };
        self.attempt = failed_attempts.saturating_add(1).min(cap).max(self.attempt);
        self.handle_timeout(now);
    }

    // ----- getters -----

    /// Where the download stands.
    pub fn status(&self) -> Status {
        match &self.phase {
            Phase::WaitingForPeer { .. } => Status::WaitingForPeer,
            Phase::Discovering => Status::Discovering,
            Phase::Fetching => Status::Fetching,
            Phase::Verifying => Status::Verifying,
            Phase::RetryWait { until } => Status::RetryWait { until: *until },
            Phase::Done => Status::Succeeded,
            Phase::Failed(e) => Status::Failed(e.clone()),
        }
    }

    /// True once succeeded or failed for good.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Failed(_))
    }

    /// The manifest being downloaded, once known.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// The requested version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The kind of a source.
    pub fn source_kind(&self, source: SourceId) -> Option<SourceKind> {
        self.sources.get(source.0).map(|s| s.kind)
    }

    /// Whether chunk `index` is verified.
    pub fn is_chunk_done(&self, index: u32) -> bool {
        self.chunks.get(index as usize) == Some(&Slot::Done)
    }

    /// Whether the health window currently marks `source` unavailable.
    pub fn is_unavailable(&self, source: SourceId) -> bool {
        self.sources
            .get(source.0)
            .is_some_and(|s| s.avail != Avail::Up)
    }

    /// The attempt number (from 1).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A progress snapshot.
    pub fn progress(&self, now: Instant) -> Progress {
        let total = self.manifest.as_ref().map(Manifest::size);
        let rate = match (self.samples.front(), self.samples.back()) {
            (Some(&(t0, b0)), Some(&(_, b1))) if now > t0 => {
                let secs = now.duration_since(t0).as_secs_f64();
                (b1.saturating_sub(b0) as f64 / secs) as u64
            }
            _ => 0,
        };
        let eta = match total {
            Some(t) if rate > 0 => Some(Duration::from_secs_f64(
                t.saturating_sub(self.done_bytes) as f64 / rate as f64,
            )),
            Some(t) if t == self.done_bytes => Some(Duration::ZERO),
            _ => None,
        };
        Progress {
            done_bytes: self.done_bytes,
            total_bytes: total,
            bytes_per_sec: rate,
            eta,
            source: self.active.map(SourceId),
            attempt: self.attempt,
        }
    }

    // ----- outputs -----

    /// The next thing the caller must do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event to report.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_finished() {
            return None;
        }
        let phase = match self.phase {
            Phase::RetryWait { until } => Some(until),
            Phase::WaitingForPeer { next_poll } => next_poll,
            Phase::Fetching => self
                .sources
                .iter()
                .filter_map(|s| match s.avail {
                    Avail::Down { until } => Some(until),
                    _ => None,
                })
                .min(),
            _ => None,
        };
        [phase, self.deadline].into_iter().flatten().min()
    }

    // ----- inputs -----

    /// Timers: the overall deadline, the retry delay, probe cool-downs, peer polls.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_finished() {
            return;
        }
        if self.deadline.is_some_and(|d| now >= d) {
            let after = self.settings.retry.timeout;
            self.finish(Err(Error::TimedOut { after }));
            return;
        }
        match self.phase {
            Phase::RetryWait { until } if now >= until => self.start_attempt(now),
            Phase::WaitingForPeer { next_poll: Some(t) } if now >= t => {
                self.phase = Phase::WaitingForPeer { next_poll: None };
                if let Some(peer) = self.peer() {
                    self.issue(peer, ReqKind::Versions, false, now);
                }
            }
            Phase::Fetching => {
                for s in &mut self.sources {
                    if let Avail::Down { until } = s.avail
                        && now >= until
                    {
                        s.avail = Avail::ProbeDue;
                    }
                }
                self.fill(now);
            }
            _ => {}
        }
    }

    /// The answer to a [`Resource::Versions`] or [`Resource::Manifest`] request: the
    /// body, or why there is none.
    pub fn handle_body(&mut self, id: RequestId, body: Result<&[u8], Failure>, now: Instant) {
        let Some(req) = self.take(id) else { return };
        match req.kind {
            ReqKind::Versions => self.on_versions(req, body, now),
            ReqKind::Manifest => self.on_manifest(req, body, now),
            ReqKind::Chunks { .. } => {}
        }
    }

    /// One chunk of a [`Resource::Chunks`] request, in order, with the digest of its
    /// bytes under the manifest's [`ChunkHash`](crate::wire::ChunkHash). Accepted
    /// chunks are done; a rejected one ends the request as failed.
    pub fn handle_chunk(
        &mut self,
        id: RequestId,
        index: u32,
        digest: &ChunkDigest,
        now: Instant,
    ) -> ChunkVerdict {
        let Some(req) = self.requests.get_mut(&id.0) else {
            return ChunkVerdict::Reject;
        };
        let ReqKind::Chunks { last, next, .. } = &mut req.kind else {
            return ChunkVerdict::Reject;
        };
        let good = self
            .manifest
            .as_ref()
            .and_then(|m| m.chunk_digest(index))
            .is_some_and(|d| d == digest);
        if index == *next && index <= *last && good {
            *next += 1;
            self.mark_done(index);
            self.samples.push_back((now, self.done_bytes));
            while self
                .samples
                .front()
                .is_some_and(|&(t, _)| now.duration_since(t) > RATE_WINDOW)
                && self.samples.len() > 2
            {
                self.samples.pop_front();
            }
            ChunkVerdict::Accept
        } else {
            let source = req.source;
            self.events.push_back(Event::ChunkRejected {
                source: SourceId(source),
                index,
            });
            let by = self.rejected.entry(index).or_default();
            if !by.contains(&source) {
                by.push(source);
            }
            self.end_request(id, End::Failed(Failure::BadChunk), now);
            ChunkVerdict::Reject
        }
    }

    /// The end of a [`Resource::Chunks`] request.
    pub fn handle_end(&mut self, id: RequestId, end: End, now: Instant) {
        self.end_request(id, end, now);
    }

    /// The whole file's SHA-256, after [`Action::VerifyFile`].
    pub fn handle_file_digest(&mut self, sha256: &Sha256Digest, _now: Instant) {
        if self.phase != Phase::Verifying {
            return;
        }
        let Some(m) = &self.manifest else { return };
        if m.sha256() == sha256 {
            self.finish(Ok(()));
        } else {
            let err = Error::FileDigestMismatch {
                expected: hex::encode(m.sha256()),
                actual: hex::encode(sha256),
            };
            self.finish(Err(err));
        }
    }

    // ----- internals -----

    fn peer(&self) -> Option<usize> {
        self.sources
            .iter()
            .position(|s| s.kind == SourceKind::HaPeer)
    }

    fn issue(&mut self, source: usize, kind: ReqKind, probe: bool, now: Instant) {
        let id = self.next_id;
        self.next_id += 1;
        let resource = match kind {
            ReqKind::Versions => Resource::Versions,
            ReqKind::Manifest => Resource::Manifest,
            ReqKind::Chunks { first, last, .. } => {
                let (start, end) = match &self.manifest {
                    Some(m) => (m.chunk_range(first).start, m.chunk_range(last).end),
                    None => (0, 0),
                };
                for i in first..=last {
                    if let Some(slot) = self.chunks.get_mut(i as usize) {
                        *slot = Slot::InFlight;
                    }
                }
                Resource::Chunks {
                    first,
                    last,
                    start,
                    end,
                }
            }
        };
        self.sources[source].in_flight += 1;
        self.requests.insert(
            id,
            Req {
                source,
                kind,
                issued: now,
                probe,
            },
        );
        self.actions.push_back(Action::Fetch(Fetch {
            id: RequestId(id),
            source: SourceId(source),
            resource,
        }));
    }

    fn take(&mut self, id: RequestId) -> Option<Req> {
        let req = self.requests.remove(&id.0)?;
        let s = &mut self.sources[req.source];
        s.in_flight = s.in_flight.saturating_sub(1);
        Some(req)
    }

    fn adopt(&mut self, manifest: Manifest) {
        self.chunks = vec![Slot::Missing; manifest.chunk_count() as usize];
        self.done_count = 0;
        self.done_bytes = 0;
        self.samples.clear();
        self.manifest = Some(manifest);
    }

    fn mark_done(&mut self, index: u32) {
        let Some(m) = &self.manifest else { return };
        let len = m.chunk_range(index);
        if let Some(slot) = self.chunks.get_mut(index as usize)
            && *slot != Slot::Done
        {
            *slot = Slot::Done;
            self.done_count += 1;
            self.done_bytes += len.end - len.start;
        }
    }

    /// Records one request outcome for a source and applies the window rule (and, for
    /// a probe, restores the source or sends it back to cool down).
    fn record(&mut self, source: usize, ok: bool, probe: bool, now: Instant) {
        let cool_down = self.settings.health.cool_down;
        let s = &mut self.sources[source];
        if probe {
            if ok {
                s.health = Window::new(self.settings.health.window);
                s.health.record(true);
                s.avail = Avail::Up;
                self.events.push_back(Event::SourceRestored {
                    source: SourceId(source),
                });
            } else {
                s.avail = Avail::Down {
                    until: now + cool_down,
                };
            }
            return;
        }
        s.health.record(ok);
        if !ok && s.avail == Avail::Up && s.health.tripped() {
            s.avail = Avail::Down {
                until: now + cool_down,
            };
            let failures = s.health.failures();
            self.events.push_back(Event::SourceUnavailable {
                source: SourceId(source),
                failures,
            });
        }
    }

    fn on_versions(&mut self, req: Req, body: Result<&[u8], Failure>, now: Instant) {
        let listed = body
            .ok()
            .and_then(|b| parse_versions(b).ok())
            .map(|list| list.contains(&self.version));
        match self.phase {
            Phase::WaitingForPeer { .. } => {
                self.record(req.source, listed.is_some(), false, now);
                if listed == Some(true) {
                    self.events.push_back(Event::PeerReady);
                    self.start_attempt(now);
                } else if self.sources[req.source].avail != Avail::Up {
                    self.events.push_back(Event::PeerFailed);
                    self.start_attempt(now);
                } else {
                    self.phase = Phase::WaitingForPeer {
                        next_poll: Some(now + self.settings.peer_poll),
                    };
                }
            }
            Phase::Discovering => {
                self.sources[req.source].has_version = Some(listed == Some(true));
                if self.sources.iter().all(|s| s.has_version.is_some()) {
                    let with: Vec<SourceId> = (0..self.sources.len())
                        .filter(|&i| self.sources[i].has_version == Some(true))
                        .map(SourceId)
                        .collect();
                    if with.is_empty() {
                        let version = self.version.clone();
                        self.fail_attempt(now, AttemptFailure::NoSourceHasVersion { version });
                    } else {
                        self.events.push_back(Event::Discovered { sources: with });
                        self.phase = Phase::Fetching;
                        self.fill(now);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_manifest(&mut self, req: Req, body: Result<&[u8], Failure>, now: Instant) {
        if self.phase != Phase::Fetching {
            return;
        }
        let parsed = body
            .ok()
            .and_then(|b| Manifest::parse(b).ok())
            .filter(|m| m.version() == self.version);
        let ok = parsed.is_some();
        let s = req.source;
        self.sources[s].manifest = match parsed {
            None => Match::Unknown,
            Some(m) => match &self.manifest {
                None => {
                    self.actions.push_back(Action::Prepare(m.clone()));
                    self.adopt(m);
                    Match::Same
                }
                Some(current) if *current == m => Match::Same,
                Some(_) => {
                    self.events.push_back(Event::ManifestMismatch {
                        source: SourceId(s),
                    });
                    Match::Differs
                }
            },
        };
        self.record(s, ok, req.probe, now);
        self.fill(now);
    }

    fn end_request(&mut self, id: RequestId, end: End, now: Instant) {
        let Some(req) = self.take(id) else { return };
        let ReqKind::Chunks { first, last, next } = req.kind else {
            return;
        };
        for i in next..=last {
            if let Some(slot @ Slot::InFlight) = self.chunks.get_mut(i as usize) {
                *slot = Slot::Missing;
            }
        }
        let outcome = match end {
            End::Failed(f) => Err(f),
            End::Complete { .. } if next <= last => Err(Failure::ShortBody),
            End::Complete { ranged } => {
                if !ranged {
                    self.sources[req.source].ranged = false;
                }
                let bytes = self
                    .manifest
                    .as_ref()
                    .map_or(0, |m| m.chunk_range(last).end - m.chunk_range(first).start);
                let secs = now.duration_since(req.issued).as_secs_f64();
                let floor = self.settings.health.min_rate;
                if floor > 0 && secs > 0.0 && (bytes as f64 / secs) < floor as f64 {
                    Err(Failure::TooSlow)
                } else {
                    Ok(())
                }
            }
        };
        self.record(req.source, outcome.is_ok(), req.probe, now);
        self.fill(now);
    }

    fn start_attempt(&mut self, now: Instant) {
        let window = self.settings.health.window;
        for s in &mut self.sources {
            s.health = Window::new(window);
            s.avail = Avail::Up;
            s.has_version = None;
            s.manifest = Match::Unknown;
            s.ranged = true;
        }
        self.active = None;
        self.rejected.clear();
        self.phase = Phase::Discovering;
        if self.sources.is_empty() {
            let version = self.version.clone();
            self.fail_attempt(now, AttemptFailure::NoSourceHasVersion { version });
            return;
        }
        for i in 0..self.sources.len() {
            self.issue(i, ReqKind::Versions, false, now);
        }
    }

    fn fail_attempt(&mut self, now: Instant, reason: AttemptFailure) {
        let attempts = self.settings.retry.attempts;
        let attempt = self.attempt;
        if attempts != 0 && attempt >= attempts {
            self.events.push_back(Event::AttemptFailed {
                attempt,
                reason: reason.clone(),
                retry_in: None,
            });
            self.finish(Err(Error::AttemptsExhausted {
                attempts: attempt,
                last: reason,
            }));
            return;
        }
        let delay = retry_delay(
            attempt,
            self.settings.retry.maximum_retry_delay,
            &mut self.rng,
        );
        self.events.push_back(Event::AttemptFailed {
            attempt,
            reason,
            retry_in: Some(delay),
        });
        self.attempt += 1;
        self.active = None;
        self.phase = Phase::RetryWait { until: now + delay };
    }

    fn finish(&mut self, result: Result<(), Error>) {
        self.actions.clear();
        self.requests.clear();
        for s in &mut self.sources {
            s.in_flight = 0;
        }
        self.active = None;
        match result {
            Ok(()) => {
                self.phase = Phase::Done;
                self.events.push_back(Event::Succeeded);
            }
            Err(e) => {
                self.phase = Phase::Failed(e.clone());
                self.events.push_back(Event::Failed(e));
            }
        }
    }

    fn candidate(&self, i: usize) -> bool {
        let s = &self.sources[i];
        s.has_version == Some(true) && s.manifest != Match::Differs
    }

    fn first_missing(&self) -> Option<u32> {
        self.chunks
            .iter()
            .position(|s| *s == Slot::Missing)
            .map(|i| i as u32)
    }

    /// Whether `source` may be asked for chunk `index`: not when it sent that chunk
    /// corrupt and another usable source has not (yet) been asked for it.
    fn may_fetch(&self, source: usize, index: u32) -> bool {
        match self.rejected.get(&index) {
            Some(by) if by.contains(&source) => self.alternative(index).is_none(),
            _ => true,
        }
    }

    /// The best source, other than those that sent chunk `index` corrupt, that could
    /// serve it: has the version, is available, and serves (or may serve) the same
    /// manifest.
    fn alternative(&self, index: u32) -> Option<usize> {
        let by = self.rejected.get(&index)?;
        (0..self.sources.len()).find(|&i| {
            !by.contains(&i)
                && self.candidate(i)
                && self.sources[i].avail == Avail::Up
                && self.sources[i].manifest != Match::Differs
        })
    }

    /// The first missing chunk `source` may be asked for.
    fn first_missing_for(&self, source: usize) -> Option<u32> {
        self.chunks
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == Slot::Missing)
            .map(|(i, _)| i as u32)
            .find(|&i| self.may_fetch(source, i))
    }

    /// Sends each missing chunk that failed its hash to another source: one chunk per
    /// request, after that source's manifest is known to be the same.
    fn reroute_rejected(&mut self, now: Instant) {
        let pending: Vec<u32> = self
            .rejected
            .keys()
            .copied()
            .filter(|&i| self.chunks.get(i as usize) == Some(&Slot::Missing))
            .collect();
        for index in pending {
            let Some(alt) = self.alternative(index) else {
                continue;
            };
            match self.sources[alt].manifest {
                Match::Unknown => {
                    self.sources[alt].manifest = Match::Pending;
                    self.issue(alt, ReqKind::Manifest, false, now);
                }
                Match::Same if self.sources[alt].in_flight < self.settings.parallel => {
                    self.issue(
                        alt,
                        ReqKind::Chunks {
                            first: index,
                            last: index,
                            next: index,
                        },
                        false,
                        now,
                    );
                }
                _ => {}
            }
        }
    }

    /// Hands out work: probes, the manifest, chunk requests; notices completion and
    /// failed attempts.
    fn fill(&mut self, now: Instant) {
        if self.phase != Phase::Fetching {
            return;
        }
        let n = self.sources.len();
        let best_up = (0..n).find(|&i| self.candidate(i) && self.sources[i].avail == Avail::Up);
        // Probe cooled-down sources that rank above the best available one.
        for i in 0..best_up.unwrap_or(n) {
            if !self.candidate(i) || self.sources[i].avail != Avail::ProbeDue {
                continue;
            }
            let kind = if self.manifest.is_none() || self.sources[i].manifest != Match::Same {
                self.sources[i].manifest = Match::Pending;
                Some(ReqKind::Manifest)
            } else {
                self.first_missing().map(|first| ReqKind::Chunks {
                    first,
                    last: first,
                    next: first,
                })
            };
            if let Some(kind) = kind {
                self.sources[i].avail = Avail::Probing;
                self.issue(i, kind, true, now);
            }
        }
        if self.active != best_up {
            self.active = best_up;
            if let Some(a) = best_up {
                self.events.push_back(Event::SourceSelected {
                    source: SourceId(a),
                });
            }
        }
        if let Some(a) = best_up {
            match self.sources[a].manifest {
                Match::Unknown => {
                    self.sources[a].manifest = Match::Pending;
                    self.issue(a, ReqKind::Manifest, false, now);
                }
                Match::Same => {
                    self.reroute_rejected(now);
                    let limit = if self.sources[a].ranged {
                        self.settings.parallel
                    } else {
                        1
                    };
                    while self.sources[a].in_flight < limit {
                        let Some(first) = self.first_missing_for(a) else {
                            break;
                        };
                        let mut last = first;
                        if !self.sources[a].ranged {
                            while self.chunks.get(last as usize + 1) == Some(&Slot::Missing)
                                && self.may_fetch(a, last + 1)
                            {
                                last += 1;
                            }
                        }
                        self.issue(
                            a,
                            ReqKind::Chunks {
                                first,
                                last,
                                next: first,
                            },
                            false,
                            now,
                        );
                    }
                }
                Match::Pending | Match::Differs => {}
            }
        }
        let all_done = self.manifest.is_some() && self.done_count as usize == self.chunks.len();
        if all_done {
            self.requests
                .retain(|_, r| !matches!(r.kind, ReqKind::Chunks { .. }));
            self.phase = Phase::Verifying;
            self.actions.push_back(Action::VerifyFile);
            return;
        }
        if best_up.is_some() || !self.requests.is_empty() {
            return;
        }
        // Nothing usable and nothing in flight: this attempt has failed.
        let candidates: Vec<usize> = (0..n)
            .filter(|&i| self.sources[i].has_version == Some(true))
            .collect();
        let all_differ = !candidates.is_empty()
            && candidates
                .iter()
                .all(|&i| self.sources[i].manifest == Match::Differs);
        if all_differ && self.from_resume {
            // The partial file belongs to a manifest nobody serves: start over.
            self.from_resume = false;
            self.manifest = None;
            self.chunks.clear();
            self.done_count = 0;
            self.done_bytes = 0;
            self.samples.clear();
            for &i in &candidates {
                self.sources[i].manifest = Match::Unknown;
            }
            self.events.push_back(Event::PartialDiscarded);
            self.fill(now);
            return;
        }
        let reason = if all_differ {
            AttemptFailure::ManifestMismatch
        } else {
            AttemptFailure::AllSourcesUnavailable {
                count: candidates.len(),
            }
        };
        self.fail_attempt(now, reason);
    }
}
