//! Any bytes a brl client or server sends: decoding never panics, and a decoded client
//! command encodes back to a frame that decodes to the same command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::dialect::Brl;
use switchboard_protocol::Codec;

fuzz_target!(|frame: &[u8]| {
    if let Ok(command) = Brl.decode(frame) {
        if let Ok(messages) = Brl.encode_command(&command) {
            for message in messages {
                let again = Brl.decode(&message).expect("what the codec encodes, it decodes");
                assert_eq!(again, command);
            }
        }
    }
    let _ = Brl.decode_server(frame);
});
