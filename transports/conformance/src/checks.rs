//! The checks of the conformance suite. Each opens its own connection(s) through the
//! [`Connector`]; checks that need a second connection are skipped (and say so) for transports
//! with a single fixed peer (`Kit::reconnects == false`).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Connector, Got, Kit, MAX_LINE, Peer, REPLY_WAIT};

fn skip(check: &str) {
    eprintln!("{check}: not applicable (the transport has a single peer); skipped");
}

async fn echo(peer: &mut Peer, id: Value, text: &str) -> Got {
    peer.request(Some(id), "echo", json!(text)).await;
    peer.reply().await
}

/// Pipelined requests are answered in order, each with its own id.
pub async fn ordering(_kit: &Kit, c: &mut Connector) {
    let mut peer = Peer::connect(c).await;
    let mut batch = Vec::new();
    for i in 0..100 {
        let line = if i % 10 == 3 {
            json!({"id": i, "name": "slow", "value": 5})
        } else {
            json!({"id": i, "name": "echo", "value": format!("m{i}")})
        };
        batch.extend_from_slice(line.to_string().as_bytes());
        batch.push(b'\n');
    }
    peer.send(&batch).await;
    for i in 0..100 {
        let got = peer.reply().await;
        assert_eq!(got.id, Some(json!(i)), "replies out of order");
        let want = if i % 10 == 3 {
            "slept".to_string()
        } else {
            format!("m{i}")
        };
        assert_eq!(got.reply.message, want);
        assert_eq!(got.reply.returncode, "0");
    }
}

/// String and number ids come back as sent; a request without id gets a reply without one.
pub async fn id_echo(_kit: &Kit, c: &mut Connector) {
    let mut peer = Peer::connect(c).await;
    assert_eq!(
        echo(&mut peer, json!("abc"), "1").await.id,
        Some(json!("abc"))
    );
    assert_eq!(echo(&mut peer, json!(42), "2").await.id, Some(json!(42)));
    peer.request(None, "echo", json!("3")).await;
    let got = peer.reply().await;
    assert_eq!((got.id, got.reply.message.as_str()), (None, "3"));
    peer.request(Some(json!("u")), "no-such-command", Value::Null)
        .await;
    let got = peer.reply().await;
    assert_eq!(got.id, Some(json!("u")));
    assert_eq!(got.reply.returncode, "404");
    peer.send(b"{not json\n").await;
    let got = peer.reply().await;
    assert_eq!(
        (got.id, got.reply.message.as_str()),
        (None, "Request is malformed")
    );
}

/// `0xFF` + `sync` is answered with `0xFF` before the reply and the token as message.
pub async fn sync_resync(_kit: &Kit, c: &mut Connector) {
    let mut peer = Peer::connect(c).await;
    peer.send(b"\xff{\"id\":\"s1\",\"name\":\"sync\",\"value\":\"tok-1\"}\n")
        .await;
    let got = peer.reply().await;
    assert!(got.resync, "no 0xFF before the sync reply");
    assert_eq!(got.id, Some(json!("s1")));
    assert_eq!(got.reply.message, "tok-1");
    assert_eq!(got.reply.returncode, "0");
}

/// A `0xFF` discards the partial line before it.
pub async fn resync_drops_partial_line(_kit: &Kit, c: &mut Connector) {
    let mut peer = Peer::connect(c).await;
    peer.send(b"{\"id\":1,\"name\":\"ec").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    peer.send(b"\xff{\"id\":2,\"name\":\"echo\",\"value\":\"x\"}\n")
        .await;
    let got = peer.reply().await;
    assert_eq!((got.id, got.reply.message.as_str()), (Some(json!(2)), "x"));
}

