//! Man pages and shell completions, generated from the same clap definitions as `--help` (in
//! `main.rs`), so the help, the man pages and the completions never drift apart. The Debian
//! package ships what `levee man --dir` and `levee completions SHELL` print
//! (`packaging/build-deb.sh`).

use clap::Command;
use clap_complete::Shell;
use std::io::{self, Write};
use std::path::Path;

const SOURCE: &str = concat!("levee ", env!("CARGO_PKG_VERSION"));
const MANUAL: &str = "levee manual";

/// The completion script for `shell`. Rendered into memory first: clap_complete panics when its
/// writer fails, and a closed pipe (`levee completions bash | head`) must not panic.
pub fn completions(mut cmd: Command, shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "levee", &mut script);
    script
}

/// levee(1) as roff: clap's sections plus the ones clap knows nothing of (signals, files, exit
/// status, environment).
pub fn man_page(cmd: Command) -> io::Result<Vec<u8>> {
    let cmd = cmd.disable_help_subcommand(true);
    let man = clap_mangen::Man::new(cmd).source(SOURCE).manual(MANUAL);
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    page.extend_from_slice(OPERATOR_SECTIONS.as_bytes());
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// Writes levee.1 and one page per subcommand (levee-run.1, levee-check.1, ...) and per
/// sub-subcommand (levee-override-set.1, ...) into `dir`; returns the paths written.
pub fn write_man_pages(cmd: Command, dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    // Gives each subcommand its display name ("levee-run") and the global options.
    cmd.build();
    let mut written = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let man = clap_mangen::Man::new(sub.clone())
            .source(SOURCE)
            .manual(MANUAL);
        written.push(man.generate_to(dir)?);
        // `levee override set|list|clear`: a page each, like git's.
        for leaf in sub.get_subcommands().filter(|s| !s.is_hide_set()) {
            let man = clap_mangen::Man::new(leaf.clone())
                .source(SOURCE)
                .manual(MANUAL);
            written.push(man.generate_to(dir)?);
        }
    }
    let main = dir.join("levee.1");
    std::fs::File::create(&main)?.write_all(&man_page(cmd)?)?;
    written.push(main);
    Ok(written)
}

/// The sections of levee(1) after SUBCOMMANDS. Hand-written roff: what they say lives in no clap
/// definition (README.md's "Running it" and systemd/README.md say the same at more length).
const OPERATOR_SECTIONS: &str = r#".SH SIGNALS
.TP
.B SIGHUP
Re\-read and validate the config (as \fBPOST /reload\fR on the admin listener does).
A config that does not validate is refused and the running one keeps serving;
the errors are logged as FILE:LINE:COL.
.TP
.BR SIGTERM ", " SIGINT
Drain: \fB/ready\fR turns 503, the listeners stop accepting, in\-flight requests finish
(up to \fB[admin] drain_timeout\fR, default 30s), then levee exits 0.
.SH "EXIT STATUS"
.TP
.B 0
\fBcheck\fR: the config is valid; \fBrun\fR: drained and stopped on a signal.
.TP
.B 1
\fBcheck\fR: the config has problems (each printed as FILE:LINE:COL: message);
\fBrun\fR: the config is invalid or a listener could not be bound.
.TP
.B 2
\fBcheck \-\-diff\fR: the config is valid, but there is nothing to compare it with
(the admin listener does not answer, or the \fB\-\-against\fR file is not valid).
.SH ENVIRONMENT
.TP
.B RUST_LOG
Log filter, e.g. \fBinfo,levee::access=off\fR; \fB\-\-log\-level\fR overrides it.
.TP
.B LEVEE_WORKERS
Runtime worker threads, as \fB\-\-workers\fR.
.SH FILES
.TP
.I /etc/levee/levee.toml
The config read when no \fB\-\-config\fR is given.
.TP
.I /usr/share/doc/levee/config.example.toml
Every config key with its default and what it does.
.TP
.I /lib/systemd/system/levee.service
The systemd unit: \fBsystemctl reload levee\fR sends SIGHUP, \fBsystemctl stop levee\fR drains.
.SH "SEE ALSO"
.BR levee\-run (1),
.BR levee\-check (1),
.BR levee\-status (1),
.BR levee\-override (1),
.BR systemctl (1),
.BR journalctl (1)
.PP
/usr/share/doc/levee/README.md: the config walkthrough, metrics and admin endpoints.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Command {
        Command::new("levee")
            .version("1.0")
            .about("a proxy")
            .subcommand(Command::new("run").about("Run the proxy."))
            .subcommand(Command::new("check").about("Check the config."))
            .subcommand(
                Command::new("override")
                    .about("Hold a target.")
                    .subcommand(Command::new("set").about("Set one."))
                    .subcommand(Command::new("list").about("List them.")),
            )
    }

    #[test]
    fn the_main_page_lists_subcommands_and_the_operator_sections_in_order() {
        let page = String::from_utf8(man_page(cli()).unwrap()).unwrap();
        let at = |needle: &str| page.find(needle).unwrap_or(usize::MAX);
        assert!(at(".TH levee 1") < at(".SH SYNOPSIS"), "{page}");
        assert!(at(".SH SYNOPSIS") < at("levee\\-run(1)"), "{page}");
        assert!(at("levee\\-run(1)") < at(".SH SIGNALS"), "{page}");
        assert!(at(".SH SIGNALS") < at(".SH FILES"), "{page}");
        assert!(at(".SH FILES") < at(".SH VERSION"), "{page}");
        assert_ne!(at(".SH VERSION"), usize::MAX, "{page}");
    }

    #[test]
    fn every_subcommand_gets_its_own_page() {
        let dir = std::env::temp_dir().join(format!("levee-man-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut written = write_man_pages(cli(), &dir).unwrap();
        written.sort();
        let names: Vec<_> = written
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        assert_eq!(
            names,
            [
                "levee-check.1",
                "levee-override-list.1",
                "levee-override-set.1",
                "levee-override.1",
                "levee-run.1",
                "levee.1"
            ]
        );
        let set = std::fs::read_to_string(dir.join("levee-override-set.1")).unwrap();
        assert!(set.contains(".TH levee-override-set 1"), "{set}");
        let run = std::fs::read_to_string(dir.join("levee-run.1")).unwrap();
        assert!(run.contains(".TH levee-run 1"), "{run}");
        assert!(run.contains(SOURCE), "{run}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn completions_name_the_subcommands() {
        let bash = String::from_utf8(completions(cli(), Shell::Bash)).unwrap();
        assert!(bash.contains("complete -F _levee"), "{bash}");
        assert!(bash.contains("run") && bash.contains("check"), "{bash}");
        assert!(bash.contains("levee__subcmd__override,set"), "{bash}");
    }
}
