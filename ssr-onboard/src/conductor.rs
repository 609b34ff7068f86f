//! The conductor half: token issuing, the used-token register, and the per-connection
//! handshake state machine.
//!
//! A token is consumed the moment the conductor accepts it in a `hello` (one attempt
//! per token: a failed PSK or key proof afterwards does not give it back).

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use p256::ecdsa::SigningKey;
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::audit::{AuditEvent, AuditKind};
use crate::msg::{Challenge, Message, Refusal, RefusalCode, Welcome};
use crate::psk::Psk;
use crate::router::HANDSHAKE_TIMEOUT;
use crate::signer::verify_router_signature;
use crate::ssh::{CONDUCTOR_SSH_PORT, SshPublicKey};
use crate::token::{self, Token, key_thumbprint};
use crate::transcript::{self, Hash, Role};
use crate::{Error, ErrorKind};

/// The conductor's long-lived onboarding settings.
pub struct ConductorPolicy {
    name: String,
    token_key: SigningKey,
    routers: BTreeMap<String, Psk>,
    host_key: SshPublicKey,
    sco_enabled: bool,
}

impl core::fmt::Debug for ConductorPolicy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ConductorPolicy")
            .field("name", &self.name)
            .field("routers", &self.routers.keys().collect::<Vec<_>>())
            .field("sco_enabled", &self.sco_enabled)
            .finish_non_exhaustive()
    }
}

impl ConductorPolicy {
    /// A policy: the conductor's `name` (token issuer), its private key (signs
    /// tokens), each router's PSK, and the conductor's SSH host key.
    pub fn new(
        name: impl Into<String>,
        token_key: SigningKey,
        routers: BTreeMap<String, Psk>,
        host_key: SshPublicKey,
    ) -> Self {
        Self {
            name: name.into(),
            token_key,
            routers,
            host_key,
            sco_enabled: true,
        }
    }

    /// Enables or disables SCO (when enabled, legacy asset-id onboarding is refused).
    pub fn set_sco_enabled(&mut self, enabled: bool) {
        self.sco_enabled = enabled;
    }

    /// The conductor's name (token issuer).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates a router-specific token for a router this conductor knows.
    pub fn issue_token<R: CryptoRng + ?Sized>(
        &self,
        router: &str,
        unix_now: u64,
        lifetime_secs: u64,
        router_key_spki: Option<&[u8]>,
        rng: &mut R,
    ) -> Result<(Token, AuditEvent), Error> {
        if !self.routers.contains_key(router) {
            return Err(Error::UnknownRouter {
                router: router.into(),
            });
        }
        let t = token::issue(
            &self.token_key,
            &self.name,
            router,
            unix_now,
            lifetime_secs,
            router_key_spki,
            rng,
        )?;
        let c = t.unverified_claims();
        let ev = AuditEvent {
            time: unix_now,
            event: AuditKind::TokenCreated,
            side: "conductor",
            router: Some(router.into()),
            jti: Some(c.jti.clone()),
            detail: format!("expires at {}", c.exp),
        };
        Ok((t, ev))
    }

    /// Handles a legacy (asset-id) onboarding attempt: refused when SCO is enabled.
    pub fn handle_legacy(&self, asset_id: &str, unix_now: u64) -> (Result<(), Error>, AuditEvent) {
        let asset: String = asset_id
            .chars()
            .filter(|c| !c.is_control())
            .take(128)
            .collect();
        if self.sco_enabled {
            (
                Err(Error::LegacyRefused {
                    asset_id: asset.clone(),
                }),
                AuditEvent {
                    time: unix_now,
                    event: AuditKind::LegacyRefused,
                    side: "conductor",
                    router: None,
                    jti: None,
                    detail: format!("asset-id {asset:?}: secure conductor onboarding is enabled"),
                },
            )
        } else {
            (
                Ok(()),
                AuditEvent {
                    time: unix_now,
                    event: AuditKind::Onboarded,
                    side: "conductor",
                    router: None,
                    jti: None,
                    detail: format!("legacy asset-id {asset:?} accepted (SCO disabled)"),
                },
            )
        }
    }
}

