//! ssr-pki hot paths beside OpenSSL, measured in the same run.
//!
//! `cargo bench -p benches --bench pki`. Chain validation: a 3-certificate chain (root ->
//! intermediate -> leaf), RSA-2048 and ECDSA P-256, with a CRL from each CA (the
//! intermediate's lists 100 other serials) and revocation required for every level:
//! chains per second. Each validation checks four signatures (two certificates, two
//! CRLs); the OpenSSL figure is `openssl speed`'s raw verify rate divided by four, the
//! bound no validator built on OpenSSL's primitives can beat, and the ratio is printed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use ssr_pki::{Certificate, ChainOptions, Crl, RevocationPolicy, verify_chain};
use ssr_testkit::pki::{KeyKind, TestPki};

// ---- chain validation (pki-verify) ----

struct ChainFixture {
    leaf: Certificate,
    intermediates: Vec<Certificate>,
    anchors: Vec<Certificate>,
    opts: ChainOptions,
}

impl ChainFixture {
    fn new(kind: KeyKind) -> Self {
        let pki = TestPki::new(kind, "Bench");
        let leaf = Certificate::from_pem(&pki.leaf_pem).expect("leaf");
        let others: Vec<u64> = (0x10_000..0x10_000 + 100).collect();
        let crls = vec![
            Crl::from_pem(&pki.root_crl(&[])).expect("root CRL"),
            Crl::from_pem(&pki.intermediate_crl(&others)).expect("intermediate CRL"),
        ];
        let mut opts = ChainOptions::new(leaf.not_before() + 86_400).with_crls(crls);
        opts.revocation = RevocationPolicy::Required;
        let fixture = Self {
            intermediates: vec![Certificate::from_pem(&pki.intermediate_pem).expect("ica")],
            anchors: vec![Certificate::from_pem(&pki.root_pem).expect("root")],
            leaf,
            opts,
        };
        fixture.verify();
        fixture
    }

    fn verify(&self) {
        verify_chain(&self.leaf, &self.intermediates, &self.anchors, &self.opts)
            .expect("the bench chain validates");
    }
}

/// Validations per second over about `d`.
fn rate(d: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..10 {
        f();
    }
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < d {
        f();
        n += 1;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn chain_benches(c: &mut Criterion) {
    let fixtures = [
        ("rsa2048", KeyKind::Rsa2048, "rsa2048"),
        ("ecdsa-p256", KeyKind::EcdsaP256, "ecdsap256"),
    ]
    .map(|(name, kind, openssl)| (name, ChainFixture::new(kind), openssl));

    let mut g = c.benchmark_group("pki-verify-chain-3-with-crls");
    g.throughput(Throughput::Elements(1));
    for (name, fx, _) in &fixtures {
        g.bench_function(*name, |b| b.iter(|| black_box(fx).verify()));
    }
    g.finish();

    for (name, fx, openssl) in &fixtures {
        let ours = rate(Duration::from_secs(2), || black_box(fx).verify());
        match benches::openssl_verify_ops(openssl, 2) {
            Some(ops) => {
                let bound = ops / 4.0;
                println!(
                    "pki chain {name}: ssr-pki {ours:.0} chains/s; OpenSSL 4 raw verifies \
                     {bound:.0}/s; ssr-pki / OpenSSL bound = {:.2}",
                    ours / bound
                );
            }
            None => println!("pki chain {name}: ssr-pki {ours:.0} chains/s; OpenSSL n/a"),
        }
    }
}

// ---- CSR generation (pki-ops) ----

/// CSRs per second: PKCS#10 with CN = a router UUID, signed with P-256 (one ECDSA
/// signature plus DER encoding), alone and with the key generation. OpenSSL's bound is
/// `openssl speed ecdsap256`'s raw sign rate.
fn csr_benches(c: &mut Criterion) {
    use rand::SeedableRng;
    use ssr_pki::csr::{Csr, RouterUuid};
    use ssr_pki::keys::PrivateKey;

    // A seeded RNG: this measures speed, the keys protect nothing.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let key = PrivateKey::generate(&mut rng);
    let uuid = RouterUuid::parse("6f1e0c62-8d4b-4f55-9a4e-2b8f3c1d7e90").expect("uuid");
    let build = || Csr::build(black_box(&key), black_box(&uuid)).expect("csr");

    let mut g = c.benchmark_group("pki-csr-p256");
    g.throughput(Throughput::Elements(1));
    g.bench_function("build", |b| b.iter(build));
    // Where the time goes: the one ECDSA signature a CSR costs, alone.
    let signer = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).expect("scalar");
    g.bench_function("p256-sign-only", |b| {
        b.iter(|| {
            let sig: p256::ecdsa::Signature =
                p256::ecdsa::signature::Signer::sign(&signer, black_box(b"csr-sized tbs"));
            sig
        })
    });
    g.bench_function("keygen+build", |b| {
        b.iter(|| {
            let k = PrivateKey::generate(&mut rng);
            Csr::build(&k, black_box(&uuid)).expect("csr")
        })
    });
    g.finish();

    let ours = rate(Duration::from_secs(2), || {
        black_box(build());
    });
    match benches::openssl_sign_ops("ecdsap256", 2) {
        Some(signs) => println!(
            "pki csr p256: ssr-pki {ours:.0} CSRs/s; OpenSSL raw ECDSA P-256 signs {signs:.0}/s; \
             ssr-pki / OpenSSL bound = {:.2}",
            ours / signs
        ),
        None => println!("pki csr p256: ssr-pki {ours:.0} CSRs/s; OpenSSL n/a"),
    }
}

criterion::criterion_group!(benches, chain_benches, csr_benches);
criterion::criterion_main!(benches);
