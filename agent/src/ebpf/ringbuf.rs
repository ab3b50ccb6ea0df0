//! Async ring-buffer reader: waits on the map's fd with tokio's `AsyncFd`, drains in bounded
//! batches so a burst cannot starve the other tasks on the runtime.

use std::io;

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

use super::records::{Record, RecordError};

/// Reads records from the telemetry ring buffer.
pub struct EventReader {
    fd: AsyncFd<RingBuf<MapData>>,
    /// Records read and parsed.
    pub read: u64,
    /// Records that failed to parse (counted, dropped).
    pub malformed: u64,
    /// The last parse error, for the log.
    pub last_error: Option<RecordError>,
}

impl EventReader {
    /// Registers the ring buffer with the current tokio runtime.
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the fd is owned by `ring`, which the AsyncFd owns until it is dropped, and
        // RingBuf::as_raw_fd always returns that same map fd.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self {
            fd,
            read: 0,
            malformed: 0,
            last_error: None,
        })
    }

    /// Waits until records are available, then appends at most `max` of them to `out`.
    /// Readiness is cleared only once the ring is empty, so a partial batch makes the next
    /// call return at once.
    pub async fn read_batch(&mut self, max: usize, out: &mut Vec<Record>) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            let ring = guard.get_inner_mut();
            let mut taken = 0;
            while taken < max {
                let Some(item) = ring.next() else { break };
                taken += 1;
                match Record::parse(&item) {
                    Ok(r) => {
                        self.read += 1;
                        out.push(r);
                    }
                    Err(e) => {
                        self.malformed += 1;
                        self.last_error = Some(e);
                    }
                }
            }
            if taken == max {
                return Ok(());
            }
            // Empty: wait for the kernel's next wake-up (it wakes when the ring goes from
            // empty to non-empty; tokio keeps readiness if one arrived since `readable_mut`).
            guard.clear_ready();
            if taken > 0 {
                return Ok(());
            }
        }
    }

    /// Drains whatever is there now without waiting (the kernel tests' accounting check).
    #[cfg(test)]
    pub fn drain_now(&mut self, out: &mut Vec<Record>) {
        let ring = self.fd.get_mut();
        while let Some(item) = ring.next() {
            match Record::parse(&item) {
                Ok(r) => {
                    self.read += 1;
                    out.push(r);
                }
                Err(e) => {
                    self.malformed += 1;
                    self.last_error = Some(e);
                }
            }
        }
    }
}
