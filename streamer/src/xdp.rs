//! Loading the XDP programs onto the boot interface.
//!
//! The programs live in `streamer-ebpf`; `build.rs` builds them and this module
//! embeds the object. [`BootSteer::attach`] loads `boot_steer` into the kernel and
//! attaches it to an interface, in native (driver) mode where the driver supports
//! XDP and in generic (SKB) mode otherwise; [`BootSteer::counters`] reads what it
//! counted; dropping the [`BootSteer`] (or [`BootSteer::detach`]) takes it off the
//! interface again.
//!
//! ```no_run
//! # fn main() -> Result<(), streamer::xdp::XdpError> {
//! let steer = streamer::xdp::BootSteer::attach("eth1")?;
//! println!("boot_steer on eth1 in {} mode", steer.mode());
//! let counters = steer.counters()?;
//! println!("{} packets, {} to the control port", counters.packets, counters.control);
//! # Ok(())
//! # }
//! ```
//!
//! Loading needs root, or `CAP_BPF` and `CAP_NET_ADMIN`. Interface names are
//! resolved in the calling thread's network namespace, and a program attached in
//! generic mode on an old kernel is detached by interface index: attach and drop
//! a [`BootSteer`] on a thread in the same namespace.

use std::{fmt, io};

use aya::{
    maps::{MapData, MapError, PerCpuArray},
    programs::{xdp::XdpLinkId, ProgramError, Xdp, XdpMode},
    Ebpf, EbpfError,
};
use streamer_common::ebpf::{Counter, BOOT_STEER_PROG, COUNTERS_MAP};

/// The object `build.rs` built from `streamer-ebpf`; empty when the build was
/// skipped with `AYA_BUILD_SKIP`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/streamer-ebpf"));

/// What can go wrong loading, attaching or reading the XDP programs. Each message
/// says what the operator can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdpError {
    /// This binary was built without its XDP programs.
    #[error(
        "this streamer was built without its XDP programs (AYA_BUILD_SKIP was set); \
         rebuild it after running scripts/setup, or run on plain sockets"
    )]
    NotBuilt,
    /// The kernel refused for lack of privilege.
    #[error(
        "not permitted to load XDP programs: run streamer as root, or grant it \
         CAP_BPF and CAP_NET_ADMIN (e.g. `setcap cap_bpf,cap_net_admin+ep`)"
    )]
    NotPermitted {
        /// The refused call.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No interface has the name.
    #[error(
        "network interface {name:?} not found: check the name with `ip link` (in this \
         network namespace)"
    )]
    InterfaceNotFound {
        /// The name asked for.
        name: String,
    },
    /// The embedded object could not be loaded (its maps created, its BTF read).
    #[error(
        "could not load the embedded eBPF object (see the cause); check that this kernel \
         supports BPF (CONFIG_BPF_SYSCALL) and see `dmesg`"
    )]
    Load {
        /// What aya reported.
        #[source]
        source: Box<EbpfError>,
    },
    /// The object lacks a program or map this module expects: the build and the
    /// names in `streamer_common::ebpf` disagree.
    #[error(
        "the embedded eBPF object has no {kind} named {name:?}; streamer-ebpf and \
         streamer_common::ebpf disagree, rebuild both"
    )]
    Missing {
        /// `"program"` or `"map"`.
        kind: &'static str,
        /// The missing name.
        name: &'static str,
    },
    /// The program is in the object but the kernel would not load it.
    #[error(
        "the kernel rejected the XDP program {BOOT_STEER_PROG:?} (the cause carries the \
         verifier's log); is this kernel older than the ones streamer is tested on?"
    )]
    Program {
        /// What aya reported, with the verifier's log.
        #[source]
        source: Box<ProgramError>,
    },
    /// Neither native nor generic mode could be attached.
    #[error(
        "could not attach {BOOT_STEER_PROG:?} to {iface:?} in driver mode ({driver}) nor \
         in generic mode (below); is another XDP program attached? See \
         `ip link show dev {iface}`"
    )]
    Attach {
        /// The interface.
        iface: String,
        /// Why native (driver) mode failed.
        driver: Box<ProgramError>,
        /// Why generic (SKB) mode failed.
        #[source]
        generic: Box<ProgramError>,
    },
    /// The program could not be detached cleanly.
    #[error(
        "could not detach {BOOT_STEER_PROG:?} from {iface:?}; check `ip link show dev {iface}`"
    )]
    Detach {
        /// The interface.
        iface: String,
        /// What aya reported.
        #[source]
        source: Box<ProgramError>,
    },
    /// Reading the counters map failed.
    #[error("could not read the XDP counters (map {COUNTERS_MAP})")]
    Counters {
        /// What aya reported.
        #[source]
        source: Box<MapError>,
    },
}

/// How the program runs on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Native XDP, run by the driver before it allocates a socket buffer.
    Driver,
    /// Generic XDP, run by the kernel's network stack: slower, works on any
    /// interface.
    Generic,
}

impl AttachMode {
    /// A short, stable name for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            AttachMode::Driver => "driver",
            AttachMode::Generic => "generic",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `boot_steer` has counted since it was attached, summed over the CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Every packet it saw.
    pub packets: u64,
    /// Their bytes, Ethernet header included.
    pub bytes: u64,
    /// IPv4/UDP packets to [`CONTROL_PORT`](streamer_common::wire::CONTROL_PORT).
    pub control: u64,
}

