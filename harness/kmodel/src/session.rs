//! One connection to a server: the iomapfs process (spawned with `--kernel-socket`) and the
//! SOCK_SEQPACKET socket that stands in for /dev/fuse. One packet = one request or reply.
//! A [`Session`] has one request outstanding at a time; [`Session::share`] turns it into a
//! [`SharedSession`] that several kernel threads drive at once.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, Shutdown, SockFlag, SockType, UnixAddr};

use crate::error::{Error, Result};
use crate::wire::{Reply, Request};

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// The `iomapfs` binary.
    pub binary: PathBuf,
    /// The ext4 image it serves.
    pub image: PathBuf,
    /// Words for `-o` (e.g. `fault=map_off_by_one_block`).
    pub options: Vec<String>,
    /// Where the socket and the server log go.
    pub workdir: PathBuf,
    /// Environment variables set for the server only (not this process, whose other
    /// threads may start servers of their own).
    pub env: Vec<(String, std::ffi::OsString)>,
}

/// Largest message either side sends: a 1 MiB payload plus headers.
const MAX_MESSAGE: usize = (1 << 20) + 4096;
/// How long the server may take to create its socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server that answered DESTROY may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// A notification the server sent (unique 0).
#[derive(Debug, Clone)]
pub struct Notification {
    pub code: i32,
    pub payload: Vec<u8>,
    /// Position in the server's message stream (see [`Reply::seq`]).
    pub seq: u64,
}

/// The connection and, when we started it, the server process.
pub struct Session {
    sock: OwnedFd,
    child: Option<Child>,
    log: Option<PathBuf>,
    unique: u64,
    /// Messages received so far (replies and notifications).
    received: u64,
    buf: Vec<u8>,
    /// Notifications not yet looked at by the kernel model.
    pub notifications: Vec<Notification>,
    /// Requests sent, by opcode.
    pub counts: BTreeMap<String, u64>,
    /// Print every request and reply (KMODEL_TRACE=1).
    trace: bool,
    reply_timeout: Duration,
}

