//! The handshake transcript and the PSK proofs over it.
//!
//! ```text
//! T0 = SHA-256("ssr-sco-v1/t0" | ekm | hello | conductor_nonce)
//! conductor_proof   = HMAC-SHA256(psk, "ssr-sco-v1/conductor-psk" | T0)
//! T1 = SHA-256("ssr-sco-v1/t1" | T0 | conductor_proof | router_key | router_ssh_key)
//! router_signature  = ES256(router key, "ssr-sco-v1/router-signature" | T1)
//! router_proof      = HMAC-SHA256(psk, "ssr-sco-v1/router-psk" | T1)
//! T2 = SHA-256("ssr-sco-v1/t2" | T1 | router_signature | router_proof | host_key | port)
//! conductor_confirm = HMAC-SHA256(psk, "ssr-sco-v1/conductor-confirm" | T2)
//! ```
//! `|` is concatenation of 4-byte big-endian length-prefixed fields; `ekm` is 32 bytes of
//! TLS exported keying material (label [`EKM_LABEL`], no context), so every proof is
//! bound to one TLS session and cannot be replayed into another.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::psk::Psk;

/// The RFC 5705 / RFC 8446 exporter label.
pub const EKM_LABEL: &[u8] = b"EXPORTER-ssr-secure-conductor-onboarding-v1";

pub(crate) type Hash = [u8; 32];

fn field(h: &mut Sha256, b: &[u8]) {
    h.update((b.len() as u32).to_be_bytes());
    h.update(b);
}

fn hash(label: &[u8], fields: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    field(&mut h, label);
    for f in fields {
        field(&mut h, f);
    }
    h.finalize().into()
}

pub(crate) fn t0(ekm: &[u8; 32], hello: &[u8], conductor_nonce: &[u8; 32]) -> Hash {
    hash(b"ssr-sco-v1/t0", &[ekm, hello, conductor_nonce])
}

pub(crate) fn t1(t0: &Hash, conductor_proof: &[u8; 32], router_key: &[u8], ssh_key: &[u8]) -> Hash {
    hash(
        b"ssr-sco-v1/t1",
        &[t0, conductor_proof, router_key, ssh_key],
    )
}

pub(crate) fn t2(t1: &Hash, sig: &[u8; 64], proof: &[u8; 32], host_key: &[u8], port: u16) -> Hash {
    hash(
        b"ssr-sco-v1/t2",
        &[t1, sig, proof, host_key, &port.to_be_bytes()],
    )
}

pub(crate) fn signed_message(t1: &Hash) -> Vec<u8> {
    let mut m = b"ssr-sco-v1/router-signature".to_vec();
    m.extend_from_slice(t1);
    m
}

/// Which PSK proof.
#[derive(Clone, Copy)]
pub(crate) enum Role {
    ConductorPsk,
    RouterPsk,
    ConductorConfirm,
}

pub(crate) fn psk_mac(psk: &Psk, role: Role, t: &Hash) -> [u8; 32] {
    let label: &[u8] = match role {
        Role::ConductorPsk => b"ssr-sco-v1/conductor-psk",
        Role::RouterPsk => b"ssr-sco-v1/router-psk",
        Role::ConductorConfirm => b"ssr-sco-v1/conductor-confirm",
    };
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(psk.secret_bytes())
        .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
    mac.update(label);
    mac.update(t);
    mac.finalize().into_bytes().into()
}

pub(crate) fn psk_mac_ok(psk: &Psk, role: Role, t: &Hash, got: &[u8; 32]) -> bool {
    bool::from(psk_mac(psk, role, t).ct_eq(got))
}
