//! Turns a recording's frames into exchanges: each request in the order the server read
//! it, with the notifications its thread sent while serving it and its reply. Frames are
//! read as they are needed, so a long recording is never held in memory whole.

use std::collections::{HashMap, VecDeque};

use fuse_wire::Opcode;

use crate::record::{Kind, ReadError, Reader};

/// One recorded request and what the server answered.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Position among the recorded requests, from 1.
    pub seq: u64,
    pub request: Vec<u8>,
    pub unique: u64,
    pub thread: u32,
    pub received_ns: u64,
    /// The notifications the serving thread sent before its reply, in order.
    pub notifications: Vec<Vec<u8>>,
    /// The reply as written; `None` for requests that get none (FORGET, INTERRUPT).
    pub reply: Option<Vec<u8>>,
    /// The recording has no reply for a request that needs one (it ended first).
    pub unanswered: bool,
    /// Another request was in flight while the server served this one: their order in
    /// the recorded server may differ from the serial order of the replay.
    pub overlapped: bool,
}

/// How the recording ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The end marker: the session finished and everything was recorded.
    Complete,
    /// `record_max` (bytes) was reached: nothing after it was recorded.
    Stopped(u64),
    /// No end marker: the server stopped without finishing the recording (killed, or
    /// still running when the file was copied).
    Unfinished,
    /// The file ends in the middle of a frame (a server killed mid-write, a copy cut short).
    Truncated(String),
}

/// Requests the server never answers.
fn gets_no_reply(request: &[u8]) -> bool {
    let Ok(header) = fuse_wire::parse_header(request) else {
        // A malformed header is dropped unanswered unless its unique is readable; the
        // recording tells which: a reply frame for it would follow.
        return false;
    };
    matches!(
        Opcode::from_u32(header.opcode),
        Some(Opcode::Forget | Opcode::BatchForget | Opcode::Interrupt)
    )
}

pub struct Schedule {
    reader: Reader,
    /// Requests read and not handed out yet, in recorded order.
    pending: VecDeque<Pending>,
    /// Sequence number of the next request read.
    next_seq: u64,
    /// The request each thread is serving (its last one read), by sequence number.
    serving: HashMap<u32, u64>,
    /// Backing ids the kernel handed out, in order.
    pub backing_ids: VecDeque<u32>,
    /// Notifications sent outside any request (at the end of the session).
    pub outside: Vec<Vec<u8>>,
    /// The latest reply time of the exchanges handed out.
    latest_reply_ns: u64,
    pub ending: Option<Ending>,
}

struct Pending {
    exchange: Exchange,
    replied_ns: Option<u64>,
    /// The outcome is known: replied, or a no-reply request whose thread moved on.
    done: bool,
}

impl Schedule {
    pub fn new(reader: Reader) -> Schedule {
        Schedule {
            reader,
            pending: VecDeque::new(),
            next_seq: 1,
            serving: HashMap::new(),
            backing_ids: VecDeque::new(),
            outside: Vec::new(),
            latest_reply_ns: 0,
            ending: None,
        }
    }

