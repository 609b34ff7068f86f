//! Onboarding over loopback with real TLS (rustls on both sides, certificates from a
//! throwaway CA): success, and every refusal the issue lists.

mod common;

use common::*;
use ssr_onboard::https::{FileUsedTokens, join, legacy_onboard};
use ssr_onboard::msg::RefusalCode;
use ssr_onboard::ssh::SshPublicKey;
use ssr_onboard::{Error, ErrorKind, RouterSigner, SoftwareSigner, Token};

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn onboarding_succeeds_and_the_token_then_fails_even_after_a_restart() {
    let c = Conductor::start(2);
    let r = router(&c, |_| {});
    let signer = SoftwareSigner::generate(&mut rng());
    let spki = signer.public_key_spki().expect("spki");
    let token = c.token("router-1", unix_now(), 600, Some(&spki));
    let out = join(&r.config, &token, &signer).expect("onboarding succeeds");
    assert_eq!(out.ssh_port, 930);

    // SSH key exchange: the conductor's host key landed in the router's known_hosts
    // for port 930, and the router's key in the conductor's authorized_keys.
    let host_pub = std::fs::read_to_string(c.path("ssh_host_ed25519_key.pub")).expect("host pub");
    let host = SshPublicKey::parse(host_pub.trim()).expect("host key");
    let kh = std::fs::read_to_string(&out.known_hosts).expect("known_hosts");
    assert_eq!(kh, format!("[127.0.0.1]:930 {}\n", host.to_line()));
    let router_pub = std::fs::read_to_string(r.config.ssh_dir.join("id_ed25519.pub")).expect("pub");
    let ak = std::fs::read_to_string(c.path("authorized_keys")).expect("authorized_keys");
    let router_key = SshPublicKey::parse(router_pub.trim()).expect("router key");
    // Restricted to port forwarding, named after the router, private to its owner.
    assert_eq!(
        ak,
        format!(
            "restrict,port-forwarding {} ssr-router:router-1\n",
            router_key.to_line()
        )
    );
    assert_eq!(mode(&c.path("authorized_keys")), 0o600);
    // ssh-keygen, as an independent oracle, derives the same public key from the
    // private key file we wrote.
    let derived = std::process::Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&out.ssh_private_key)
        .output()
        .expect("ssh-keygen -y");
    assert!(
        derived.status.success(),
        "{}",
        String::from_utf8_lossy(&derived.stderr)
    );
    assert_eq!(
        SshPublicKey::parse(String::from_utf8_lossy(&derived.stdout).trim()).expect("derived"),
        router_key
    );

    // Audit trail on both sides.
    let ev: Vec<String> = c
        .audit()
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(ev, ["token-created", "token-used", "onboarded"]);
    assert_eq!(
        r.audit().last().expect("router audit")["event"],
        "onboarded"
    );

    // The same token again: refused (used ids are recorded).
    let again = join(&r.config, &token, &signer);
    assert!(
        matches!(
            again,
            Err(Error::Refused {
                code: RefusalCode::BadToken,
                ..
            })
        ),
        "{again:?}"
    );
    assert_eq!(kind(&again), ErrorKind::BadToken);
    c.finish();
    let last = c.audit().pop().expect("audit");
    assert_eq!(last["event"], "token-rejected");
    assert!(
        last["detail"]
            .as_str()
            .expect("detail")
            .contains("already used")
    );

    // The register is persisted: a restarted conductor still refuses the token.
    let used = FileUsedTokens::open(&c.path("used-tokens.jsonl")).expect("register");
    assert!(used.contains(&token.unverified_claims().jti));
    let Conductor {
        dir, ident, psk, ..
    } = c;
    let c2 = Conductor::start_in(dir, ident, psk, 1);
    let r2 = router(&c2, |_| {});
    let again = join(&r2.config, &token, &signer);
    assert_eq!(kind(&again), ErrorKind::BadToken);
}

