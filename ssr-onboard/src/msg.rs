//! The onboarding messages on the wire (version 1).
//!
//! Each message is one JSON object with exactly one key naming the message, whose value
//! holds the fields; `v` must be [`PROTOCOL_VERSION`]; unknown or duplicate fields,
//! trailing bytes, non-canonical base64url and wrong lengths are refused.
//!
//! | message | direction | fields |
//! |---|---|---|
//! | `hello` | router → conductor | `token`, `router_nonce` (32 bytes) |
//! | `challenge` | conductor → router | `conductor_nonce` (32), `conductor_proof` (HMAC, 32) |
//! | `proof` | router → conductor | `router_key` (DER SPKI), `router_ssh_key` (OpenSSH line), `router_signature` (64), `router_proof` (32) |
//! | `welcome` | conductor → router | `conductor_host_key` (OpenSSH line), `ssh_port`, `conductor_confirm` (32) |
//! | `refusal` | conductor → router | `code`, `detail` |
//! | `legacy` | router → conductor | `asset_id` (legacy onboarding, refused with SCO) |

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, b64};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Upper bound on any message in bytes.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;

/// Why the conductor refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RefusalCode {
    /// Token malformed, altered, expired, reused, or for an unknown router.
    BadToken,
    /// The router could not prove the PSK.
    PskMismatch,
    /// The router's key proof failed (or the token is bound to another key).
    RouterKeyProof,
    /// Legacy asset-id onboarding while SCO is enabled.
    LegacyRefused,
    /// Protocol violation (unexpected or malformed message).
    Protocol,
    /// Conductor-side failure (storage).
    Internal,
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefusalCode::BadToken => "bad-token",
            RefusalCode::PskMismatch => "psk-mismatch",
            RefusalCode::RouterKeyProof => "router-key-proof",
            RefusalCode::LegacyRefused => "legacy-refused",
            RefusalCode::Protocol => "protocol",
            RefusalCode::Internal => "internal",
        })
    }
}

/// `hello`: the router presents its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The compact token as received from the operator.
    pub token: String,
    /// The router's fresh nonce.
    pub router_nonce: [u8; 32],
}

/// `challenge`: the conductor's nonce and its PSK proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The conductor's fresh nonce (the challenge the router signs, with the transcript).
    pub conductor_nonce: [u8; 32],
    /// HMAC-SHA256 under the PSK over the transcript so far.
    pub conductor_proof: [u8; 32],
}

/// `proof`: the router's key, SSH key, signature and PSK proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The router's public key, DER SubjectPublicKeyInfo (P-256).
    pub router_key: Vec<u8>,
    /// The router's SSH public key (OpenSSH single-line format).
    pub router_ssh_key: String,
    /// ES256 signature (r || s) over the transcript.
    pub router_signature: [u8; 64],
    /// HMAC-SHA256 under the PSK over the transcript.
    pub router_proof: [u8; 32],
}

/// `welcome`: the conductor's SSH host key and final confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The conductor's SSH host key (OpenSSH single-line format).
    pub conductor_host_key: String,
    /// The port the router uses from now on (930).
    pub ssh_port: u16,
    /// HMAC-SHA256 under the PSK over the whole transcript.
    pub conductor_confirm: [u8; 32],
}

/// `refusal`: why the conductor stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Machine-readable reason.
    pub code: RefusalCode,
    /// One line for the operator (no secrets).
    pub detail: String,
}

/// `legacy`: an asset-id onboarding request (refused when SCO is enabled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Legacy {
    /// The asset id.
    pub asset_id: String,
}

/// Any onboarding message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Challenge`].
    Challenge(Challenge),
    /// See [`Proof`].
    Proof(Proof),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// See [`Refusal`].
    Refusal(Refusal),
    /// See [`Legacy`].
    Legacy(Legacy),
}

mod wire {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case", deny_unknown_fields)]
    pub(super) enum Msg {
        Hello(Hello),
        Challenge(Challenge),
        Proof(Proof),
        Welcome(Welcome),
        Refusal(Refusal),
        Legacy(Legacy),
    }
    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Hello {
        pub v: u8,
        pub token: String,
        pub router_nonce: String,
    }
    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Challenge {
        pub v: u8,
        pub conductor_nonce: String,
        pub conductor_proof: String,
    }
    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Proof {
        pub v: u8,
        pub router_key: String,
        pub router_ssh_key: String,
        pub router_signature: String,
        pub router_proof: String,
    }
    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Welcome {
        pub v: u8,
        pub conductor_host_key: String,
        pub ssh_port: u16,
        pub conductor_confirm: String,
    }
    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Refusal {
        pub v: u8,
        pub code: super::RefusalCode,
        pub detail: String,
    }
    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Legacy {
        pub v: u8,
        pub asset_id: String,
    }
}

