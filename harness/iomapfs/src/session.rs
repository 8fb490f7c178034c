//! The request loop: read a request, hand it to `dispatch`, on one or more threads; a
//! name operation that meets the metadata lock held by another reader's name operation is
//! handed to it.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use fuse_wire::opcode::Opcode;

use crate::dispatch::handle_one;
use crate::errno::Errno;
use crate::server::{answering_handoffs, Server};
use crate::transport::Transport;

/// Size of one request buffer: the largest WRITE plus headers.
pub fn buffer_size() -> usize {
    fuse_wire::consts::request_buffer_size(crate::server::MAX_WRITE)
}

/// Serves requests until the session ends, with `threads` readers and a committer, then
/// flushes and closes the filesystem.
pub fn serve(
    server: Arc<Server>,
    transport: Arc<dyn Transport>,
    threads: usize,
) -> anyhow::Result<()> {
    let committer = Committer::start(server.clone())?;
    let handoff = Arc::new(Handoff::default());
    let mut workers = Vec::new();
    for i in 1..threads.max(1) {
        let t = match transport.for_worker() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("cannot clone the FUSE connection for worker {i}: {e}; continuing with {i} thread(s)");
                break;
            }
        };
        let s = server.clone();
        let h = handoff.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("iomapfs-{i}"))
                .spawn(move || worker_loop(&s, &t, &h))?,
        );
    }
    let main_result = worker_loop(&server, &transport, &handoff);
    for w in workers {
        match w.join() {
            Ok(Err(e)) => tracing::warn!("worker stopped with an error: {e}"),
            Err(_) => tracing::error!("a worker thread panicked"),
            Ok(Ok(())) => {}
        }
    }
    committer.stop();
    let closed = server.shutdown();
    main_result?;
    closed.map_err(|Errno(e)| {
        anyhow::anyhow!(
            "closing the filesystem failed: {}",
            io::Error::from_raw_os_error(e)
        )
    })
}

fn worker_loop(
    server: &Server,
    transport: &Arc<dyn Transport>,
    handoff: &Handoff,
) -> io::Result<()> {
    server.prepare_thread(transport.as_ref());
    let mut buf = vec![0u8; buffer_size()];
    while let Some(n) = transport.receive(&mut buf)? {
        let request = &buf[..n];
        // The queue is answered after every request of this thread's own, even one whose
        // reply failed: what was handed to it must not be left behind.
        let own_then_queue = |own: io::Result<()>| {
            let queued = handoff.drain(server);
            own.and(queued)
        };
        let answered = if !Handoff::is_name_op(request) {
            own_then_queue(handle_one(server, transport.as_ref(), request))
        } else if server.meta_holder_drains() {
            handoff.push(request, transport);
            // The holder answers the queue once its request is done. If it let go before
            // the push, nobody else might: answer it here.
            if server.meta_holder_drains() {
                Ok(())
            } else {
                handoff.drain(server)
            }
        } else {
            own_then_queue(answering_handoffs(|| {
                handle_one(server, transport.as_ref(), request)
            }))
        };
        match answered {
            // The connection went away under us: the session is over.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => break,
            other => other?,
        }
        if server.is_finished() {
            transport.close();
            break;
        }
    }
    Ok(())
}

/// Name operations handed over to the thread that holds the metadata lock. A reader
/// whose name operation would wait for that lock, held by another reader's name operation,
/// queues it instead and goes back to the kernel for the next request; the holder answers
/// the queue as soon as its own request is done, without sleeping in between. On two
/// cores this saves the two context switches of every contended request (futex wait and
/// wake), most of the cost of a name operation. Only a name operation's holder is handed
/// requests: its work after the lock is its reply, where an fsync or a WRITE goes on to
/// write back data for milliseconds.
#[derive(Default)]
struct Handoff {
    queue: Mutex<VecDeque<HandedOver>>,
}

/// A request with the connection it came from: the reply must go back through the same
/// /dev/fuse clone, whose queue the kernel looks the request up in.
type HandedOver = (Vec<u8>, Arc<dyn Transport>);

impl Handoff {
    /// The requests that only do metadata work under the metadata lock, and only send
    /// their reply after it.
    fn is_name_op(request: &[u8]) -> bool {
        let Some(opcode) = fuse_wire::parse_header(request)
            .ok()
            .and_then(|header| Opcode::from_u32(header.opcode))
        else {
            return false;
        };
        matches!(
            opcode,
            Opcode::Lookup
                | Opcode::Forget
                | Opcode::BatchForget
                | Opcode::Setattr
                | Opcode::Mknod
                | Opcode::Mkdir
                | Opcode::Symlink
                | Opcode::Unlink
                | Opcode::Rmdir
                | Opcode::Rename
                | Opcode::Rename2
                | Opcode::Link
                | Opcode::Create
                | Opcode::Open
        )
    }

    fn push(&self, request: &[u8], transport: &Arc<dyn Transport>) {
        self.lock().push_back((request.to_vec(), transport.clone()));
    }

