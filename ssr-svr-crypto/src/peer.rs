//! Per-peer security state machine (sans-I/O, quinn style), the router's metadata key
//! manager, and HA key export/import.
//!
//! Inputs: [`Peer::handle_control`] (a control message from the peer),
//! [`Peer::handle_timeout`], [`Peer::handle_interface_up`],
//! [`Peer::handle_local_metadata_key`]. Outputs: [`Peer::poll_transmit`] (control
//! messages to send, in order), [`Peer::poll_event`] (alarms and key events),
//! [`Peer::poll_timeout`] (when to call `handle_timeout` next). Data packets go
//! through [`Peer::seal_data`] / [`Peer::open_data`], which write into caller buffers.
//!
//! Order of the exchange, each step with received / acknowledged flags:
//! 1. certificates (`Cert`, `CertAck`), validated by the [`PeerAuthenticator`];
//! 2. salts: the signed key exchange ([`crate::kex`]); the peer with the smaller common
//!    name initiates; `Hello` carries the initiator's salt, `Reply` the responder's;
//! 3. metadata keys: each side sends its router metadata key (with its rekey index)
//!    sealed under the peer key, and the peer acknowledges the index.
//!
//! When all six flags are set the state is `MKEY_EXCH_COMP`.
//!
//! Data packets from A to B are protected with a key derived from **B's** metadata
//! key and both common names (so two senders never share a key and IV sequence), and
//! carry the key index in front: `index u32 BE | sealed packet` ([`crate::packet`]).
//! When a router's metadata key changes, senders switch as soon as they receive the
//! new key, and the router keeps accepting the old key for [`KEY_OVERLAP`] (30 s) after
//! the peer acknowledged the new one: delayed packets still open.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hkdf::Hkdf;
use p256::ecdsa::SigningKey;
use rand_core::CryptoRng;
use sha2::Sha384;

use crate::Error;
use crate::kex::{self, AuthenticatedPeer, KexAlgorithm, KexMessage, PeerAuthenticator, PeerKeys};
use crate::packet::{CbcHmacOpener, CbcHmacSealer, OpenStats};
use crate::secret::{PacketKeyMaterial, SecretBytes};
use crate::tlv::Reader;

/// How long an old key stays valid after a new one is computed.
pub const KEY_OVERLAP: Duration = Duration::from_secs(30);

/// A rekey interval in hours: 1-720, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyInterval(Option<u16>);

impl RekeyInterval {
    /// `hours` in 1..=720.
    pub fn hours(hours: u16) -> Result<Self, Error> {
        if (1..=720).contains(&hours) {
            Ok(Self(Some(hours)))
        } else {
            Err(Error::Config {
                name: "rekey-interval",
                value: u64::from(hours),
            })
        }
    }
    /// Never rekey.
    pub const NEVER: Self = Self(None);
    /// As a duration (`None` = never).
    pub fn duration(self) -> Option<Duration> {
        self.0.map(|h| Duration::from_secs(u64::from(h) * 3600))
    }
}

impl Default for RekeyInterval {
    fn default() -> Self {
        Self(Some(24))
    }
}

/// `invalid-certificate-behavior`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Alarm only (default).
    #[default]
    FailSoft,
    /// Alarm and remove the peering.
    FailHard,
}

/// `authority > security-key-management`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    algorithm: KexAlgorithm,
    peer_key_rekey_interval: RekeyInterval,
    payload_key_rekey_interval: RekeyInterval,
    retransmit: Duration,
    timeout: Duration,
    fail_mode: FailMode,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            algorithm: KexAlgorithm::EcdhP256,
            peer_key_rekey_interval: RekeyInterval::default(),
            payload_key_rekey_interval: RekeyInterval::default(),
            retransmit: Duration::from_secs(30),
            timeout: Duration::from_secs(3600),
            fail_mode: FailMode::FailSoft,
        }
    }
}

impl SecurityConfig {
    /// Validated configuration. `retransmit_s` 5-3600, `timeout_s` ≥ `retransmit_s`.
    pub fn new(
        algorithm: KexAlgorithm,
        peer_key_rekey_interval: RekeyInterval,
        payload_key_rekey_interval: RekeyInterval,
        retransmit_s: u64,
        timeout_s: u64,
        fail_mode: FailMode,
    ) -> Result<Self, Error> {
        if !(5..=3600).contains(&retransmit_s) {
            return Err(Error::Config {
                name: "peer-key-retransmit-interval",
                value: retransmit_s,
            });
        }
        if timeout_s < retransmit_s {
            return Err(Error::Config {
                name: "peer-key-timeout",
                value: timeout_s,
            });
        }
        Ok(Self {
            algorithm,
            peer_key_rekey_interval,
            payload_key_rekey_interval,
            retransmit: Duration::from_secs(retransmit_s),
            timeout: Duration::from_secs(timeout_s),
            fail_mode,
        })
    }
    /// Key exchange algorithm.
    pub fn algorithm(&self) -> KexAlgorithm {
        self.algorithm
    }
    /// Payload key rekey interval (applied by the session layer).
    pub fn payload_key_rekey_interval(&self) -> RekeyInterval {
        self.payload_key_rekey_interval
    }
}

