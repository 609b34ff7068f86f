//! Writes the fuzz seed corpora, `fuzz/corpus/<target>/`: a few valid inputs per fuzz
//! target, made by the project's own encoders, so a short fuzz run starts past the
//! parsers' gates (magic numbers, checksums, fixed headers, well-formed DER and JSON).
//!
//! ```text
//! cargo xtask fuzz-seeds            # = cargo run -p examples --example fuzz-seeds
//! ```
//!
//! Each seed is checked with the parser its target fuzzes before it is written. The
//! files are committed; run this again when a format changes. An optional argument
//! names another output directory.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use getrandom::SysRng;
use p256::elliptic_curve::Generate;
use rand_core::{Rng, UnwrapErr};

type Result<T = ()> = std::result::Result<T, Box<dyn Error>>;

fn main() -> Result {
    let out = std::env::args_os().nth(1).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus"),
        PathBuf::from,
    );
    let mut corpus = Corpus {
        dir: out,
        written: 0,
    };
    tpm(&mut corpus)?;
    fscrypt(&mut corpus)?;
    pki(&mut corpus)?;
    onboard(&mut corpus)?;
    onboard_csr(&mut corpus)?;
    svr(&mut corpus)?;
    download(&mut corpus)?;
    println!(
        "fuzz-seeds: {} files under {}",
        corpus.written,
        corpus.dir.display()
    );
    Ok(())
}

struct Corpus {
    dir: PathBuf,
    written: usize,
}

impl Corpus {
    /// Writes `fuzz/corpus/<target>/<name>` after `check` accepted it.
    fn seed(
        &mut self,
        target: &str,
        name: &str,
        bytes: impl AsRef<[u8]>,
        check: impl FnOnce(&[u8]) -> bool,
    ) -> Result {
        let bytes = bytes.as_ref();
        if !check(bytes) {
            return Err(format!("seed {target}/{name} is refused by its own parser").into());
        }
        let dir = self.dir.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(name), bytes)?;
        self.written += 1;
        Ok(())
    }
}

fn rng() -> UnwrapErr<SysRng> {
    UnwrapErr(SysRng)
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("")
}

fn tpm(c: &mut Corpus) -> Result {
    use ssr_tpm::keystore::{KeyEntry, WrappedKey};
    use ssr_tpm::{
        DEFAULT_FEK_KEY_HANDLE, FileMac, PcrSelection, RSA2048_CIPHERTEXT_LEN, SealedFek,
    };
    let mut r = rng();
    let random32 = |r: &mut UnwrapErr<SysRng>| {
        let mut b = [0u8; 32];
        r.fill_bytes(&mut b);
        b
    };
    for (name, mask, mac) in [("v1-pcr-none", 0, false), ("v2-mac-pcr-0-7", 0xff, true)] {
        let fingerprint = random32(&mut r);
        let mut ciphertext = vec![0u8; RSA2048_CIPHERTEXT_LEN];
        r.fill_bytes(&mut ciphertext);
        let pcrs = PcrSelection::from_mask(mask)?;
        let sealed = if mac {
            let mac = FileMac {
                key_handle: 0x8100_0003,
                key_fingerprint: random32(&mut r),
                tag: random32(&mut r),
            };
            SealedFek::new(DEFAULT_FEK_KEY_HANDLE, fingerprint, pcrs, ciphertext, mac)?
        } else {
            SealedFek::new_v1(DEFAULT_FEK_KEY_HANDLE, fingerprint, pcrs, ciphertext)?
        };
        c.seed("ssr_tpm_sealed_fek", name, sealed.to_bytes(), |b| {
            SealedFek::parse(b).is_ok()
        })?;
    }
    let spki = {
        use ssr_onboard::RouterSigner;
        ssr_onboard::SoftwareSigner::generate(&mut r).public_key_spki()?
    };
    for (name, key_name, public_len, private_len) in [
        ("small", "router", 24, 32),
        ("typical", "onboarding-key", 90, 126),
    ] {
        let mut blob = |n: usize| {
            let mut v = vec![0u8; n];
            r.fill_bytes(&mut v);
            v
        };
        let mut master_name = [0u8; 32];
        master_name.copy_from_slice(&blob(32));
        let entry = KeyEntry::new(
            key_name,
            0x8100_0002,
            master_name,
            WrappedKey {
                tpm_public: blob(public_len),
                tpm_private: blob(private_len),
                spki_der: spki.clone(),
            },
        )?;
        c.seed("ssr_tpm_key_entry", name, entry.to_bytes(), |b| {
            KeyEntry::parse(b).is_ok()
        })?;
    }
    let pki = ssr_testkit::pki::TestPki::new(ssr_testkit::pki::KeyKind::EcdsaP256, "seed");
    let der = ssr_pki::Certificate::from_pem(&pki.leaf_pem)?
        .der()
        .to_vec();
    let device = |b: &[u8]| ssr_tpm::identity::parse_device_certificate(b, "seed").is_ok();
    c.seed("ssr_tpm_device_cert", "der", &der, device)?;
    let mut padded = der.clone();
    padded.resize(der.len() + 64, 0xff);
    c.seed("ssr_tpm_device_cert", "der-ff-padding", &padded, device)?;
    let mut padded = der;
    padded.resize(padded.len() + 100, 0);
    c.seed("ssr_tpm_device_cert", "der-zero-padding", &padded, device)
}

