//! The two pure state machines driven against each other in memory, with a virtual
//! clock: every acceptance and refusal path of the handshake.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use getrandom::SysRng;
use p256::ecdsa::SigningKey;
use p256::elliptic_curve::Generate;
use rand_core::UnwrapErr;
use ssr_onboard::audit::AuditKind;
use ssr_onboard::conductor::{ConductorPolicy, ConductorSession, MemoryUsedTokens};
use ssr_onboard::msg::RefusalCode;
use ssr_onboard::router::{RouterHandshake, RouterParams};
use ssr_onboard::ssh::{Ed25519SshKey, SshPublicKey};
use ssr_onboard::{Error, ErrorKind, Psk, RouterSigner, SoftwareSigner, Token};

const T: u64 = 1_800_000_000;

fn rng() -> UnwrapErr<SysRng> {
    UnwrapErr(SysRng)
}

struct World {
    policy: ConductorPolicy,
    used: MemoryUsedTokens,
    psk: String,
    signer: SoftwareSigner,
    ssh: SshPublicKey,
    host: SshPublicKey,
}

fn world() -> World {
    let psk = Psk::generate(&mut rng());
    let psk_s = psk.secret_str().to_owned();
    let mut routers = BTreeMap::new();
    routers.insert("r1".to_owned(), psk);
    let host = Ed25519SshKey::generate(&mut rng())
        .expect("host")
        .public_key();
    World {
        policy: ConductorPolicy::new(
            "cond",
            SigningKey::generate_from_rng(&mut rng()),
            routers,
            host.clone(),
        ),
        used: MemoryUsedTokens::default(),
        psk: psk_s,
        signer: SoftwareSigner::generate(&mut rng()),
        ssh: Ed25519SshKey::generate(&mut rng())
            .expect("ssh")
            .public_key(),
        host,
    }
}

struct Run {
    router: Result<(), Error>,
    conductor: Result<(), Error>,
    rh: Option<RouterHandshake>,
    cs: ConductorSession,
}

/// Runs a handshake over a shared EKM; `router_psk` overrides the router's PSK.
fn run(w: &mut World, token: &str, router_psk: &str, unix: u64) -> Run {
    let now = Instant::now();
    let ekm = [9u8; 32];
    let params = RouterParams {
        router_name: "r1".into(),
        psk: Psk::parse(router_psk).expect("psk"),
        token: Token::parse(token).expect("token parses"),
        ssh_key: w.ssh.clone(),
    };
    let mut cs = ConductorSession::new(ekm, now);
    let mut rh = match RouterHandshake::start(params, &w.signer, ekm, &mut rng(), now, unix) {
        Ok(rh) => rh,
        Err(e) => {
            return Run {
                router: Err(e),
                conductor: Ok(()),
                rh: None,
                cs,
            };
        }
    };
    let mut router = Ok(());
    let mut conductor = Ok(());
    while let Some(m) = rh.poll_transmit() {
        let c = cs.handle_message(&w.policy, &mut w.used, &m, &mut rng(), now, unix);
        if conductor.is_ok() {
            conductor = c;
        }
        while let Some(reply) = cs.poll_transmit() {
            if !rh.is_failed() {
                router = rh.handle_message(&reply, &w.signer, now, unix);
            }
        }
    }
    Run {
        router,
        conductor,
        rh: Some(rh),
        cs,
    }
}

fn token(w: &World, unix: u64, life: u64) -> String {
    w.policy
        .issue_token("r1", unix, life, None, &mut rng())
        .expect("issue")
        .0
        .as_str()
        .to_owned()
}

#[test]
fn success_both_sides_agree() {
    let mut w = world();
    let (t, ev) = w
        .policy
        .issue_token(
            "r1",
            T,
            600,
            Some(&w.signer.public_key_spki().expect("spki")),
            &mut rng(),
        )
        .expect("issue");
    assert_eq!(ev.event, AuditKind::TokenCreated);
    let psk = w.psk.clone();
    let mut r = run(&mut w, t.as_str(), &psk, T + 5);
    assert_eq!(r.router, Ok(()));
    assert_eq!(r.conductor, Ok(()));
    let rh = r.rh.as_mut().expect("router");
    assert!(rh.is_done());
    let out = rh.poll_outcome().expect("router outcome");
    assert_eq!(out.conductor_host_key, w.host);
    assert_eq!(out.ssh_port, 930);
    let c = r.cs.poll_outcome().expect("conductor outcome");
    assert_eq!(c.router_ssh_key, w.ssh);
    assert_eq!(c.router_key, w.signer.public_key_spki().expect("spki"));
    let kinds: Vec<_> = std::iter::from_fn(|| r.cs.poll_audit())
        .map(|e| e.event)
        .collect();
    assert_eq!(kinds, vec![AuditKind::TokenUsed, AuditKind::Onboarded]);
    assert_eq!(rh.poll_timeout(), None);
}