impl Counters {
    /// The value of one counter.
    pub const fn get(&self, counter: Counter) -> u64 {
        match counter {
            Counter::Packets => self.packets,
            Counter::Bytes => self.bytes,
            Counter::Control => self.control,
        }
    }

    fn set(&mut self, counter: Counter, value: u64) {
        let slot = match counter {
            Counter::Packets => &mut self.packets,
            Counter::Bytes => &mut self.bytes,
            Counter::Control => &mut self.control,
        };
        *slot = value;
    }
}

/// `boot_steer`, loaded and attached to one interface. Dropping it detaches the
/// program (ignoring errors; call [`detach`](Self::detach) to see them).
pub struct BootSteer {
    ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    iface: String,
    mode: AttachMode,
    link: Option<XdpLinkId>,
}

impl BootSteer {
    /// Loads the embedded `boot_steer` and attaches it to `iface`: native mode
    /// first, generic mode if the driver refuses. [`mode`](Self::mode) tells which.
    pub fn attach(iface: &str) -> Result<Self, XdpError> {
        if EBPF_OBJECT.is_empty() {
            return Err(XdpError::NotBuilt);
        }
        // No interface has a NUL in its name (and aya would panic on one).
        if iface.contains('\0') {
            return Err(XdpError::InterfaceNotFound {
                name: iface.to_owned(),
            });
        }
        let mut ebpf = Ebpf::load(EBPF_OBJECT).map_err(|source| {
            if denied(&source) {
                XdpError::NotPermitted {
                    source: Box::new(source),
                }
            } else {
                XdpError::Load {
                    source: Box::new(source),
                }
            }
        })?;
        let counters = ebpf.take_map(COUNTERS_MAP).ok_or(XdpError::Missing {
            kind: "map",
            name: COUNTERS_MAP,
        })?;
        let counters = PerCpuArray::try_from(counters).map_err(|source| XdpError::Counters {
            source: Box::new(source),
        })?;

        let program = boot_steer(&mut ebpf)?;
        program.load().map_err(program_error)?;
        let (link, mode) = match program.attach(iface, XdpMode::Driver) {
            Ok(link) => (link, AttachMode::Driver),
            Err(ProgramError::UnknownInterface { name }) => {
                return Err(XdpError::InterfaceNotFound { name })
            }
            Err(driver) if denied(&driver) => return Err(program_error(driver)),
            Err(driver) => match program.attach(iface, XdpMode::Skb) {
                Ok(link) => (link, AttachMode::Generic),
                Err(generic) if denied(&generic) => return Err(program_error(generic)),
                Err(generic) => {
                    return Err(XdpError::Attach {
                        iface: iface.to_owned(),
                        driver: Box::new(driver),
                        generic: Box::new(generic),
                    })
                }
            },
        };
        Ok(BootSteer {
            ebpf,
            counters,
            iface: iface.to_owned(),
            mode,
            link: Some(link),
        })
    }

    /// The interface the program is attached to.
    pub fn interface(&self) -> &str {
        &self.iface
    }

    /// How the program runs there.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Reads the counters, summed over the CPUs.
    pub fn counters(&self) -> Result<Counters, XdpError> {
        let mut counters = Counters::default();
        for counter in Counter::ALL {
            let per_cpu =
                self.counters
                    .get(&counter.index(), 0)
                    .map_err(|source| XdpError::Counters {
                        source: Box::new(source),
                    })?;
            counters.set(
                counter,
                per_cpu.iter().fold(0, |sum, v| sum.wrapping_add(*v)),
            );
        }
        Ok(counters)
    }

    /// Detaches the program from the interface and unloads it.
    pub fn detach(mut self) -> Result<(), XdpError> {
        self.detach_link()
    }

    fn detach_link(&mut self) -> Result<(), XdpError> {
        let Some(link) = self.link.take() else {
            return Ok(());
        };
        let detach_error = |source| XdpError::Detach {
            iface: self.iface.clone(),
            source: Box::new(source),
        };
        boot_steer(&mut self.ebpf)?
            .detach(link)
            .map_err(detach_error)
    }
}

impl fmt::Debug for BootSteer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootSteer")
            .field("iface", &self.iface)
            .field("mode", &self.mode)
            .field("attached", &self.link.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for BootSteer {
    fn drop(&mut self) {
        // Nothing to report to from here; `detach` returns the error instead.
        // Unloading the object afterwards closes the program and map fds.
        let _ignored: Result<(), XdpError> = self.detach_link();
    }
}

/// The `boot_steer` program in `ebpf`.
fn boot_steer(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpError> {
    let missing = XdpError::Missing {
        kind: "program",
        name: BOOT_STEER_PROG,
    };
    let program = ebpf.program_mut(BOOT_STEER_PROG).ok_or(missing)?;
    program.try_into().map_err(program_error)
}

fn program_error(source: ProgramError) -> XdpError {
    if denied(&source) {
        XdpError::NotPermitted {
            source: Box::new(source),
        }
    } else {
        XdpError::Program {
            source: Box::new(source),
        }
    }
}

/// Whether the kernel refused a call in `error`'s chain with `EPERM`: not root
/// and without `CAP_BPF`/`CAP_NET_ADMIN`. (`EACCES` is the verifier rejecting
/// the program, not a privilege problem.)
fn denied(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.raw_os_error() == Some(libc::EPERM) {
                return true;
            }
        }
        next = e.source();
    }
    false
}
