//! Any bytes a client sends after the handshake: the frame decoder and the message assembler
//! never panic, always make progress or ask for more, and only complete text messages that
//! are valid UTF-8 and within the size bound. The first byte says whether the connection
//! negotiated permessage-deflate (then compressed messages are inflated, within the bound).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_wsframe::{decode, Decoded, FrameOp, MessageAssembler};

fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else { return };
    let deflate = first & 1 == 1;
    let mut buf = data.to_vec();
    let mut assembler = MessageAssembler::default();
    let mut at = 0;
    while at < buf.len() {
        let rest = buf.len() - at;
        match decode(&mut buf[at..], 64 * 1024, deflate) {
            Ok(Decoded::Frame(frame, used)) => {
                assert!(used > 0 && used <= rest, "a frame takes some of what arrived");
                if matches!(frame.op, FrameOp::Text | FrameOp::Binary | FrameOp::Continuation) {
                    match assembler.push(frame, 64 * 1024) {
                        Ok(Some(message)) => {
                            assert!(message.data.len() <= 64 * 1024, "within the bound, inflated or not");
                            if message.is_text {
                                assert!(std::str::from_utf8(&message.data).is_ok());
                            }
                        }
                        Ok(None) => {}
                        Err(_) => return,
                    }
                }
                at += used;
            }
            Ok(Decoded::Incomplete { want }) => {
                assert!(want > rest, "asks for more than has arrived");
                // What arrived of an unfinished text frame is checked as it arrives: the count
                // of valid bytes never exceeds what arrived and never goes back.
                let mut checked = 0;
                for end in [rest / 2, rest] {
                    match switchboard_wsframe::check_arrived_text(&buf[at..at + end], checked) {
                        Ok(now) => {
                            assert!(now >= checked && now <= end, "progress within what arrived");
                            checked = now;
                        }
                        Err(_) => return,
                    }
                }
                return;
            }
            Err(_) => return,
        }
    }
});
