//! Router-specific onboarding tokens: compact JWS (RFC 7515) with ES256.
//!
//! ```text
//! BASE64URL({"alg":"ES256","typ":"ssr-sco+jwt"}) . BASE64URL(claims) . BASE64URL(r || s)
//! ```
//!
//! Claims (all required except `rkt`; no others are accepted):
//! `iss` conductor name, `sub` router name, `aud` always [`AUDIENCE`], `iat`/`nbf`/`exp`
//! Unix seconds, `jti` 128 random bits (base64url), `rkt` optional base64url SHA-256 of
//! the router's public key (DER SubjectPublicKeyInfo) the token is bound to.
//!
//! The parser is strict: exactly the header above byte for byte, canonical unpadded
//! base64url, no unknown or duplicate claims, a 64-byte low-S signature. So any altered
//! byte makes the token invalid (ECDSA's (r, n-s) twin is refused too).

use p256::ecdsa::{Signature, SigningKey, VerifyingKey, signature::Signer, signature::Verifier};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, b64};

/// The only audience a token can have.
pub const AUDIENCE: &str = "ssr-secure-conductor-onboarding";

/// The only protected header we issue or accept.
pub const HEADER_JSON: &str = r#"{"alg":"ES256","typ":"ssr-sco+jwt"}"#;

/// Upper bound on a token's length in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Token lifetime when the operator gives none: one day.
pub const DEFAULT_LIFETIME_SECS: u64 = 86_400;

/// The claims of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Issuer: the conductor's name.
    pub iss: String,
    /// Subject: the router's name (tokens are router-specific).
    pub sub: String,
    /// Audience: always [`AUDIENCE`].
    pub aud: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Not before (Unix seconds).
    pub nbf: u64,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
    /// Optional binding: base64url SHA-256 of the router's DER SPKI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rkt: Option<String>,
}

/// A token parsed by [`Token::parse`]: structurally valid, signature not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    compact: String,
    signing_input_len: usize,
    claims: Claims,
    signature: Signature,
}

/// The thumbprint of a router public key as used in `rkt`.
pub fn key_thumbprint(spki_der: &[u8]) -> String {
    b64::encode(&Sha256::digest(spki_der))
}

/// Creates and signs a token with the conductor's private key.
///
/// `jti` is 128 bits from `rng`; `nbf` = `iat` = `now`.
pub fn issue<R: CryptoRng + ?Sized>(
    key: &SigningKey,
    issuer: &str,
    router: &str,
    now: u64,
    lifetime_secs: u64,
    router_key_spki: Option<&[u8]>,
    rng: &mut R,
) -> Result<Token, Error> {
    if router.is_empty() || issuer.is_empty() {
        return Err(Error::MalformedToken {
            reason: "issuer and router name must not be empty",
        });
    }
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let claims = Claims {
        iss: issuer.into(),
        sub: router.into(),
        aud: AUDIENCE.into(),
        iat: now,
        nbf: now,
        exp: now.saturating_add(lifetime_secs),
        jti: b64::encode(&id),
        rkt: router_key_spki.map(key_thumbprint),
    };
    let payload = serde_json::to_vec(&claims).map_err(|_| Error::MalformedToken {
        reason: "claims do not serialize",
    })?;
    let signing_input = format!(
        "{}.{}",
        b64::encode(HEADER_JSON.as_bytes()),
        b64::encode(&payload)
    );
    let sig: Signature = key.sign(signing_input.as_bytes());
    let sig = sig.normalize_s();
    let compact = format!("{signing_input}.{}", b64::encode(&sig.to_bytes()));
    Token::parse(&compact)
}

impl Token {
    /// Strictly parses a compact token (surrounding ASCII whitespace, such as a
    /// trailing newline in a file, is ignored).
    pub fn parse(s: &str) -> Result<Token, Error> {
        let mal = |reason| Error::MalformedToken { reason };
        let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
        if s.len() > MAX_TOKEN_LEN {
            return Err(mal("too long"));
        }
        let mut parts = s.split('.');
        let (Some(h), Some(p), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(mal("not three dot-separated parts"));
        };
        let header = b64::decode(h).ok_or(mal("header is not canonical base64url"))?;
        if header != HEADER_JSON.as_bytes() {
            return Err(mal("unsupported protected header"));
        }
        let payload = b64::decode(p).ok_or(mal("payload is not canonical base64url"))?;
        let claims: Claims =
            serde_json::from_slice(&payload).map_err(|_| mal("claims are not valid"))?;
        let sig_bytes: [u8; 64] =
            b64::decode_array(sig).ok_or(mal("signature is not 64 bytes of base64url"))?;
        let signature =
            Signature::from_slice(&sig_bytes).map_err(|_| mal("signature is out of range"))?;
        if signature.normalize_s() != signature {
            return Err(mal("signature is not in low-S form"));
        }
        Ok(Token {
            compact: s.to_owned(),
            signing_input_len: h.len() + 1 + p.len(),
            claims,
            signature,
        })
    }

