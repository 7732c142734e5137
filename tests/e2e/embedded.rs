//! Midge embedded in a Rust program, exactly as the README shows: built with
//! `Server::builder()`, port 0, used through async-nats, and stopped with
//! `shutdown().await`. Also proves that a graceful shutdown flushes what clients still
//! have pending: a raw subscriber that had not read anything yet receives every message
//! published before shutdown was called, then EOF.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// The README's embedding example, with its `println!` turned into assertions.
#[tokio::test]
async fn readme_embedding_example() {
    let run = async {
        // Port 0 picks a free port.
        let server = midge::Server::builder()
            .host([127, 0, 0, 1])
            .port(0)
            .start()
            .await?;
        assert_ne!(server.client_addr().port(), 0, "the real port is reported");
        assert!(server.client_url().starts_with("nats://127.0.0.1:"));
        let client = async_nats::connect(server.client_url()).await?;
        let mut sub = client.subscribe("greet.*").await?;
        client.publish("greet.joe", "hello".into()).await?;
        let msg = futures::StreamExt::next(&mut sub).await;
        assert_eq!(msg.map(|m| m.payload), Some(Bytes::from_static(b"hello")));
        server.shutdown().await; // flushes what clients still have pending, then closes
        Ok::<(), Box<dyn std::error::Error>>(())
    };
    timeout(WAIT, run)
        .await
        .expect("example finishes in time")
        .expect("example runs");
}

/// Frames one raw subscriber received: message payloads (server PINGs are skipped).
fn parse_msgs(mut buf: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut payloads = Vec::new();
    while !buf.is_empty() {
        let line_end = buf
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| format!("unterminated line after {} messages", payloads.len()))?;
        let line = std::str::from_utf8(&buf[..line_end]).map_err(|e| e.to_string())?;
        buf = &buf[line_end + 2..];
        if line == "PING" {
            continue;
        }
        let size: usize = match line.split(' ').collect::<Vec<_>>().as_slice() {
            ["MSG", _subject, _sid, size] => {
                size.parse().map_err(|_| format!("bad size in {line:?}"))?
            }
            _ => return Err(format!("unexpected line {line:?}")),
        };
        if buf.len() < size + 2 || &buf[size..size + 2] != b"\r\n" {
            return Err(format!(
                "truncated payload after {} messages",
                payloads.len()
            ));
        }
        payloads.push(buf[..size].to_vec());
        buf = &buf[size + 2..];
    }
    Ok(payloads)
}

async fn read_line(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() > 64 * 1024 {
            return Err(std::io::Error::other("line too long"));
        }
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed mid-line",
            ));
        }
        line.push(byte[0]);
    }
    Ok(line)
}

#[tokio::test]
async fn graceful_shutdown_flushes_pending_messages_then_closes() {
    const N: usize = 2000;
    const SIZE: usize = 1024;
    let server = midge::Server::builder()
        .host([127, 0, 0, 1])
        .port(0)
        .start()
        .await
        .expect("start");

    // A raw subscriber with a small receive buffer, so that most of what follows is still
    // pending inside midge when shutdown is called.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut raw = timeout(WAIT, socket.connect(server.client_addr()))
        .await
        .expect("connect in time")
        .expect("connect");
    let info = timeout(WAIT, read_line(&mut raw))
        .await
        .expect("INFO in time")
        .expect("INFO");
    assert!(info.starts_with(b"INFO {"));
    raw.write_all(b"CONNECT {\"verbose\":false}\r\nSUB flush.me 1\r\nPING\r\n")
        .await
        .expect("write");
    let pong = timeout(WAIT, read_line(&mut raw))
        .await
        .expect("PONG in time")
        .expect("PONG");
    assert_eq!(pong, b"PONG\r\n");

    let client = async_nats::connect(server.client_url())
        .await
        .expect("connect");
    for i in 0..N {
        let mut payload = format!("{i:08}").into_bytes();
        payload.resize(SIZE, b'.');
        client
            .publish("flush.me", payload.into())
            .await
            .expect("publish");
    }
    // A round trip (a request nobody answers: the server itself replies "no responders")
    // proves the server has processed, and queued for delivery, every message before it.
    // (`Client::flush` only writes the client's buffer to the socket.)
    let rt = timeout(WAIT, client.request("nobody.listens", Bytes::new()))
        .await
        .expect("round trip in time");
    assert!(
        matches!(&rt, Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders),
        "round trip: {rt:?}"
    );

    // Read concurrently with shutdown: shutdown waits for pending data to be written.
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let read = timeout(WAIT, async {
            let mut chunk = [0u8; 8192];
            loop {
                if buf.len() > 64 << 20 {
                    return Err(std::io::Error::other("far more data than was published"));
                }
                let n = raw.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        (read, buf)
    });
    timeout(WAIT + Duration::from_secs(2), server.shutdown())
        .await
        .expect("shutdown finishes in time");

    let (read, buf) = timeout(WAIT, reader)
        .await
        .expect("reader finishes")
        .expect("reader task");
    read.expect("no deadline hit: EOF came")
        .expect("read until EOF without errors");
    let payloads = parse_msgs(&buf).expect("well-formed MSG frames");
    assert_eq!(
        payloads.len(),
        N,
        "every message published before shutdown arrives"
    );
    for (i, p) in payloads.iter().enumerate() {
        assert_eq!(p.len(), SIZE);
        assert_eq!(&p[..8], format!("{i:08}").as_bytes(), "in order");
    }
}
