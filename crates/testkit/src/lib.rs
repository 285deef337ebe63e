//! guestd-testkit: what tests use instead of the real world.
//!
//! - [`FakeRunner`]: a `ProcessRunner` that records every command (with its stdin) and answers
//!   from scripted rules instead of running anything.
//! - [`FakeSpawner`]: a `ProcessSpawner` whose programs run until the test finishes them.
//! - [`MemoryTransport`]: a `Transport` fed from the test through a channel.
//! - [`golden`]: the golden-tree harness for backends (`before/`, `input`, `after/`, `commands`).
//! - [`bin`]: locate (and build on demand) the workspace binaries for end-to-end tests.
//! - [`http`]: a small HTTP server on loopback for download tests.
//! - [`test_env`] / [`call`]: a dispatcher over a sandbox root in one line.

// A test crate: it builds trees and files for tests by path, outside any guest.
#![allow(clippy::disallowed_methods)]

pub mod bin;
pub mod golden;
pub mod http;
mod memory;
mod runner;
mod spawner;

use std::sync::Arc;

use guestd_core::{
    Backend, Channel, Dispatcher, DispatcherBuilder, Env, NullBackend, Reply, Request, Root,
    wire::Incoming,
};

pub use memory::{MemoryClient, MemoryTransport};
pub use runner::{FakeRunner, Recorded};
pub use spawner::FakeSpawner;

/// An `Env` over `root` with a fake runner and the given backend (`NullBackend` if `None`).
pub fn test_env(root: Root, runner: Arc<FakeRunner>, backend: Option<Arc<dyn Backend>>) -> Env {
    Env {
        root,
        runner,
        backend: backend.unwrap_or_else(|| Arc::new(NullBackend)),
    }
}

/// Dispatch one request on `channel` from a synchronous test (builds a small runtime).
pub fn call(
    dispatcher: &Arc<Dispatcher>,
    channel: &Arc<Channel>,
    name: &str,
    value: serde_json::Value,
) -> Reply {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let incoming = Incoming {
        id: None,
        request: Ok(Request::new(name, value)),
    };
    rt.block_on(dispatcher.dispatch(channel, incoming))
}

/// A dispatcher with `builder`'s handlers over `env`.
pub fn dispatcher(builder: DispatcherBuilder, env: Env) -> Arc<Dispatcher> {
    Arc::new(builder.build(env))
}
