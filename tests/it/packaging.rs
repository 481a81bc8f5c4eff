//! What an operator installs and watches levee with: every metric family from the first scrape,
//! a Grafana dashboard and alert rules that name only metrics levee exports, shell completions
//! and man pages generated from the CLI definitions. (The .deb itself is built and inspected by
//! packaging/build-deb.sh and packaging/check-deb.sh, which .ci/run runs.)

use crate::support::origin::Origin;
use crate::support::scrape::{get_text, metric_value};
use crate::support::TestProxy;
use levee::error::ProxyError;
use levee::layers::breaker::state::StateKind;
use levee::metrics::CLASSES;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};

fn two_routes_two_upstreams(app: &str, other: &str, extra: &str) -> String {
    format!(
        r#"[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
name = "api"
path_prefix = "/api"
upstream = "app"
[route.retry]
attempts = 2
[route.rate_limit]
rps = 1000.0

[[route]]
name = "web"
path_prefix = "/"
upstream = "other"

[[upstream]]
name = "app"
endpoints = ["{app}"]

[[upstream]]
name = "other"
endpoints = ["{other}"]
{extra}"#
    )
}

/// Sample names and, for each, the label names its series carry; family names (the histogram
/// `levee_request_duration_seconds`, as prose names it) with no labels.
fn exported(metrics: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for family in metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next())
    {
        out.entry(family.to_string()).or_default();
    }
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_string()).or_default();
        if let Some(body) = line[name_end..]
            .strip_prefix('{')
            .and_then(|b| b.split_once('}'))
        {
            for pair in body.0.split("\",") {
                if let Some((key, _)) = pair.split_once('=') {
                    labels.insert(key.trim().to_string());
                }
            }
        }
    }
    out
}

/// Every `levee_*` metric named in `text`, with the label names of its `{...}` matchers.
fn named_metrics(text: &str) -> Vec<(String, Vec<String>)> {
    let bytes = text.as_bytes();
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(i) = text[at..].find("levee_").map(|i| i + at) {
        let mut end = i;
        while end < bytes.len() && is_name(bytes[end]) {
            end += 1;
        }
        at = end;
        if i > 0 && is_name(bytes[i - 1]) {
            continue;
        }
        let mut labels = Vec::new();
        if bytes.get(end) == Some(&b'{') {
            if let Some(close) = text[end..].find('}') {
                for matcher in text[end + 1..end + close].split(',') {
                    let key: String = matcher
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !key.is_empty() {
                        labels.push(key);
                    }
                }
            }
        }
        found.push((text[i..end].to_string(), labels));
    }
    found
}