/// A line over the limit gets one error reply; the next line is served normally.
pub async fn oversized_line(_kit: &Kit, c: &mut Connector) {
    let mut peer = Peer::connect(c).await;
    let big = format!(
        "{{\"id\":1,\"name\":\"echo\",\"value\":\"{}\"}}\n",
        "y".repeat(MAX_LINE * 3)
    );
    peer.send(big.as_bytes()).await;
    let got = peer.reply().await;
    assert_eq!(got.reply.returncode, "500");
    assert!(
        got.reply.message.contains("too large"),
        "{}",
        got.reply.message
    );
    assert_eq!(
        echo(&mut peer, json!(2), "after").await.reply.message,
        "after"
    );
}

/// 10 MB without a newline: one error, bounded buffering, and the connection still works.
pub async fn ten_megabytes_without_newline(_kit: &Kit, c: &mut Connector) {
    let peer = Peer::connect(c).await;
    let (mut rd, mut wr) = tokio::io::split(peer.into_inner());
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..160 {
            wr.write_all(&chunk).await.expect("write junk");
        }
        wr.write_all(b"\n{\"id\":\"after\",\"name\":\"echo\",\"value\":\"ok\"}\n")
            .await
            .expect("write request");
        wr.flush().await.expect("flush");
        wr
    });
    let mut text = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + REPLY_WAIT * 3;
    while text.iter().filter(|&&b| b == b'\n').count() < 2 {
        let n = tokio::time::timeout_at(deadline, rd.read(&mut chunk))
            .await
            .expect("two replies in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&text)
        );
        text.extend_from_slice(&chunk[..n]);
    }
    let _wr = writer.await.expect("writer");
    let text = String::from_utf8(text).expect("ascii");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("too large"), "{text}");
    assert!(
        lines[1].contains("\"id\":\"after\"") && lines[1].contains("\"ok\""),
        "{text}"
    );
}