fn fscrypt(c: &mut Corpus) -> Result {
    use ssr_fscrypt::{ContextV2, MasterKey, NoKeyName, PolicyV2};
    let mut r = rng();
    let mut key = [0u8; 64];
    r.fill_bytes(&mut key);
    let policy = PolicyV2::new(MasterKey::from_bytes(&key)?.identifier());
    c.seed("ssr_fscrypt_policy", "default", policy.to_bytes(), |b| {
        PolicyV2::parse(b).is_ok()
    })?;
    let mut nonce = [0u8; 16];
    r.fill_bytes(&mut nonce);
    let ctx = ContextV2::new(policy, nonce);
    c.seed("ssr_fscrypt_context", "default", ctx.to_bytes(), |b| {
        ContextV2::parse(b).is_ok()
    })?;
    for (name, len) in [("short", 16), ("long", 240)] {
        let mut ciphertext = vec![0u8; len];
        r.fill_bytes(&mut ciphertext);
        let encoded = NoKeyName::from_ciphertext(&ciphertext, r.next_u32(), r.next_u32()).encode();
        c.seed("ssr_fscrypt_nokey_name", name, encoded, |b| {
            NoKeyName::decode(text(b)).is_ok()
        })?;
    }
    Ok(())
}

fn pki(c: &mut Corpus) -> Result {
    use ssr_pki::{Certificate, Crl};
    use ssr_testkit::pki::{KeyKind, TestPki};
    for (kind, tag) in [(KeyKind::EcdsaP256, "p256"), (KeyKind::Rsa2048, "rsa")] {
        let pki = TestPki::new(kind, tag);
        for (role, pem) in [
            ("root", &pki.root_pem),
            ("intermediate", &pki.intermediate_pem),
            ("leaf", &pki.leaf_pem),
        ] {
            let der = Certificate::from_pem(pem)?.der().to_vec();
            c.seed("ssr_pki_cert", &format!("{tag}-{role}"), der, |b| {
                Certificate::from_der(b).is_ok()
            })?;
        }
        for (name, pem) in [
            ("root-crl-empty", pki.root_crl(&[])),
            (
                "intermediate-crl-two",
                pki.intermediate_crl(&[3, 0x1234_5678]),
            ),
        ] {
            let der = Crl::from_pem(&pem)?.der().to_vec();
            c.seed("ssr_pki_crl", &format!("{tag}-{name}"), der, |b| {
                Crl::from_der(b).is_ok()
            })?;
        }
        let bundle = format!(
            "{}{}{}",
            pki.leaf_pem,
            pki.intermediate_pem,
            pki.intermediate_crl(&[7])
        );
        c.seed("ssr_pki_pem", &format!("{tag}-bundle"), &bundle, |b| {
            ssr_pki::parse_pem_bundle(text(b)).is_ok()
        })?;
        let chain = format!("{}{}", pki.leaf_pem, pki.intermediate_pem);
        c.seed("ssr_pki_import", &format!("{tag}-chain"), &chain, |b| {
            !text(b).is_empty()
        })?;
        let trust = format!("{}{}", pki.root_pem, pki.intermediate_pem);
        c.seed("ssr_pki_import", &format!("{tag}-trust"), &trust, |b| {
            ssr_pki::trust::TrustBundle::install(
                text(b),
                ssr_pki::trust::ValidationMode::Warn,
                1_800_000_000,
            )
            .is_ok()
        })?;
    }
    let list = r#"{"version":1,"generated_at":1767225600,"entries":[{"issuer":"CN=seed Intermediate CA","serial":"07","revoked_at":1767225000,"source":"http://crl.example/int.crl"},{"issuer":"CN=seed Root CA","serial":"1A2B","revoked_at":1767220000,"source":"http://crl.example/root.crl"}]}"#;
    let list = ssr_pki::crl_manager::MasterList::from_json(list)?.to_json();
    c.seed("ssr_pki_master_list", "two-entries", list, |b| {
        ssr_pki::crl_manager::MasterList::from_json(text(b)).is_ok()
    })
}

