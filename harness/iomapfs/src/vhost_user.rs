//! virtio-fs over vhost-user: QEMU's `vhost-user-fs` device hands the guest's FUSE
//! requests to this process as virtqueue descriptor chains (what virtiofsd speaks), and the
//! same `Server` answers them. The guest mounts `-t virtiofs TAG`; nothing is mounted here.
//!
//! A chain is one request: its device-readable part is the in header and arguments, its
//! device-writable part receives the out header and reply. Queue 0 is the high-priority
//! queue (FORGET, BATCH_FORGET, INTERRUPT: never answered), queues 1.. carry requests,
//! each served by its own thread. No DAX window: SETUPMAPPING is not offered (ENOSYS).
//!
//! A DESTROY (the guest's umount) closes the filesystem; the next INIT (a new mount in the
//! same guest) opens it again. When the frontend disconnects (QEMU quit), the filesystem is
//! closed and `serve` returns.
//!
//! With a `Recorder` (`-o record=FILE`), every request a filesystem serves and every reply
//! go to the recording through the same `record::Recording` wrapper as the other
//! transports: one recording for the backend's life, its mounts one after the other.

use std::io::{self, IoSlice, Read, Write};
use std::ops::Deref;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use virtio_queue::{DescriptorChain, QueueT, Reader, Writer};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::errno::Errno;
use crate::record::{Recorder, Recording};
use crate::server::{IomapReach, Server};
use crate::session::Committer;
use crate::transport::Transport;

/// Descriptors per queue we accept (QEMU's `queue-size` must not exceed it).
pub const MAX_QUEUE_SIZE: usize = 1024;

/// Most request queues offered (`threads=` above it is capped): each queue's thread is one
/// bit of vhost-user-backend's u64 thread masks, and more threads than this buy nothing.
pub const MAX_REQUEST_QUEUES: usize = 16;

/// Opens the filesystem for a FUSE session: the first, and each one after a DESTROY.
pub type OpenServer = Box<dyn Fn() -> anyhow::Result<Server> + Send + Sync>;

type Memory = GuestMemoryAtomic<GuestMemoryMmap>;

/// What was wrong with a descriptor chain. The chain goes back to the guest unanswered
/// (used length 0); nothing a guest puts in a chain makes the server panic.
#[derive(Debug, PartialEq, Eq)]
pub enum ChainError {
    /// A device-readable descriptor after a device-writable one (virtio 1.1, 2.6.4.2).
    ReadableAfterWritable,
    /// The request is longer than the largest request the server reads.
    TooLong { len: u64, max: usize },
    /// A descriptor points outside guest memory (or the chain is otherwise unusable).
    Memory(String),
    /// Fewer bytes than a FUSE in header.
    Short(usize),
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainError::ReadableAfterWritable => {
                write!(
                    f,
                    "a device-readable descriptor follows a device-writable one"
                )
            }
            ChainError::TooLong { len, max } => {
                write!(f, "request of {len} bytes, more than the {max} accepted")
            }
            ChainError::Memory(e) => write!(f, "unusable descriptor: {e}"),
            ChainError::Short(n) => write!(f, "request of {n} bytes, shorter than a FUSE header"),
        }
    }
}

/// Serves one descriptor chain: copies its readable part out, hands it to `handle` with a
/// transport that keeps the reply, and copies the reply into the writable part. Returns
/// the number of bytes written (the used length). A reply that does not fit is replaced by
/// an EIO header for the same request, so the guest never reads a truncated reply.
pub fn serve_chain<M>(
    chain: DescriptorChain<M>,
    max_request: usize,
    handle: impl FnOnce(&[u8], Arc<dyn Transport>),
) -> Result<u32, ChainError>
where
    M: Deref<Target = GuestMemoryMmap> + Clone,
{
    let mut readable: u64 = 0;
    let mut seen_writable = false;
    for desc in chain.clone() {
        if desc.is_write_only() {
            seen_writable = true;
        } else if seen_writable {
            return Err(ChainError::ReadableAfterWritable);
        } else {
            readable += u64::from(desc.len());
            if readable > max_request as u64 {
                return Err(ChainError::TooLong {
                    len: readable,
                    max: max_request,
                });
            }
        }
    }
    let mem = chain.memory();
    let mut reader =
        Reader::<()>::new(mem, chain.clone()).map_err(|e| ChainError::Memory(e.to_string()))?;
    // Checked again on what the reader holds: the guest may have changed the descriptor
    // table since the walk above.
    let len = reader.available_bytes();
    if len > max_request {
        return Err(ChainError::TooLong {
            len: len as u64,
            max: max_request,
        });
    }
    let mut request = vec![0u8; len];
    reader
        .read_exact(&mut request)
        .map_err(|e| ChainError::Memory(e.to_string()))?;
    if request.len() < fuse_wire::structs::IN_HEADER_LEN {
        return Err(ChainError::Short(request.len()));
    }
    let mut writer =
        Writer::<()>::new(mem, chain.clone()).map_err(|e| ChainError::Memory(e.to_string()))?;

    let reply = Arc::new(ReplyBuf::default());
    handle(&request, reply.clone());
    let Some(mut reply) = reply.take() else {
        return Ok(0);
    };
    if reply.len() > writer.available_bytes() {
        tracing::warn!(
            "reply of {} bytes does not fit the {} writable bytes: answered EIO",
            reply.len(),
            writer.available_bytes()
        );
        reply = too_long_reply(&reply);
        if reply.len() > writer.available_bytes() {
            return Ok(0);
        }
    }
    writer
        .write_all(&reply)
        .map_err(|e| ChainError::Memory(e.to_string()))?;
    Ok(writer.bytes_written() as u32)
}

