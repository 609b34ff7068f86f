//! Settings of a download and the operator's TOML configuration.

use std::time::Duration;

use serde::Deserialize;

use crate::Error;

/// The software access mode: which kinds of source may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccessMode {
    /// The HA peer, then the artifact repository and its cloud proxy; never the conductor.
    InternetOnly,
    /// The HA peer, both conductor nodes, then the repository and its cloud proxy.
    PreferConductor,
    /// The HA peer and both conductor nodes only.
    ConductorOnly,
    /// No internet: the HA peer and both conductor nodes (which serve what they hold).
    OfflineMode,
}

/// A kind of source. The declaration order is the priority order (first = tried first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// The other node of an HA router.
    HaPeer,
    /// Conductor node 1.
    #[serde(rename = "conductor-1")]
    Conductor1,
    /// Conductor node 2.
    #[serde(rename = "conductor-2")]
    Conductor2,
    /// The artifact repository.
    Repository,
    /// The cloud proxy to the artifact repository (cloud deployments only).
    CloudProxy,
}

impl SourceKind {
    /// The configuration spelling.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::HaPeer => "ha-peer",
            SourceKind::Conductor1 => "conductor-1",
            SourceKind::Conductor2 => "conductor-2",
            SourceKind::Repository => "repository",
            SourceKind::CloudProxy => "cloud-proxy",
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `kind` may be used under `mode` (`cloud`: a cloud deployment).
pub fn allowed(mode: AccessMode, cloud: bool, kind: SourceKind) -> bool {
    use SourceKind::*;
    match kind {
        HaPeer => true,
        Conductor1 | Conductor2 => mode != AccessMode::InternetOnly,
        Repository => matches!(mode, AccessMode::InternetOnly | AccessMode::PreferConductor),
        CloudProxy => {
            cloud && matches!(mode, AccessMode::InternetOnly | AccessMode::PreferConductor)
        }
    }
}

/// HA behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HaMode {
    /// Both nodes download at once (the default); the peer is still tried first.
    #[default]
    Simultaneous,
    /// Sequenced, this node downloads first (it does not use the peer).
    SequencedFirst,
    /// Sequenced, this node waits until the peer lists the version, then fetches from
    /// it first, falling back to the other sources if the peer fails.
    SequencedSecond,
}

/// Retries and the overall timeout (SPEC 5.4, 5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    /// Bound the whole download (retries included) by `timeout`.
    pub enable_timeout: bool,
    /// 1800-604800 s, default 10800 s.
    pub timeout: Duration,
    /// Attempts in all (default 10); 0 = until the timeout (forever without one).
    pub attempts: u32,
    /// Cap of the retry delay, 0-86400 s, default 3600 s.
    pub maximum_retry_delay: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            enable_timeout: true,
            timeout: Duration::from_secs(10_800),
            attempts: 10,
            maximum_retry_delay: Duration::from_secs(3600),
        }
    }
}

/// Source health (SPEC 5.3) and what counts as a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// The last `window` requests of a source are judged (1-1000, default 10); more
    /// than half of `window` failed marks it unavailable.
    pub window: u32,
    /// An unavailable source is probed with one request after this (default 60 s).
    pub cool_down: Duration,
    /// A chunk delivered slower than this many bytes/s counts as failed (its bytes are
    /// kept). Default 64 KiB/s; 0 disables the floor.
    pub min_rate: u64,
    /// The HTTP driver gives up on a connect or read that takes longer (default 30 s).
    pub request_timeout: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            window: 10,
            cool_down: Duration::from_secs(60),
            min_rate: 64 << 10,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Everything that shapes one download besides its sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Retries and timeout.
    pub retry: RetrySettings,
    /// Source health.
    pub health: HealthSettings,
    /// HA sequencing.
    pub ha: HaMode,
    /// Chunk requests in flight at once (1-64, default 4).
    pub parallel: u32,
    /// A sequenced second node asks its peer for its versions this often (default 10 s).
    pub peer_poll: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            retry: RetrySettings::default(),
            health: HealthSettings::default(),
            ha: HaMode::default(),
            parallel: 4,
            peer_poll: Duration::from_secs(10),
        }
    }
}

