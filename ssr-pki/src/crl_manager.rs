//! The CRL manager: a sans-I/O state machine that schedules CRL fetches, ingests what
//! comes back, raises and clears per-URL alarms, and publishes the merged master list
//! of revoked certificates.
//!
//! Inputs are `handle_*(…, now)`; outputs come from [`CrlManager::poll_output`]; the
//! timer is [`CrlManager::poll_timeout`] / [`CrlManager::handle_timeout`]. The manager
//! never fetches, reads a clock or writes a file: the caller's loop is
//!
//! 1. `handle_timeout(now)`;
//! 2. drain `poll_output()`: for [`Output::Fetch`] fetch the URL (feature `http`:
//!    [`crate::http::fetch`]) and feed the answer back with
//!    [`CrlManager::handle_fetched`] or [`CrlManager::handle_fetch_failed`]; write
//!    [`Output::Publish`] atomically; raise/clear [`Output::Alarm`]; log
//!    [`Output::Audit`];
//! 3. sleep until `poll_timeout()`.
//!
//! Schedule per URL: fetched at start, then every `polling_interval` after a success
//! (earlier if the CRL's own nextUpdate comes first, never sooner than
//! `backoff_interval`). After a failure the next try is `backoff_interval` later,
//! doubling with each further failure up to `polling_interval`. A fetch not answered
//! within `fetch_timeout` counts as a failure. The alarm for a URL is raised by its
//! first failure and cleared by its next success.
//!
//! A CRL is ingested only when its signature verifies under one of the trusted CA
//! certificates given to [`CrlManager::new`] (CRLs travel over plain HTTP).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::audit::{AuditEvent, Counter, Counters};
use crate::cert::Certificate;
use crate::crl::Crl;

/// The default `polling-interval`: 24 hours.
pub const DEFAULT_POLLING_HOURS: u32 = 24;
/// The default `backoff-interval`: 60 seconds.
pub const DEFAULT_BACKOFF_SECS: u32 = 60;
/// The default time allowed for one fetch.
pub const DEFAULT_FETCH_TIMEOUT_SECS: u32 = 30;

/// The CRL manager's configuration (`certificate-revocation-list` in the product).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlConfig {
    urls: Vec<String>,
    polling_interval: Duration,
    backoff_interval: Duration,
    fetch_timeout: Duration,
}

impl CrlConfig {
    /// URLs with the default intervals. Each URL must be `http://` or `https://`
    /// with a host; duplicates are dropped.
    pub fn new<S: AsRef<str>>(urls: &[S]) -> Result<Self, Error> {
        let mut seen = BTreeSet::new();
        let mut list = Vec::new();
        for u in urls {
            let u = u.as_ref();
            check_url(u)?;
            if seen.insert(u.to_string()) {
                list.push(u.to_string());
            }
        }
        Ok(Self {
            urls: list,
            polling_interval: Duration::from_secs(u64::from(DEFAULT_POLLING_HOURS) * 3600),
            backoff_interval: Duration::from_secs(u64::from(DEFAULT_BACKOFF_SECS)),
            fetch_timeout: Duration::from_secs(u64::from(DEFAULT_FETCH_TIMEOUT_SECS)),
        })
    }

    /// `polling-interval` in hours, 1 to 8760 (a year).
    pub fn with_polling_hours(mut self, hours: u32) -> Result<Self, Error> {
        if !(1..=8760).contains(&hours) {
            return Err(Error::InvalidConfig {
                field: "polling-interval",
                reason: format!("{hours} hours is outside 1..=8760"),
            });
        }
        self.polling_interval = Duration::from_secs(u64::from(hours) * 3600);
        Ok(self)
    }

    /// `backoff-interval` in seconds, 1 to 86400 (a day).
    pub fn with_backoff_secs(mut self, secs: u32) -> Result<Self, Error> {
        if !(1..=86_400).contains(&secs) {
            return Err(Error::InvalidConfig {
                field: "backoff-interval",
                reason: format!("{secs} seconds is outside 1..=86400"),
            });
        }
        self.backoff_interval = Duration::from_secs(u64::from(secs));
        Ok(self)
    }