/// The security state shown by `show peers security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityState {
    /// Nothing exchanged yet.
    Init,
    /// Exchanging certificates.
    CertExch,
    /// Exchanging salts (key exchange running).
    SaltExch,
    /// Exchanging metadata keys.
    MkeyExch,
    /// All keys exchanged and acknowledged.
    MkeyExchComp,
    /// No key within `peer-key-timeout`: out of service, retrying at the timeout interval.
    Invalid,
    /// Removed after an invalid certificate with `fail-hard`.
    Removed,
}

impl SecurityState {
    /// Product name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "INIT",
            Self::CertExch => "CERT_EXCH",
            Self::SaltExch => "SALT_EXCH",
            Self::MkeyExch => "MKEY_EXCH",
            Self::MkeyExchComp => "MKEY_EXCH_COMP",
            Self::Invalid => "INVALID",
            Self::Removed => "REMOVED",
        }
    }
}

/// Alarms and notable events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A new peer key is in use (`rekeys` counts them).
    PeerKeyEstablished,
    /// The peer's metadata key with this index was installed.
    PeerMetadataKey(u32),
    /// No key within the timeout: peer path out of service.
    PeerInvalid,
    /// Unable to authenticate the peer (certificate rejected).
    UnableToAuthenticate(Error),
    /// The peering was removed (`fail-hard`).
    PeeringRemoved,
}

/// `show peers security` for one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// Peer common name.
    pub peer: String,
    /// Security state.
    pub state: SecurityState,
    /// Local salt.
    pub salt: u64,
    /// Peer salt.
    pub peer_salt: u64,
    /// Local metadata key index.
    pub key_index: Option<u32>,
    /// Peer metadata key index.
    pub peer_key_index: Option<u32>,
    /// Flags.
    pub cert_rec: bool,
    /// Local certificate acknowledged.
    pub cert_ack: bool,
    /// Peer salt received.
    pub salt_rec: bool,
    /// Local salt acknowledged.
    pub salt_ack: bool,
    /// Peer metadata key received.
    pub key_rec: bool,
    /// Local metadata key acknowledged.
    pub key_ack: bool,
    /// Peer key rekeys completed.
    pub peer_rekey_count: u64,
    /// Last peer key computed (virtual clock).
    pub last_rekey: Option<Instant>,
    /// Next planned peer rekey.
    pub next_rekey: Option<Instant>,
    /// Key exchange errors (bad signatures, bad shares).
    pub key_change_errors: u64,
    /// Data packet counters (all keys).
    pub data: OpenStats,
}

/// This router's identity for peering.
pub struct LocalIdentity {
    /// Certificate (DER) sent to peers.
    pub cert_der: Vec<u8>,
    /// The certificate's private key.
    pub signing_key: SigningKey,
    /// `peering-common-name`.
    pub common_name: String,
}

impl core::fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LocalIdentity")
            .field("common_name", &self.common_name)
            .finish_non_exhaustive()
    }
}

/// Router metadata key manager (one per router, shared by all its peers).
#[derive(Debug)]
pub struct KeyManager {
    index: u32,
    key: SecretBytes<80>,
    last_rekey: Instant,
    change_count: u64,
    active: bool,
}

const HA_VERSION: u8 = 1;

/// `show security key-status` for the router's metadata key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    /// `Active Leader` / `Redundant Peer`.
    pub manager_state: &'static str,
    /// Metadata rekey index.
    pub rekey_index: u32,
    /// Time since the last rekey.
    pub last_rekey: Duration,
    /// Time until the next scheduled rekey (`None` = never).
    pub next_rekey: Option<Duration>,
    /// Key changes so far.
    pub key_change_count: u64,
}

/// HA export of the metadata key: `version u8 | index u32 BE | key (80)`. Secret.
pub type HaExport = SecretBytes<85>;

