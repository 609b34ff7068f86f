//! SSH keys in OpenSSH format: the router's ed25519 client key (generated here, written
//! in the `openssh-key-v1` private format and the one-line public format), parsing of
//! public key lines, and `authorized_keys` / `known_hosts` entries.
//!
//! The key is generated in-process (ring's Ed25519, already in the tree through
//! rustls) rather than by running `ssh-keygen`: the core stays free of processes, the
//! seed comes from the caller's CSPRNG and is zeroized, and the tests check the output
//! with the real `ssh-keygen` and `sshd`.

use core::fmt;

use base64ct::{Base64, Encoding};
use rand_core::CryptoRng;
use ring::signature::{Ed25519KeyPair, KeyPair};
use zeroize::{Zeroize, Zeroizing};

use crate::Error;

/// The port a router uses to reach its conductor after onboarding.
pub const CONDUCTOR_SSH_PORT: u16 = 930;

/// The `authorized_keys` options of an onboarded router's key on the conductor:
/// `restrict` turns off everything (PTY, agent and X11 forwarding, port forwarding,
/// `~/.ssh/rc`), `port-forwarding` turns back on the one thing the router's channel to
/// the conductor needs.
pub const ROUTER_KEY_OPTIONS: &str = "restrict,port-forwarding";

const MAX_LINE: usize = 8192;

/// A parsed OpenSSH public key line: `<type> <base64 blob> [comment]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshPublicKey {
    algorithm: String,
    blob: Vec<u8>,
}

fn put_string(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn get_string<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = b.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    let (s, rest) = (rest.get(..len)?, rest.get(len..)?);
    *b = rest;
    Some(s)
}

impl SshPublicKey {
    /// Parses one line (options before the key type are not accepted; the comment is
    /// dropped). The blob's embedded algorithm name must match the line's.
    pub fn parse(line: &str) -> Result<SshPublicKey, Error> {
        let bad = |reason: &str| Error::InvalidKey {
            reason: format!("OpenSSH public key: {reason}"),
        };
        let line = line.trim_end_matches(['\n', '\r']);
        if line.len() > MAX_LINE || line.contains(['\n', '\r', '\0']) {
            return Err(bad("not a single line"));
        }
        let mut it = line.split(' ');
        let (Some(alg), Some(b64)) = (it.next(), it.next()) else {
            return Err(bad("expected `<type> <base64>`"));
        };
        const ALGS: &[&str] = &[
            "ssh-ed25519",
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521",
            "ssh-rsa",
        ];
        if !ALGS.contains(&alg) {
            return Err(bad("unsupported key type"));
        }
        let blob = Base64::decode_vec(b64).map_err(|_| bad("blob is not base64"))?;
        let mut rest = blob.as_slice();
        let inner = get_string(&mut rest).ok_or_else(|| bad("truncated blob"))?;
        if inner != alg.as_bytes() {
            return Err(bad("blob type does not match"));
        }
        if alg == "ssh-ed25519" {
            let pk = get_string(&mut rest).ok_or_else(|| bad("truncated blob"))?;
            if pk.len() != 32 || !rest.is_empty() {
                return Err(bad("bad ed25519 key"));
            }
        }
        Ok(SshPublicKey {
            algorithm: alg.to_owned(),
            blob,
        })
    }

    /// The key type, e.g. `ssh-ed25519`.
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    /// `<type> <base64>` without a comment.
    pub fn to_line(&self) -> String {
        format!("{} {}", self.algorithm, Base64::encode_string(&self.blob))
    }

    /// An `authorized_keys` line for this key with `comment`.
    pub fn authorized_keys_line(&self, comment: &str) -> String {
        let comment: String = comment.chars().filter(|c| c.is_ascii_graphic()).collect();
        format!("{} {comment}\n", self.to_line())
    }

    /// The conductor's `authorized_keys` line for an onboarded router's key: options
    /// [`ROUTER_KEY_OPTIONS`] (no shell, no PTY, no agent or X11 forwarding, no
    /// `~/.ssh/rc`; only the port forwarding SSR's router-conductor channel uses) and
    /// the comment `ssr-router:<name>`.
    pub fn router_authorized_keys_line(&self, router: &str) -> String {
        format!(
            "{ROUTER_KEY_OPTIONS} {}",
            self.authorized_keys_line(&format!("ssr-router:{router}"))
        )
    }

    /// A `known_hosts` line binding this host key to `host` on `port`.
    pub fn known_hosts_line(&self, host: &str, port: u16) -> String {
        let host = if port == 22 {
            host.to_owned()
        } else {
            format!("[{host}]:{port}")
        };
        format!("{host} {}\n", self.to_line())
    }
}