/// The register of used token ids (persisted by the caller: see the `https` feature's
/// file store).
pub trait UsedTokens {
    /// Records `jti` as used; `Ok(false)` when it was already used.
    fn consume(&mut self, jti: &str, exp: u64) -> Result<bool, Error>;
}

/// An in-memory register (tests; the file store wraps one).
#[derive(Debug, Default, Clone)]
pub struct MemoryUsedTokens {
    used: BTreeMap<String, u64>,
}

impl MemoryUsedTokens {
    /// Whether `jti` was used.
    pub fn contains(&self, jti: &str) -> bool {
        self.used.contains_key(jti)
    }

    /// Forgets ids whose token expired before `unix_now` (they can never verify again).
    pub fn prune(&mut self, unix_now: u64) {
        self.used.retain(|_, exp| *exp > unix_now);
    }

    /// Inserts without checking (loading a persisted register).
    pub fn insert(&mut self, jti: String, exp: u64) {
        self.used.insert(jti, exp);
    }
}

impl UsedTokens for MemoryUsedTokens {
    fn consume(&mut self, jti: &str, exp: u64) -> Result<bool, Error> {
        if self.used.contains_key(jti) {
            return Ok(false);
        }
        self.used.insert(jti.to_owned(), exp);
        Ok(true)
    }
}

/// What the conductor learned from a successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConductorOutcome {
    /// The router's name.
    pub router: String,
    /// The router's SSH key, for the conductor's authorized keys.
    pub router_ssh_key: SshPublicKey,
    /// The router's (TPM-held) public key, DER SPKI.
    pub router_key: Vec<u8>,
    /// The token id used.
    pub jti: String,
}

#[derive(Debug)]
enum State {
    AwaitHello,
    AwaitProof {
        router: String,
        jti: String,
        rkt: Option<String>,
        t0: Hash,
        conductor_proof: [u8; 32],
    },
    Done,
    Failed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitHello => "await-hello",
            State::AwaitProof { .. } => "await-proof",
            State::Done => "done",
            State::Failed => "failed",
        }
    }
}

/// One router's handshake on one TLS connection.
#[derive(Debug)]
pub struct ConductorSession {
    ekm: Zeroizing<[u8; 32]>,
    state: State,
    transmit: VecDeque<Vec<u8>>,
    audit: VecDeque<AuditEvent>,
    outcome: Option<ConductorOutcome>,
    deadline: Instant,
    unix: u64,
}

impl ConductorSession {
    /// A session bound to the connection's exported keying material.
    pub fn new(ekm: [u8; 32], now: Instant) -> Self {
        Self {
            ekm: Zeroizing::new(ekm),
            state: State::AwaitHello,
            transmit: VecDeque::new(),
            audit: VecDeque::new(),
            outcome: None,
            deadline: now + HANDSHAKE_TIMEOUT,
            unix: 0,
        }
    }

    /// Feeds one message from the router. On error a `refusal` is queued for the
    /// router, an audit event recorded, and the session is over.
    pub fn handle_message<R: CryptoRng + ?Sized>(
        &mut self,
        policy: &ConductorPolicy,
        used: &mut dyn UsedTokens,
        bytes: &[u8],
        rng: &mut R,
        now: Instant,
        unix_now: u64,
    ) -> Result<(), Error> {
        self.unix = unix_now;
        if now >= self.deadline && self.poll_timeout().is_some() {
            self.handle_timeout(now);
            return Err(Error::TimedOut);
        }
        let (router, jti) = match &self.state {
            State::AwaitProof { router, jti, .. } => (Some(router.clone()), Some(jti.clone())),
            _ => (None, None),
        };
        let res = self.step(policy, used, bytes, rng, unix_now);
        if let Err(e) = &res {
            let (router, jti) = match e {
                Error::TokenReused { jti } => (router, Some(jti.clone())),
                _ => (router, jti),
            };
            self.fail(e, router, jti, unix_now);
        }
        res
    }