fn range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), Error> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

impl Settings {
    /// Checks every value against its documented range; the error names the field.
    pub fn validate(&self) -> Result<(), Error> {
        let r = &self.retry;
        range("timeout", r.timeout.as_secs(), 1800, 604_800)?;
        range(
            "maximum-retry-delay",
            r.maximum_retry_delay.as_secs(),
            0,
            86_400,
        )?;
        range("attempts", r.attempts.into(), 0, 1_000_000)?;
        let h = &self.health;
        range("window", h.window.into(), 1, 1000)?;
        range("cool-down", h.cool_down.as_secs(), 1, 86_400)?;
        range("min-rate", h.min_rate, 0, 1 << 40)?;
        range("request-timeout", h.request_timeout.as_secs(), 1, 3600)?;
        range("parallel", self.parallel.into(), 1, 64)?;
        range("peer-poll", self.peer_poll.as_secs(), 1, 3600)?;
        Ok(())
    }
}

/// The nominal delay before retry number `attempt` (1 = after the first failed
/// attempt): 30 s, doubling, capped by `max`.
pub fn nominal_retry_delay(attempt: u32, max: Duration) -> Duration {
    let shift = attempt.saturating_sub(1).min(32);
    let secs = 30u64.saturating_mul(1u64 << shift);
    Duration::from_secs(secs).min(max)
}

/// [`nominal_retry_delay`] with jitter: up to 10% is taken off at random, so the
/// delay stays within `[0.9 d, d]` and never exceeds the cap.
pub fn retry_delay<R: rand_core::Rng + ?Sized>(
    attempt: u32,
    max: Duration,
    rng: &mut R,
) -> Duration {
    let nominal = nominal_retry_delay(attempt, max);
    let span = nominal.as_millis() as u64 / 10;
    let cut = if span == 0 {
        0
    } else {
        rng.next_u64() % (span + 1)
    };
    nominal.saturating_sub(Duration::from_millis(cut))
}

/// One configured source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// Its kind (and so its priority).
    pub kind: SourceKind,
    /// Base URL, `http://host:port[/prefix]`.
    pub url: String,
}

/// The operator's configuration file (`ssr download --config`).
///
/// ```toml
/// access-mode = "prefer-conductor"   # internet-only | prefer-conductor | conductor-only | offline-mode
/// cloud = false                      # the cloud proxy is only used in cloud deployments
///
/// [retry]
/// enable-timeout = true              # default true
/// timeout = 10800                    # 1800-604800 s
/// attempts = 10                      # 0 = until the timeout
/// maximum-retry-delay = 3600         # 0-86400 s
///
/// [health]                           # all optional
/// window = 10
/// cool-down = 60
/// min-rate = 65536                   # bytes/s, 0 = no floor
/// request-timeout = 30
///
/// [ha]                               # optional
/// mode = "simultaneous"              # or "sequenced"
/// role = "first"                     # sequenced only: "first" downloads, "second" waits
///
/// [transfer]
/// parallel = 4
///
/// [tls]                              # for https:// sources
/// ca-bundle = "/etc/ssr/download-ca.pem"   # PEM CA certificates the servers chain to
/// pins = ["sha256-spki:<64 hex>"]    # optional; or sha256-cert:<64 hex>
///
/// [manifest]
/// release-keys = ["/etc/ssr/release-1.pub.pem"]   # PEM P-256 PUBLIC KEYs
/// allow-unsigned = false             # default false: unsigned manifests are refused
/// whole-file-sha256 = false          # default false: also hash the whole file
/// sha256-chunks-only = false         # default false: true refuses BLAKE3 chunk digests (FIPS)
///
/// [[source]]
/// kind = "conductor-1"               # ha-peer | conductor-1 | conductor-2 | repository | cloud-proxy
/// url = "https://10.0.0.1:8443/images-root"
/// ```
///
/// File names are kept as given; the `http` adapter reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The access mode.
    pub access_mode: AccessMode,
    /// A cloud deployment (allows the cloud proxy).
    pub cloud: bool,
    /// The configured sources (any order; at most one per kind).
    pub sources: Vec<SourceConfig>,
    /// Everything else.
    pub settings: Settings,
    /// `[tls]`: trust for `https://` sources.
    pub tls: TlsFiles,
    /// `[manifest]`: which manifests are accepted.
    pub trust: TrustFiles,
}

