//! The router half of the handshake: a pure state machine.
//!
//! Feed it the 32 bytes of TLS exported keying material of the connection to the
//! conductor, send what [`RouterHandshake::poll_transmit`] yields, feed each response
//! to [`RouterHandshake::handle_message`], and read [`RouterHandshake::poll_outcome`].
//! It refuses a conductor that cannot prove the PSK, and checks the conductor's final
//! confirmation (which also authenticates the SSH host key it hands over).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::audit::{AuditEvent, AuditKind};
use crate::msg::{Hello, Message, Proof, Refusal, RefusalCode};
use crate::psk::Psk;
use crate::signer::RouterSigner;
use crate::ssh::SshPublicKey;
use crate::token::{Token, key_thumbprint};
use crate::transcript::{self, Hash, Role};
use crate::{Error, ErrorKind};

/// Default time a handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the router needs to onboard.
#[derive(Debug)]
pub struct RouterParams {
    /// This router's name (must be the token's `sub`).
    pub router_name: String,
    /// The router-level PSK.
    pub psk: Psk,
    /// The token from the conductor.
    pub token: Token,
    /// The router's SSH public key, handed to the conductor's authorized keys.
    pub ssh_key: SshPublicKey,
}

/// The result of a successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterOutcome {
    /// The conductor's SSH host key (for the router's known hosts).
    pub conductor_host_key: SshPublicKey,
    /// The port all further router-conductor traffic uses (930).
    pub ssh_port: u16,
}

#[derive(Debug)]
enum State {
    AwaitChallenge {
        hello: Vec<u8>,
    },
    AwaitWelcome {
        t1: Hash,
        sig: [u8; 64],
        proof: [u8; 32],
    },
    Done,
    Failed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitChallenge { .. } => "await-challenge",
            State::AwaitWelcome { .. } => "await-welcome",
            State::Done => "done",
            State::Failed => "failed",
        }
    }
}

/// The router's own checks of a token before it goes anywhere: it names this router,
/// is bound (if at all) to this router's key, and has not expired. (Its signature is
/// the conductor's to check.)
pub fn check_token(
    router_name: &str,
    token: &Token,
    signer: &dyn RouterSigner,
    unix_now: u64,
) -> Result<(), Error> {
    let claims = token.unverified_claims();
    if claims.sub != router_name {
        return Err(Error::TokenClaimMismatch {
            claim: "sub",
            expected: router_name.to_owned(),
            got: claims.sub.clone(),
        });
    }
    if let Some(rkt) = &claims.rkt
        && *rkt != key_thumbprint(&signer.public_key_spki()?)
    {
        return Err(Error::TokenKeyMismatch);
    }
    if unix_now >= claims.exp {
        return Err(Error::TokenExpired {
            exp: claims.exp,
            now: unix_now,
        });
    }
    Ok(())
}

/// The router side of Secure Conductor Onboarding.
#[derive(Debug)]
pub struct RouterHandshake {
    params: RouterParams,
    ekm: Zeroizing<[u8; 32]>,
    state: State,
    transmit: VecDeque<Vec<u8>>,
    audit: VecDeque<AuditEvent>,
    outcome: Option<RouterOutcome>,
    deadline: Instant,
    unix: u64,
}

impl RouterHandshake {
    /// Starts a handshake: checks the token is for this router (and this key, if
    /// bound) and queues the `hello`.
    pub fn start<R: CryptoRng + ?Sized>(
        params: RouterParams,
        signer: &dyn RouterSigner,
        ekm: [u8; 32],
        rng: &mut R,
        now: Instant,
        unix_now: u64,
    ) -> Result<RouterHandshake, Error> {
        let mut hs = RouterHandshake {
            params,
            ekm: Zeroizing::new(ekm),
            state: State::Failed,
            transmit: VecDeque::new(),
            audit: VecDeque::new(),
            outcome: None,
            deadline: now + HANDSHAKE_TIMEOUT,
            unix: unix_now,
        };
        if let Err(e) = check_token(&hs.params.router_name, &hs.params.token, signer, unix_now) {
            hs.record(unix_now, AuditKind::TokenRejected, &e);
            return Err(e);
        }
        let mut router_nonce = [0u8; 32];
        rng.fill_bytes(&mut router_nonce);
        let hello = Message::Hello(Hello {
            token: hs.params.token.as_str().to_owned(),
            router_nonce,
        })
        .encode();
        hs.transmit.push_back(hello.clone());
        hs.state = State::AwaitChallenge { hello };
        Ok(hs)
    }

    fn record(&mut self, unix_now: u64, kind: AuditKind, detail: &dyn core::fmt::Display) {
        self.audit.push_back(AuditEvent {
            time: unix_now,
            event: kind,
            side: "router",
            router: Some(self.params.router_name.clone()),
            jti: Some(self.params.token.unverified_claims().jti.clone()),
            detail: detail.to_string(),
        });
    }

