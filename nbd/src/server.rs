//! [`Server`]: a listener on a unix socket or a TCP port, one thread per
//! connection, and a clean stop.
//!
//! [`Server::serve`] polls a non-blocking listener (every 20 ms) so it can see
//! the caller's stop flag without a signal or a self-pipe, and gives each
//! accepted socket a 100 ms read and write timeout so its connection thread sees
//! the stop too (see [`crate::serve_connection`]). When the flag is set it stops
//! accepting, lets every connection thread notice, joins them all, and removes
//! its unix socket file.

use crate::{serve_connection, Config, ConnError, ConnStats, Export};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the accept loop looks at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// A connection's socket timeout: how long it can miss a stop.
const IO_TIMEOUT: Duration = Duration::from_millis(100);

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A unix socket at this path.
    Unix(PathBuf),
    /// A TCP address (port 0: any free port; see [`Server::local_addr`]).
    Tcp(SocketAddr),
}

const FORMS: &str = "nbd:/path/to.sock (a socket path; it must contain a '/', so write \
    nbd:./x.sock for a relative one), nbd:IPV4:PORT, nbd:[IPV6]:PORT or nbd:localhost:PORT";

impl Listen {
    /// Parses `nbd:/path/to.sock` (anything containing a `/` is a path) or
    /// `nbd:HOST:PORT` with an IPv4 literal, a bracketed IPv6 literal, or
    /// `localhost` (127.0.0.1). The error names the accepted forms.
    pub fn parse(s: &str) -> Result<Listen, String> {
        let Some(rest) = s.strip_prefix("nbd:") else {
            return Err(format!("{s:?} is not an NBD address; use {FORMS}"));
        };
        if rest.contains('/') {
            return Ok(Listen::Unix(PathBuf::from(rest)));
        }
        if let Some(port) = rest.strip_prefix("localhost:") {
            let port = port.parse::<u16>().map_err(|_| {
                format!("in {s:?}, {port:?} is not a port number (0 to 65535); use {FORMS}")
            })?;
            return Ok(Listen::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
        }
        rest.parse::<SocketAddr>()
            .map(Listen::Tcp)
            .map_err(|_| format!("{s:?} is neither a socket path nor an IP:PORT; use {FORMS}"))
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Unix(p) => write!(f, "nbd:{}", p.display()),
            Listen::Tcp(a) => write!(f, "nbd:{a}"),
        }
    }
}

/// What [`Server::serve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServeReport {
    /// Connections accepted.
    pub connections: u64,
    /// Requests received, over all connections.
    pub requests: u64,
    /// Requests answered with an error, over all connections.
    pub errors: u64,
    /// Connections that ended on an error (or whose thread panicked).
    pub failed_connections: u64,
}

/// Something a server reports as it runs, for the caller's log.
#[derive(Debug)]
pub enum Event<'a> {
    /// A client connected.
    Connected {
        /// The client's address, or `PATH#N` on a unix socket.
        peer: &'a str,
    },
    /// A connection ended.
    Ended {
        /// As in `Connected`.
        peer: &'a str,
        /// How.
        result: &'a Result<ConnStats, ConnError>,
    },
    /// A connection's thread panicked (a bug in the export).
    Panicked {
        /// As in `Connected`.
        peer: &'a str,
    },
    /// Accepting or setting up a connection failed; the server goes on.
    AcceptFailed {
        /// Why.
        error: &'a io::Error,
    },
}

