//! Any message a client or server sends, in every dialect: decoding never panics, and a
//! decoded client command that the dialect can express again decodes to the same command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::DialectKind;

fuzz_target!(|data: &[u8]| {
    for kind in DialectKind::ALL {
        let codec = kind.codec();
        let _ = codec.decode_server(data);
        let Ok(command) = codec.decode(data) else { continue };
        let Ok(messages) = codec.encode_command(&command) else { continue };
        if let [one] = &messages[..] {
            let again = codec.decode(one).unwrap_or_else(|e| panic!("{kind:?}: what it encodes it decodes: {e:?}"));
            assert_eq!(again, command, "{kind:?}");
        }
    }
});