impl Message {
    /// The message's name as on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Challenge(_) => "challenge",
            Message::Proof(_) => "proof",
            Message::Welcome(_) => "welcome",
            Message::Refusal(_) => "refusal",
            Message::Legacy(_) => "legacy",
        }
    }

    /// Serialises the message (canonical: what [`Message::parse`] accepts back).
    pub fn encode(&self) -> Vec<u8> {
        let v = PROTOCOL_VERSION;
        let w = match self {
            Message::Hello(m) => wire::Msg::Hello(wire::Hello {
                v,
                token: m.token.clone(),
                router_nonce: b64::encode(&m.router_nonce),
            }),
            Message::Challenge(m) => wire::Msg::Challenge(wire::Challenge {
                v,
                conductor_nonce: b64::encode(&m.conductor_nonce),
                conductor_proof: b64::encode(&m.conductor_proof),
            }),
            Message::Proof(m) => wire::Msg::Proof(wire::Proof {
                v,
                router_key: b64::encode(&m.router_key),
                router_ssh_key: m.router_ssh_key.clone(),
                router_signature: b64::encode(&m.router_signature),
                router_proof: b64::encode(&m.router_proof),
            }),
            Message::Welcome(m) => wire::Msg::Welcome(wire::Welcome {
                v,
                conductor_host_key: m.conductor_host_key.clone(),
                ssh_port: m.ssh_port,
                conductor_confirm: b64::encode(&m.conductor_confirm),
            }),
            Message::Refusal(m) => wire::Msg::Refusal(wire::Refusal {
                v,
                code: m.code,
                detail: m.detail.clone(),
            }),
            Message::Legacy(m) => wire::Msg::Legacy(wire::Legacy {
                v,
                asset_id: m.asset_id.clone(),
            }),
        };
        // Serialising plain strings and integers cannot fail.
        serde_json::to_vec(&w).unwrap_or_default()
    }

    /// Strictly parses one message.
    pub fn parse(bytes: &[u8]) -> Result<Message, Error> {
        let mal = |message: &'static str, reason: &str| Error::MalformedMessage {
            message,
            reason: reason.to_owned(),
        };
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(mal("onboarding", "too long"));
        }
        if bytes.first() != Some(&b'{') || bytes.last() != Some(&b'}') {
            return Err(mal("onboarding", "not a single JSON object"));
        }
        let w: wire::Msg =
            serde_json::from_slice(bytes).map_err(|e| mal("onboarding", &e.to_string()))?;
        let check_v = |name: &'static str, v: u8| {
            if v == PROTOCOL_VERSION {
                Ok(())
            } else {
                Err(mal(name, &format!("unsupported version {v}")))
            }
        };
        fn arr<const N: usize>(name: &'static str, field: &str, s: &str) -> Result<[u8; N], Error> {
            b64::decode_array(s).ok_or_else(|| Error::MalformedMessage {
                message: name,
                reason: format!("{field} is not {N} bytes of canonical base64url"),
            })
        }
        Ok(match w {
            wire::Msg::Hello(m) => {
                check_v("hello", m.v)?;
                Message::Hello(Hello {
                    token: m.token,
                    router_nonce: arr("hello", "router_nonce", &m.router_nonce)?,
                })
            }
            wire::Msg::Challenge(m) => {
                check_v("challenge", m.v)?;
                Message::Challenge(Challenge {
                    conductor_nonce: arr("challenge", "conductor_nonce", &m.conductor_nonce)?,
                    conductor_proof: arr("challenge", "conductor_proof", &m.conductor_proof)?,
                })
            }
            wire::Msg::Proof(m) => {
                check_v("proof", m.v)?;
                let router_key = b64::decode(&m.router_key)
                    .ok_or_else(|| mal("proof", "router_key is not canonical base64url"))?;
                Message::Proof(Proof {
                    router_key,
                    router_ssh_key: m.router_ssh_key,
                    router_signature: arr("proof", "router_signature", &m.router_signature)?,
                    router_proof: arr("proof", "router_proof", &m.router_proof)?,
                })
            }
            wire::Msg::Welcome(m) => {
                check_v("welcome", m.v)?;
                Message::Welcome(Welcome {
                    conductor_host_key: m.conductor_host_key,
                    ssh_port: m.ssh_port,
                    conductor_confirm: arr("welcome", "conductor_confirm", &m.conductor_confirm)?,
                })
            }
            wire::Msg::Refusal(m) => {
                check_v("refusal", m.v)?;
                Message::Refusal(Refusal {
                    code: m.code,
                    detail: m.detail,
                })
            }
            wire::Msg::Legacy(m) => {
                check_v("legacy", m.v)?;
                Message::Legacy(Legacy {
                    asset_id: m.asset_id,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello(Hello {
                token: "a.b.c".into(),
                router_nonce: [1; 32],
            }),
            Message::Challenge(Challenge {
                conductor_nonce: [2; 32],
                conductor_proof: [3; 32],
            }),
            Message::Proof(Proof {
                router_key: vec![4; 91],
                router_ssh_key: "ssh-ed25519 AAAA x".into(),
                router_signature: [5; 64],
                router_proof: [6; 32],
            }),
            Message::Welcome(Welcome {
                conductor_host_key: "ssh-ed25519 AAAA".into(),
                ssh_port: 930,
                conductor_confirm: [7; 32],
            }),
            Message::Refusal(Refusal {
                code: RefusalCode::PskMismatch,
                detail: "no".into(),
            }),
            Message::Legacy(Legacy {
                asset_id: "asset-1".into(),
            }),
        ]
    }

    #[test]
    fn round_trips() {
        for m in samples() {
            let b = m.encode();
            assert_eq!(Message::parse(&b).expect("parse"), m);
        }
    }

    #[test]
    fn strictness() {
        let hello = String::from_utf8(samples()[0].encode()).expect("utf8");
        let cases = [
            hello.replace("\"v\":1", "\"v\":2"),
            hello.replace("}}", ",\"x\":1}}"),
            hello.replace("}}", "}}\n"),
            hello.replace("}}", "},\"hello\":{}}"),
            format!("{hello} "),
            hello.replace("AQEB", "AQE"),
            hello.replace("\"v\":1,", "\"v\":1,\"v\":1,"),
            "{}".into(),
            "[]".into(),
        ];
        for c in cases {
            assert!(Message::parse(c.as_bytes()).is_err(), "{c}");
        }
    }
}
