//! ssr-fscrypt: contents decryption of 4 KiB data units (MB/s, and the ratio to
//! `openssl speed -evp aes-256-xts` measured in the same run), key identifier and
//! per-file key derivation rates.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ssr_fscrypt::{ContextV2, EncryptionMode, InodeCipher, InodeInfo, MasterKey, PolicyV2};

const UNIT: usize = 4096;
const UNITS: usize = 16;

fn cipher() -> (MasterKey, InodeCipher) {
    let key = MasterKey::from_bytes(&[0x42; 32]).unwrap();
    let ctx = ContextV2::new(PolicyV2::new(key.identifier()), [7; 16]);
    let c = InodeCipher::new(&key, &ctx, InodeInfo::with_block_size(UNIT)).unwrap();
    (key, c)
}

/// Our decrypt throughput in bytes/s over `secs`, measured directly (for the ratio line).
fn our_rate(c: &InodeCipher, secs: f64) -> f64 {
    let mut buf = vec![0x5au8; UNIT * UNITS];
    let start = Instant::now();
    let mut bytes = 0usize;
    while start.elapsed().as_secs_f64() < secs {
        c.decrypt_contents(1000, &mut buf).unwrap();
        bytes += buf.len();
    }
    black_box(&buf);
    bytes as f64 / start.elapsed().as_secs_f64()
}

fn contents(cr: &mut Criterion) {
    let (_key, c) = cipher();
    let mut g = cr.benchmark_group("fscrypt_contents");
    g.throughput(Throughput::Bytes((UNIT * UNITS) as u64));
    let mut buf = vec![0x5au8; UNIT * UNITS];
    g.bench_function("decrypt_4KiB_units_x16", |b| {
        b.iter(|| {
            c.decrypt_contents(black_box(1000), black_box(&mut buf))
                .unwrap()
        })
    });
    g.bench_function("encrypt_4KiB_units_x16", |b| {
        b.iter(|| {
            c.encrypt_contents(black_box(1000), black_box(&mut buf))
                .unwrap()
        })
    });
    // The ceiling: the same AES-256 decryption through the multi-block path alone.
    let aes = <aes::Aes256 as cipher::KeyInit>::new(&[0x42; 32].into());
    let mut blocks = vec![cipher::Block::<aes::Aes256>::default(); UNIT * UNITS / 16];
    g.bench_function("aes256_ecb_only_x16", |b| {
        b.iter(|| {
            for unit in black_box(&mut blocks).chunks_mut(UNIT / 16) {
                cipher::BlockCipherDecrypt::decrypt_blocks(&aes, unit)
            }
        })
    });
    g.finish();

    // Ratio to OpenSSL, both measured now on this machine.
    // Best of three alternated one-second rounds each, so a burst of load from other
    // processes during one side's turn does not skew the ratio (shared machines).
    let mut ours = 0f64;
    let mut ossl: Option<f64> = None;
    for _ in 0..3 {
        let o = benches::openssl_speed(&["-evp", "aes-256-xts", "-decrypt"], UNIT, 1)
            .or_else(|| benches::openssl_speed(&["-evp", "aes-256-xts"], UNIT, 1));
        ossl = match (ossl, o) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        ours = ours.max(our_rate(&c, 1.0));
    }
    match ossl {
        Some(ossl) => eprintln!(
            "fscrypt contents decrypt, 4 KiB units: ours {:.0} MB/s, openssl aes-256-xts {:.0} MB/s, ratio {:.2}x (target >= 0.8x)",
            ours / 1e6,
            ossl / 1e6,
            ours / ossl
        ),
        None => eprintln!(
            "fscrypt contents decrypt, 4 KiB units: ours {:.0} MB/s; openssl speed unavailable",
            ours / 1e6
        ),
    }
}

fn keys(cr: &mut Criterion) {
    let key = MasterKey::from_bytes(&[0x42; 32]).unwrap();
    let mut g = cr.benchmark_group("fscrypt_keys");
    g.throughput(Throughput::Elements(1));
    g.bench_function("key_identifier", |b| {
        b.iter(|| black_box(&key).identifier())
    });
    g.bench_function("master_key_import_and_identifier", |b| {
        b.iter(|| {
            MasterKey::from_bytes(black_box(&[0x42; 32]))
                .unwrap()
                .identifier()
        })
    });
    let mut nonce = [0u8; 16];
    g.bench_function("per_file_key_xts", |b| {
        b.iter(|| {
            nonce[0] = nonce[0].wrapping_add(1);
            key.derive_file_key(black_box(&nonce), EncryptionMode::Aes256Xts)
        })
    });
    let policy = PolicyV2::new(key.identifier());
    g.bench_function("inode_cipher_setup", |b| {
        b.iter(|| {
            nonce[1] = nonce[1].wrapping_add(1);
            InodeCipher::new(
                &key,
                &ContextV2::new(policy, black_box(nonce)),
                InodeInfo::with_block_size(UNIT),
            )
            .unwrap()
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

criterion_group! { name = fscrypt; config = config(); targets = contents, keys }
criterion_main!(fscrypt);
