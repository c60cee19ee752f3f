//! A timer that any task may wait on: the request's deadline, armed once when
//! the upstream call is sent and raced again while its body is read, and a
//! stream's idle limit, armed once and moved on only when it fires.
//!
//! `worker::Delay` wakes the task that first polled it, so one may not be
//! awaited from another task (a stream's chunks are each pulled in a task of
//! their own), and a fresh one per wait costs a `setTimeout`, a `clearTimeout`
//! and a closure each time, per chunk of a stream (about 1 µs a chunk in a
//! sampling profile; performance.md). This one wakes whichever task polled it
//! last.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_util::future::{select, Either};
use futures_util::pin_mut;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use worker::worker_sys::web_sys;

#[derive(Default)]
struct Shared {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// Fires once, `ms` after it was made; cleared when dropped before.
pub struct Timer {
    shared: Rc<Shared>,
    id: Option<i32>,
    _callback: Closure<dyn FnMut()>,
}

impl Timer {
    pub fn after(ms: u64) -> Self {
        let shared = Rc::new(Shared::default());
        let fire = shared.clone();
        let callback = Closure::wrap_assert_unwind_safe(Box::new(move || {
            fire.fired.set(true);
            if let Some(waker) = fire.waker.take() {
                waker.wake();
            }
        }) as Box<dyn FnMut()>);
        let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
        let ms = i32::try_from(ms).unwrap_or(i32::MAX);
        let id = global.set_timeout_with_callback_and_timeout_and_arguments_0(callback.as_ref().unchecked_ref(), ms);
        // A timer the runtime would not set counts as fired: nothing waits forever on it.
        shared.fired.set(id.is_err());
        Self { shared, id: id.ok(), _callback: callback }
    }

    pub fn fired(&self) -> bool {
        self.shared.fired.get()
    }

    /// Races `fut` against this timer: `None` when the timer fires first (it stays fired).
    pub async fn race<T>(&mut self, fut: impl Future<Output = T>) -> Option<T> {
        pin_mut!(fut);
        match select(fut, self).await {
            Either::Left((value, _)) => Some(value),
            Either::Right(_) => None,
        }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.fired.get() {
            return Poll::Ready(());
        }
        let mut waker = self.shared.waker.borrow_mut();
        if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let (false, Some(id)) = (self.shared.fired.get(), self.id) {
            let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
            global.clear_timeout_with_handle(id);
        }
    }
}

/// A limit on each wait for an event (a stream's next chunk): one timer, moved on only when it fires
/// before the limit has passed in the wait under way, instead of a timer for every wait.
pub struct IdleLimit {
    ms: u64,
    timer: Option<Timer>,
}

impl IdleLimit {
    pub fn new(ms: u64) -> Self {
        Self { ms, timer: None }
    }

    /// Waits for `fut` up to the limit: `None` when it passed first.
    pub async fn next<T>(&mut self, fut: impl Future<Output = T>) -> Option<T> {
        let since = js_sys::Date::now();
        pin_mut!(fut);
        loop {
            let timer = match &mut self.timer {
                Some(timer) if !timer.fired() => timer,
                slot => {
                    let waited = (js_sys::Date::now() - since).max(0.0) as u64;
                    if waited >= self.ms {
                        return None;
                    }
                    slot.insert(Timer::after(self.ms - waited))
                }
            };
            if let Some(value) = timer.race(fut.as_mut()).await {
                return Some(value);
            }
        }
    }
}
