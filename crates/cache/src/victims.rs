//! What the memory tier drops for room goes to disk: the disk is a victim cache, so the two
//! tiers hold mostly different objects and together hold more of them.
//!
//! moka reports each object it evicts, and each new one its TinyLFU admission turns away, to
//! a listener that runs on whichever thread does its upkeep, often a request's. The listener
//! only queues the object; one background thread writes it (a file write of up to the memory
//! object limit has no place on a request's thread). The queue is bounded: when the disk
//! cannot keep up, victims are dropped, which costs a later miss and nothing else.
//!
//! A victim already on disk counts as a use there, so objects popular enough to live in memory
//! do not age out of the disk meanwhile. One not on disk is written when it is evicted the
//! second time within a window (see [`crate::admission`]), so one-hit objects stay off disk.
//!
//! A purge must not be undone by a victim queued before it and written after it: purges bump
//! an epoch, and the writer, holding off purges while it writes, drops victims queued under an
//! older one. A crash loses the queue and whatever lives in memory only; what is on disk is
//! written as every disk object is (temporary file, then rename), so a torn write is never
//! served.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;

use crate::key::KeyHash;
use crate::object::ObjectMeta;

/// Victims waiting for the writer: enough to absorb a burst of evictions.
const QUEUE: usize = 4096;

pub(crate) struct Victim {
    pub key: KeyHash,
    pub meta: Arc<ObjectMeta>,
    pub body: Arc<[Bytes]>,
    /// The purge epoch when it was evicted.
    pub epoch: u64,
}

/// The purge epoch, shared by the cache (which bumps it) and the memory tier's listener
/// (which stamps victims with it, without waiting on a lock).
#[derive(Clone, Default)]
pub(crate) struct PurgeEpoch(Arc<EpochInner>);

#[derive(Default)]
struct EpochInner {
    value: AtomicU64,
    /// Held by a purge while it bumps, and by the writer while it writes.
    gate: Mutex<()>,
}

impl PurgeEpoch {
    fn current(&self) -> u64 {
        self.0.value.load(Ordering::Acquire)
    }

    /// Called before a purge removes anything: victims queued until now are dropped.
    pub(crate) fn bump(&self) {
        let _gate = self.0.gate.lock().unwrap_or_else(|e| e.into_inner());
        self.0.value.fetch_add(1, Ordering::AcqRel);
    }

    /// Holds purges off while a victim queued at `epoch` is written; `None` if a purge came
    /// since.
    pub(crate) fn unchanged_since(&self, epoch: u64) -> Option<MutexGuard<'_, ()>> {
        let gate = self.0.gate.lock().unwrap_or_else(|e| e.into_inner());
        (self.current() == epoch).then_some(gate)
    }
}

/// Victims queued and not yet written, so tests and the example can wait for the writer.
#[derive(Default)]
pub(crate) struct Pending {
    count: Mutex<usize>,
    done: Condvar,
}

impl Pending {
    fn add(&self, n: isize) {
        let mut c = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *c = c.saturating_add_signed(n);
        if *c == 0 {
            self.done.notify_all();
        }
    }

    pub(crate) fn wait_empty(&self) {
        let mut c = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *c > 0 {
            c = self.done.wait(c).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The listener's end of the queue.
pub(crate) struct VictimSender {
    tx: SyncSender<Victim>,
    epoch: PurgeEpoch,
    pending: Arc<Pending>,
}

impl VictimSender {
    pub(crate) fn send(&self, key: KeyHash, meta: Arc<ObjectMeta>, body: Arc<[Bytes]>) {
        let epoch = self.epoch.current();
        let victim = Victim {
            key,
            meta,
            body,
            epoch,
        };
        self.pending.add(1);
        if let Err(e) = self.tx.try_send(victim) {
            self.pending.add(-1);
            if let TrySendError::Full(_) = e {
                tracing::debug!("victim queue full; dropping an evicted object");
            }
        }
    }
}

/// Starts the writer thread; `write` takes each victim (the cache, if it still exists,
/// decides what to do with it). The thread ends when the sender is dropped.
pub(crate) fn spawn(
    epoch: PurgeEpoch,
    pending: Arc<Pending>,
    write: impl Fn(Victim, &PurgeEpoch) + Send + 'static,
) -> std::io::Result<VictimSender> {
    let (tx, rx): (SyncSender<Victim>, Receiver<Victim>) = sync_channel(QUEUE);
    let thread_epoch = epoch.clone();
    let thread_pending = pending.clone();
    std::thread::Builder::new()
        .name("cache-victims".into())
        .spawn(move || {
            while let Ok(v) = rx.recv() {
                write(v, &thread_epoch);
                thread_pending.add(-1);
            }
        })?;
    Ok(VictimSender { tx, epoch, pending })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_victim_queued_before_a_purge_is_not_written_after_it() {
        let epoch = PurgeEpoch::default();
        let queued_at = epoch.current();
        assert!(epoch.unchanged_since(queued_at).is_some());
        epoch.bump();
        assert!(epoch.unchanged_since(queued_at).is_none());
        assert!(epoch.unchanged_since(epoch.current()).is_some());
    }
}
