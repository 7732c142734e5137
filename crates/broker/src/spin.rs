//! Spin-before-park for connections that trade one message at a time (request/reply, an
//! acked JetStream publish, PING/PONG).
//!
//! On a virtual machine most of a one-in-flight round trip is the time it takes to wake an
//! idle vCPU out of `epoll_wait` (docs/benchmarks.md: ~60 of a ~70 us ping). Go's runtime,
//! and so nats-server, hides part of it by spinning a little before a thread parks. midge
//! does the same, but per connection and only where it pays: a client whose last read
//! carried few messages keeps polling its socket (non-blocking `recv`, yielding to the
//! other tasks of its worker between tries) for up to `spin_wait` before it goes back to
//! the event loop. A connection whose next message does not come in time backs off
//! (see [`SpinState`]), so an idle or slow connection spins about once per 64 reads, and at
//! most half the cores (at least one) spin at once. `spin_wait: 0` turns it off.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::client::ClientShared;

/// The default spin window: longer than the client's own wake-up and turnaround on a VM
/// (~30-60 us), short enough that a connection that turns out idle wastes little.
pub const DEFAULT_SPIN_WAIT: Duration = Duration::from_micros(100);

/// The longest `spin_wait` a config may set: past this a spin costs more than any wake-up.
pub const MAX_SPIN_WAIT: Duration = Duration::from_millis(1);

/// How many connections may spin at once, server-wide.
#[derive(Debug)]
pub(crate) struct Spinners {
    active: AtomicUsize,
    max: usize,
}

impl Default for Spinners {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Spinners {
            active: AtomicUsize::new(0),
            max: (cores / 2).max(1),
        }
    }
}

impl Spinners {
    /// A spin slot, when one is free.
    fn acquire(&self) -> Option<Slot<'_>> {
        let mut n = self.active.load(Ordering::Relaxed);
        loop {
            if n >= self.max {
                return None;
            }
            match self
                .active
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(Slot(self)),
                Err(now) => n = now,
            }
        }
    }
}

struct Slot<'a>(&'a Spinners);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One connection's spin state (its reader task owns it).
///
/// A spin that ran out (the next message did not come within the window) makes the
/// connection skip the next 1, 3, 7, ... 63 chances to spin before it tries again; one that
/// caught a message resets that. (Timing the idle periods instead cannot tell a connection
/// back once it stopped spinning: without the spin, every period also holds the server's
/// own wake-up.) A connection that is never answered within the window so spins about once
/// every 64 reads; one that trades messages back and forth keeps spinning through a hiccup.
#[derive(Debug, Default)]
pub(crate) struct SpinState {
    /// Set after a read that may be followed by a quick next message: the next wait spins.
    armed: bool,
    /// Spins that ran out in a row (capped).
    misses: u8,
    /// Chances to spin left to skip.
    skip: u8,
}

/// After this many misses in a row the backoff stops growing (63 skipped chances).
const MAX_MISSES: u8 = 6;

impl SpinState {
    /// After a read was processed: spin before the next wait when this connection trades
    /// few messages per read and is not backing off.
    pub fn arm(&mut self, few_messages: bool) {
        self.armed = false;
        if few_messages {
            if self.skip > 0 {
                self.skip -= 1;
            } else {
                self.armed = true;
            }
        }
    }

    /// Whether the next wait should spin first (and disarms).
    pub fn take_armed(&mut self) -> bool {
        std::mem::take(&mut self.armed)
    }

    fn caught(&mut self) {
        self.misses = 0;
    }

    fn missed(&mut self) {
        self.misses = (self.misses + 1).min(MAX_MISSES);
        self.skip = (1u8 << self.misses) - 1;
    }
}

/// Polls a plain TCP client's socket for up to `window`, yielding to the worker's other
/// tasks between tries (they may be what answers the client). `Some` with what `recv`
/// returned once it returned something other than "nothing yet"; `None` when the window ran
/// out, no spin slot was free, or the connection is closing.
pub(crate) async fn spin_read(
    spinners: &Spinners,
    state: &mut SpinState,
    shared: &ClientShared,
    dst: &mut [u8],
    window: Duration,
) -> Option<std::io::Result<usize>> {
    let _slot = spinners.acquire()?;
    let start = Instant::now();
    loop {
        match rustix::net::recv(&shared.stream, &mut *dst, rustix::net::RecvFlags::DONTWAIT) {
            Ok((n, _)) => {
                state.caught();
                return Some(Ok(n));
            }
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
            Err(e) => return Some(Err(e.into())),
        }
        if shared.is_closed() {
            return None;
        }
        if start.elapsed() >= window {
            state.missed();
            return None;
        }
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_back_off_and_a_catch_resets() {
        let mut s = SpinState::default();
        s.arm(true);
        assert!(s.take_armed(), "spins at first");
        assert!(!s.take_armed(), "disarmed once taken");
        s.arm(false);
        assert!(!s.take_armed(), "a read with many messages does not spin");
        // One miss: the next chance is skipped. Two in a row: three are.
        s.missed();
        let spins = |s: &mut SpinState, n: usize| {
            (0..n)
                .map(|_| {
                    s.arm(true);
                    s.take_armed()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(spins(&mut s, 2), [false, true]);
        s.missed();
        assert_eq!(spins(&mut s, 4), [false, false, false, true]);
        for _ in 0..20 {
            s.missed();
        }
        let capped = spins(&mut s, 64);
        assert_eq!(capped.iter().filter(|&&x| x).count(), 1, "{capped:?}");
        assert!(capped[63], "the 64th chance spins");
        s.caught();
        s.missed();
        assert_eq!(
            spins(&mut s, 2),
            [false, true],
            "a catch resets the backoff"
        );
    }

    #[test]
    fn slots_are_bounded() {
        let s = Spinners {
            active: AtomicUsize::new(0),
            max: 1,
        };
        let a = s.acquire();
        assert!(a.is_some());
        assert!(s.acquire().is_none());
        drop(a);
        assert!(s.acquire().is_some());
    }
}
