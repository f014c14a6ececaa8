//! The bounded outgoing queue of one connection.
//!
//! Publishers push shared, already-encoded frames; they never wait. When the queue
//! is over its frame or byte limit the frame is dropped and counted, and the writer
//! tells the client how many it lost (a LOSSAGE frame) once it can write again. A
//! slow reader therefore costs its publishers one mutex and a counter, nothing more.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Counters kept per connection, readable without locking.
#[derive(Debug, Default)]
pub struct OutboxStats {
    pub frames_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// Dropped since the last LOSSAGE was handed to the writer.
    unreported: u64,
    closed: bool,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<Queue>,
    notify: Notify,
    max_frames: usize,
    max_bytes: usize,
    /// Largest frame (length field value) this client agreed to receive.
    max_frame: usize,
    pub stats: OutboxStats,
}

/// What [`Outbox::take`] hands the writer.
#[derive(Debug)]
pub enum Batch {
    /// Frames to write, and a count of frames dropped before the last of them
    /// (0 when nothing was lost).
    Frames(u64),
    /// Nothing queued right now.
    Empty,
    /// The connection is closing and the queue is drained.
    Closed,
}

impl Outbox {
    pub fn new(max_frames: usize, max_bytes: usize, max_frame: u32) -> Outbox {
        Outbox {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            max_frames,
            max_bytes,
            max_frame: max_frame as usize,
            stats: OutboxStats::default(),
        }
    }

    /// Queues a delivery, or drops and counts it if the queue is full or the frame
    /// is larger than this client agreed to receive. Never blocks.
    pub fn push(&self, frame: Bytes) -> bool {
        let mut q = self.queue.lock();
        if q.closed {
            return false;
        }
        if q.frames.len() >= self.max_frames
            || q.bytes + frame.len() > self.max_bytes
            || frame.len().saturating_sub(4) > self.max_frame
        {
            q.unreported += 1;
            drop(q);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let was_empty = q.frames.is_empty();
        q.bytes += frame.len();
        q.frames.push_back(frame);
        drop(q);
        if was_empty {
            self.notify.notify_one();
        }
        true
    }

    /// Queues a control frame (PONG, PING, ERROR) that must not be dropped; these
    /// are small and come one per frame the client sent, so they are bounded by the
    /// client's own traffic.
    pub fn push_control(&self, frame: Bytes) {
        let mut q = self.queue.lock();
        if q.closed {
            return;
        }
        let was_empty = q.frames.is_empty();
        q.bytes += frame.len();
        q.frames.push_back(frame);
        drop(q);
        if was_empty {
            self.notify.notify_one();
        }
    }

    /// Moves everything queued into `into` (which must be empty), so the writer can
    /// write without holding the lock.
    pub fn take(&self, into: &mut VecDeque<Bytes>) -> Batch {
        let mut q = self.queue.lock();
        if q.frames.is_empty() && q.unreported == 0 {
            return if q.closed {
                Batch::Closed
            } else {
                Batch::Empty
            };
        }
        std::mem::swap(&mut q.frames, into);
        q.bytes = 0;
        Batch::Frames(std::mem::take(&mut q.unreported))
    }

    /// Waits until something may have been queued (or the outbox closed).
    pub async fn wait(&self) {
        self.notify.notified().await
    }

    /// Refuses further frames; the writer drains what is queued, then stops.
    pub fn close(&self) {
        self.queue.lock().closed = true;
        self.notify.notify_one();
    }

    /// Frames and bytes queued right now.
    pub fn depth(&self) -> (usize, usize) {
        let q = self.queue.lock();
        (q.frames.len(), q.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_and_counts_when_full() {
        let ob = Outbox::new(2, 1000, 4096);
        assert!(ob.push(Bytes::from_static(b"a")));
        assert!(ob.push(Bytes::from_static(b"b")));
        assert!(!ob.push(Bytes::from_static(b"c")), "over the frame limit");
        ob.push_control(Bytes::from_static(b"pong"));
        let mut batch = VecDeque::new();
        assert!(matches!(ob.take(&mut batch), Batch::Frames(1)));
        assert_eq!(batch.len(), 3);
        assert_eq!(ob.stats.dropped.load(Ordering::Relaxed), 1);
        batch.clear();
        assert!(matches!(ob.take(&mut batch), Batch::Empty));
        let small = Outbox::new(100, 4, 4096);
        assert!(small.push(Bytes::from_static(b"abc")));
        assert!(
            !small.push(Bytes::from_static(b"de")),
            "over the byte limit"
        );
        small.close();
        assert!(!small.push(Bytes::from_static(b"x")));
        assert!(matches!(small.take(&mut VecDeque::new()), Batch::Frames(1)));
        assert!(matches!(small.take(&mut VecDeque::new()), Batch::Closed));
        let tiny = Outbox::new(100, 1000, 8);
        assert!(
            tiny.push(Bytes::from_static(b"1234abcdefgh")),
            "length 8 fits"
        );
        assert!(
            !tiny.push(Bytes::from_static(b"1234abcdefghi")),
            "length 9 does not"
        );
    }
}