impl KeyManager {
    /// A fresh metadata key with index 1.
    pub fn new<R: CryptoRng>(rng: &mut R, now: Instant) -> Self {
        let mut b = [0u8; 80];
        rng.fill_bytes(&mut b);
        Self {
            index: 1,
            key: SecretBytes::from_bytes(b),
            last_rekey: now,
            change_count: 0,
            active: true,
        }
    }
    /// Current rekey index.
    pub fn index(&self) -> u32 {
        self.index
    }
    /// The current key.
    pub fn key(&self) -> &SecretBytes<80> {
        &self.key
    }
    /// Times the key changed.
    pub fn change_count(&self) -> u64 {
        self.change_count
    }
    /// Last rekey time.
    pub fn last_rekey(&self) -> Instant {
        self.last_rekey
    }
    /// `Active Leader` or `Redundant Peer`.
    pub fn state_str(&self) -> &'static str {
        if self.active {
            "Active Leader"
        } else {
            "Redundant Peer"
        }
    }
    /// Status at `now` with the configured rekey interval.
    pub fn status(&self, now: Instant, interval: RekeyInterval) -> KeyStatus {
        let since = now.saturating_duration_since(self.last_rekey);
        KeyStatus {
            manager_state: self.state_str(),
            rekey_index: self.index,
            last_rekey: since,
            next_rekey: interval.duration().map(|d| d.saturating_sub(since)),
            key_change_count: self.change_count,
        }
    }

    /// `security metadata-key regenerate`: new key, index + 1. Returns the HA export to
    /// push to the redundant node.
    pub fn regenerate<R: CryptoRng>(&mut self, rng: &mut R, now: Instant) -> HaExport {
        let mut b = [0u8; 80];
        rng.fill_bytes(&mut b);
        self.key = SecretBytes::from_bytes(b);
        self.index = self.index.wrapping_add(1).max(1);
        self.last_rekey = now;
        self.change_count += 1;
        self.export_ha()
    }
    /// Export for the HA peer.
    pub fn export_ha(&self) -> HaExport {
        let mut b = [0u8; 85];
        b[0] = HA_VERSION;
        b[1..5].copy_from_slice(&self.index.to_be_bytes());
        b[5..].copy_from_slice(self.key.secret_bytes());
        SecretBytes::from_bytes(b)
    }
    /// Import on the redundant node (strict: version 1, exactly 85 bytes).
    pub fn import_ha(bytes: &[u8], now: Instant) -> Result<Self, Error> {
        if bytes.len() != 85 {
            return Err(Error::BadLength {
                what: "ha key export",
                len: bytes.len(),
            });
        }
        if bytes.first() != Some(&HA_VERSION) {
            return Err(Error::Malformed {
                what: "ha key export",
                reason: "unknown version",
            });
        }
        let mut idx = [0u8; 4];
        idx.copy_from_slice(&bytes[1..5]);
        Ok(Self {
            index: u32::from_be_bytes(idx),
            key: SecretBytes::from_slice(&bytes[5..])?,
            last_rekey: now,
            change_count: 0,
            active: false,
        })
    }
}

/// Data key from a router metadata key for traffic `sender -> receiver`.
fn data_key(mkey: &SecretBytes<80>, sender: &str, receiver: &str) -> PacketKeyMaterial {
    let hk = Hkdf::<Sha384>::new(Some(b"svr data key v1"), mkey.secret_bytes());
    let mut info = Vec::new();
    for s in [sender, receiver] {
        info.extend_from_slice(&(s.len() as u16).to_be_bytes());
        info.extend_from_slice(s.as_bytes());
    }
    let mut out = [0u8; 80];
    let _ = hk.expand(&info, &mut out); // 80 ≤ 255·48
    SecretBytes::from_bytes(out)
}

// Control message wire format: version u8 (1) | type u8 | body.
const CTL_VERSION: u8 = 1;
const T_CERT: u8 = 1;
const T_CERT_ACK: u8 = 2;
const T_HELLO: u8 = 3;
const T_REPLY: u8 = 4;
const T_MKEY: u8 = 5;
const T_MKEY_ACK: u8 = 6;

/// A control message (decoded strictly; see [`Control::decode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Certificate (DER).
    Cert(Vec<u8>),
    /// Certificate received and valid.
    CertAck,
    /// Key exchange hello.
    Hello(KexMessage),
    /// Key exchange reply.
    Reply(KexMessage),
    /// Metadata key: index, then the key sealed under the peer key.
    MetadataKey {
        /// Rekey index.
        index: u32,
        /// Sealed packet (CBC-HMAC under the peer key).
        sealed: Vec<u8>,
    },
    /// Metadata key acknowledged.
    MetadataKeyAck(u32),
}

