//! `onboarding-config.json` (router side) and the conductor's configuration.
//!
//! # `onboarding-config.json` (version 1)
//!
//! ```json
//! {
//!   "version": 1,
//!   "router-name": "branch-router-1",
//!   "conductor-address": "conductor.example.net:4443",
//!   "conductor-name": "conductor.example.net",
//!   "ca-certificate": "/etc/128technology/sco/conductor-ca.pem",
//!   "conductor-certificate": "/etc/128technology/sco/conductor.pem",
//!   "pre-shared-key": "<48 letters and digits>",
//!   "tpm-tcti": "device:/dev/tpmrm0",
//!   "tpm-key-store": "/var/lib/ssr/pki/tpm-keys",
//!   "ssh-dir": "/etc/128technology/sco/ssh",
//!   "audit-log": "/var/log/128technology/sco-audit.jsonl",
//!   "secure-conductor-onboarding": true
//! }
//! ```
//!
//! | field | required | meaning |
//! |---|---|---|
//! | `version` | yes | must be 1 |
//! | `router-name` | yes | this router's name; the token's `sub` must equal it |
//! | `conductor-address` | yes | `host:port` of the conductor's onboarding endpoint |
//! | `conductor-name` | no | name in the conductor's certificate (default: the host of `conductor-address`) |
//! | `ca-certificate` | yes | path of the conductor CA certificate(s), PEM: the conductor's chain must end here |
//! | `conductor-certificate` | yes | path of the conductor's certificate, PEM: the presented certificate must be this one |
//! | `pre-shared-key` | yes | the router-level PSK, exactly 48 ASCII letters and digits |
//! | `token-public-key` | no | the conductor's token-signing public key(s), PEM `PUBLIC KEY` blocks (P-256): the router refuses a token no key in the file verifies before it connects; several blocks let a rotation overlap |
//! | `router-key` | no | PKCS#8 PEM P-256 key for routers without a TPM (otherwise the TPM-held key is used) |
//! | `tpm-tcti` | no | the TPM holding the router key (default `device:/dev/tpmrm0`); ignored with `router-key` |
//! | `tpm-key-store` | no | ssr-tpm key store holding the router key, entry `router` (default `/var/lib/ssr/pki/tpm-keys`, where `ssr cert keygen --tpm` puts it); created there if absent; ignored with `router-key` |
//! | `ssh-dir` | yes | where the router's SSH key and the conductor's `known_hosts` entry are written |
//! | `audit-log` | no | JSON-lines audit file |
//! | `secure-conductor-onboarding` | no | default true; when true, legacy asset-id onboarding is refused |
//!
//! Unknown fields are errors (a misspelt field must not be silently ignored). Every
//! error names the field.
//!
//! # Conductor configuration (version 1)
//!
//! ```json
//! {
//!   "version": 1,
//!   "name": "conductor.example.net",
//!   "listen": "0.0.0.0:4443",
//!   "certificate": "/etc/sco/conductor-chain.pem",
//!   "private-key": "/etc/sco/conductor-key.pem",
//!   "token-key": "/etc/sco/token-key.pem",
//!   "routers": { "branch-router-1": "<48 letters and digits>" },
//!   "used-tokens": "/var/lib/sco/used-tokens.jsonl",
//!   "audit-log": "/var/log/sco-audit.jsonl",
//!   "ssh-host-key": "/etc/ssh/ssh_host_ed25519_key.pub",
//!   "authorized-keys": "/home/t128/.ssh/authorized_keys",
//!   "secure-conductor-onboarding": true
//! }
//! ```
//!
//! | field | required | meaning |
//! |---|---|---|
//! | `version` | yes | must be 1 |
//! | `name` | yes | the conductor's name: the `iss` of its tokens |
//! | `listen` | yes | `host:port` of the onboarding endpoint (port 0: an ephemeral port, for tests) |
//! | `certificate` | yes | the TLS certificate chain (PEM), leaf first |
//! | `private-key` | yes | the TLS key of `certificate`'s leaf (PKCS#8 PEM); it serves TLS only |
//! | `token-key` | yes | the token-signing key (PKCS#8 PEM, P-256), a different key from `private-key` |
//! | `routers` | yes | router name to its 48-character PSK |
//! | `used-tokens` | one of these two | the file store of used token ids (JSON lines, 0600): one conductor node |
//! | `used-tokens-database` | one of these two | PostgreSQL connection parameters (`host=… port=… user=… dbname=…` or a `postgresql://` URL): the store shared by all conductor nodes |
//! | `audit-log` | yes | JSON-lines audit file |
//! | `ssh-host-key` | yes | the conductor's SSH host public key (`ssh_host_ed25519_key.pub`) |
//! | `authorized-keys` | yes | where onboarded routers' SSH keys are appended |
//! | `router-keys` | no | where onboarding records are appended (JSON lines, 0600): each router's proved key, checked against its later certificate request (`ssr onboard check-csr`); not with `used-tokens-database`, which keeps the records in the database |
//! | `secure-conductor-onboarding` | no | default true; when true, legacy asset-id onboarding is refused |

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::Error;
use crate::psk::Psk;

