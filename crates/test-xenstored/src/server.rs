//! Connections, transactions and watches on top of [`Store`]: one reader thread and one writer
//! thread per connection, one lock around the whole state (this is a test daemon).

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use guestd_transport_xenstore::wire::{
    HEADER_LEN, Message, MsgType, PAYLOAD_MAX, WireError, errno, read_message, split_fields,
};

use crate::store::{
    Caller, Node, OpResult, Perm, Quota, Store, Toolstack, canonical, is_at_or_below, parent_of,
};

/// What to listen on.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The privileged socket host tools use (`XENSTORED_PATH`).
    pub dom0: Option<PathBuf>,
    /// One socket per guest domain: connections on it act as that domain.
    pub guests: Vec<(u32, PathBuf)>,
    pub quota: Quota,
    /// How each guest home is laid out at start.
    pub toolstack: Toolstack,
    /// Print every request and reply on stderr.
    pub trace: bool,
}

/// A running daemon. [`TestXenstored::stop`] (or drop) closes every connection and removes the
/// sockets, as a crashed xenstored would look to its clients.
#[derive(Debug)]
pub struct TestXenstored {
    shared: Arc<Shared>,
    listeners: Vec<(PathBuf, JoinHandle<()>)>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    stopping: AtomicBool,
    trace: bool,
}

#[derive(Debug)]
struct State {
    store: Store,
    generation: u64,
    /// Generation at which each path last changed (created, written, removed, children changed).
    modified: HashMap<String, u64>,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    transactions: HashMap<u32, Tx>,
    next_tx: u32,
    guests: Vec<u32>,
}

#[derive(Debug)]
struct Conn {
    caller: Caller,
    out: mpsc::Sender<Vec<u8>>,
    watches: Vec<Watch>,
    stream: UnixStream,
}

#[derive(Debug, Clone)]
struct Watch {
    abs: String,
    token: String,
    relative: bool,
}

#[derive(Debug)]
struct Tx {
    conn: u64,
    snapshot: Store,
    start_generation: u64,
    ops: Vec<Op>,
    accessed: HashSet<String>,
}

#[derive(Debug, Clone)]
enum Op {
    Write(String, Vec<u8>),
    Mkdir(String),
    Rm(String),
    SetPerms(String, Vec<Perm>),
}

/// Messages to deliver after the reply: (connection, encoded message).
type Outbox = Vec<(u64, Vec<u8>)>;

