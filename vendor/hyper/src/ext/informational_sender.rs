use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use http::{Response, StatusCode};

use crate::common::lock::LockResultExt;

// The stream's task hands queued responses to h2 each time it is polled, so the
// queue only fills if a service sends faster than its own task runs.
const MAX_PENDING: usize = 32;

/// Sends informational (1xx) responses, such as 103 Early Hints, ahead of the
/// final response to an HTTP/2 request.
///
/// With [`enable_informational`] set on the HTTP/2 server builder, hyper puts one
/// in the extensions of every request it passes to the service. Each response
/// sent with it goes out as a HEADERS frame on the request's stream the next time
/// hyper polls that stream, as long as the service has not returned its final
/// response yet. Connection-specific fields are removed, as from the final
/// response. HEADERS frames are not flow controlled: h2 buffers them until they
/// are written, so a service relaying responses from elsewhere should bound how
/// many it sends.
///
/// ```
/// # fn handle(req: &mut http::Request<()>) {
/// use hyper::ext::InformationalSender;
///
/// if let Some(informational) = req.extensions_mut().remove::<InformationalSender>() {
///     let hints = http::Response::builder()
///         .status(http::StatusCode::EARLY_HINTS)
///         .header("link", "</style.css>; rel=preload")
///         .body(())
///         .unwrap();
///     let _ = informational.send(hints);
/// }
/// # }
/// ```
///
/// [`enable_informational`]: crate::server::conn::http2::Builder::enable_informational
#[derive(Clone)]
pub struct InformationalSender {
    shared: Arc<Mutex<Shared>>,
}

/// The stream's end of an [`InformationalSender`]; dropping it (the final response
/// went, or the stream ended) makes every later `send` fail.
pub(crate) struct InformationalReceiver {
    shared: Arc<Mutex<Shared>>,
}

struct Shared {
    queue: VecDeque<Response<()>>,
    waker: Option<Waker>,
    closed: bool,
}

pub(crate) fn channel() -> (InformationalSender, InformationalReceiver) {
    let shared = Arc::new(Mutex::new(Shared {
        queue: VecDeque::new(),
        waker: None,
        closed: false,
    }));
    (
        InformationalSender {
            shared: shared.clone(),
        },
        InformationalReceiver { shared },
    )
}

impl InformationalSender {
    /// Queues an informational response to be sent before the final response.
    ///
    /// The response is given back if its status is not 1xx, or is
    /// 101 Switching Protocols (which HTTP/2 does not have); if the final
    /// response has already been sent or the stream has ended; or if too many
    /// are already waiting to be sent.
    pub fn send(&self, res: Response<()>) -> Result<(), Response<()>> {
        let status = res.status();
        if !status.is_informational() || status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(res);
        }
        let waker = {
            let mut shared = self.shared.lock().panic_if_poisoned();
            if shared.closed || shared.queue.len() >= MAX_PENDING {
                return Err(res);
            }
            shared.queue.push_back(res);
            shared.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl fmt::Debug for InformationalSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InformationalSender").finish()
    }
}

impl InformationalReceiver {
    /// The next queued response; if there is none, the task is woken when one is
    /// sent.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Response<()>> {
        let mut shared = self.shared.lock().panic_if_poisoned();
        match shared.queue.pop_front() {
            Some(res) => Poll::Ready(res),
            None => {
                if !shared
                    .waker
                    .as_ref()
                    .map_or(false, |w| w.will_wake(cx.waker()))
                {
                    shared.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// The next queued response, without waiting for more.
    pub(crate) fn try_recv(&mut self) -> Option<Response<()>> {
        self.shared.lock().panic_if_poisoned().queue.pop_front()
    }
}

impl Drop for InformationalReceiver {
    fn drop(&mut self) {
        let mut shared = self.shared.lock().panic_if_poisoned();
        shared.closed = true;
        shared.queue.clear();
        shared.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(status: StatusCode) -> Response<()> {
        let mut res = Response::new(());
        *res.status_mut() = status;
        res
    }

    #[test]
    fn only_1xx_other_than_101_are_queued() {
        let (tx, mut rx) = channel();
        assert!(tx.send(res(StatusCode::OK)).is_err());
        assert!(tx.send(res(StatusCode::SWITCHING_PROTOCOLS)).is_err());
        assert!(tx.send(res(StatusCode::EARLY_HINTS)).is_ok());
        assert_eq!(
            rx.try_recv().map(|r| r.status()),
            Some(StatusCode::EARLY_HINTS)
        );
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn the_queue_is_bounded_and_closes_with_the_receiver() {
        let (tx, rx) = channel();
        for _ in 0..MAX_PENDING {
            assert!(tx.send(res(StatusCode::PROCESSING)).is_ok());
        }
        assert!(tx.send(res(StatusCode::PROCESSING)).is_err());
        drop(rx);
        assert!(tx.send(res(StatusCode::EARLY_HINTS)).is_err());
    }
}