#[test]
fn reused_token_is_refused() {
    let mut w = world();
    let t = token(&w, T, 600);
    let psk = w.psk.clone();
    assert_eq!(run(&mut w, &t, &psk, T).conductor, Ok(()));
    let mut r = run(&mut w, &t, &psk, T + 1);
    assert!(matches!(r.conductor, Err(Error::TokenReused { .. })));
    assert!(matches!(
        r.router,
        Err(Error::Refused {
            code: RefusalCode::BadToken,
            ..
        })
    ));
    assert_eq!(r.router.as_ref().unwrap_err().kind(), ErrorKind::BadToken);
    assert_eq!(
        r.cs.poll_audit().expect("audit").event,
        AuditKind::TokenRejected
    );
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused() {
    let mut w = world();
    let t = token(&w, T, 600);
    let psk = w.psk.clone();
    // The router notices expiry itself.
    let r = run(&mut w, &t, &psk, T + 600);
    assert!(matches!(r.router, Err(Error::TokenExpired { .. })));
    // A conductor with a later clock than the router's refuses too.
    let now = Instant::now();
    let mut cs = ConductorSession::new([1; 32], now);
    let params = RouterParams {
        router_name: "r1".into(),
        psk: Psk::parse(&psk).expect("psk"),
        token: Token::parse(&t).expect("t"),
        ssh_key: w.ssh.clone(),
    };
    let mut rh =
        RouterHandshake::start(params, &w.signer, [1; 32], &mut rng(), now, T).expect("start");
    let hello = rh.poll_transmit().expect("hello");
    assert!(matches!(
        cs.handle_message(&w.policy, &mut w.used, &hello, &mut rng(), now, T + 601),
        Err(Error::TokenExpired { .. })
    ));
    assert!(matches!(
        cs.handle_message(&w.policy, &mut w.used, &hello, &mut rng(), now, T + 1),
        Err(Error::UnexpectedMessage { .. })
    ));
    let mut w2 = world();
    let t2 = token(&w2, T + 100, 600);
    let psk2 = w2.psk.clone();
    let r = run(&mut w2, &t2, &psk2, T);
    assert!(matches!(r.conductor, Err(Error::TokenNotYetValid { .. })));
}

#[test]
fn tampered_token_is_refused() {
    let mut w = world();
    let t = token(&w, T, 600);
    let psk = w.psk.clone();
    // Swap the claims for ones naming the same router with a longer life, keep the signature.
    let parts: Vec<&str> = t.split('.').collect();
    let other = token(&w, T, 6000);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        other.split('.').nth(1).expect("claims"),
        parts[2]
    );
    let r = run(&mut w, &forged, &psk, T);
    assert_eq!(r.conductor, Err(Error::TokenSignature));
    // A token signed by another conductor key.
    let mut w2 = world();
    let foreign = token(&w2, T, 600);
    w2.psk.clear();
    let r = run(&mut w, &foreign, &psk, T);
    assert_eq!(r.conductor, Err(Error::TokenSignature));
}

#[test]
fn wrong_psk_on_the_router_side_is_refused_by_both() {
    let mut w = world();
    let t = token(&w, T, 600);
    let wrong = "x".repeat(48);
    let mut r = run(&mut w, &t, &wrong, T);
    // The router refuses the conductor first: it cannot verify the conductor's proof.
    assert_eq!(r.router, Err(Error::PskMismatch { side: "conductor" }));
    assert_eq!(
        r.router.as_ref().unwrap_err().kind(),
        ErrorKind::PskMismatch
    );
    // It never sends its proof; it tells the conductor, which audits the refusal.
    assert!(r.cs.poll_transmit().is_none());
    assert!(!r.cs.is_done());
    assert!(matches!(
        r.conductor,
        Err(Error::RouterRefused {
            code: RefusalCode::PskMismatch,
            ..
        })
    ));
    let evs: Vec<_> = std::iter::from_fn(|| r.cs.poll_audit()).collect();
    assert_eq!(evs.last().expect("audit").event, AuditKind::Refused);
    assert!(
        evs.last()
            .expect("audit")
            .detail
            .starts_with("router refused")
    );
}