fn onboard(c: &mut Corpus) -> Result {
    use ssr_onboard::config::{ConductorConfig, OnboardingConfig};
    use ssr_onboard::msg::{
        Challenge, Hello, Legacy, Message, Proof, Refusal, RefusalCode, Welcome,
    };
    use ssr_onboard::ssh::{Ed25519SshKey, SshPublicKey};
    use ssr_onboard::{Psk, RouterSigner, SoftwareSigner, Token};
    let mut r = rng();
    let conductor_key = p256::ecdsa::SigningKey::generate_from_rng(&mut r);
    let router = SoftwareSigner::generate(&mut r);
    let spki = router.public_key_spki()?;
    let token = |bound: Option<&[u8]>, r: &mut UnwrapErr<SysRng>| {
        ssr_onboard::token::issue(
            &conductor_key,
            "conductor-1",
            "edge-router-1",
            1_767_225_600,
            600,
            bound,
            r,
        )
    };
    let bound = token(Some(&spki), &mut r)?;
    let unbound = token(None, &mut r)?;
    let parses = |b: &[u8]| Token::parse(text(b)).is_ok();
    c.seed("ssr_onboard_token", "key-bound", bound.as_str(), parses)?;
    c.seed("ssr_onboard_token", "unbound", unbound.as_str(), parses)?;

    let ssh = Ed25519SshKey::generate(&mut r)?.public_key();
    let nonce = |r: &mut UnwrapErr<SysRng>| {
        let mut n = [0u8; 32];
        r.fill_bytes(&mut n);
        n
    };
    let mut signature = [0u8; 64];
    r.fill_bytes(&mut signature);
    let messages = [
        (
            "hello",
            Message::Hello(Hello {
                token: bound.as_str().to_owned(),
                router_nonce: nonce(&mut r),
            }),
        ),
        (
            "challenge",
            Message::Challenge(Challenge {
                conductor_nonce: nonce(&mut r),
                conductor_proof: nonce(&mut r),
            }),
        ),
        (
            "proof",
            Message::Proof(Proof {
                router_key: spki.clone(),
                router_ssh_key: ssh.to_line(),
                router_signature: signature,
                router_proof: nonce(&mut r),
            }),
        ),
        (
            "welcome",
            Message::Welcome(Welcome {
                conductor_host_key: ssh.to_line(),
                ssh_port: 930,
                conductor_confirm: nonce(&mut r),
            }),
        ),
        (
            "refusal",
            Message::Refusal(Refusal {
                code: RefusalCode::PskMismatch,
                detail: "the router could not prove the pre-shared key".into(),
            }),
        ),
        (
            "legacy",
            Message::Legacy(Legacy {
                asset_id: "asset-0042".into(),
            }),
        ),
    ];
    for (name, m) in messages {
        c.seed("ssr_onboard_message", name, m.encode(), |b| {
            Message::parse(b).is_ok()
        })?;
    }

    let psk = Psk::generate(&mut r);
    let router_cfg = serde_json::json!({
        "version": 1,
        "router-name": "edge-router-1",
        "conductor-address": "192.0.2.10:443",
        "ca-certificate": "/etc/128technology/onboarding/ca.pem",
        "conductor-certificate": "/etc/128technology/onboarding/conductor.pem",
        "pre-shared-key": psk.secret_str(),
        "ssh-dir": "/home/t128/.ssh",
        "audit-log": "/var/log/128technology/onboarding-audit.jsonl",
    })
    .to_string();
    c.seed("ssr_onboard_config", "router", router_cfg, |b| {
        OnboardingConfig::parse(b).is_ok()
    })?;
    let conductor_cfg = serde_json::json!({
        "version": 1,
        "name": "conductor-1",
        "listen": "0.0.0.0:443",
        "certificate": "/etc/conductor/conductor.pem",
        "private-key": "/etc/conductor/conductor-key.pem",
        "token-key": "/etc/conductor/token-key.pem",
        "routers": { "edge-router-1": psk.secret_str() },
        "used-tokens": "/var/lib/conductor/used-tokens.jsonl",
        "audit-log": "/var/log/conductor/audit.jsonl",
        "ssh-host-key": "/etc/ssh/ssh_host_ed25519_key.pub",
        "authorized-keys": "/home/t128/.ssh/authorized_keys",
    })
    .to_string();
    c.seed("ssr_onboard_config", "conductor", conductor_cfg, |b| {
        ConductorConfig::parse(b).is_ok()
    })?;
    c.seed(
        "ssr_onboard_config",
        "ssh-key",
        ssh.authorized_keys_line("router"),
        |b| SshPublicKey::parse(text(b)).is_ok(),
    )
}

