//! Any config file and any set of SWITCHBOARD_* environment overrides (what an operator or a
//! platform such as Kubernetes puts there): loading never panics; it yields a config that
//! passes its own validation, or an error that says why.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_edge::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Before the first NUL: a TOML file; after it: KEY=VALUE lines of environment.
    let (file, env) = text.split_once('\0').unwrap_or((text, ""));
    let vars = env.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned()));
    if let Ok(loaded) = Config::load_text(file, "fuzz".into(), vars) {
        assert!(loaded.config.problems().is_empty(), "a loaded config that fails its own validation");
    }
});