#[test]
fn conductor_without_the_psk_is_refused_by_the_router() {
    // A conductor configured with another PSK for r1 (e.g. an impostor with a stolen
    // token signing key but not the router's PSK).
    let mut w = world();
    let t = token(&w, T, 600);
    let router_psk = w.psk.clone();
    let mut routers = BTreeMap::new();
    routers.insert("r1".to_owned(), Psk::parse(&"q".repeat(48)).expect("psk"));
    let key = SigningKey::generate_from_rng(&mut rng());
    w.policy = ConductorPolicy::new("cond", key, routers, w.host.clone());
    let t2 = w
        .policy
        .issue_token("r1", T, 600, None, &mut rng())
        .expect("t")
        .0
        .as_str()
        .to_owned();
    drop(t);
    let r = run(&mut w, &t2, &router_psk, T);
    assert_eq!(r.router, Err(Error::PskMismatch { side: "conductor" }));
    let mut rh = r.rh.expect("rh");
    let ev = rh.poll_audit().expect("router audit");
    assert_eq!(ev.event, AuditKind::Refused);
    assert!(!ev.detail.contains(&router_psk));
}

#[test]
fn router_psk_proof_checked_by_conductor() {
    // Drive the conductor with a router that holds the right PSK for the challenge
    // check but a corrupted proof: flip a byte in the proof message.
    let mut w = world();
    let t = token(&w, T, 600);
    let now = Instant::now();
    let mut cs = ConductorSession::new([3; 32], now);
    let params = RouterParams {
        router_name: "r1".into(),
        psk: Psk::parse(&w.psk).expect("psk"),
        token: Token::parse(&t).expect("t"),
        ssh_key: w.ssh.clone(),
    };
    let mut rh =
        RouterHandshake::start(params, &w.signer, [3; 32], &mut rng(), now, T).expect("start");
    cs.handle_message(
        &w.policy,
        &mut w.used,
        &rh.poll_transmit().expect("hello"),
        &mut rng(),
        now,
        T,
    )
    .expect("hello ok");
    rh.handle_message(&cs.poll_transmit().expect("challenge"), &w.signer, now, T)
        .expect("challenge ok");
    let proof = rh.poll_transmit().expect("proof");
    let mut msg: serde_json::Value = serde_json::from_slice(&proof).expect("json");
    let p = msg["proof"]["router_proof"].as_str().expect("s").to_owned();
    let flipped = if p.starts_with('A') {
        p.replacen('A', "B", 1)
    } else {
        format!("A{}", &p[1..])
    };
    msg["proof"]["router_proof"] = flipped.into();
    let e = cs.handle_message(
        &w.policy,
        &mut w.used,
        msg.to_string().as_bytes(),
        &mut rng(),
        now,
        T,
    );
    assert_eq!(e, Err(Error::PskMismatch { side: "router" }));
    let refusal = cs.poll_transmit().expect("refusal");
    assert_eq!(
        rh.handle_message(&refusal, &w.signer, now, T)
            .unwrap_err()
            .kind(),
        ErrorKind::PskMismatch
    );
}

#[test]
fn proof_replayed_into_another_session_fails() {
    let mut w = world();
    let now = Instant::now();
    let t = token(&w, T, 600);
    let params = RouterParams {
        router_name: "r1".into(),
        psk: Psk::parse(&w.psk).expect("psk"),
        token: Token::parse(&t).expect("t"),
        ssh_key: w.ssh.clone(),
    };
    let mut cs = ConductorSession::new([4; 32], now);
    let mut rh =
        RouterHandshake::start(params, &w.signer, [4; 32], &mut rng(), now, T).expect("start");
    cs.handle_message(
        &w.policy,
        &mut w.used,
        &rh.poll_transmit().expect("hello"),
        &mut rng(),
        now,
        T,
    )
    .expect("hello");
    rh.handle_message(&cs.poll_transmit().expect("challenge"), &w.signer, now, T)
        .expect("challenge");
    let proof = rh.poll_transmit().expect("proof");
    // Attacker: a fresh token for r1 (say, stolen) on its own TLS session, replaying the proof.
    let t2 = token(&w, T, 600);
    let mut cs2 = ConductorSession::new([5; 32], now);
    let hello2 = ssr_onboard::msg::Message::Hello(ssr_onboard::msg::Hello {
        token: t2,
        router_nonce: [0; 32],
    })
    .encode();
    cs2.handle_message(&w.policy, &mut w.used, &hello2, &mut rng(), now, T)
        .expect("hello2");
    let e = cs2.handle_message(&w.policy, &mut w.used, &proof, &mut rng(), now, T);
    assert_eq!(e, Err(Error::PskMismatch { side: "router" }));
    // The genuine session completes; replaying its proof again is refused.
    cs.handle_message(&w.policy, &mut w.used, &proof, &mut rng(), now, T)
        .expect("genuine proof");
    assert!(matches!(
        cs.handle_message(&w.policy, &mut w.used, &proof, &mut rng(), now, T),
        Err(Error::UnexpectedMessage { .. })
    ));
}

