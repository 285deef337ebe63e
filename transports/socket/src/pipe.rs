//! `pipe:\\.\pipe\NAME`: a Windows named pipe for local tools (guestctl on the guest itself, an
//! image builder's script), served like the unix socket is on Linux.
//!
//! Every instance is created with:
//! - a security descriptor that lets only SYSTEM and the Administrators group in
//!   ([`PIPE_SDDL`]; protected, so nothing is inherited);
//! - `PIPE_REJECT_REMOTE_CLIENTS`: no connections over SMB from other machines;
//! - the first one with `FILE_FLAG_FIRST_PIPE_INSTANCE`, so a second guestd (or anything that
//!   already owns the name) makes start-up fail instead of sharing the name with it.
//!
//! Connections go through the accept loop every listener shares (`accept.rs`: at most 16 at
//! once). The next instance is created before a connected one is handed to the conversation, so
//! a client never finds the pipe busy for longer than it takes to create an instance. A
//! conversation that ends in an error (a peer that does not read its replies) is cut off with
//! `DisconnectNamedPipe`: tokio keeps a pending write, and with it the instance, alive past the
//! drop otherwise.
//!
//! Names are parsed by core's channel grammar (`guestd_core::channel_spec::pipe_path`); the
//! listener exists only on Windows.

/// SYSTEM and built-in Administrators: full access; nobody else; no inherited entries.
pub const PIPE_SDDL: &str = "D:P(A;;GA;;;SY)(A;;GA;;;BA)";

#[cfg(windows)]
pub use server::PipeTransport;

#[cfg(windows)]
mod server {
    use std::io;
    use std::sync::Arc;

    use guestd_core::stream::StreamOptions;
    use guestd_core::{BoxFuture, Dispatcher, Shutdown, Transport, TransportError};
    use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
    use tracing::info;

    use super::PIPE_SDDL;
    use crate::accept::{
        Acceptor, DEFAULT_MAX_CONNECTIONS, ListenerSettings, Served, serve_listener,
    };

    /// A named-pipe listener: one waiting instance at a time, any number connected.
    #[derive(Debug)]
    pub struct PipeTransport {
        name: String,
        acceptor: PipeAcceptor,
        options: StreamOptions,
    }

    impl PipeTransport {
        /// Create the first instance of `name` (a full `\\.\pipe\NAME`, see
        /// `guestd_core::channel_spec::pipe_path`). Fails when the name is taken. Must run inside a
        /// tokio runtime.
        pub fn bind(name: &str, options: StreamOptions) -> Result<Self, TransportError> {
            let security = Arc::new(glue::SecurityDescriptor::from_sddl(PIPE_SDDL).map_err(
                TransportError::io(format!("pipe {name}: the security descriptor {PIPE_SDDL}")),
            )?);
            let in_use = || {
                TransportError::Config(format!(
                    "pipe {name}: the name is already in use (another guestd, or another \
                     program, serves it); stop it or choose another name"
                ))
            };
            let first = create(name, &security, true).map_err(|e| {
                if e.raw_os_error() == Some(glue::ERROR_ACCESS_DENIED) {
                    in_use()
                } else {
                    TransportError::io(format!("create pipe {name}"))(e)
                }
            })?;
            // Windows refuses a taken name through FILE_FLAG_FIRST_PIPE_INSTANCE; Wine ignores
            // that flag (CreateNamedPipeW always opens-or-creates), so count the instances too.
            if glue::instances(&first).is_ok_and(|n| n > 1) {
                return Err(in_use());
            }
            info!(pipe = %name, "listening");
            Ok(Self {
                name: name.to_owned(),
                acceptor: PipeAcceptor {
                    name: name.to_owned(),
                    security,
                    waiting: first,
                    count: 0,
                },
                options,
            })
        }
    }

    fn create(
        name: &str,
        security: &glue::SecurityDescriptor,
        first: bool,
    ) -> io::Result<NamedPipeServer> {
        let mut options = ServerOptions::new();
        options
            .first_pipe_instance(first)
            .reject_remote_clients(true);
        security.create(&options, name)
    }

    #[derive(Debug)]
    struct PipeAcceptor {
        name: String,
        security: Arc<glue::SecurityDescriptor>,
        /// The instance clients connect to next.
        waiting: NamedPipeServer,
        count: u64,
    }

    impl Acceptor for PipeAcceptor {
        type Stream = NamedPipeServer;

