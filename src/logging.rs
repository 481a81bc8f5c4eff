//! Logs to stderr through `tracing`, as text or JSON; `RUST_LOG` or `--log-level` sets the filter.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber; `level` wins over `RUST_LOG` when given.
pub fn init(level: Option<&str>, format: LogFormat) {
    let spec = match level {
        Some(l) => l.to_string(),
        None => std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string()),
    };
    let filter = EnvFilter::try_new(with_quiet_deps(&spec)).unwrap_or_else(|e| {
        eprintln!("levee: invalid log filter {spec:?} ({e}); using \"info\"");
        EnvFilter::new(with_quiet_deps("info"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// rustls warns once per TLS connection about things clients routinely do (an IP address as SNI,
/// as curl and wrk send for `https://127.0.0.1/`): keep it at `error` unless the filter names it.
fn with_quiet_deps(spec: &str) -> String {
    if spec.contains("rustls") {
        spec.to_string()
    } else {
        format!("{spec},rustls=error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_is_quiet_unless_asked_for() {
        assert_eq!(with_quiet_deps("warn"), "warn,rustls=error");
        assert_eq!(with_quiet_deps("info,rustls=debug"), "info,rustls=debug");
    }
}