    fn fail(&mut self, e: &Error, router: Option<String>, jti: Option<String>, unix_now: u64) {
        self.state = State::Failed;
        self.transmit.clear();
        let (code, kind) = match (e, e.kind()) {
            (Error::LegacyRefused { .. }, _) => {
                (RefusalCode::LegacyRefused, AuditKind::LegacyRefused)
            }
            (Error::TokenKeyMismatch, _) => (RefusalCode::RouterKeyProof, AuditKind::TokenRejected),
            (_, ErrorKind::BadToken) => (RefusalCode::BadToken, AuditKind::TokenRejected),
            (Error::RouterRefused { code, .. }, _) => (*code, AuditKind::Refused),
            (_, ErrorKind::PskMismatch) => (RefusalCode::PskMismatch, AuditKind::Refused),
            (Error::RouterKeyProof, _) => (RefusalCode::RouterKeyProof, AuditKind::Refused),
            (Error::Storage { .. }, _) => (RefusalCode::Internal, AuditKind::Refused),
            _ => (RefusalCode::Protocol, AuditKind::Refused),
        };
        // Tell the router what kind of failure, never more than it already knows.
        let detail = match (e, code) {
            (Error::RouterRefused { .. }, _) => "refusal acknowledged".to_owned(),
            (_, RefusalCode::Internal) => "conductor storage failure".to_owned(),
            (_, RefusalCode::PskMismatch) => {
                "the router could not prove the pre-shared key".to_owned()
            }
            _ => e.to_string(),
        };
        self.transmit
            .push_back(Message::Refusal(Refusal { code, detail }).encode());
        self.audit.push_back(AuditEvent {
            time: unix_now,
            event: kind,
            side: "conductor",
            router,
            jti,
            detail: e.to_string(),
        });
    }

