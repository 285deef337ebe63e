//! Handlers that never block run on the transport's thread; the rest on a blocking thread.
//! Both paths give the same replies, panics included.

use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use guestd_core::wire::{Incoming, msg};
use guestd_core::{
    Channel, Context, DispatcherBuilder, Env, Handler, HandlerError, NullBackend, Reply, Request,
    Root, SystemRunner,
};
use serde_json::Value;

/// Records the thread it ran on; panics when asked to.
struct Probe {
    name: &'static str,
    may_block: bool,
    ran_on: Arc<Mutex<Option<ThreadId>>>,
}

impl Handler for Probe {
    fn name(&self) -> &'static str {
        self.name
    }

    fn may_block(&self) -> bool {
        self.may_block
    }

    fn handle(&self, _ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        *self.ran_on.lock().unwrap() = Some(std::thread::current().id());
        match value.as_str() {
            Some("panic") => panic!("probe asked to panic"),
            Some("fail") => Err(HandlerError::failed("probe failed")),
            _ => Ok(Reply::ok(self.name)),
        }
    }
}

#[test]
fn inline_and_blocking_handlers_answer_alike() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env {
        root: Root::sandbox(dir.path()).unwrap(),
        runner: Arc::new(SystemRunner),
        backend: Arc::new(NullBackend),
    };
    let inline_thread = Arc::new(Mutex::new(None));
    let blocking_thread = Arc::new(Mutex::new(None));
    let dispatcher = Arc::new(
        DispatcherBuilder::new()
            .register(Probe {
                name: "inline",
                may_block: false,
                ran_on: inline_thread.clone(),
            })
            .unwrap()
            .register(Probe {
                name: "blocking",
                may_block: true,
                ran_on: blocking_thread.clone(),
            })
            .unwrap()
            .build(env),
    );
    let channel = Arc::new(Channel::new("test"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let call = |name: &str, value: &str| {
        let incoming = Incoming {
            id: None,
            request: Ok(Request::new(name, value)),
        };
        rt.block_on(dispatcher.dispatch(&channel, incoming))
    };
    let here = std::thread::current().id();
    for name in ["inline", "blocking"] {
        assert_eq!(call(name, "ok"), Reply::ok(name));
        assert_eq!(call(name, "fail"), Reply::error("probe failed"));
        assert_eq!(call(name, "panic"), Reply::error(msg::INTERNAL), "{name}");
        // Still serving after the panic.
        assert_eq!(call(name, "ok"), Reply::ok(name));
    }
    assert_eq!(*inline_thread.lock().unwrap(), Some(here));
    assert_ne!(*blocking_thread.lock().unwrap(), Some(here));
}

#[test]
fn an_unknown_command_name_is_quoted_clipped() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env {
        root: Root::sandbox(dir.path()).unwrap(),
        runner: Arc::new(SystemRunner),
        backend: Arc::new(NullBackend),
    };
    let dispatcher = Arc::new(DispatcherBuilder::new().build(env));
    let channel = Arc::new(Channel::new("test"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let call = |name: String| {
        let incoming = Incoming {
            id: None,
            request: Ok(Request::new(name, Value::Null)),
        };
        rt.block_on(dispatcher.dispatch(&channel, incoming))
    };
    assert_eq!(
        call("nosuch".into()),
        Reply::new("404", "No such agent command 'nosuch'")
    );
    // Multi-byte characters straddle the cut: it lands on a character boundary.
    let long = "é".repeat(100_000);
    let reply = call(long);
    assert_eq!(reply.returncode, "404");
    assert!(reply.message.len() < 200, "{} bytes", reply.message.len());
    assert!(reply.message.ends_with("...'"), "{}", reply.message);
}
