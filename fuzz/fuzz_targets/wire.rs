//! Every wire message on arbitrary bytes: never a panic; whatever parses emits
//! again, and the emitted datagram parses to the same session and message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamer_common::wire::Message;

fuzz_target!(|data: &[u8]| {
    let Ok((session, msg)) = Message::parse(data) else {
        return;
    };
    let mut buf = vec![0u8; msg.buffer_len()];
    let n = msg.emit(session, &mut buf).expect("a parsed message emits");
    let (session2, msg2) = Message::parse(&buf[..n]).expect("an emitted message parses");
    assert_eq!((session2, msg2), (session, msg));
});