impl Session {
    /// Starts `iomapfs IMAGE --kernel-socket SOCK [-o ...]` and connects to it.
    pub fn spawn(spec: &ServerSpec, reply_timeout: Duration) -> Result<Session> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sock_path = spec
            .workdir
            .join(format!("kmodel-{}-{n}.sock", std::process::id()));
        let log = spec.workdir.join(format!("iomapfs-{n}.log"));
        let log_file =
            File::create(&log).map_err(|e| Error::io(format!("create {}", log.display()), e))?;
        let mut cmd = Command::new(&spec.binary);
        cmd.arg(&spec.image).arg("--kernel-socket").arg(&sock_path);
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        if !spec.options.is_empty() {
            cmd.arg("-o").arg(spec.options.join(","));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let mut child = cmd.spawn().map_err(|e| {
            Error::io(
                format!("cannot start the server {}", spec.binary.display()),
                e,
            )
        })?;
        let sock = match connect_when_ready(&sock_path, &mut child) {
            Ok(sock) => sock,
            Err(what) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(Error::Server(format!("{what}\n  server log:\n{log}")));
            }
        };
        let mut session = Session::with_socket(sock, reply_timeout)?;
        session.child = Some(child);
        session.log = Some(log);
        Ok(session)
    }

    /// Wraps an already connected SEQPACKET socket (a fake server in tests).
    pub fn with_socket(sock: OwnedFd, reply_timeout: Duration) -> Result<Session> {
        use nix::sys::time::{TimeVal, TimeValLike};
        let timeout = TimeVal::microseconds(reply_timeout.as_micros().min(i64::MAX as u128) as i64);
        socket::setsockopt(&sock, socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| Error::io("set the socket's receive timeout", e.into()))?;
        Ok(Session {
            sock,
            child: None,
            log: None,
            unique: 0,
            received: 0,
            buf: vec![0u8; MAX_MESSAGE],
            notifications: Vec::new(),
            counts: BTreeMap::new(),
            trace: std::env::var_os("KMODEL_TRACE").is_some_and(|v| v != "0"),
            reply_timeout,
        })
    }

    /// Sends a request and waits for its reply; notifications that arrive meanwhile are
    /// queued in `self.notifications`.
    pub fn call(&mut self, req: &Request) -> Result<Reply> {
        let unique = self.send(req)?;
        loop {
            let msg = self.receive(req)?;
            self.received += 1;
            let view = fuse_wire::parse_reply(&msg).map_err(|e| Error::Violation {
                rule: format!("reply framing (fuse_dev_do_write): {e}"),
                request: req.summary(),
                reply: hex_prefix(&msg),
            })?;
            if view.is_notification() {
                self.notifications.push(Notification {
                    code: view.header.error,
                    payload: view.payload.to_vec(),
                    seq: self.received,
                });
                continue;
            }
            if view.header.unique != unique {
                return Err(Error::Violation {
                    rule: format!(
                        "reply for unique {} while only {unique} is outstanding (the kernel answers ENOENT)",
                        view.header.unique
                    ),
                    request: req.summary(),
                    reply: hex_prefix(&msg),
                });
            }
            let reply = Reply {
                error: view.header.error,
                payload: view.payload.to_vec(),
                seq: self.received,
            };
            if self.trace {
                eprintln!("kmodel: {} -> {}", req.summary(), reply.summary());
            }
            return Ok(reply);
        }
    }

    /// Sends a request that gets no reply (FORGET).
    pub fn send_only(&mut self, req: &Request) -> Result<()> {
        self.send(req).map(|_| ())
    }

    /// The server's process id, when this session started it.
    pub fn server_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn send(&mut self, req: &Request) -> Result<u64> {
        // Kernel uniques are even; odd ones are reserved for interrupts.
        self.unique += 2;
        let bytes = req.encode(self.unique);
        *self.counts.entry(format!("{:?}", req.opcode)).or_default() += 1;
        match socket::send(self.sock.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) if n == bytes.len() => Ok(self.unique),
            Ok(n) => Err(Error::Server(format!(
                "short send of {}: {n} of {} bytes",
                req.summary(),
                bytes.len()
            ))),
            Err(e) => Err(self.dead(&format!("cannot send {}: {e}", req.summary()))),
        }
    }

    fn receive(&mut self, req: &Request) -> Result<Vec<u8>> {
        match recv_trunc(&self.sock, &mut self.buf[..]) {
            Ok((_, 0)) => Err(self.dead(&format!(
                "the server hung up while {} waited for its reply",
                req.summary()
            ))),
            Ok((_, n)) if n > self.buf.len() => Err(Error::Server(format!(
                "reply to {} is {n} bytes, more than the {} a request buffer holds",
                req.summary(),
                self.buf.len()
            ))),
            Ok((n, _)) => Ok(self.buf[..n].to_vec()),
            Err(Errno::EAGAIN) => Err(self.dead(&format!(
                "no reply to {} within the reply timeout (server hung?)",
                req.summary()
            ))),
            Err(e) => Err(self.dead(&format!(
                "receiving the reply to {} failed: {e}",
                req.summary()
            ))),
        }
    }

    /// An error that says whether the server process is still there, with its log tail.
    fn dead(&mut self, what: &str) -> Error {
        let status = match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => format!("; server exited: {status}"),
            Some(Ok(None)) => "; server still running".to_string(),
            _ => String::new(),
        };
        Error::Server(format!("{what}{status}{}", self.log_tail()))
    }

    /// The last lines of the server's log, prefixed for appending to a message.
    pub fn log_tail(&self) -> String {
        log_tail_of(self.log.as_deref())
    }

    /// After DESTROY: hang up and wait for the server to exit successfully.
    pub fn finish(mut self) -> Result<()> {
        let _ = socket::shutdown(self.sock.as_raw_fd(), Shutdown::Both);
        let log_tail = self.log_tail();
        match self.child.take() {
            Some(child) => wait_for_exit(child, &log_tail),
            None => Ok(()),
        }
    }

    /// Turns this connection into one several kernel threads share (see [`SharedSession`]);
    /// `on_notification` sees every notification, in the order the server sent them.
    pub fn share(
        mut self,
        on_notification: Box<dyn Fn(Notification) + Send + Sync>,
    ) -> Result<Arc<SharedSession>> {
        let sock = Arc::new(
            self.sock
                .try_clone()
                .map_err(|e| Error::io("dup the session socket", e))?,
        );
        let inner = Arc::new(SharedInner {
            waiting: Mutex::new(HashMap::new()),
            trouble: Mutex::new(Vec::new()),
            on_notification,
        });
        let reader = {
            let (sock, inner) = (sock.clone(), inner.clone());
            std::thread::Builder::new()
                .name("kmodel-reader".into())
                .spawn(move || read_loop(&sock, &inner))
                .map_err(|e| Error::io("start the reader thread", e))?
        };
        Ok(Arc::new(SharedSession {
            sock,
            inner,
            next_unique: AtomicU64::new(self.unique),
            counts: Mutex::new(std::mem::take(&mut self.counts)),
            reader: Mutex::new(Some(reader)),
            child: Mutex::new(self.child.take()),
            log: self.log.take(),
            reply_timeout: self.reply_timeout,
            trace: self.trace,
        }))
    }
}

