//! While the freeze flag is set, the dispatcher refuses every command that is not allowed while
//! frozen, at once and with a clear reply, in both dialects; lifecycles run on start and stop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use guestd_core::wire::Incoming;
use guestd_core::{
    Channel, Context, Dialect, DispatcherBuilder, Env, Handler, HandlerError, Lifecycle,
    NullBackend, Reply, Request, Root, SystemRunner,
};
use serde_json::Value;

struct Probe {
    name: &'static str,
    dialect: Dialect,
    query: bool,
    thaws: bool,
    ran: Arc<Mutex<Vec<&'static str>>>,
}

impl Handler for Probe {
    fn name(&self) -> &'static str {
        self.name
    }
    fn dialect(&self) -> Dialect {
        self.dialect
    }
    fn is_query(&self) -> bool {
        self.query
    }
    fn allowed_while_frozen(&self) -> bool {
        self.query || self.thaws
    }
    fn handle(&self, _ctx: &Context<'_>, _value: &Value) -> Result<Reply, HandlerError> {
        self.ran.lock().unwrap().push(self.name);
        Ok(Reply::ok(""))
    }
}

#[derive(Default)]
struct Counter {
    started: AtomicUsize,
    stopped: AtomicUsize,
}

impl Lifecycle for Counter {
    fn start(&self, _env: &Env) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }
    fn stop(&self, _env: &Env) {
        self.stopped.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn writers_are_refused_at_once_while_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env {
        root: Root::sandbox(dir.path()).unwrap(),
        runner: Arc::new(SystemRunner),
        backend: Arc::new(NullBackend),
    };
    let ran = Arc::new(Mutex::new(Vec::new()));
    let probe = |name, dialect, query, thaws| Probe {
        name,
        dialect,
        query,
        thaws,
        ran: ran.clone(),
    };
    let counter = Arc::new(Counter::default());
    let builder = DispatcherBuilder::new()
        .register(probe("file_inject", Dialect::Native, false, false))
        .unwrap()
        .register(probe("version", Dialect::Native, true, false))
        .unwrap()
        .register(probe(
            "guest-ssh-add-authorized-keys",
            Dialect::Qga,
            false,
            false,
        ))
        .unwrap()
        .register(probe("guest-fsfreeze-thaw", Dialect::Qga, false, true))
        .unwrap()
        .lifecycle(counter.clone());
    let flag = builder.freeze_flag();
    let dispatcher = Arc::new(builder.build(env));
    let native = Arc::new(Channel::new("native"));
    let qga = Arc::new(Channel::new("qga").with_dialect(Dialect::Qga));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let call = |channel: &Arc<Channel>, name: &str| {
        rt.block_on(dispatcher.dispatch(
            channel,
            Incoming {
                id: None,
                request: Ok(Request {
                    name: name.into(),
                    value: Value::Null,
                }),
            },
        ))
    };

    assert!(call(&native, "file_inject").is_success());
    flag.set(true);
    let refused = call(&native, "file_inject");
    assert_eq!(refused.returncode, "500");
    assert_eq!(
        refused.message,
        "Command 'file_inject' refused: the guest's filesystems are frozen \
         (guest-fsfreeze-freeze); it would block until they are thawed"
    );
    let refused = call(&qga, "guest-ssh-add-authorized-keys");
    assert_eq!(
        refused.message,
        "Command guest-ssh-add-authorized-keys has been disabled: the filesystems are frozen \
         (guest-fsfreeze-thaw first)"
    );
    assert!(call(&native, "version").is_success());
    assert!(call(&qga, "guest-fsfreeze-thaw").is_success());
    flag.set(false);
    assert!(call(&qga, "guest-ssh-add-authorized-keys").is_success());
    assert_eq!(
        *ran.lock().unwrap(),
        [
            "file_inject",
            "version",
            "guest-fsfreeze-thaw",
            "guest-ssh-add-authorized-keys"
        ]
    );

    dispatcher.start();
    dispatcher.stop();
    dispatcher.stop();
    assert_eq!(counter.started.load(Ordering::SeqCst), 1);
    assert_eq!(counter.stopped.load(Ordering::SeqCst), 2);
}
