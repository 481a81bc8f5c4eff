//! `levee check --config NEW --diff [--admin ADDR | --against OLD]`: validates NEW like
//! `levee check`, then prints what reloading it would change against the running levee (its
//! `GET /config`) or against OLD (`crate::config::diff`).
//!
//! Exit status: 0 when NEW is valid, 1 when it is not (its problems as `FILE:LINE:COL`), 2 when
//! NEW is valid but there is nothing to compare it with (admin listener unreachable, OLD
//! invalid).

use crate::config::{self, shown, Config};
use crate::runtime::{self, ConfigSource};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What NEW is compared with.
pub enum Against {
    /// The running levee whose admin listener is at this address.
    Admin(String),
    /// A config file.
    File(PathBuf),
}

/// How the diff is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    // Plain comments, not doc comments: clap would list documented values in `--help` on lines
    // of their own, and `--help` keeps each option on one line.
    // Lines for people: `+`, `-`, `~` and `state kept` / `state reset`.
    Text,
    // One JSON document on stdout (the validity line is not printed).
    Json,
}

/// `levee check`: validates the config at `path`, and says so on stdout when `say_ok`; its
/// problems (as `FILE:LINE:COL`) go to stderr.
pub fn check(path: &Path, say_ok: bool) -> Option<Config> {
    match runtime::check(&ConfigSource::File(path.to_path_buf())) {
        Ok(c) => {
            if say_ok {
                println!(
                    "{}: ok ({} listeners, {} routes, {} upstreams)",
                    path.display(),
                    c.listeners.len(),
                    c.routes.len(),
                    c.upstreams.len()
                );
            }
            Some(c)
        }
        Err(errors) => {
            for p in &errors.0 {
                eprintln!("{p}");
            }
            None
        }
    }
}

pub fn run(new_path: &Path, against: Against, format: Format) -> ExitCode {
    let Some(new) = check(new_path, format == Format::Text) else {
        return ExitCode::FAILURE;
    };
    let (old, new, what) = match against {
        Against::File(old_path) => match runtime::check(&ConfigSource::File(old_path.clone())) {
            Ok(old) => (old, new, old_path.display().to_string()),
            Err(errors) => {
                eprintln!(
                    "levee check --diff: cannot compare with {}, it is not valid:",
                    old_path.display()
                );
                for p in &errors.0 {
                    eprintln!("{p}");
                }
                // NEW is valid, which is what the exit status says (contract): 0.
                return ExitCode::SUCCESS;
            }
        },
        Against::Admin(addr) => match running(&addr) {
            Ok(old) => {
                let new = as_shown(new_path, new);
                (old, new, format!("the running levee at {addr}"))
            }
            Err(e) => {
                eprintln!("levee check --diff: cannot read the running config: {e}");
                eprintln!(
                    "is levee running, and is its admin listener on {addr}? (use --admin ADDR, or --against OLD)"
                );
                // NEW is valid, which is what the exit status says (contract): 0.
                return ExitCode::SUCCESS;
            }
        },
    };
    let diff = config::diff::diff(&old, &new);
    match format {
        Format::Text => {
            println!("a reload from {what} would change:");
            print!("{}", diff.render());
        }
        Format::Json => {
            let mut doc = diff.to_json();
            doc["config"] = new_path.display().to_string().into();
            doc["against"] = what.into();
            println!("{doc}");
        }
    }
    ExitCode::SUCCESS
}

/// The running config, from `GET /config`: secrets removed, paths absolute.
fn running(addr: &str) -> Result<Config, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let text = rt.block_on(crate::status_cli::get(addr, "/config"))?;
    let name = format!("http://{addr}/config");
    config::parse(&name, &text, Path::new("/")).map_err(|e| {
        format!("the running config does not parse here (its files must exist on this machine too):\n{e}")
    })
}

/// NEW with its secrets removed as `GET /config` removes them, so that it is compared with the
/// running config like for like (a secret is the same `***` on both sides). Should that text
/// not validate (a secret's `***` where a value is checked), NEW is compared as written.
fn as_shown(path: &Path, new: Config) -> Config {
    let text = shown::to_toml(&new.shown);
    config::parse(&path.display().to_string(), &text, Path::new("/")).unwrap_or(new)
}
