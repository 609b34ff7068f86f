//! `ssr onboard`: Secure Conductor Onboarding.
//!
//! Conductor: `ssr onboard psk generate`, `ssr onboard token create`,
//! `ssr onboard serve`. Router: `ssr onboard join`, and `ssr onboard legacy` (an
//! asset-id attempt, refused while SCO is enabled).
//!
//! Conductor, before its CA signs a router certificate: `ssr onboard check-csr`.
//!
//! Exit codes: 10 bad token, 11 conductor not trusted, 12 PSK mismatch, 13 network,
//! 14 legacy onboarding refused, 15 certificate request not for the onboarded key,
//! 2 configuration, 1 anything else.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use getrandom::SysRng;
use rand_core::UnwrapErr;
use ssr_onboard::config::{ConductorConfig, OnboardingConfig};
use ssr_onboard::https::{self, AuditLog, ConductorServer};
use ssr_onboard::{Error, ErrorKind, Psk, RouterSigner, SoftwareSigner, Token};

use super::{CmdResult, Failure};

/// Exit code: the token is malformed, altered, expired, reused or not for this router.
pub const EXIT_BAD_TOKEN: u8 = 10;
/// Exit code: the conductor's certificate is not trusted.
pub const EXIT_CONDUCTOR_NOT_TRUSTED: u8 = 11;
/// Exit code: one side could not prove the pre-shared key.
pub const EXIT_PSK_MISMATCH: u8 = 12;
/// Exit code: connection or TLS failure, timeout.
pub const EXIT_NETWORK: u8 = 13;
/// Exit code: legacy (asset-id) onboarding refused.
pub const EXIT_LEGACY_REFUSED: u8 = 14;
/// Exit code: a certificate request not for the key the router proved at onboarding.
pub const EXIT_CSR_KEY_MISMATCH: u8 = 15;

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Router-level pre-shared keys.
    #[command(subcommand)]
    Psk(PskCmd),
    /// Onboarding tokens (conductor).
    #[command(subcommand)]
    Token(TokenCmd),
    /// The conductor's token-signing key (separate from its TLS key).
    #[command(subcommand)]
    TokenKey(TokenKeyCmd),
    /// Run the conductor's onboarding endpoint.
    #[command(long_about = SERVE_HELP)]
    Serve {
        /// The conductor configuration (JSON, see the ssr-onboard docs).
        #[arg(long)]
        config: PathBuf,
        /// Serve this many connections, then exit (default: forever).
        #[arg(long)]
        connections: Option<u64>,
    },
    /// Check a router's certificate request against its onboarding record: the
    /// request must be self-signed by the key the router proved at onboarding (exit
    /// 15 otherwise). Run it before the conductor's CA signs the certificate.
    CheckCsr {
        /// The conductor configuration (its `router-keys` holds the records).
        #[arg(long)]
        config: PathBuf,
        /// The router's name.
        #[arg(long)]
        router: String,
        /// The certificate request (PEM or DER).
        #[arg(long)]
        csr: PathBuf,
    },
    /// Onboard this router to its conductor.
    Join {
        /// The token file from `ssr onboard token create`.
        #[arg(long)]
        token: PathBuf,
        /// onboarding-config.json.
        #[arg(long)]
        config: PathBuf,
    },
    /// Attempt legacy asset-id onboarding (refused while SCO is enabled).
    Legacy {
        /// The asset id.
        #[arg(long)]
        asset_id: String,
        /// onboarding-config.json.
        #[arg(long)]
        config: PathBuf,
    },
}

/// `ssr onboard serve --help`.
const SERVE_HELP: &str = "Run the conductor's onboarding endpoint (HTTPS, TLS 1.3).

Connections are served concurrently. Limits: TLS handshake 10 s, each request 10 s, \
a whole connection 40 s, 32 concurrent connections per source address (more are \
closed at once), 512 in all; request heads 8 KiB, bodies 16 KiB.