#[test]
fn tampered_token_is_refused() {
    let c = Conductor::start(1);
    let r = router(&c, |_| {});
    let signer = SoftwareSigner::generate(&mut rng());
    let token = c.token("router-1", unix_now(), 600, None);
    // Re-sign nothing: change one claim (exp) and keep the signature.
    let parts: Vec<&str> = token.as_str().split('.').collect();
    let mut claims = token.unverified_claims().clone();
    claims.exp += 3600;
    let payload = <base64ct::Base64UrlUnpadded as base64ct::Encoding>::encode_string(
        &serde_json::to_vec(&claims).expect("json"),
    );
    let forged = Token::parse(&format!("{}.{payload}.{}", parts[0], parts[2])).expect("parses");
    let res = join(&r.config, &forged, &signer);
    assert!(
        matches!(
            res,
            Err(Error::Refused {
                code: RefusalCode::BadToken,
                ..
            })
        ),
        "{res:?}"
    );
    c.finish();
    let last = c.audit().pop().expect("audit");
    assert_eq!(last["event"], "token-rejected");
    assert_eq!(last["detail"], "token signature does not verify");
    assert_eq!(
        r.audit().pop().expect("router audit")["event"],
        "token-rejected"
    );
}

#[test]
fn expired_token_is_refused() {
    let c = Conductor::start(0);
    let r = router(&c, |_| {});
    let signer = SoftwareSigner::generate(&mut rng());
    let token = c.token("router-1", unix_now() - 7200, 3600, None);
    let res = join(&r.config, &token, &signer);
    assert!(matches!(res, Err(Error::TokenExpired { .. })), "{res:?}");
    assert_eq!(kind(&res), ErrorKind::BadToken);
    assert_eq!(r.audit().pop().expect("audit")["event"], "token-rejected");
}

#[test]
fn wrong_psk_on_the_router_is_a_psk_mismatch() {
    let c = Conductor::start(1);
    let r = router(&c, |v| v["pre-shared-key"] = "W".repeat(48).into());
    let signer = SoftwareSigner::generate(&mut rng());
    let token = c.token("router-1", unix_now(), 600, None);
    let res = join(&r.config, &token, &signer);
    assert_eq!(res, Err(Error::PskMismatch { side: "conductor" }));
    assert_eq!(kind(&res), ErrorKind::PskMismatch);
    c.finish();
    assert!(!c.path("authorized_keys").exists());
    assert_eq!(r.audit().pop().expect("audit")["event"], "refused");
    // The router told the conductor why it stopped; the conductor audited it.
    let last = c.audit().pop().expect("conductor audit");
    assert_eq!(last["event"], "refused");
    assert!(
        last["detail"]
            .as_str()
            .expect("detail")
            .starts_with("router refused onboarding: psk-mismatch"),
        "{last}"
    );
}

#[test]
fn conductor_with_another_psk_is_refused_by_the_router() {
    // The conductor holds a different PSK for router-1 than the router.
    let c = Conductor::start(1);
    let r = router(&c, |v| v["pre-shared-key"] = "R0uter".repeat(8).into());
    assert_ne!(c.psk, "R0uter".repeat(8));
    let signer = SoftwareSigner::generate(&mut rng());
    let token = c.token("router-1", unix_now(), 600, None);
    let res = join(&r.config, &token, &signer);
    assert_eq!(kind(&res), ErrorKind::PskMismatch);
    // No SSH material was written on the router.
    assert!(!r.config.ssh_dir.join("known_hosts").exists());
    assert!(!r.config.ssh_dir.join("id_ed25519").exists());
}

#[test]
fn conductor_certificate_from_another_ca_is_not_trusted() {
    let c = Conductor::start(3);
    let other = ssr_testkit::http::TlsIdentity::generate(&["127.0.0.1"]).expect("other CA");
    let signer = SoftwareSigner::generate(&mut rng());
    let token = c.token("router-1", unix_now(), 600, None);
    // The router trusts another CA.
    let r = router(&c, |_| {});
    std::fs::write(&r.config.ca_certificate, other.ca_pem()).expect("write");
    let res = join(&r.config, &token, &signer);
    assert!(
        matches!(res, Err(Error::ConductorNotTrusted { .. })),
        "{res:?}"
    );
    assert_eq!(kind(&res), ErrorKind::ConductorNotTrusted);
    // Right CA, but the configured conductor certificate is another one.
    let r = router(&c, |_| {});
    std::fs::write(
        &r.config.ca_certificate,
        format!("{}{}", c.ident.ca_pem(), other.ca_pem()),
    )
    .expect("write");
    std::fs::write(&r.config.conductor_certificate, other.cert_pem()).expect("write");
    let res = join(&r.config, &token, &signer);
    assert_eq!(kind(&res), ErrorKind::ConductorNotTrusted);
    // The token was never presented: it still works.
    let r = router(&c, |_| {});
    join(&r.config, &token, &signer).expect("onboarding with the right trust");
}

