//! streamer's XDP programs, built for `bpfel-unknown-none` on nightly by
//! `streamer/build.rs` (aya-build) and embedded in the appliance, which loads them
//! with `streamer::xdp`.
//!
//! `boot_steer` sits on the appliance's boot interface. For now it only counts:
//! every packet and byte, and the IPv4/UDP packets to the stream's control port,
//! into [`COUNTERS`]; it passes everything to the kernel. Map and program names,
//! the counter slots and the port come from `streamer_common`, so userspace and
//! this program never spell them twice.
//!
//! Build it by hand with `cargo build --release` in this folder (nightly, rust-src
//! and bpf-linker, all installed by `scripts/setup`).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use streamer_common::{
    ebpf::{Counter, COUNTER_SLOTS},
    wire::CONTROL_PORT,
};

/// Packet counters, one `u64` per [`Counter`] slot and CPU; userspace sums the
/// CPUs. Opened by userspace as `streamer_common::ebpf::COUNTERS_MAP`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Ethernet II (IEEE 802.3 clause 3.2.6): destination, source, EtherType.
const ETH_HDR_LEN: usize = 14;
/// Offset of the EtherType in the Ethernet header.
const ETH_TYPE: usize = 12;
/// EtherType of IPv4 (IANA "ieee-802-numbers").
const ETH_P_IPV4: u16 = 0x0800;

/// IPv4 (RFC 791 §3.1): version and IHL share the first byte.
const IPV4_VERSION_IHL: usize = 0;
/// Flags and fragment offset.
const IPV4_FRAG: usize = 6;
/// The fragment offset's 13 bits; non-zero on every fragment but the first.
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;
/// Protocol number.
const IPV4_PROTO: usize = 9;
/// The smallest IHL (five 32-bit words, no options).
const IPV4_MIN_IHL: u8 = 5;
/// Protocol number of UDP (IANA "protocol-numbers").
const IPPROTO_UDP: u8 = 17;

/// UDP (RFC 768): the destination port follows the source port.
const UDP_DST_PORT: usize = 2;

/// Why a packet could not be classified. Such packets are counted and passed:
/// they are not boot traffic this program understands.
enum Unparsed {
    /// The header the program needed lies past the end of the packet.
    Truncated,
    /// An IPv4 header shorter than the minimum.
    BadIhl,
}

/// The entry point, named `streamer_common::ebpf::BOOT_STEER_PROG`: counts the
/// packet and passes it, whatever it is.
#[xdp]
fn boot_steer(ctx: XdpContext) -> u32 {
    match try_boot_steer(&ctx) {
        Ok(action) => action,
        Err(Unparsed::Truncated | Unparsed::BadIhl) => xdp_action::XDP_PASS,
    }
}

#[inline(always)]
fn try_boot_steer(ctx: &XdpContext) -> Result<u32, Unparsed> {
    count(Counter::Packets, 1);
    count(Counter::Bytes, (ctx.data_end() - ctx.data()) as u64);
    if udp_dst_port(ctx)? == Some(CONTROL_PORT) {
        count(Counter::Control, 1);
    }
    Ok(xdp_action::XDP_PASS)
}

/// The destination port of an IPv4/UDP packet (first fragment), `None` for any
/// other packet.
#[inline(always)]
fn udp_dst_port(ctx: &XdpContext) -> Result<Option<u16>, Unparsed> {
    if read_be16(ctx, ETH_TYPE)? != ETH_P_IPV4 {
        return Ok(None);
    }
    let ip = ETH_HDR_LEN;
    let [version_ihl] = read::<1>(ctx, ip + IPV4_VERSION_IHL)?;
    if version_ihl >> 4 != 4 {
        return Ok(None);
    }
    let ihl = version_ihl & 0x0f;
    if ihl < IPV4_MIN_IHL {
        return Err(Unparsed::BadIhl);
    }
    let [proto] = read::<1>(ctx, ip + IPV4_PROTO)?;
    if proto != IPPROTO_UDP || read_be16(ctx, ip + IPV4_FRAG)? & IPV4_FRAG_OFFSET_MASK != 0 {
        return Ok(None);
    }
    let udp = ip + usize::from(ihl) * 4;
    Ok(Some(read_be16(ctx, udp + UDP_DST_PORT)?))
}

/// Adds `n` to this CPU's slot of `counter`.
#[inline(always)]
fn count(counter: Counter, n: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter.index()) {
        // SAFETY: the map returned a valid pointer to this CPU's `u64` for the
        // slot, and nothing else runs on this CPU while the program does (per-CPU
        // values are not shared), so the read-modify-write cannot race.
        unsafe { *slot += n };
    }
}

/// A pointer to the `T` at `offset` bytes into the packet, if all of it lies
/// inside the packet. The one bounds check that every packet read goes through;
/// the verifier checks that it dominates each access.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, Unparsed> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(Unparsed::Truncated);
    }
    Ok((start + offset) as *const T)
}

/// The `N` bytes at `offset`. Byte arrays have alignment 1, so no read is
/// unaligned.
#[inline(always)]
fn read<const N: usize>(ctx: &XdpContext, offset: usize) -> Result<[u8; N], Unparsed> {
    let p = ptr_at::<[u8; N]>(ctx, offset)?;
    // SAFETY: `ptr_at` checked that the N bytes lie between `data` and
    // `data_end`, which the kernel keeps readable for the program's run.
    Ok(unsafe { *p })
}

/// The big-endian `u16` at `offset`.
#[inline(always)]
fn read_be16(ctx: &XdpContext, offset: usize) -> Result<u16, Unparsed> {
    read::<2>(ctx, offset).map(u16::from_be_bytes)
}

/// Nothing above can panic, so this is never reached. An endless loop (rather
/// than `unreachable_unchecked`) makes the verifier reject the program should a
/// panic path ever survive optimisation.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
