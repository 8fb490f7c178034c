//! One recycled reply buffer per thread for READ: a reply of up to 1 MiB is filled by
//! pread, so a fresh zeroed allocation per request (a memset or page faults of a fresh
//! mapping) is pure cost. The buffer comes back after the reply is sent.

use std::cell::RefCell;

thread_local! {
    static SPARE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` bytes whose contents are unspecified (old bytes of earlier replies,
/// or zeroes): the caller overwrites all of it.
pub fn take(len: usize) -> Vec<u8> {
    let mut buf = SPARE.with(|s| std::mem::take(&mut *s.borrow_mut()));
    // Only bytes past the recycled length are zeroed here.
    buf.resize(len, 0);
    buf
}

/// Gives a sent reply's buffer back for the next `take` on this thread.
pub fn give(buf: Vec<u8>) {
    SPARE.with(|s| {
        let mut spare = s.borrow_mut();
        if buf.capacity() > spare.capacity() {
            *spare = buf;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again_without_new_memory() {
        let mut b = take(4096);
        b.fill(7);
        let ptr = b.as_ptr();
        give(b);
        let b = take(1024);
        assert_eq!(b.len(), 1024);
        assert_eq!(b.as_ptr(), ptr, "the same memory is reused");
        give(b);
        assert_eq!(take(2048).len(), 2048);
    }
}