type EventFn = dyn Fn(Event<'_>) + Send + Sync;

/// The unix socket file a server created; removed on drop if it is still the
/// same file (not one another process put there since).
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

#[derive(Debug)]
enum Listener {
    Unix {
        listener: UnixListener,
        /// Held for its `Drop`: removes the socket file with the server.
        _file: SocketFile,
    },
    Tcp(TcpListener),
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// A listening server. See the module documentation.
pub struct Server {
    listener: Listener,
    export: Arc<dyn Export>,
    cfg: Arc<Config>,
    local: String,
    events: Option<Arc<EventFn>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local", &self.local)
            .field("size", &self.export.size())
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Removes a unix socket left by a server that is gone; refuses anything else.
fn clear_stale_socket(path: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let shown = path.display();
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{shown} exists and is not a socket; remove it or choose another path"),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another server is listening on {shown}; stop it or choose another path"),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .map_err(|e| context(e, format!("cannot remove the stale socket {shown}"))),
        Err(e) => Err(context(e, format!("cannot tell whether {shown} is in use"))),
    }
}

impl Server {
    /// Listens on `listen` for clients of `export`. A unix socket file left
    /// behind by a server that is gone is replaced; one a live server listens
    /// on, or a file that is not a socket, is an error that says so.
    pub fn bind(listen: &Listen, export: Arc<dyn Export>, cfg: Config) -> io::Result<Server> {
        cfg.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let (listener, local) = match listen {
            Listen::Unix(path) => {
                clear_stale_socket(path)?;
                let l = UnixListener::bind(path)
                    .map_err(|e| context(e, format!("cannot listen on {}", path.display())))?;
                let m = std::fs::symlink_metadata(path)?;
                let file = SocketFile {
                    path: path.clone(),
                    id: (m.dev(), m.ino()),
                };
                (
                    Listener::Unix {
                        listener: l,
                        _file: file,
                    },
                    path.display().to_string(),
                )
            }
            Listen::Tcp(addr) => {
                let l = TcpListener::bind(addr)
                    .map_err(|e| context(e, format!("cannot listen on {addr}")))?;
                let local = l.local_addr()?.to_string();
                (Listener::Tcp(l), local)
            }
        };
        match &listener {
            Listener::Unix { listener, .. } => listener.set_nonblocking(true)?,
            Listener::Tcp(l) => l.set_nonblocking(true)?,
        }
        Ok(Server {
            listener,
            export,
            cfg: Arc::new(cfg),
            local,
            events: None,
        })
    }

    /// The socket path, or the bound `ip:port`, for logs.
    pub fn local_addr(&self) -> String {
        self.local.clone()
    }

    /// Calls `f` for each [`Event`] (from the serving thread and from
    /// connection threads).
    pub fn on_event(mut self, f: impl Fn(Event<'_>) + Send + Sync + 'static) -> Self {
        self.events = Some(Arc::new(f));
        self
    }

    fn emit(&self, e: Event<'_>) {
        if let Some(f) = &self.events {
            f(e);
        }
    }

    /// The next connection, set up for [`serve_connection`]; `None` if none is
    /// waiting.
    fn accept(&self, n: u64) -> io::Result<Option<(Stream, String)>> {
        let accepted = match &self.listener {
            Listener::Unix { listener, .. } => listener
                .accept()
                .map(|(s, _)| (Stream::Unix(s), format!("{}#{n}", self.local))),
            Listener::Tcp(l) => l.accept().map(|(s, a)| (Stream::Tcp(s), a.to_string())),
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        match &stream {
            Stream::Unix(s) => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
            }
            Stream::Tcp(s) => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                // Replies are small and must not wait for an ACK (proto.md
                // asks both sides to disable Nagle).
                s.set_nodelay(true)?;
            }
        }
        Ok(Some((stream, peer)))
    }

    /// Accepts connections until `stop` is set (checked every 20 ms), one
    /// thread per connection; returns once `stop` is set and every connection
    /// thread has ended (connections see the stop between requests, or while
    /// idle within 100 ms; a request in progress finishes first, so an export
    /// call that blocks delays the return). Removes the unix socket file.
    ///
    /// Accept errors that can pass (a client that went away, too many open
    /// files) are reported through [`Server::on_event`] and the server goes on;
    /// any other accept error stops every connection and is returned.
    pub fn serve(self, stop: Arc<AtomicBool>) -> io::Result<ServeReport> {
        let halt = Arc::new(AtomicBool::new(false));
        let totals = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
        let mut running: Vec<(String, JoinHandle<()>)> = Vec::new();
        let mut connections = 0u64;
        let mut fatal = None;
        while !stop.load(Ordering::Relaxed) {
            match self.accept(connections) {
                Ok(Some((stream, peer))) => {
                    connections += 1;
                    self.emit(Event::Connected { peer: &peer });
                    match self.spawn(stream, peer.clone(), &halt, &totals) {
                        Ok(h) => running.push((peer, h)),
                        Err(error) => self.emit(Event::AcceptFailed { error: &error }),
                    }
                }
                Ok(None) => std::thread::sleep(ACCEPT_POLL),
                Err(error) if passing(&error) => {
                    self.emit(Event::AcceptFailed { error: &error });
                    std::thread::sleep(IO_TIMEOUT);
                }
                Err(error) => {
                    fatal = Some(context(error, format!("cannot accept on {}", self.local)));
                    break;
                }
            }
            let (done, still): (Vec<_>, Vec<_>) =
                running.into_iter().partition(|(_, h)| h.is_finished());
            running = still;
            for (peer, h) in done {
                self.join(&peer, h, &totals);
            }
        }
        halt.store(true, Ordering::Relaxed);
        for (peer, h) in running {
            self.join(&peer, h, &totals);
        }
        if let Some(e) = fatal {
            return Err(e);
        }
        let [requests, errors, failed] = &*totals;
        Ok(ServeReport {
            connections,
            requests: requests.load(Ordering::Relaxed),
            errors: errors.load(Ordering::Relaxed),
            failed_connections: failed.load(Ordering::Relaxed),
        })
        // `self` drops here, removing the unix socket file.
    }

    fn spawn(
        &self,
        stream: Stream,
        peer: String,
        halt: &Arc<AtomicBool>,
        totals: &Arc<[AtomicU64; 3]>,
    ) -> io::Result<JoinHandle<()>> {
        let (export, cfg, events) = (
            Arc::clone(&self.export),
            Arc::clone(&self.cfg),
            self.events.clone(),
        );
        let (halt, totals) = (Arc::clone(halt), Arc::clone(totals));
        std::thread::Builder::new()
            .name("nbd-conn".into())
            .spawn(move || {
                let result = match stream {
                    Stream::Unix(s) => serve_connection(s, &*export, &cfg, &halt),
                    Stream::Tcp(s) => serve_connection(s, &*export, &cfg, &halt),
                };
                let stats = match &result {
                    Ok(s) => *s,
                    Err(e) => e.stats,
                };
                totals[0].fetch_add(stats.requests, Ordering::Relaxed);
                totals[1].fetch_add(stats.errors, Ordering::Relaxed);
                totals[2].fetch_add(u64::from(result.is_err()), Ordering::Relaxed);
                if let Some(f) = events {
                    f(Event::Ended {
                        peer: &peer,
                        result: &result,
                    });
                }
            })
    }

    fn join(&self, peer: &str, h: JoinHandle<()>, totals: &[AtomicU64; 3]) {
        if h.join().is_err() {
            totals[2].fetch_add(1, Ordering::Relaxed);
            self.emit(Event::Panicked { peer });
        }
    }
}

/// Accept errors that say nothing about the listener itself.
fn passing(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | TimedOut | OutOfMemory
    ) || matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_parses_the_documented_forms() {
        let ok = [
            ("nbd:/run/x.sock", Listen::Unix("/run/x.sock".into())),
            ("nbd:./x.sock", Listen::Unix("./x.sock".into())),
            (
                "nbd:127.0.0.1:10809",
                Listen::Tcp("127.0.0.1:10809".parse().unwrap()),
            ),
            ("nbd:[::1]:0", Listen::Tcp("[::1]:0".parse().unwrap())),
            (
                "nbd:localhost:99",
                Listen::Tcp("127.0.0.1:99".parse().unwrap()),
            ),
        ];
        for (s, want) in ok {
            assert_eq!(Listen::parse(s), Ok(want.clone()), "{s}");
            assert_eq!(Listen::parse(&want.to_string()), Ok(want));
        }
        for bad in [
            "",
            "/run/x.sock",
            "nbd:",
            "nbd:x.sock",
            "nbd:example.com:10809",
            "nbd:localhost:65536",
            "nbd:localhost:",
            "nbd:::1:10809",
            "nbd:1.2.3.4",
            "tcp:1.2.3.4:5",
        ] {
            let e = Listen::parse(bad).unwrap_err();
            assert!(
                e.contains("nbd:/path/to.sock") && e.contains("IPV4:PORT"),
                "{bad}: {e}"
            );
        }
    }
}
