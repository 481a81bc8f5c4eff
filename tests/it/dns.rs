//! DNS service discovery against a DNS server the test runs on loopback UDP: addresses added
//! and removed there appear in and leave `/status` while traffic flows with no failed request,
//! an address that stays keeps its state, and a failing DNS server keeps the last set.

use crate::support::scrape::get_json;
use crate::support::*;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `dns_refresh` of the tests; "within two refreshes" is two of these, plus room for a loaded
/// machine in `eventually` (which only bounds a wait).
const REFRESH: Duration = Duration::from_secs(1);
const WITHIN: Duration = Duration::from_secs(15);

/// A DNS server answering every A query with `answer`'s addresses (SERVFAIL while it is
/// `None`) and every other query with no records.
struct TestDns {
    addr: std::net::SocketAddr,
    answer: Arc<Mutex<Option<Vec<Ipv4Addr>>>>,
    queries: Arc<AtomicUsize>,
}

impl TestDns {
    async fn start(first: &[Ipv4Addr]) -> TestDns {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(Some(first.to_vec())));
        let queries = Arc::new(AtomicUsize::new(0));
        let (a, q) = (answer.clone(), queries.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                q.fetch_add(1, Ordering::SeqCst);
                let mut resp = Message::new();
                resp.set_id(req.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(req.op_code())
                    .set_recursion_desired(req.recursion_desired())
                    .set_recursion_available(true);
                for query in req.queries() {
                    resp.add_query(query.clone());
                }
                let current = a.lock().unwrap().clone();
                match current {
                    None => {
                        resp.set_response_code(ResponseCode::ServFail);
                    }
                    Some(ips) => {
                        resp.set_response_code(ResponseCode::NoError);
                        for query in req.queries() {
                            if query.query_type() == RecordType::A {
                                for ip in &ips {
                                    resp.add_answer(Record::from_rdata(
                                        query.name().clone(),
                                        0,
                                        RData::A(A(*ip)),
                                    ));
                                }
                            }
                        }
                    }
                }
                if let Ok(bytes) = resp.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        TestDns {
            addr,
            answer,
            queries,
        }
    }

    fn answer(&self, ips: Option<&[Ipv4Addr]>) {
        *self.answer.lock().unwrap() = ips.map(|i| i.to_vec());
    }
}

const ONE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const TWO: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const THREE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

fn config(dns: std::net::SocketAddr, port: u16) -> String {
    format!(
        r#"[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
name = "app"
path_prefix = "/"
upstream = "app"

[[upstream]]
name = "app"
endpoints = ["app.levee.test:{port}"]
dns_refresh = "{}s"

[dns]
nameservers = ["{dns}"]
"#,
        REFRESH.as_secs()
    )
}

async fn endpoints(proxy: &TestProxy) -> Vec<(String, u64)> {
    let status = get_json(&proxy.admin_url("/status")).await;
    let app = status["upstreams"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == "app"))
        .unwrap_or_else(|| panic!("no upstream app in {status}"))
        .clone();
    let mut v: Vec<(String, u64)> = app["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["address"].as_str().unwrap().to_string(),
                e["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

async fn wait_for(proxy: &TestProxy, what: &str, want: &[String]) {
    eventually(what, WITHIN, || async {
        let now: Vec<String> = endpoints(proxy).await.into_iter().map(|e| e.0).collect();
        now == want
    })
    .await;
}

/// Sends requests until stopped; counts them and the ones that did not get a 200.
fn traffic(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let client = Client::new();
        let (mut sent, mut failed) = (0, Vec::new());
        while !stop.load(Ordering::SeqCst) {
            let r = client.get(&url).await;
            sent += 1;
            if r.status != 200 {
                failed.push(format!("{} {}", r.status, r.text()));
            }
        }
        (sent, failed)
    })
}

#[tokio::test]
async fn addresses_follow_the_dns_answer_while_traffic_flows() {
    let one = Origin::new().body("one").start().await;
    let port = one.addr.port();
    let Ok(two) = tokio::net::TcpListener::bind((TWO, port)).await else {
        eprintln!("skipped: 127.0.0.2 is not usable on this machine");
        return;
    };
    drop(two);
    let two = Origin::new()
        .body("two")
        .start_on(&format!("{TWO}:{port}"))
        .await;
    let dns = TestDns::start(&[ONE]).await;
    let proxy = TestProxy::start(&config(dns.addr, port)).await;
    let addr = |ip: Ipv4Addr| format!("{ip}:{port}");

    wait_for(&proxy, "the name resolved to 127.0.0.1", &[addr(ONE)]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(proxy.url("/"), stop.clone());

    dns.answer(Some(&[ONE, TWO]));
    wait_for(&proxy, "127.0.0.2 added", &[addr(ONE), addr(TWO)]).await;
    eventually("127.0.0.2 gets traffic", WITHIN, || async {
        two.hits() > 0
    })
    .await;

    dns.answer(Some(&[TWO]));
    wait_for(&proxy, "127.0.0.1 removed", &[addr(TWO)]).await;
    let hits_one = one.hits();
    eventually("traffic goes on to 127.0.0.2", WITHIN, || async {
        two.hits() > 10
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let (sent, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {failed:?}",
        failed.len()
    );
    assert!(sent > 10, "traffic flowed: {sent}");
    assert_eq!(one.hits(), hits_one, "nothing goes to a removed address");

    // With traffic stopped, an address that stays keeps its counters across a refresh that
    // adds another (a rebuilt endpoint would start again at 0).
    let before = endpoints(&proxy).await;
    let kept = before[0].1;
    assert!(kept > 0, "{before:?}");
    dns.answer(Some(&[TWO, THREE]));
    wait_for(&proxy, "127.0.0.3 added", &[addr(TWO), addr(THREE)]).await;
    let after = endpoints(&proxy).await;
    assert_eq!(after[0], (addr(TWO), kept), "{after:?}");
    assert_eq!(after[1], (addr(THREE), 0), "{after:?}");
}

#[tokio::test]
async fn a_failing_dns_server_keeps_the_last_set() {
    let one = Origin::new().body("one").start().await;
    let port = one.addr.port();
    let dns = TestDns::start(&[ONE]).await;
    let proxy = TestProxy::start(&config(dns.addr, port)).await;
    let want = [format!("{ONE}:{port}")];
    wait_for(&proxy, "the name resolved", &want).await;

    dns.answer(None);
    let asked = dns.queries.load(Ordering::SeqCst);
    eventually("levee asks again (and fails)", WITHIN, || async {
        dns.queries.load(Ordering::SeqCst) >= asked + 3
    })
    .await;
    let now: Vec<String> = endpoints(&proxy).await.into_iter().map(|e| e.0).collect();
    assert_eq!(now, want, "a failed lookup keeps the last good set");
    let r = Client::new().get(&proxy.url("/")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "one");
}
