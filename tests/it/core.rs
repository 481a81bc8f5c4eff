//! Forwarding basics: routing, headers, errors the proxy makes itself.

use crate::support::proxy::simple_config;
use crate::support::*;

#[tokio::test]
async fn get_passes_through() {
    let origin = Origin::new().body("hello").start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let r = Client::new().get(&proxy.url("/x?y=1")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello");
    assert_eq!(origin.last().unwrap().path, "/x?y=1");
}

#[tokio::test]
async fn no_route_is_404_with_kind() {
    let origin = Origin::new().start().await;
    let cfg = simple_config(&[origin.addr], "host = \"only.example\"", "");
    let proxy = TestProxy::start(&cfg).await;
    let r = Client::new().get(&proxy.url("/")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_kind(), "no_route");
    assert_eq!(origin.hits(), 0);
}
