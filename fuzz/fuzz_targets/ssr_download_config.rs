#![no_main]
//! The `ssr download` TOML configuration: any text gives a validated config or an
//! error, never a panic.

use libfuzzer_sys::fuzz_target;
use ssr_download::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(c) = Config::parse(text)
    {
        assert!(c.settings.validate().is_ok());
        let _ = c.usable_sources();
    }
});