/// The target feeds the same bytes to the CSR check (as the request and as the proved
/// key) and to the onboarding-record parser: a CSR, its key and a record line.
fn onboard_csr(c: &mut Corpus) -> Result {
    use ssr_onboard::record::{OnboardingRecord, check_csr};
    use ssr_pki::keys::RouterKey;
    let key = ssr_pki::keys::PrivateKey::generate(&mut rng());
    let uuid = ssr_pki::csr::RouterUuid::parse("0b8f5c3e-7d2a-4e61-9c4b-2f1a6d8e9b70")?;
    let csr = ssr_pki::csr::Csr::build(&key, &uuid)?;
    let spki = key.public_key_der()?;
    let record = OnboardingRecord::new("r1", &spki, "j", 0);
    c.seed("ssr_onboard_csr", "csr", csr.der(), |b| {
        check_csr("r1", Some(&record), b).is_ok()
    })?;
    c.seed("ssr_onboard_csr", "spki", &spki, |b| {
        OnboardingRecord::new("r1", b, "j", 0).key_der().is_ok()
    })?;
    c.seed(
        "ssr_onboard_csr",
        "record",
        record.to_json_line().trim(),
        |b| OnboardingRecord::parse(text(b)).is_ok(),
    )
}

fn svr(c: &mut Corpus) -> Result {
    use ssr_svr_crypto::kex::{Initiator, KexAlgorithm};
    use ssr_svr_crypto::packet::Suite;
    use ssr_svr_crypto::packet::{CbcHmacSealer, GcmSealer};
    use ssr_svr_crypto::peer::{Control, NONCE_LEN};
    use ssr_svr_crypto::secret::PacketKeyMaterial;
    use ssr_svr_crypto::tlv::{
        Metadata, TLV_METADATA_KEY_INDEX, TLV_SEALED_PAYLOAD_KEY, TLV_SESSION_ID, Tlv,
    };
    let mut r = rng();
    let key = p256::ecdsa::SigningKey::generate_from_rng(&mut r);
    let cert = ssr_pki::Certificate::from_pem(
        &ssr_testkit::pki::TestPki::new(ssr_testkit::pki::KeyKind::EcdsaP256, "svr").leaf_pem,
    )?
    .der()
    .to_vec();
    let mut controls = vec![
        ("cert".to_owned(), Control::Cert(cert)),
        ("cert-ack".to_owned(), Control::CertAck),
        (
            "metadata-key".to_owned(),
            Control::MetadataKey {
                index: 2,
                sealed: vec![0x5a; 96],
            },
        ),
        ("metadata-key-ack".to_owned(), Control::MetadataKeyAck(2)),
    ];
    let nonce = [0x3cu8; NONCE_LEN];
    controls.push((
        "kex-request".to_owned(),
        Control::KexRequest {
            nonce,
            restart: true,
        },
    ));
    for (alg, suite) in [
        (KexAlgorithm::EcdhP256, Suite::CbcHmacSha384),
        (KexAlgorithm::MlKem768EcdhP256, Suite::Aes256Gcm),
    ] {
        let (_, msg) = Initiator::start(alg, &key, "router-west", "router-east", &nonce, &mut r)
            .expect("a software key signs");
        controls.push((
            format!("hello-{}", alg.name()),
            Control::Hello { nonce, suite, msg },
        ));
    }
    for (name, control) in controls {
        c.seed("ssr_svr_crypto_control", &name, control.encode(), |b| {
            Control::decode(b).is_ok()
        })?;
    }

    let session = [0x11u8; 16];
    let index = 7u32.to_be_bytes();
    let big = vec![0xa5u8; 60_000];
    for (name, payload) in [("small", &[0x42u8; 48][..]), ("large", &big[..])] {
        let m = Metadata {
            header: vec![Tlv {
                typ: TLV_SESSION_ID,
                value: &session,
            }],
            payload: vec![
                Tlv {
                    typ: TLV_METADATA_KEY_INDEX,
                    value: &index,
                },
                Tlv {
                    typ: TLV_SEALED_PAYLOAD_KEY,
                    value: payload,
                },
            ],
        };
        let mut out = vec![0u8; m.encoded_len()];
        let n = m.encode(&mut out)?;
        out.truncate(n);
        c.seed("ssr_svr_crypto_metadata", name, out, |b| {
            Metadata::parse(b).is_ok()
        })?;
    }

    // Well-formed packets under another key than the fuzz target's ([7; 80]): they pass
    // every structural check and fail authentication, as the target asserts.
    let material = PacketKeyMaterial::from_bytes([8u8; 80]);
    for size in [64usize, 1400, 9000, 60_000] {
        let plaintext = vec![0x3cu8; size];
        let mut out = vec![0u8; size + 256];
        let n = CbcHmacSealer::new(&material).seal(&plaintext, &mut out)?;
        c.seed(
            "ssr_svr_crypto_packet",
            &format!("cbc-hmac-{size}"),
            &out[..n],
            |b| !b.is_empty(),
        )?;
        let n = GcmSealer::new(&material).seal(&plaintext, &mut out)?;
        c.seed(
            "ssr_svr_crypto_packet",
            &format!("gcm-{size}"),
            &out[..n],
            |b| !b.is_empty(),
        )?;
    }
    svr_ha(c, &key)
}

