//! Accepting connections: a cap on how many are open, a timeout on idle and
//! slow ones, and, at the cap, room made by closing the connection idle the
//! longest, so connections that send nothing (opened before any
//! authentication) cannot lock out clients that do.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
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
    /// Closes it.
    abort: tokio::task::AbortHandle,
}

#[derive(Default)]
struct Registry {
    open: HashMap<u64, Open>,
    next: u64,
}

type Shared = Arc<Mutex<Registry>>;

fn lock(registry: &Shared) -> std::sync::MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks a connection busy while a request is answered.
struct Busy(Shared, u64);

impl Busy {
    fn enter(registry: &Shared, id: u64) -> Busy {
        if let Some(open) = lock(registry).open.get_mut(&id) {
            open.busy += 1;
        }
        Busy(registry.clone(), id)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(open) = lock(&self.0).open.get_mut(&self.1) {
            open.busy -= 1;
            open.idle_since = Instant::now();
        }
    }
}

/// Forgets a connection when its task ends (or is aborted).
struct Closed(Shared, u64, Arc<tokio::sync::Notify>);

impl Drop for Closed {
    fn drop(&mut self) {
        lock(&self.0).open.remove(&self.1);
        self.2.notify_one();
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the
/// requests in progress finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Connections,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let registry: Shared = Arc::default();
    let freed = Arc::new(tokio::sync::Notify::new());
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.idle_timeout);
    tokio::pin!(shutdown);
    loop {
        // At the cap: close the connection idle the longest, or wait until
        // one closes if every one is answering a request.
        while lock(&registry).open.len() >= limits.max.max(1) {
            let idlest = {
                let registry = lock(&registry);
                let idle = registry.open.iter().filter(|(_, open)| open.busy == 0);
                idle.min_by_key(|(_, open)| open.idle_since).map(|(&id, open)| (id, open.abort.clone()))
            };
            match idlest {
                Some((id, abort)) => {
                    tracing::debug!(connection = id, "at the connection cap: closing the connection idle the longest");
                    abort.abort();
                    lock(&registry).open.remove(&id);
                }
                None => tokio::select! {
                    () = freed.notified() => {}
                    () = &mut shutdown => return drain(graceful).await,
                },
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
            () = &mut shutdown => return drain(graceful).await,
        };
        let _ = stream.set_nodelay(true);
        let id = {
            let mut registry = lock(&registry);
            registry.next += 1;
            registry.next
        };
        let service = {
            let (app, registry) = (app.clone(), registry.clone());
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let busy = Busy::enter(&registry, id);
                let response = app.clone().oneshot(request.map(axum::body::Body::new));
                async move {
                    let response = response.await;
                    drop(busy);
                    response
                }
            })
        };
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let closed = Closed(registry.clone(), id, freed.clone());
        // The task starts only once the connection is registered: the
        // registry lock is held across the spawn.
        let mut open = lock(&registry);
        let task = tokio::spawn(async move {
            let _closed = closed;
            if let Err(e) = connection.await {
                tracing::trace!(%peer, error = %e, "connection ended with an error");
            }
        });
        open.open.insert(id, Open { busy: 0, idle_since: Instant::now(), abort: task.abort_handle() });
    }
}

async fn drain(graceful: GracefulShutdown) -> std::io::Result<()> {
    graceful.shutdown().await;
    Ok(())
}