impl TestXenstored {
    /// Bind every socket (replacing stale socket files) and start serving.
    pub fn start(config: Config) -> io::Result<Self> {
        let guest_ids: Vec<u32> = config.guests.iter().map(|(d, _)| *d).collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                store: Store::with_toolstack(&guest_ids, config.quota, config.toolstack),
                generation: 1,
                modified: HashMap::new(),
                conns: HashMap::new(),
                next_conn: 1,
                transactions: HashMap::new(),
                next_tx: 1,
                guests: guest_ids,
            }),
            stopping: AtomicBool::new(false),
            trace: config.trace,
        });
        let mut sockets: Vec<(Caller, PathBuf)> = Vec::new();
        if let Some(path) = config.dom0 {
            sockets.push((Caller { domid: 0 }, path));
        }
        for (domid, path) in config.guests {
            sockets.push((Caller { domid }, path));
        }
        let mut listeners = Vec::new();
        for (caller, path) in sockets {
            let listener = bind(&path)?;
            let shared = Arc::clone(&shared);
            let handle = thread::spawn(move || accept_loop(listener, caller, shared));
            listeners.push((path, handle));
        }
        Ok(Self { shared, listeners })
    }

    /// Close every client connection but keep listening and keep the tree, as when xenstored
    /// restarts with its database intact (or a connection is reset).
    pub fn disconnect_all(&self) {
        let state = lock(&self.shared);
        for conn in state.conns.values() {
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// How many clients are connected now.
    pub fn connections(&self) -> usize {
        lock(&self.shared).conns.len()
    }

    /// Close every connection and socket.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for (path, handle) in self.listeners.drain(..) {
            // Wake the blocking accept so the thread sees `stopping`. When the socket file is
            // already gone (its directory was removed) nothing can reach the listener any
            // more: leave the thread parked in accept rather than hang here.
            if UnixStream::connect(&path).is_ok() {
                let _ = handle.join();
                let _ = std::fs::remove_file(&path);
            }
        }
        let state = lock(&self.shared);
        for conn in state.conns.values() {
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for TestXenstored {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn bind(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            // A socket file left by a killed daemon: nobody listens on it any more.
            if UnixStream::connect(path).is_ok() {
                return Err(e);
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        other => other,
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: UnixListener, caller: Caller, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let shared = Arc::clone(&shared);
        thread::spawn(move || serve_conn(stream, caller, shared));
    }
}

fn serve_conn(stream: UnixStream, caller: Caller, shared: Arc<Shared>) {
    let (Ok(mut reader), Ok(mut writer), Ok(control)) =
        (stream.try_clone(), stream.try_clone(), stream.try_clone())
    else {
        return;
    };
    let (out, queue) = mpsc::channel::<Vec<u8>>();
    let writer_thread = thread::spawn(move || {
        for buf in queue {
            if writer.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let id = {
        let mut state = lock(&shared);
        let id = state.next_conn;
        state.next_conn += 1;
        state.conns.insert(
            id,
            Conn {
                caller,
                out: out.clone(),
                watches: Vec::new(),
                stream: control,
            },
        );
        id
    };
    if shared.stopping.load(Ordering::SeqCst) {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    loop {
        let (header, payload) = match read_message(&mut reader) {
            Ok(Ok(Some(msg))) => msg,
            Ok(Err(WireError::TooLarge(n))) => {
                // C xenstored drops a client that announces an oversized payload.
                eprintln!(
                    "test-xenstored: dom{} sent a {n}-byte payload; closing",
                    caller.domid
                );
                break;
            }
            _ => break,
        };
        let mut state = lock(&shared);
        let mut outbox = Outbox::new();
        let reply = state.handle(id, header.ty, header.tx_id, &payload, &mut outbox);
        let reply = Message {
            ty: reply.0,
            req_id: header.req_id,
            tx_id: header.tx_id,
            payload: reply.1,
        };
        if shared.trace {
            eprintln!(
                "test-xenstored: dom{} {:?} {:?} -> {:?} {:?}",
                caller.domid,
                MsgType::from_u32(header.ty),
                String::from_utf8_lossy(&payload),
                reply.ty,
                String::from_utf8_lossy(&reply.payload)
            );
        }
        let _ = out.send(reply.encode());
        for (conn, bytes) in outbox {
            if let Some(c) = state.conns.get(&conn) {
                let _ = c.out.send(bytes);
            }
        }
    }
    {
        let mut state = lock(&shared);
        state.conns.remove(&id);
        state.transactions.retain(|_, tx| tx.conn != id);
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    drop(out);
    let _ = writer_thread.join();
}

fn ok() -> Vec<u8> {
    b"OK\0".to_vec()
}

fn nul_terminated(text: &str) -> Vec<u8> {
    let mut v = text.as_bytes().to_vec();
    v.push(0);
    v
}

fn text(field: Option<&&[u8]>) -> OpResult<String> {
    let bytes = field.ok_or(errno::EINVAL)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| errno::EINVAL)
}

impl State {
    /// Answer one request: `(reply type, payload)`; watch events go to `outbox`.
    fn handle(
        &mut self,
        conn: u64,
        raw_ty: u32,
        tx_id: u32,
        payload: &[u8],
        outbox: &mut Outbox,
    ) -> (MsgType, Vec<u8>) {
        let Some(ty) = MsgType::from_u32(raw_ty) else {
            return (MsgType::Error, nul_terminated(errno::EINVAL));
        };
        // A successful reply has the request's type.
        match self.handle_typed(conn, ty, tx_id, payload, outbox) {
            Ok(data) if data.len() > PAYLOAD_MAX => (MsgType::Error, nul_terminated(errno::E2BIG)),
            Ok(data) => (ty, data),
            Err(name) => (MsgType::Error, nul_terminated(name)),
        }
    }

    fn handle_typed(
        &mut self,
        conn: u64,
        ty: MsgType,
        tx_id: u32,
        payload: &[u8],
        outbox: &mut Outbox,
    ) -> OpResult<Vec<u8>> {
        let caller = self.conns.get(&conn).ok_or(errno::EIO)?.caller;
        if tx_id != 0 && ty != MsgType::TransactionStart {
            match self.transactions.get(&tx_id) {
                Some(tx) if tx.conn == conn => {}
                _ => return Err(errno::ENOENT),
            }
        }
        let fields = split_fields(payload);
        let path = || -> OpResult<(String, bool)> { canonical(caller, &text(fields.first())?) };
        match ty {
            MsgType::Read => {
                let (p, _) = path()?;
                let value = self.view(tx_id, &p).read(caller, &p)?;
                Ok(value)
            }
            MsgType::Directory => {
                let (p, _) = path()?;
                let children = self.view(tx_id, &p).directory(caller, &p)?;
                Ok(children.iter().flat_map(|c| nul_terminated(c)).collect())
            }
            MsgType::DirectoryPart => {
                let (p, _) = path()?;
                let offset: usize = text(fields.get(1))?.parse().map_err(|_| errno::EINVAL)?;
                let children = self.view(tx_id, &p).directory(caller, &p)?;
                let generation = self.modified.get(&p).copied().unwrap_or(0);
                Ok(directory_part(&children, offset, generation))
            }
            MsgType::GetPerms => {
                let (p, _) = path()?;
                let perms = self.view(tx_id, &p).get_perms(caller, &p)?;
                Ok(perms
                    .iter()
                    .flat_map(|p| nul_terminated(&p.render()))
                    .collect())
            }
            MsgType::Write => {
                let split = payload.iter().position(|b| *b == 0).ok_or(errno::EINVAL)?;
                let given = std::str::from_utf8(&payload[..split]).map_err(|_| errno::EINVAL)?;
                let (p, _) = canonical(caller, given)?;
                self.mutate(
                    conn,
                    caller,
                    tx_id,
                    Op::Write(p, payload[split + 1..].to_vec()),
                    outbox,
                )?;
                Ok(ok())
            }
            MsgType::Mkdir => {
                let (p, _) = path()?;
                self.mutate(conn, caller, tx_id, Op::Mkdir(p), outbox)?;
                Ok(ok())
            }
            MsgType::Rm => {
                let (p, _) = path()?;
                self.mutate(conn, caller, tx_id, Op::Rm(p), outbox)?;
                Ok(ok())
            }
            MsgType::SetPerms => {
                let (p, _) = path()?;
                let perms = fields[1..]
                    .iter()
                    .map(|f| std::str::from_utf8(f).ok().and_then(Perm::parse))
                    .collect::<Option<Vec<_>>>()
                    .ok_or(errno::EINVAL)?;
                self.mutate(conn, caller, tx_id, Op::SetPerms(p, perms), outbox)?;
                Ok(ok())
            }
            MsgType::Watch => {
                let given = text(fields.first())?;
                let token = text(fields.get(1))?;
                let (abs, relative) = if given.starts_with('@') {
                    (given.clone(), false)
                } else {
                    canonical(caller, &given)?
                };
                let c = self.conns.get_mut(&conn).ok_or(errno::EIO)?;
                if c.watches.iter().any(|w| w.abs == abs && w.token == token) {
                    return Err(errno::EEXIST);
                }
                c.watches.push(Watch {
                    abs,
                    token: token.clone(),
                    relative,
                });
                // Every watch fires once when registered.
                outbox.push((conn, event(&given, &token)));
                Ok(ok())
            }
            MsgType::Unwatch => {
                let given = text(fields.first())?;
                let token = text(fields.get(1))?;
                let abs = if given.starts_with('@') {
                    given
                } else {
                    canonical(caller, &given)?.0
                };
                let c = self.conns.get_mut(&conn).ok_or(errno::EIO)?;
                let before = c.watches.len();
                c.watches.retain(|w| !(w.abs == abs && w.token == token));
                if c.watches.len() == before {
                    return Err(errno::ENOENT);
                }
                Ok(ok())
            }
            MsgType::ResetWatches => {
                self.conns.get_mut(&conn).ok_or(errno::EIO)?.watches.clear();
                Ok(ok())
            }
            MsgType::TransactionStart => {
                if tx_id != 0 {
                    return Err(errno::EBUSY);
                }
                let id = self.next_tx;
                self.next_tx = self.next_tx.wrapping_add(1).max(1);
                self.transactions.insert(
                    id,
                    Tx {
                        conn,
                        snapshot: self.store.clone(),
                        start_generation: self.generation,
                        ops: Vec::new(),
                        accessed: HashSet::new(),
                    },
                );
                Ok(nul_terminated(&id.to_string()))
            }
            MsgType::TransactionEnd => {
                let commit = match text(fields.first())?.as_str() {
                    "T" => true,
                    "F" => false,
                    _ => return Err(errno::EINVAL),
                };
                let tx = self.transactions.remove(&tx_id).ok_or(errno::ENOENT)?;
                if commit {
                    self.commit(caller, tx, outbox)?;
                }
                Ok(ok())
            }
            MsgType::GetDomainPath => {
                let domid: u32 = text(fields.first())?.parse().map_err(|_| errno::EINVAL)?;
                Ok(nul_terminated(&format!("/local/domain/{domid}")))
            }
            MsgType::IsDomainIntroduced => {
                let domid: u32 = text(fields.first())?.parse().map_err(|_| errno::EINVAL)?;
                let known = domid == 0 || self.guests.contains(&domid);
                Ok(nul_terminated(if known { "T" } else { "F" }))
            }
            MsgType::WatchEvent | MsgType::Error => Err(errno::EINVAL),
            _ if !caller.privileged() => Err(errno::EACCES),
            _ => Err(errno::ENOSYS),
        }
    }

    /// The tree a request sees: the transaction's snapshot, or the live store.
    fn view(&mut self, tx_id: u32, path: &str) -> &Store {
        match self.transactions.get_mut(&tx_id) {
            Some(tx) if tx_id != 0 => {
                tx.accessed.insert(path.to_string());
                &tx.snapshot
            }
            _ => &self.store,
        }
    }

    fn mutate(
        &mut self,
        conn: u64,
        caller: Caller,
        tx_id: u32,
        op: Op,
        outbox: &mut Outbox,
    ) -> OpResult<()> {
        let _ = conn;
        if tx_id != 0 {
            let tx = self.transactions.get_mut(&tx_id).ok_or(errno::ENOENT)?;
            apply(&mut tx.snapshot, caller, &op)?;
            let path = op_path(&op).to_string();
            if let Some(parent) = parent_of(&path) {
                tx.accessed.insert(parent.to_string());
            }
            tx.accessed.insert(path);
            tx.ops.push(op);
            return Ok(());
        }
        self.apply_live(caller, &op, outbox)
    }

    fn apply_live(&mut self, caller: Caller, op: &Op, outbox: &mut Outbox) -> OpResult<()> {
        if let Op::Mkdir(path) = op {
            if self.store.exists(path) {
                // Nothing changes: no generation bump (no transaction conflict), no event.
                return self.store.mkdir(caller, path);
            }
        }
        let removed = apply(&mut self.store, caller, op)?;
        self.generation += 1;
        let path = op_path(op).to_string();
        let mut touched: Vec<String> = vec![path.clone()];
        // Ancestors may have been created (write/mkdir) or lost a child (rm).
        let mut p = parent_of(&path);
        while let Some(parent) = p {
            touched.push(parent.to_string());
            p = parent_of(parent);
        }
        for t in touched {
            self.modified.insert(t, self.generation);
        }
        match op {
            Op::Rm(_) => {
                // Unchanged (absent) node: no event, as nothing changed.
                if let Some((_, node)) = removed.iter().find(|(p, _)| *p == path) {
                    self.fire(&path, node, true, outbox);
                }
                for (p, _) in &removed {
                    self.modified.insert(p.clone(), self.generation);
                }
            }
            _ => {
                let node = self.store.get(&path).cloned().expect("just written");
                self.fire(&path, &node, false, outbox);
            }
        }
        Ok(())
    }

    fn commit(&mut self, caller: Caller, tx: Tx, outbox: &mut Outbox) -> OpResult<()> {
        let conflict = tx.accessed.iter().any(|p| {
            self.modified
                .get(p)
                .is_some_and(|g| *g > tx.start_generation)
        });
        if conflict {
            return Err(errno::EAGAIN);
        }
        // Check the whole transaction applies before changing anything.
        let mut trial = self.store.clone();
        for op in &tx.ops {
            apply(&mut trial, caller, op).map_err(|_| errno::EAGAIN)?;
        }
        for op in &tx.ops {
            self.apply_live(caller, op, outbox)?;
        }
        Ok(())
    }

    /// Queue watch events for a change at `path`. `recurse`: the subtree went away, so watches
    /// below it fire too (with their own path), as in C xenstored.
    fn fire(&self, path: &str, node: &Node, recurse: bool, outbox: &mut Outbox) {
        for (id, conn) in &self.conns {
            if !self.store.can_read(conn.caller, node) {
                continue;
            }
            for w in &conn.watches {
                let event_path = if is_at_or_below(path, &w.abs) {
                    path
                } else if recurse && is_at_or_below(&w.abs, path) {
                    w.abs.as_str()
                } else {
                    continue;
                };
                let home = format!("/local/domain/{}/", conn.caller.domid);
                let shown = match event_path.strip_prefix(&home) {
                    Some(rel) if w.relative => rel,
                    _ => event_path,
                };
                outbox.push((*id, event(shown, &w.token)));
            }
        }
    }
}

fn op_path(op: &Op) -> &str {
    match op {
        Op::Write(p, _) | Op::Mkdir(p) | Op::Rm(p) | Op::SetPerms(p, _) => p,
    }
}

fn apply(store: &mut Store, caller: Caller, op: &Op) -> OpResult<Vec<(String, Node)>> {
    match op {
        Op::Write(p, v) => store.write(caller, p, v).map(|_| Vec::new()),
        Op::Mkdir(p) => store.mkdir(caller, p).map(|_| Vec::new()),
        Op::Rm(p) => store.rm(caller, p),
        Op::SetPerms(p, perms) => store
            .set_perms(caller, p, perms.clone())
            .map(|_| Vec::new()),
    }
}

fn event(path: &str, token: &str) -> Vec<u8> {
    let mut payload = nul_terminated(path);
    payload.extend_from_slice(&nul_terminated(token));
    Message {
        ty: MsgType::WatchEvent,
        req_id: 0,
        tx_id: 0,
        payload,
    }
    .encode()
}

/// One chunk of a DIRECTORY_PART reply, as C xenstored builds it: the generation, then as
/// many NUL-terminated names from byte `offset` as fit, then an empty name once the list ends.
fn directory_part(children: &[String], offset: usize, generation: u64) -> Vec<u8> {
    let blob: Vec<u8> = children.iter().flat_map(|c| nul_terminated(c)).collect();
    let mut out = nul_terminated(&generation.to_string());
    if offset >= blob.len() {
        out.push(0);
        return out;
    }
    let max = PAYLOAD_MAX - out.len() - 1;
    let mut len = 0;
    for name in blob[offset..].split_inclusive(|b| *b == 0) {
        if len + name.len() > max {
            break;
        }
        len += name.len();
    }
    out.extend_from_slice(&blob[offset..offset + len]);
    if offset + len == blob.len() {
        out.push(0);
    }
    out
}

const _: () = assert!(HEADER_LEN == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_part_chunks_cover_the_list() {
        let children: Vec<String> = (0..500)
            .map(|i| format!("child-{i:04}-xxxxxxxxxxxx"))
            .collect();
        let mut offset = 0;
        let mut got = Vec::new();
        loop {
            let chunk = directory_part(&children, offset, 7);
            assert!(chunk.len() <= PAYLOAD_MAX);
            let body = &chunk[2..];
            let complete = body.ends_with(b"\0\0") || body == b"\0";
            let names: Vec<&[u8]> = split_fields(body)
                .into_iter()
                .filter(|n| !n.is_empty())
                .collect();
            for n in &names {
                offset += n.len() + 1;
                got.push(String::from_utf8(n.to_vec()).unwrap());
            }
            if complete {
                break;
            }
        }
        assert_eq!(got, children);
    }
}
