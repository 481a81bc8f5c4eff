//! Configuration: the TOML file (`raw`), its validation (`validate`) into a `Config` (`model`),
//! and errors that point at `FILE:LINE:COL` (`diagnostics`). `levee check`, startup and every
//! reload go through [`load`], so they can never disagree.

pub mod diagnostics;
pub mod model;
pub mod raw;
pub mod units;
pub mod validate;

pub use diagnostics::{ConfigErrors, Problem};
pub use model::*;

use diagnostics::{explain_toml_message, Diagnostics};
use std::path::Path;

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![Problem {
            file: file.clone(),
            line: 1,
            column: 1,
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&file, &text, base_dir)
}

/// Parses and validates config text; `file` names it in messages, `base_dir` anchors relative paths.
pub fn parse(file: &str, text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut d = Diagnostics::new(file, text);
    let raw: raw::RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            d.at(e.span().unwrap_or(0..0), explain_toml_message(e.message()));
            d.finish()?;
            return Err(ConfigErrors(Vec::new()));
        }
    };
    validate::check_uniqueness(&raw, &mut d);
    let config = validate::validate(raw, base_dir, &mut d);
    d.finish()?;
    let mut config = config.ok_or_else(|| ConfigErrors(Vec::new()))?;
    config.hash = content_hash(text);
    Ok(config)
}

/// FNV-1a of the file: stable across runs and platforms, enough to tell two files apart.
fn content_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}