/// A request split over many small writes is answered once, when complete.
pub async fn partial_lines(_kit: &Kit, c: &mut Connector) {
    let mut peer = Peer::connect(c).await;
    let req = b"{\"id\":\"p\",\"name\":\"echo\",\"value\":\"pieces\"}\n{\"id\":\"q\",\"name\":\"echo\",\"value\":\"two\"}\n";
    for piece in req.chunks(7) {
        peer.send(piece).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let got = peer.reply().await;
    assert_eq!(
        (got.id, got.reply.message.as_str()),
        (Some(json!("p")), "pieces")
    );
    let got = peer.reply().await;
    assert_eq!(
        (got.id, got.reply.message.as_str()),
        (Some(json!("q")), "two")
    );
}

/// Random bytes get error replies (never a crash or a hang); afterwards a resync works.
pub async fn binary_garbage(_kit: &Kit, c: &mut Connector) {
    let mut peer = Peer::connect(c).await;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let garbage: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    peer.send(&garbage).await;
    peer.send(b"\n\xff{\"id\":\"after\",\"name\":\"echo\",\"value\":\"fine\"}\n")
        .await;
    loop {
        let got = peer.reply().await;
        if got.id == Some(json!("after")) {
            assert_eq!(got.reply.message, "fine");
            break;
        }
        assert_eq!(got.reply.returncode, "500", "garbage accepted: {got:?}");
    }
}

/// The same id and request again gets the remembered reply without running the command; across
/// connections too, where the transport has more than one. A query just runs again.
pub async fn safe_retry(kit: &Kit, c: &mut Connector) {
    let mut peer = Peer::connect(c).await;
    for run in ["run 1", "run 2"] {
        peer.request(Some(json!("q1")), "tally", Value::Null).await;
        assert_eq!(
            peer.reply().await.reply.message,
            run,
            "a query was replayed"
        );
    }
    peer.request(Some(json!("r1")), "count", Value::Null).await;
    let first = peer.reply().await;
    assert_eq!(first.reply.message, "run 1");
    peer.request(Some(json!("r1")), "count", Value::Null).await;
    assert_eq!(peer.reply().await, first);
    assert_eq!(kit.runs(), 1, "the retried command ran again");
    peer.request(Some(json!("r2")), "count", Value::Null).await;
    assert_eq!(peer.reply().await.reply.message, "run 2");
    if kit.reconnects {
        drop(peer);
        let mut again = Peer::connect(c).await;
        again.request(Some(json!("r1")), "count", Value::Null).await;
        assert_eq!(again.reply().await, first);
        assert_eq!(kit.runs(), 2, "the retry on a new connection ran again");
    }
}

/// Half a request, then the peer goes away: the next connection is not affected.
pub async fn half_line_then_disconnect(_kit: &Kit, c: &mut Connector) {
    if !_kit.reconnects {
        return skip("half_line_then_disconnect");
    }
    let mut first = Peer::connect(c).await;
    first.send(b"{\"id\":1,\"name\":\"echo\",\"val").await;
    drop(first);
    let mut second = Peer::connect(c).await;
    let got = echo(&mut second, json!(2), "clean").await;
    assert_eq!(
        (got.id, got.reply.message.as_str()),
        (Some(json!(2)), "clean")
    );
}

/// A peer that sends but never reads cannot stall the transport: other connections are served,
/// and (single-peer transports) the peer is served again once it reads and resyncs.
pub async fn peer_never_reads(kit: &Kit, c: &mut Connector) {
    let stuck = Peer::connect(c).await;
    let (mut rd, mut wr) = tokio::io::split(stuck.into_inner());
    let flood = tokio::spawn(async move {
        let line = format!(
            "{{\"name\":\"echo\",\"value\":\"{}\"}}\n",
            "z".repeat(MAX_LINE / 2)
        );
        for _ in 0..1000 {
            if wr.write_all(line.as_bytes()).await.is_err() {
                return None; // the transport gave up on us: fine
            }
        }
        Some(wr)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    if kit.reconnects {
        let mut other = Peer::connect(c).await;
        let got = echo(&mut other, json!("o"), "still served").await;
        assert_eq!(got.reply.message, "still served");
        let gave_up = tokio::time::timeout(REPLY_WAIT, flood).await;
        assert!(gave_up.is_ok(), "the flooding peer was never dropped");
        return;
    }
    // Single peer: its replies are dropped while it does not read; the flood ends because the
    // transport keeps reading. Then drain, resync, and expect a clean answer.
    let wr = tokio::time::timeout(REPLY_WAIT * 3, flood)
        .await
        .expect("the transport kept reading while its replies were not taken")
        .expect("flood task")
        .expect("the single-peer transport does not close");
    let mut sink = vec![0u8; 64 * 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), rd.read(&mut sink)).await
    {
        assert!(n > 0, "closed");
    }
    let mut peer = Peer {
        conn: Box::new(rd.unsplit(wr)),
        buf: Vec::new(),
    };
    peer.send(b"\xff{\"id\":\"m\",\"name\":\"sync\",\"value\":\"back\"}\n")
        .await;
    // Skip whatever partial output was left before the 0xFF of the sync reply.
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = tokio::time::timeout(REPLY_WAIT, peer.conn.read(&mut byte))
            .await
            .expect("sync reply in time")
            .expect("read");
        assert!(n > 0, "closed");
        if byte[0] == 0xFF {
            break;
        }
        seen.push(byte[0]);
    }
    peer.buf.push(0xFF);
    let got = peer.reply().await;
    assert_eq!(
        (got.id, got.reply.message.as_str()),
        (Some(json!("m")), "back")
    );
}

/// On shutdown the request in flight is answered, then the connection is closed.
pub async fn clean_close_on_shutdown(kit: &Kit, c: &mut Connector) {
    let mut peer = Peer::connect(c).await;
    assert_eq!(echo(&mut peer, json!(1), "up").await.reply.message, "up");
    peer.request(Some(json!(2)), "slow", json!(300)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    kit.stop();
    let got = peer.reply().await;
    assert_eq!(
        (got.id, got.reply.message.as_str()),
        (Some(json!(2)), "slept")
    );
    assert!(
        peer.closed_within(Duration::from_secs(10)).await,
        "connection not closed after shutdown"
    );
}