    fn step<R: CryptoRng + ?Sized>(
        &mut self,
        policy: &ConductorPolicy,
        used: &mut dyn UsedTokens,
        bytes: &[u8],
        rng: &mut R,
        unix_now: u64,
    ) -> Result<(), Error> {
        let msg = Message::parse(bytes)?;
        let state = std::mem::replace(&mut self.state, State::Failed);
        match (state, msg) {
            (State::AwaitHello, Message::Hello(h)) => {
                let token = Token::parse(&h.token)?;
                let claims =
                    token.verify(policy.token_key.verifying_key(), &policy.name, unix_now)?;
                let psk = policy
                    .routers
                    .get(&claims.sub)
                    .ok_or_else(|| Error::UnknownRouter {
                        router: claims.sub.clone(),
                    })?;
                if !used.consume(&claims.jti, claims.exp)? {
                    return Err(Error::TokenReused {
                        jti: claims.jti.clone(),
                    });
                }
                self.audit.push_back(AuditEvent {
                    time: unix_now,
                    event: AuditKind::TokenUsed,
                    side: "conductor",
                    router: Some(claims.sub.clone()),
                    jti: Some(claims.jti.clone()),
                    detail: "token accepted and consumed".into(),
                });
                let mut conductor_nonce = [0u8; 32];
                rng.fill_bytes(&mut conductor_nonce);
                let t0 = transcript::t0(&self.ekm, bytes, &conductor_nonce);
                let conductor_proof = transcript::psk_mac(psk, Role::ConductorPsk, &t0);
                self.transmit.push_back(
                    Message::Challenge(Challenge {
                        conductor_nonce,
                        conductor_proof,
                    })
                    .encode(),
                );
                self.state = State::AwaitProof {
                    router: claims.sub.clone(),
                    jti: claims.jti.clone(),
                    rkt: claims.rkt.clone(),
                    t0,
                    conductor_proof,
                };
                Ok(())
            }
            (
                State::AwaitProof {
                    router,
                    jti,
                    rkt,
                    t0,
                    conductor_proof,
                },
                Message::Proof(p),
            ) => {
                let psk = policy
                    .routers
                    .get(&router)
                    .ok_or_else(|| Error::UnknownRouter {
                        router: router.clone(),
                    })?;
                let t1 = transcript::t1(
                    &t0,
                    &conductor_proof,
                    &p.router_key,
                    p.router_ssh_key.as_bytes(),
                );
                if !transcript::psk_mac_ok(psk, Role::RouterPsk, &t1, &p.router_proof) {
                    return Err(Error::PskMismatch { side: "router" });
                }
                if let Some(rkt) = &rkt
                    && *rkt != key_thumbprint(&p.router_key)
                {
                    return Err(Error::TokenKeyMismatch);
                }
                verify_router_signature(
                    &p.router_key,
                    &transcript::signed_message(&t1),
                    &p.router_signature,
                )?;
                let router_ssh_key = SshPublicKey::parse(&p.router_ssh_key)?;
                let host_key = policy.host_key.to_line();
                let t2 = transcript::t2(
                    &t1,
                    &p.router_signature,
                    &p.router_proof,
                    host_key.as_bytes(),
                    CONDUCTOR_SSH_PORT,
                );
                let conductor_confirm = transcript::psk_mac(psk, Role::ConductorConfirm, &t2);
                self.transmit.push_back(
                    Message::Welcome(Welcome {
                        conductor_host_key: host_key,
                        ssh_port: CONDUCTOR_SSH_PORT,
                        conductor_confirm,
                    })
                    .encode(),
                );
                self.audit.push_back(AuditEvent {
                    time: unix_now,
                    event: AuditKind::Onboarded,
                    side: "conductor",
                    router: Some(router.clone()),
                    jti: Some(jti.clone()),
                    detail: format!("router key {}", key_thumbprint(&p.router_key)),
                });
                self.outcome = Some(ConductorOutcome {
                    router,
                    router_ssh_key,
                    router_key: p.router_key,
                    jti,
                });
                self.state = State::Done;
                Ok(())
            }
            (State::AwaitHello | State::AwaitProof { .. }, Message::Refusal(r)) => {
                Err(Error::RouterRefused {
                    code: r.code,
                    detail: r
                        .detail
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(200)
                        .collect(),
                })
            }
            (_, Message::Legacy(l)) => {
                let (res, ev) = policy.handle_legacy(&l.asset_id, unix_now);
                match res {
                    Err(e) => Err(e),
                    Ok(()) => {
                        self.audit.push_back(ev);
                        self.state = State::Done;
                        Ok(())
                    }
                }
            }
            (state, msg) => Err(Error::UnexpectedMessage {
                message: msg.name(),
                state: state.name(),
            }),
        }
    }

    /// The next message for the router.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// The outcome after the router's proofs verified.
    pub fn poll_outcome(&mut self) -> Option<ConductorOutcome> {
        self.outcome.take()
    }

    /// The next audit event to write.
    pub fn poll_audit(&mut self) -> Option<AuditEvent> {
        self.audit.pop_front()
    }

    /// When the session gives up, if it is still running.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::AwaitHello | State::AwaitProof { .. } => Some(self.deadline),
            State::Done | State::Failed => None,
        }
    }

    /// Fails the session if its deadline passed (extra calls are harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.deadline && self.poll_timeout().is_some() {
            let (router, jti) = match &self.state {
                State::AwaitProof { router, jti, .. } => (Some(router.clone()), Some(jti.clone())),
                _ => (None, None),
            };
            self.fail(&Error::TimedOut, router, jti, self.unix);
        }
    }

    /// True once the router is onboarded.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }
}
