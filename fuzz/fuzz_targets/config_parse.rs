//! The configuration parser: any text is a config or an error (never a panic); a config that
//! parses serialises back to TOML that parses to the same config.
#![no_main]

use guestd_daemon::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = toml::from_str::<Config>(text) {
        let again = toml::to_string(&config).expect("a parsed config serialises");
        let back: Config = toml::from_str(&again).expect("serialised config parses");
        assert_eq!(back, config);
    }
});
