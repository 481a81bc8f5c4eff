//! The `levee` command line: run, check, demo, status, completions, man.

use clap::{CommandFactory, Parser, Subcommand};

// mimalloc: a proxy allocates and frees many small buffers per request; glibc malloc showed up
// at ~6% of CPU in profiles under load.
#[cfg(feature = "mimalloc")]
mod allocator;
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: allocator::Mimalloc = allocator::Mimalloc;

use levee::diff_cli::Against;
use levee::logging::{self, LogFormat};
use levee::{ConfigSource, Workers};
use std::path::PathBuf;
use std::process::ExitCode;

const DEFAULT_CONFIG: &str = "/etc/levee/levee.toml";
/// Where `levee status` and `levee check --diff` find the admin listener by default.
const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

#[derive(Parser)]
#[command(
    name = "levee",
    version,
    about = "A reverse proxy that protects its backends",
    long_about = "A reverse proxy that protects its backends: rate limits, circuit breakers, \
retries with budgets and outlier ejection, and an admin listener that explains why it is \
protecting them.\n\nWithout a subcommand, levee runs the proxy (`levee run`) with the config \
in /etc/levee/levee.toml.",
    after_help = "Validate a config before using it: levee check --config FILE\n\
Signals: SIGHUP reloads the config; SIGTERM and SIGINT drain, then exit 0."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (same as `levee run --config FILE`).
    #[arg(
        short,
        long,
        global = true,
        value_name = "FILE",
        value_hint = clap::ValueHint::FilePath
    )]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `info,levee::access=off` (overrides RUST_LOG).
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log line format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        value_name = "FORMAT"
    )]
    log_format: LogFormat,
    /// Workers, each a single-threaded runtime on its own thread with its own listener sockets
    /// (default: number of CPUs).
    #[arg(long, global = true, env = "LEVEE_WORKERS")]
    workers: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Reload when the config file or a listener's certificate or key file changes
        /// (same as `[admin] watch = true`).
        #[arg(long)]
        watch: bool,
    },
    /// Parse and fully validate the config; bind nothing.
    #[command(after_help = concat!(
        "Preview a reload before running it:\n",
        "  levee check --config NEW --diff                  against the running levee (GET /config)\n",
        "  levee check --config NEW --diff --against OLD    against another config file\n",
        "Exit status: 0 when the config is valid, 1 when not (with --diff too, even when there is\nnothing to compare with: that is said on stderr).",
    ))]
    Check {
        /// Also print what reloading this config would change: routes, upstreams, listeners and
        /// limits added, removed and modified, and for every upstream and limiter whether its
        /// live state is kept or reset.
        #[arg(long)]
        diff: bool,
        /// With --diff: the admin listener of the running levee to compare with
        /// [default: 127.0.0.1:9901].
        #[arg(
            long,
            value_name = "ADDR",
            requires = "diff",
            conflicts_with = "against"
        )]
        admin: Option<String>,
        /// With --diff: compare with this config file instead of the running levee.
        #[arg(
            long,
            value_name = "OLD",
            requires = "diff",
            value_hint = clap::ValueHint::FilePath
        )]
        against: Option<PathBuf>,
        /// With --diff: print the diff as lines (text) or as one JSON document (json).
        #[arg(
            long,
            value_enum,
            value_name = "FORMAT",
            default_value = "text",
            requires = "diff"
        )]
        format: levee::diff_cli::Format,
    },
    /// Run levee in front of two built-in demo backends.
    Demo {
        /// Proxy listener address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: String,
        /// Admin listener address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
    },
    /// Print the admin /status as a table.
    Status {
        /// Admin listener address of the running levee.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
    },
    /// Hold an upstream's breaker open or closed, or drain or eject an endpoint, for a while.
    #[command(after_help = concat!(
        "Examples:\n",
        "  levee override set upstream:api force_open --ttl 10m --reason \"db migration\"\n",
        "  levee override set endpoint:api/10.0.0.11:8080 drain --ttl 30m --reason \"kernel update\"\n",
        "  levee override list\n",
        "  levee override clear 3\n",
        "Overrides end by themselves after their TTL (at most 24h) and survive reloads while their\n",
        "target exists. Setting one on a target that has one replaces it.",
    ))]
    Override {
        /// Admin listener address of the running levee.
        #[arg(long, default_value = "127.0.0.1:9901", global = true)]
        admin: String,
        #[command(subcommand)]
        command: levee::override_cli::OverrideCommand,
    },
    /// Print a shell completion script.
    #[command(after_help = concat!(
        "Load it now:  source <(levee completions bash)\n",
        "Install it:   levee completions bash > /usr/share/bash-completion/completions/levee\n",
        "              levee completions zsh > /usr/share/zsh/vendor-completions/_levee\n",
        "              levee completions fish > /usr/share/fish/vendor_completions.d/levee.fish",
    ))]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the levee(1) man page as roff (view it with `levee man | man -l -`).
    Man {
        /// Write levee.1 and one page per subcommand (levee-run.1, ...) into DIR instead.
        #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match cli.command {
        Some(Command::Check {
            diff,
            ref admin,
            ref against,
            format,
        }) => {
            // Warnings (an expired certificate) go to stderr next to the errors.
            logging::init(
                Some(cli.log_level.as_deref().unwrap_or("warn")),
                cli.log_format,
            );
            match (diff, against) {
                (false, _) => match levee::diff_cli::check(&config, true) {
                    Some(_) => ExitCode::SUCCESS,
                    None => ExitCode::FAILURE,
                },
                (true, Some(old)) => {
                    levee::diff_cli::run(&config, Against::File(old.clone()), format)
                }
                (true, None) => {
                    let admin = admin.clone().unwrap_or_else(|| DEFAULT_ADMIN.to_string());
                    levee::diff_cli::run(&config, Against::Admin(admin), format)
                }
            }
        }
        Some(Command::Status { ref admin }) => levee::status_cli::run(admin),
        Some(Command::Override { admin, command }) => levee::override_cli::run(&admin, command),
        Some(Command::Demo {
            ref bind,
            ref admin,
        }) => {
            logging::init(cli.log_level.as_deref(), cli.log_format);
            let (bind, admin) = (bind.clone(), admin.clone());
            let workers = worker_count(cli.workers);
            levee::run::block_on(async move { levee::demo::run(&bind, &admin, workers).await })
        }
        Some(Command::Run { watch }) => {
            logging::init(cli.log_level.as_deref(), cli.log_format);
            let workers = worker_count(cli.workers);
            run(ConfigSource::File(config), watch, workers)
        }
        Some(Command::Completions { shell }) => {
            write_stdout(&levee::cli_docs::completions(Cli::command(), shell))
        }
        Some(Command::Man { dir: Some(ref dir) }) => {
            match levee::cli_docs::write_man_pages(Cli::command(), dir) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!(
                        "levee: cannot write the man pages to {}: {e}",
                        dir.display()
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Man { dir: None }) => match levee::cli_docs::man_page(Cli::command()) {
            Ok(page) => write_stdout(&page),
            Err(e) => {
                eprintln!("levee: cannot render the man page: {e}");
                ExitCode::FAILURE
            }
        },
        None => {
            logging::init(cli.log_level.as_deref(), cli.log_format);
            let workers = worker_count(cli.workers);
            run(ConfigSource::File(config), false, workers)
        }
    }
}

/// Writes generated text to stdout; a closed pipe (`| head`) is not worth a panic.
fn write_stdout(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("levee: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--workers`, or one per CPU.
fn worker_count(workers: Option<usize>) -> Workers {
    Workers::from_count(workers.filter(|w| *w > 0).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }))
}

fn run(source: ConfigSource, watch: bool, workers: Workers) -> ExitCode {
    levee::run(
        source,
        levee::Options {
            watch,
            workers,
            release_memory: RELEASE_MEMORY,
        },
    )
}

#[cfg(not(feature = "mimalloc"))]
const RELEASE_MEMORY: Option<fn()> = None;
#[cfg(feature = "mimalloc")]
const RELEASE_MEMORY: Option<fn()> = Some(allocator::collect);
