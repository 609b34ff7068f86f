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
//! 1. certificates (`Cert`, `CertAck`), validated by the [`PeerAuthenticator`]; a side
//!    that does not hold the peer's certificate (it started or restarted) sends
//!    `CertRequest`, which the peer answers with its own `Cert`;
//! 2. salts: the signed key exchange ([`crate::kex`]); the peer with the smaller common
//!    name initiates. The responder first sends `KexRequest` with a fresh random nonce
//!    (and `restart` set while it holds no peer key); the `Hello` is signed for that
//!    nonce and carries the initiator's salt, the `Reply` the responder's. A nonce is
//!    used once (a new one goes out with each accepted hello) and a restarted responder
//!    has a new one, so a replayed hello is refused (`stale_hellos`) and can never make
//!    the responder install a key the initiator does not hold;
//! 3. metadata keys: each side sends its router metadata key (with its rekey index)
//!    sealed under the peer key, and the peer acknowledges the index.
//!
//! When all six flags are set the state is `MKEY_EXCH_COMP`.
//!
//! Data packets from A to B are protected with a key derived from **B's** metadata
//! key, both common names and A's **sender epoch** (a random `u64` drawn for every new
//! sealer: on start, when B's metadata key changes, and after every peer key exchange),
//! and carry `index u32 BE | epoch u64 BE` in front of the sealed packet
//! ([`crate::packet`]). A restarted sender or an HA node thus never repeats a (key,
//! sequence number) pair although it starts again at sequence 0. B derives the key of an
//! epoch it has not seen when a packet under it arrives and keeps it only if that packet
//! authenticates; the epochs seen before stay valid for [`KEY_OVERLAP`] (30 s). When a
//! router's metadata key changes, senders switch as soon as they receive the new key,
//! and the router keeps accepting the old key for [`KEY_OVERLAP`] after the peer
//! acknowledged the new one: delayed packets still open.
//!
//! HA: [`KeyManager::export_ha`] moves the metadata key, [`Peer::export_ha`] one peer's
//! data path (the peer's metadata key and, per receiving epoch, the sequence high-water
//! mark). The HA node opens an imported epoch only above its mark plus [`HA_SEQ_JUMP`],
//! seals under a fresh epoch, and runs a new key exchange, after which the peer moves
//! to a fresh epoch too.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hkdf::Hkdf;
use rand_core::CryptoRng;
use sha2::Sha384;

use crate::Error;
use crate::kex::{
    self, AuthenticatedPeer, KexAlgorithm, KexMessage, KexSigner, PeerAuthenticator, PeerKeys,
};
use crate::packet::{CbcHmacOpener, CbcHmacSealer, OpenStats, Opener, Sealer, Suite};
use crate::secret::{PacketKeyMaterial, SecretBytes};
use crate::tlv::Reader;
use subtle::ConstantTimeEq;

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
    suite: Suite,
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
            suite: Suite::CbcHmacSha384,
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
            suite: Suite::CbcHmacSha384,
        })
    }
    /// Key exchange algorithm.
    pub fn algorithm(&self) -> KexAlgorithm {
        self.algorithm
    }
    /// The data packet suite for this peer (default CBC-HMAC). It is signed into the
    /// key exchange; a peer configured otherwise gets no key (refused and counted).
    pub fn with_suite(mut self, suite: Suite) -> Self {
        self.suite = suite;
        self
    }
    /// Data packet suite.
    pub fn suite(&self) -> Suite {
        self.suite
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
    /// This router's key could not sign a hello or reply (`Error::Signer`): the
    /// exchange is retried at the retransmit interval.
    SigningFailed(Error),
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
    /// Key exchange errors (bad signatures, bad shares, stale hellos).
    pub key_change_errors: u64,
    /// Hellos refused as stale: replayed, or signed for a nonce that is not the
    /// responder's current one.
    pub stale_hellos: u64,
    /// Data packet counters (all keys).
    pub data: OpenStats,
}

