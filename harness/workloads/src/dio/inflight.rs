//! Several direct I/Os in flight at once: io_uring when the kernel allows it, else one
//! thread per request (the filesystem sees the same concurrency either way).

use super::io::{pread_full, pwrite_all, IoBuf};
use io_uring::{opcode, types, IoUring};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

pub struct Req {
    pub write: bool,
    pub offset: u64,
    pub buf: IoBuf,
}

pub enum Engine {
    Uring(Box<IoUring>),
    Threads,
}

impl Engine {
    /// An io_uring of `depth` entries, or threads if io_uring is unavailable (the reason is
    /// returned for the run's notes).
    pub fn new(depth: u32) -> (Self, String) {
        match IoUring::new(depth) {
            Ok(ring) => (
                Engine::Uring(Box::new(ring)),
                format!("in-flight I/O: io_uring, queue depth {depth}"),
            ),
            Err(e) => (
                Engine::Threads,
                format!("in-flight I/O: io_uring unavailable ({e}), {depth} threads instead"),
            ),
        }
    }

    /// Runs every request at once and returns each one's result (bytes transferred).
    pub fn run(
        &mut self,
        fd: BorrowedFd<'_>,
        reqs: &mut [Req],
    ) -> io::Result<Vec<io::Result<usize>>> {
        match self {
            Engine::Uring(ring) => run_uring(ring, fd, reqs),
            Engine::Threads => Ok(run_threads(fd, reqs)),
        }
    }
}

fn run_uring(
    ring: &mut IoUring,
    fd: BorrowedFd<'_>,
    reqs: &mut [Req],
) -> io::Result<Vec<io::Result<usize>>> {
    let target = types::Fd(fd.as_raw_fd());
    let mut queued = 0;
    for (i, r) in reqs.iter_mut().enumerate() {
        let len = r.buf.len() as u32;
        let entry = if r.write {
            opcode::Write::new(target, r.buf.as_ptr(), len)
                .offset(r.offset)
                .build()
        } else {
            opcode::Read::new(target, r.buf.as_mut_ptr(), len)
                .offset(r.offset)
                .build()
        };
        // SAFETY: the buffer lives in `reqs`, which this function borrows until every
        // queued request has completed (or is leaked below if the ring fails).
        if unsafe { ring.submission().push(&entry.user_data(i as u64)) }.is_err() {
            break;
        }
        queued += 1;
    }
    if queued < reqs.len() {
        // Nothing was submitted yet: the queue was smaller than the batch.
        return Err(io::Error::other(format!(
            "io_uring queue holds {queued} of {} requests",
            reqs.len()
        )));
    }
    let mut results: Vec<Option<io::Result<usize>>> = (0..reqs.len()).map(|_| None).collect();
    let mut done = 0;
    while done < queued {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e)
                if e.raw_os_error() == Some(libc::EINTR)
                    || e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => {
                // Requests may still be in flight and write into the buffers: never free them.
                for r in reqs.iter_mut() {
                    std::mem::forget(std::mem::replace(&mut r.buf, IoBuf::new(0, 0)));
                }
                return Err(e);
            }
        }
        for cqe in ring.completion() {
            let i = cqe.user_data() as usize;
            let res = cqe.result();
            if let Some(slot) = results.get_mut(i) {
                if slot.is_none() {
                    done += 1;
                }
                *slot = Some(if res < 0 {
                    Err(io::Error::from_raw_os_error(-res))
                } else {
                    Ok(res as usize)
                });
            }
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::other("no completion"))))
        .collect())
}

fn run_threads(fd: BorrowedFd<'_>, reqs: &mut [Req]) -> Vec<io::Result<usize>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = reqs
            .iter_mut()
            .map(|r| {
                s.spawn(move || {
                    if r.write {
                        pwrite_all(fd, &r.buf, r.offset).map(|_| r.buf.len())
                    } else {
                        pread_full(fd, &mut r.buf, r.offset)
                    }
                    .map_err(io::Error::from)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("I/O thread panicked")))
            })
            .collect()
    })
}