/// Seeds for the HA imports: a key manager's export, and peer exports in the format
/// `Peer::export_ha` documents (a fresh peer's, and one with a sending key and a
/// receiving key with one epoch), each accepted by `Peer::import_ha`.
fn svr_ha(c: &mut Corpus, key: &p256::ecdsa::SigningKey) -> Result {
    use ssr_svr_crypto::kex::StaticAuthenticator;
    use ssr_svr_crypto::peer::{KeyManager, LocalIdentity, Peer, SecurityConfig};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let mut r = rng();
    let now = Instant::now();
    let km = KeyManager::new(&mut r, now);
    c.seed(
        "ssr_svr_crypto_ha_import",
        "key-manager",
        km.export_ha().secret_bytes(),
        |b| KeyManager::import_ha(b, now).is_ok(),
    )?;
    let peer = || {
        Peer::new(
            SecurityConfig::default(),
            LocalIdentity {
                cert_der: vec![0x30, 0x00],
                signing_key: Arc::new(key.clone()),
                common_name: "router-east".into(),
            },
            "router-west",
            StaticAuthenticator::new(),
            Duration::ZERO,
            now,
            1_700_000_000,
        )
    };
    let fresh = peer().export_ha(now).secret_bytes().to_vec();
    let mut keyed = vec![1u8, 1];
    keyed.extend_from_slice(&2u32.to_be_bytes());
    keyed.extend_from_slice(&[0x11; 80]);
    keyed.push(1);
    keyed.extend_from_slice(&3u32.to_be_bytes());
    keyed.extend_from_slice(&[0x22; 80]);
    keyed.extend_from_slice(&u32::MAX.to_be_bytes());
    keyed.extend_from_slice(&0u32.to_be_bytes());
    keyed.push(1);
    keyed.extend_from_slice(&0x6000_0000_0102_0304u64.to_be_bytes());
    keyed.push(1);
    keyed.extend_from_slice(&1000u64.to_be_bytes());
    keyed.extend_from_slice(&u32::MAX.to_be_bytes());
    for (name, bytes) in [("peer-fresh", fresh), ("peer-keyed", keyed)] {
        c.seed("ssr_svr_crypto_ha_import", name, &bytes, |b| {
            peer().import_ha(b, now, &mut rng()).is_ok()
        })?;
    }
    Ok(())
}

