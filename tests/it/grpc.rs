//! gRPC through levee with a real gRPC client and server (tonic + prost): unary, streaming,
//! statuses and deadlines pass end to end; levee's own answers are gRPC answers; breakers count
//! `grpc-status` failures, even when they arrive in trailers. Plus a strict HTTP/2 origin (the
//! h2 crate) that refuses a `host` header that disagrees with `:authority`.

use crate::support::grpc::{
    bare_client, call_stream, call_unary, client, levee_error, ping, start_server, GrpcServer,
};
use crate::support::scrape::get_json;
use crate::support::{eventually, Client, TestProxy};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

fn h2_config(endpoints: &[SocketAddr], route_extra: &str, breaker: &str) -> String {
    crate::support::proxy::simple_config(
        endpoints,
        route_extra,
        &format!("protocol = \"h2\"\n{breaker}"),
    )
}

async fn grpc_proxy(route_extra: &str, breaker: &str) -> (GrpcServer, TestProxy) {
    let server = start_server().await;
    let proxy = TestProxy::start(&h2_config(&[server.addr], route_extra, breaker)).await;
    (server, proxy)
}

fn breaker_state(status: &serde_json::Value, name: &str) -> String {
    status["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .map(|u| u["breaker"]["state"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn unary_calls_pass_with_te_trailers_and_the_clients_authority() {
    let (server, proxy) = grpc_proxy("", "").await;
    let mut grpc = client(proxy.addr, Some("grpc.example.com")).await;
    for i in 1..=3 {
        let resp = call_unary(&mut grpc, tonic::Request::new(ping("hello")))
            .await
            .expect("unary call through levee");
        assert_eq!(resp.get_ref().text, "hello back");
        assert_eq!(resp.get_ref().n, i);
    }
    let seen = server.state.seen.lock().clone();
    assert_eq!(seen.len(), 3);
    for (authority, host, te) in seen {
        assert_eq!(
            authority, "grpc.example.com",
            ":authority is the client's host"
        );
        assert_eq!(host, None, "no second host header");
        assert_eq!(te.as_deref(), Some("trailers"));
    }
    assert_eq!(
        server.state.connections.load(Ordering::SeqCst),
        1,
        "calls share one pooled HTTP/2 connection"
    );
}

#[tokio::test]
async fn an_error_status_with_details_and_metadata_passes_through() {
    let (_server, proxy) = grpc_proxy("", "").await;
    let mut grpc = client(proxy.addr, None).await;
    let status = call_unary(&mut grpc, tonic::Request::new(ping("fail")))
        .await
        .expect_err("the handler fails");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "bad ping");
    assert_eq!(status.details(), b"\x08\x01details");
    assert_eq!(
        status.metadata().get("x-detail").unwrap(),
        "from-the-handler"
    );
    assert_eq!(
        levee_error(&status),
        "",
        "the upstream's answer, not levee's"
    );
}

#[tokio::test]
async fn streamed_messages_arrive_as_sent() {
    let (server, proxy) = grpc_proxy("", "").await;
    let mut grpc = client(proxy.addr, None).await;
    let mut stream = call_stream(&mut grpc, tonic::Request::new(ping("paced")))
        .await
        .expect("stream starts")
        .into_inner();
    // Each message must arrive before the server is allowed to send the next one: a buffering
    // proxy would hold the first until the end and this would wait forever.
    for n in 1..=3 {
        let msg = tokio::time::timeout(WAIT, stream.message())
            .await
            .unwrap_or_else(|_| panic!("message {n} did not arrive before the next was released"))
            .expect("a message")
            .expect("not the end");
        assert_eq!(msg.n, n);
        server.state.release.notify_one();
    }
    let end = tokio::time::timeout(WAIT, stream.message()).await.unwrap();
    assert!(
        matches!(end, Ok(None)),
        "OK status in the trailers: {end:?}"
    );
    let trailers = stream.trailers().await.unwrap();
    assert!(
        trailers.is_none()
            || trailers
                .unwrap()
                .get("grpc-status")
                .is_none_or(|s| s == "0")
    );
}