#[test]
fn legacy_attempt_refused_on_both_sides_and_audited() {
    let c = Conductor::start(1);
    // The router itself refuses while SCO is enabled.
    let r = router(&c, |_| {});
    let res = legacy_onboard(&r.config, "asset-0042");
    assert!(matches!(res, Err(Error::LegacyRefused { .. })));
    assert_eq!(r.audit().pop().expect("audit")["event"], "legacy-refused");
    // A router without SCO tries anyway: the conductor refuses and audits it.
    let r = router(&c, |v| v["secure-conductor-onboarding"] = false.into());
    let res = legacy_onboard(&r.config, "asset-0042");
    assert!(
        matches!(
            res,
            Err(Error::Refused {
                code: RefusalCode::LegacyRefused,
                ..
            })
        ),
        "{res:?}"
    );
    assert_eq!(kind(&res), ErrorKind::LegacyRefused);
    c.finish();
    let last = c.audit().pop().expect("audit");
    assert_eq!(last["event"], "legacy-refused");
    assert!(
        last["detail"]
            .as_str()
            .expect("detail")
            .contains("asset-0042")
    );
}

#[test]
fn network_failure_is_reported_as_such() {
    let c = Conductor::start(0);
    let r = router(&c, |v| v["conductor-address"] = "127.0.0.1:1".into());
    let signer = SoftwareSigner::generate(&mut rng());
    let token = c.token("router-1", unix_now(), 600, None);
    let res = join(&r.config, &token, &signer);
    assert_eq!(kind(&res), ErrorKind::Network);
}

#[test]
fn the_tls_key_is_refused_as_the_token_signing_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ident = ssr_testkit::http::TlsIdentity::generate(&["127.0.0.1"]).expect("tls");
    let cert = write(d, "conductor.pem", ident.cert_pem());
    let key = write(d, "conductor-key.pem", ident.key_pem());
    let host = host_key(d);
    let cfg = |token_key: &std::path::Path| {
        serde_json::json!({
            "version": 1,
            "name": "conductor-1",
            "listen": "127.0.0.1:0",
            "certificate": cert,
            "private-key": key,
            "token-key": token_key,
            "routers": {},
            "used-tokens": d.join("used.jsonl"),
            "audit-log": d.join("audit.jsonl"),
            "ssh-host-key": host.with_extension("pub"),
            "authorized-keys": d.join("authorized_keys"),
        })
        .to_string()
    };
    let parse = |s: String| ssr_onboard::config::ConductorConfig::parse(s.as_bytes()).expect("cfg");
    let e = ssr_onboard::https::ConductorServer::from_config(parse(cfg(&key))).unwrap_err();
    assert!(
        matches!(&e, Error::Config { field, .. } if field == "token-key"),
        "{e:?}"
    );
    assert!(e.to_string().contains("TLS key"), "{e}");
    // A key of its own is accepted, and tokens it signs verify against it only.
    let own = write(d, "token-key.pem", &token_key_pem());
    ssr_onboard::https::ConductorServer::from_config(parse(cfg(&own))).expect("own key");
}

/// The public half of a PKCS#8 P-256 key file, as PEM.
fn public_pem(key: &std::path::Path) -> String {
    use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let k = p256::SecretKey::from_pkcs8_pem(&std::fs::read_to_string(key).expect("key"))
        .expect("pkcs8");
    k.public_key()
        .to_public_key_pem(Default::default())
        .expect("pem")
}