/// An EIO out header for the request a too long reply answered.
fn too_long_reply(reply: &[u8]) -> Vec<u8> {
    use zerocopy::{FromBytes, IntoBytes};
    let unique = fuse_wire::structs::OutHeader::read_from_prefix(reply)
        .map(|(h, _)| h.unique)
        .unwrap_or(0);
    fuse_wire::structs::OutHeader {
        len: fuse_wire::structs::OUT_HEADER_LEN as u32,
        error: fuse_wire::reply::wire_error(libc::EIO),
        unique,
    }
    .as_bytes()
    .to_vec()
}

/// The reply to one request, kept until it is copied into the chain.
#[derive(Default)]
struct ReplyBuf(Mutex<Option<Vec<u8>>>);

impl ReplyBuf {
    fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Transport for ReplyBuf {
    fn receive(&self, _: &mut [u8]) -> io::Result<Option<usize>> {
        Ok(None)
    }

    fn send(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        let msg: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            // A chain carries one reply; a second message has nowhere to go.
            return Err(io::Error::other("a second reply to one request"));
        }
        *slot = Some(msg);
        Ok(())
    }

    fn for_worker(&self) -> io::Result<Arc<dyn Transport>> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    fn backing_open(&self, _: std::os::fd::RawFd) -> io::Result<u32> {
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
}

/// The server's own connection for messages that are not replies. virtio-fs has no
/// notification queue here, and classic mode sends none.
struct NoNotifications;

impl Transport for NoNotifications {
    fn receive(&self, _: &mut [u8]) -> io::Result<Option<usize>> {
        Ok(None)
    }
    fn send(&self, _: &[IoSlice<'_>]) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
    fn for_worker(&self) -> io::Result<Arc<dyn Transport>> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    fn backing_open(&self, _: std::os::fd::RawFd) -> io::Result<u32> {
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
}

/// The filesystem of the current FUSE session, reopened after a DESTROY.
struct Sessions {
    open: OpenServer,
    current: Mutex<Option<Live>>,
    recorder: Option<Arc<Recorder>>,
}

struct Live {
    server: Arc<Server>,
    committer: Committer,
}

impl Sessions {
    /// Opens the filesystem now, so a bad source is reported before QEMU connects.
    fn start(open: OpenServer, recorder: Option<Arc<Recorder>>) -> anyhow::Result<Sessions> {
        let sessions = Sessions {
            open,
            current: Mutex::new(None),
            recorder,
        };
        sessions.server(true)?;
        Ok(sessions)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Live>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current session's server; after a DESTROY, only an INIT (`reopen`) opens the
    /// filesystem again: a late FORGET from the high-priority queue must not.
    fn server(&self, reopen: bool) -> anyhow::Result<Option<Arc<Server>>> {
        let mut current = self.lock();
        if let Some(live) = current.as_ref() {
            return Ok(Some(live.server.clone()));
        }
        if !reopen {
            return Ok(None);
        }
        let server = Arc::new((self.open)()?);
        server.attach(
            self.recorded(Arc::new(NoNotifications)),
            IomapReach::VirtioFs,
        );
        let committer = Committer::start(server.clone())?;
        *current = Some(Live {
            server: server.clone(),
            committer,
        });
        Ok(Some(server))
    }

    /// `transport`, through the recording when there is one.
    fn recorded(&self, transport: Arc<dyn Transport>) -> Arc<dyn Transport> {
        match &self.recorder {
            Some(r) => Arc::new(Recording::new(transport, r.clone())),
            None => transport,
        }
    }

    /// Answers one request.
    fn handle(&self, request: &[u8], reply: Arc<dyn Transport>) {
        let header = fuse_wire::request::parse_header(request).ok();
        let opcode = header.and_then(|h| fuse_wire::Opcode::try_from(h.opcode).ok());
        let answer_eio = || {
            use fuse_wire::Opcode::{BatchForget, Forget, Interrupt};
            // The high-priority queue's requests get no reply, whatever happens.
            let silent = matches!(opcode, Some(Forget | BatchForget | Interrupt));
            if let (Some(h), false) = (header, silent) {
                let _ = crate::reply::send(reply.as_ref(), h.unique, &Err(Errno(libc::EIO)));
            }
        };
        let server = match self.server(opcode == Some(fuse_wire::Opcode::Init)) {
            Ok(Some(s)) => s,
            Ok(None) => {
                tracing::debug!("{opcode:?} after DESTROY, before a new INIT: not served");
                return answer_eio();
            }
            Err(e) => {
                tracing::error!("cannot open the filesystem again: {e:#}");
                return answer_eio();
            }
        };
        // Recorded: what a filesystem serves (a request between a DESTROY and the next
        // INIT reaches none, and its EIO is the backend's own).
        if let Some(r) = &self.recorder {
            r.request(request);
        }
        let reply = self.recorded(reply);
        if let Err(e) = crate::dispatch::handle_one(&server, reply.as_ref(), request) {
            tracing::warn!("cannot answer a request: {e}");
        }
        if server.is_finished() {
            // DESTROY answered: the filesystem is closed; a new mount opens it again.
            let mut current = self.lock();
            if current
                .as_ref()
                .is_some_and(|l| Arc::ptr_eq(&l.server, &server))
            {
                if let Some(live) = current.take() {
                    live.committer.stop();
                }
                tracing::info!("the guest unmounted (DESTROY): filesystem closed");
            }
        }
    }

    /// Makes everything durable (a stop signal arrived).
    fn sync(&self) {
        let server = self.lock().as_ref().map(|l| l.server.clone());
        if let Some(server) = server {
            if let Err(e) = server.sync() {
                tracing::warn!("sync failed: {e:?}");
            }
        }
    }

    /// Closes the filesystem of a session that never saw DESTROY, and finishes the
    /// recording: the backend serves no more.
    fn close(&self) -> anyhow::Result<()> {
        let closed = match self.lock().take() {
            Some(live) => {
                live.committer.stop();
                live.server.shutdown().map_err(|Errno(e)| {
                    anyhow::anyhow!(
                        "closing the filesystem failed: {}",
                        io::Error::from_raw_os_error(e)
                    )
                })
            }
            None => Ok(()),
        };
        // After the close: what closing sends is part of the session.
        if let Some(r) = &self.recorder {
            r.finish();
        }
        closed
    }
}

/// The vhost-user device: queue 0 high priority, then `request_queues` request queues,
/// one thread each.
struct VirtioFsBackend {
    sessions: Arc<Sessions>,
    request_queues: usize,
    mem: RwLock<Memory>,
}

impl VirtioFsBackend {
    /// Takes every available chain off one queue, answering each, until the guest has
    /// added no more (notifications off while draining, checked again after).
    fn process_queue(&self, vring: &VringRwLock, queue: usize) -> io::Result<()> {
        let mem = self.mem.read().unwrap_or_else(|p| p.into_inner()).memory();
        let max_request = crate::session::buffer_size();
        let vq = |e: virtio_queue::Error| io::Error::other(format!("queue {queue}: {e}"));
        loop {
            vring.disable_notification().map_err(vq)?;
            loop {
                let chain = vring
                    .get_mut()
                    .get_queue_mut()
                    .pop_descriptor_chain(mem.clone());
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                let used = serve_chain(chain, max_request, |request, reply| {
                    self.sessions.handle(request, reply)
                })
                .unwrap_or_else(|e| {
                    tracing::warn!(queue, head, "descriptor chain refused: {e}");
                    0
                });
                vring.add_used(head, used).map_err(vq)?;
                if vring.needs_notification().map_err(vq)? {
                    vring.signal_used_queue()?;
                }
            }
            if !vring.enable_notification().map_err(vq)? {
                return Ok(());
            }
        }
    }
}

impl VhostUserBackend for VirtioFsBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        1 + self.request_queues
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // MQ: QEMU asks how many queues there are before using num-request-queues.
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&self, _enabled: bool) {
        // The vrings know it; draining with notifications off works either way.
    }

    fn update_memory(&self, mem: Memory) -> io::Result<()> {
        *self.mem.write().unwrap_or_else(|p| p.into_inner()) = mem;
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        // One thread per queue: thread i serves queue i.
        (0..self.num_queues()).map(|q| 1u64 << q).collect()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC) {
            Ok(pair) => Some(pair),
            Err(e) => {
                tracing::warn!("cannot create a queue thread's exit event: {e}");
                None
            }
        }
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(io::Error::other(format!("unexpected event set {evset:?}")));
        }
        let vring = vrings
            .get(usize::from(device_event))
            .ok_or_else(|| io::Error::other(format!("no vring for event {device_event}")))?;
        self.process_queue(vring, thread_id)
    }
}

/// Stops a running backend from another thread (a signal).
#[derive(Clone)]
pub struct Stopper {
    sessions: Arc<Sessions>,
    connection: Arc<Mutex<Option<vhost_user_backend::ShutdownHandle>>>,
}

impl Stopper {
    /// Syncs, then drops the frontend's connection (`serve` then closes the filesystem and
    /// returns). Before a frontend connected there is nothing to drop: the filesystem is
    /// closed and the process exits.
    pub fn stop(&self) {
        self.sessions.sync();
        match self
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(handle) => handle.shutdown(),
            None => std::process::exit(i32::from(self.close_now().is_err())),
        }
    }

