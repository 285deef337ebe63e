//! Pipelined requests: replies that are ready at once go out together, but never wait behind a
//! request that is still running, and every reply comes in request order.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guestd_core::stream::{StreamOptions, serve_stream_with};
use guestd_core::{
    Channel, Context, DispatcherBuilder, Env, Handler, HandlerError, NullBackend, Reply, Root,
    Shutdown, SystemRunner,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Answers at once with its value.
struct Echo;

impl Handler for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn may_block(&self) -> bool {
        false
    }

    fn handle(&self, _ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        Ok(Reply::ok(value.as_str().unwrap_or_default()))
    }
}

/// Blocks until the test opens it.
struct Gate(Mutex<Receiver<()>>);

impl Handler for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }

    fn handle(&self, _ctx: &Context<'_>, _value: &Value) -> Result<Reply, HandlerError> {
        self.0.lock().unwrap().recv().unwrap();
        Ok(Reply::ok("opened"))
    }
}

fn dispatcher() -> (Arc<guestd_core::Dispatcher>, Sender<()>) {
    let env = Env {
        root: Root::system(),
        runner: Arc::new(SystemRunner),
        backend: Arc::new(NullBackend),
    };
    let (open, wait) = channel();
    let dispatcher = DispatcherBuilder::new()
        .register(Echo)
        .unwrap()
        .register(Gate(Mutex::new(wait)))
        .unwrap()
        .build(env);
    (Arc::new(dispatcher), open)
}

#[tokio::test]
async fn ready_replies_are_not_held_behind_a_running_request() {
    let (dispatcher, open) = dispatcher();
    let (client, server) = tokio::io::duplex(1 << 20);
    let (_trigger, shutdown) = Shutdown::new();
    tokio::spawn(async move {
        let options = StreamOptions::default();
        let channel = Arc::new(Channel::new("t"));
        serve_stream_with(server, dispatcher, channel, &options, shutdown).await
    });
    let (read, mut write) = tokio::io::split(client);
    let mut read = BufReader::new(read);

    // 200 quick requests, one that blocks, one more quick one: all in one write.
    let mut batch = String::new();
    for i in 0..200 {
        batch.push_str(&format!(
            "{{\"id\":{i},\"name\":\"echo\",\"value\":\"r{i}\"}}\n"
        ));
    }
    batch.push_str(
        "{\"id\":200,\"name\":\"gate\"}\n{\"id\":201,\"name\":\"echo\",\"value\":\"last\"}\n",
    );
    write.write_all(batch.as_bytes()).await.unwrap();

    let mut line = String::new();
    for i in 0..200 {
        line.clear();
        // Within the timeout although the gate is still closed.
        tokio::time::timeout(Duration::from_secs(10), read.read_line(&mut line))
            .await
            .unwrap_or_else(|_| panic!("reply {i} held back behind the running request"))
            .unwrap();
        assert_eq!(
            line,
            format!("{{\"id\":{i},\"message\":\"r{i}\",\"returncode\":\"0\"}}\n")
        );
    }
    open.send(()).unwrap();
    line.clear();
    read.read_line(&mut line).await.unwrap();
    assert_eq!(
        line,
        "{\"id\":200,\"message\":\"opened\",\"returncode\":\"0\"}\n"
    );
    line.clear();
    read.read_line(&mut line).await.unwrap();
    assert_eq!(
        line,
        "{\"id\":201,\"message\":\"last\",\"returncode\":\"0\"}\n"
    );
}