/// The router's ed25519 SSH key pair.
pub struct Ed25519SshKey {
    seed: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl fmt::Debug for Ed25519SshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ed25519SshKey([redacted])")
    }
}

impl Ed25519SshKey {
    /// A fresh key from `rng`.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Result<Self, Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        let pair =
            Ed25519KeyPair::from_seed_unchecked(seed.as_ref()).map_err(|e| Error::InvalidKey {
                reason: format!("ed25519: {e}"),
            })?;
        let public: [u8; 32] =
            pair.public_key()
                .as_ref()
                .try_into()
                .map_err(|_| Error::InvalidKey {
                    reason: "ed25519 public key length".into(),
                })?;
        Ok(Self { seed, public })
    }

    fn public_blob(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(51);
        put_string(&mut b, b"ssh-ed25519");
        put_string(&mut b, &self.public);
        b
    }

    /// The public key.
    pub fn public_key(&self) -> SshPublicKey {
        SshPublicKey {
            algorithm: "ssh-ed25519".into(),
            blob: self.public_blob(),
        }
    }

    /// The private key in OpenSSH's `openssh-key-v1` format (unencrypted; the caller
    /// writes it with mode 0600). `check` is the format's random check word.
    pub fn to_openssh_private(&self, comment: &str, check: u32) -> Zeroizing<String> {
        let mut private = Zeroizing::new(Vec::with_capacity(160));
        private.extend_from_slice(&check.to_be_bytes());
        private.extend_from_slice(&check.to_be_bytes());
        put_string(&mut private, b"ssh-ed25519");
        put_string(&mut private, &self.public);
        let mut sk = Zeroizing::new([0u8; 64]);
        sk[..32].copy_from_slice(self.seed.as_ref());
        sk[32..].copy_from_slice(&self.public);
        put_string(&mut private, sk.as_ref());
        put_string(&mut private, comment.as_bytes());
        let mut pad = 1u8;
        while private.len() % 8 != 0 {
            private.push(pad);
            pad += 1;
        }
        let mut body = Zeroizing::new(b"openssh-key-v1\0".to_vec());
        put_string(&mut body, b"none");
        put_string(&mut body, b"none");
        put_string(&mut body, b"");
        body.extend_from_slice(&1u32.to_be_bytes());
        put_string(&mut body, &self.public_blob());
        put_string(&mut body, &private);
        let mut b64 = Zeroizing::new(Base64::encode_string(&body));
        let mut out = Zeroizing::new(String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        for chunk in b64.as_bytes().chunks(70) {
            out.push_str(core::str::from_utf8(chunk).unwrap_or(""));
            out.push('\n');
        }
        out.push_str("-----END OPENSSH PRIVATE KEY-----\n");
        b64.zeroize();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssr_testkit::TestRng;

    #[test]
    fn public_line_round_trip_and_checks() {
        let k = Ed25519SshKey::generate(&mut TestRng(1)).expect("gen");
        let line = k.public_key().authorized_keys_line("router r1");
        assert!(line.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"));
        assert!(line.ends_with(" routerr1\n"));
        let p = SshPublicKey::parse(&line).expect("parse");
        assert_eq!(p, k.public_key());
        assert_eq!(
            p.known_hosts_line("10.0.0.1", 930),
            format!("[10.0.0.1]:930 {}\n", p.to_line())
        );
        assert!(SshPublicKey::parse("ssh-dss AAAA").is_err());
        assert!(SshPublicKey::parse(&line.replace("ssh-ed25519 ", "ssh-rsa ")).is_err());
        assert!(SshPublicKey::parse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5").is_err());
        assert!(SshPublicKey::parse("ssh-ed25519\nAAAA").is_err());
    }

    #[test]
    fn router_lines_on_the_conductor_are_restricted_and_named() {
        let k = Ed25519SshKey::generate(&mut TestRng(2)).expect("gen");
        let line = k.public_key().router_authorized_keys_line("edge-1");
        assert_eq!(
            line,
            format!(
                "restrict,port-forwarding {} ssr-router:edge-1\n",
                k.public_key().to_line()
            )
        );
        // A name cannot smuggle a second line or options in.
        let evil = k
            .public_key()
            .router_authorized_keys_line("x\nssh-ed25519 AAAA evil,command=\"sh\"");
        assert_eq!(evil.matches('\n').count(), 1, "{evil}");
        assert!(evil.starts_with("restrict,port-forwarding ssh-ed25519 "));
    }
}
