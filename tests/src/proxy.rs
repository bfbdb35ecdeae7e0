//! A fault-injecting TCP proxy on loopback, put between an edge and cloudcore
//! by the link fault tests. The test switches its [`Fault`] at any time:
//!
//! - [`Fault::Pass`]: bytes flow both ways.
//! - [`Fault::Hold`]: nothing is forwarded, nothing is lost: bytes wait (in
//!   the proxy's one-chunk buffer and in the kernel's socket buffers, so TCP
//!   back-pressure reaches the sender) until the fault is lifted. New
//!   connections are accepted and wait too.
//! - [`Fault::Blackhole`]: bytes are read and thrown away, like a network that
//!   silently drops packets; the connections stay open, so only the peers'
//!   pings and idle timeouts can notice. A connection that lost bytes stays
//!   a blackhole after the fault is lifted (its stream is corrupt); new ones
//!   pass again. New connections during the blackhole are swallowed (never
//!   forwarded to the server).
//! - [`Fault::Slow`]: bytes flow at most at the given rate each way.
//!
//! [`Proxy::reset`] aborts every open connection with a TCP RST (a crash of
//! a middlebox); the fault mode stays as it is.
//!
//! [`Proxy::balance`] puts one proxy in front of several backends (the
//! cloudcore replicas behind a Service): each new connection goes to the
//! backend with the fewest open connections, and a backend that refuses the
//! connection (a dead replica) is skipped for the next one.
//!
//! The proxy runs on its own thread and tokio runtime, so sync tests can use
//! it; dropping it closes the listener and every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    Pass,
    /// Forward nothing, lose nothing.
    Hold,
    /// Drop everything silently.
    Blackhole,
    /// Forward at most this many bytes per second in each direction.
    Slow {
        /// The rate.
        bytes_per_sec: u64,
    },
}

/// Counters of what went through the proxy.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections aborted by [`Proxy::reset`].
    pub resets: AtomicU64,
    /// Bytes forwarded client -> server.
    pub up: AtomicU64,
    /// Bytes forwarded server -> client.
    pub down: AtomicU64,
    /// Bytes thrown away by a blackhole.
    pub dropped: AtomicU64,
}

/// The backends of a proxy and their open connections (least-connections
/// balancing; one backend for [`Proxy::start`]).
#[derive(Debug)]
struct Backends {
    addrs: Vec<SocketAddr>,
    open: Vec<AtomicUsize>,
}