    /// Time allowed for one fetch, 1 to 3600 seconds.
    pub fn with_fetch_timeout_secs(mut self, secs: u32) -> Result<Self, Error> {
        if !(1..=3600).contains(&secs) {
            return Err(Error::InvalidConfig {
                field: "fetch-timeout",
                reason: format!("{secs} seconds is outside 1..=3600"),
            });
        }
        self.fetch_timeout = Duration::from_secs(u64::from(secs));
        Ok(self)
    }

    /// The URLs.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The polling interval.
    pub fn polling_interval(&self) -> Duration {
        self.polling_interval
    }

    /// The backoff interval.
    pub fn backoff_interval(&self) -> Duration {
        self.backoff_interval
    }
}

/// Checks a CRL distribution point URL: `http://` or `https://` with a host, at most
/// 2048 printable ASCII characters. Anything else (`ldap://`, `file:`, …) is
/// [`Error::InvalidConfig`] naming the URL.
pub fn check_url(u: &str) -> Result<(), Error> {
    let bad = |reason: &str| Error::InvalidConfig {
        field: "certificate-revocation-list url",
        reason: format!("{:?}: {reason}", u.chars().take(200).collect::<String>()),
    };
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| bad("must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("has no host"));
    }
    if u.len() > 2048 || u.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(bad(
            "must be at most 2048 printable ASCII characters without spaces",
        ));
    }
    Ok(())
}

/// Splits CRL distribution point URLs (e.g. one certificate's) into the supported
/// `http(s)://` ones and the others with the reason each is refused, so that an
/// `ldap://` point is reported without dropping the usable points beside it.
pub fn split_supported<S: AsRef<str>>(urls: &[S]) -> (Vec<String>, Vec<(String, Error)>) {
    let mut ok = Vec::new();
    let mut unsupported = Vec::new();
    for u in urls {
        let u = u.as_ref();
        match check_url(u) {
            Ok(()) => ok.push(u.to_string()),
            Err(e) => unsupported.push((u.to_string(), e)),
        }
    }
    (ok, unsupported)
}

/// What the caller must do next.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// Fetch this URL and report with `handle_fetched` / `handle_fetch_failed`.
    Fetch {
        /// The URL.
        url: String,
    },
    /// Write this master list (atomically) where peers and the import check read it.
    Publish(MasterList),
    /// Raise or clear the "CRL cannot be fetched" alarm for a URL.
    Alarm {
        /// The URL.
        url: String,
        /// `true`: raise; `false`: clear.
        raised: bool,
        /// Why it was raised (the last error), or why it cleared.
        reason: String,
    },
    /// Log this audit event.
    Audit(AuditEvent),
}

/// The status of one URL (for `ssr crl status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceStatus {
    /// The URL.
    pub url: String,
    /// Whether the "cannot fetch" alarm is raised.
    pub alarm: bool,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Unix seconds of the last successful ingestion.
    pub last_success: Option<i64>,
    /// The CRL issuer (after a success).
    pub issuer: Option<String>,
    /// `thisUpdate` of the CRL held.
    pub this_update: Option<i64>,
    /// `nextUpdate` of the CRL held.
    pub next_update: Option<i64>,
    /// Entries of the CRL held.
    pub entries: usize,
    /// Unix seconds when the URL is next due (absent in files from older versions:
    /// due at once).
    #[serde(default)]
    pub next_fetch: Option<i64>,
}

/// One revoked certificate of the master list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterEntry {
    /// The certificate issuer's name (RFC 4514 string, as the CRL issuer reads).
    pub issuer: String,
    /// The serial number, upper-case hex.
    pub serial: String,
    /// The revocation date, Unix seconds.
    pub revoked_at: i64,
    /// The CRL URL it came from.
    pub source: String,
}

