//! Accepting connections: a cap on how many are open, a timeout on idle and
//! slow ones, and, at the cap, room made by closing the connection idle the
//! longest, so connections that send nothing (opened before any
//! authentication) cannot lock out clients that do.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How connections are limited.
#[derive(Debug, Clone, Copy)]
pub struct Connections {
    /// Most open at once.
    pub max: usize,
    /// A connection that sends no complete request head for this long
    /// (idle between requests, or sending its headers slowly) is closed.
    pub idle_timeout: Duration,
}

impl Default for Connections {
    fn default() -> Self {
        Connections { max: 1024, idle_timeout: Duration::from_secs(30) }
    }
}

/// An open connection as the accept loop sees it.
struct Open {
    /// Requests being answered on it.
    busy: usize,
    /// Since when it has answered none.
    idle_since: Instant,
    /// Asked to close (it finishes the request it may have started).
    closing: bool,
    /// Asks it to close gracefully.
    close: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Registry {
    open: HashMap<u64, Open>,
    next: u64,
}

/// The registry, and a wake-up for the accept loop when a connection
/// closes or turns idle.
#[derive(Default)]
struct Shared {
    registry: Mutex<Registry>,
    changed: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Marks a connection busy while a request is answered.
struct Busy(Arc<Shared>, u64);

impl Busy {
    fn enter(shared: &Arc<Shared>, id: u64) -> Busy {
        if let Some(open) = shared.lock().open.get_mut(&id) {
            open.busy += 1;
        }
        Busy(shared.clone(), id)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(open) = self.0.lock().open.get_mut(&self.1) {
            open.busy -= 1;
            open.idle_since = Instant::now();
        }
        self.0.changed.notify_one();
    }
}

/// Forgets a connection when its task ends (or is aborted).
struct Closed(Arc<Shared>, u64);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.lock().open.remove(&self.1);
        self.0.changed.notify_one();
    }
}

/// How long a connection asked to close with no request under way has to
/// finish the request head it may be sending.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long a shutdown waits for the requests in progress (a long poll
/// lasts at most 60 s) before it closes their connections.
const DRAIN: Duration = Duration::from_secs(75);

/// Serves `app` on `listener` until `shutdown` resolves, then lets the
/// requests in progress finish (for at most 75 s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Connections,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared::default());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.idle_timeout);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // At the cap (not counting connections already asked to close):
        // ask the connection idle the longest to close and go on; if every
        // one is answering a request, wait for one to close or turn idle.
        let wait = {
            let mut registry = shared.lock();
            let closing = registry.open.values().filter(|open| open.closing).count();
            let full = registry.open.len() - closing >= limits.max.max(1);
            let idle = registry.open.iter_mut().filter(|(_, open)| open.busy == 0 && !open.closing);
            match idle.min_by_key(|(_, open)| open.idle_since) {
                Some((id, open)) if full => {
                    tracing::debug!(connection = id, "at the connection cap: closing the connection idle the longest");
                    open.closing = true;
                    open.close.notify_one();
                    false
                }
                _ => full,
            }
        };
        if wait {
            tokio::select! {
                () = shared.changed.notified() => continue,
                () = &mut shutdown => break,
            }
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then go on.
                    tracing::warn!(error = %e, "cannot accept a connection; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let close = Arc::new(tokio::sync::Notify::new());
        let id = {
            let mut registry = shared.lock();
            registry.next += 1;
            let id = registry.next;
            let open = Open { busy: 0, idle_since: Instant::now(), closing: false, close: close.clone() };
            registry.open.insert(id, open);
            id
        };
        let service = {
            let (app, shared) = (app.clone(), shared.clone());
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let busy = Busy::enter(&shared, id);
                let response = app.clone().oneshot(request.map(axum::body::Body::new));
                async move {
                    let response = response.await;
                    drop(busy);
                    response
                }
            })
        };
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let closed = Closed(shared.clone(), id);
        let task_shared = shared.clone();
        tasks.spawn(async move {
            let _closed = closed;
            tokio::pin!(connection);
            // Closing gracefully: an idle connection closes at once, a busy
            // one after the response it is writing.
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = close.notified() => {
                    connection.as_mut().graceful_shutdown();
                    // A request under way is let finish; a request head that
                    // never completes is not waited for.
                    loop {
                        match tokio::time::timeout(CLOSE_GRACE, connection.as_mut()).await {
                            Ok(result) => break result,
                            Err(_) if task_shared.lock().open.get(&id).is_some_and(|o| o.busy > 0) => {}
                            Err(_) => break Ok(()),
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::trace!(%peer, error = %e, "connection ended with an error");
            }
        });
        // Reap the tasks that ended.
        while tasks.try_join_next().is_some() {}
    }
    // Shutting down: every connection closes after its request in progress.
    for open in shared.lock().open.values() {
        open.close.notify_one();
    }
    if tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!("requests still in progress after {} s: closing their connections", DRAIN.as_secs());
        tasks.abort_all();
    }
    Ok(())
}
