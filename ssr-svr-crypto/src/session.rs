//! Session payloads under the per-session payload key (the third level of the key
//! hierarchy: peer key → metadata key → payload key).
//!
//! The router that opens a session makes a [`SessionTx`]: a random payload key, carried
//! to the peer sealed in the session's SVR metadata
//! ([`crate::peer::Peer::seal_session_metadata`]); the peer installs what
//! [`crate::peer::Peer::open_session_metadata`] returns into a [`SessionRx`]. Payloads
//! travel as `generation u32 BE | sealed packet` ([`crate::packet`], CBC-HMAC under the
//! payload key). Each direction of a session has its own key (the other router makes
//! its own `SessionTx`), so no two senders share a key and sequence space.
//!
//! `payload-key-rekey-interval`: [`SessionTx::poll_rekey`] replaces the key when the
//! interval has passed (generation + 1, sequence numbers from 0 under the new key); the
//! caller then sends metadata with the new key. The receiver keeps the previous
//! generation for [`KEY_OVERLAP`] after the new one is installed, then retires it.

use std::time::Instant;

use rand_core::CryptoRng;

use crate::Error;
use crate::packet::{CbcHmacOpener, CbcHmacSealer, OpenStats};
use crate::peer::{KEY_OVERLAP, PayloadKey, RekeyInterval, SessionId};

/// Payload packet header: the payload key generation.
pub const PAYLOAD_HEADER_LEN: usize = 4;

/// A session's payload key as carried in metadata.
#[derive(Debug, PartialEq, Eq)]
pub struct SessionKey {
    /// The session.
    pub session: SessionId,
    /// Key generation (1, then + 1 at every payload rekey).
    pub generation: u32,
    /// The payload key (secret).
    pub key: PayloadKey,
}

/// Sending side of one session's payloads.
pub struct SessionTx {
    current: SessionKey,
    sealer: CbcHmacSealer,
    made: Instant,
    interval: RekeyInterval,
}

impl core::fmt::Debug for SessionTx {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SessionTx")
            .field("generation", &self.current.generation)
            .finish_non_exhaustive()
    }
}

impl SessionTx {
    /// A new session with a fresh random payload key (generation 1).
    pub fn new<R: CryptoRng>(
        session: SessionId,
        interval: RekeyInterval,
        now: Instant,
        rng: &mut R,
    ) -> Result<Self, Error> {
        let key = PayloadKey::random(rng)?;
        Ok(Self {
            sealer: CbcHmacSealer::new(&key),
            current: SessionKey {
                session,
                generation: 1,
                key,
            },
            made: now,
            interval,
        })
    }

    /// The key to carry in the session metadata.
    pub fn key(&self) -> &SessionKey {
        &self.current
    }

    /// When [`SessionTx::poll_rekey`] must be called next (`None`: never rekeys).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.interval.duration().map(|d| self.made + d)
    }

    /// `payload-key-rekey-interval`: a new key once the interval has passed. Returns
    /// `true` when the key changed: send the session metadata again.
    pub fn poll_rekey<R: CryptoRng>(&mut self, now: Instant, rng: &mut R) -> Result<bool, Error> {
        if self.poll_timeout().is_none_or(|t| now < t) {
            return Ok(false);
        }
        let key = PayloadKey::random(rng)?;
        self.sealer = CbcHmacSealer::new(&key);
        self.current = SessionKey {
            session: self.current.session,
            generation: self.current.generation.wrapping_add(1).max(1),
            key,
        };
        self.made = now;
        Ok(true)
    }

    /// Seals a payload: `generation u32 BE | packet`.
    pub fn seal(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        if out.len() < PAYLOAD_HEADER_LEN {
            return Err(Error::BufferTooSmall {
                needed: PAYLOAD_HEADER_LEN,
                have: out.len(),
            });
        }
        let (hdr, body) = out.split_at_mut(PAYLOAD_HEADER_LEN);
        hdr.copy_from_slice(&self.current.generation.to_be_bytes());
        Ok(PAYLOAD_HEADER_LEN + self.sealer.seal(payload, body)?)
    }
}

struct RxGen {
    generation: u32,
    opener: CbcHmacOpener,
    expires: Option<Instant>,
}

/// Receiving side of one session's payloads.
pub struct SessionRx {
    session: SessionId,
    keys: Vec<RxGen>,
    retired: OpenStats,
}

impl core::fmt::Debug for SessionRx {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SessionRx")
            .field("generations", &self.generations())
            .finish_non_exhaustive()
    }
}

impl SessionRx {
    /// Receiving state for `first` (from [`crate::peer::Peer::open_session_metadata`]).
    pub fn new(first: &SessionKey) -> Self {
        Self {
            session: first.session,
            keys: vec![RxGen {
                generation: first.generation,
                opener: CbcHmacOpener::new(&first.key),
                expires: None,
            }],
            retired: OpenStats::default(),
        }
    }

    /// Installs a newer key of this session; the ones before stay for [`KEY_OVERLAP`]
    /// from `now`. A key of another session, an older generation or a repeat is ignored
    /// (metadata travels again with every packet until acknowledged).
    pub fn install(&mut self, k: &SessionKey, now: Instant) -> Result<(), Error> {
        if k.session != self.session {
            return Err(Error::Unauthenticated);
        }
        if self.keys.iter().any(|g| g.generation >= k.generation) {
            return Ok(());
        }
        for g in &mut self.keys {
            if g.expires.is_none() {
                g.expires = Some(now + KEY_OVERLAP);
            }
        }
        self.keys.push(RxGen {
            generation: k.generation,
            opener: CbcHmacOpener::new(&k.key),
            expires: None,
        });
        Ok(())
    }

    /// Generations held (newest last).
    pub fn generations(&self) -> Vec<u32> {
        self.keys.iter().map(|g| g.generation).collect()
    }

    /// When [`SessionRx::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.keys.iter().filter_map(|g| g.expires).min()
    }

    /// Retires the generations whose overlap ended.
    pub fn handle_timeout(&mut self, now: Instant) {
        let retired = &mut self.retired;
        self.keys.retain(|g| {
            let keep = g.expires.is_none_or(|e| now < e);
            if !keep {
                let s = g.opener.stats();
                retired.delivered += s.delivered;
                retired.replayed += s.replayed;
                retired.tampered += s.tampered;
            }
            keep
        });
    }

    /// Opens a payload packet into `out`.
    pub fn open(&mut self, packet: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        let Some(generation) = packet
            .get(..PAYLOAD_HEADER_LEN)
            .map(|h| u32::from_be_bytes([h[0], h[1], h[2], h[3]]))
        else {
            self.retired.tampered += 1;
            return Err(Error::Unauthenticated);
        };
        match self.keys.iter_mut().find(|g| g.generation == generation) {
            Some(g) => g.opener.open(&packet[PAYLOAD_HEADER_LEN..], out),
            None => {
                self.retired.tampered += 1;
                Err(Error::Unauthenticated)
            }
        }
    }

    /// Counters over all generations.
    pub fn stats(&self) -> OpenStats {
        let mut s = self.retired;
        for g in &self.keys {
            let o = g.opener.stats();
            s.delivered += o.delivered;
            s.replayed += o.replayed;
            s.tampered += o.tampered;
        }
        s
    }
}
