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

criterion::criterion_group!(benches, chain_benches);
criterion::criterion_main!(benches);
