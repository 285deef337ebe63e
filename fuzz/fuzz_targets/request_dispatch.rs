//! Every command's value parser, through the real dispatcher: any request line is parsed and
//! dispatched to version, features, resetnetwork, injectfile, file_inject and kmsactivate on a
//! sandbox root with a fake command runner (nothing on this machine is touched). Every input
//! gets one ASCII reply with a string return code, never a panic.
//!
//! `agentupdate` is left out on purpose: its value is a URL the fuzzer would make guestd fetch.
#![no_main]

use std::sync::{Arc, OnceLock};

use guestd_core::wire::parse_request;
use guestd_core::{Channel, Dispatcher, DispatcherBuilder, Env, NullBackend, Root};
use guestd_handlers::{
    FeaturesHandler, FileInjectHandler, InjectConfig, InjectFileHandler, KmsActivateHandler,
    NetworkConfig, ResetNetworkHandler, VersionHandler,
};
use guestd_testkit::FakeRunner;
use libfuzzer_sys::fuzz_target;

struct World {
    dir: tempfile::TempDir,
    runner: Arc<FakeRunner>,
    dispatcher: Arc<Dispatcher>,
    channel: Arc<Channel>,
    rt: tokio::runtime::Runtime,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let runner = Arc::new(FakeRunner::new());
        let env = Env {
            root: Root::sandbox(dir.path()).expect("sandbox"),
            runner: runner.clone(),
            backend: Arc::new(NullBackend),
        };
        let inject = InjectConfig {
            max_size: 64 * 1024,
            ..InjectConfig::default()
        };
        let dispatcher = DispatcherBuilder::new()
            .register(VersionHandler)
            .and_then(|b| b.register(FeaturesHandler))
            .and_then(|b| b.register(ResetNetworkHandler::new(NetworkConfig::default())))
            .and_then(|b| b.register(InjectFileHandler::new(inject.clone())))
            .and_then(|b| b.register(FileInjectHandler::new(inject)))
            .and_then(|b| b.register(KmsActivateHandler))
            .expect("register")
            .build(env);
        World {
            dir,
            runner,
            dispatcher: Arc::new(dispatcher),
            channel: Arc::new(Channel::new("fuzz")),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let incoming = parse_request(data);
    let id = incoming.id.clone();
    let reply = w.rt.block_on(w.dispatcher.dispatch(&w.channel, incoming));
    let encoded = reply.encode_with_id(id.as_ref());
    assert!(encoded.is_ascii());
    // Keep the sandbox and the runner's record small between inputs.
    w.runner.clear();
    if std::fs::read_dir(w.dir.path()).is_ok_and(|mut d| d.next().is_some()) {
        for entry in std::fs::read_dir(w.dir.path()).unwrap().flatten() {
            let path = entry.path();
            let _ = if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
});