/// `[tls]` of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM bundle of CA certificates for `https://` sources.
    pub ca_bundle: Option<std::path::PathBuf>,
    /// Server certificate pins (`sha256-spki:<hex>` or `sha256-cert:<hex>`).
    pub pins: Vec<String>,
}

/// `[manifest]` of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustFiles {
    /// PEM files of trusted release public keys.
    pub release_keys: Vec<std::path::PathBuf>,
    /// Accept unsigned manifests (default false).
    pub allow_unsigned: bool,
    /// Also check the whole file's SHA-256 (default false: the chunk digests of the
    /// authenticated manifest bind every byte).
    pub whole_file_sha256: bool,
    /// Refuse manifests whose chunk digests are not SHA-256 (default false).
    pub sha256_chunks_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConfigDoc {
    access_mode: AccessMode,
    #[serde(default)]
    cloud: bool,
    #[serde(default)]
    retry: RetryDoc,
    #[serde(default)]
    health: HealthDoc,
    #[serde(default)]
    ha: HaDoc,
    #[serde(default)]
    transfer: TransferDoc,
    #[serde(default)]
    source: Vec<SourceDoc>,
    #[serde(default)]
    tls: TlsDoc,
    #[serde(default)]
    manifest: ManifestDoc,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TlsDoc {
    ca_bundle: Option<String>,
    #[serde(default)]
    pins: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ManifestDoc {
    #[serde(default)]
    release_keys: Vec<String>,
    #[serde(default)]
    allow_unsigned: bool,
    #[serde(default)]
    whole_file_sha256: bool,
    #[serde(default)]
    sha256_chunks_only: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RetryDoc {
    enable_timeout: Option<bool>,
    timeout: Option<u64>,
    attempts: Option<u32>,
    maximum_retry_delay: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HealthDoc {
    window: Option<u32>,
    cool_down: Option<u64>,
    min_rate: Option<u64>,
    request_timeout: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HaDoc {
    mode: Option<String>,
    role: Option<String>,
    peer_poll: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TransferDoc {
    parallel: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SourceDoc {
    kind: SourceKind,
    url: String,
}

impl Config {
    /// Parses and validates the TOML configuration (unknown keys are refused; every
    /// range error names its field).
    pub fn parse(text: &str) -> Result<Config, Error> {
        let doc: ConfigDoc =
            toml::from_str(text).map_err(|e| Error::ConfigSyntax(e.message().to_string()))?;
        let d = Settings::default();
        let secs = Duration::from_secs;
        let ha = match (doc.ha.mode.as_deref(), doc.ha.role.as_deref()) {
            (None | Some("simultaneous"), None) => HaMode::Simultaneous,
            (Some("sequenced"), Some("first")) => HaMode::SequencedFirst,
            (Some("sequenced"), Some("second")) => HaMode::SequencedSecond,
            (Some("sequenced"), _) => {
                return Err(Error::InvalidConfig {
                    field: "ha.role",
                    reason: "sequenced mode needs role = \"first\" or \"second\"".into(),
                });
            }
            (None | Some("simultaneous"), Some(_)) => {
                return Err(Error::InvalidConfig {
                    field: "ha.role",
                    reason: "only meaningful with mode = \"sequenced\"".into(),
                });
            }
            (Some(other), _) => {
                return Err(Error::InvalidConfig {
                    field: "ha.mode",
                    reason: format!("{other:?}: expected \"simultaneous\" or \"sequenced\""),
                });
            }
        };
        let settings = Settings {
            retry: RetrySettings {
                enable_timeout: doc.retry.enable_timeout.unwrap_or(d.retry.enable_timeout),
                timeout: doc.retry.timeout.map_or(d.retry.timeout, secs),
                attempts: doc.retry.attempts.unwrap_or(d.retry.attempts),
                maximum_retry_delay: doc
                    .retry
                    .maximum_retry_delay
                    .map_or(d.retry.maximum_retry_delay, secs),
            },
            health: HealthSettings {
                window: doc.health.window.unwrap_or(d.health.window),
                cool_down: doc.health.cool_down.map_or(d.health.cool_down, secs),
                min_rate: doc.health.min_rate.unwrap_or(d.health.min_rate),
                request_timeout: doc
                    .health
                    .request_timeout
                    .map_or(d.health.request_timeout, secs),
            },
            ha,
            parallel: doc.transfer.parallel.unwrap_or(d.parallel),
            peer_poll: doc.ha.peer_poll.map_or(d.peer_poll, secs),
        };
        settings.validate()?;
        let mut sources = Vec::new();
        for s in doc.source {
            if sources.iter().any(|o: &SourceConfig| o.kind == s.kind) {
                return Err(Error::InvalidConfig {
                    field: "source.kind",
                    reason: format!("{} is configured twice", s.kind),
                });
            }
            let https = s.url.starts_with("https://");
            if !https && !s.url.starts_with("http://") {
                return Err(Error::InvalidConfig {
                    field: "source.url",
                    reason: format!("{:?}: only http:// and https:// base URLs", s.url),
                });
            }
            if https && doc.tls.ca_bundle.is_none() {
                return Err(Error::InvalidConfig {
                    field: "tls.ca-bundle",
                    reason: format!("{:?} is https:// but no CA bundle is configured", s.url),
                });
            }
            sources.push(SourceConfig {
                kind: s.kind,
                url: s.url.trim_end_matches('/').to_string(),
            });
        }
        if sources.is_empty() {
            return Err(Error::InvalidConfig {
                field: "source",
                reason: "no source configured".into(),
            });
        }
        if !doc.tls.pins.is_empty() && doc.tls.ca_bundle.is_none() {
            return Err(Error::InvalidConfig {
                field: "tls.pins",
                reason: "pins need tls.ca-bundle (the chain is checked, then pinned)".into(),
            });
        }
        if doc.manifest.release_keys.is_empty() && !doc.manifest.allow_unsigned {
            return Err(Error::InvalidConfig {
                field: "manifest.release-keys",
                reason: "no trusted release key (manifests must be signed; \
                         allow-unsigned = true only where that is intended)"
                    .into(),
            });
        }
        Ok(Config {
            access_mode: doc.access_mode,
            cloud: doc.cloud,
            sources,
            settings,
            tls: TlsFiles {
                ca_bundle: doc.tls.ca_bundle.map(Into::into),
                pins: doc.tls.pins,
            },
            trust: TrustFiles {
                release_keys: doc
                    .manifest
                    .release_keys
                    .into_iter()
                    .map(Into::into)
                    .collect(),
                allow_unsigned: doc.manifest.allow_unsigned,
                whole_file_sha256: doc.manifest.whole_file_sha256,
                sha256_chunks_only: doc.manifest.sha256_chunks_only,
            },
        })
    }

    /// The sources this download may use, in priority order: allowed by the access
    /// mode and deployment, and not the HA peer when this node downloads first in a
    /// sequenced pair.
    pub fn usable_sources(&self) -> Vec<SourceConfig> {
        let mut out: Vec<SourceConfig> = self
            .sources
            .iter()
            .filter(|s| allowed(self.access_mode, self.cloud, s.kind))
            .filter(|s| {
                !(s.kind == SourceKind::HaPeer && self.settings.ha == HaMode::SequencedFirst)
            })
            .cloned()
            .collect();
        out.sort_by_key(|s| s.kind);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &str = r#"
access-mode = "prefer-conductor"
[manifest]
allow-unsigned = true
[[source]]
kind = "repository"
url = "http://r/"
[[source]]
kind = "cloud-proxy"
url = "http://p"
[[source]]
kind = "conductor-2"
url = "http://c2"
[[source]]
kind = "ha-peer"
url = "http://peer"
[[source]]
kind = "conductor-1"
url = "http://c1"
"#;

    fn kinds(c: &Config) -> Vec<SourceKind> {
        c.usable_sources().iter().map(|s| s.kind).collect()
    }

    #[test]
    fn order_and_access_modes() {
        use SourceKind::*;
        let c = Config::parse(ALL).unwrap();
        assert_eq!(kinds(&c), [HaPeer, Conductor1, Conductor2, Repository]);
        assert_eq!(c.usable_sources()[3].url, "http://r");
        let cloud = Config::parse(
            &ALL.replace("\"prefer-conductor\"", "\"prefer-conductor\"\ncloud = true"),
        )
        .unwrap();
        assert_eq!(
            kinds(&cloud),
            [HaPeer, Conductor1, Conductor2, Repository, CloudProxy]
        );
        let inet = Config::parse(&ALL.replace("prefer-conductor", "internet-only")).unwrap();
        assert_eq!(kinds(&inet), [HaPeer, Repository]);
        for mode in ["conductor-only", "offline-mode"] {
            let c = Config::parse(&ALL.replace("prefer-conductor", mode)).unwrap();
            assert_eq!(kinds(&c), [HaPeer, Conductor1, Conductor2]);
        }
        let first = Config::parse(&ALL.replace(
            "access-mode = \"prefer-conductor\"",
            "access-mode = \"prefer-conductor\"\n[ha]\nmode = \"sequenced\"\nrole = \"first\"",
        ))
        .unwrap();
        assert_eq!(kinds(&first), [Conductor1, Conductor2, Repository]);
    }

    #[test]
    fn ranges_name_the_field() {
        let with = |extra: &str| {
            Config::parse(&format!(
                "access-mode = \"offline-mode\"\n{extra}\n[manifest]\nallow-unsigned = true\n[[source]]\nkind = \"conductor-1\"\nurl = \"http://c\"\n"
            ))
        };
        assert_eq!(
            with("[retry]\ntimeout = 1799").unwrap_err(),
            Error::OutOfRange {
                field: "timeout",
                value: 1799,
                min: 1800,
                max: 604_800
            }
        );
        assert!(with("[retry]\ntimeout = 604800").is_ok());
        assert_eq!(
            with("[retry]\nmaximum-retry-delay = 86401")
                .unwrap_err()
                .to_string(),
            "maximum-retry-delay = 86401 is outside 0-86400"
        );
        assert!(
            with("[retry]\nmaximum-retry-delay = 0\nattempts = 0\nenable-timeout = false").is_ok()
        );
        assert!(matches!(
            with("[retry]\nretries = 3"),
            Err(Error::ConfigSyntax(_))
        ));
        assert!(matches!(with("colour = 1"), Err(Error::ConfigSyntax(_))));
        assert!(matches!(
            with("[ha]\nmode = \"sequenced\""),
            Err(Error::InvalidConfig {
                field: "ha.role",
                ..
            })
        ));
        let d = with("").unwrap().settings;
        assert_eq!(d, Settings::default());
    }

    #[test]
    fn tls_and_manifest_trust() {
        let src = "[[source]]\nkind = \"conductor-1\"\nurl = \"https://c:8443/x\"\n";
        let parse =
            |body: &str| Config::parse(&format!("access-mode = \"offline-mode\"\n{body}{src}"));
        // Default: no key and unsigned not allowed is a configuration error.
        assert!(matches!(
            parse("[tls]\nca-bundle = \"/ca.pem\"\n"),
            Err(Error::InvalidConfig {
                field: "manifest.release-keys",
                ..
            })
        ));
        // https:// needs a CA bundle; pins need one too.
        assert!(matches!(
            parse("[manifest]\nrelease-keys = [\"/k.pem\"]\n"),
            Err(Error::InvalidConfig {
                field: "tls.ca-bundle",
                ..
            })
        ));
        let c = parse(
            "[tls]\nca-bundle = \"/ca.pem\"\npins = [\"sha256-spki:00\"]\n[manifest]\nrelease-keys = [\"/k1.pem\", \"/k2.pem\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.tls.ca_bundle.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        assert_eq!(c.tls.pins, ["sha256-spki:00"]);
        assert_eq!(c.trust.release_keys.len(), 2);
        assert!(!c.trust.allow_unsigned);
        assert!(!c.trust.sha256_chunks_only);
        let fips = parse(
            "[manifest]\nrelease-keys = [\"/k.pem\"]\nsha256-chunks-only = true\n[tls]\nca-bundle = \"/ca.pem\"\n",
        );
        assert!(fips.unwrap().trust.sha256_chunks_only);
        assert!(matches!(
            parse("[tls]\ncolour = 1\n"),
            Err(Error::ConfigSyntax(_))
        ));
    }

    #[test]
    fn backoff_schedule() {
        let cap = Duration::from_secs(3600);
        let secs: Vec<u64> = (1..=9)
            .map(|a| nominal_retry_delay(a, cap).as_secs())
            .collect();
        assert_eq!(secs, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(nominal_retry_delay(u32::MAX, cap), cap);
        assert_eq!(nominal_retry_delay(1, Duration::ZERO), Duration::ZERO);
    }

    proptest::proptest! {
        #[test]
        fn backoff_is_bounded_and_monotonic(attempt in 1u32..200, max in 0u64..=86_400, seed: u64) {
            use rand::SeedableRng;
            let max = Duration::from_secs(max);
            let nominal = nominal_retry_delay(attempt, max);
            proptest::prop_assert!(nominal <= max);
            proptest::prop_assert!(nominal <= nominal_retry_delay(attempt + 1, max));
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let d = retry_delay(attempt, max, &mut rng);
            proptest::prop_assert!(d <= nominal && d >= nominal * 9 / 10);
        }

        #[test]
        fn any_text_is_a_valid_config_or_an_error(text in "\\PC{0,200}") {
            if let Ok(c) = Config::parse(&text) {
                proptest::prop_assert!(c.settings.validate().is_ok());
            }
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = r#"
access-mode = "prefer-conductor"
cloud = false

[retry]
enable-timeout = true
timeout = 10800
attempts = 10
maximum-retry-delay = 3600

[health]
window = 10
cool-down = 60
min-rate = 65536
request-timeout = 30

[ha]
mode = "simultaneous"

[transfer]
parallel = 4

[tls]
ca-bundle = "/etc/ssr/download-ca.pem"
pins = ["sha256-spki:0000000000000000000000000000000000000000000000000000000000000000"]

[manifest]
release-keys = ["/etc/ssr/release-1.pub.pem"]
allow-unsigned = false
whole-file-sha256 = false
sha256-chunks-only = false

[[source]]
kind = "conductor-1"
url = "https://10.0.0.1:8443/images-root"
"#;
        let c = Config::parse(doc).unwrap();
        assert_eq!(c.settings, Settings::default());
        assert_eq!(c.sources[0].url, "https://10.0.0.1:8443/images-root");
    }
}