/// This router's identity for peering.
pub struct LocalIdentity {
    /// Certificate (DER) sent to peers.
    pub cert_der: Vec<u8>,
    /// The certificate's private key: a `p256::ecdsa::SigningKey`, or with feature
    /// `pki` any `ssr_pki::keys::RouterKey` (the TPM-held router key) wrapped in
    /// [`crate::pki::RouterKeySigner`]. Shared: all peers of a router sign with its one
    /// key.
    pub signing_key: Arc<dyn KexSigner + Send + Sync>,
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

/// Data key from a router metadata key for traffic `sender -> receiver` sent by the sender
/// incarnation `epoch`: `HKDF-SHA-384(salt = "svr data key v2", ikm = metadata key,
/// info = len|sender | len|receiver | epoch u64 BE)`. Every sealer draws a fresh random
/// 64-bit epoch, so a restarted sender or an HA node never reuses a (key, sequence
/// number) pair even though it starts again at sequence 0.
fn data_key(mkey: &SecretBytes<80>, sender: &str, receiver: &str, epoch: u64) -> PacketKeyMaterial {
    let hk = Hkdf::<Sha384>::new(Some(b"svr data key v2"), mkey.secret_bytes());
    let mut info = Vec::new();
    for s in [sender, receiver] {
        info.extend_from_slice(&(s.len() as u16).to_be_bytes());
        info.extend_from_slice(s.as_bytes());
    }
    info.extend_from_slice(&epoch.to_be_bytes());
    let mut out = [0u8; 80];
    let _ = hk.expand(&info, &mut out); // 80 ≤ 255·48
    SecretBytes::from_bytes(out)
}

/// Data packet header: receiver's metadata key index u32 BE | sender epoch u64 BE.
pub const DATA_HEADER_LEN: usize = 12;

/// Sender epochs kept per metadata key index on the receiving side (the newest, and
/// older ones during their [`KEY_OVERLAP`]); beyond that the oldest is retired at once.
const MAX_EPOCHS: usize = 4;

// Control message wire format: version u8 (1) | type u8 | body.
const CTL_VERSION: u8 = 1;
const T_CERT: u8 = 1;
const T_CERT_ACK: u8 = 2;
const T_HELLO: u8 = 3;
const T_REPLY: u8 = 4;
const T_MKEY: u8 = 5;
const T_MKEY_ACK: u8 = 6;
const T_KEX_REQUEST: u8 = 7;
const T_CERT_REQUEST: u8 = 8;

/// Length of the responder's freshness nonce.
pub const NONCE_LEN: usize = 16;

/// A control message (decoded strictly; see [`Control::decode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Certificate (DER).
    Cert(Vec<u8>),
    /// Certificate (DER), from a peer that does not have ours yet (it started or
    /// restarted): answered with our certificate.
    CertRequest(Vec<u8>),
    /// Certificate received and valid.
    CertAck,
    /// Key exchange hello, signed for the responder's current freshness nonce (which it
    /// repeats in the clear so that a stale one is told apart from a forgery).
    Hello {
        /// The responder nonce the hello was made for.
        nonce: [u8; NONCE_LEN],
        /// The initiator's data packet suite (signed with the nonce).
        suite: Suite,
        /// The signed key exchange message.
        msg: KexMessage,
    },
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
    /// From the responder: the nonce the next hello must be signed for; `restart` when the
    /// responder has no peer key (it started or restarted, or refused a stale hello).
    KexRequest {
        /// Fresh random nonce (single use: replaced once a hello for it is accepted).
        nonce: [u8; NONCE_LEN],
        /// The responder asks for an exchange now.
        restart: bool,
    },
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
            Self::CertRequest(c) => {
                v.push(T_CERT_REQUEST);
                v.extend_from_slice(c);
            }
            Self::CertAck => v.push(T_CERT_ACK),
            Self::Hello { nonce, suite, msg } => {
                v.push(T_HELLO);
                v.extend_from_slice(nonce);
                v.push(suite.code());
                v.extend_from_slice(&msg.encode());
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
            Self::KexRequest { nonce, restart } => {
                v.push(T_KEX_REQUEST);
                v.extend_from_slice(nonce);
                v.push(u8::from(*restart));
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
            T_CERT_REQUEST if !rest.is_empty() => Self::CertRequest(rest.to_vec()),
            T_CERT_ACK if rest.is_empty() => Self::CertAck,
            T_HELLO if rest.len() > NONCE_LEN + 1 => {
                let mut nonce = [0u8; NONCE_LEN];
                nonce.copy_from_slice(&rest[..NONCE_LEN]);
                Self::Hello {
                    nonce,
                    suite: Suite::from_code(rest[NONCE_LEN])?,
                    msg: KexMessage::decode(&rest[NONCE_LEN + 1..])?,
                }
            }
            T_KEX_REQUEST if rest.len() == NONCE_LEN + 1 && rest[NONCE_LEN] <= 1 => {
                let mut nonce = [0u8; NONCE_LEN];
                nonce.copy_from_slice(&rest[..NONCE_LEN]);
                Self::KexRequest {
                    nonce,
                    restart: rest[NONCE_LEN] == 1,
                }
            }
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

/// Receiving state for one of this router's metadata key indexes.
struct RxKey {
    index: u32,
    /// The metadata key, to derive the key of a new sender epoch.
    mkey: SecretBytes<80>,
    epochs: Vec<RxEpoch>,
    expires: Option<Instant>,
    /// Newest time of a retired epoch: an epoch not held whose time is not above it is
    /// refused (its packets may be replays; its window is gone).
    retired_time: u32,
}

/// One sender incarnation's receiving key.
struct RxEpoch {
    epoch: u64,
    opener: Opener,
    expires: Option<Instant>,
}

/// Sending state: the peer's metadata key and this incarnation's epoch.
struct DataTx {
    index: u32,
    mkey: SecretBytes<80>,
    epoch: u64,
    sealer: Sealer,
    /// Peer key exchanges completed when it was made ([`Peer::status`] `peer_rekey_count`).
    made_at_rekey: u64,
}

fn add_stats(into: &mut OpenStats, s: OpenStats) {
    into.delivered += s.delivered;
    into.replayed += s.replayed;
    into.tampered += s.tampered;
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
    /// Responder nonce the exchange in progress was signed for.
    kex_nonce: [u8; NONCE_LEN],
    /// When the last exchange was started (initiator; rate limit of restart requests).
    kex_started: Option<Instant>,
    /// Responder: the nonce the next hello must carry.
    hello_nonce: Option<[u8; NONCE_LEN]>,
    /// Initiator: the latest nonce the responder sent.
    peer_nonce: Option<[u8; NONCE_LEN]>,
    /// Responder: hellos refused as stale (replayed or made for an old nonce).
    stale_hellos: u64,
    last_reply: Option<(KexMessage, KexMessage)>,
    peer_key: Option<PeerKeyState>,
    old_peer_rx: Option<(CbcHmacOpener, Instant)>,
    local_salt: u64,
    peer_salt: u64,
    local_mkey: Option<(u32, SecretBytes<80>)>,
    peer_mkey_index: Option<u32>,
    data_tx: Option<DataTx>,
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
            kex_nonce: [0; NONCE_LEN],
            kex_started: None,
            hello_nonce: None,
            peer_nonce: None,
            stale_hellos: 0,
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
        self.send_cert();
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
            .flat_map(|k| k.epochs.iter().map(|e| e.expires).chain([k.expires]))
            .flatten()
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
            || self.peer_key.is_none()
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
        self.data_rx.retain_mut(|k| {
            let keep = k.expires.is_none_or(|e| now < e);
            let mut newest_gone = k.retired_time;
            k.epochs.retain(|e| {
                let keep_e = keep && e.expires.is_none_or(|x| now < x);
                if !keep_e {
                    add_stats(retired, e.opener.stats());
                    newest_gone = newest_gone.max(epoch_time(e.epoch));
                }
                keep_e
            });
            k.retired_time = newest_gone;
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
            self.send_cert();
        }
        if let Some(k) = &self.kex {
            if self.peer_nonce == Some(self.kex_nonce) {
                let hello = Control::Hello {
                    nonce: self.kex_nonce,
                    suite: self.cfg.suite,
                    msg: k.hello().clone(),
                };
                self.outbox.push_back(hello.encode());
            } else {
                // The responder has moved on to another nonce: a new hello for it.
                self.begin_kex(now, rng);
            }
        } else if self.initiator && self.peer_key.is_none() && self.peer.is_some() {
            self.begin_kex(now, rng);
        }
        if !self.initiator && self.peer_key.is_none() && self.certs_done() {
            self.send_kex_request(rng);
        }
        if self.peer_key.is_some() && !self.flags[KEY_ACK] {
            self.send_mkey();
        }
    }

    /// Our certificate; asking for the peer's while we do not have it.
    fn send_cert(&mut self) {
        let der = self.me.cert_der.clone();
        let m = if self.flags[CERT_REC] {
            Control::Cert(der)
        } else {
            Control::CertRequest(der)
        };
        self.outbox.push_back(m.encode());
    }

    /// Wall time at `now`: the Unix time given at creation advanced by the virtual clock.
    fn unix_at(&self, now: Instant) -> u64 {
        self.now_unix_base
            .saturating_add(now.saturating_duration_since(self.created).as_secs())
    }

    fn certs_done(&self) -> bool {
        self.flags[CERT_REC] && self.flags[CERT_ACK] && self.peer.is_some()
    }

    /// Responder: tells the initiator the nonce its next hello must be signed for.
    fn send_kex_request<R: CryptoRng>(&mut self, rng: &mut R) {
        let nonce = *self.hello_nonce.get_or_insert_with(|| {
            let mut n = [0u8; NONCE_LEN];
            rng.fill_bytes(&mut n);
            n
        });
        let restart = self.peer_key.is_none();
        self.outbox
            .push_back(Control::KexRequest { nonce, restart }.encode());
    }

    /// Initiator: starts an exchange once the responder's nonce is known.
    fn begin_kex<R: CryptoRng>(&mut self, now: Instant, rng: &mut R) {
        let Some(nonce) = self.peer_nonce else {
            return; // The responder's KexRequest starts it.
        };
        let started = kex::Initiator::start(
            self.cfg.algorithm,
            &*self.me.signing_key,
            &self.me.common_name,
            &self.peer_cn,
            &freshness(&nonce, self.cfg.suite),
            rng,
        );
        let (st, hello) = match started {
            Ok(s) => s,
            Err(e) => {
                // Nothing sent; tried again at the retransmit interval (a rekey too:
                // the current key stays in use meanwhile).
                self.key_change_errors += 1;
                self.events.push_back(PeerEvent::SigningFailed(e));
                self.retransmit_at = Some(now + self.cfg.retransmit);
                if self.peer_key.is_some() {
                    self.rekey_at = Some(now + self.cfg.retransmit);
                }
                return;
            }
        };
        self.local_salt = hello.salt;
        let suite = self.cfg.suite;
        self.outbox.push_back(
            Control::Hello {
                nonce,
                suite,
                msg: hello,
            }
            .encode(),
        );
        self.kex = Some(st);
        self.kex_nonce = nonce;
        self.kex_started = Some(now);
        if self.peer_key.is_none() {
            self.state = SecurityState::SaltExch;
        }
        self.retransmit_at = Some(now + self.cfg.retransmit);
    }

    /// The router's metadata key changed (or is set for the first time).
    pub fn handle_local_metadata_key(&mut self, manager: &KeyManager, now: Instant) {
        self.local_mkey = None;
        let new_index = manager.index();
        // The old key's opener stays until KEY_OVERLAP after the peer acknowledges.
        // (Receiving keys are derived per sender epoch when its first packet authenticates.)
        let have = self.data_rx.iter().position(|k| k.index == new_index);
        let same_key = have.is_some_and(|i| {
            bool::from(
                self.data_rx[i]
                    .mkey
                    .secret_bytes()
                    .ct_eq(manager.key().secret_bytes()),
            )
        });
        if let (Some(i), false) = (have, same_key) {
            let gone = self.data_rx.remove(i);
            for e in &gone.epochs {
                add_stats(&mut self.data_stats_retired, e.opener.stats());
            }
        }
        if !same_key {
            self.data_rx.push(RxKey {
                index: new_index,
                mkey: SecretBytes::from_bytes(*manager.key().secret_bytes()),
                epochs: Vec::new(),
                expires: None,
                retired_time: 0,
            });
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
        let ctl = Control::decode(msg)?;
        let request = matches!(ctl, Control::CertRequest(_));
        match ctl {
            Control::Cert(der) | Control::CertRequest(der) => {
                // Certificates are judged at wall time: the Unix time given at creation
                // advanced by the virtual clock.
                let now_unix = self.unix_at(now);
                match self.auth.authenticate(&der, now_unix) {
                    Ok(p) if p.common_name == self.peer_cn => {
                        self.peer = Some(p);
                        self.flags[CERT_REC] = true;
                        if request {
                            self.send_cert();
                        }
                        self.outbox.push_back(Control::CertAck.encode());
                        // A certificate may mean that the peer (re)started: the
                        // responder hands out its nonce again.
                        if !self.initiator && self.flags[CERT_ACK] {
                            self.send_kex_request(rng);
                        }
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
                let first = !self.flags[CERT_ACK];
                self.flags[CERT_ACK] = true;
                if !self.initiator && first && self.certs_done() {
                    self.send_kex_request(rng);
                }
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
            Control::Hello {
                nonce,
                suite,
                msg: hello,
            } => {
                let peer = self.peer.clone().ok_or(Error::Unauthenticated)?;
                if let Some((_, reply)) = self.last_reply.as_ref().filter(|(h, _)| *h == hello) {
                    self.outbox
                        .push_back(Control::Reply(reply.clone()).encode());
                    return Ok(());
                }
                if self.initiator || self.hello_nonce != Some(nonce) {
                    // Replayed, or made for a nonce this incarnation never gave or has
                    // already used: refused and counted; the current nonce goes out again.
                    self.stale_hellos += 1;
                    if !self.initiator && self.certs_done() {
                        self.send_kex_request(rng);
                    }
                    return Err(Error::StaleHello);
                }
                if hello.alg != self.cfg.algorithm || suite != self.cfg.suite {
                    // Both ends must agree; the suite is signed, so a changed one fails
                    // the signature below even between two ends configured alike.
                    return Err(Error::Unauthenticated);
                }
                let (reply, keys) = kex::respond(
                    &hello,
                    &peer,
                    &*self.me.signing_key,
                    &self.me.common_name,
                    &freshness(&nonce, suite),
                    rng,
                )
                .inspect_err(|e| {
                    if matches!(e, Error::Signer { .. }) {
                        self.events.push_back(PeerEvent::SigningFailed(e.clone()));
                    }
                })?;
                self.peer_salt = hello.salt;
                self.local_salt = reply.salt;
                self.outbox
                    .push_back(Control::Reply(reply.clone()).encode());
                self.last_reply = Some((hello, reply));
                // Single use: the next hello needs a new nonce.
                self.hello_nonce = None;
                self.install_peer_keys(&keys, now);
                self.send_kex_request(rng);
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
                // A new index, or the same index with another key (the peer restarted or
                // failed over): a new sealer with a fresh epoch.
                // After every peer key exchange too: the peer may have restarted or failed
                // over to its HA node, which drops old epochs above its imported mark.
                let same = self.data_tx.as_ref().is_some_and(|t| {
                    t.index == index
                        && t.made_at_rekey == self.rekeys
                        && bool::from(t.mkey.secret_bytes().ct_eq(key.secret_bytes()))
                });
                if !same {
                    let mut tx = new_data_tx(
                        self.cfg.suite,
                        index,
                        key,
                        &self.me.common_name,
                        &self.peer_cn,
                        new_epoch(self.unix_at(now), rng),
                    );
                    tx.made_at_rekey = self.rekeys;
                    self.data_tx = Some(tx);
                    self.peer_mkey_index = Some(index);
                    self.events.push_back(PeerEvent::PeerMetadataKey(index));
                }
                self.flags[KEY_REC] = true;
                Ok(())
            }
            Control::KexRequest { nonce, restart } => {
                if !self.initiator {
                    return Ok(());
                }
                self.peer_nonce = Some(nonce);
                if !self.certs_done() {
                    return Ok(());
                }
                // Unauthenticated: a replayed request can start at most one exchange per
                // retransmit interval.
                let rate_ok = self
                    .kex_started
                    .is_none_or(|t| now >= t + self.cfg.retransmit);
                let stale = self.kex.is_some() && self.kex_nonce != nonce;
                if (self.kex.is_none() && self.peer_key.is_none())
                    || (restart && rate_ok && (self.kex.is_none() || stale))
                {
                    self.begin_kex(now, rng);
                }
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

    /// Seals a data packet to the peer into `out`:
    /// `index u32 BE | epoch u64 BE | packet` ([`DATA_HEADER_LEN`] + [`crate::packet::sealed_len`]).
    /// Fails with [`Error::Unauthenticated`] when no key is in place (path out of service).
    pub fn seal_data(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        let tx = self.data_tx.as_mut().ok_or(Error::Unauthenticated)?;
        if out.len() < DATA_HEADER_LEN {
            return Err(Error::BufferTooSmall {
                needed: DATA_HEADER_LEN,
                have: out.len(),
            });
        }
        let (hdr, body) = out.split_at_mut(DATA_HEADER_LEN);
        hdr[..4].copy_from_slice(&tx.index.to_be_bytes());
        hdr[4..].copy_from_slice(&tx.epoch.to_be_bytes());
        Ok(DATA_HEADER_LEN + tx.sealer.seal(payload, body)?)
    }

    /// Opens a data packet from the peer into `out`. A packet under a sender epoch not
    /// seen before is opened with that epoch's key derived on the spot; only if it
    /// authenticates does the epoch become the current one (the others then stay valid
    /// for [`KEY_OVERLAP`] from `now`).
    pub fn open_data(
        &mut self,
        packet: &[u8],
        out: &mut [u8],
        now: Instant,
    ) -> Result<usize, Error> {
        let (index, epoch) = parse_data_header(packet).ok_or_else(|| {
            self.data_stats_retired.tampered += 1;
            Error::Unauthenticated
        })?;
        self.rx_open(index, epoch, &packet[DATA_HEADER_LEN..], out, now)
    }

    fn rx_open(
        &mut self,
        index: u32,
        epoch: u64,
        sealed: &[u8],
        out: &mut [u8],
        now: Instant,
    ) -> Result<usize, Error> {
        let Some(k) = self.data_rx.iter_mut().find(|k| k.index == index) else {
            self.data_stats_retired.tampered += 1;
            return Err(Error::Unauthenticated);
        };
        if let Some(e) = k.epochs.iter_mut().find(|e| e.epoch == epoch) {
            return e.opener.open(sealed, out);
        }
        // A sender epoch not seen yet: accepted only once a packet under it authenticates,
        // and never one no newer than an epoch already retired.
        if epoch_time(epoch) <= k.retired_time {
            self.data_stats_retired.replayed += 1;
            let seq = CbcHmacOpener::peek_seq(sealed).unwrap_or(0);
            return Err(Error::Replay { seq });
        }
        let mut opener = Opener::new(
            self.cfg.suite,
            &data_key(&k.mkey, &self.peer_cn, &self.me.common_name, epoch),
        );
        let r = opener.open(sealed, out);
        if r.is_err() {
            add_stats(&mut self.data_stats_retired, opener.stats());
            return r;
        }
        // The newest epoch (by its time) is the current one; any other is in its overlap,
        // a late packet of an older one included.
        let newest = k
            .epochs
            .iter()
            .all(|e| epoch_time(e.epoch) <= epoch_time(epoch));
        let mut expires = None;
        if newest {
            for e in &mut k.epochs {
                if e.expires.is_none() {
                    e.expires = Some(now + KEY_OVERLAP);
                }
            }
        } else {
            expires = Some(now + KEY_OVERLAP);
        }
        if k.epochs.len() >= MAX_EPOCHS {
            let old = k.epochs.remove(0);
            k.retired_time = k.retired_time.max(epoch_time(old.epoch));
            add_stats(&mut self.data_stats_retired, old.opener.stats());
        }
        k.epochs.push(RxEpoch {
            epoch,
            opener,
            expires,
        });
        r
    }

    /// `show peers security`.
    pub fn status(&self) -> PeerStatus {
        let mut data = self.data_stats_retired;
        for e in self.data_rx.iter().flat_map(|k| &k.epochs) {
            add_stats(&mut data, e.opener.stats());
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
            stale_hellos: self.stale_hellos,
            data,
        }
    }
}

/// How far above an exported receive high-water mark the HA node starts its replay
/// windows: covers the packets the old node accepted after the last export (the sync
/// lag), so none of them can be replayed to the new node.
pub const HA_SEQ_JUMP: u64 = 1 << 24;

const PEER_HA_VERSION: u8 = 1;
const NO_EXPIRY: u32 = u32::MAX;
const MAX_RX_KEYS: usize = 16;

/// One peer's data-path state for the HA node ([`Peer::export_ha`]). Secret: zeroized on
/// drop, `Debug` prints `[redacted]`.
pub struct PeerHaExport(Vec<u8>);

impl PeerHaExport {
    /// The bytes to ship to the HA node (over its authenticated, encrypted sync link).
    pub fn secret_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for PeerHaExport {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl core::fmt::Debug for PeerHaExport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("[redacted]")
    }
}

fn remaining_ms(expires: Option<Instant>, now: Instant) -> u32 {
    expires.map_or(NO_EXPIRY, |e| {
        u32::try_from(e.saturating_duration_since(now).as_millis())
            .unwrap_or(NO_EXPIRY - 1)
            .min(NO_EXPIRY - 1)
    })
}

fn expiry_at(ms: u32, now: Instant) -> Option<Instant> {
    (ms != NO_EXPIRY).then(|| now + Duration::from_millis(u64::from(ms)))
}

impl<A: PeerAuthenticator> Peer<A> {
    /// HA export of this peer's data path:
    /// `version u8 (1) | tx u8 (0/1) [| peer key index u32 | peer metadata key (80)]
    /// | n u8 | n × (index u32 | metadata key (80) | overlap ms u32 | retired time u32 | m u8 |
    /// m × (epoch u64 | received u8 (0/1) | high-water mark u64 | overlap ms u32))`
    /// (big-endian; overlap `u32::MAX` = none). The sending direction carries no sequence
    /// number: the HA node seals under a fresh epoch, a new key, so nothing it sends can
    /// repeat a (key, sequence number). Peer keys are not exported: the HA node runs a
    /// new exchange.
    pub fn export_ha(&self, now: Instant) -> PeerHaExport {
        let mut v = vec![PEER_HA_VERSION];
        match &self.data_tx {
            Some(t) => {
                v.push(1);
                v.extend_from_slice(&t.index.to_be_bytes());
                v.extend_from_slice(t.mkey.secret_bytes());
            }
            None => v.push(0),
        }
        let keys = &self.data_rx[self.data_rx.len().saturating_sub(MAX_RX_KEYS)..];
        v.push(keys.len() as u8);
        for k in keys {
            v.extend_from_slice(&k.index.to_be_bytes());
            v.extend_from_slice(k.mkey.secret_bytes());
            v.extend_from_slice(&remaining_ms(k.expires, now).to_be_bytes());
            v.extend_from_slice(&k.retired_time.to_be_bytes());
            v.push(k.epochs.len() as u8);
            for e in &k.epochs {
                v.extend_from_slice(&e.epoch.to_be_bytes());
                let top = e.opener.high_water_mark();
                v.push(u8::from(top.is_some()));
                v.extend_from_slice(&top.unwrap_or(0).to_be_bytes());
                v.extend_from_slice(&remaining_ms(e.expires, now).to_be_bytes());
            }
        }
        PeerHaExport(v)
    }

    /// On the HA node, right after [`Peer::new`] (and before
    /// [`Peer::handle_local_metadata_key`] with the imported [`KeyManager`]): takes over
    /// the data path of [`Peer::export_ha`]. Each exported receiving epoch opens only
    /// sequence numbers above its high-water mark plus [`HA_SEQ_JUMP`] (nothing captured
    /// before the failover is accepted); the sending side gets a fresh epoch. Strict:
    /// anything but an exact, well-formed export is refused and nothing changes.
    pub fn import_ha<R: CryptoRng>(
        &mut self,
        state: &[u8],
        now: Instant,
        rng: &mut R,
    ) -> Result<(), Error> {
        const W: &str = "peer ha export";
        let bad = |reason| Error::Malformed { what: W, reason };
        let mut r = Reader::new(state);
        if r.u8() != Some(PEER_HA_VERSION) {
            return Err(bad("unknown version"));
        }
        let u32_of = |r: &mut Reader<'_>| -> Option<u32> {
            r.take(4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let key_of = |r: &mut Reader<'_>| -> Option<SecretBytes<80>> {
            r.take(80).and_then(|b| SecretBytes::from_slice(b).ok())
        };
        let tx = match r.u8() {
            Some(0) => None,
            Some(1) => {
                let index = u32_of(&mut r).ok_or(bad("short"))?;
                Some((index, key_of(&mut r).ok_or(bad("short"))?))
            }
            _ => return Err(bad("bad tx flag")),
        };
        let n = usize::from(r.u8().ok_or(bad("short"))?);
        if n > MAX_RX_KEYS {
            return Err(bad("too many keys"));
        }
        let mut rx = Vec::with_capacity(n);
        for _ in 0..n {
            let index = u32_of(&mut r).ok_or(bad("short"))?;
            let mkey = key_of(&mut r).ok_or(bad("short"))?;
            let expires = expiry_at(u32_of(&mut r).ok_or(bad("short"))?, now);
            let retired_time = u32_of(&mut r).ok_or(bad("short"))?;
            let m = usize::from(r.u8().ok_or(bad("short"))?);
            if m > MAX_EPOCHS {
                return Err(bad("too many epochs"));
            }
            let mut epochs = Vec::with_capacity(m);
            for _ in 0..m {
                let epoch = r.u64().ok_or(bad("short"))?;
                let seen = r.u8().ok_or(bad("short"))?;
                let top = r.u64().ok_or(bad("short"))?;
                let e_expires = expiry_at(u32_of(&mut r).ok_or(bad("short"))?, now);
                let floor = match seen {
                    0 => HA_SEQ_JUMP - 1,
                    1 => top.saturating_add(HA_SEQ_JUMP),
                    _ => return Err(bad("bad flag")),
                };
                let material = data_key(&mkey, &self.peer_cn, &self.me.common_name, epoch);
                epochs.push(RxEpoch {
                    epoch,
                    opener: Opener::after(self.cfg.suite, &material, floor),
                    expires: e_expires,
                });
            }
            // Epochs the export does not hold (begun after it) may carry packets captured
            // before the failover: only epochs begun after the import are new.
            rx.push(RxKey {
                index,
                mkey,
                epochs,
                expires,
                retired_time: retired_time.max(self.unix_at(now) as u32),
            });
        }
        if !r.is_empty() {
            return Err(bad("trailing bytes"));
        }
        if let Some((index, key)) = tx {
            let mut t = new_data_tx(
                self.cfg.suite,
                index,
                key,
                &self.me.common_name,
                &self.peer_cn,
                new_epoch(self.unix_at(now), rng),
            );
            t.made_at_rekey = self.rekeys;
            self.data_tx = Some(t);
            self.peer_mkey_index = Some(index);
        }
        self.data_rx = rx;
        Ok(())
    }
}

/// What the hello signs besides the key exchange message: the responder nonce and the
/// packet suite.
fn freshness(nonce: &[u8; NONCE_LEN], suite: Suite) -> [u8; NONCE_LEN + 1] {
    let mut f = [0u8; NONCE_LEN + 1];
    f[..NONCE_LEN].copy_from_slice(nonce);
    f[NONCE_LEN] = suite.code();
    f
}

fn parse_data_header(packet: &[u8]) -> Option<(u32, u64)> {
    let h = packet.get(..DATA_HEADER_LEN)?;
    let index = u32::from_be_bytes(h[..4].try_into().ok()?);
    let epoch = u64::from_be_bytes(h[4..].try_into().ok()?);
    Some((index, epoch))
}

/// A sender epoch: the Unix time in seconds (u32) in the high half, 32 random bits in
/// the low half. Fresh per sealer; increasing across the incarnations of a sender whose
/// clock does not go back, which lets receivers refuse epochs older than retired ones.
fn new_epoch<R: CryptoRng>(now_unix: u64, rng: &mut R) -> u64 {
    (u64::from(now_unix as u32) << 32) | u64::from(rng.next_u32())
}

fn epoch_time(epoch: u64) -> u32 {
    (epoch >> 32) as u32
}

fn new_data_tx(
    suite: Suite,
    index: u32,
    mkey: SecretBytes<80>,
    me: &str,
    peer: &str,
    epoch: u64,
) -> DataTx {
    DataTx {
        index,
        sealer: Sealer::new(suite, &data_key(&mkey, me, peer, epoch)),
        mkey,
        epoch,
        made_at_rekey: 0,
    }
}

/// A session's payload key (generated on demand per session; zeroized on drop).
pub type PayloadKey = SecretBytes<80>;

/// A session identifier carried in the metadata.
pub type SessionId = [u8; 16];

/// Sealed in the metadata: session id (16) | generation u32 | payload key (80).
const SEALED_KEY_LEN: usize = 100;

impl<A: PeerAuthenticator> Peer<A> {
    /// Builds the SVR metadata of a session's first packet (and of the first packets
    /// after a payload rekey) into `out`: header TLV
    /// [`crate::tlv::TLV_METADATA_KEY_INDEX`] (`index u32 | epoch u64`, as a data packet
    /// header), payload TLVs [`crate::tlv::TLV_SESSION_ID`] and
    /// [`crate::tlv::TLV_SEALED_PAYLOAD_KEY`] (`session id (16) | generation u32 |
    /// payload key (80)` sealed under this sender's data key, CBC-HMAC).
    pub fn seal_session_metadata(
        &mut self,
        key: &crate::session::SessionKey,
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let session = &key.session;
        let tx = self.data_tx.as_mut().ok_or(Error::Unauthenticated)?;
        let mut idx = [0u8; DATA_HEADER_LEN];
        idx[..4].copy_from_slice(&tx.index.to_be_bytes());
        idx[4..].copy_from_slice(&tx.epoch.to_be_bytes());
        let sealer = &mut tx.sealer;
        let mut plain = [0u8; SEALED_KEY_LEN];
        plain[..16].copy_from_slice(session);
        plain[16..20].copy_from_slice(&key.generation.to_be_bytes());
        plain[20..].copy_from_slice(key.key.secret_bytes());
        let mut sealed = [0u8; crate::packet::sealed_len(SEALED_KEY_LEN)];
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

    /// Parses and opens session metadata from the peer: the session id, the key
    /// generation and the payload key (for [`crate::session::SessionRx`]). The session id
    /// in the clear must match the one sealed with the key.
    pub fn open_session_metadata(
        &mut self,
        metadata: &[u8],
        now: Instant,
    ) -> Result<crate::session::SessionKey, Error> {
        let md = crate::tlv::Metadata::parse(metadata)?;
        let idx = md
            .get(crate::tlv::TLV_METADATA_KEY_INDEX)
            .ok_or(Error::Malformed {
                what: "svr metadata",
                reason: "no metadata key index",
            })?;
        let (index, epoch) = parse_data_header(idx)
            .filter(|_| idx.len() == DATA_HEADER_LEN)
            .ok_or(Error::BadLength {
                what: "metadata key index",
                len: idx.len(),
            })?;
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
        let mut plain = [0u8; crate::packet::sealed_len(SEALED_KEY_LEN)];
        let n = self.rx_open(index, epoch, sealed, &mut plain, now)?;
        let ok = n == SEALED_KEY_LEN && plain[..16] == *session;
        let mut sid = [0u8; 16];
        sid.copy_from_slice(&plain[..16]);
        let generation = u32::from_be_bytes([plain[16], plain[17], plain[18], plain[19]]);
        let key = PayloadKey::from_slice(&plain[20..SEALED_KEY_LEN]);
        zeroize::Zeroize::zeroize(&mut plain);
        if !ok {
            return Err(Error::Unauthenticated);
        }
        Ok(crate::session::SessionKey {
            session: sid,
            generation,
            key: key?,
        })
    }
}
