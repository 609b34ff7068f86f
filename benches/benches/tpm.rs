//! ssr-tpm: one FEK unlock (unseal) against swtpm, beside OpenSSL's RSA-2048 private
//! operation (the primitive the TPM runs inside RSA_Decrypt), measured in the same run.
//!
//! `cargo bench -p benches --bench tpm` (about half a minute). Prints the TPM commands
//! per unlock (counted by the adapter; the swtpm integration test checks that count
//! against swtpm's own command log), the time of one unlock on an open connection and
//! with a fresh connection (as the boot-time service does), and the ratio to
//! `openssl speed rsa2048`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use ssr_testkit::Swtpm;
use ssr_tpm::esapi::EsapiTpm;
use ssr_tpm::{SealConfig, SealedFek, seal_new_fek, unseal_fek};

fn unlock(tpm: &mut EsapiTpm, sealed: &SealedFek) {
    let fek = unseal_fek(tpm, sealed).expect("unseal");
    black_box(fek.secret_bytes());
}

/// Mean seconds per call of `f` over about `d`.
fn mean(d: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    let mut n = 0u32;
    while t.elapsed() < d {
        f();
        n += 1;
    }
    t.elapsed().as_secs_f64() / f64::from(n)
}

fn main() {
    let swtpm = Swtpm::start().expect("swtpm");
    let tcti = swtpm.tcti();
    let mut tpm = EsapiTpm::connect(&tcti).expect("connect");
    let (_, sealed) = seal_new_fek(&mut tpm, &SealConfig::default()).expect("seal");

    let mut fresh = EsapiTpm::connect(&tcti).expect("connect");
    unlock(&mut fresh, &sealed);
    let per_unlock = fresh.commands_sent();
    drop(fresh);

    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20)
        .configure_from_args();
    c.bench_function("tpm/unlock (open connection)", |b| {
        b.iter(|| unlock(&mut tpm, &sealed))
    });
    c.bench_function("tpm/unlock (connect + unseal)", |b| {
        b.iter(|| {
            let mut t = EsapiTpm::connect(&tcti).expect("connect");
            unlock(&mut t, &sealed)
        })
    });
    c.final_summary();

    let warm = mean(Duration::from_secs(2), || unlock(&mut tpm, &sealed));
    let cold = mean(Duration::from_secs(2), || {
        let mut t = EsapiTpm::connect(&tcti).expect("connect");
        unlock(&mut t, &sealed)
    });
    eprintln!(
        "TPM commands per unlock: {per_unlock} (6 expected: the file checked by TPM2_HMAC, then RSA_Decrypt)"
    );
    eprintln!(
        "unlock against swtpm: {:.2} ms on an open connection, {:.2} ms with connect",
        warm * 1e3,
        cold * 1e3
    );
    match benches::openssl_sign_ops("rsa2048", 1) {
        Some(ops) => eprintln!(
            "openssl rsa2048 private op {:.3} ms; unlock / openssl = {:.1}x (salted session, \
             parameter encryption and {per_unlock} TPM round trips around one RSA decryption)",
            1e3 / ops,
            warm * ops
        ),
        None => eprintln!("openssl speed unavailable"),
    }
}
