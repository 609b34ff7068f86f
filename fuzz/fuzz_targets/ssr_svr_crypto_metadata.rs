#![no_main]
use libfuzzer_sys::fuzz_target;
use ssr_svr_crypto::tlv::Metadata;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Metadata::parse(data) {
        // Strict format: re-encoding gives the same bytes.
        let mut out = vec![0u8; m.encoded_len()];
        let n = m.encode(&mut out).expect("parsed metadata re-encodes");
        assert_eq!(&out[..n], data);
    }
});