#[test]
fn the_router_checks_the_token_against_its_trusted_token_keys() {
    let c = Conductor::start(1);
    let signer = SoftwareSigner::generate(&mut rng());
    let right = public_pem(&c.path("token-key.pem"));
    let other_key = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(other_key.path(), token_key_pem()).expect("write");
    let other = public_pem(other_key.path());

    // Trusting only another key: refused before any connection (bad token).
    let r = router(&c, |_| {});
    let trust = write(r.dir.path(), "token-pub.pem", &other);
    let r = router(&c, |v| {
        v["token-public-key"] = trust.display().to_string().into()
    });
    let token = c.token("router-1", unix_now(), 600, None);
    let e = join(&r.config, &token, &signer);
    assert!(matches!(e, Err(Error::TokenSignature)), "{e:?}");
    assert_eq!(
        r.audit().last().expect("router audit")["event"],
        "token-rejected"
    );
    assert!(
        !c.audit().iter().any(|e| e["event"] == "token-used"),
        "the token reached the conductor"
    );

    // A rotation overlap: the old and the current key in one file.
    let both = write(
        r.dir.path(),
        "token-pub-both.pem",
        &format!("{other}{right}"),
    );
    let r = router(&c, |v| {
        v["token-public-key"] = both.display().to_string().into()
    });
    join(&r.config, &token, &signer).expect("onboarded");
    c.finish();

    // A file without a key is a configuration error naming the field.
    let empty = write(r.dir.path(), "empty.pem", "no key here\n");
    let r = router(&c, |v| {
        v["token-public-key"] = empty.display().to_string().into()
    });
    let e = join(&r.config, &token, &signer);
    assert!(
        matches!(&e, Err(Error::Config { field, .. }) if field == "token-public-key"),
        "{e:?}"
    );
}

/// `openssl req -new` for the key in `key` (the independent CSR maker), DER.
fn openssl_csr(key: &std::path::Path, cn: &str) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(["req", "-new", "-sha256", "-outform", "DER", "-subj"])
        .arg(format!("/CN={cn}"))
        .arg("-key")
        .arg(key)
        .output()
        .expect("openssl req");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn a_csr_must_carry_the_key_the_router_proved_at_onboarding() {
    use ssr_onboard::config::ConductorConfig;
    use ssr_onboard::https::check_router_csr;
    let c = Conductor::start(1);
    let r = router(&c, |_| {});
    let key_pem = token_key_pem();
    let key = write(r.dir.path(), "router-key.pem", &key_pem);
    let signer = SoftwareSigner::from_pkcs8_pem(&key_pem).expect("router key");
    let spki = signer.public_key_spki().expect("spki");
    let token = c.token("router-1", unix_now(), 600, Some(&spki));
    join(&r.config, &token, &signer).expect("onboarded");
    c.finish();
    let records = std::fs::read_to_string(c.path("router-keys.jsonl")).expect("records");
    assert_eq!(records.lines().count(), 1, "{records}");
    assert_eq!(mode(&c.path("router-keys.jsonl")), 0o600);
    let cfg = ConductorConfig::parse(&std::fs::read(&c.config).expect("cfg")).expect("parse");

    // The onboarded key's CSR (DER, and PEM as an operator hands it over) passes.
    let good = openssl_csr(&key, "router-1");
    check_router_csr(&cfg, "router-1", &good).expect("the proved key");
    let pem = std::process::Command::new("openssl")
        .args(["req", "-inform", "DER", "-outform", "PEM"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write as _;
            ch.stdin.take().expect("stdin").write_all(&good)?;
            ch.wait_with_output()
        })
        .expect("openssl")
        .stdout;
    check_router_csr(&cfg, "router-1", &pem).expect("PEM");

    // A CSR with another key, even a well-signed one, is refused.
    let other = write(r.dir.path(), "other-key.pem", &token_key_pem());
    let e = check_router_csr(&cfg, "router-1", &openssl_csr(&other, "router-1"));
    assert!(matches!(e, Err(Error::CsrKeyMismatch { .. })), "{e:?}");
    // A router with no onboarding record is refused.
    let e = check_router_csr(&cfg, "router-2", &good);
    assert!(matches!(e, Err(Error::CsrKeyMismatch { .. })), "{e:?}");
    // The right key in a CSR whose signature was broken is refused.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 5] ^= 1;
    let e = check_router_csr(&cfg, "router-1", &bad);
    assert!(matches!(e, Err(Error::MalformedCsr { .. })), "{e:?}");
    assert!(check_router_csr(&cfg, "router-1", b"garbage").is_err());
}
