//! A subscriber's bounded frame queue: one sender (the hub), one receiver
//! (the stream). A stream waits on it for hours and most of the time it is
//! empty, so it costs what its state is: a lock, a waker and a ring that
//! holds nothing until an event comes (tokio's channel keeps two cache-padded
//! halves and a 32-slot block per queue, about 850 bytes per idle stream).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue holds its capacity.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    cap: usize,
    waker: AtomicWaker,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.waker.wake();
    }
}

/// The sending half; dropping it ends the queue once it is drained.
pub struct Sender<T>(Arc<Shared<T>>);

/// The receiving half; dropping it makes every later send fail.
pub struct Receiver<T>(Arc<Shared<T>>);

/// A queue of at most `cap` items.
pub fn channel<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            closed: false,
        }),
        cap: cap.max(1),
        waker: AtomicWaker::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `item` unless the queue is full or closed.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        {
            let mut st = self.0.lock();
            if st.closed {
                return Err(TrySendError::Closed(item));
            }
            if st.items.len() >= self.0.cap {
                return Err(TrySendError::Full(item));
            }
            st.items.push_back(item);
        }
        self.0.waker.wake();
        Ok(())
    }
}

impl<T> Sender<T> {
    /// Queues `item` in a full queue by dropping queued items that `same`
    /// picks: all of them (`keep_latest`) or the oldest one. Returns how
    /// many were dropped; `Full` when none could be (the queue holds only
    /// other items).
    pub fn try_send_dropping(
        &self,
        item: T,
        keep_latest: bool,
        same: impl Fn(&T) -> bool,
    ) -> Result<usize, TrySendError<T>> {
        let dropped = {
            let mut st = self.0.lock();
            if st.closed {
                return Err(TrySendError::Closed(item));
            }
            let mut dropped = 0;
            if st.items.len() >= self.0.cap {
                if keep_latest {
                    let before = st.items.len();
                    st.items.retain(|i| !same(i));
                    dropped = before - st.items.len();
                } else if let Some(at) = st.items.iter().position(&same) {
                    st.items.remove(at);
                    dropped = 1;
                }
                if dropped == 0 {
                    return Err(TrySendError::Full(item));
                }
            }
            st.items.push_back(item);
            dropped
        };
        self.0.waker.wake();
        Ok(dropped)
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl<T> Receiver<T> {
    /// The next item, if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        let mut st = self.0.lock();
        let item = st.items.pop_front();
        // A burst leaves its ring behind: let go of it once drained.
        if st.items.is_empty() && st.items.capacity() > 64 {
            st.items = VecDeque::new();
        }
        item
    }

    /// The next item; `None` once the sender is gone and the queue drained.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(item) = self.try_recv() {
            return Poll::Ready(Some(item));
        }
        self.0.waker.register(cx.waker());
        // Looked at again after registering: a send in between is not missed.
        let mut st = self.0.lock();
        match st.items.pop_front() {
            Some(item) => Poll::Ready(Some(item)),
            None if st.closed => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    /// Waits for the next item; `None` once the sender is gone and the queue drained.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.0.lock().items.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.closed = true;
        st.items.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_makes_room_from_the_same_topic_only() {
        let (tx, mut rx) = channel(3);
        for item in [(1, 'a'), (2, 'b'), (3, 'a')] {
            tx.try_send(item).unwrap();
        }
        let same_a = |i: &(u8, char)| i.1 == 'a';
        // keep-latest: every queued `a` goes, the new one is queued.
        assert_eq!(tx.try_send_dropping((4, 'a'), true, same_a), Ok(2));
        tx.try_send((5, 'b')).unwrap();
        // drop-oldest: only the oldest `b` goes.
        assert_eq!(
            tx.try_send_dropping((6, 'b'), false, |i: &(u8, char)| i.1 == 'b'),
            Ok(1)
        );
        // Nothing of `c` is queued: no room can be made, the caller decides.
        assert_eq!(
            tx.try_send_dropping((7, 'c'), true, |i: &(u8, char)| i.1 == 'c'),
            Err(TrySendError::Full((7, 'c')))
        );
        let mut left = Vec::new();
        while let Some(i) = rx.try_recv() {
            left.push(i);
        }
        assert_eq!(left, [(4, 'a'), (5, 'b'), (6, 'b')]);
        assert_eq!(
            tx.try_send_dropping((8, 'a'), true, same_a),
            Ok(0),
            "room: no drop"
        );
    }

    #[tokio::test]
    async fn bounded_ordered_and_closed_both_ways() {
        let (tx, mut rx) = channel(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.len(), 2);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), None);
        // A waiting receiver is woken by a send from another task.
        let waiting = tokio::spawn(async move {
            let got = rx.recv().await;
            (got, rx.recv().await)
        });
        tokio::task::yield_now().await;
        tx.try_send(4).unwrap();
        drop(tx);
        assert_eq!(
            waiting.await.unwrap(),
            (Some(4), None),
            "drained, then ended"
        );

        let (tx, rx) = channel::<u8>(1);
        drop(rx);
        assert_eq!(tx.try_send(1), Err(TrySendError::Closed(1)));
    }
}
