//! Two SVR peers over UDP on loopback: certificates (X.509 from a throwaway authority,
//! validated by ssr-pki), signed key exchange, metadata keys, then data packets (some
//! deliberately replayed or tampered), a manual metadata-key regenerate and a restart of
//! one router (all its state lost).

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use p256::ecdsa::SigningKey;
use p256::pkcs8::DecodePrivateKey;
use ssr_pki::Certificate;
use ssr_svr_crypto::Error;
use ssr_svr_crypto::kex::KexAlgorithm;
use ssr_svr_crypto::peer::{
    FailMode, KeyManager, LocalIdentity, Peer, RekeyInterval, SecurityConfig, SecurityState,
};
use ssr_svr_crypto::pki::PkiAuthenticator;

const CONTROL: u8 = 0;
const DATA: u8 = 1;

struct Node<'a> {
    sock: UdpSocket,
    to: std::net::SocketAddr,
    peer: Peer<&'a PkiAuthenticator>,
    km: KeyManager,
}

impl Node<'_> {
    fn flush(&mut self) -> std::io::Result<()> {
        while let Some(m) = self.peer.poll_transmit() {
            let mut d = vec![CONTROL];
            d.extend_from_slice(&m);
            self.sock.send_to(&d, self.to)?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Counts {
    sent: u64,
    delivered: u64,
    replay: u64,
    tampered: u64,
}

/// Fires due timers and handles every datagram waiting at each node, waiting up to
/// `wait` for the first one (and 1 ms for each further one); `wait` zero never blocks.
fn pump(
    nodes: &mut [Node<'_>; 2],
    counts: &mut Counts,
    rng: &mut impl rand::CryptoRng,
    wait: Duration,
) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    let mut plain = [0u8; 4096];
    for n in nodes.iter_mut() {
        // `wait` zero: take what loopback has already delivered, without blocking.
        n.sock.set_nonblocking(wait.is_zero())?;
        if !wait.is_zero() {
            n.sock.set_read_timeout(Some(wait))?;
        }
        loop {
            let now = Instant::now();
            if n.peer.poll_timeout().is_some_and(|t| t <= now) {
                n.peer.handle_timeout(now, rng);
            }
            n.flush()?;
            let len = match n.sock.recv_from(&mut buf) {
                Ok((len, _)) => len,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e),
            };
            if !wait.is_zero() {
                n.sock.set_read_timeout(Some(Duration::from_millis(1)))?;
            }
            match buf[..len].split_first() {
                Some((&CONTROL, m)) => {
                    let _ = n.peer.handle_control(m, Instant::now(), rng);
                }
                Some((&DATA, p)) => match n.peer.open_data(p, &mut plain, Instant::now()) {
                    Ok(_) => counts.delivered += 1,
                    Err(Error::Replay { .. }) => counts.replay += 1,
                    Err(_) => counts.tampered += 1,
                },
                _ => {}
            }
            n.flush()?;
        }
    }
    Ok(())
}

/// A router's signing key and its certificate (DER).
type Identity = (Arc<SigningKey>, Vec<u8>);

/// A throwaway authority (a self-signed P-256 CA) and, for each of `names`, a fresh
/// P-256 key with a certificate whose commonName is that name; the authenticator
/// trusts the authority.
fn authority(
    names: &[&str],
) -> Result<(PkiAuthenticator, Vec<Identity>), Box<dyn std::error::Error>> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
    let (ca, issuer) = crate::throwaway_ca("demo SVR authority")?;
    let root = Certificate::from_der(ca.der())?;
    let mut routers = Vec::new();
    for name in names {
        let mut leaf = CertificateParams::new(Vec::<String>::new())?;
        leaf.distinguished_name.push(DnType::CommonName, *name);
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        leaf.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = leaf.signed_by(&key, &issuer)?;
        routers.push((
            Arc::new(SigningKey::from_pkcs8_der(&key.serialize_der())?),
            cert.der().to_vec(),
        ));
    }
    Ok((PkiAuthenticator::new(vec![root], Vec::new()), routers))
}

