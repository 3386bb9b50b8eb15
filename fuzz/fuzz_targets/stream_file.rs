//! The stream-file header and manifest parsers on arbitrary bytes: never a panic;
//! a header that parses emits back to one that parses equal; a manifest of the
//! header's length always wraps, and its extent check never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamer_common::stream_file::{Manifest, StreamHeader, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(h) = StreamHeader::parse(data) else {
        return;
    };
    let mut again = [0u8; HEADER_LEN];
    h.emit(&mut again);
    assert_eq!(StreamHeader::parse(&again), Ok(h));
    let _ = h.check_file_len(data.len() as u64);

    let rest = &data[HEADER_LEN..];
    let Ok(m) = Manifest::new(&h, rest) else {
        assert_ne!(
            rest.len() as u64,
            h.manifest_len,
            "a manifest of the right length was refused"
        );
        return;
    };
    // The manifest is in memory, so block_count (at most manifest_len / 32) is small.
    let mut scratch = vec![0u64; h.block_count.div_ceil(64) as usize];
    let _ = m.check_extents(&h, &mut scratch);
    assert!(m.check_extents(&h, &mut []).is_err() || h.block_count == 0);
    for e in m.extents() {
        let _ = (e.first, e.count);
    }
    for b in [0, h.block_count.saturating_sub(1), h.block_count, u64::MAX] {
        assert_eq!(m.hash(b).is_some(), b < h.block_count);
    }
});