/// Waits for a server that answered DESTROY to exit successfully.
fn wait_for_exit(mut child: Child, log_tail: &str) -> Result<()> {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(Error::Server(format!(
                    "server exited with {status} after DESTROY{log_tail}"
                )))
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Server(format!(
                    "server still running {EXIT_TIMEOUT:?} after DESTROY; killed{log_tail}"
                )));
            }
            Err(e) => return Err(Error::io("wait for the server", e)),
        }
    }
}

/// One connection driven by several kernel threads at once, as a kernel drives /dev/fuse:
/// any number of requests outstanding, replies matched by `unique` whatever their order.
/// One reader thread receives everything; it hands replies to the waiting callers and
/// notifications to the kernel model, so both are seen in the order the server sent them.
pub struct SharedSession {
    sock: Arc<OwnedFd>,
    inner: Arc<SharedInner>,
    next_unique: AtomicU64,
    counts: Mutex<BTreeMap<String, u64>>,
    reader: Mutex<Option<std::thread::JoinHandle<()>>>,
    child: Mutex<Option<Child>>,
    log: Option<PathBuf>,
    reply_timeout: Duration,
    trace: bool,
}

/// What the reader thread shares with the callers.
struct SharedInner {
    /// Callers waiting for a reply, by unique.
    waiting: Mutex<HashMap<u64, mpsc::Sender<Reply>>>,
    /// Broken messages and replies nobody waits for, reported to the next caller.
    trouble: Mutex<Vec<Error>>,
    on_notification: Box<dyn Fn(Notification) + Send + Sync>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The reader thread: until the socket is shut down or the server hangs up.
fn read_loop(sock: &OwnedFd, inner: &SharedInner) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut received = 0u64;
    loop {
        let n = match recv_trunc(sock, &mut buf[..]) {
            Ok((_, 0)) => break,
            Ok((n, full)) if full > n => {
                lock(&inner.trouble).push(Error::Server(format!(
                    "a {full}-byte message, more than the {n} a request buffer holds"
                )));
                continue;
            }
            Ok((n, _)) => n,
            // The receive timeout only bounds each wait; callers time out on their own.
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(_) => break,
        };
        received += 1;
        let msg = &buf[..n];
        let view = match fuse_wire::parse_reply(msg) {
            Ok(v) => v,
            Err(e) => {
                lock(&inner.trouble).push(Error::Violation {
                    rule: format!("reply framing (fuse_dev_do_write): {e}"),
                    request: format!("(message {received} on the shared connection)"),
                    reply: hex_prefix(msg),
                });
                continue;
            }
        };
        if view.is_notification() {
            (inner.on_notification)(Notification {
                code: view.header.error,
                payload: view.payload.to_vec(),
                seq: received,
            });
            continue;
        }
        let reply = Reply {
            error: view.header.error,
            payload: view.payload.to_vec(),
            seq: received,
        };
        let waiter = lock(&inner.waiting).remove(&view.header.unique);
        match waiter {
            Some(tx) => {
                let _ = tx.send(reply);
            }
            None => lock(&inner.trouble).push(Error::Violation {
                rule: format!(
                    "reply for unique {} while no request with it is outstanding (the kernel answers ENOENT)",
                    view.header.unique
                ),
                request: "(shared connection)".into(),
                reply: hex_prefix(msg),
            }),
        }
    }
    // Wake every waiter: their senders are dropped.
    lock(&inner.waiting).clear();
}