        async fn accept(&mut self) -> io::Result<Option<(NamedPipeServer, String)>> {
            let connected = self.waiting.connect().await;
            // A new instance replaces the waiting one whether it connected or broke (a broken
            // instance cannot be reused); creating it first keeps the name always open.
            let next = create(&self.name, &self.security, false)?;
            let instance = std::mem::replace(&mut self.waiting, next);
            connected?;
            self.count += 1;
            Ok(Some((instance, format!("client #{}", self.count))))
        }
    }

    impl Transport for PipeTransport {
        fn describe(&self) -> String {
            format!("pipe:{}", self.name)
        }

        fn serve(
            self: Box<Self>,
            dispatcher: Arc<Dispatcher>,
            shutdown: Shutdown,
        ) -> BoxFuture<'static, Result<(), TransportError>> {
            let settings =
                ListenerSettings::new(self.describe(), self.options, DEFAULT_MAX_CONNECTIONS);
            Box::pin(serve_listener(
                self.acceptor,
                |pipe: NamedPipeServer| async move { Ok(pipe) },
                settings,
                dispatcher,
                shutdown,
            ))
        }
    }

    impl Served for NamedPipeServer {
        /// A write still pending to a peer that does not read keeps the instance (and the
        /// peer) open after the drop: cut it off.
        fn cut_off(&mut self) {
            let _ = self.disconnect();
        }
    }

    #[allow(unsafe_code)]
    mod glue {
        use std::io;
        use std::os::windows::io::AsRawHandle;

        use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
        use windows_sys::Win32::Foundation::{FALSE, LocalFree};
        use windows_sys::Win32::Security::Authorization::{
            ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
        };
        use windows_sys::Win32::Security::{PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES};
        use windows_sys::Win32::System::Pipes::GetNamedPipeHandleStateW;

        pub const ERROR_ACCESS_DENIED: i32 =
            windows_sys::Win32::Foundation::ERROR_ACCESS_DENIED as i32;

        /// How many instances of this pipe's name exist (ours included).
        pub fn instances(pipe: &NamedPipeServer) -> io::Result<u32> {
            let mut count = 0u32;
            // SAFETY: a valid pipe handle; every out-pointer but the instance count is null,
            // which the API allows; the user-name buffer has size 0.
            let ok = unsafe {
                GetNamedPipeHandleStateW(
                    pipe.as_raw_handle(),
                    std::ptr::null_mut(),
                    &mut count,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    0,
                )
            };
            if ok == 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(count)
        }

        /// A self-relative security descriptor allocated by Windows (freed on drop).
        #[derive(Debug)]
        pub struct SecurityDescriptor(PSECURITY_DESCRIPTOR);

        // SAFETY: the descriptor is immutable after creation and only read by CreateNamedPipeW.
        unsafe impl Send for SecurityDescriptor {}
        // SAFETY: as above; concurrent reads of an immutable buffer are fine.
        unsafe impl Sync for SecurityDescriptor {}

        impl SecurityDescriptor {
            pub fn from_sddl(sddl: &str) -> io::Result<Self> {
                let wide: Vec<u16> = sddl.encode_utf16().chain(Some(0)).collect();
                let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
                // SAFETY: `wide` is NUL-terminated and alive for the call; `sd` receives a
                // LocalAlloc'ed buffer that Drop frees; the size out-pointer may be null.
                let ok = unsafe {
                    ConvertStringSecurityDescriptorToSecurityDescriptorW(
                        wide.as_ptr(),
                        SDDL_REVISION_1,
                        &mut sd,
                        std::ptr::null_mut(),
                    )
                };
                if ok == 0 || sd.is_null() {
                    return Err(io::Error::last_os_error());
                }
                Ok(Self(sd))
            }

            /// Create a pipe instance carrying this descriptor.
            pub fn create(
                &self,
                options: &ServerOptions,
                name: &str,
            ) -> io::Result<NamedPipeServer> {
                let mut attributes = SECURITY_ATTRIBUTES {
                    nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
                    lpSecurityDescriptor: self.0,
                    // Commands guestd runs must not hold the pipe open.
                    bInheritHandle: FALSE,
                };
                // SAFETY: `attributes` is a valid SECURITY_ATTRIBUTES whose descriptor lives as
                // long as `self`; CreateNamedPipeW copies what it needs.
                unsafe {
                    options.create_with_security_attributes_raw(
                        name,
                        (&mut attributes as *mut SECURITY_ATTRIBUTES).cast(),
                    )
                }
            }
        }

        impl Drop for SecurityDescriptor {
            fn drop(&mut self) {
                // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW
                // with LocalAlloc, freed once.
                unsafe { LocalFree(self.0) };
            }
        }
    }
}
