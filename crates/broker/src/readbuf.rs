//! The read buffer of client and route connections: ops are parsed in place out of it (the
//! parser returns slices of it), and it sizes itself to the traffic.

/// Bytes `start..end` of `buf` have been read and not parsed yet. The fields are visible to
/// the crate so that a parse loop can borrow the unparsed bytes (`&rb.buf[rb.start..rb.end]`)
/// while it advances `rb.start`.
#[derive(Debug)]
pub(crate) struct ReadBuf {
    pub buf: Vec<u8>,
    pub start: usize,
    pub end: usize,
    min: usize,
    max: usize,
    short_reads: u32,
}

impl ReadBuf {
    /// Starts at `min` bytes; reads make it grow up to `max` (an op larger than that still
    /// gets the room it needs, see [`ReadBuf::reserve`]).
    pub fn new(min: usize, max: usize) -> Self {
        ReadBuf {
            buf: vec![0u8; min],
            start: 0,
            end: 0,
            min,
            max,
            short_reads: 0,
        }
    }

    /// Makes room for the next read (compacting, or growing a buffer that is full of one
    /// unfinished op) and returns how much there is: read into `buf[end..]`.
    pub fn make_room(&mut self) -> usize {
        if self.buf.is_empty() {
            self.buf = vec![0u8; self.min];
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.compact();
            } else if self.buf.len() < self.max {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        self.buf.len() - self.end
    }

    /// Gives the memory back while the connection waits for its next read, when nothing is
    /// left unparsed and the traffic is light (the buffer is at its smallest): most
    /// connections are idle most of the time. The next [`ReadBuf::make_room`] allocates
    /// again; a busy connection, whose buffer has grown, keeps it.
    pub fn release_if_idle(&mut self) {
        if self.start == self.end && self.buf.len() <= self.min {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }

    /// The parser needs `need` bytes from `start` to finish the current op.
    pub fn reserve(&mut self, need: usize) {
        if self.start + need > self.buf.len() {
            self.compact();
            if need > self.buf.len() {
                self.buf.resize(need.next_power_of_two().max(self.min), 0);
            }
        }
    }

    /// Called once the bytes of a read (`n` of the `room` offered) have been parsed. A read
    /// that filled all the room means more is waiting: double, for fewer syscalls under
    /// load. A run of short reads means the burst is over: halve, so idle connections stay
    /// small. Everything consumed: start again at the front.
    pub fn settle(&mut self, n: usize, room: usize) {
        let empty = self.start == self.end;
        if n == room && self.buf.len() < self.max {
            self.short_reads = 0;
            if empty {
                self.buf = vec![0u8; self.buf.len() * 2];
            } else {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        } else if n < self.buf.len() / 4 && self.buf.len() > self.min {
            self.short_reads += 1;
            if self.short_reads > 2 && empty {
                self.short_reads = 0;
                self.buf = vec![0u8; (self.buf.len() / 2).max(self.min)];
            }
        } else {
            self.short_reads = 0;
        }
        if empty {
            self.start = 0;
            self.end = 0;
        }
    }

    fn compact(&mut self) {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::ReadBuf;

    #[test]
    fn grows_under_load_and_shrinks_after_short_reads() {
        let mut rb = ReadBuf::new(512, 4096);
        for want in [1024, 2048, 4096, 4096] {
            let room = rb.make_room();
            rb.end += room;
            rb.start = rb.end;
            rb.settle(room, room);
            assert_eq!(rb.buf.len(), want);
        }
        for want in [4096, 4096, 2048, 2048, 2048, 1024] {
            let room = rb.make_room();
            rb.end += 10;
            rb.start = rb.end;
            rb.settle(10, room);
            assert_eq!(rb.buf.len(), want);
            assert_eq!((rb.start, rb.end), (0, 0));
        }
    }

    #[test]
    fn an_idle_buffer_is_released_and_comes_back() {
        let mut rb = ReadBuf::new(512, 4096);
        rb.release_if_idle();
        assert_eq!(rb.buf.capacity(), 0);
        assert_eq!(rb.make_room(), 512);
        rb.buf[..4].copy_from_slice(b"PUB ");
        rb.end = 4;
        rb.release_if_idle();
        assert_eq!(&rb.buf[..4], b"PUB ", "unparsed bytes are kept");
        rb.start = 4;
        let room = rb.make_room();
        rb.settle(room, room);
        assert_eq!(rb.buf.len(), 1024);
        rb.release_if_idle();
        assert_eq!(
            rb.buf.len(),
            1024,
            "a busy connection keeps its grown buffer"
        );
    }

    #[test]
    fn an_unfinished_op_is_kept_and_given_room() {
        let mut rb = ReadBuf::new(512, 4096);
        rb.buf[..6].copy_from_slice(b"PUB a ");
        rb.end = 512;
        rb.start = 2;
        rb.reserve(10_000);
        assert_eq!(rb.start, 0);
        assert_eq!(rb.end, 510);
        assert_eq!(&rb.buf[..4], b"B a ");
        assert!(rb.buf.len() >= 10_000);
        rb.settle(0, 1);
        assert_eq!(rb.end, 510, "unparsed bytes stay");
    }
}