/// The merged list of every certificate revoked by the CRLs held, published to disk.
///
/// JSON, version 1: `{"version":1,"generated_at":…,"entries":[{"issuer":…,"serial":…,
/// "revoked_at":…,"source":…}]}`, entries sorted by issuer then serial, one entry per
/// (issuer, serial). [`MasterList::from_json`] is strict (unknown fields, other
/// versions, trailing bytes are refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterList {
    version: u32,
    /// Unix seconds when it was built.
    pub generated_at: i64,
    /// The revoked certificates.
    pub entries: Vec<MasterEntry>,
}

impl MasterList {
    /// The current format version.
    pub const VERSION: u32 = 1;

    /// The JSON text (pretty, with a trailing newline).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }

    /// Parses the JSON text strictly.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        let bad = |reason: String| Error::StateMalformed {
            what: "master revoked list",
            reason,
        };
        let list: MasterList = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if list.version != Self::VERSION {
            return Err(bad(format!("unknown version {}", list.version)));
        }
        if !list
            .entries
            .windows(2)
            .all(|w| (&w[0].issuer, &w[0].serial) < (&w[1].issuer, &w[1].serial))
        {
            return Err(bad("entries are not sorted and unique".into()));
        }
        Ok(list)
    }

    /// The entry revoking `cert`, if any (same issuer name, same serial).
    pub fn find(&self, cert: &Certificate) -> Option<&MasterEntry> {
        let issuer = cert.issuer();
        let serial = cert.serial_hex();
        self.entries
            .binary_search_by(|e| (e.issuer.as_str(), e.serial.as_str()).cmp(&(&issuer, &serial)))
            .ok()
            .and_then(|i| self.entries.get(i))
    }
}

#[derive(Debug)]
struct Source {
    url: String,
    next_fetch: Instant,
    in_flight_since: Option<Instant>,
    failures: u32,
    alarm: bool,
    last_error: Option<String>,
    last_success: Option<i64>,
    crl: Option<Crl>,
}

/// The CRL manager state machine. See the module documentation for the loop.
#[derive(Debug)]
pub struct CrlManager {
    config: CrlConfig,
    issuers: Vec<Certificate>,
    sources: Vec<Source>,
    outputs: VecDeque<Output>,
    counters: Counters,
    epoch: (Instant, i64),
}

impl CrlManager {
    /// A manager whose URLs are all due at `now`, which is `unix_now` on the wall
    /// clock (later wall-clock times, for CRL validity and audit stamps, are derived
    /// from the `Instant`s given to `handle_*`). CRLs must be signed by one of
    /// `trusted_issuers` (the installed CA certificates).
    pub fn new(
        config: CrlConfig,
        trusted_issuers: Vec<Certificate>,
        now: Instant,
        unix_now: i64,
    ) -> Self {
        let sources = config
            .urls
            .iter()
            .map(|u| Source::new(u.clone(), now))
            .collect();
        Self {
            config,
            issuers: trusted_issuers,
            sources,
            outputs: VecDeque::new(),
            counters: Counters::default(),
            epoch: (now, unix_now),
        }
    }

    /// Wall-clock Unix seconds at `now`.
    fn unix(&self, now: Instant) -> i64 {
        let (t0, u0) = self.epoch;
        match now.checked_duration_since(t0) {
            Some(d) => u0.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            None => u0.saturating_sub(
                i64::try_from(t0.duration_since(now).as_secs()).unwrap_or(i64::MAX),
            ),
        }
    }

    /// Adds a URL learnt at run time (e.g. a certificate's CRL distribution point);
    /// it is due at `now`. Known URLs are ignored.
    pub fn add_url(&mut self, url: &str, now: Instant) -> Result<(), Error> {
        check_url(url)?;
        if !self.sources.iter().any(|s| s.url == url) {
            self.config.urls.push(url.to_string());
            self.sources.push(Source::new(url.to_string(), now));
        }
        Ok(())
    }

    /// Loads a CRL held from an earlier run for `url` (no fetch, no events), so that
    /// the next fetch reports added and removed entries against it. A CRL that does
    /// not verify is ignored and reported as the error.
    pub fn restore(&mut self, url: &str, body: &[u8]) -> Result<(), Error> {
        let crl = self.verify(body)?;
        if let Some(s) = self.sources.iter_mut().find(|s| s.url == url) {
            s.crl = Some(crl);
        }
        Ok(())
    }