    /// Closes the filesystem at once (a second signal).
    pub fn close_now(&self) -> anyhow::Result<()> {
        self.sessions.close()
    }
}

/// A vhost-user-fs backend with the filesystem open.
pub struct VirtioFs {
    sessions: Arc<Sessions>,
    daemon: VhostUserDaemon<Arc<VirtioFsBackend>>,
    connection: Arc<Mutex<Option<vhost_user_backend::ShutdownHandle>>>,
}

impl VirtioFs {
    /// Opens the filesystem; nothing listens yet (`serve` does). With `recorder`, every
    /// session is recorded to it, finished when the filesystem is closed for good.
    pub fn new(
        open: OpenServer,
        request_queues: usize,
        recorder: Option<Arc<Recorder>>,
    ) -> anyhow::Result<Self> {
        let sessions = Arc::new(Sessions::start(open, recorder)?);
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let backend = Arc::new(VirtioFsBackend {
            sessions: sessions.clone(),
            request_queues: request_queues.clamp(1, MAX_REQUEST_QUEUES),
            mem: RwLock::new(mem.clone()),
        });
        let daemon = VhostUserDaemon::new("iomapfs-virtiofs".into(), backend, mem)
            .map_err(|e| anyhow::anyhow!("cannot start the vhost-user backend: {e}"))?;
        Ok(VirtioFs {
            sessions,
            daemon,
            connection: Arc::default(),
        })
    }