impl Control {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![CTL_VERSION];
        match self {
            Self::Cert(c) => {
                v.push(T_CERT);
                v.extend_from_slice(c);
            }
            Self::CertAck => v.push(T_CERT_ACK),
            Self::Hello(m) => {
                v.push(T_HELLO);
                v.extend_from_slice(&m.encode());
            }
            Self::Reply(m) => {
                v.push(T_REPLY);
                v.extend_from_slice(&m.encode());
            }
            Self::MetadataKey { index, sealed } => {
                v.push(T_MKEY);
                v.extend_from_slice(&index.to_be_bytes());
                v.extend_from_slice(sealed);
            }
            Self::MetadataKeyAck(i) => {
                v.push(T_MKEY_ACK);
                v.extend_from_slice(&i.to_be_bytes());
            }
        }
        v
    }

    /// Strict decoder: known version and type, exact lengths.
    pub fn decode(b: &[u8]) -> Result<Self, Error> {
        const W: &str = "control message";
        let mut r = Reader::new(b);
        if r.u8() != Some(CTL_VERSION) {
            return Err(Error::Malformed {
                what: W,
                reason: "unknown version",
            });
        }
        let t = r.u8().ok_or(Error::Malformed {
            what: W,
            reason: "short",
        })?;
        let rest = r.take(b.len().saturating_sub(2)).unwrap_or_default();
        let u32_of = |s: &[u8]| -> Result<u32, Error> {
            let a: [u8; 4] = s.try_into().map_err(|_| Error::BadLength {
                what: W,
                len: b.len(),
            })?;
            Ok(u32::from_be_bytes(a))
        };
        Ok(match t {
            T_CERT if !rest.is_empty() => Self::Cert(rest.to_vec()),
            T_CERT_ACK if rest.is_empty() => Self::CertAck,
            T_HELLO => Self::Hello(KexMessage::decode(rest)?),
            T_REPLY => Self::Reply(KexMessage::decode(rest)?),
            T_MKEY if rest.len() > 4 => Self::MetadataKey {
                index: u32_of(&rest[..4])?,
                sealed: rest[4..].to_vec(),
            },
            T_MKEY_ACK => Self::MetadataKeyAck(u32_of(rest)?),
            _ => {
                return Err(Error::Malformed {
                    what: W,
                    reason: "unknown type or bad length",
                });
            }
        })
    }
}

struct PeerKeyState {
    tx: CbcHmacSealer,
    rx: CbcHmacOpener,
}

impl PeerKeyState {
    fn new(keys: &PeerKeys, initiator: bool) -> Self {
        let (tx, rx) = if initiator {
            (&keys.i2r, &keys.r2i)
        } else {
            (&keys.r2i, &keys.i2r)
        };
        Self {
            tx: CbcHmacSealer::new(tx),
            rx: CbcHmacOpener::new(rx),
        }
    }
}

struct RxKey {
    index: u32,
    opener: CbcHmacOpener,
    expires: Option<Instant>,
}

/// One peer's security state machine.
pub struct Peer<A: PeerAuthenticator> {
    cfg: SecurityConfig,
    me: LocalIdentity,
    peer_cn: String,
    auth: A,
    initiator: bool,
    state: SecurityState,
    flags: [bool; 6],
    peer: Option<AuthenticatedPeer>,
    kex: Option<kex::Initiator>,
    last_reply: Option<(KexMessage, KexMessage)>,
    peer_key: Option<PeerKeyState>,
    old_peer_rx: Option<(CbcHmacOpener, Instant)>,
    local_salt: u64,
    peer_salt: u64,
    local_mkey: Option<(u32, SecretBytes<80>)>,
    peer_mkey_index: Option<u32>,
    data_tx: Option<(u32, CbcHmacSealer)>,
    data_rx: Vec<RxKey>,
    outbox: VecDeque<Vec<u8>>,
    events: VecDeque<PeerEvent>,
    retransmit_at: Option<Instant>,
    deadline: Option<Instant>,
    rekey_at: Option<Instant>,
    jitter: Duration,
    rekeys: u64,
    last_rekey: Option<Instant>,
    key_change_errors: u64,
    data_stats_retired: OpenStats,
    now_unix_base: u64,
    created: Instant,
}

impl<A: PeerAuthenticator> core::fmt::Debug for Peer<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Peer")
            .field("peer", &self.peer_cn)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

const CERT_REC: usize = 0;
const CERT_ACK: usize = 1;
const SALT_REC: usize = 2;
const SALT_ACK: usize = 3;
const KEY_REC: usize = 4;
const KEY_ACK: usize = 5;

impl<A: PeerAuthenticator> Peer<A> {
    /// A new peering with `peer_cn`. `rekey_jitter` (choose it at random per peer, e.g. up
    /// to 10 % of the interval) spreads the rekeys of many peers. `now_unix` is the wall
    /// clock at `now`, used for certificate validity.
    pub fn new(
        cfg: SecurityConfig,
        me: LocalIdentity,
        peer_cn: impl Into<String>,
        auth: A,
        rekey_jitter: Duration,
        now: Instant,
        now_unix: u64,
    ) -> Self {
        let peer_cn = peer_cn.into();
        let initiator = me.common_name < peer_cn;
        let mut p = Self {
            cfg,
            me,
            peer_cn,
            auth,
            initiator,
            state: SecurityState::Init,
            flags: [false; 6],
            peer: None,
            kex: None,
            last_reply: None,
            peer_key: None,
            old_peer_rx: None,
            local_salt: 0,
            peer_salt: 0,
            local_mkey: None,
            peer_mkey_index: None,
            data_tx: None,
            data_rx: Vec::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            retransmit_at: None,
            deadline: None,
            rekey_at: None,
            jitter: rekey_jitter,
            rekeys: 0,
            last_rekey: None,
            key_change_errors: 0,
            data_stats_retired: OpenStats::default(),
            now_unix_base: now_unix,
            created: now,
        };
        p.start(now);
        p
    }