    /// Makes every URL not already being fetched due at `now` (an operator's
    /// "fetch now").
    pub fn refresh_all(&mut self, now: Instant) {
        for s in &mut self.sources {
            if s.in_flight_since.is_none() {
                s.next_fetch = now;
            }
        }
    }

    /// When [`CrlManager::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timeout = self.config.fetch_timeout;
        self.sources
            .iter()
            .map(|s| match s.in_flight_since {
                Some(t) => t + timeout,
                None => s.next_fetch,
            })
            .min()
    }

    /// Starts the fetches that are due and times out the ones not answered. Extra
    /// calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.sources.len() {
            let (due, timed_out) = {
                let s = &self.sources[i];
                match s.in_flight_since {
                    Some(t) => (false, now >= t + self.config.fetch_timeout),
                    None => (now >= s.next_fetch, false),
                }
            };
            if timed_out {
                self.counters.incr(Counter::CrlFetchFailure);
                let reason = format!("no answer within {:?}", self.config.fetch_timeout);
                self.fail(i, reason, 0, now);
            } else if due {
                self.sources[i].in_flight_since = Some(now);
                self.outputs.push_back(Output::Fetch {
                    url: self.sources[i].url.clone(),
                });
            }
        }
    }

    /// The fetch of `url` returned `body` (DER or PEM). Answers for a URL that is not
    /// being fetched (late, after a timeout, or unknown) are ignored; returns whether
    /// it was used.
    pub fn handle_fetched(&mut self, url: &str, body: &[u8], now: Instant) -> bool {
        let Some(i) = self.in_flight(url) else {
            return false;
        };
        let unix_now = self.unix(now);
        self.counters.incr(Counter::CrlFetchSuccess);
        let held = self.sources[i].crl.as_ref();
        let crl = match self.verify(body).and_then(|crl| match held {
            // Plain HTTP: refuse a replayed older CRL of the same issuer.
            Some(h) if h.issuer() == crl.issuer() && crl.this_update() < h.this_update() => {
                Err(Error::CrlMalformed {
                    reason: format!(
                        "thisUpdate {} is older than the CRL held ({})",
                        crl.this_update(),
                        h.this_update()
                    ),
                })
            }
            _ => Ok(crl),
        }) {
            Ok(crl) => crl,
            Err(e) => {
                self.counters.incr(Counter::CrlIngestionFailure);
                self.fail(i, e.to_string(), body.len(), now);
                return true;
            }
        };
        self.counters.incr(Counter::CrlIngestionSuccess);
        let new: BTreeSet<String> = crl.revoked().map(|e| e.serial_hex).collect();
        let old: BTreeSet<String> = self.sources[i]
            .crl
            .as_ref()
            .filter(|c| c.issuer() == crl.issuer())
            .map(|c| c.revoked().map(|e| e.serial_hex).collect())
            .unwrap_or_default();
        let changed = self.sources[i].crl.as_ref() != Some(&crl);
        let event = AuditEvent::CrlUpdate {
            time: unix_now,
            crl_url: url.to_string(),
            success: true,
            issuer: Some(crl.issuer()),
            this_update: Some(crl.this_update()),
            next_update: Some(crl.next_update()),
            size: body.len(),
            total_entries: new.len(),
            added_entries: new.difference(&old).count(),
            removed_entries: old.difference(&new).count(),
            error: None,
        };
        // An expired CRL (its nextUpdate has passed) is still ingested, since its
        // revocations stand, but it is not a fresh answer: its alarm is raised and the
        // URL is retried on the failure schedule until a current CRL comes.
        if crl.next_update() < unix_now {
            let reason = format!(
                "CRL expired: its nextUpdate ({}) has passed; the CA has not published a current CRL",
                crl.next_update()
            );
            let event = AuditEvent::CrlUpdate {
                time: unix_now,
                crl_url: url.to_string(),
                success: true,
                issuer: Some(crl.issuer()),
                this_update: Some(crl.this_update()),
                next_update: Some(crl.next_update()),
                size: body.len(),
                total_entries: new.len(),
                added_entries: new.difference(&old).count(),
                removed_entries: old.difference(&new).count(),
                error: Some(reason.clone()),
            };
            self.sources[i].crl = Some(crl);
            self.sources[i].last_success = Some(unix_now);
            self.outputs.push_back(Output::Audit(event));
            if changed {
                self.outputs
                    .push_back(Output::Publish(self.master_list(unix_now)));
            }
            self.schedule_failure(i, reason, now);
            return true;
        }
        // Next poll: the polling interval, or the CRL's nextUpdate when sooner (but
        // never sooner than the backoff interval).
        let until_next_update = u64::try_from(crl.next_update().saturating_sub(unix_now))
            .ok()
            .filter(|&d| d > 0)
            .map_or(self.config.polling_interval, Duration::from_secs);
        let wait = self
            .config
            .polling_interval
            .min(until_next_update)
            .max(self.config.backoff_interval);
        let s = &mut self.sources[i];
        s.in_flight_since = None;
        s.failures = 0;
        s.last_error = None;
        s.last_success = Some(unix_now);
        s.next_fetch = now + wait;
        s.crl = Some(crl);
        let cleared = std::mem::replace(&mut s.alarm, false);
        self.outputs.push_back(Output::Audit(event));
        if cleared {
            self.outputs.push_back(Output::Alarm {
                url: url.to_string(),
                raised: false,
                reason: "CRL fetched and ingested".into(),
            });
        }
        if changed {
            self.outputs
                .push_back(Output::Publish(self.master_list(unix_now)));
        }
        true
    }

    /// The fetch of `url` failed (connection, HTTP status, truncated body…).
    pub fn handle_fetch_failed(&mut self, url: &str, reason: &str, now: Instant) -> bool {
        let Some(i) = self.in_flight(url) else {
            return false;
        };
        self.counters.incr(Counter::CrlFetchFailure);
        self.fail(i, reason.to_string(), 0, now);
        true
    }

    /// The next output, in the order produced.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The merged master list of the CRLs held now.
    pub fn master_list(&self, unix_now: i64) -> MasterList {
        let mut map: BTreeMap<(String, String), MasterEntry> = BTreeMap::new();
        for s in &self.sources {
            let Some(crl) = &s.crl else { continue };
            let issuer = crl.issuer();
            for e in crl.revoked() {
                map.entry((issuer.clone(), e.serial_hex.clone()))
                    .or_insert_with(|| MasterEntry {
                        issuer: issuer.clone(),
                        serial: e.serial_hex,
                        revoked_at: e.revocation_date,
                        source: s.url.clone(),
                    });
            }
        }
        MasterList {
            version: MasterList::VERSION,
            generated_at: unix_now,
            entries: map.into_values().collect(),
        }
    }

    /// The CRLs held, one per URL that has been ingested.
    pub fn crls(&self) -> impl Iterator<Item = (&str, &Crl)> {
        self.sources
            .iter()
            .filter_map(|s| s.crl.as_ref().map(|c| (s.url.as_str(), c)))
    }

    /// Per-URL status.
    pub fn status(&self) -> Vec<SourceStatus> {
        self.sources
            .iter()
            .map(|s| SourceStatus {
                url: s.url.clone(),
                alarm: s.alarm,
                consecutive_failures: s.failures,
                last_error: s.last_error.clone(),
                last_success: s.last_success,
                issuer: s.crl.as_ref().map(Crl::issuer),
                this_update: s.crl.as_ref().map(Crl::this_update),
                next_update: s.crl.as_ref().map(Crl::next_update),
                entries: s.crl.as_ref().map_or(0, Crl::revoked_count),
                next_fetch: Some(self.unix(s.next_fetch)),
            })
            .collect()
    }

    /// Continues from a status saved by an earlier run ([`CrlManager::status`], e.g.
    /// `crl/status.json`): the URL's failure count, alarm, last error and success, and
    /// its next due time (Unix seconds, mapped onto `now`'s clock; a time already
    /// passed is due at `now`). The alarm is taken as already raised: no new
    /// [`Output::Alarm`] is produced for it. Call it after [`CrlManager::restore`]. An
    /// unknown URL is ignored; returns whether it was known.
    pub fn restore_status(&mut self, saved: &SourceStatus, now: Instant) -> bool {
        let unix_now = self.unix(now);
        let polling = self.config.polling_interval;
        let Some(s) = self.sources.iter_mut().find(|s| s.url == saved.url) else {
            return false;
        };
        if s.in_flight_since.is_some() {
            return true;
        }
        s.failures = saved.consecutive_failures;
        s.alarm = saved.alarm;
        s.last_error = saved.last_error.clone();
        s.last_success = saved.last_success;
        if let Some(due) = saved.next_fetch {
            // Never further out than one polling interval (a clock that jumped back).
            let wait = u64::try_from(due.saturating_sub(unix_now)).unwrap_or(0);
            s.next_fetch = now + Duration::from_secs(wait).min(polling);
        }
        true
    }

    /// Whether any URL is being fetched.
    pub fn is_fetching(&self) -> bool {
        self.sources.iter().any(|s| s.in_flight_since.is_some())
    }

    /// The CRL fetch and ingestion counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The counters counted since the last call (or since the start), reset to zero:
    /// a long-running caller adds them to its stored counters after each round.
    pub fn take_counters(&mut self) -> Counters {
        std::mem::take(&mut self.counters)
    }

    fn in_flight(&self, url: &str) -> Option<usize> {
        self.sources
            .iter()
            .position(|s| s.url == url && s.in_flight_since.is_some())
    }

    /// Parses `body` (DER, or PEM `X509 CRL`) and checks its signature against the
    /// trusted issuers.
    fn verify(&self, body: &[u8]) -> Result<Crl, Error> {
        let crl = match std::str::from_utf8(body) {
            Ok(text) if text.trim_start().starts_with("-----BEGIN") => Crl::from_pem(text)?,
            _ => Crl::from_der(body)?,
        };
        let mut last = None;
        for issuer in self.issuers.iter().filter(|c| c.subject() == crl.issuer()) {
            match crl.verify_signature(issuer) {
                Ok(()) => return Ok(crl),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(Error::CrlIssuerUnknown {
            issuer: crl.issuer(),
        }))
    }

    /// The failure schedule (backoff doubling up to the polling interval) and the
    /// alarm, raised once, for source `i`.
    fn schedule_failure(&mut self, i: usize, reason: String, now: Instant) {
        let backoff = self.config.backoff_interval;
        let polling = self.config.polling_interval;
        let s = &mut self.sources[i];
        s.in_flight_since = None;
        s.failures = s.failures.saturating_add(1);
        let factor = 1u32 << s.failures.saturating_sub(1).min(20);
        s.next_fetch = now + backoff.saturating_mul(factor).min(polling);
        s.last_error = Some(reason.clone());
        let raise = !std::mem::replace(&mut s.alarm, true);
        if raise {
            self.outputs.push_back(Output::Alarm {
                url: s.url.clone(),
                raised: true,
                reason,
            });
        }
    }

    fn fail(&mut self, i: usize, reason: String, size: usize, now: Instant) {
        let unix_now = self.unix(now);
        let url = self.sources[i].url.clone();
        self.outputs.push_back(Output::Audit(AuditEvent::CrlUpdate {
            time: unix_now,
            crl_url: url.clone(),
            success: false,
            issuer: None,
            this_update: None,
            next_update: None,
            size,
            total_entries: 0,
            added_entries: 0,
            removed_entries: 0,
            error: Some(reason.clone()),
        }));
        self.schedule_failure(i, reason, now);
    }
}

impl Source {
    fn new(url: String, now: Instant) -> Self {
        Self {
            url,
            next_fetch: now,
            in_flight_since: None,
            failures: 0,
            alarm: false,
            last_error: None,
            last_success: None,
            crl: None,
        }
    }
}
