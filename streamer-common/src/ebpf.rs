//! What the XDP programs share with userspace: map names and the layout of the
//! values in them. Userspace opens maps by these names, never by a string of its
//! own.

/// Per-CPU array of packet counters of the `boot_steer` program, indexed by
/// [`Counter`].
pub const COUNTERS_MAP: &str = "COUNTERS";

/// The XDP program that sits on the appliance's boot interface.
pub const BOOT_STEER_PROG: &str = "boot_steer";

/// Slots of [`COUNTERS_MAP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    /// Every packet the program saw.
    Packets = 0,
    /// Their bytes.
    Bytes = 1,
    /// IPv4/UDP packets to the stream's control port.
    Control = 2,
}

/// Slots in [`COUNTERS_MAP`].
pub const COUNTER_SLOTS: u32 = 3;