fn download(c: &mut Corpus) -> Result {
    use ssr_download::wire::{parse_versions, versions_json};
    use ssr_download::{Config, Manifest};
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    for (name, chunk) in [("64k-chunks", 64 << 10), ("one-chunk", 1 << 20)] {
        let m = Manifest::build("7.1.3", "ssr-7.1.3.img", &data, chunk)?;
        c.seed("ssr_download_manifest", name, m.to_json(), |b| {
            Manifest::parse(b).is_ok()
        })?;
    }
    // The signed document a source publishes (`ssr download sign-manifest`).
    let key = p256::ecdsa::SigningKey::generate_from_rng(&mut rng());
    let m = Manifest::build("7.1.3", "ssr-7.1.3.img", &data, 64 << 10)?;
    c.seed(
        "ssr_download_manifest",
        "signed",
        ssr_download::sign_manifest(&m, &key),
        |b| !b.is_empty(),
    )?;
    // Format 2: BLAKE3 chunk digests, unsigned and signed.
    let m3 = Manifest::build_with(
        "7.1.3",
        "ssr-7.1.3.img",
        &data,
        64 << 10,
        ssr_download::ChunkHash::Blake3,
    )?;
    c.seed("ssr_download_manifest", "blake3", m3.to_json(), |b| {
        Manifest::parse(b).is_ok()
    })?;
    c.seed(
        "ssr_download_manifest",
        "blake3-signed",
        ssr_download::sign_manifest(&m3, &key),
        |b| !b.is_empty(),
    )?;
    c.seed(
        "ssr_download_manifest",
        "versions",
        versions_json(&["7.1.2", "7.1.3", "7.2.0"]),
        |b| parse_versions(b).is_ok(),
    )?;
    let configs = [
        (
            "conductor-only",
            "access-mode = \"conductor-only\"\n[health]\nmin-rate = 0\nrequest-timeout = 5\n\
             [manifest]\nallow-unsigned = true\n\
             [[source]]\nkind = \"conductor-1\"\nurl = \"http://192.0.2.1:8080\"\n",
        ),
        (
            "every-section",
            "access-mode = \"prefer-conductor\"\ncloud = false\n\
             [retry]\nenable-timeout = true\ntimeout = 10800\nattempts = 10\nmaximum-retry-delay = 3600\n\
             [health]\nwindow = 10\ncool-down = 60\nmin-rate = 65536\nrequest-timeout = 30\n\
             [ha]\nmode = \"sequenced\"\nrole = \"first\"\n\
             [transfer]\nparallel = 4\n\
             [tls]\nca-bundle = \"/etc/ssr/download-ca.pem\"\n\
             pins = [\"sha256-spki:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"]\n\
             [manifest]\nrelease-keys = [\"/etc/ssr/release-1.pub.pem\"]\nwhole-file-sha256 = true\n\
             [[source]]\nkind = \"conductor-1\"\nurl = \"http://10.0.0.1:8080/images-root\"\n\
             [[source]]\nkind = \"conductor-2\"\nurl = \"http://10.0.0.2\"\n\
             [[source]]\nkind = \"repository\"\nurl = \"http://repo.example\"\n\
             [[source]]\nkind = \"ha-peer\"\nurl = \"http://10.0.0.3:8080\"\n",
        ),
    ];
    for (name, toml) in configs {
        c.seed("ssr_download_config", name, toml, |b| {
            Config::parse(text(b)).is_ok()
        })?;
    }
    Ok(())
}
