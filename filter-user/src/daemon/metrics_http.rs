//! The metrics endpoint: HTTP/1 on the `--metrics` address. Each scrape
//! asks the serving loop for the text of [`super::metrics::render`], so it
//! reads the daemon's state between two other pieces of its work.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// How long a scraper may take to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests for the metrics text; the loop answers each on its sender
/// (an empty text when it has none).
pub type Scrapes = mpsc::Sender<oneshot::Sender<String>>;

/// Metrics connections served at once; more are closed unanswered.
const MAX_SCRAPES: usize = 16;

/// Serves one HTTP connection of the metrics listener: `GET /metrics`
/// answers the daemon's rendering, anything else 404 or 405.
async fn http_connection(stream: tokio::net::TcpStream, scrapes: Scrapes, _permit: tokio::sync::OwnedSemaphorePermit) {
    use http_body_util::Full;
    use hyper::{Method, Response, StatusCode, body::Bytes, header};
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let scrapes = scrapes.clone();
        async move {
            let reply = |code: StatusCode, kind: &'static str, body: String| {
                let mut r = Response::new(Full::new(Bytes::from(body)));
                *r.status_mut() = code;
                r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
                r
            };
            if req.uri().path() != "/metrics" {
                return Ok::<_, std::convert::Infallible>(reply(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "see /metrics\n".into(),
                ));
            }
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into()));
            }
            let (tx, rx) = oneshot::channel();
            let text = if scrapes.send(tx).await.is_ok() { rx.await.unwrap_or_default() } else { String::new() };
            if text.is_empty() {
                return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "no metrics now\n".into()));
            }
            Ok(reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", text))
        }
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service);
    let _ = tokio::time::timeout(Duration::from_mins(1), conn).await;
}

/// Accepts metrics connections, at most `MAX_SCRAPES` at once, each
/// served by a task of its own.
pub async fn accept(listener: tokio::net::TcpListener, scrapes: Scrapes) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(http_connection(stream, scrapes.clone(), permit));
                }
                // Over the limit: closed at once, nothing read.
                Err(_) => drop(stream),
            },
            Err(e) => {
                warn!("accepting a metrics connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
