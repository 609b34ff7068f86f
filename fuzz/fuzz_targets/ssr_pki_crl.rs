#![no_main]
//! CRL parser: any bytes are an error or a CRL, never a panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(crl) = ssr_pki::Crl::from_der(data) {
        assert_eq!(crl.der(), data);
        let _ = crl.revoked().count();
        let _ = (crl.issuer(), crl.this_update(), crl.next_update());
    }
});
