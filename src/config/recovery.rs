//! Validation of the recovery keys of `[upstream.circuit_breaker]`: `probe_path` and
//! `ramp_duration` (a plain duration, parsed as every other).

use super::diagnostics::Diagnostics;
use toml::Spanned;

/// `probe_path`: an origin-form path (and optional query) the probe can GET as written.
pub(super) fn probe_path(raw: &Option<Spanned<String>>, d: &mut Diagnostics) -> Option<String> {
    let p = raw.as_ref()?;
    let path = p.get_ref();
    let valid = path.starts_with('/')
        && path.parse::<http::uri::PathAndQuery>().is_ok()
        && !path.contains('#');
    if valid {
        Some(path.clone())
    } else {
        d.at(
            p.span(),
            format!(r#"probe_path "{path}" is not a path: write one starting with "/", like probe_path = "/healthz""#),
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use std::path::Path;
    use std::time::Duration;

    fn config(breaker: &str) -> String {
        format!("[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"app\"\n[[upstream]]\nname = \"app\"\nendpoints = [\"127.0.0.1:1\"]\n[upstream.circuit_breaker]\n{breaker}\n")
    }

    #[test]
    fn recovery_keys_are_read_and_off_by_default() {
        let c = parse("t.toml", &config(""), Path::new(".")).unwrap();
        let s = &c.upstreams[0].breaker.settings;
        assert_eq!((s.probe_path.as_deref(), s.ramp_duration), (None, None));
        let text = config("probe_path = \"/healthz?deep=1\"\nramp_duration = \"30s\"");
        let c = parse("t.toml", &text, Path::new(".")).unwrap();
        let s = &c.upstreams[0].breaker.settings;
        assert_eq!(s.probe_path.as_deref(), Some("/healthz?deep=1"));
        assert_eq!(s.ramp_duration, Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_bad_probe_path_is_reported_at_its_position_with_the_fix() {
        for bad in ["healthz", "/a b", "http://x/healthz"] {
            let text = config(&format!("probe_path = \"{bad}\""));
            let errors = parse("t.toml", &text, Path::new(".")).unwrap_err();
            let line = errors.0[0].to_string();
            assert!(
                line.starts_with(&format!("t.toml:9:14: probe_path \"{bad}\" is not a path")),
                "{line}"
            );
            assert!(line.contains(r#"like probe_path = "/healthz""#), "{line}");
        }
        let errors =
            parse("t.toml", &config("ramp_duration = \"30\""), Path::new(".")).unwrap_err();
        assert!(
            errors.0[0].to_string().starts_with("t.toml:9:17: "),
            "{errors}"
        );
    }
}