    fn start(&mut self, now: Instant) {
        self.state = SecurityState::CertExch;
        self.outbox
            .push_back(Control::Cert(self.me.cert_der.clone()).encode());
        self.retransmit_at = Some(now + self.cfg.retransmit);
        if self.peer_key.is_none() && self.deadline.is_none() {
            self.deadline = Some(now + self.cfg.timeout);
        }
    }

    /// Current state.
    pub fn state(&self) -> SecurityState {
        self.state
    }

    /// Is the peer path in service (a peer key and the peer's metadata key present)?
    pub fn in_service(&self) -> bool {
        self.peer_key.is_some() && self.data_tx.is_some() && self.state != SecurityState::Invalid
    }

    /// Next control message to send.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outbox.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    /// When [`Peer::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == SecurityState::Removed {
            return None;
        }
        let expiries = self
            .data_rx
            .iter()
            .filter_map(|k| k.expires)
            .chain(self.old_peer_rx.as_ref().map(|o| o.1));
        [self.retransmit_at, self.deadline, self.rekey_at]
            .into_iter()
            .flatten()
            .chain(expiries)
            .min()
    }

    fn complete_check(&mut self) {
        if self.state == SecurityState::Removed {
            return;
        }
        if self.flags.iter().all(|&f| f) {
            self.state = SecurityState::MkeyExchComp;
        } else if self.state == SecurityState::MkeyExchComp
            && self.peer_key.is_some()
            && self.data_tx.is_some()
        {
            // A rekey in progress: the old keys stay in service; the flags show progress.
        } else if self.peer_key.is_some() {
            self.state = SecurityState::MkeyExch;
        } else if self.state != SecurityState::Invalid
            && self.flags[CERT_REC]
            && self.flags[CERT_ACK]
        {
            self.state = SecurityState::SaltExch;
        }
    }

    fn waiting(&self) -> bool {
        !self.flags[CERT_ACK]
            || !self.flags[CERT_REC]
            || self.kex.is_some()
            || (self.peer_key.is_some() && self.local_mkey.is_some() && !self.flags[KEY_ACK])
            || (self.peer_key.is_none() && self.initiator)
    }

    fn arm_retransmit(&mut self, now: Instant) {
        let interval = if self.state == SecurityState::Invalid {
            self.cfg.timeout
        } else {
            self.cfg.retransmit
        };
        self.retransmit_at = if self.waiting() {
            Some(now + interval)
        } else {
            None
        };
    }

    /// Timers: retransmissions, the key timeout, peer rekeys, expiry of old keys.
    pub fn handle_timeout<R: CryptoRng>(&mut self, now: Instant, rng: &mut R) {
        if self.state == SecurityState::Removed {
            return;
        }
        let retired = &mut self.data_stats_retired;
        self.data_rx.retain(|k| {
            let keep = k.expires.is_none_or(|e| now < e);
            if !keep {
                let s = k.opener.stats();
                retired.delivered += s.delivered;
                retired.replayed += s.replayed;
                retired.tampered += s.tampered;
            }
            keep
        });
        if self.old_peer_rx.as_ref().is_some_and(|o| now >= o.1) {
            self.old_peer_rx = None;
        }
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            if self.peer_key.is_none() {
                self.state = SecurityState::Invalid;
                self.events.push_back(PeerEvent::PeerInvalid);
                // Retry at the timeout interval from now on.
                self.deadline = Some(now + self.cfg.timeout);
                self.resend(now, rng);
                self.retransmit_at = Some(now + self.cfg.timeout);
                return;
            }
        }
        if self.rekey_at.is_some_and(|t| now >= t) {
            self.rekey_at = None;
            if self.initiator && self.peer.is_some() {
                self.begin_kex(now, rng);
            }
        }
        if self.retransmit_at.is_some_and(|t| now >= t) {
            self.resend(now, rng);
            self.arm_retransmit(now);
        }
    }

    /// Interface came up: retry at once if there is no valid key.
    pub fn handle_interface_up<R: CryptoRng>(&mut self, now: Instant, rng: &mut R) {
        if self.peer_key.is_none() && self.state != SecurityState::Removed {
            self.resend(now, rng);
            self.arm_retransmit(now);
        }
    }

    fn resend<R: CryptoRng>(&mut self, now: Instant, rng: &mut R) {
        if !self.flags[CERT_ACK] || !self.flags[CERT_REC] {
            self.outbox
                .push_back(Control::Cert(self.me.cert_der.clone()).encode());
        }
        if let Some(k) = &self.kex {
            self.outbox
                .push_back(Control::Hello(k.hello().clone()).encode());
        } else if self.initiator && self.peer_key.is_none() && self.peer.is_some() {
            self.begin_kex(now, rng);
        }
        if self.peer_key.is_some() && !self.flags[KEY_ACK] {
            self.send_mkey();
        }
    }

    fn begin_kex<R: CryptoRng>(&mut self, now: Instant, rng: &mut R) {
        let (st, hello) = kex::Initiator::start(
            self.cfg.algorithm,
            &self.me.signing_key,
            &self.me.common_name,
            &self.peer_cn,
            rng,
        );
        self.local_salt = hello.salt;
        self.outbox.push_back(Control::Hello(hello).encode());
        self.kex = Some(st);
        if self.peer_key.is_none() {
            self.state = SecurityState::SaltExch;
        }
        self.retransmit_at = Some(now + self.cfg.retransmit);
    }

    /// The router's metadata key changed (or is set for the first time).
    pub fn handle_local_metadata_key(&mut self, manager: &KeyManager, now: Instant) {
        let old = self.local_mkey.take();
        let new_index = manager.index();
        // The old key's opener stays until KEY_OVERLAP after the peer acknowledges.
        self.data_rx.push(RxKey {
            index: new_index,
            opener: CbcHmacOpener::new(&data_key(
                manager.key(),
                &self.peer_cn,
                &self.me.common_name,
            )),
            expires: None,
        });
        if old.is_some_and(|(old_index, _)| old_index == new_index) {
            self.data_rx.pop();
        }
        self.local_mkey = Some((
            new_index,
            SecretBytes::from_bytes(*manager.key().secret_bytes()),
        ));
        self.flags[KEY_ACK] = false;
        if self.peer_key.is_some() {
            self.send_mkey();
        }
        self.complete_check();
        self.arm_retransmit(now);
    }

    fn send_mkey(&mut self) {
        let (Some((index, key)), Some(pk)) = (&self.local_mkey, &mut self.peer_key) else {
            return;
        };
        let mut sealed = vec![0u8; crate::packet::sealed_len(84)];
        let mut plain = [0u8; 84];
        plain[..4].copy_from_slice(&index.to_be_bytes());
        plain[4..].copy_from_slice(key.secret_bytes());
        let r = pk.tx.seal(&plain, &mut sealed);
        zeroize::Zeroize::zeroize(&mut plain);
        if r.is_ok() {
            self.outbox.push_back(
                Control::MetadataKey {
                    index: *index,
                    sealed,
                }
                .encode(),
            );
        }
    }

    fn install_peer_keys(&mut self, keys: &PeerKeys, now: Instant) {
        let new = PeerKeyState::new(keys, self.initiator);
        if let Some(old) = self.peer_key.replace(new) {
            self.old_peer_rx = Some((old.rx, now + KEY_OVERLAP));
        }
        self.flags[SALT_REC] = true;
        self.flags[SALT_ACK] = self.initiator;
        self.rekeys += 1;
        self.last_rekey = Some(now);
        self.deadline = None;
        self.rekey_at = self
            .cfg
            .peer_key_rekey_interval
            .duration()
            .map(|d| now + d + self.jitter);
        self.events.push_back(PeerEvent::PeerKeyEstablished);
        if self.state == SecurityState::Invalid {
            self.state = SecurityState::MkeyExch;
        }
        // The metadata key travels under the new peer key.
        self.flags[KEY_ACK] = false;
        self.send_mkey();
        self.complete_check();
        self.arm_retransmit(now);
    }

    /// A control message from the peer. Malformed or unauthenticated messages are
    /// counted and dropped (the error is returned for logging).
    pub fn handle_control<R: CryptoRng>(
        &mut self,
        msg: &[u8],
        now: Instant,
        rng: &mut R,
    ) -> Result<(), Error> {
        if self.state == SecurityState::Removed {
            return Ok(());
        }
        let r = self.handle_control_inner(msg, now, rng);
        if r.is_err() {
            self.key_change_errors += 1;
        }
        self.complete_check();
        r
    }

    fn handle_control_inner<R: CryptoRng>(
        &mut self,
        msg: &[u8],
        now: Instant,
        rng: &mut R,
    ) -> Result<(), Error> {
        match Control::decode(msg)? {
            Control::Cert(der) => {
                // Certificates are judged at wall time: the Unix time given at creation
                // advanced by the virtual clock.
                let now_unix = self
                    .now_unix_base
                    .saturating_add(now.saturating_duration_since(self.created).as_secs());
                match self.auth.authenticate(&der, now_unix) {
                    Ok(p) if p.common_name == self.peer_cn => {
                        self.peer = Some(p);
                        self.flags[CERT_REC] = true;
                        self.outbox.push_back(Control::CertAck.encode());
                        if self.initiator
                            && self.peer_key.is_none()
                            && self.kex.is_none()
                            && self.flags[CERT_ACK]
                        {
                            self.begin_kex(now, rng);
                        }
                        Ok(())
                    }
                    Ok(p) => {
                        let e = Error::CommonNameMismatch {
                            expected: self.peer_cn.clone(),
                            got: p.common_name,
                        };
                        self.cert_failure(e.clone());
                        Err(e)
                    }
                    Err(e) => {
                        self.cert_failure(e.clone());
                        Err(e)
                    }
                }
            }
            Control::CertAck => {
                self.flags[CERT_ACK] = true;
                if self.initiator
                    && self.peer_key.is_none()
                    && self.kex.is_none()
                    && self.flags[CERT_REC]
                {
                    self.begin_kex(now, rng);
                }
                self.arm_retransmit(now);
                Ok(())
            }
            Control::Hello(hello) => {
                let peer = self.peer.clone().ok_or(Error::Unauthenticated)?;
                if let Some((_, reply)) = self.last_reply.as_ref().filter(|(h, _)| *h == hello) {
                    self.outbox
                        .push_back(Control::Reply(reply.clone()).encode());
                    return Ok(());
                }
                if hello.alg != self.cfg.algorithm {
                    return Err(Error::Unauthenticated);
                }
                let (reply, keys) = kex::respond(
                    &hello,
                    &peer,
                    &self.me.signing_key,
                    &self.me.common_name,
                    rng,
                )?;
                self.peer_salt = hello.salt;
                self.local_salt = reply.salt;
                self.outbox
                    .push_back(Control::Reply(reply.clone()).encode());
                self.last_reply = Some((hello, reply));
                self.install_peer_keys(&keys, now);
                Ok(())
            }
            Control::Reply(reply) => {
                let Some(st) = self.kex.take() else {
                    return Ok(());
                }; // late duplicate
                let peer = self.peer.clone().ok_or(Error::Unauthenticated)?;
                match st.finish(&reply, &peer) {
                    Ok(keys) => {
                        self.peer_salt = reply.salt;
                        self.install_peer_keys(&keys, now);
                        Ok(())
                    }
                    Err(e) => {
                        // Forged or corrupted: keep waiting for the genuine reply.
                        self.kex = Some(st);
                        Err(e)
                    }
                }
            }
            Control::MetadataKey { index, sealed } => {
                let mut plain = [0u8; 96];
                let n = self.open_peer(&sealed, &mut plain)?;
                if n != 84 || plain[..4] != index.to_be_bytes() {
                    zeroize::Zeroize::zeroize(&mut plain);
                    return Err(Error::Unauthenticated);
                }
                let key = SecretBytes::<80>::from_slice(&plain[4..84])?;
                zeroize::Zeroize::zeroize(&mut plain);
                self.flags[SALT_ACK] = true; // the peer uses our exchange's key
                self.outbox
                    .push_back(Control::MetadataKeyAck(index).encode());
                if self.peer_mkey_index != Some(index) || self.data_tx.is_none() {
                    self.data_tx = Some((
                        index,
                        CbcHmacSealer::new(&data_key(&key, &self.me.common_name, &self.peer_cn)),
                    ));
                    self.peer_mkey_index = Some(index);
                    self.events.push_back(PeerEvent::PeerMetadataKey(index));
                }
                self.flags[KEY_REC] = true;
                Ok(())
            }
            Control::MetadataKeyAck(index) => {
                if self.local_mkey.as_ref().is_some_and(|(i, _)| *i == index)
                    && !self.flags[KEY_ACK]
                {
                    self.flags[KEY_ACK] = true;
                    for k in &mut self.data_rx {
                        if k.index != index && k.expires.is_none() {
                            k.expires = Some(now + KEY_OVERLAP);
                        }
                    }
                }
                self.arm_retransmit(now);
                Ok(())
            }
        }
    }

    fn open_peer(&mut self, sealed: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        let pk = self.peer_key.as_mut().ok_or(Error::Unauthenticated)?;
        match pk.rx.open(sealed, out) {
            Ok(n) => Ok(n),
            Err(e) => match &mut self.old_peer_rx {
                Some((old, _)) => old.open(sealed, out).map_err(|_| e),
                None => Err(e),
            },
        }
    }

    fn cert_failure(&mut self, e: Error) {
        self.events.push_back(PeerEvent::UnableToAuthenticate(e));
        if self.cfg.fail_mode == FailMode::FailHard {
            self.state = SecurityState::Removed;
            self.peer_key = None;
            self.data_tx = None;
            self.data_rx.clear();
            self.outbox.clear();
            self.events.push_back(PeerEvent::PeeringRemoved);
        }
    }

    /// Seals a data packet to the peer into `out`: `index u32 BE | packet`.
    /// Fails with [`Error::Unauthenticated`] when no key is in place (path out of service).
    pub fn seal_data(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        let (index, sealer) = self.data_tx.as_mut().ok_or(Error::Unauthenticated)?;
        if out.len() < 4 {
            return Err(Error::BufferTooSmall {
                needed: 4,
                have: out.len(),
            });
        }
        let (hdr, body) = out.split_at_mut(4);
        hdr.copy_from_slice(&index.to_be_bytes());
        Ok(4 + sealer.seal(payload, body)?)
    }

    /// Opens a data packet from the peer into `out`.
    pub fn open_data(&mut self, packet: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        let idx: [u8; 4] = packet
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or(Error::Unauthenticated)?;
        let index = u32::from_be_bytes(idx);
        match self.data_rx.iter_mut().find(|k| k.index == index) {
            Some(k) => k.opener.open(&packet[4..], out),
            None => {
                self.data_stats_retired.tampered += 1;
                Err(Error::Unauthenticated)
            }
        }
    }

    /// `show peers security`.
    pub fn status(&self) -> PeerStatus {
        let mut data = self.data_stats_retired;
        for k in &self.data_rx {
            let s = k.opener.stats();
            data.delivered += s.delivered;
            data.replayed += s.replayed;
            data.tampered += s.tampered;
        }
        PeerStatus {
            peer: self.peer_cn.clone(),
            state: self.state,
            salt: self.local_salt,
            peer_salt: self.peer_salt,
            key_index: self.local_mkey.as_ref().map(|k| k.0),
            peer_key_index: self.peer_mkey_index,
            cert_rec: self.flags[CERT_REC],
            cert_ack: self.flags[CERT_ACK],
            salt_rec: self.flags[SALT_REC],
            salt_ack: self.flags[SALT_ACK],
            key_rec: self.flags[KEY_REC],
            key_ack: self.flags[KEY_ACK],
            peer_rekey_count: self.rekeys,
            last_rekey: self.last_rekey,
            next_rekey: self.rekey_at,
            key_change_errors: self.key_change_errors,
            data,
        }
    }
}

