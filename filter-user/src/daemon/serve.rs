//! The serving loop of `namewall run`: control requests, reloads on
//! SIGHUP and list changes, block events from the kernel, metrics scrapes,
//! counter reports, list fetches and the flow sweep, one at a time on one
//! thread, until SIGINT, SIGTERM or `namewall stop`.

use std::{io, time::Duration};

use thiserror::Error;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
};
use tracing::{info, warn};

use super::{Daemon, metrics, metrics_http};
use crate::{
    control::{
        Reply, Request, Response,
        server::{ControlSocket, IO_TIMEOUT, Job},
    },
    dataplane::{FilterError, counters},
    policy::{
        PolicySource,
        fetch::{self, UrlList},
    },
};

/// How the loop runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Seconds between counter reports (0: none).
    pub stats_interval: u64,
    /// Seconds between checks of the list files for changes (0: none).
    pub watch_interval: u64,
    /// Seconds between fetches of the list URLs.
    pub url_refresh: u64,
    /// Fetched lists with malformed lines load without them.
    pub skip_bad_lines: bool,
    /// Rules listed in the metrics by hits.
    pub metrics_top: usize,
}

/// Why the loop could not start or go on.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("installing the {signal} handler")]
    Signal { signal: &'static str, source: io::Error },
    #[error("the control socket")]
    Control(#[source] io::Error),
    #[error("the event ring buffer")]
    Events(#[source] Box<FilterError>),
    #[error("polling the event ring buffer")]
    Poll(#[source] io::Error),
    #[error("the metrics listener")]
    Metrics(#[source] io::Error),
    #[error("reading counters")]
    Counters(#[source] Box<FilterError>),
}

/// Why `serve` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// SIGINT or SIGTERM.
    Signal,
    /// `namewall stop`: detach and remove everything.
    Stop,
}

/// The list files' identities (inode, size, mtime): a change of any
/// means the file was edited or replaced.
fn list_signature(source: &PolicySource) -> Vec<Option<(u64, u64, i64, i64)>> {
    use std::os::unix::fs::MetadataExt as _;
    source
        .blocklists
        .iter()
        .chain(&source.allowlists)
        .map(|p| std::fs::metadata(p).ok().map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec())))
        .collect()
}

/// How often idle TLS flows are swept out of the flow table.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Serves control requests, reloads on SIGHUP and list changes, logs
/// counters on the interval and sweeps idle flows, until SIGINT or SIGTERM.
pub async fn serve(
    daemon: &mut Daemon,
    socket: &ControlSocket,
    metrics: Option<std::net::TcpListener>,
    opts: &ServeOptions,
) -> Result<Exit, ServeError> {
    let handler = |kind: SignalKind, name| signal(kind).map_err(|source| ServeError::Signal { signal: name, source });
    let mut sigint = handler(SignalKind::interrupt(), "SIGINT")?;
    let mut sigterm = handler(SignalKind::terminate(), "SIGTERM")?;
    let mut sighup = handler(SignalKind::hangup(), "SIGHUP")?;
    let (jobs_tx, mut jobs) = mpsc::channel::<Job>(64);
    socket.serve(jobs_tx, daemon.events.follower()).map_err(ServeError::Control)?;
    let ring = daemon.filter.take_events().map_err(|e| ServeError::Events(Box::new(e)))?;
    // SAFETY: the RingBuf owns its map's file descriptor and keeps it open
    // and unchanged for as long as the AsyncFd holds it.
    let mut ring = unsafe { tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| ServeError::Poll(e.into_parts().1))?;
    let (scrape_tx, mut scrapes) = mpsc::channel::<oneshot::Sender<String>>(16);
    if let Some(l) = metrics {
        let listener = tokio::net::TcpListener::from_std(l).map_err(ServeError::Metrics)?;
        tokio::spawn(metrics_http::accept(listener, scrape_tx));
    }
    let mut stats = every(opts.stats_interval);
    let mut watch = every(opts.watch_interval);
    let mut sweep = every(SWEEP_EVERY.as_secs());
    let mut refresh = if daemon.source().urls.is_empty() { None } else { every(opts.url_refresh) };
    let (fetched_tx, mut fetched) = mpsc::channel::<Fetches>(1);
    let mut fetching = false;
    let mut seen = list_signature(daemon.source());
    let mut last = daemon.filter.counters().map_err(|e| ServeError::Counters(Box::new(e)))?;
    let exit = loop {
        tokio::select! {
            _ = sigint.recv() => { info!("SIGINT: stopping"); break Exit::Signal; }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break Exit::Signal; }
            _ = sighup.recv() => {
                let _ = daemon.reload("SIGHUP");
                seen = list_signature(daemon.source());
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(ServeError::Poll)?;
                let drained = drain_events(daemon, guard.get_inner_mut());
                // Items left: come back to them after the other work.
                if drained < MAX_EVENTS_PER_TURN {
                    guard.clear_ready();
                }
            }
            Some(reply) = scrapes.recv() => {
                let text = match daemon.metrics(opts.metrics_top) {
                    Ok(s) => metrics::render(&s),
                    Err(e) => { warn!("metrics: {e}"); String::new() }
                };
                let _ = reply.send(text);
            }
            Some(Job { request, reply, written }) = jobs.recv() => {
                if matches!(request, Request::Stop) {
                    info!("stop requested: detaching");
                    let _ = reply.send(Response::ok(Reply::Stopping));
                    // The reply reaches the client before the runtime ends.
                    let _ = tokio::time::timeout(IO_TIMEOUT, written).await;
                    break Exit::Stop;
                }
                let reload = matches!(request, Request::Reload);
                let _ = reply.send(daemon.handle(request));
                if reload {
                    seen = list_signature(daemon.source());
                }
            }
            () = tick(&mut watch) => {
                let now = list_signature(daemon.source());
                if now != seen {
                    // Reloaded once per change; an editor still writing
                    // changes the signature again and triggers another.
                    seen = now;
                    let _ = daemon.reload("list file changed");
                }
            }
            () = tick(&mut stats) => match daemon.filter.counters() {
                Ok(now) => {
                    let d = counters::delta(&now, &last);
                    info!(interval_s = opts.stats_interval, delta = %counters::one_line(&d), "counters");
                    last = now;
                }
                Err(e) => warn!("reading counters: {e}"),
            },
            () = tick(&mut refresh), if !fetching => {
                // Off the loop: a slow server must not hold up the daemon.
                fetching = true;
                spawn_refresh(daemon.source().urls.clone(), opts.skip_bad_lines, fetched_tx.clone());
            }
            Some(results) = fetched.recv() => {
                fetching = false;
                if daemon.record_fetches(results) {
                    seen = list_signature(daemon.source());
                }
            }
            () = tick(&mut sweep) => {
                match daemon.filter.sweep_flows() {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(removed = n, "swept idle flows"),
                    Err(e) => warn!("sweeping idle flows: {e}"),
                }
            }
        }
    };
    Ok(exit)
}

/// What one round of list fetches came to, per URL.
type Fetches = Vec<(String, Result<fetch::Refreshed, fetch::RefreshError>)>;

/// Fetches every list URL on a blocking thread and sends the results back,
/// always (a panic is reported as a failure), so the loop knows it is done.
fn spawn_refresh(lists: Vec<UrlList>, skip_bad_lines: bool, tx: mpsc::Sender<Fetches>) {
    tokio::task::spawn_blocking(move || {
        let r = lists
            .iter()
            .map(|l| {
                let got = std::panic::catch_unwind(|| fetch::refresh(l, skip_bad_lines))
                    .unwrap_or(Err(fetch::RefreshError::Panicked));
                (l.url.clone(), got)
            })
            .collect();
        let _ = tx.blocking_send(r);
    });
}

/// Events read from the ring buffer before the loop turns to other work.
const MAX_EVENTS_PER_TURN: usize = 4096;

/// Reads up to [`MAX_EVENTS_PER_TURN`] events into the log; returns how many.
fn drain_events(daemon: &mut Daemon, ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> usize {
    let mut n = 0;
    while n < MAX_EVENTS_PER_TURN {
        let Some(item) = ring.next() else { break };
        if item.len() >= size_of::<maps::layout::event::Event>() {
            // SAFETY: the kernel wrote a whole Event (checked length); read
            // unaligned, as ring buffer records are only 8-byte aligned.
            let e = unsafe { item.as_ptr().cast::<maps::layout::event::Event>().read_unaligned() };
            drop(item);
            daemon.record_event(&e);
        }
        n += 1;
    }
    n
}

/// A timer firing every `secs` seconds (the first time after `secs`), or
/// none for 0.
fn every(secs: u64) -> Option<tokio::time::Interval> {
    (secs != 0).then(|| {
        let period = Duration::from_secs(secs);
        tokio::time::interval_at(tokio::time::Instant::now() + period, period)
    })
}

/// The next tick of `t`; never without a timer.
async fn tick(t: &mut Option<tokio::time::Interval>) {
    match t.as_mut() {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}
