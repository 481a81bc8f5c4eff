//! The dashboard at `GET /` on the admin listener: self-contained, and live in a real browser.

use crate::support::proxy::simple_config;
use crate::support::*;
use std::path::PathBuf;
use std::time::Duration;

/// An upstream of two always-failing origins whose breaker trips after 4 calls and stays open.
async fn tripped() -> (TestProxy, OriginHandle, OriginHandle) {
    let a = Origin::new().status(500).start().await;
    let b = Origin::new().status(500).start().await;
    let breaker = r#"[upstream.circuit_breaker]
failure_rate_threshold = 0.5
minimum_calls = 4
window = { kind = "count", size = 10 }
open_duration = "10m"
"#;
    let proxy = TestProxy::start(&simple_config(&[a.addr, b.addr], "", breaker)).await;
    let client = Client::new();
    eventually("the breaker opens", Duration::from_secs(10), || {
        let client = client.clone();
        let url = proxy.url("/");
        async move { client.get(&url).await.error_kind() == "circuit_open" }
    })
    .await;
    (proxy, a, b)
}

#[tokio::test]
async fn dashboard_is_self_contained_html() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let r = Client::new().get(&proxy.admin_url("/")).await;
    assert_eq!(r.status, 200);
    let ct = r.headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("text/html"), "content-type {ct}");
    let csp = r.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let page = r.text().to_ascii_lowercase();
    assert!(page.contains("<html") && page.contains("/status"));
    for external in [
        "http://",
        "https://",
        "//fonts.",
        "<script src",
        "<link href",
        "@import",
    ] {
        assert!(!page.contains(external), "the page references {external:?}");
    }
    // Whatever <link> it has points at an inline data: URL, never another host.
    for link in page.split("<link").skip(1) {
        let tag = &link[..link.find('>').unwrap()];
        if let Some(i) = tag.find("href=") {
            assert!(tag[i + 6..].starts_with("data:"), "external link: {tag}");
        }
    }
    assert!(r.body.len() < 32 * 1024, "page is {} bytes", r.body.len());

    let r = Client::new()
        .request(http::Method::DELETE, &proxy.admin_url("/"), &[], "")
        .await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn status_has_history_and_actions() {
    let (proxy, a, b) = tripped().await;
    let r = Client::new().get(&proxy.admin_url("/status")).await;
    let s: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(s["actions_allowed"], true, "loopback admin allows actions");
    let up = &s["upstreams"][0];
    let requests = up["history"]["requests"].as_array().unwrap();
    let failures = up["history"]["failures"].as_array().unwrap();
    assert_eq!(requests.len(), 60);
    assert_eq!(failures.len(), 60);
    let sent: u64 = requests.iter().map(|v| v.as_u64().unwrap()).sum();
    let failed: u64 = failures.iter().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(sent as usize, a.hits() + b.hits());
    assert_eq!(failed, sent);
    let route = &s["routes"][0];
    let answered: u64 = route["history"]["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(
        answered > sent,
        "route counts the 503s too: {answered} vs {sent}"
    );
    assert_eq!(
        route["history"]["rate_limited"].as_array().unwrap().len(),
        60
    );
    assert_eq!(route["retries"], 0);

    // A reload that changes the upstream keeps its history (and the route's).
    let breaker = "[upstream.circuit_breaker]\nminimum_calls = 7\n";
    proxy
        .reload(&simple_config(&[a.addr, b.addr], "", breaker))
        .await
        .unwrap();
    let r = Client::new().get(&proxy.admin_url("/status")).await;
    let s: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let after: u64 = s["upstreams"][0]["history"]["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(
        after >= sent,
        "history survived the reload: {after} < {sent}"
    );
    let route_after: u64 = s["routes"][0]["history"]["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(route_after >= answered, "route history survived the reload");
    assert_eq!(s["upstreams"][0]["breaker"]["state"], "closed");
}

pub(crate) fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs headless Chromium on `url` and returns the DOM after its scripts ran.
pub(crate) async fn dump_dom(browser: &PathBuf, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--virtual-time-budget=3000", "--dump-dom", url])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium did not finish within 90 s")
    .expect("chromium could not be started");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {stderr}");
    assert!(
        !stderr.contains("Uncaught"),
        "a script error on the page: {stderr}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_shows_the_open_breaker() {
    let Some(browser) = chromium() else {
        eprintln!(
            "\n\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             SKIPPED: chromium not installed (/usr/bin/chromium); the dashboard browser test\n\
             did NOT run. Install it with: apt-get install -y chromium (.ci/run does this).\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return;
    };
    let (proxy, a, b) = tripped().await;
    let dom = dump_dom(&browser, &proxy.admin_url("/")).await;

    let errors = dom
        .split("<pre id=\"errors\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap_or_else(|| panic!("no #errors element in the DOM:\n{dom}"));
    assert!(errors.is_empty(), "errors on the page: {errors}");
    assert!(
        dom.contains("● live"),
        "the page never read /status:\n{dom}"
    );
    let card = dom
        .split("<section class=\"upstream\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no upstream card rendered:\n{dom}"));
    let card = &card[..card.find("</section>").unwrap()];
    assert!(card.contains("data-upstream=\"app\""), "{card}");
    assert!(card.contains("data-state=\"open\""), "{card}");
    assert!(card.contains(">OPEN<"), "{card}");
    assert!(card.contains("&gt;= 50%"), "the reason is shown: {card}");
    assert!(card.contains("half-open in"), "{card}");
    assert!(card.contains("<svg class=\"spark\""), "{card}");
    for origin in [&a, &b] {
        assert!(
            card.contains(&format!("data-endpoint=\"{}\"", origin.addr)),
            "endpoint {} listed: {card}",
            origin.addr
        );
    }
    assert!(dom.contains("data-route=\"app\""), "route listed:\n{dom}");
    assert!(dom.contains(">v1<"), "config version shown:\n{dom}");
}