/// Fails with every metric or label that `file` names and a running levee does not export.
fn assert_names_only_exported(file: &str, exported: &BTreeMap<String, BTreeSet<String>>) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    let named = named_metrics(&text);
    assert!(!named.is_empty(), "{file} names no levee metric");
    let mut unknown = Vec::new();
    for (metric, labels) in &named {
        match exported.get(metric) {
            None => unknown.push(metric.clone()),
            Some(have) => {
                for label in labels {
                    // Prometheus adds these at scrape time.
                    if !["instance", "job"].contains(&label.as_str()) && !have.contains(label) {
                        unknown.push(format!("{metric}{{{label}}}"));
                    }
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "{file} names what levee's /metrics does not have: {unknown:?}\nexported: {:?}",
        exported.keys().collect::<Vec<_>>()
    );
}

fn metric_names(file: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    named_metrics(&text).into_iter().map(|(n, _)| n).collect()
}

#[tokio::test]
async fn every_metric_family_has_series_from_the_first_scrape() {
    let app = Origin::new().start().await;
    let other = Origin::new().start().await;
    let (a, o) = (app.addr.to_string(), other.addr.to_string());
    let proxy = TestProxy::start(&two_routes_two_upstreams(&a, &o, "")).await;
    let text = get_text(&proxy.admin_url("/metrics")).await;

    // Each `# TYPE` family has at least one sample: none appears only after its first event.
    let samples = exported(&text);
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next())
        .collect();
    assert!(families.len() >= 20, "{text}");
    for family in families {
        let has_sample = ["", "_total", "_bucket", "_count", "_sum", "_info"]
            .iter()
            .any(|suffix| samples.contains_key(&format!("{family}{suffix}")));
        assert!(has_sample, "family {family} has no series yet:\n{text}");
    }

    let zero = |name: &str, labels: &[(&str, &str)]| {
        assert_eq!(
            metric_value(&text, name, labels),
            Some(0.0),
            "{name}{labels:?} is not a zero-valued series:\n{text}"
        );
    };
    for result in ["success", "failure"] {
        zero("levee_config_reloads_total", &[("result", result)]);
    }
    for kind in ProxyError::KINDS {
        zero("levee_proxy_errors_total", &[("kind", kind)]);
    }
    for mode in ["allow", "deny", "local"] {
        zero("levee_redis_fallback_total", &[("mode", mode)]);
    }
    for upstream in ["app", "other"] {
        zero("levee_circuit_state", &[("upstream", upstream)]);
        zero(
            "levee_upstream_request_duration_seconds_count",
            &[("upstream", upstream)],
        );
        for (from, to) in StateKind::TRANSITIONS {
            zero(
                "levee_circuit_transitions_total",
                &[
                    ("upstream", upstream),
                    ("from", from.as_str()),
                    ("to", to.as_str()),
                ],
            );
        }
    }
    for (route, upstream) in [("api", "app"), ("web", "other")] {
        for class in CLASSES {
            zero(
                "levee_requests_total",
                &[("route", route), ("upstream", upstream), ("class", class)],
            );
        }
        zero("levee_request_duration_seconds_count", &[("route", route)]);
        zero("levee_retries_total", &[("route", route)]);
        zero("levee_retry_budget_exhausted_total", &[("route", route)]);
        zero("levee_stale_resends_total", &[("route", route)]);
        zero("levee_rate_limited_total", &[("route", route)]);
    }
    zero(
        "levee_endpoint_ejections_total",
        &[("upstream", "app"), ("endpoint", &a)],
    );

    // An upstream that arrives with a reload gets its series at once too.
    let added = "\n[[route]]\nname = \"late\"\npath_prefix = \"/late\"\nupstream = \"late\"\n\n\
                 [[upstream]]\nname = \"late\"\nendpoints = [\"127.0.0.1:9\"]\n";
    proxy
        .reload(&two_routes_two_upstreams(&a, &o, added))
        .await
        .unwrap();
    let text = get_text(&proxy.admin_url("/metrics")).await;
    for (from, to) in StateKind::TRANSITIONS {
        assert_eq!(
            metric_value(
                &text,
                "levee_circuit_transitions_total",
                &[
                    ("upstream", "late"),
                    ("from", from.as_str()),
                    ("to", to.as_str())
                ],
            ),
            Some(0.0),
            "{text}"
        );
    }
    assert_eq!(
        metric_value(
            &text,
            "levee_requests_total",
            &[("route", "late"), ("class", "5xx")]
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "levee_config_reloads_total",
            &[("result", "success")]
        ),
        Some(1.0),
        "{text}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn dashboard_and_alert_rules_name_only_metrics_levee_exports() {
    let app = Origin::new().start().await;
    let other = Origin::new().start().await;
    let proxy = TestProxy::start(&two_routes_two_upstreams(
        &app.addr.to_string(),
        &other.addr.to_string(),
        "",
    ))
    .await;
    // The first scrape: what a dashboard sees right after levee starts.
    let exported = exported(&get_text(&proxy.admin_url("/metrics")).await);
    proxy.shutdown().await;

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/levee.json"),
        )
        .unwrap(),
    )
    .expect("docs/grafana/levee.json is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().map(Vec::len).unwrap_or(0);
        assert!(targets > 0, "panel {} has no query", p["title"]);
    }
    assert_names_only_exported("docs/grafana/levee.json", &exported);
    assert_names_only_exported("docs/prometheus/alerts.yml", &exported);
    assert_names_only_exported("docs/prometheus/alerts.test.yml", &exported);

    // And they cover what the operator asked for.
    let on_dashboard = metric_names("docs/grafana/levee.json");
    for m in [
        "levee_requests_total",
        "levee_request_duration_seconds_bucket",
        "levee_upstream_request_duration_seconds_bucket",
        "levee_circuit_state",
        "levee_circuit_transitions_total",
        "levee_retries_total",
        "levee_retry_budget_exhausted_total",
        "levee_rate_limited_total",
        "levee_endpoint_ejections_total",
        "levee_config_reloads_total",
        "levee_redis_up",
        "levee_redis_errors_total",
    ] {
        assert!(on_dashboard.contains(m), "the dashboard does not show {m}");
    }
    let in_alerts = metric_names("docs/prometheus/alerts.yml");
    for m in [
        "levee_circuit_state",
        "levee_retry_budget_exhausted_total",
        "levee_config_reloads_total",
        "levee_endpoint_healthy",
        "levee_redis_up",
    ] {
        assert!(in_alerts.contains(m), "no alert rule uses {m}");
    }
}

#[test]
fn the_name_check_catches_unknown_metrics_and_labels() {
    let exported = exported("levee_requests_total{route=\"a\",class=\"2xx\"} 0\n");
    let named = named_metrics(
        "rate(levee_requests_total{instance=~\"$i\", klass=\"5xx\"}[5m]) + levee_nope x-levee-error",
    );
    assert_eq!(
        named,
        [
            (
                "levee_requests_total".to_string(),
                vec!["instance".to_string(), "klass".to_string()]
            ),
            ("levee_nope".to_string(), vec![]),
        ]
    );
    assert!(!exported["levee_requests_total"].contains("klass"));
    assert!(!exported.contains_key("levee_nope"));
}