    /// Feeds one message from the conductor.
    pub fn handle_message(
        &mut self,
        bytes: &[u8],
        signer: &dyn RouterSigner,
        now: Instant,
        unix_now: u64,
    ) -> Result<(), Error> {
        self.unix = unix_now;
        if now >= self.deadline && self.poll_timeout().is_some() {
            self.handle_timeout(now);
            return Err(Error::TimedOut);
        }
        let res = self.step(bytes, signer);
        match &res {
            Ok(()) => {
                if matches!(self.state, State::Done) {
                    self.record(unix_now, AuditKind::Onboarded, &"conductor confirmed");
                }
            }
            Err(e) => {
                self.state = State::Failed;
                self.transmit.clear();
                let kind = if e.kind() == ErrorKind::BadToken {
                    AuditKind::TokenRejected
                } else {
                    AuditKind::Refused
                };
                self.record(unix_now, kind, e);
                // Tell the conductor why we stop (unless it stopped first), so that
                // it can audit the refusal too.
                if !matches!(e, Error::Refused { .. }) {
                    let code = match e.kind() {
                        ErrorKind::PskMismatch => RefusalCode::PskMismatch,
                        _ => RefusalCode::Protocol,
                    };
                    self.transmit.push_back(
                        Message::Refusal(Refusal {
                            code,
                            detail: e.to_string(),
                        })
                        .encode(),
                    );
                }
            }
        }
        res
    }

    fn step(&mut self, bytes: &[u8], signer: &dyn RouterSigner) -> Result<(), Error> {
        let msg = Message::parse(bytes)?;
        if let Message::Refusal(r) = &msg {
            return Err(Error::Refused {
                code: r.code,
                detail: r
                    .detail
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect(),
            });
        }
        let state = std::mem::replace(&mut self.state, State::Failed);
        match (state, msg) {
            (State::AwaitChallenge { hello }, Message::Challenge(c)) => {
                let t0 = transcript::t0(&self.ekm, &hello, &c.conductor_nonce);
                if !transcript::psk_mac_ok(
                    &self.params.psk,
                    Role::ConductorPsk,
                    &t0,
                    &c.conductor_proof,
                ) {
                    return Err(Error::PskMismatch { side: "conductor" });
                }
                let router_key = signer.public_key_spki()?;
                let ssh = self.params.ssh_key.to_line();
                let t1 = transcript::t1(&t0, &c.conductor_proof, &router_key, ssh.as_bytes());
                let sig = signer.sign(&transcript::signed_message(&t1))?;
                let proof = transcript::psk_mac(&self.params.psk, Role::RouterPsk, &t1);
                self.transmit.push_back(
                    Message::Proof(Proof {
                        router_key,
                        router_ssh_key: ssh,
                        router_signature: sig,
                        router_proof: proof,
                    })
                    .encode(),
                );
                self.state = State::AwaitWelcome { t1, sig, proof };
                Ok(())
            }
            (State::AwaitWelcome { t1, sig, proof }, Message::Welcome(w)) => {
                let host_key = SshPublicKey::parse(&w.conductor_host_key)?;
                let t2 = transcript::t2(
                    &t1,
                    &sig,
                    &proof,
                    w.conductor_host_key.as_bytes(),
                    w.ssh_port,
                );
                if !transcript::psk_mac_ok(
                    &self.params.psk,
                    Role::ConductorConfirm,
                    &t2,
                    &w.conductor_confirm,
                ) {
                    return Err(Error::PskMismatch { side: "conductor" });
                }
                self.outcome = Some(RouterOutcome {
                    conductor_host_key: host_key,
                    ssh_port: w.ssh_port,
                });
                self.state = State::Done;
                Ok(())
            }
            (state, msg) => {
                let e = Error::UnexpectedMessage {
                    message: msg.name(),
                    state: state.name(),
                };
                Err(e)
            }
        }
    }

    /// The next message to send to the conductor. After a failure this may be a
    /// `refusal` telling the conductor why (send it best-effort, expect no answer).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// The outcome once the conductor's confirmation verified.
    pub fn poll_outcome(&mut self) -> Option<RouterOutcome> {
        self.outcome.take()
    }

    /// The next audit event to write.
    pub fn poll_audit(&mut self) -> Option<AuditEvent> {
        self.audit.pop_front()
    }

    /// When the handshake gives up, if it is still running.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::AwaitChallenge { .. } | State::AwaitWelcome { .. } => Some(self.deadline),
            State::Done | State::Failed => None,
        }
    }

    /// Fails the handshake if its deadline passed (extra calls are harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.deadline && self.poll_timeout().is_some() {
            self.state = State::Failed;
            self.transmit.clear();
            self.record(self.unix, AuditKind::Refused, &Error::TimedOut);
        }
    }

    /// True once the conductor's confirmation verified.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// True after any failure (including a timeout).
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }
}