    pub fn stopper(&self) -> Stopper {
        Stopper {
            sessions: self.sessions.clone(),
            connection: self.connection.clone(),
        }
    }

    /// Creates the socket at `socket` (replacing a stale one), waits for the frontend,
    /// serves it until it disconnects (or `Stopper::stop`), then closes the filesystem.
    pub fn serve(mut self, socket: &Path) -> anyhow::Result<()> {
        let mut listener = Listener::new(socket, true)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", socket.display()))?;
        self.daemon
            .start(&mut listener)
            .map_err(|e| anyhow::anyhow!("vhost-user frontend: {e}"))?;
        tracing::info!("vhost-user frontend connected");
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = self.daemon.shutdown_handle();
        let served = match self.daemon.wait() {
            // QEMU quit or closed the socket: the normal end of a session.
            Err(vhost_user_backend::Error::HandleRequest(
                vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
            )) => Ok(()),
            other => other,
        };
        for handler in self.daemon.get_epoll_handlers() {
            handler.send_exit_event();
        }
        tracing::info!("vhost-user frontend gone: closing the filesystem");
        let closed = self.sessions.close();
        served.map_err(|e| anyhow::anyhow!("vhost-user session: {e}"))?;
        closed.context("after the vhost-user session")
    }
}

#[cfg(test)]
mod tests;
