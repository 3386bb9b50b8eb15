//! What the XDP programs share with userspace: program and map names and the
//! layout of the values in the maps. Userspace opens maps by these names, never by
//! a string of its own, and the programs index their maps with these types.
//!
//! This module builds for `bpfel-unknown-none` as part of `streamer-ebpf`, so it
//! stays `no_std`, dependency-free and free of anything the BPF backend cannot
//! lower (no 128-bit arithmetic, no formatting on the program's paths).

/// Per-CPU array of `u64` packet counters of the `boot_steer` program, indexed by
/// [`Counter`]. Userspace sums the CPUs.
pub const COUNTERS_MAP: &str = "COUNTERS";

/// The XDP program that sits on the appliance's boot interface.
pub const BOOT_STEER_PROG: &str = "boot_steer";

/// Slots of [`COUNTERS_MAP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Counter {
    /// Every packet the program saw.
    Packets = 0,
    /// Their bytes, from the Ethernet header on (the frame as the driver handed
    /// it over, without the FCS).
    Bytes = 1,
    /// IPv4/UDP packets to the stream's control port
    /// ([`CONTROL_PORT`](crate::wire::CONTROL_PORT)); only first fragments carry
    /// the UDP header, so later fragments are not counted here.
    Control = 2,
}

/// Slots in [`COUNTERS_MAP`].
pub const COUNTER_SLOTS: u32 = 3;

impl Counter {
    /// Every counter, in slot order: `Counter::ALL[i].index() == i`.
    pub const ALL: [Counter; COUNTER_SLOTS as usize] =
        [Counter::Packets, Counter::Bytes, Counter::Control];

    /// The counter's slot in [`COUNTERS_MAP`].
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// A short, stable name for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Counter::Packets => "packets",
            Counter::Bytes => "bytes",
            Counter::Control => "control_packets",
        }
    }
}

// `ALL` lists the slots in order and has `COUNTER_SLOTS` entries; a new variant
// must join it (the exhaustive match in `as_str` is the reminder).
const _: () = {
    let mut i = 0;
    while i < Counter::ALL.len() {
        assert!(Counter::ALL[i].index() as usize == i);
        i += 1;
    }
};
