//! `test-xenstored`: a xenstored for tests that speaks the real XenStore wire protocol
//! (`xs_wire.h`) on unix sockets, good enough for Debian's `xenstore-utils` and for guestd.
//!
//! - The dom0 socket (`--dom0 PATH`, what host tools find through `XENSTORED_PATH`) is
//!   privileged and uses absolute paths.
//! - Each guest socket (`--guest DOMID:PATH`) acts as domain DOMID: relative paths resolve under
//!   `/local/domain/DOMID`, Xen's permission model applies (owner + default + per-domain
//!   entries, guests own what they create), values are limited to 2048 bytes and node count to
//!   1000 per guest (oxenstored's `quota-maxsize` / `quota-maxentity`, errors `E2BIG` /
//!   `EQUOTA`).
//! - Watches fire once on registration, then on every change at or below their path (and for
//!   watches below a removed subtree); events are only sent about nodes the watcher may read.
//! - Transactions work on a snapshot and commit with `EAGAIN` on a conflicting change;
//!   `DIRECTORY` answers `E2BIG` past the 4096-byte payload limit, `DIRECTORY_PART` pages; a
//!   client announcing a larger payload is disconnected, as C xenstored does.
//!
//! Each guest home starts as a toolstack creates it: `name`, `domid`, `vm-data/` (read-only to
//! the guest) and `data/` (owned by the guest); with `--toolstack xapi` or `libxl` also the
//! nodes XAPI's xenopsd or libxl add (see [`Toolstack`]). A path can be denied to a guest the
//! way a toolstack does it, with Debian's `xenstore-chmod` on the dom0 socket.
//!
//! Adding one more message type: a match arm in `server.rs`'s `handle_typed`, and a store
//! operation in `store.rs` if it changes the tree.
// A test crate: it creates its own sockets by path, outside any guest.
#![allow(clippy::disallowed_methods)]

#[cfg(unix)]
mod server;
#[cfg(unix)]
pub mod store;

#[cfg(unix)]
pub use server::{Config, TestXenstored};
#[cfg(unix)]
pub use store::{Quota, Toolstack};