Keys: `private-key` serves TLS only; tokens are signed with `token-key`, a P-256 key \
of its own (`ssr onboard token-key generate --out K --public-out P`). Rotate it: \
add the new public key to the `token-public-key` file of routers that pin it, point \
every node's `token-key` at the new key and restart them (tokens signed with the old \
key are then refused; onboarded routers are unaffected), then drop the old public key.

Used tokens: `used-tokens` (a file, one conductor node) or `used-tokens-database` \
(PostgreSQL connection parameters, shared by two or more nodes: each token id is \
inserted once, so of two nodes racing the same token exactly one accepts it). A \
token is recorded before the conductor answers, so it stays used across restarts \
and failovers.

Onboarded routers' SSH keys are appended to `authorized-keys` (0600) as \
`restrict,port-forwarding <key> ssr-router:<name>`. With `router-keys` (or in the \
database with `used-tokens-database`), each onboarding is recorded with the key the \
router proved; `ssr onboard check-csr` \
refuses a certificate request for any other key.";

#[derive(Debug, Subcommand)]
pub enum TokenKeyCmd {
    /// Write a new P-256 token-signing key (PKCS#8 PEM, mode 0600).
    Generate {
        /// Where to write the key (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Also write its public key here (PEM), for the routers' `token-public-key`.
        #[arg(long)]
        public_out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PskCmd {
    /// Print a fresh 48-character PSK from the OS CSPRNG (store it; it never changes by itself).
    Generate,
    /// Check a PSK (read from a file) without printing it.
    Check {
        /// File holding the PSK (a trailing newline is ignored).
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a router-specific token signed with the conductor's private key.
    Create {
        /// The router's name.
        #[arg(long)]
        router: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = ssr_onboard::token::DEFAULT_LIFETIME_SECS)]
        expires_in: u64,
        /// Bind the token to this router public key (PEM SubjectPublicKeyInfo, P-256).
        #[arg(long)]
        bind_key: Option<PathBuf>,
        /// The conductor configuration (its private key signs the token).
        #[arg(long)]
        config: PathBuf,
        /// Where to write the token.
        #[arg(long)]
        out: PathBuf,
    },
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Maps an onboarding error to the operator's line and exit code.
fn failure(e: Error) -> Failure {
    let code = match e.kind() {
        ErrorKind::BadToken => EXIT_BAD_TOKEN,
        ErrorKind::ConductorNotTrusted => EXIT_CONDUCTOR_NOT_TRUSTED,
        ErrorKind::PskMismatch => EXIT_PSK_MISMATCH,
        ErrorKind::Network => EXIT_NETWORK,
        ErrorKind::LegacyRefused => EXIT_LEGACY_REFUSED,
        ErrorKind::Config => Failure::USAGE,
        _ => Failure::GENERAL,
    };
    let prefix = match e.kind() {
        ErrorKind::BadToken => "bad token: ",
        ErrorKind::ConductorNotTrusted => "",
        ErrorKind::PskMismatch => "PSK mismatch: ",
        ErrorKind::Network => "",
        _ => "",
    };
    Failure::new(code, format!("onboard: {prefix}{e}"))
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    fs::read(path).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}

pub fn run(cmd: Cmd) -> CmdResult {
    match cmd {
        Cmd::Psk(PskCmd::Generate) => {
            let psk = Psk::generate(&mut UnwrapErr(SysRng));
            println!("{}", psk.secret_str());
            Ok(())
        }
        Cmd::Psk(PskCmd::Check { file }) => {
            let s = String::from_utf8(read(&file)?)
                .map_err(|_| Failure::usage("PSK file is not UTF-8"))?;
            Psk::parse(s.trim_end_matches(['\n', '\r'])).map_err(failure)?;
            println!("valid");
            Ok(())
        }
        Cmd::Token(TokenCmd::Create {
            router,
            expires_in,
            bind_key,
            config,
            out,
        }) => {
            let mut cfg = ConductorConfig::parse(&read(&config)?).map_err(failure)?;
            let audit = AuditLog::new(Some(cfg.audit_log.clone()));
            let policy = https::conductor_policy(&mut cfg).map_err(failure)?;
            let spki = match bind_key {
                Some(p) => {
                    use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
                    let pem = String::from_utf8(read(&p)?)
                        .map_err(|_| Failure::usage("--bind-key: not a PEM file"))?;
                    let key = p256::PublicKey::from_public_key_pem(&pem).map_err(|e| {
                        Failure::usage(format!("--bind-key: not a P-256 public key: {e}"))
                    })?;
                    let der = key
                        .to_public_key_der()
                        .map_err(|e| Failure::general(format!("--bind-key: {e}")))?;
                    Some(der.as_bytes().to_vec())
                }
                None => None,
            };
            let (token, ev) = policy
                .issue_token(
                    &router,
                    unix_now(),
                    expires_in,
                    spki.as_deref(),
                    &mut UnwrapErr(SysRng),
                )
                .map_err(failure)?;
            https::write_private(&out, format!("{}\n", token.as_str()).as_bytes(), 0o600)
                .map_err(failure)?;
            audit.write(&ev).map_err(failure)?;
            println!(
                "token {} for router {router} expires at {}",
                token.unverified_claims().jti,
                token.unverified_claims().exp
            );
            Ok(())
        }
        Cmd::TokenKey(TokenKeyCmd::Generate { out, public_out }) => {
            use p256::elliptic_curve::Generate;
            use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
            if out.exists() {
                return Err(Failure::usage(format!(
                    "{}: exists (a token key is never overwritten)",
                    out.display()
                )));
            }
            let key = p256::SecretKey::generate_from_rng(&mut UnwrapErr(SysRng));
            let pem = key
                .to_pkcs8_pem(Default::default())
                .map_err(|e| Failure::general(format!("token key: {e}")))?;
            https::write_private(&out, pem.as_bytes(), 0o600).map_err(failure)?;
            if let Some(p) = public_out {
                let public = key
                    .public_key()
                    .to_public_key_pem(Default::default())
                    .map_err(|e| Failure::general(format!("token key: {e}")))?;
                https::write_private(&p, public.as_bytes(), 0o644).map_err(failure)?;
            }
            println!("token-signing key written to {}", out.display());
            Ok(())
        }
        Cmd::Serve {
            config,
            connections,
        } => {
            let cfg = ConductorConfig::parse(&read(&config)?).map_err(failure)?;
            let server = ConductorServer::from_config(cfg).map_err(failure)?;
            let addr = server.local_addr().map_err(failure)?;
            println!("listening on {addr}");
            server
                .serve(connections, &mut |o| {
                    // A closed stdout must not stop the endpoint.
                    use std::io::Write as _;
                    let _ = writeln!(std::io::stdout(), "onboarded router {}", o.router);
                })
                .map_err(failure)
        }
        Cmd::CheckCsr {
            config,
            router,
            csr,
        } => {
            let cfg = ConductorConfig::parse(&read(&config)?).map_err(failure)?;
            match https::check_router_csr(&cfg, &router, &read(&csr)?) {
                Ok(()) => {
                    println!(
                        "certificate request matches the key router {router} proved at onboarding"
                    );
                    Ok(())
                }
                Err(e @ (Error::CsrKeyMismatch { .. } | Error::MalformedCsr { .. })) => Err(
                    Failure::new(EXIT_CSR_KEY_MISMATCH, format!("onboard: refused: {e}")),
                ),
                Err(e) => Err(failure(e)),
            }
        }
        Cmd::Join { token, config } => {
            let cfg = OnboardingConfig::parse(&read(&config)?).map_err(failure)?;
            let t = String::from_utf8(read(&token)?).map_err(|_| {
                failure(Error::MalformedToken {
                    reason: "not UTF-8",
                })
            })?;
            let t = Token::parse(&t).map_err(failure)?;
            let signer: Box<dyn RouterSigner> = match &cfg.router_key {
                Some(key_path) => {
                    let pem = String::from_utf8(read(key_path)?)
                        .map_err(|_| Failure::usage("router-key: not a PEM file"))?;
                    Box::new(SoftwareSigner::from_pkcs8_pem(&pem).map_err(failure)?)
                }
                None => Box::new(
                    ssr_onboard::tpm::open_router_key(&cfg.tpm_tcti, &cfg.tpm_key_store)
                        .map_err(failure)?,
                ),
            };
            let out = https::join(&cfg, &t, signer.as_ref()).map_err(failure)?;
            println!(
                "onboarded: conductor {} on port {} (ssh -F {} conductor)",
                out.conductor_host,
                out.ssh_port,
                out.ssh_config.display()
            );
            Ok(())
        }
        Cmd::Legacy { asset_id, config } => {
            let cfg = OnboardingConfig::parse(&read(&config)?).map_err(failure)?;
            https::legacy_onboard(&cfg, &asset_id).map_err(failure)?;
            println!("legacy onboarding accepted");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    //! The commands end to end, in-process, over loopback TLS: exit codes for each
    //! failure class.

    use std::net::{Ipv4Addr, TcpListener};
    use std::time::{Duration, Instant};

    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port")
    }

    fn w(dir: &Path, name: &str, data: &str) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, data).expect("write");
        p
    }

    fn router_config(dir: &Path, port: u16, ca: &str, cert: &str, psk: &str, sco: bool) -> PathBuf {
        router_config_with(dir, port, ca, cert, psk, sco, None)
    }

    /// `tcti`: use the TPM there instead of a software key.
    fn router_config_with(
        dir: &Path,
        port: u16,
        ca: &str,
        cert: &str,
        psk: &str,
        sco: bool,
        tcti: Option<&str>,
    ) -> PathBuf {
        let ca = w(dir, "ca.pem", ca);
        let cert = w(dir, "conductor.pem", cert);
        let sk = {
            use p256::elliptic_curve::Generate;
            use p256::pkcs8::EncodePrivateKey;
            p256::SecretKey::generate_from_rng(&mut UnwrapErr(SysRng))
                .to_pkcs8_pem(Default::default())
                .expect("pkcs8")
                .to_string()
        };
        let key_field = match tcti {
            Some(t) => format!(
                "\"tpm-tcti\":{t:?},\"tpm-key-store\":{:?}",
                dir.join("tpm-keys")
            ),
            None => format!("\"router-key\":{:?}", w(dir, "router-key.pem", &sk)),
        };
        let ssh = dir.join("ssh");
        let _ = fs::create_dir(&ssh);
        let json = format!(
            r#"{{"version":1,"router-name":"edge-1","conductor-address":"127.0.0.1:{port}","ca-certificate":{ca:?},"conductor-certificate":{cert:?},"pre-shared-key":"{psk}",{key_field},"ssh-dir":{ssh:?},"secure-conductor-onboarding":{sco}}}"#
        );
        w(dir, "onboarding-config.json", &json)
    }

    /// Writes a conductor configuration in `d` for router `edge-1`, serving `ident` on a
    /// free loopback port; returns its path, the router's PSK and the port.
    fn conductor_config(
        d: &Path,
        ident: &ssr_testkit::http::TlsIdentity,
    ) -> (PathBuf, String, u16) {
        let psk = Psk::generate(&mut UnwrapErr(SysRng))
            .secret_str()
            .to_owned();
        let port = free_port();
        let host_pub = {
            let k = ssr_onboard::ssh::Ed25519SshKey::generate(&mut UnwrapErr(SysRng)).expect("k");
            w(d, "host.pub", &k.public_key().authorized_keys_line("host"))
        };
        let cert = w(d, "c.pem", ident.cert_pem());
        let key = w(d, "c-key.pem", ident.key_pem());
        let token_key = w(
            d,
            "token-key.pem",
            &rcgen::KeyPair::generate()
                .expect("token key")
                .serialize_pem(),
        );
        let cfg = format!(
            r#"{{"version":1,"name":"cond","listen":"127.0.0.1:{port}","certificate":{cert:?},"private-key":{key:?},"token-key":{token_key:?},"routers":{{"edge-1":"{psk}"}},"used-tokens":{u:?},"audit-log":{a:?},"ssh-host-key":{host_pub:?},"authorized-keys":{ak:?}}}"#,
            u = d.join("used.jsonl"),
            a = d.join("audit.jsonl"),
            ak = d.join("authorized_keys"),
        );
        let conductor = w(d, "conductor.json", &cfg);
        (conductor, psk, port)
    }

    fn join(token: &Path, config: &Path) -> CmdResult {
        // The server thread may not listen yet: retry network failures briefly.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = run(Cmd::Join {
                token: token.to_owned(),
                config: config.to_owned(),
            });
            match &r {
                Err(f) if f.code == EXIT_NETWORK && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return r,
            }
        }
    }

    fn token(config: &Path, out: &Path) {
        run(Cmd::Token(TokenCmd::Create {
            router: "edge-1".into(),
            expires_in: 600,
            bind_key: None,
            config: config.to_owned(),
            out: out.to_owned(),
        }))
        .expect("token create");
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn token_and_token_key_files_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let key = d.join("new-token-key.pem");
        let public = d.join("token-pub.pem");
        run(Cmd::TokenKey(TokenKeyCmd::Generate {
            out: key.clone(),
            public_out: Some(public.clone()),
        }))
        .expect("generate");
        assert_eq!(mode(&key), 0o600);
        let pem = fs::read_to_string(&key).expect("key");
        {
            use p256::pkcs8::DecodePrivateKey;
            use p256::pkcs8::DecodePublicKey;
            let k = p256::SecretKey::from_pkcs8_pem(&pem).expect("a PKCS#8 P-256 key");
            let p = fs::read_to_string(&public).expect("public");
            assert_eq!(
                p256::PublicKey::from_public_key_pem(&p).expect("public key"),
                k.public_key()
            );
        }
        // Never overwritten.
        let f = run(Cmd::TokenKey(TokenKeyCmd::Generate {
            out: key.clone(),
            public_out: None,
        }))
        .unwrap_err();
        assert_eq!(f.code, Failure::USAGE);
        assert_eq!(fs::read_to_string(&key).expect("key"), pem);

        let ident = ssr_testkit::http::TlsIdentity::generate(&["127.0.0.1"]).expect("tls");
        let (conductor, _, _) = conductor_config(d, &ident);
        let t = d.join("t.jwt");
        // Even over an existing world-readable file.
        fs::write(&t, "old").expect("write");
        token(&conductor, &t);
        assert_eq!(mode(&t), 0o600);
        Token::parse(fs::read_to_string(&t).expect("token").trim()).expect("a token");
    }

    #[test]
    fn onboard_commands_and_exit_codes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let ident = ssr_testkit::http::TlsIdentity::generate(&["127.0.0.1"]).expect("tls");
        let other = ssr_testkit::http::TlsIdentity::generate(&["127.0.0.1"]).expect("tls");
        let (conductor, psk, port) = conductor_config(d, &ident);
        let t1 = d.join("t1.jwt");
        token(&conductor, &t1);
        let serve = conductor.clone();
        // success, reuse, wrong PSK (two connections reach the server).
        let server = std::thread::spawn(move || {
            run(Cmd::Serve {
                config: serve,
                connections: Some(3),
            })
        });

        let r = tempfile::tempdir().expect("router dir");
        let rc = router_config(r.path(), port, ident.ca_pem(), ident.cert_pem(), &psk, true);
        join(&t1, &rc).expect("onboarded");
        assert!(r.path().join("ssh/known_hosts").exists());
        assert_eq!(join(&t1, &rc).unwrap_err().code, EXIT_BAD_TOKEN);

        let t2 = d.join("t2.jwt");
        token(&conductor, &t2);
        let bad = tempfile::tempdir().expect("dir");
        let wrong = router_config(
            bad.path(),
            port,
            ident.ca_pem(),
            ident.cert_pem(),
            &"P".repeat(48),
            true,
        );
        let f = join(&t2, &wrong).unwrap_err();
        assert_eq!(f.code, EXIT_PSK_MISMATCH, "{f}");
        assert!(f.message.starts_with("onboard: PSK mismatch"), "{f}");
        server.join().expect("server thread").expect("serve");

        // Not trusted (the handshake fails before any server is needed: use a new one).
        let t3 = d.join("t3.jwt");
        token(&conductor, &t3);
        let server = std::thread::spawn(move || {
            run(Cmd::Serve {
                config: conductor,
                connections: Some(1),
            })
        });
        let untrusted = tempfile::tempdir().expect("dir");
        let uc = router_config(
            untrusted.path(),
            port,
            other.ca_pem(),
            ident.cert_pem(),
            &psk,
            true,
        );
        assert_eq!(join(&t3, &uc).unwrap_err().code, EXIT_CONDUCTOR_NOT_TRUSTED);
        server.join().expect("server thread").expect("serve");

        // Nobody listening any more.
        let f = run(Cmd::Join {
            token: t3.clone(),
            config: rc.clone(),
        })
        .unwrap_err();
        assert_eq!(f.code, EXIT_NETWORK, "{f}");

        // Legacy refused on the router.
        let f = run(Cmd::Legacy {
            asset_id: "a-1".into(),
            config: rc.clone(),
        })
        .unwrap_err();
        assert_eq!(f.code, EXIT_LEGACY_REFUSED);

        // A bad config names its field; a garbled token is a bad token.
        let broken = w(d, "broken.json", r#"{"version":1,"router-name":""}"#);
        let f = run(Cmd::Join {
            token: t3.clone(),
            config: broken,
        })
        .unwrap_err();
        assert_eq!(f.code, Failure::USAGE);
        assert!(f.message.contains("\"router-name\""), "{f}");
        let garbled = w(d, "garbled.jwt", "not-a-token");
        assert_eq!(
            run(Cmd::Join {
                token: garbled,
                config: rc
            })
            .unwrap_err()
            .code,
            EXIT_BAD_TOKEN
        );
        let audit = fs::read_to_string(d.join("audit.jsonl")).expect("audit");
        for ev in [
            "token-created",
            "token-used",
            "onboarded",
            "token-rejected",
            "refused",
        ] {
            assert!(
                audit.contains(&format!("\"event\":\"{ev}\"")),
                "{ev} missing: {audit}"
            );
        }
    }

    #[test]
    fn join_with_the_router_key_in_a_swtpm() {
        let tpm = ssr_testkit::Swtpm::start().expect("swtpm");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let ident = ssr_testkit::http::TlsIdentity::generate(&["127.0.0.1"]).expect("tls");
        let (conductor, psk, port) = conductor_config(d, &ident);
        let r = tempfile::tempdir().expect("router dir");
        // Bind the token to the TPM's key (the key store entry `router`), exported as PEM.
        let spki = {
            use ssr_onboard::RouterSigner as _;
            ssr_onboard::tpm::open_router_key(&tpm.tcti(), &r.path().join("tpm-keys"))
                .expect("tpm key")
                .public_key_spki()
                .expect("spki")
        };
        let pub_pem = {
            use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
            p256::PublicKey::from_public_key_der(&spki)
                .expect("pk")
                .to_public_key_pem(Default::default())
                .expect("pem")
        };
        let bind = w(d, "router-pub.pem", &pub_pem);
        let t = d.join("t.jwt");
        run(Cmd::Token(TokenCmd::Create {
            router: "edge-1".into(),
            expires_in: 600,
            bind_key: Some(bind),
            config: conductor.clone(),
            out: t.clone(),
        }))
        .expect("token");
        let server = std::thread::spawn(move || {
            run(Cmd::Serve {
                config: conductor,
                connections: Some(1),
            })
        });
        let rc = router_config_with(
            r.path(),
            port,
            ident.ca_pem(),
            ident.cert_pem(),
            &psk,
            true,
            Some(&tpm.tcti()),
        );
        join(&t, &rc).expect("onboarded with the TPM-held key");
        server.join().expect("server").expect("serve");
        let audit = fs::read_to_string(d.join("audit.jsonl")).expect("audit");
        assert!(audit.contains(&format!(
            "router key {}",
            ssr_onboard::token::key_thumbprint(&spki)
        )));
    }
}