    /// The compact serialisation.
    pub fn as_str(&self) -> &str {
        &self.compact
    }

    /// The claims (not yet verified unless [`Token::verify`] returned them).
    pub fn unverified_claims(&self) -> &Claims {
        &self.claims
    }

    /// Verifies the signature with the conductor's public key, then the claims:
    /// issuer, audience, `nbf <= now < exp`.
    pub fn verify(&self, key: &VerifyingKey, issuer: &str, now: u64) -> Result<&Claims, Error> {
        let input = self
            .compact
            .as_bytes()
            .get(..self.signing_input_len)
            .ok_or(Error::TokenSignature)?;
        key.verify(input, &self.signature)
            .map_err(|_| Error::TokenSignature)?;
        let c = &self.claims;
        if c.aud != AUDIENCE {
            return Err(Error::TokenClaimMismatch {
                claim: "aud",
                expected: AUDIENCE.into(),
                got: c.aud.clone(),
            });
        }
        if c.iss != issuer {
            return Err(Error::TokenClaimMismatch {
                claim: "iss",
                expected: issuer.into(),
                got: c.iss.clone(),
            });
        }
        if now < c.nbf {
            return Err(Error::TokenNotYetValid { nbf: c.nbf, now });
        }
        if now >= c.exp {
            return Err(Error::TokenExpired { exp: c.exp, now });
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssr_testkit::TestRng;

    fn key(seed: u64) -> SigningKey {
        {
            use p256::elliptic_curve::Generate;
            SigningKey::generate_from_rng(&mut TestRng(seed))
        }
    }

    #[test]
    fn round_trip_and_claims() {
        let k = key(1);
        let t = issue(&k, "cond", "r1", 1000, 60, Some(b"spki"), &mut TestRng(2)).expect("issue");
        let parsed = Token::parse(&format!("{}\n", t.as_str())).expect("parse");
        let c = parsed
            .verify(k.verifying_key(), "cond", 1000)
            .expect("verify");
        assert_eq!(c.sub, "r1");
        assert_eq!(c.exp, 1060);
        assert_eq!(c.rkt.as_deref(), Some(key_thumbprint(b"spki").as_str()));
        assert_eq!(
            parsed.verify(k.verifying_key(), "cond", 1060),
            Err(Error::TokenExpired {
                exp: 1060,
                now: 1060
            })
        );
        assert_eq!(
            parsed.verify(k.verifying_key(), "cond", 999),
            Err(Error::TokenNotYetValid {
                nbf: 1000,
                now: 999
            })
        );
        assert!(matches!(
            parsed.verify(k.verifying_key(), "other", 1000),
            Err(Error::TokenClaimMismatch { claim: "iss", .. })
        ));
        assert_eq!(
            parsed.verify(key(3).verifying_key(), "cond", 1000),
            Err(Error::TokenSignature)
        );
    }

    #[test]
    fn every_altered_byte_invalidates() {
        let k = key(4);
        let t = issue(&k, "cond", "router-a", 5000, 600, None, &mut TestRng(5)).expect("issue");
        let s = t.as_str().as_bytes().to_vec();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
        for i in 0..s.len() {
            for &c in alphabet.iter().step_by(7).chain([b'x', b'.'].iter()) {
                if c == s[i] {
                    continue;
                }
                let mut m = s.clone();
                m[i] = c;
                let Ok(m) = String::from_utf8(m) else {
                    continue;
                };
                let ok = Token::parse(&m)
                    .and_then(|t| t.verify(k.verifying_key(), "cond", 5000).cloned());
                assert!(ok.is_err(), "altered byte {i} -> {c} still valid");
            }
        }
    }

    #[test]
    fn high_s_twin_is_refused() {
        let k = key(6);
        let t = issue(&k, "cond", "r", 1, 10, None, &mut TestRng(7)).expect("issue");
        let mut parts: Vec<&str> = t.as_str().split('.').collect();
        let sig = Signature::from_slice(&b64::decode(parts[2]).expect("b64")).expect("sig");
        // (r, n - s): also a valid ECDSA signature over the same input.
        let (r, s) = sig.split_scalars();
        let twin = Signature::from_scalars(r, -*s).expect("twin");
        assert!(
            k.verifying_key()
                .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &twin)
                .is_ok()
        );
        let enc = b64::encode(&twin.to_bytes());
        parts[2] = &enc;
        assert!(matches!(
            Token::parse(&parts.join(".")),
            Err(Error::MalformedToken { .. })
        ));
    }

    #[test]
    fn structural_errors() {
        for bad in ["", "a.b", "a.b.c.d", "..", "e30.e30.AAAA"] {
            assert!(
                matches!(Token::parse(bad), Err(Error::MalformedToken { .. })),
                "{bad}"
            );
        }
        let long = "A".repeat(MAX_TOKEN_LEN + 1);
        assert!(Token::parse(&long).is_err());
    }
}
