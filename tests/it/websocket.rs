//! WebSocket through levee with a third-party client and server (tokio-tungstenite): echo of
//! text and binary messages, and the route's `tunnel_idle_timeout`.

use crate::support::proxy::{simple_config, TestProxy};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A tokio-tungstenite server that echoes every text and binary message.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn connect(proxy: &TestProxy) -> Ws {
    let url = format!("ws://{}/chat", proxy.addr);
    let (ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("WebSocket handshake through levee");
    assert_eq!(resp.status(), 101);
    ws
}

/// The next data message, within a bound that fails the test instead of hanging it.
async fn next_message(ws: &mut Ws) -> Message {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no message within 10s")
            .expect("the tunnel closed")
            .expect("WebSocket error");
        if msg.is_text() || msg.is_binary() {
            return msg;
        }
    }
}

#[tokio::test]
async fn text_and_binary_messages_echo_through_levee() {
    let origin = echo_server().await;
    let proxy = TestProxy::start(&simple_config(&[origin], "", "")).await;
    let mut ws = connect(&proxy).await;
    ws.send(Message::text("hello levee")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("hello levee"));
    let blob: Vec<u8> = (0..=255u8).cycle().take(1024 * 1024).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::binary(blob));
    // The server's library answers a ping itself.
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no pong within 10s")
            .expect("the tunnel closed")
            .unwrap();
        if let Message::Pong(payload) = msg {
            assert_eq!(&payload[..], b"are you there");
            break;
        }
    }
    // A close handshake goes both ways through the tunnel.
    ws.close(None).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                return true;
            }
        }
        false
    })
    .await
    .expect("no close within 10s");
    assert!(end, "the server's close frame did not come back");
}

#[tokio::test]
async fn a_tunnel_silent_both_ways_is_closed_after_tunnel_idle_timeout() {
    let origin = echo_server().await;
    let config = simple_config(&[origin], "tunnel_idle_timeout = \"300ms\"", "");
    let proxy = TestProxy::start(&config).await;
    let mut ws = connect(&proxy).await;
    ws.send(Message::text("up")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("up"));
    // Now silence: levee closes both connections, which the client sees as the end.
    let end = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the silent tunnel was still open after 10s");
    assert!(
        !matches!(end, Some(Ok(ref m)) if m.is_text() || m.is_binary()),
        "{end:?}"
    );
}

#[tokio::test]
async fn a_tunnel_with_traffic_more_often_than_the_idle_timeout_stays_open() {
    let origin = echo_server().await;
    let config = simple_config(&[origin], "tunnel_idle_timeout = \"300ms\"", "");
    let proxy = TestProxy::start(&config).await;
    let mut ws = connect(&proxy).await;
    // 30 exchanges 50ms apart: five times the idle timeout in all, never a gap near it.
    for i in 0..30 {
        let text = format!("tick {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(next_message(&mut ws).await, Message::text(text));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ws.close(None).await.unwrap();
}