/// A parsed `onboarding-config.json`.
#[derive(Debug)]
pub struct OnboardingConfig {
    /// `router-name`.
    pub router_name: String,
    /// `conductor-address` (`host:port`).
    pub conductor_address: String,
    /// `conductor-name` (or the host part of the address).
    pub conductor_name: String,
    /// `ca-certificate`.
    pub ca_certificate: PathBuf,
    /// `conductor-certificate`.
    pub conductor_certificate: PathBuf,
    /// `pre-shared-key`.
    pub psk: Psk,
    /// `token-public-key`.
    pub token_public_key: Option<PathBuf>,
    /// `router-key`.
    pub router_key: Option<PathBuf>,
    /// `tpm-tcti` (default `device:/dev/tpmrm0`).
    pub tpm_tcti: String,
    /// `tpm-key-store` (default [`DEFAULT_TPM_KEY_STORE`]).
    pub tpm_key_store: PathBuf,
    /// `ssh-dir`.
    pub ssh_dir: PathBuf,
    /// `audit-log`.
    pub audit_log: Option<PathBuf>,
    /// `secure-conductor-onboarding`.
    pub sco_enabled: bool,
}

/// Where the conductor records used token ids.
#[derive(Clone, PartialEq, Eq)]
pub enum UsedTokensConfig {
    /// `used-tokens`: the file store (one conductor node).
    File(PathBuf),
    /// `used-tokens-database`: PostgreSQL connection parameters (shared by the nodes).
    Postgres(String),
}

impl std::fmt::Debug for UsedTokensConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UsedTokensConfig::File(p) => f.debug_tuple("File").field(p).finish(),
            // The parameters may hold a password.
            UsedTokensConfig::Postgres(_) => f.write_str("Postgres([redacted])"),
        }
    }
}

/// A parsed conductor configuration.
#[derive(Debug)]
pub struct ConductorConfig {
    /// `name`.
    pub name: String,
    /// `listen`.
    pub listen: String,
    /// `certificate`.
    pub certificate: PathBuf,
    /// `private-key` (TLS only).
    pub private_key: PathBuf,
    /// `token-key` (signs tokens).
    pub token_key: PathBuf,
    /// `routers`: name → PSK.
    pub routers: BTreeMap<String, Psk>,
    /// `used-tokens` or `used-tokens-database`.
    pub used_tokens: UsedTokensConfig,
    /// `audit-log`.
    pub audit_log: PathBuf,
    /// `ssh-host-key`.
    pub ssh_host_key: PathBuf,
    /// `authorized-keys`.
    pub authorized_keys: PathBuf,
    /// `router-keys`.
    pub router_keys: Option<PathBuf>,
    /// `secure-conductor-onboarding`.
    pub sco_enabled: bool,
}

struct Fields<'a> {
    file: &'static str,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn open(
        file: &'static str,
        bytes: &'a [u8],
        value: &'a mut Value,
        allowed: &[&str],
    ) -> Result<Fields<'a>, Error> {
        let err = |field: &str, reason: String| Error::Config {
            file: file.into(),
            field: field.into(),
            reason,
        };
        *value =
            serde_json::from_slice(bytes).map_err(|e| err("", format!("not valid JSON: {e}")))?;
        let map = value
            .as_object()
            .ok_or_else(|| err("", "must be a JSON object".into()))?;
        for k in map.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(err(k, "unknown field".into()));
            }
        }
        let f = Fields { file, map };
        match f.map.get("version") {
            Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(f),
            Some(_) => Err(f.err("version", "unsupported version (expected 1)")),
            None => Err(f.err("version", "missing")),
        }
    }

    fn err(&self, field: &str, reason: impl Into<String>) -> Error {
        Error::Config {
            file: self.file.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn opt_str(&self, field: &str) -> Result<Option<&'a str>, Error> {
        match self.map.get(field) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Err(self.err(field, "must not be empty")),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.err(field, "expected a string")),
        }
    }

    fn str(&self, field: &str) -> Result<&'a str, Error> {
        self.opt_str(field)?
            .ok_or_else(|| self.err(field, "missing"))
    }

    fn path(&self, field: &str) -> Result<PathBuf, Error> {
        let p = PathBuf::from(self.str(field)?);
        if !p.is_absolute() {
            return Err(self.err(field, "must be an absolute path"));
        }
        Ok(p)
    }

    fn opt_path(&self, field: &str) -> Result<Option<PathBuf>, Error> {
        match self.opt_str(field)? {
            None => Ok(None),
            Some(_) => self.path(field).map(Some),
        }
    }

    fn bool_or(&self, field: &str, default: bool) -> Result<bool, Error> {
        match self.map.get(field) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.err(field, "expected true or false")),
        }
    }

    fn address(&self, field: &str, allow_zero: bool) -> Result<(String, String), Error> {
        let a = self.str(field)?;
        let (host, port) = a
            .rsplit_once(':')
            .ok_or_else(|| self.err(field, "expected host:port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0 && !allow_zero) {
            return Err(self.err(field, "expected host:port with a port in 1-65535"));
        }
        Ok((a.to_owned(), host.to_owned()))
    }

    fn psk(&self, field: &str, s: &str) -> Result<Psk, Error> {
        Psk::parse(s).map_err(|e| self.err(field, e.to_string()))
    }
}

