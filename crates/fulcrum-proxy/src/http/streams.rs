//! An HTTP/2 connection's streams run inside the connection's own task,
//! not in a tokio task each.
//!
//! hyper hands every stream it accepts to an executor; with tokio's, each
//! stream costs a task (allocated, registered with the runtime, scheduled,
//! woken through the scheduler and freed), and on a multi-threaded
//! runtime a connection's streams can run on other workers than the one
//! reading the connection, contending for h2's per-connection lock.
//! HAProxy, nginx and Envoy bind a connection's streams to the thread that
//! owns the connection; so does this: [`StreamExecutor`] queues what hyper
//! spawns, and [`WithStreams`] polls the connection and then the streams
//! that are ready ([`FuturesUnordered`] wakes only those), all in one task.
//!
//! Ownership: the streams live in the connection's task, so they end with
//! it. The task ends only when the connection has ended and every stream
//! has finished (a stream whose connection is gone fails fast: h2 wakes it
//! with the connection's error), and a proxy that drains waits for them.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What hyper spawns for one connection (its streams, and the send side
/// of an extended CONNECT), kept for that connection's [`WithStreams`].
/// Clones share the queue; make one per connection.
#[derive(Clone, Default)]
pub struct StreamExecutor {
    spawned: Arc<Mutex<Vec<Stream>>>,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        self.spawned.lock().unwrap_or_else(PoisonError::into_inner).push(Box::pin(stream));
    }
}

impl StreamExecutor {
    fn take_spawned(&self, into: &mut FuturesUnordered<Stream>) {
        let mut spawned = self.spawned.lock().unwrap_or_else(PoisonError::into_inner);
        into.extend(spawned.drain(..));
    }
}

/// A connection future and the streams its executor was given, polled
/// together. Resolves to the connection's outcome once the connection has
/// ended and its streams have finished.
pub struct WithStreams<C: Future> {
    /// `None` once it ended: dropping h2's connection wakes any stream
    /// still waiting on it with the connection's error.
    connection: Option<Pin<Box<C>>>,
    ended: Option<C::Output>,
    executor: StreamExecutor,
    running: FuturesUnordered<Stream>,
}

impl<C: Future> WithStreams<C> {
    /// Runs `connection`, whose streams go to `executor`.
    pub fn new(connection: C, executor: StreamExecutor) -> Self {
        Self {
            connection: Some(Box::pin(connection)),
            ended: None,
            executor,
            running: FuturesUnordered::new(),
        }
    }

    /// The connection while it runs, to shut it down.
    pub fn connection(&mut self) -> Option<Pin<&mut C>> {
        self.connection.as_mut().map(Pin::as_mut)
    }
}

impl<C: Future> Future for WithStreams<C>
where
    C::Output: Unpin,
{
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.get_mut();
        if let Some(connection) = &mut this.connection {
            if let Poll::Ready(outcome) = connection.as_mut().poll(cx) {
                this.connection = None;
                this.ended = Some(outcome);
            }
        }
        // A stream may spawn too (an extended CONNECT's send side).
        loop {
            this.executor.take_spawned(&mut this.running);
            match this.running.poll_next_unpin(cx) {
                Poll::Ready(Some(())) => {}
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        match this.ended.take() {
            Some(outcome) if this.running.is_empty() => Poll::Ready(outcome),
            still_running => {
                this.ended = still_running;
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn streams_spawned_by_the_connection_run_in_its_task_and_outlive_it() {
        let executor = StreamExecutor::default();
        let (release, released) = oneshot::channel::<()>();
        let (finished, stream_finished) = oneshot::channel::<&str>();
        let spawner = executor.clone();
        // The "connection" spawns one stream and ends at once.
        let connection = async move {
            spawner.execute(async move {
                released.await.expect("released");
                finished.send("stream done").expect("listening");
            });
            "connection done"
        };
        let mut together = tokio::spawn(WithStreams::new(connection, executor));
        tokio::task::yield_now().await;
        assert!(!together.is_finished(), "it ended while its stream still ran");
        release.send(()).expect("stream waiting");
        assert_eq!(stream_finished.await.expect("the stream ran"), "stream done");
        assert_eq!((&mut together).await.expect("no panic"), "connection done");
    }

    #[tokio::test]
    async fn a_stream_spawned_by_a_stream_runs_too() {
        let executor = StreamExecutor::default();
        let (finished, inner_finished) = oneshot::channel::<()>();
        let spawner = executor.clone();
        let connection = async move {
            let inner_spawner = spawner.clone();
            spawner.execute(async move {
                inner_spawner.execute(async move { finished.send(()).expect("listening") });
            });
        };
        WithStreams::new(connection, executor).await;
        inner_finished.await.expect("the inner stream ran before the connection's task ended");
    }
}