#[test]
fn token_bound_to_another_key_is_refused() {
    let mut w = world();
    let other = SoftwareSigner::generate(&mut rng());
    let t = w
        .policy
        .issue_token(
            "r1",
            T,
            600,
            Some(&other.public_key_spki().expect("spki")),
            &mut rng(),
        )
        .expect("t")
        .0;
    let psk = w.psk.clone();
    let r = run(&mut w, t.as_str(), &psk, T);
    assert_eq!(r.router, Err(Error::TokenKeyMismatch));
}

#[test]
fn token_for_another_router_or_unknown_router() {
    let mut w = world();
    assert!(matches!(
        w.policy.issue_token("nope", T, 600, None, &mut rng()),
        Err(Error::UnknownRouter { .. })
    ));
    let t = token(&w, T, 600);
    let now = Instant::now();
    let params = RouterParams {
        router_name: "r2".into(),
        psk: Psk::parse(&w.psk).expect("psk"),
        token: Token::parse(&t).expect("t"),
        ssh_key: w.ssh.clone(),
    };
    let e = RouterHandshake::start(params, &w.signer, [0; 32], &mut rng(), now, T).unwrap_err();
    assert!(matches!(e, Error::TokenClaimMismatch { claim: "sub", .. }));
    let _ = &mut w;
}

#[test]
fn timeouts_on_a_virtual_clock() {
    let mut w = world();
    let t = token(&w, T, 600);
    let now = Instant::now();
    let mut cs = ConductorSession::new([6; 32], now);
    let params = RouterParams {
        router_name: "r1".into(),
        psk: Psk::parse(&w.psk).expect("psk"),
        token: Token::parse(&t).expect("t"),
        ssh_key: w.ssh.clone(),
    };
    let mut rh =
        RouterHandshake::start(params, &w.signer, [6; 32], &mut rng(), now, T).expect("start");
    let deadline = rh.poll_timeout().expect("deadline");
    assert!(deadline > now);
    cs.handle_message(
        &w.policy,
        &mut w.used,
        &rh.poll_transmit().expect("hello"),
        &mut rng(),
        now,
        T,
    )
    .expect("hello");
    let challenge = cs.poll_transmit().expect("challenge");
    rh.handle_timeout(deadline - Duration::from_millis(1));
    assert!(!rh.is_failed());
    rh.handle_timeout(deadline);
    rh.handle_timeout(deadline);
    assert!(rh.is_failed());
    assert_eq!(rh.poll_timeout(), None);
    assert_eq!(
        rh.handle_message(&challenge, &w.signer, deadline, T),
        Err(Error::UnexpectedMessage {
            message: "challenge",
            state: "failed"
        })
    );
    let later = cs.poll_timeout().expect("conductor deadline");
    cs.handle_timeout(later);
    assert!(cs.poll_timeout().is_none());
    let refusal = cs.poll_transmit().expect("refusal on timeout");
    assert!(String::from_utf8_lossy(&refusal).contains("timed out"));
}

#[test]
fn legacy_attempt_refused_and_audited() {
    let mut w = world();
    let now = Instant::now();
    let mut cs = ConductorSession::new([7; 32], now);
    let legacy = ssr_onboard::msg::Message::Legacy(ssr_onboard::msg::Legacy {
        asset_id: "asset-42".into(),
    })
    .encode();
    assert_eq!(
        cs.handle_message(&w.policy, &mut w.used, &legacy, &mut rng(), now, T),
        Err(Error::LegacyRefused {
            asset_id: "asset-42".into()
        })
    );
    let ev = cs.poll_audit().expect("audit");
    assert_eq!(ev.event, AuditKind::LegacyRefused);
    assert!(ev.detail.contains("asset-42"));
    assert!(
        String::from_utf8_lossy(&cs.poll_transmit().expect("refusal")).contains("legacy-refused")
    );
    // With SCO disabled it would be accepted.
    w.policy.set_sco_enabled(false);
    let mut cs = ConductorSession::new([7; 32], now);
    assert_eq!(
        cs.handle_message(&w.policy, &mut w.used, &legacy, &mut rng(), now, T),
        Ok(())
    );
}