/// Where `ssr cert keygen --tpm` keeps the router key (the `tpm-keys` key store of the
/// default PKI store `/var/lib/ssr/pki`).
pub const DEFAULT_TPM_KEY_STORE: &str = "/var/lib/ssr/pki/tpm-keys";

impl OnboardingConfig {
    /// Parses `onboarding-config.json`.
    pub fn parse(bytes: &[u8]) -> Result<OnboardingConfig, Error> {
        let mut v = Value::Null;
        let f = Fields::open(
            "onboarding-config.json",
            bytes,
            &mut v,
            &[
                "version",
                "router-name",
                "conductor-address",
                "conductor-name",
                "ca-certificate",
                "conductor-certificate",
                "pre-shared-key",
                "token-public-key",
                "router-key",
                "tpm-tcti",
                "tpm-key-store",
                "ssh-dir",
                "audit-log",
                "secure-conductor-onboarding",
            ],
        )?;
        let router_name = f.str("router-name")?.to_owned();
        let (conductor_address, host) = f.address("conductor-address", false)?;
        let conductor_name = f.opt_str("conductor-name")?.map_or(host, str::to_owned);
        Ok(OnboardingConfig {
            router_name,
            conductor_address,
            conductor_name,
            ca_certificate: f.path("ca-certificate")?,
            conductor_certificate: f.path("conductor-certificate")?,
            psk: f.psk("pre-shared-key", f.str("pre-shared-key")?)?,
            token_public_key: f.opt_path("token-public-key")?,
            router_key: f.opt_path("router-key")?,
            tpm_tcti: f
                .opt_str("tpm-tcti")?
                .unwrap_or("device:/dev/tpmrm0")
                .to_owned(),
            tpm_key_store: f
                .opt_path("tpm-key-store")?
                .unwrap_or_else(|| PathBuf::from(DEFAULT_TPM_KEY_STORE)),
            ssh_dir: f.path("ssh-dir")?,
            audit_log: f.opt_path("audit-log")?,
            sco_enabled: f.bool_or("secure-conductor-onboarding", true)?,
        })
    }
}

