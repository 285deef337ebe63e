//! The qga dialect of a stream conversation, end to end over an in-memory stream: framing,
//! `guest-sync-delimited`, `0xFF` resynchronisation, oversized lines, commands without a success
//! response, non-ASCII text escaped.

use std::sync::Arc;

use guestd_core::stream::{Dialect, StreamOptions, serve_stream_with};
use guestd_core::{
    Channel, Context, DispatcherBuilder, Env, Handler, HandlerError, NullBackend, Reply, Root,
    Shutdown, SystemRunner,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// `echo` returns its arguments; `guest-shutdown` succeeds (and so sends nothing).
struct Echo(&'static str);

impl Handler for Echo {
    fn name(&self) -> &'static str {
        self.0
    }

    fn may_block(&self) -> bool {
        false
    }

    fn run(&self, _ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        if value.get("fail").is_some() {
            return Err(HandlerError::failed("échec"));
        }
        Ok(guestd_core::qga::ok(value))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn qga_conversation() {
    let env = Env {
        root: Root::system(),
        runner: Arc::new(SystemRunner),
        backend: Arc::new(NullBackend),
    };
    let dispatcher = Arc::new(
        DispatcherBuilder::new()
            .register(Echo("echo"))
            .unwrap()
            .register(Echo("guest-shutdown"))
            .unwrap()
            .build(env),
    );
    let (client, server) = tokio::io::duplex(1 << 16);
    let options = StreamOptions {
        dialect: Dialect::Qga,
        limits: guestd_core::stream::StreamLimits { max_line: 256 },
        ..StreamOptions::default()
    };
    let (_trigger, shutdown) = Shutdown::new();
    let served = tokio::spawn(async move {
        serve_stream_with(
            server,
            dispatcher,
            Arc::new(Channel::new("t")),
            &options,
            shutdown,
        )
        .await
    });
    let (read, mut write) = tokio::io::split(client);
    let mut read = BufReader::new(read);
    let mut line = Vec::new();
    let next = async |read: &mut BufReader<_>, line: &mut Vec<u8>| {
        line.clear();
        read.read_until(b'\n', line).await.unwrap();
        line.clone()
    };

    // A partial request, then 0xFF and a delimited sync: the partial input is dropped.
    write
        .write_all(b"{\"execute\":\"ec\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":9}}\n")
        .await
        .unwrap();
    assert_eq!(next(&mut read, &mut line).await, b"\xff{\"return\": 9}\n");

    // guest-shutdown succeeds silently; the next reply is the echo's.
    write
        .write_all(b"{\"execute\":\"guest-shutdown\"}\n{\"execute\":\"echo\",\"arguments\":{\"a\":\"\xc3\xa9\"},\"id\":[1]}\n")
        .await
        .unwrap();
    let reply = next(&mut read, &mut line).await;
    assert!(reply.is_ascii(), "{reply:?}");
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply, json!({"return": {"a": "é"}, "id": [1]}));

    // Errors: the handler's message as GenericError; an oversized line once, then service.
    write
        .write_all(b"{\"execute\":\"echo\",\"arguments\":{\"fail\":1}}\n")
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&next(&mut read, &mut line).await).unwrap();
    assert_eq!(
        reply,
        json!({"error": {"class": "GenericError", "desc": "échec"}})
    );
    let mut big = b"{\"execute\":\"echo\",\"arguments\":{\"x\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'x', 1000));
    big.extend_from_slice(b"\"}}\n{\"execute\":\"echo\"}\n");
    write.write_all(&big).await.unwrap();
    let reply: Value = serde_json::from_slice(&next(&mut read, &mut line).await).unwrap();
    assert_eq!(reply["error"]["class"], "GenericError");
    assert!(
        reply["error"]["desc"]
            .as_str()
            .unwrap()
            .contains("too large")
    );
    let reply: Value = serde_json::from_slice(&next(&mut read, &mut line).await).unwrap();
    assert_eq!(reply, json!({"return": {}}));

    drop(write);
    drop(read);
    served.await.unwrap().unwrap();
}