    /// Answers every queued request; the first error is returned once the queue is empty
    /// (each request still gets its answer).
    fn drain(&self, server: &Server) -> io::Result<()> {
        answering_handoffs(|| {
            let mut first_error = Ok(());
            loop {
                let Some((request, transport)) = self.lock().pop_front() else {
                    return first_error;
                };
                let answered = handle_one(server, transport.as_ref(), &request);
                if first_error.is_ok() {
                    first_error = answered;
                }
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<HandedOver>> {
        // Plain queue operations: a poisoned lock still guards a whole queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The thread that commits metadata every `commit=` seconds while the session lasts.
pub(crate) struct Committer {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Committer {
    pub(crate) fn start(server: Arc<Server>) -> io::Result<Committer> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let interval = server.commit_interval();
        let thread = std::thread::Builder::new()
            .name("iomapfs-commit".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(interval)
                {
                    server.commit_if_changed();
                }
            })?;
        Ok(Committer { stop, thread })
    }

    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("the commit thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;
    use std::os::fd::RawFd;
    use std::sync::mpsc;
    use std::time::Duration;

    use fuse_wire::structs::InHeader;

    use super::*;
    use crate::options::MountOptions;

    /// Delivers the given requests, then ends the session; passes on what is sent.
    struct Scripted {
        requests: Mutex<VecDeque<Vec<u8>>>,
        sent: Mutex<mpsc::Sender<Vec<u8>>>,
    }

    impl Transport for Scripted {
        fn receive(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
            Ok(self.requests.lock().unwrap().pop_front().map(|r| {
                buf[..r.len()].copy_from_slice(&r);
                r.len()
            }))
        }
        fn send(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
            let msg = parts.iter().flat_map(|p| p.iter().copied()).collect();
            let _ = self.sent.lock().unwrap().send(msg);
            Ok(())
        }
        fn for_worker(&self) -> io::Result<Arc<dyn Transport>> {
            unimplemented!("one reader per test")
        }
        fn backing_open(&self, _: RawFd) -> io::Result<u32> {
            Ok(1)
        }
    }

    /// A server, and a transport that delivers one LOOKUP of lost+found (unique 7).
    fn setup(dir: &std::path::Path) -> (Server, Arc<dyn Transport>, mpsc::Receiver<Vec<u8>>) {
        let image = test_support::e2fs::new_ext4_image(dir, 16).unwrap();
        let server = Server::open_image(&image, MountOptions::default()).unwrap();
        let header = InHeader {
            opcode: Opcode::Lookup as u32,
            unique: 7,
            nodeid: fuse_wire::consts::FUSE_ROOT_ID,
            ..Default::default()
        };
        let lookup = fuse_wire::encode_request(&header, &[b"lost+found\0"]);
        let (tx, rx) = mpsc::channel();
        let transport = Arc::new(Scripted {
            requests: Mutex::new(VecDeque::from([lookup])),
            sent: Mutex::new(tx),
        });
        (server, transport, rx)
    }

    /// The reply's unique and error.
    fn answered(reply: &[u8]) -> (u64, i32) {
        let header = fuse_wire::reply::parse_reply(reply).unwrap().header;
        (header.unique, header.error)
    }

    #[test]
    fn a_request_meeting_a_reader_that_holds_the_lock_is_answered_by_that_reader() {
        if !test_support::needs(test_support::needs::tool_from("mkfs.ext4", "e2fsprogs")) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (server, transport, replies) = setup(dir.path());
        let handoff = Handoff::default();
        // This thread plays a reader in the middle of a name operation.
        let mut held = Some(answering_handoffs(|| server.meta()));
        std::thread::scope(|scope| {
            // The worker does not wait for the lock: it hands the LOOKUP over and goes
            // back for the next request (here, the end of the session).
            let worker = scope.spawn(|| worker_loop(&server, &transport, &handoff));
            let handed_over = (0..1000).any(|_| {
                std::thread::sleep(Duration::from_millis(10));
                worker.is_finished()
            });
            assert!(replies.try_recv().is_err(), "answered under another's lock");
            held.take();
            assert!(handed_over, "the worker waited for the lock");
            worker.join().unwrap().unwrap();
        });
        handoff.drain(&server).unwrap();
        assert_eq!(answered(&replies.try_recv().unwrap()), (7, 0));
    }

    #[test]
    fn a_request_meeting_a_thread_that_answers_no_handoffs_waits_for_the_lock() {
        if !test_support::needs(test_support::needs::tool_from("mkfs.ext4", "e2fsprogs")) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (server, transport, replies) = setup(dir.path());
        let handoff = Handoff::default();
        // This thread answers no hand-offs (as the committer, or a reader in a WRITE or
        // an fsync): the worker must wait for the lock and answer the request itself.
        let held = server.meta();
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| worker_loop(&server, &transport, &handoff));
            std::thread::sleep(Duration::from_millis(200));
            assert!(!worker.is_finished(), "the worker left its request behind");
            drop(held);
            worker.join().unwrap().unwrap();
        });
        assert_eq!(answered(&replies.try_recv().unwrap()), (7, 0));
        assert!(handoff.lock().is_empty());
    }
}
