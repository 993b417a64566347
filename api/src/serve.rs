//! Serving connections: the accept loop, one task per connection (hyper's HTTP/1), and the
//! graceful shutdown.
//!
//! Where this sits: under everything else — [`crate::Api::run`] hands it the router. It does
//! what `axum::serve` does, with one difference that matters for thousands of open SSE streams:
//! `axum::serve` serves every connection through hyper-util's *auto* (HTTP/1 or HTTP/2)
//! builder, which first reads up to 24 bytes looking for the HTTP/2 preface and then gives them
//! to hyper as a first, short read. hyper wants 8 KiB free for the next read, so it grows its
//! read buffer from 8 KiB to 16 KiB for the rest of the request head — and a streaming
//! connection keeps that buffer for its whole life. ragq speaks HTTP/1 only (axum is built
//! without `http2`), so here hyper reads the socket itself: one 8 KiB read buffer per
//! connection (docs/BENCHMARKS.md, "Many open streams").
//!
//! The rest is as `axum::serve`: `TCP_NODELAY` on every connection; accept errors other than
//! a peer's reset sleep 1 s (running out of file descriptors must not spin the loop); on
//! shutdown the listener stops accepting, every connection finishes its in-flight response
//! and closes (HTTP/1 graceful shutdown), and the returned future resolves once all are
//! closed.

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Serves `app` on `listener` until `shutdown` resolves and every connection has closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    // Prepared once (every route turned into its service); each connection gets an `Arc`.
    let app = app.with_state::<()>(());
    // Every connection task holds a receiver: `closed()` resolves when the last one is gone.
    let (closed_tx, closed_rx) = watch::channel(());
    let stop = CancellationToken::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = stop.cancelled() => break,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(e) => {
                accept_error(e).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        let held = closed_rx.clone();
        tokio::spawn(async move {
            let conn = http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            drop(held);
        });
    }
    drop(listener);
    drop(closed_rx);
    closed_tx.closed().await;
    Ok(())
}

/// As hyper 0.14 and axum: a peer's reset is not worth a word; anything else (EMFILE: out of
/// file descriptors) is logged and the loop pauses a second, so that it does not spin.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept error");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