/// Runs two peers with key exchange `alg`, sends `packets` data packets from
/// router-east to router-west (every 50th also replayed, every 50th preceded by a
/// forged copy), regenerates the metadata key half-way, restarts router-east (all its
/// state lost) at three quarters and replays its last packet from before the restart,
/// and returns a JSON summary.
pub fn run(
    alg: KexAlgorithm,
    packets: u64,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let mut rng = rand::rng();
    let cfg = SecurityConfig::new(
        alg,
        RekeyInterval::default(),
        RekeyInterval::default(),
        5,
        3600,
        FailMode::FailSoft,
    )?;
    let names = ["router-east", "router-west"];
    let (auth, routers) = authority(&names)?;
    let socks = [
        UdpSocket::bind("127.0.0.1:0")?,
        UdpSocket::bind("127.0.0.1:0")?,
    ];
    let addrs = [socks[0].local_addr()?, socks[1].local_addr()?];
    let now = Instant::now();
    let unix = crate::unix_now();
    let [s0, s1] = socks;
    let mk = |i: usize, sock: UdpSocket, rng: &mut rand::rngs::ThreadRng| {
        let me = LocalIdentity {
            cert_der: routers[i].1.clone(),
            signing_key: routers[i].0.clone(),
            common_name: names[i].into(),
        };
        let km = KeyManager::new(rng, now);
        let mut peer = Peer::new(
            cfg.clone(),
            me,
            names[1 - i],
            &auth,
            Duration::ZERO,
            now,
            unix,
        );
        peer.handle_local_metadata_key(&km, now);
        Node {
            sock,
            to: addrs[1 - i],
            peer,
            km,
        }
    };
    let n0 = mk(0, s0, &mut rng);
    let n1 = mk(1, s1, &mut rng);
    let mut nodes = [n0, n1];
    let mut counts = Counts::default();
    let t0 = Instant::now();
    while !nodes
        .iter()
        .all(|n| n.peer.state() == SecurityState::MkeyExchComp)
    {
        if t0.elapsed() > Duration::from_secs(30) {
            return Err("peers did not converge within 30 s".into());
        }
        pump(&mut nodes, &mut counts, &mut rng, Duration::from_millis(20))?;
    }
    let converge_ms = t0.elapsed().as_millis();
    let mut rekeys = 0;
    let mut restarts = 0;
    let mut restart_ms = 0;
    let mut last_dgram = Vec::new();
    let mut buf = [0u8; 2048];
    for i in 0..packets {
        if i == packets * 3 / 4 && i > 0 {
            // router-east's process restarts: all its state is lost (a new metadata key,
            // a new peer state machine, sequence numbers from 0 again); it keeps its
            // socket, certificate and key. It must not reuse a (key, sequence number):
            // its new sender epoch gives it a new data key.
            let t = Instant::now();
            let sock = nodes[0].sock.try_clone()?;
            nodes[0] = mk(0, sock, &mut rng);
            restarts += 1;
            while nodes[0].peer.state() != SecurityState::MkeyExchComp
                || !nodes[0].peer.in_service()
            {
                if t.elapsed() > Duration::from_secs(30) {
                    return Err("router-east did not come back within 30 s".into());
                }
                nodes[0].flush()?;
                pump(&mut nodes, &mut counts, &mut rng, Duration::from_millis(20))?;
            }
            restart_ms = t.elapsed().as_millis();
            // A packet of the old incarnation, replayed now: refused.
            nodes[0].sock.send_to(&last_dgram, addrs[1])?;
        }
        if i == packets / 2 {
            // `security metadata-key regenerate` on router-west, pushed to its peer.
            let now = Instant::now();
            let n = &mut nodes[1];
            let _ha = n.km.regenerate(&mut rng, now);
            n.peer.handle_local_metadata_key(&n.km, now);
            rekeys += 1;
        }
        let len = nodes[0]
            .peer
            .seal_data(format!("payload {i}").as_bytes(), &mut buf[1..])?;
        buf[0] = DATA;
        let dgram = &mut buf[..1 + len];
        if i % 50 == 9 {
            // A forged copy (one bit flipped in the tag) arrives before the genuine packet.
            let mut forged = dgram.to_vec();
            let l = forged.len();
            forged[l - 3] ^= 0x40;
            nodes[0].sock.send_to(&forged, addrs[1])?;
        }
        nodes[0].sock.send_to(dgram, addrs[1])?;
        counts.sent += 1;
        last_dgram.clear();
        last_dgram.extend_from_slice(dgram);
        if i % 50 == 7 {
            nodes[0].sock.send_to(dgram, addrs[1])?; // replay
        }
        if i % 16 == 0 {
            pump(&mut nodes, &mut counts, &mut rng, Duration::ZERO)?;
        }
    }
    for _ in 0..20 {
        pump(&mut nodes, &mut counts, &mut rng, Duration::from_millis(10))?;
    }
    let st = nodes[1].peer.status();
    let refused = auth.counters();
    Ok(serde_json::json!({
            "algorithm": alg.name(),
            "converge_ms": converge_ms,
            "state": st.state.as_str(),
            "packets_sent": counts.sent,
            "delivered": counts.delivered,
            "rejected_replay": counts.replay,
            "rejected_tampered": counts.tampered,
            "metadata_rekeys": rekeys,
            "sender_restarts": restarts,
            "restart_to_service_ms": restart_ms,
            "peer_key_exchanges": st.peer_rekey_count,
            "router_west_key_index": st.key_index,
            "router_east_key_index": st.peer_key_index,
            "peer_certificates_refused": refused.peer_certificate_invalid
                + refused.peer_certificate_expired
                + refused.peer_certificate_revoked,
    }))
}
