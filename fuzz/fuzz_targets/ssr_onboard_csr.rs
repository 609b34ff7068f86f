#![no_main]
//! Certificate-request check and onboarding-record parser: any input is an error or
//! a verdict, never a panic.

use libfuzzer_sys::fuzz_target;
use ssr_onboard::record::{OnboardingRecord, check_csr};

fuzz_target!(|data: &[u8]| {
    let record = OnboardingRecord::new("r1", data, "j", 0);
    let _ = check_csr("r1", Some(&record), data);
    let _ = check_csr("r1", None, data);
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(r) = OnboardingRecord::parse(s)
    {
        let _ = r.key_der();
        assert_eq!(
            OnboardingRecord::parse(r.to_json_line().trim()).expect("re-parse"),
            r
        );
    }
});