impl ConductorConfig {
    /// Parses the conductor's configuration.
    pub fn parse(bytes: &[u8]) -> Result<ConductorConfig, Error> {
        let mut v = Value::Null;
        let f = Fields::open(
            "conductor-config.json",
            bytes,
            &mut v,
            &[
                "version",
                "name",
                "listen",
                "certificate",
                "private-key",
                "token-key",
                "routers",
                "used-tokens",
                "used-tokens-database",
                "audit-log",
                "ssh-host-key",
                "authorized-keys",
                "router-keys",
                "secure-conductor-onboarding",
            ],
        )?;
        let mut routers = BTreeMap::new();
        match f.map.get("routers") {
            Some(Value::Object(m)) => {
                for (name, psk) in m {
                    let field = format!("routers.{name}");
                    let Value::String(s) = psk else {
                        return Err(f.err(&field, "expected the router's PSK as a string"));
                    };
                    if s.is_empty() {
                        return Err(f.err(
                            &field,
                            "empty PSK: generate one with `ssr onboard psk generate` and store it",
                        ));
                    }
                    routers.insert(name.clone(), f.psk(&field, s)?);
                }
            }
            Some(_) => return Err(f.err("routers", "expected an object of router name to PSK")),
            None => return Err(f.err("routers", "missing")),
        }
        let (listen, _) = f.address("listen", true)?;
        let used_tokens = match (
            f.map.contains_key("used-tokens"),
            f.opt_str("used-tokens-database")?,
        ) {
            (true, None) => UsedTokensConfig::File(f.path("used-tokens")?),
            (false, Some(db)) => UsedTokensConfig::Postgres(db.to_owned()),
            (true, Some(_)) => {
                return Err(f.err(
                    "used-tokens-database",
                    "give either used-tokens (a file) or used-tokens-database, not both",
                ));
            }
            (false, None) => return Err(f.err("used-tokens", "missing")),
        };
        Ok(ConductorConfig {
            name: f.str("name")?.to_owned(),
            listen,
            certificate: f.path("certificate")?,
            private_key: f.path("private-key")?,
            token_key: f.path("token-key")?,
            routers,
            used_tokens,
            audit_log: f.path("audit-log")?,
            ssh_host_key: f.path("ssh-host-key")?,
            authorized_keys: f.path("authorized-keys")?,
            router_keys: f.opt_path("router-keys")?,
            sco_enabled: f.bool_or("secure-conductor-onboarding", true)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> serde_json::Value {
        serde_json::json!({
            "version": 1,
            "router-name": "r1",
            "conductor-address": "127.0.0.1:4443",
            "ca-certificate": "/etc/ca.pem",
            "conductor-certificate": "/etc/c.pem",
            "pre-shared-key": "Ab3".repeat(16),
            "ssh-dir": "/var/lib/ssh",
        })
    }

    fn field_of(v: &serde_json::Value) -> String {
        match OnboardingConfig::parse(v.to_string().as_bytes()) {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn good_file_parses_with_defaults() {
        let c = OnboardingConfig::parse(good().to_string().as_bytes()).expect("parse");
        assert_eq!(c.conductor_name, "127.0.0.1");
        assert!(c.sco_enabled);
        assert!(c.router_key.is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = good();
        v["pre-shared-key"] = "short".into();
        assert_eq!(field_of(&v), "pre-shared-key");
        let mut v = good();
        v["conductor-address"] = "nohost".into();
        assert_eq!(field_of(&v), "conductor-address");
        let mut v = good();
        v["ca-certificate"] = "relative.pem".into();
        assert_eq!(field_of(&v), "ca-certificate");
        let mut v = good();
        v.as_object_mut()
            .expect("obj")
            .remove("conductor-certificate");
        assert_eq!(field_of(&v), "conductor-certificate");
        let mut v = good();
        v["routr-name"] = "x".into();
        assert_eq!(field_of(&v), "routr-name");
        let mut v = good();
        v["version"] = 2.into();
        assert_eq!(field_of(&v), "version");
        let mut v = good();
        v["secure-conductor-onboarding"] = "yes".into();
        assert_eq!(field_of(&v), "secure-conductor-onboarding");
        let e = OnboardingConfig::parse(b"{").unwrap_err();
        assert!(e.to_string().contains("not valid JSON"), "{e}");
    }

    fn conductor() -> serde_json::Value {
        serde_json::json!({
            "version": 1,
            "name": "c1",
            "listen": "127.0.0.1:0",
            "certificate": "/etc/c.pem",
            "private-key": "/etc/c-key.pem",
            "token-key": "/etc/t-key.pem",
            "routers": {},
            "used-tokens": "/var/lib/used.jsonl",
            "audit-log": "/var/log/a.jsonl",
            "ssh-host-key": "/etc/h.pub",
            "authorized-keys": "/root/.ssh/authorized_keys",
        })
    }

    fn conductor_field(v: &serde_json::Value) -> String {
        match ConductorConfig::parse(v.to_string().as_bytes()) {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn conductor_stores_and_token_key() {
        let c = ConductorConfig::parse(conductor().to_string().as_bytes()).expect("parse");
        assert_eq!(
            c.used_tokens,
            UsedTokensConfig::File("/var/lib/used.jsonl".into())
        );
        assert_eq!(c.token_key, PathBuf::from("/etc/t-key.pem"));
        let mut v = conductor();
        v["used-tokens-database"] = "host=/run/postgresql password=s3cret".into();
        assert_eq!(conductor_field(&v), "used-tokens-database");
        v.as_object_mut().expect("obj").remove("used-tokens");
        let c = ConductorConfig::parse(v.to_string().as_bytes()).expect("parse");
        assert!(matches!(c.used_tokens, UsedTokensConfig::Postgres(_)));
        assert!(!format!("{c:?}").contains("s3cret"));
        v.as_object_mut()
            .expect("obj")
            .remove("used-tokens-database");
        assert_eq!(conductor_field(&v), "used-tokens");
        let mut v = conductor();
        v.as_object_mut().expect("obj").remove("token-key");
        assert_eq!(conductor_field(&v), "token-key");
        let e = OnboardingConfig::parse(b"{").unwrap_err();
        assert!(e.to_string().contains("not valid JSON"), "{e}");
    }
}
