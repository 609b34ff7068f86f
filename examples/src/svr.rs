//! Two SVR peers over UDP on loopback: certificates, signed key exchange, metadata keys,
//! then data packets (some deliberately replayed or tampered) and a manual metadata-key
//! regenerate.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use p256::ecdsa::SigningKey;
use ssr_svr_crypto::Error;
use ssr_svr_crypto::kex::{KexAlgorithm, StaticAuthenticator};
use ssr_svr_crypto::peer::{
    FailMode, KeyManager, LocalIdentity, Peer, RekeyInterval, SecurityConfig, SecurityState,
};

const CONTROL: u8 = 0;
const DATA: u8 = 1;

struct Node {
    sock: UdpSocket,
    to: std::net::SocketAddr,
    peer: Peer<StaticAuthenticator>,
    km: KeyManager,
}

impl Node {
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

fn pump(
    nodes: &mut [Node; 2],
    counts: &mut Counts,
    rng: &mut impl rand::CryptoRng,
    wait: Duration,
) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    let mut plain = [0u8; 4096];
    for n in nodes.iter_mut() {
        n.sock.set_read_timeout(Some(wait))?;
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
            n.sock.set_read_timeout(Some(Duration::from_millis(1)))?;
            match buf[..len].split_first() {
                Some((&CONTROL, m)) => {
                    let _ = n.peer.handle_control(m, Instant::now(), rng);
                }
                Some((&DATA, p)) => match n.peer.open_data(p, &mut plain) {
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

/// Runs two peers with key exchange `alg`, sends `packets` data packets from
/// router-east to router-west (every 50th also replayed, every 50th preceded by a
/// forged copy), regenerates the metadata key half-way, and returns a JSON summary.
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
    let keys: Vec<SigningKey> = (0..2)
        .map(|_| <SigningKey as p256::elliptic_curve::Generate>::generate_from_rng(&mut rng))
        .collect();
    let certs: Vec<Vec<u8>> = names
        .iter()
        .map(|n| format!("demo certificate {n}").into_bytes())
        .collect();
    let mut auth = StaticAuthenticator::new();
    for i in 0..2 {
        auth.trust(&certs[i], names[i], *keys[i].verifying_key());
    }
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
            cert_der: certs[i].clone(),
            signing_key: keys[i].clone(),
            common_name: names[i].into(),
        };
        let km = KeyManager::new(rng, now);
        let mut peer = Peer::new(
            cfg.clone(),
            me,
            names[1 - i],
            auth.clone(),
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
    let mut buf = [0u8; 2048];
    for i in 0..packets {
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
        if i % 50 == 7 {
            nodes[0].sock.send_to(dgram, addrs[1])?; // replay
        }
        if i % 16 == 0 {
            pump(&mut nodes, &mut counts, &mut rng, Duration::from_millis(1))?;
        }
    }
    for _ in 0..20 {
        pump(&mut nodes, &mut counts, &mut rng, Duration::from_millis(10))?;
    }
    let st = nodes[1].peer.status();
    Ok(serde_json::json!({
            "algorithm": alg.name(),
            "converge_ms": converge_ms,
            "state": st.state.as_str(),
            "packets_sent": counts.sent,
            "delivered": counts.delivered,
            "rejected_replay": counts.replay,
            "rejected_tampered": counts.tampered,
            "metadata_rekeys": rekeys,
            "peer_key_exchanges": st.peer_rekey_count,
            "router_west_key_index": st.key_index,
            "router_east_key_index": st.peer_key_index,
    }))
}