/// A session's payload key (generated on demand per session; zeroized on drop).
pub type PayloadKey = SecretBytes<80>;

/// A session identifier carried in the metadata.
pub type SessionId = [u8; 16];

impl<A: PeerAuthenticator> Peer<A> {
    /// Builds the SVR metadata of a session's first packet into `out`: header TLV
    /// [`crate::tlv::TLV_METADATA_KEY_INDEX`] (the peer's metadata key index), payload TLVs
    /// [`crate::tlv::TLV_SESSION_ID`] and [`crate::tlv::TLV_SEALED_PAYLOAD_KEY`] (the
    /// payload key sealed under the peer's metadata key, CBC-HMAC).
    pub fn seal_session_metadata(
        &mut self,
        session: &SessionId,
        key: &PayloadKey,
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let (index, sealer) = self.data_tx.as_mut().ok_or(Error::Unauthenticated)?;
        let idx = index.to_be_bytes();
        let mut plain = [0u8; 96];
        plain[..16].copy_from_slice(session);
        plain[16..].copy_from_slice(key.secret_bytes());
        let mut sealed = [0u8; crate::packet::sealed_len(96)];
        let r = sealer.seal(&plain, &mut sealed);
        zeroize::Zeroize::zeroize(&mut plain);
        let n = r?;
        let md = crate::tlv::Metadata {
            header: vec![crate::tlv::Tlv {
                typ: crate::tlv::TLV_METADATA_KEY_INDEX,
                value: &idx,
            }],
            payload: vec![
                crate::tlv::Tlv {
                    typ: crate::tlv::TLV_SESSION_ID,
                    value: session,
                },
                crate::tlv::Tlv {
                    typ: crate::tlv::TLV_SEALED_PAYLOAD_KEY,
                    value: &sealed[..n],
                },
            ],
        };
        md.encode(out)
    }

