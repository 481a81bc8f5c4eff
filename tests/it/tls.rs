//! TLS: listener certificates chosen by SNI, ALPN, reloads that pick up new certificates,
//! `levee check` on broken certificates, and upstreams reached over TLS.

use crate::lifecycle::{replace_file, try_get};
use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A generated certificate and key, written as PEM files.
struct Pem {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

fn gen_cert(dir: &Path, name: &str, not_after: Option<(i32, u8, u8)>) -> Pem {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    if let Some((y, m, d)) = not_after {
        params.not_before = rcgen::date_time_ymd(y - 1, m, d);
        params.not_after = rcgen::date_time_ymd(y, m, d);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let stem = name.replace('.', "_");
    let (cert_path, key_path) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    Pem {
        cert: cert_path,
        key: key_path,
        der: cert.der().clone(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(trust: &[&CertificateDer<'static>], alpn: &[&str]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in trust {
        roots.add((*c).clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config
}

async fn connect(
    addr: SocketAddr,
    sni: &str,
    trust: &[&CertificateDer<'static>],
    alpn: &[&str],
) -> TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(trust, alpn)));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with SNI {sni}: {e}"))
}

fn peer_leaf(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn tls_config(origin: SocketAddr, certs: &[&Pem], admin_extra: &str) -> String {
    let entries: Vec<String> = certs
        .iter()
        .map(|p| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                p.cert.display(),
                p.key.display()
            )
        })
        .collect();
    format!(
        r#"[admin]
bind = "127.0.0.1:0"
drain_timeout = "5s"
{admin_extra}

[[listener]]
name = "main"
bind = "127.0.0.1:0"
tls = {{ certificates = [{}] }}

[[route]]
name = "app"
path_prefix = "/"
upstream = "app"

[[upstream]]
name = "app"
endpoints = ["{origin}"]
"#,
        entries.join(", ")
    )
}

/// One GET over an established TLS stream, HTTP/1.1 or HTTP/2 as ALPN chose.
async fn get_over(stream: TlsStream<TcpStream>, host: &str) -> (u16, String) {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(format!("https://{host}/tls"))
            .body(Full::<Bytes>::default())
            .unwrap();
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/tls")
            .header("host", host)
            .body(Full::<Bytes>::default())
            .unwrap();
        send.send_request(req).await.unwrap()
    };
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn sni_picks_the_certificate_and_alpn_negotiates() {
    let dir = tempfile::tempdir().unwrap();
    let a = gen_cert(dir.path(), "a.test", None);
    let b = gen_cert(dir.path(), "b.test", None);
    let origin = Origin::new().body("hello tls").start().await;
    let proxy = TestProxy::start(&tls_config(origin.addr, &[&a, &b], "")).await;
    let trust = [&a.der, &b.der];

    let s = connect(proxy.addr, "a.test", &trust, &["h2", "http/1.1"]).await;
    assert_eq!(peer_leaf(&s), a.der, "SNI a.test gets the a.test cert");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(get_over(s, "a.test").await, (200, "hello tls".into()));

    let s = connect(proxy.addr, "b.test", &trust, &["http/1.1"]).await;
    assert_eq!(peer_leaf(&s), b.der, "SNI b.test gets the b.test cert");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(get_over(s, "b.test").await, (200, "hello tls".into()));

    let seen = origin.last().unwrap();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert!(origin
        .seen()
        .iter()
        .all(|s| s.headers["x-forwarded-proto"] == "https"));
}

/// HTTP/1.1 over TLS gets the same framing check as plaintext: a request with both
/// Content-Length and Transfer-Encoding is 400 `bad_request` and never forwarded.
#[tokio::test]
async fn content_length_with_chunked_is_refused_over_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let a = gen_cert(dir.path(), "a.test", None);
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&tls_config(origin.addr, &[&a], "")).await;
    let mut s = connect(proxy.addr, "a.test", &[&a.der], &["http/1.1"]).await;
    s.write_all(
        b"POST /both HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("the connection was not closed");
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 400"), "{answer}");
    assert!(answer.contains("x-levee-error: bad_request"), "{answer}");
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn reload_picks_up_replaced_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let a = gen_cert(dir.path(), "a.test", None);
    let origin = Origin::new().start().await;
    let cfg = tls_config(origin.addr, &[&a], "");
    let proxy = TestProxy::start(&cfg).await;
    let s = connect(proxy.addr, "a.test", &[&a.der], &["http/1.1"]).await;
    assert_eq!(peer_leaf(&s), a.der);

    // New certificate and key at the same paths, same config text: a reload serves the new one.
    let newdir = tempfile::tempdir().unwrap();
    let a2 = gen_cert(newdir.path(), "a.test", None);
    std::fs::copy(&a2.cert, &a.cert).unwrap();
    std::fs::copy(&a2.key, &a.key).unwrap();
    proxy.levee.reload().await.unwrap();
    let s = connect(proxy.addr, "a.test", &[&a2.der], &["http/1.1"]).await;
    assert_eq!(peer_leaf(&s), a2.der, "the reloaded certificate is served");
}

#[tokio::test]
async fn watch_reloads_when_a_certificate_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let a = gen_cert(&certs, "a.test", None);
    let origin = Origin::new().start().await;
    // The config lives in another directory than the certificates: both are watched.
    let proxy = TestProxy::start(&tls_config(origin.addr, &[&a], "watch = true")).await;
    assert!(proxy.running.is_watching());
    let s = connect(proxy.addr, "a.test", &[&a.der], &["http/1.1"]).await;
    assert_eq!(peer_leaf(&s), a.der);

    let newdir = tempfile::tempdir().unwrap();
    let a2 = gen_cert(newdir.path(), "a.test", None);
    // Key first, then the cert: the debounce makes one reload that sees both.
    replace_file(&a.key, &std::fs::read_to_string(&a2.key).unwrap());
    replace_file(&a.cert, &std::fs::read_to_string(&a2.cert).unwrap());
    let addr = proxy.addr;
    let want = a2.der.clone();
    eventually(
        "the new certificate is served",
        Duration::from_secs(15),
        || {
            let (want, trust) = (want.clone(), a2.der.clone());
            async move {
                let connector =
                    tokio_rustls::TlsConnector::from(Arc::new(client_config(&[&trust], &[])));
                let tcp = TcpStream::connect(addr).await.unwrap();
                match connector
                    .connect(ServerName::try_from("a.test").unwrap(), tcp)
                    .await
                {
                    Ok(s) => peer_leaf(&s) == want,
                    Err(_) => false,
                }
            }
        },
    )
    .await;
}

fn check(config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_levee"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_reports_a_key_that_does_not_match_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let a = gen_cert(dir.path(), "a.test", None);
    let b = gen_cert(dir.path(), "b.test", None);
    let wrong = Pem {
        cert: a.cert.clone(),
        key: b.key.clone(),
        der: a.der.clone(),
    };
    let path = dir.path().join("levee.toml");
    let text = tls_config("127.0.0.1:9".parse().unwrap(), &[&wrong], "");
    std::fs::write(&path, &text).unwrap();
    let (code, out) = check(&path);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not match"), "{out}");
    assert!(out.contains(&a.cert.display().to_string()), "{out}");
    assert!(out.contains(&b.key.display().to_string()), "{out}");
    // Pointed at the certificate entry: FILE:LINE:COL of the `{ cert = ..., key = ... }` table.
    let line = text.lines().position(|l| l.starts_with("tls = ")).unwrap() + 1;
    assert!(
        out.contains(&format!("{}:{line}:", path.display())),
        "{out}"
    );
}

#[test]
fn check_reports_a_missing_certificate_file_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let a = gen_cert(dir.path(), "a.test", None);
    let missing = Pem {
        cert: dir.path().join("nope.crt"),
        key: a.key.clone(),
        der: a.der.clone(),
    };
    let path = dir.path().join("levee.toml");
    let text = tls_config("127.0.0.1:9".parse().unwrap(), &[&missing], "");
    std::fs::write(&path, &text).unwrap();
    let (code, out) = check(&path);
    assert_eq!(code, 1, "{out}");
    let line = text.lines().position(|l| l.starts_with("tls = ")).unwrap() + 1;
    let col = text.lines().nth(line - 1).unwrap().find("\"").unwrap() + 1;
    let want = format!("{}:{line}:{col}: ", path.display());
    let problem = out
        .lines()
        .find(|l| l.starts_with(&want))
        .unwrap_or_else(|| panic!("no line starting {want}: {out}"));
    assert!(problem.contains("nope.crt"), "{problem}");
}

#[test]
fn check_warns_about_an_expired_certificate_but_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let old = gen_cert(dir.path(), "old.test", Some((2021, 6, 1)));
    let path = dir.path().join("levee.toml");
    std::fs::write(
        &path,
        tls_config("127.0.0.1:9".parse().unwrap(), &[&old], ""),
    )
    .unwrap();
    let (code, out) = check(&path);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("expired on 2021-06-01"), "{out}");
    assert!(out.contains(&old.cert.display().to_string()), "{out}");
}