impl SharedSession {
    /// Sends a request and waits for its reply (other threads' requests may be answered
    /// meanwhile).
    pub fn call(&self, req: &Request) -> Result<Reply> {
        let unique = self.next_unique.fetch_add(2, Ordering::Relaxed) + 2;
        let (tx, rx) = mpsc::channel();
        lock(&self.inner.waiting).insert(unique, tx);
        if let Err(e) = self.send(req, unique) {
            lock(&self.inner.waiting).remove(&unique);
            return Err(e);
        }
        let reply = match rx.recv_timeout(self.reply_timeout) {
            Ok(reply) => reply,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                lock(&self.inner.waiting).remove(&unique);
                return Err(self.dead(&format!(
                    "no reply to {} within the reply timeout (server hung?)",
                    req.summary()
                )));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(self.dead(&format!(
                    "the server hung up while {} waited for its reply",
                    req.summary()
                )))
            }
        };
        if self.trace {
            eprintln!("kmodel: {} -> {}", req.summary(), reply.summary());
        }
        Ok(reply)
    }

    /// Sends a request that gets no reply (FORGET).
    pub fn send_only(&self, req: &Request) -> Result<()> {
        let unique = self.next_unique.fetch_add(2, Ordering::Relaxed) + 2;
        self.send(req, unique)
    }

    fn send(&self, req: &Request, unique: u64) -> Result<()> {
        let bytes = req.encode(unique);
        *lock(&self.counts)
            .entry(format!("{:?}", req.opcode))
            .or_default() += 1;
        match socket::send(self.sock.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) if n == bytes.len() => Ok(()),
            Ok(n) => Err(Error::Server(format!(
                "short send of {}: {n} of {} bytes",
                req.summary(),
                bytes.len()
            ))),
            Err(e) => Err(self.dead(&format!("cannot send {}: {e}", req.summary()))),
        }
    }

    /// The first broken message or stray reply the reader saw, if any.
    pub fn take_trouble(&self) -> Option<Error> {
        let mut trouble = lock(&self.inner.trouble);
        (!trouble.is_empty()).then(|| trouble.remove(0))
    }

    /// Requests sent so far, by opcode name.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        lock(&self.counts).clone()
    }

    fn dead(&self, what: &str) -> Error {
        let status = match lock(&self.child).as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => format!("; server exited: {status}"),
            Some(Ok(None)) => "; server still running".to_string(),
            _ => String::new(),
        };
        Error::Server(format!(
            "{what}{status}{}",
            log_tail_of(self.log.as_deref())
        ))
    }

    /// After DESTROY: hang up, stop the reader and wait for the server to exit.
    pub fn finish(&self) -> Result<()> {
        self.stop_reader();
        match lock(&self.child).take() {
            Some(child) => wait_for_exit(child, &log_tail_of(self.log.as_deref())),
            None => Ok(()),
        }
    }

    fn stop_reader(&self) {
        let _ = socket::shutdown(self.sock.as_raw_fd(), Shutdown::Both);
        if let Some(reader) = lock(&self.reader).take() {
            let _ = reader.join();
        }
    }
}

impl Drop for SharedSession {
    fn drop(&mut self) {
        if let Some(mut child) = lock(&self.child).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stop_reader();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Connects to `path` once the server listens there; fails early if the server exits.
fn connect_when_ready(path: &Path, child: &mut Child) -> std::result::Result<OwnedFd, String> {
    let addr = UnixAddr::new(path).map_err(|e| format!("socket path {}: {e}", path.display()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let sock = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| format!("cannot create a SEQPACKET socket: {e}"))?;
        match socket::connect(sock.as_raw_fd(), &addr) {
            Ok(()) => return Ok(sock),
            Err(e) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "the server exited before accepting a connection: {status}"
                    ));
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "cannot connect to {} within {START_TIMEOUT:?}: {e}",
                        path.display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// A connected pair for tests that play the server themselves.
pub fn socket_pair() -> Result<(OwnedFd, OwnedFd)> {
    socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::io("socketpair", e.into()))
}

/// Receives one packet: `(bytes copied, the packet's full length)`. With MSG_TRUNC a
/// SEQPACKET recv returns the full length even when the buffer was too small for it.
fn recv_trunc(sock: &OwnedFd, buf: &mut [u8]) -> nix::Result<(usize, usize)> {
    let full = socket::recv(sock.as_raw_fd(), buf, MsgFlags::MSG_TRUNC)?;
    Ok((full.min(buf.len()), full))
}

/// The last lines of a server log, prefixed for appending to a message.
fn log_tail_of(path: Option<&Path>) -> String {
    let Some(path) = path else {
        return String::new();
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n    ");
    if tail.is_empty() {
        String::new()
    } else {
        format!("\n  server log ({}):\n    {tail}", path.display())
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    let shown: String = bytes.iter().take(64).map(|b| format!("{b:02x}")).collect();
    format!("{} bytes: {shown}", bytes.len())
}
