use super::*;
use proptest::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A base in memory that counts how it is read, and can fail on purpose.
struct CountingBase {
    data: Vec<u8>,
    calls: AtomicU64,
    bytes: AtomicU64,
}

impl CountingBase {
    fn new(size: usize, seed: u64) -> Self {
        let mut x = seed | 1;
        let data = (0..size)
            .map(|_| {
                // xorshift64: deterministic, not zero-heavy.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        CountingBase {
            data,
            calls: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }
    fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Base for CountingBase {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_base(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.data.read_base(offset, buf)
    }
}

const BS: u32 = 4096;
const B: usize = BS as usize;

fn disk(size: usize) -> CowDisk<CountingBase> {
    CowDisk::new(CountingBase::new(size, 0x5eed), BS)
}

fn read(d: &CowDisk<CountingBase>, offset: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    d.read(offset, &mut v).unwrap();
    v
}

#[test]
fn block_sizes_are_checked() {
    for bad in [0, 1, 256, 511, 513, 3000, 2 << 20, u32::MAX] {
        assert_eq!(
            CowDisk::try_new(Vec::new(), bad).unwrap_err(),
            InvalidBlockSize(bad)
        );
    }
    for good in [512, 4096, 1 << 20] {
        assert_eq!(
            CowDisk::try_new(Vec::new(), good).unwrap().block_size(),
            good
        );
    }
    assert!(InvalidBlockSize(3).to_string().contains("power of two"));
}

#[test]
fn untouched_reads_equal_the_base_in_one_call() {
    let size = 10 * B + 1234;
    let d = disk(size);
    for (off, len) in [
        (0, size),
        (1, 1),
        (B - 3, 7),
        (5 * B + 17, 3 * B),
        (size - 5, 5),
    ] {
        let before = d.base().calls();
        assert_eq!(read(&d, off as u64, len), &d.base().data[off..off + len]);
        assert_eq!(
            d.base().calls() - before,
            1,
            "one base call for {off}+{len}"
        );
    }
    assert_eq!(d.overlay_blocks(), 0);
}

#[test]
fn partial_writes_keep_the_rest_of_the_block_from_the_base() {
    let size = 8 * B;
    let d = disk(size);
    let original = d.base().data.clone();
    // Crosses from block 0 into block 1, covering neither wholly.
    d.write(B as u64 - 10, &[0xab; 20], false).unwrap();
    assert_eq!(
        d.base().calls(),
        2,
        "one copy-on-write read per partial block"
    );
    let mut want = original.clone();
    want[B - 10..B + 10].fill(0xab);
    assert_eq!(read(&d, 0, size), want);
    assert_eq!(d.base().data, original, "the base is never written");
    assert_eq!(d.overlay_blocks(), 2);
    assert_eq!(d.overlay_bytes(), 2 * B as u64);

    // A second partial write to an overlaid block needs no base read.
    let calls = d.base().calls();
    d.write(5, &[1, 2, 3], true).unwrap();
    assert_eq!(d.base().calls(), calls);
    want[5..8].copy_from_slice(&[1, 2, 3]);
    assert_eq!(read(&d, 0, 2 * B), want[..2 * B]);
}

#[test]
fn whole_block_writes_do_not_read_the_base() {
    let d = disk(8 * B);
    d.write(2 * B as u64, &vec![7u8; 3 * B], false).unwrap();
    assert_eq!(d.base().calls(), 0);
    assert_eq!(d.overlay_blocks(), 3);
}

#[test]
fn reads_coalesce_runs_of_base_blocks() {
    let d = disk(16 * B);
    d.write(2 * B as u64, &vec![9u8; B], false).unwrap();
    d.write(9 * B as u64, &vec![8u8; B], false).unwrap();
    let (calls, bytes) = (d.base().calls(), d.base().bytes());
    let got = read(&d, 0, 16 * B);
    // Runs: 0-1, 3-8, 10-15.
    assert_eq!(d.base().calls() - calls, 3);
    assert_eq!(d.base().bytes() - bytes, 14 * B as u64);
    let mut want = d.base().data.clone();
    want[2 * B..3 * B].fill(9);
    want[9 * B..10 * B].fill(8);
    assert_eq!(got, want);
}

#[test]
fn trim_zeroes_whole_blocks_only_and_frees_their_data() {
    let d = disk(8 * B);
    d.write(0, &vec![5u8; 8 * B], false).unwrap();
    assert_eq!(d.overlay_bytes(), 8 * B as u64);
    // Whole blocks 2..5, partial 1 and 5.
    d.trim(B as u64 + 100, 4 * B as u64).unwrap();
    let got = read(&d, 0, 8 * B);
    assert!(got[..2 * B].iter().all(|&x| x == 5));
    assert!(got[2 * B..5 * B].iter().all(|&x| x == 0));
    assert!(got[5 * B..].iter().all(|&x| x == 5));
    assert_eq!(d.overlay_blocks(), 8);
    assert_eq!(d.overlay_bytes(), 5 * B as u64);

    // A trim over base blocks: markers, no memory, no base read.
    let d = disk(8 * B);
    d.trim(0, 3 * B as u64 + 1).unwrap();
    assert_eq!((d.overlay_blocks(), d.overlay_bytes()), (3, 0));
    assert_eq!(d.base().calls(), 0);
    let got = read(&d, 0, 4 * B);
    assert!(got[..3 * B].iter().all(|&x| x == 0));
    assert_eq!(got[3 * B..], d.base().data[3 * B..4 * B]);
    // A partial trim does nothing at all.
    d.trim(5 * B as u64 + 1, 100).unwrap();
    assert_eq!(d.overlay_blocks(), 3);
}

#[test]
fn write_zeroes_uses_markers_unless_asked_for_no_holes() {
    let d = disk(8 * B);
    let base = d.base().data.clone();
    d.write_zeroes(B as u64 / 2, 3 * B as u64, true).unwrap();
    let got = read(&d, 0, 8 * B);
    let mut want = base.clone();
    want[B / 2..B / 2 + 3 * B].fill(0);
    assert_eq!(got, want);
    // Blocks 1 and 2 are markers; 0 and 3 are partial, zeroed by copy-on-write.
    assert_eq!((d.overlay_blocks(), d.overlay_bytes()), (4, 2 * B as u64));

    // NO_HOLE: every block in the range holds data.
    let d = disk(8 * B);
    d.trim(0, 8 * B as u64).unwrap();
    d.write_zeroes(0, 4 * B as u64, false).unwrap();
    assert_eq!(d.overlay_bytes(), 4 * B as u64);
    assert!(read(&d, 0, 8 * B).iter().all(|&x| x == 0));
}

#[test]
fn a_zero_marker_written_partially_stays_zero_elsewhere() {
    let d = disk(4 * B);
    d.trim(0, 4 * B as u64).unwrap();
    d.write(B as u64 + 7, &[1, 2], false).unwrap();
    assert_eq!(d.base().calls(), 0);
    let got = read(&d, B as u64, B);
    assert_eq!(&got[7..9], &[1, 2]);
    assert!(got[..7].iter().chain(&got[9..]).all(|&x| x == 0));
}

#[test]
fn the_unaligned_last_block_works() {
    let size = 3 * B + 1234;
    let d = disk(size);
    // A partial write into the short last block: copy on write of its 1234 bytes.
    d.write(3 * B as u64 + 1000, &[0xee; 234], false).unwrap();
    let mut want = d.base().data.clone();
    want[3 * B + 1000..].fill(0xee);
    assert_eq!(read(&d, 0, size), want);
    // Covering the last block to the end counts as whole.
    let d = disk(size);
    d.trim(3 * B as u64, 1234).unwrap();
    assert_eq!(d.overlay_blocks(), 1);
    assert!(read(&d, 3 * B as u64, 1234).iter().all(|&x| x == 0));
    d.write(3 * B as u64, &[3u8; 1234], false).unwrap();
    assert_eq!(read(&d, 3 * B as u64, 1234), vec![3u8; 1234]);
}

#[test]
fn out_of_range_is_refused_without_panicking() {
    let d = disk(2 * B);
    let mut buf = [0u8; 2];
    assert_eq!(d.read(2 * B as u64 - 1, &mut buf), Err(Error::Invalid));
    assert_eq!(d.read(u64::MAX, &mut buf), Err(Error::Invalid));
    assert_eq!(
        d.write(u64::MAX - 1, &[1, 2, 3], false),
        Err(Error::Invalid)
    );
    assert_eq!(d.trim(1, 2 * B as u64), Err(Error::Invalid));
    assert_eq!(d.write_zeroes(u64::MAX, 2, true), Err(Error::Invalid));
    assert_eq!(d.read(2 * B as u64, &mut []), Ok(()));
    assert_eq!(d.overlay_blocks(), 0);
}

#[test]
fn the_memory_limit_refuses_and_changes_nothing() {
    let d = disk(8 * B).with_memory_limit(2 * B as u64 + 100);
    d.write(0, &vec![1u8; 2 * B], false).unwrap();
    assert_eq!(
        d.write(2 * B as u64, &[2u8; 10], false),
        Err(Error::NoSpace)
    );
    // Rewriting what is there needs nothing new.
    d.write(10, &[3u8; 10], false).unwrap();
    // A write spanning an overlaid and a new block is refused as a whole.
    assert_eq!(
        d.write(B as u64, &vec![4u8; 2 * B], false),
        Err(Error::NoSpace)
    );
    assert_eq!(d.overlay_bytes(), 2 * B as u64);
    assert!(read(&d, B as u64, B).iter().all(|&x| x == 1));
    // Markers are free, and trimming frees room.
    d.write_zeroes(4 * B as u64, 2 * B as u64, true).unwrap();
    d.trim(0, B as u64).unwrap();
    d.write(7 * B as u64, &[5u8; 1], false).unwrap();
    assert_eq!(
        d.write_zeroes(2 * B as u64, B as u64, false),
        Err(Error::NoSpace)
    );
}

#[test]
fn concurrent_writers_and_readers_see_whole_writes() {
    let d = Arc::new(disk(64 * B));
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let d = Arc::clone(&d);
            std::thread::spawn(move || {
                for round in 0..50u64 {
                    let b = u64::from(t) * 16 + round % 16;
                    // Unaligned: exercises copy-on-write under contention.
                    d.write(b * BS as u64 + 1, &[t + 1; B - 2], false).unwrap();
                    let mut got = [0u8; B - 2];
                    d.read(b * BS as u64 + 1, &mut got).unwrap();
                    assert!(got.iter().all(|&x| x == t + 1));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(d.overlay_blocks(), 64);
}

/// One operation of the model test.
#[derive(Debug, Clone)]
enum Step {
    Write(u64, Vec<u8>),
    Trim(u64, u64),
    Zeroes(u64, u64, bool),
    Read(u64, u64),
}

fn step(size: u64) -> impl Strategy<Value = Step> {
    let at = 0..size;
    prop_oneof![
        (at.clone(), prop::collection::vec(any::<u8>(), 0..3 * 512))
            .prop_map(|(o, d)| Step::Write(o, d)),
        (at.clone(), 0..4 * 512u64).prop_map(|(o, l)| Step::Trim(o, l)),
        (at.clone(), 0..4 * 512u64, any::<bool>()).prop_map(|(o, l, t)| Step::Zeroes(o, l, t)),
        (at, 0..4 * 512u64).prop_map(|(o, l)| Step::Read(o, l)),
    ]
}

proptest! {
    /// The overlay behaves like a plain byte array where trim zeroes the blocks
    /// wholly inside its range, and the base never changes.
    #[test]
    fn the_overlay_matches_a_byte_array(steps in prop::collection::vec(step(8 * 512 + 77), 1..40)) {
        let size = 8 * 512 + 77;
        let d = CowDisk::new(CountingBase::new(size, 7), 512);
        let mut model = d.base().data.clone();
        for s in steps {
            let fits = |o: u64, l: u64| o.checked_add(l).is_some_and(|e| e <= size as u64);
            match s {
                Step::Write(o, data) => {
                    let r = d.write(o, &data, false);
                    if fits(o, data.len() as u64) {
                        prop_assert_eq!(r, Ok(()));
                        model[o as usize..o as usize + data.len()].copy_from_slice(&data);
                    } else {
                        prop_assert_eq!(r, Err(Error::Invalid));
                    }
                }
                Step::Trim(o, l) => {
                    let r = d.trim(o, l);
                    if fits(o, l) {
                        prop_assert_eq!(r, Ok(()));
                        let end = o + l;
                        for b in 0..=(size as u64 / 512) {
                            let (bs, be) = (b * 512, ((b + 1) * 512).min(size as u64));
                            if bs < be && o <= bs && end >= be {
                                model[bs as usize..be as usize].fill(0);
                            }
                        }
                    } else {
                        prop_assert_eq!(r, Err(Error::Invalid));
                    }
                }
                Step::Zeroes(o, l, may_trim) => {
                    let r = d.write_zeroes(o, l, may_trim);
                    if fits(o, l) {
                        prop_assert_eq!(r, Ok(()));
                        model[o as usize..(o + l) as usize].fill(0);
                    } else {
                        prop_assert_eq!(r, Err(Error::Invalid));
                    }
                }
                Step::Read(o, l) => {
                    let mut buf = vec![0u8; l as usize];
                    let r = d.read(o, &mut buf);
                    if fits(o, l) {
                        prop_assert_eq!(r, Ok(()));
                        prop_assert_eq!(&buf[..], &model[o as usize..(o + l) as usize]);
                    } else {
                        prop_assert_eq!(r, Err(Error::Invalid));
                    }
                }
            }
        }
        let mut all = vec![0u8; size];
        d.read(0, &mut all).unwrap();
        prop_assert_eq!(all, model);
        prop_assert_eq!(&d.base().data, &CountingBase::new(size, 7).data);
    }
}