/// A tiny HTTPS origin: tokio-rustls + hyper, answering "secure" to everything.
async fn tls_origin(cert: &Pem) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let certs = vec![cert.der.clone()];
    let key_pem = std::fs::read(&cert.key).unwrap();
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .unwrap()
        .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"secure"),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn upstream_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let origin_cert = gen_cert(dir.path(), "origin.test", None);
    let (addr, _task) = tls_origin(&origin_cert).await;
    let config = format!(
        r#"[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
name = "app"
path_prefix = "/"
upstream = "secure"

[[upstream]]
name = "secure"
endpoints = ["{addr}"]
tls = {{ ca = "{}", server_name = "origin.test" }}
"#,
        origin_cert.cert.display()
    );
    let proxy = TestProxy::start(&config).await;
    let r = Client::new().get(&proxy.url("/")).await;
    assert_eq!(r.status, 200, "{} {}", r.error_kind(), r.text());
    assert_eq!(r.text(), "secure");

    // The wrong server name fails verification: levee refuses to talk to it.
    let wrong = config.replace("origin.test", "other.test");
    proxy.reload(&wrong).await.unwrap();
    let r = try_get(&proxy.url("/")).await.unwrap();
    assert_eq!(r.0, 502, "{r:?}");
}

#[test]
fn check_reports_an_upstream_ca_without_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let a = gen_cert(dir.path(), "a.test", None);
    let path = dir.path().join("levee.toml");
    let text = format!(
        r#"[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
name = "app"
upstream = "secure"

[[upstream]]
name = "secure"
endpoints = ["127.0.0.1:9"]
tls = {{ ca = "{}" }}
"#,
        a.key.display()
    );
    std::fs::write(&path, &text).unwrap();
    let (code, out) = check(&path);
    assert_eq!(code, 1, "{out}");
    let line = text.lines().position(|l| l.starts_with("tls = ")).unwrap() + 1;
    assert!(
        out.contains(&format!("{}:{line}:7: tls.ca:", path.display())),
        "{out}"
    );
    assert!(out.contains("holds no PEM certificate"), "{out}");
}
