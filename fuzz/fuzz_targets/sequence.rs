//! The sequence-file parser on arbitrary bytes: never a panic, and whatever parses
//! encodes back to exactly the same bytes (the format has one encoding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamer_common::sequence::{encode, encoded_len, SequenceView};

fuzz_target!(|data: &[u8]| {
    let Ok(view) = SequenceView::parse(data) else {
        return;
    };
    let extents: Vec<_> = view.extents().collect();
    let mut again = vec![0u8; encoded_len(extents.len())];
    encode(&extents, &mut again).expect("parsed extents encode");
    assert_eq!(again, data);
});