    /// The next request in recorded order, once its outcome is recorded (or the recording
    /// has ended). A corrupt recording is an error; a truncated one just ends.
    pub fn next_exchange(&mut self) -> Result<Option<Exchange>, ReadError> {
        loop {
            if self.pending.front().is_some_and(|p| p.done) || self.ending.is_some() {
                return Ok(self.pop());
            }
            match self.reader.next_frame() {
                Ok(Some(frame)) => self.take(frame)?,
                Ok(None) => self.ending = Some(Ending::Unfinished),
                Err(ReadError::Truncated { at, what }) => {
                    self.ending = Some(Ending::Truncated(format!(
                        "the recording ends at byte {at} in the middle of {what}"
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn pop(&mut self) -> Option<Exchange> {
        let mut p = self.pending.pop_front()?;
        let replied = p.replied_ns;
        let ex = &mut p.exchange;
        if !p.done {
            // The recording ended first.
            ex.unanswered = ex.reply.is_none() && !gets_no_reply(&ex.request);
        }
        let later_in_flight = replied.is_some_and(|r| {
            self.pending
                .iter()
                .any(|other| other.exchange.received_ns < r)
        });
        ex.overlapped = self.latest_reply_ns > ex.received_ns || later_in_flight;
        if let Some(r) = replied {
            self.latest_reply_ns = self.latest_reply_ns.max(r);
        }
        if self.serving.get(&ex.thread) == Some(&ex.seq) {
            self.serving.remove(&ex.thread);
        }
        Some(p.exchange)
    }

    fn find(&mut self, pred: impl Fn(&Exchange) -> bool) -> Option<&mut Pending> {
        self.pending
            .iter_mut()
            .find(|p| !p.done && pred(&p.exchange))
    }

    fn take(&mut self, frame: crate::record::Frame) -> Result<(), ReadError> {
        let at = self.reader.position();
        let corrupt = |what: String| ReadError::Corrupt { at, what };
        match frame.kind {
            Kind::Request => {
                // The thread is done with its previous request (one without a reply).
                if let Some(prev) = self.serving.get(&frame.thread).copied() {
                    if let Some(p) = self.find(|e| e.seq == prev) {
                        if p.exchange.reply.is_none() && gets_no_reply(&p.exchange.request) {
                            p.done = true;
                        }
                    }
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                self.serving.insert(frame.thread, seq);
                self.pending.push_back(Pending {
                    exchange: Exchange {
                        seq,
                        unique: frame.unique,
                        thread: frame.thread,
                        received_ns: frame.time_ns,
                        request: frame.data,
                        notifications: Vec::new(),
                        reply: None,
                        unanswered: false,
                        overlapped: false,
                    },
                    replied_ns: None,
                    done: false,
                });
            }
            Kind::Reply => {
                let unique = frame.unique;
                let Some(p) = self.find(|e| e.unique == unique) else {
                    return Err(corrupt(format!(
                        "a reply for unique {unique}, which no request in flight has"
                    )));
                };
                p.exchange.reply = Some(frame.data);
                p.replied_ns = Some(frame.time_ns);
                p.done = true;
            }
            Kind::Notification => {
                let serving = self.serving.get(&frame.thread).copied();
                match serving.and_then(|seq| self.find(|e| e.seq == seq)) {
                    Some(p) => p.exchange.notifications.push(frame.data),
                    None => self.outside.push(frame.data),
                }
            }
            Kind::BackingOpen => {
                let id = frame
                    .data
                    .get(..4)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .ok_or_else(|| corrupt("a backing id frame without its id".into()))?;
                self.backing_ids.push_back(id);
            }
            Kind::Stopped => {
                let max = frame
                    .data
                    .get(..8)
                    .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                self.ending = Some(Ending::Stopped(max));
            }
            Kind::End => self.ending = Some(Ending::Complete),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::format::tests::{frame, recording};
    use crate::record::Frame;
    use fuse_wire::structs::InHeader;

    fn request(opcode: Opcode, unique: u64, args: &[u8]) -> Vec<u8> {
        let header = InHeader {
            opcode: opcode as u32,
            unique,
            nodeid: 1,
            ..Default::default()
        };
        fuse_wire::encode_request(&header, &[args])
    }

    fn at(mut f: Frame, time_ns: u64) -> Frame {
        f.time_ns = time_ns;
        f
    }

    fn schedule(frames: &[Frame]) -> Schedule {
        let bytes = recording(frames);
        Schedule::new(Reader::new(std::io::Cursor::new(bytes)).unwrap())
    }

    fn all(s: &mut Schedule) -> Vec<Exchange> {
        let mut out = Vec::new();
        while let Some(ex) = s.next_exchange().unwrap() {
            out.push(ex);
        }
        out
    }

    #[test]
    fn notifications_go_to_the_request_their_thread_serves() {
        let getattr = request(Opcode::Getattr, 2, &[0u8; 16]);
        let forget = request(Opcode::Forget, 4, &[1u8; 8]);
        let later = request(Opcode::Getattr, 6, &[0u8; 16]);
        let mut s = schedule(&[
            at(frame(Kind::Request, 1, 2, &getattr), 10),
            at(frame(Kind::Request, 2, 4, &forget), 20),
            at(frame(Kind::Notification, 2, 0, b"during forget"), 30),
            at(frame(Kind::Notification, 1, 0, b"during getattr"), 40),
            at(frame(Kind::BackingOpen, 1, 0, &5u32.to_le_bytes()), 45),
            at(frame(Kind::Reply, 1, 2, b"reply 2"), 50),
            at(frame(Kind::Notification, 1, 0, b"after its reply"), 55),
            at(frame(Kind::Request, 2, 6, &later), 60),
            at(frame(Kind::Reply, 2, 6, b"reply 6"), 70),
            at(frame(Kind::End, 1, 0, &[]), 80),
        ]);
        let ex = all(&mut s);
        assert_eq!(ex.iter().map(|e| e.unique).collect::<Vec<_>>(), [2, 4, 6]);
        assert_eq!(ex[0].notifications, [b"during getattr".to_vec()]);
        assert_eq!(ex[0].reply.as_deref(), Some(&b"reply 2"[..]));
        assert!(ex[0].overlapped, "the FORGET arrived before its reply");
        assert_eq!(ex[1].notifications, [b"during forget".to_vec()]);
        assert_eq!((ex[1].reply.is_none(), ex[1].unanswered), (true, false));
        assert!(ex[1].overlapped);
        assert!(!ex[2].overlapped, "nothing else was in flight");
        assert_eq!(s.outside, [b"after its reply".to_vec()]);
        assert_eq!(s.backing_ids, [5]);
        assert_eq!(s.ending, Some(Ending::Complete));
    }

    #[test]
    fn a_truncated_recording_ends_and_a_reply_to_nobody_is_corrupt() {
        let getattr = request(Opcode::Getattr, 2, &[0u8; 16]);
        let mut bytes = recording(&[frame(Kind::Request, 1, 2, &getattr)]);
        bytes.extend_from_slice(&[9, 0, 0]);
        let mut s = Schedule::new(Reader::new(std::io::Cursor::new(bytes)).unwrap());
        let ex = all(&mut s);
        assert_eq!(ex.len(), 1);
        assert!(ex[0].unanswered, "the recording ends before the reply");
        assert!(
            matches!(s.ending, Some(Ending::Truncated(_))),
            "{:?}",
            s.ending
        );

        let mut s = schedule(&[
            frame(Kind::Request, 1, 2, &getattr),
            frame(Kind::Reply, 1, 8, b"for whom?"),
        ]);
        let err = s.next_exchange().unwrap_err();
        assert!(err.to_string().contains("unique 8"), "{err}");
    }
}