#[tokio::test]
async fn a_deadline_before_the_answer_cancels_the_upstream_call() {
    let (server, proxy) = grpc_proxy("", "").await;
    // tonic's Channel would enforce the deadline itself; this client leaves it to levee.
    let mut grpc = bare_client(proxy.addr).await;
    let mut req = tonic::Request::new(ping("hang"));
    req.set_timeout(Duration::from_millis(200));
    let status = tokio::time::timeout(WAIT, call_unary(&mut grpc, req))
        .await
        .expect("levee enforces the client's deadline (the route timeout is 30s)")
        .expect_err("no answer in time");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(levee_error(&status), "upstream_timeout");
    eventually("the upstream handler is cancelled", WAIT, || async {
        server.state.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn a_deadline_mid_stream_ends_the_stream_and_the_upstream_call() {
    let (server, proxy) = grpc_proxy("", "").await;
    let mut grpc = client(proxy.addr, None).await;
    let mut req = tonic::Request::new(ping("hang"));
    req.set_timeout(Duration::from_millis(300));
    let mut stream = call_stream(&mut grpc, req).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.n, 1);
    let status = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("levee ends the stream at the client's deadline")
        .expect_err("DEADLINE_EXCEEDED");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    eventually("the upstream stream is cancelled", WAIT, || async {
        server.state.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn a_dead_endpoint_is_unavailable() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = TestProxy::start(&h2_config(&[dead], "", "")).await;
    let mut grpc = client(proxy.addr, None).await;
    let status = call_unary(&mut grpc, tonic::Request::new(ping("hello")))
        .await
        .expect_err("nobody listens");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(levee_error(&status), "upstream_connect");
}

#[tokio::test]
async fn a_rate_limited_call_is_resource_exhausted_with_retry_after() {
    let (_server, proxy) = grpc_proxy("[route.rate_limit]\nrps = 1\nburst = 1\n", "").await;
    let mut grpc = client(proxy.addr, None).await;
    call_unary(&mut grpc, tonic::Request::new(ping("hello")))
        .await
        .expect("within the burst");
    let status = call_unary(&mut grpc, tonic::Request::new(ping("hello")))
        .await
        .expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(levee_error(&status), "rate_limited");
    assert!(status.metadata().get("retry-after").is_some());
}

#[tokio::test]
async fn grpc_status_14_in_trailers_trips_the_breaker() {
    let (server, proxy) = grpc_proxy(
        "",
        "[upstream.circuit_breaker]\nconsecutive_failures = 3\nopen_duration = \"60s\"\n",
    )
    .await;
    let mut grpc = client(proxy.addr, None).await;
    // Successful streams are successes, not failures nobody judged.
    for _ in 0..2 {
        let mut s = call_stream(&mut grpc, tonic::Request::new(ping("many:2")))
            .await
            .unwrap()
            .into_inner();
        while s.message().await.unwrap().is_some() {}
    }
    for i in 1..=3 {
        let mut s = call_stream(&mut grpc, tonic::Request::new(ping("unavailable")))
            .await
            .expect("the stream starts with HTTP 200")
            .into_inner();
        assert_eq!(s.message().await.unwrap().unwrap().n, 1);
        let status = s.message().await.expect_err("UNAVAILABLE in the trailers");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(levee_error(&status), "", "the handler's status");
        if i < 3 {
            let status = get_json(&proxy.admin_url("/status")).await;
            assert_eq!(
                breaker_state(&status, "app"),
                "closed",
                "after {i} failures"
            );
        }
    }
    eventually("the breaker opens", WAIT, || async {
        breaker_state(&get_json(&proxy.admin_url("/status")).await, "app") == "open"
    })
    .await;
    // Outlier detection saw the same verdicts: 2 successes, 3 failures, all from trailers.
    let status = get_json(&proxy.admin_url("/status")).await;
    let endpoint = &status["upstreams"][0]["endpoints"][0];
    assert_eq!(endpoint["requests"], 5, "{endpoint}");
    assert_eq!(endpoint["failures"], 3, "{endpoint}");
    let calls = server.state.calls.load(Ordering::SeqCst);
    let status = call_unary(&mut grpc, tonic::Request::new(ping("hello")))
        .await
        .expect_err("the breaker is open");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(levee_error(&status), "circuit_open");
    assert!(status.metadata().get("retry-after").is_some());
    assert_eq!(
        server.state.calls.load(Ordering::SeqCst),
        calls,
        "nothing forwarded"
    );
}

#[tokio::test]
async fn a_half_open_trial_stream_holds_its_slot_until_its_trailers() {
    let (server, proxy) = grpc_proxy(
        "",
        "[upstream.circuit_breaker]\nconsecutive_failures = 1\nopen_duration = \"200ms\"\nhalf_open_calls = 1\n",
    )
    .await;
    let mut grpc = client(proxy.addr, None).await;
    let mut s = call_stream(&mut grpc, tonic::Request::new(ping("unavailable")))
        .await
        .unwrap()
        .into_inner();
    while s.message().await.is_ok_and(|m| m.is_some()) {}
    assert_eq!(
        breaker_state(&get_json(&proxy.admin_url("/status")).await, "app"),
        "open"
    );
    // Once the open time is over, the first call is the one half-open trial.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut trial = loop {
        match call_stream(&mut grpc, tonic::Request::new(ping("paced"))).await {
            Ok(s) => break s.into_inner(),
            Err(status) => assert_eq!(levee_error(&status), "circuit_open", "{status:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "never half-open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(trial.message().await.unwrap().unwrap().n, 1);
    assert_eq!(
        breaker_state(&get_json(&proxy.admin_url("/status")).await, "app"),
        "half_open"
    );
    // The trial has its head but not its trailers: its slot is still taken.
    let status = call_unary(&mut grpc, tonic::Request::new(ping("hello")))
        .await
        .expect_err("the only trial slot is in use");
    assert_eq!(levee_error(&status), "circuit_open", "{status:?}");
    for n in 2..=3 {
        server.state.release.notify_one();
        assert_eq!(trial.message().await.unwrap().unwrap().n, n);
    }
    assert!(
        trial.message().await.unwrap().is_none(),
        "OK in the trailers"
    );
    eventually("the successful trial closes the breaker", WAIT, || async {
        breaker_state(&get_json(&proxy.admin_url("/status")).await, "app") == "closed"
    })
    .await;
    call_unary(&mut grpc, tonic::Request::new(ping("hello")))
        .await
        .expect("closed again");
}

#[tokio::test]
async fn no_route_is_unimplemented() {
    let server = start_server().await;
    let cfg = h2_config(&[server.addr], "host = \"only.example\"", "");
    let proxy = TestProxy::start(&cfg).await;
    let mut grpc = client(proxy.addr, Some("other.example")).await;
    let status = call_unary(&mut grpc, tonic::Request::new(ping("hello")))
        .await
        .expect_err("no route for this host");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert_eq!(levee_error(&status), "no_route");
}

#[tokio::test]
async fn a_trailers_only_failure_counts_and_others_do_not() {
    // INVALID_ARGUMENT is the caller's fault: not in failure_grpc_statuses; UNAVAILABLE is.
    let (_server, proxy) = grpc_proxy(
        "",
        "[upstream.circuit_breaker]\nconsecutive_failures = 2\nopen_duration = \"60s\"\nfailure_grpc_statuses = [\"UNAVAILABLE\"]\n",
    )
    .await;
    let mut grpc = client(proxy.addr, None).await;
    for _ in 0..3 {
        let status = call_unary(&mut grpc, tonic::Request::new(ping("fail")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    let status = get_json(&proxy.admin_url("/status")).await;
    assert_eq!(breaker_state(&status, "app"), "closed");
    for _ in 0..2 {
        let status = call_unary(&mut grpc, tonic::Request::new(ping("unavailable")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(levee_error(&status), "");
    }
    let status = get_json(&proxy.admin_url("/status")).await;
    assert_eq!(breaker_state(&status, "app"), "open");
}

/// An HTTP/2 origin as strict as hypercorn: a `host` header that disagrees with `:authority`
/// gets 400; otherwise 200 with what it saw in `x-seen-authority` / `x-seen-host`.
async fn strict_h2_origin() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(sock).await else {
                    return;
                };
                while let Some(Ok((mut req, mut respond))) = conn.accept().await {
                    // Each stream in its own task: h2 moves frames only while `accept` is
                    // polled, so reading a body inline would stall when its frames come late.
                    tokio::spawn(async move {
                        let authority = req.uri().authority().map(|a| a.to_string());
                        let host = req
                            .headers()
                            .get("host")
                            .map(|h| h.to_str().unwrap_or("?").to_string());
                        let agrees = match (&authority, &host) {
                            (Some(a), Some(h)) => a == h,
                            _ => true,
                        };
                        let resp = http::Response::builder()
                            .status(if agrees { 200 } else { 400 })
                            .header("x-seen-authority", authority.unwrap_or_default())
                            .header("x-seen-host", host.unwrap_or_default())
                            .body(())
                            .unwrap();
                        // A POST's body and trailers are read, and its trailers sent back as the
                        // response's trailers.
                        let mut received = 0;
                        let mut trailers = None;
                        if req.method() == http::Method::POST {
                            let body = req.body_mut();
                            while let Some(Ok(chunk)) = body.data().await {
                                received += chunk.len();
                                let _ = body.flow_control().release_capacity(chunk.len());
                            }
                            trailers = body.trailers().await.ok().flatten();
                        }
                        let Ok(mut send) = respond.send_response(resp, false) else {
                            return;
                        };
                        let body = if !agrees {
                            "host != :authority".to_string()
                        } else if trailers.is_some() {
                            format!("{received} bytes")
                        } else {
                            "ok".to_string()
                        };
                        match trailers {
                            Some(t) => {
                                let _ = send.send_data(Bytes::from(body), false);
                                let _ = send.send_trailers(t);
                            }
                            None => {
                                let _ = send.send_data(Bytes::from(body), true);
                            }
                        }
                    });
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_strict_http2_upstream_sees_the_clients_host_as_authority() {
    let origin = strict_h2_origin().await;
    let proxy = TestProxy::start(&h2_config(&[origin], "", "")).await;
    // HTTP/1.1 client: its Host header becomes the upstream's :authority.
    let r = Client::new()
        .request(
            http::Method::GET,
            &proxy.url("/x"),
            &[("host", "strict.example:8443")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["x-seen-authority"], "strict.example:8443");
    assert_eq!(r.headers["x-seen-host"], "");
    // HTTP/2 client: its :authority is passed on.
    let r = Client::h2().get(&proxy.url("/y")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["x-seen-authority"], proxy.addr.to_string());
    assert_eq!(r.headers["x-seen-host"], "");
}

#[tokio::test]
async fn request_and_response_trailers_pass_through_with_the_h2_crate() {
    let origin = strict_h2_origin().await;
    let proxy = TestProxy::start(&h2_config(&[origin], "", "")).await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{}/upload", proxy.addr))
        .body(())
        .unwrap();
    let (resp, mut send) = h2.send_request(req, false).unwrap();
    send.send_data(Bytes::from_static(b"hello"), false).unwrap();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "abc123".parse().unwrap());
    send.send_trailers(trailers).unwrap();
    let resp = tokio::time::timeout(WAIT, resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        text.extend_from_slice(&chunk);
    }
    assert_eq!(text, b"5 bytes");
    let trailers = body.trailers().await.unwrap().expect("response trailers");
    assert_eq!(
        trailers["x-checksum"], "abc123",
        "the request's trailers, echoed"
    );
}

/// Calls per second for `calls` sequential unary calls on one channel.
async fn unary_rate(addr: SocketAddr, calls: u32) -> f64 {
    let mut grpc = client(addr, None).await;
    call_unary(&mut grpc, tonic::Request::new(ping("warm")))
        .await
        .unwrap();
    let t = tokio::time::Instant::now();
    for _ in 0..calls {
        call_unary(&mut grpc, tonic::Request::new(ping("hi")))
            .await
            .unwrap();
    }
    f64::from(calls) / t.elapsed().as_secs_f64()
}

/// Calls per second for `tasks` concurrent loops of `calls` unary calls on one channel.
async fn concurrent_unary_rate(addr: SocketAddr, tasks: u32, calls: u32) -> f64 {
    let grpc = client(addr, None).await;
    let t = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let mut grpc = grpc.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..calls {
                call_unary(&mut grpc, tonic::Request::new(ping("hi")))
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    f64::from(tasks * calls) / t.elapsed().as_secs_f64()
}

/// Messages per second of one server stream of `n` messages.
async fn stream_rate(addr: SocketAddr, n: u32) -> f64 {
    let mut grpc = client(addr, None).await;
    let t = tokio::time::Instant::now();
    let mut s = call_stream(&mut grpc, tonic::Request::new(ping(&format!("many:{n}"))))
        .await
        .unwrap()
        .into_inner();
    let mut got = 0;
    while s.message().await.unwrap().is_some() {
        got += 1;
    }
    assert_eq!(got, n);
    f64::from(n) / t.elapsed().as_secs_f64()
}

/// gRPC throughput through levee against a direct connection. Not a pass/fail test: run with
/// `cargo test --release --test it grpc::throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    let (server, proxy) = grpc_proxy("", "").await;
    for (name, direct, via) in [
        (
            "unary, sequential (calls/s)",
            unary_rate(server.addr, 3000).await,
            unary_rate(proxy.addr, 3000).await,
        ),
        (
            "unary, 16 concurrent (calls/s)",
            concurrent_unary_rate(server.addr, 16, 500).await,
            concurrent_unary_rate(proxy.addr, 16, 500).await,
        ),
        (
            "server stream (messages/s)",
            stream_rate(server.addr, 100_000).await,
            stream_rate(proxy.addr, 100_000).await,
        ),
    ] {
        let connections = server.state.connections.load(Ordering::SeqCst);
        println!("upstream connections so far: {connections}");
        println!(
            "{name:32} direct {direct:>10.0}  through levee {via:>10.0}  ratio {:.2}",
            via / direct
        );
    }
}
