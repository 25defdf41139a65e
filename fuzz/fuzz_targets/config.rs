//! The TOML configuration loader (defaults < the file, then validation).
//!
//! Beyond "does not panic": any text gives a configuration or a `ConfigError::Invalid` (no
//! file is read); a configuration that loads prints (`--print-config`) as TOML that loads
//! back to the same configuration.

#![no_main]

use collector::config::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text) {
        Ok(config) => {
            let printed = config.to_toml().expect("a loaded configuration prints");
            let again = Config::from_toml_str(&printed).unwrap_or_else(|e| {
                panic!("the printed configuration does not load: {e}\n{printed}")
            });
            assert_eq!(again, config, "{printed}");
        }
        Err(ConfigError::Invalid { .. }) => {}
        Err(e @ ConfigError::ReadFile { .. }) => panic!("no file is read: {e}"),
    }
});