    /// Parses and opens session metadata from the peer: the session id and its payload key.
    /// The session id in the clear must match the one sealed with the key.
    pub fn open_session_metadata(
        &mut self,
        metadata: &[u8],
    ) -> Result<(SessionId, PayloadKey), Error> {
        let md = crate::tlv::Metadata::parse(metadata)?;
        let idx = md
            .get(crate::tlv::TLV_METADATA_KEY_INDEX)
            .ok_or(Error::Malformed {
                what: "svr metadata",
                reason: "no metadata key index",
            })?;
        let index = u32::from_be_bytes(idx.try_into().map_err(|_| Error::BadLength {
            what: "metadata key index",
            len: idx.len(),
        })?);
        let session = md.get(crate::tlv::TLV_SESSION_ID).ok_or(Error::Malformed {
            what: "svr metadata",
            reason: "no session id",
        })?;
        let sealed = md
            .get(crate::tlv::TLV_SEALED_PAYLOAD_KEY)
            .ok_or(Error::Malformed {
                what: "svr metadata",
                reason: "no payload key",
            })?;
        let rx = self
            .data_rx
            .iter_mut()
            .find(|k| k.index == index)
            .ok_or(Error::Unauthenticated)?;
        let mut plain = [0u8; crate::packet::sealed_len(96)];
        let n = rx.opener.open(sealed, &mut plain)?;
        let ok = n == 96 && plain[..16] == *session;
        let mut sid = [0u8; 16];
        sid.copy_from_slice(&plain[..16]);
        let key = PayloadKey::from_slice(&plain[16..96]);
        zeroize::Zeroize::zeroize(&mut plain);
        if !ok {
            return Err(Error::Unauthenticated);
        }
        Ok((sid, key?))
    }
}