impl Backends {
    fn new(addrs: &[SocketAddr]) -> Backends {
        Backends {
            addrs: addrs.to_vec(),
            open: addrs.iter().map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// Backend indices, fewest open connections first (ties: list order).
    fn by_load(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.addrs.len()).collect();
        order.sort_by_key(|&i| self.open[i].load(Ordering::Relaxed));
        order
    }

    /// Connects to the least loaded backend that accepts; counts the
    /// connection as open on it until the returned guard drops.
    async fn connect(self: &Arc<Self>) -> Option<(TcpStream, OpenGuard)> {
        for i in self.by_load() {
            if let Ok(s) = TcpStream::connect(self.addrs[i]).await {
                self.open[i].fetch_add(1, Ordering::Relaxed);
                return Some((
                    s,
                    OpenGuard {
                        backends: self.clone(),
                        index: i,
                    },
                ));
            }
        }
        None
    }
}

/// One open connection to backend `index`.
struct OpenGuard {
    backends: Arc<Backends>,
    index: usize,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.backends.open[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running proxy; see the module docs.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    reset: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    stats: Arc<Stats>,
    backends: Arc<Backends>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The shared control channels every connection task watches.
#[derive(Clone)]
struct Control {
    fault: watch::Receiver<Fault>,
    reset: watch::Receiver<u64>,
    stop: watch::Receiver<bool>,
    stats: Arc<Stats>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards to `upstream`, starting in
    /// [`Fault::Pass`].
    pub fn start(upstream: SocketAddr) -> Result<Proxy> {
        Self::balance(&[upstream])
    }

    /// Listens on `127.0.0.1:0` and spreads connections over `backends`:
    /// each goes to the backend with the fewest open connections through
    /// this proxy; one that refuses is skipped (the next least loaded is
    /// tried), and a client whom no backend accepts gets a RST.
    pub fn balance(backends: &[SocketAddr]) -> Result<Proxy> {
        anyhow::ensure!(!backends.is_empty(), "a proxy needs a backend");
        let backends = Arc::new(Backends::new(backends));
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("binding the proxy")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (fault, fault_rx) = watch::channel(Fault::Pass);
        let (reset, reset_rx) = watch::channel(0u64);
        let (stop, stop_rx) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        let control = Control {
            fault: fault_rx,
            reset: reset_rx,
            stop: stop_rx,
            stats: stats.clone(),
        };
        let upstream_set = backends.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("proxy runtime")?;
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || {
                rt.block_on(async move {
                    match TcpListener::from_std(std_listener) {
                        Ok(listener) => accept_loop(listener, upstream_set, control).await,
                        Err(e) => eprintln!("proxy listener: {e}"),
                    }
                });
            })
            .context("proxy thread")?;
        Ok(Proxy {
            addr,
            fault,
            reset,
            stop,
            stats,
            backends,
            thread: Some(thread),
        })
    }

    /// Open connections per backend (in the order given to
    /// [`Proxy::balance`]).
    pub fn open_per_backend(&self) -> Vec<usize> {
        self.backends
            .open
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `wss://` URL of this proxy (for an edge's `server`).
    pub fn wss_url(&self) -> String {
        format!("wss://{}", self.addr)
    }

    /// Switches the fault mode (takes effect on every open connection).
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// The current fault mode.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Aborts every open connection with a TCP RST.
    pub fn reset(&self) {
        self.reset.send_modify(|g| *g += 1);
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: Arc<Backends>, control: Control) {
    let mut stop = control.stop.clone();
    loop {
        let (client, _) = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        control.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_nodelay(true);
        // Resets from the moment of accepting apply to this connection, even
        // one issued before its task first runs.
        let mut reset = control.reset.clone();
        reset.mark_unchanged();
        tokio::spawn(connection(client, reset, upstream.clone(), control.clone()));
    }
}

/// One proxied connection until either side closes, a reset, or stop.
async fn connection(
    client: TcpStream,
    mut reset: watch::Receiver<u64>,
    upstream: Arc<Backends>,
    control: Control,
) {
    // A connection arriving during a blackhole never reaches the server.
    if *control.fault.borrow() == Fault::Blackhole {
        let (mut r, w) = client.into_split();
        let mut stop = control.stop.clone();
        tokio::select! {
            () = discard(&mut r, &control.stats) => {}
            _ = reset.changed() => rst_half(r, w, &control.stats),
            _ = stop.wait_for(|s| *s) => {}
        }
        return;
    }
    let (server, _open) = tokio::select! {
        r = upstream.connect() => match r {
            Some(s) => s,
            None => {
                rst(client, &control.stats);
                return;
            }
        },
        _ = reset.changed() => {
            rst(client, &control.stats);
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, control.clone(), reset.clone(), Dir::Up);
    let down = pump(sr, cw, control.clone(), reset, Dir::Down);
    // Each direction ends on EOF (passed on as a FIN), an error, a reset
    // (RST) or stop; a half-closed connection lets the other half finish.
    // A reset is counted once per connection, whichever halves were open.
    let (up, down) = tokio::join!(up, down);
    if up || down {
        control.stats.resets.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Up,
    Down,
}

/// Copies `r` to `w` under the current fault until EOF, error, reset or
/// stop; true when a reset aborted it.
async fn pump(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    control: Control,
    mut reset: watch::Receiver<u64>,
    dir: Dir,
) -> bool {
    let mut stop = control.stop.clone();
    let aborted = tokio::select! {
        () = forward(&mut r, &mut w, control.clone(), dir) => false,
        _ = reset.changed() => true,
        _ = stop.wait_for(|s| *s) => false,
    };
    if aborted {
        // SO_LINGER 0: closing sends a RST instead of a FIN.
        let _ = r.as_ref().set_zero_linger();
    }
    aborted
}

async fn forward(r: &mut OwnedReadHalf, w: &mut OwnedWriteHalf, mut control: Control, dir: Dir) {
    let stats = control.stats.clone();
    let mut buf = vec![0u8; 16 * 1024];
    let mut poisoned = false;
    loop {
        // Hold: do not even read, so back-pressure reaches the sender.
        if control.fault.wait_for(|f| *f != Fault::Hold).await.is_err() {
            return;
        }
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = w.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // The fault may have changed while the read waited.
        let fault = match control.fault.wait_for(|f| *f != Fault::Hold).await {
            Ok(f) => *f,
            Err(_) => return,
        };
        if poisoned || fault == Fault::Blackhole {
            poisoned = true;
            stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
            continue;
        }
        let ok = match fault {
            Fault::Slow { bytes_per_sec } => write_slowly(w, &buf[..n], bytes_per_sec).await,
            _ => w.write_all(&buf[..n]).await.is_ok(),
        };
        if !ok {
            return;
        }
        let counter = match dir {
            Dir::Up => &stats.up,
            Dir::Down => &stats.down,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Writes `data` in small pieces so that the rate stays under `bytes_per_sec`.
async fn write_slowly(w: &mut OwnedWriteHalf, data: &[u8], bytes_per_sec: u64) -> bool {
    let rate = bytes_per_sec.max(1);
    let piece = usize::try_from((rate / 20).clamp(1, 16 * 1024)).unwrap_or(1024);
    for chunk in data.chunks(piece) {
        if w.write_all(chunk).await.is_err() {
            return false;
        }
        let secs = chunk.len() as f64 / rate as f64;
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    }
    true
}

/// Reads and throws away until EOF or error.
async fn discard(r: &mut OwnedReadHalf, stats: &Stats) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            return;
        }
        stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
    }
}

fn rst(s: TcpStream, stats: &Stats) {
    let _ = s.set_zero_linger();
    stats.resets.fetch_add(1, Ordering::Relaxed);
    drop(s);
}

fn rst_half(r: OwnedReadHalf, w: OwnedWriteHalf, stats: &Stats) {
    if let Ok(s) = r.reunite(w) {
        rst(s, stats);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    /// An echo server on loopback; returns its address.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().map_while(std::result::Result::ok) {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn client(p: &Proxy) -> TcpStream {
        let s = TcpStream::connect(p.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn pass_hold_blackhole_and_reset() {
        let p = Proxy::start(echo()).unwrap();
        let mut s = client(&p);
        assert_eq!(roundtrip(&mut s, b"hello").unwrap(), b"hello");

        // Hold: nothing comes back while held, everything once released.
        p.set(Fault::Hold);
        s.write_all(b"held").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 4];
        assert!(s.read(&mut buf).is_err(), "nothing passes a hold");
        p.set(Fault::Pass);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"held");

        // Blackhole: bytes vanish, the connection stays open.
        p.set(Fault::Blackhole);
        s.write_all(b"lost").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(
            s.read(&mut buf).is_err(),
            "nothing comes back from a blackhole"
        );
        p.set(Fault::Pass);
        // A new connection works again.
        let mut s2 = client(&p);
        assert_eq!(roundtrip(&mut s2, b"again").unwrap(), b"again");
        assert!(p.stats().dropped.load(Ordering::Relaxed) >= 4);

        // Reset: the open connection is aborted with an RST.
        p.reset();
        let mut one = [0u8; 1];
        let r = s2.read(&mut one);
        assert!(
            matches!(r, Ok(0)) || r.is_err(),
            "the connection must be closed: {r:?}"
        );
        // The other direction's FIN may reach the client before the pump that
        // sent the RST counted it: wait for the count.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while p.stats().resets.load(Ordering::Relaxed) < 1 {
            assert!(std::time::Instant::now() < deadline, "no reset counted");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(p.accepted(), 2);
    }

    /// A backend that greets every connection with `tag` and keeps it open
    /// until `stop` is set; then it closes its listener and connections, as
    /// a killed process would.
    fn tagged(tag: u8, stop: Arc<std::sync::atomic::AtomicBool>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let stop = stop.clone();
                std::thread::spawn(move || {
                    s.set_nonblocking(false).unwrap();
                    s.write_all(&[tag]).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                    let mut buf = [0u8; 64];
                    // Until the client closes, or the backend "dies".
                    while !stop.load(Ordering::Relaxed) {
                        match s.read(&mut buf) {
                            Ok(0) => return,
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(_) => return,
                        }
                    }
                });
            }
        });
        addr
    }

    /// The tag of the backend a new connection through `p` reached.
    fn reached(p: &Proxy) -> (TcpStream, u8) {
        let mut s = client(p);
        let mut tag = [0u8; 1];
        s.read_exact(&mut tag).unwrap();
        (s, tag[0])
    }

    fn wait_open(p: &Proxy, want: &[usize]) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while p.open_per_backend() != want {
            assert!(
                std::time::Instant::now() < deadline,
                "open connections per backend {:?}, want {want:?}",
                p.open_per_backend()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn balance_spreads_by_least_connections_and_skips_dead_backends() {
        // A port nobody listens on: connecting is refused.
        let dead = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let stop_a = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_b = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let a = tagged(b'a', stop_a.clone());
        let b = tagged(b'b', stop_b.clone());
        let p = Proxy::balance(&[dead, a, b]).unwrap();

        // The dead backend has no connections, so it is tried first every
        // time and skipped; the live ones alternate by load.
        let mut conns = Vec::new();
        let mut tags = Vec::new();
        for open in [[0, 1, 0], [0, 1, 1], [0, 2, 1], [0, 2, 2]] {
            let (s, tag) = reached(&p);
            wait_open(&p, &open);
            conns.push(s);
            tags.push(tag);
        }
        assert_eq!(tags, b"abab", "least connections, ties in list order");

        // Closing both connections to `a` makes it the least loaded again.
        conns.remove(2);
        conns.remove(0);
        wait_open(&p, &[0, 0, 2]);
        assert_eq!(reached(&p).1, b'a');

        // `a` dies with a connection open: the connection ends with it, and
        // new ones all go to `b`, though `a` would be the least loaded.
        let (mut on_a, tag) = reached(&p);
        assert_eq!(tag, b'a');
        stop_a.store(true, Ordering::Relaxed);
        assert!(
            matches!(on_a.read(&mut [0u8; 1]), Ok(0) | Err(_)),
            "the connection to a dead backend is closed"
        );
        drop(on_a);
        wait_open(&p, &[0, 0, 2]);
        for _ in 0..3 {
            let (s, tag) = reached(&p);
            assert_eq!(tag, b'b', "a dead backend is skipped");
            conns.push(s);
        }
        wait_open(&p, &[0, 0, 5]);

        // No backend left: the client is refused, not hung.
        stop_b.store(true, Ordering::Relaxed);
        drop(conns);
        wait_open(&p, &[0, 0, 0]);
        let mut s = client(&p);
        let mut one = [0u8; 1];
        let r = s.read(&mut one);
        assert!(matches!(r, Ok(0)) || r.is_err(), "refused: {r:?}");
    }

    #[test]
    fn slow_limits_the_rate() {
        let p = Proxy::start(echo()).unwrap();
        p.set(Fault::Slow {
            bytes_per_sec: 20_000,
        });
        let mut s = client(&p);
        let started = std::time::Instant::now();
        let msg = vec![7u8; 10_000];
        assert_eq!(roundtrip(&mut s, &msg).unwrap(), msg);
        // 10 kB at 20 kB/s per direction (the two directions overlap): ≥ 0.5 s.
        assert!(
            started.elapsed() >= Duration::from_millis(450),
            "{:?}",
            started.elapsed()
        );
    }
}