/// Runs promtool where Debian's `prometheus` package provides it (.ci/run installs it): the
/// rules parse, and their unit tests (alerts.test.yml: each alert fires on the incident it is
/// for, and not on its near miss) pass. The metric-name check above runs everywhere.
#[test]
fn alert_rules_pass_promtool_where_installed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/prometheus");
    for (verb, file) in [("check", "alerts.yml"), ("test", "alerts.test.yml")] {
        match Command::new("promtool")
            .args([verb, "rules"])
            .arg(dir.join(file))
            .output()
        {
            Ok(out) => assert!(
                out.status.success(),
                "promtool {verb} rules {file}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => return eprintln!("SKIP promtool {verb} rules: not runnable ({e})"),
        }
    }
}

fn levee(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "levee {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn bash_loads_the_completion_script() {
    let script = levee(&["completions", "bash"]).stdout;
    let mut bash = match Command::new("bash")
        .args(["-c", "source /dev/stdin && complete -p levee"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return eprintln!("SKIP: no bash ({e})"),
    };
    use std::io::Write;
    bash.stdin.take().unwrap().write_all(&script).unwrap();
    let out = bash.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("-F _levee levee"),
        "bash: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(script).unwrap();
    for sub in [
        "run",
        "check",
        "demo",
        "status",
        "completions",
        "man",
        "--diff",
        "--against",
    ] {
        assert!(text.contains(sub), "bash completion lacks {sub}");
    }
    for shell in ["zsh", "fish"] {
        let script = String::from_utf8(levee(&["completions", shell]).stdout).unwrap();
        assert!(
            script.contains("--config") && script.contains("status"),
            "{shell}: {script}"
        );
    }
}

#[test]
fn the_man_page_renders() {
    let page = levee(&["man"]).stdout;
    let roff = String::from_utf8(page.clone()).unwrap();
    assert!(roff.contains("\n.TH levee 1"), "not roff: {roff}");
    let mut man = match Command::new("man")
        .args(["--warnings", "-l", "-"])
        .env("MANWIDTH", "80")
        .env_remove("MAN_KEEP_FORMATTING")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return eprintln!("SKIP man -l: no man ({e})"),
    };
    use std::io::Write;
    man.stdin.take().unwrap().write_all(&page).unwrap();
    let out = man.wait_with_output().unwrap();
    // Without a terminal man strips bold and underline; drop any "X\x08X" overstrike left anyway.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&out.stdout).chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "man -l: {warnings}");
    assert!(warnings.trim().is_empty(), "man -l warns: {warnings}");
    for section in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "SUBCOMMANDS",
        "SIGNALS",
        "FILES",
    ] {
        assert!(text.contains(section), "no {section} in:\n{text}");
    }
    assert!(text.contains("levee-run(1)"), "{text}");
    assert!(text.contains("/etc/levee/levee.toml"), "{text}");

    // `levee man --dir` writes the page for each subcommand too (the package ships them).
    let dir = tempfile::tempdir().unwrap();
    levee(&["man", "--dir", dir.path().to_str().unwrap()]);
    for page in ["levee.1", "levee-run.1", "levee-check.1", "levee-status.1"] {
        let roff = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(roff.contains("\n.TH levee"), "{page}: {roff}");
    }
    // The reload preview's flags reach the page and the completions from the same clap args.
    let check = std::fs::read_to_string(dir.path().join("levee-check.1")).unwrap();
    for flag in ["\\-\\-diff", "\\-\\-against", "\\-\\-admin"] {
        assert!(check.contains(flag), "levee-check.1 lacks {flag}: {check}");
    }
}

#[test]
fn each_subcommand_help_says_what_it_does() {
    let top = String::from_utf8(levee(&["--help"]).stdout).unwrap();
    assert!(top.contains("Usage: levee"), "{top}");
    for sub in ["run", "check", "demo", "status", "completions", "man"] {
        let help = String::from_utf8(levee(&[sub, "--help"]).stdout).unwrap();
        let first = help.lines().next().unwrap_or_default();
        assert!(
            first.len() > 10 && !first.starts_with("Usage"),
            "`levee {sub} --help` opens without a description: {help}"
        );
        assert!(help.contains(&format!("Usage: levee {sub}")), "{help}");
        // Every option says what it is for.
        for line in help.lines().filter(|l| l.trim_start().starts_with('-')) {
            let described = line
                .trim_start()
                .split("  ")
                .filter(|s| !s.is_empty())
                .count()
                > 1;
            assert!(
                described,
                "`levee {sub} --help`: undocumented option {line:?}"
            );
        }
    }
}
