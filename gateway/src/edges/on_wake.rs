//! A future polled only after its own waker fired.
//!
//! A connection's task also waits for rare things: its kill switch, its
//! deadlines, the server's shutdown. Polled beside the connection, each of
//! those would be polled on every wake-up of the task, once per delivery,
//! and each poll takes a lock. Wrapped in [`OnWake`], such a future gets a
//! waker of its own and is polled only when that waker has fired (and
//! once at the start, to register it).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

pin_project_lite::pin_project! {
    /// `F`, polled by [`OnWake::poll_woken`] only when it asked to be.
    pub struct OnWake<F> {
        #[pin]
        fut: F,
        flag: Arc<Flag>,
        waker: Waker,
    }
}

struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> OnWake<F> {
    /// Wraps `fut`; its first [`OnWake::poll_woken`] polls it.
    pub fn new(fut: F) -> OnWake<F> {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        OnWake {
            fut,
            waker: Waker::from(flag.clone()),
            flag,
        }
    }

    /// Polls the inner future if its waker fired since the last poll;
    /// otherwise `Pending`, and `cx`'s task is woken when it fires.
    pub fn poll_woken(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.fut.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `open` is set (and woken).
    struct Gate {
        polls: Arc<AtomicUsize>,
        open: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Gate {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.open.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn polled_once_to_register_then_only_when_woken() {
        let polls = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicBool::new(false));
        let inner_waker = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let mut f = Box::pin(OnWake::new(Gate {
            polls: polls.clone(),
            open: open.clone(),
            waker: inner_waker.clone(),
        }));
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..5 {
            assert!(f.as_mut().poll_woken(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled only to register");
        open.store(true, Ordering::SeqCst);
        assert!(f.as_mut().poll_woken(&mut cx).is_pending(), "not woken yet");
        inner_waker.lock().unwrap().take().unwrap().wake();
        assert!(f.as_mut().poll_woken(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_wake_reaches_the_outer_task() {
        let token = tokio_util::sync::CancellationToken::new();
        let mut f = Box::pin(OnWake::new(token.clone().cancelled_owned()));
        let waiter = tokio::spawn(async move {
            std::future::poll_fn(|cx| f.as_mut().poll_woken(cx)).await;
        });
        tokio::task::yield_now().await;
        token.cancel();
        waiter.await.unwrap();
    }
}
