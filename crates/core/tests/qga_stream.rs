//! The qga dialect of a stream conversation, end to end over an in-memory stream: framing
//! (values back to back, no newline needed), `guest-sync-delimited`, `0xFF` resynchronisation,
//! oversized and malformed values, commands without a success response, non-ASCII text
//! escaped, and only qga commands on a qga channel.

use std::sync::Arc;

use guestd_core::stream::{StreamOptions, serve_stream_with};
use guestd_core::{
    Context, Dialect, DispatcherBuilder, Env, Handler, HandlerError, NullBackend, Reply, Root,
    Shutdown, SystemRunner,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// `guest-echo` returns its arguments; `guest-shutdown` succeeds (and so sends nothing); `native` is
/// a native command (absent on a qga channel).
struct Echo(&'static str, Dialect);

impl Handler for Echo {
    fn name(&self) -> &'static str {
        self.0
    }

    fn dialect(&self) -> Dialect {
        self.1
    }

    fn may_block(&self) -> bool {
        false
    }

    fn handle(&self, _ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
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
            .register(Echo("guest-echo", Dialect::Qga))
            .unwrap()
            .register(Echo("guest-shutdown", Dialect::Qga))
            .unwrap()
            .register(Echo("native", Dialect::Native))
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
        let channel = options.channel("t");
        serve_stream_with(server, dispatcher, channel, &options, shutdown).await
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
        .write_all(b"{\"execute\":\"guest-shutdown\"}\n{\"execute\":\"guest-echo\",\"arguments\":{\"a\":\"\xc3\xa9\"},\"id\":[1]}\n")
        .await
        .unwrap();
    let reply = next(&mut read, &mut line).await;
    assert!(reply.is_ascii(), "{reply:?}");
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply, json!({"return": {"a": "é"}, "id": [1]}));

    // Errors: the handler's message as GenericError; an oversized line once, then service.
    write
        .write_all(b"{\"execute\":\"guest-echo\",\"arguments\":{\"fail\":1}}\n")
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&next(&mut read, &mut line).await).unwrap();
    assert_eq!(
        reply,
        json!({"error": {"class": "GenericError", "desc": "échec"}})
    );
    let mut big = b"{\"execute\":\"guest-echo\",\"arguments\":{\"x\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'x', 1000));
    big.extend_from_slice(b"\"}}\n{\"execute\":\"guest-echo\"}\n");
    write.write_all(&big).await.unwrap();
    let reply: Value = serde_json::from_slice(&next(&mut read, &mut line).await).unwrap();
    assert_eq!(
        reply,
        json!({"error": {"class": "GenericError", "desc": "JSON token size limit exceeded"}})
    );
    let reply: Value = serde_json::from_slice(&next(&mut read, &mut line).await).unwrap();
    assert_eq!(reply, json!({"return": {}}));

    // No newline needed, values back to back: each is answered as soon as it is complete.
    write
        .write_all(br#"{"execute":"guest-echo","id":1}{"execute":"guest-echo","id":2}  {"execute":"guest-echo","#)
        .await
        .unwrap();
    for id in [1, 2] {
        let reply: Value = serde_json::from_slice(&next(&mut read, &mut line).await).unwrap();
        assert_eq!(reply, json!({"return": {}, "id": id}));
    }
    write.write_all(br#""id":3}"#).await.unwrap();
    let reply: Value = serde_json::from_slice(&next(&mut read, &mut line).await).unwrap();
    assert_eq!(reply, json!({"return": {}, "id": 3}));

    // Malformed input gets qemu-ga's error, and the stream goes on.
    write
        .write_all(b"{\"execute\": @@}{'execute':'guest-echo','arguments':{'q':'it\\'s'}}")
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&next(&mut read, &mut line).await).unwrap();
    assert_eq!(
        reply,
        json!({"error": {"class": "GenericError", "desc": "JSON parse error, stray '@'"}})
    );
    let reply: Value = serde_json::from_slice(&next(&mut read, &mut line).await).unwrap();
    assert_eq!(reply, json!({"return": {"q": "it's"}}));

    // Only qga commands exist here: a native name is qemu-ga's CommandNotFound.
    write
        .write_all(br#"{"execute":"native","id":"n"}"#)
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&next(&mut read, &mut line).await).unwrap();
    assert_eq!(
        reply,
        json!({"error": {"class": "CommandNotFound",
            "desc": "The command native has not been found"}, "id": "n"})
    );

    // guest-sync checks its argument as qemu-ga does.
    write
        .write_all(br#"{"execute":"guest-sync","arguments":{"id":"x"}}{"execute":"guest-sync","arguments":{"id":-5}}"#)
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&next(&mut read, &mut line).await).unwrap();
    assert_eq!(
        reply["error"]["desc"],
        "Invalid parameter type for 'id', expected: integer"
    );
    assert_eq!(next(&mut read, &mut line).await, b"{\"return\": -5}\n");

    drop(write);
    drop(read);
    served.await.unwrap().unwrap();
}
