//! The request loop: read a request, hand it to `dispatch`, on one or more threads.

use std::io;
use std::sync::Arc;

use crate::dispatch::handle_one;
use crate::errno::Errno;
use crate::server::Server;
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
        workers.push(
            std::thread::Builder::new()
                .name(format!("iomapfs-{i}"))
                .spawn(move || worker_loop(&s, t.as_ref()))?,
        );
    }
    let main_result = worker_loop(&server, transport.as_ref());
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

fn worker_loop(server: &Server, transport: &dyn Transport) -> io::Result<()> {
    server.prepare_thread(transport);
    let mut buf = vec![0u8; buffer_size()];
    while let Some(n) = transport.receive(&mut buf)? {
        match handle_one(server, transport, &buf[..n]) {
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
