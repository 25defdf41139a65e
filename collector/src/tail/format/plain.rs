//! Plain text lines: the frame is the message, stamped with the time it was read.

use bytes::Bytes;

use crate::tail::framing::Frame;
use crate::tail::record::LogRecord;

/// Decodes plain lines. It holds nothing: a line longer than the frame limit comes out as
/// the framer cut it, each piece but the last marked `split`.
#[derive(Debug, Default)]
pub struct PlainDecoder {}

impl PlainDecoder {
    /// A plain-line decoder.
    pub fn new() -> Self {
        Self {}
    }

    /// Pushes one record: the frame without one trailing `'\r'` (a CRLF file), stamped `now`.
    ///
    /// A `'\r'` at the end of a truncated piece is kept: it is inside the line, not before
    /// its newline.
    #[inline]
    pub fn decode(&mut self, frame: Frame, now: &Bytes, out: &mut Vec<LogRecord>) {
        let mut message = frame.bytes;
        if !frame.truncated && message.last() == Some(&b'\r') {
            message.truncate(message.len() - 1);
        }
        out.push(LogRecord {
            time: now.clone(),
            stream: None,
            message,
            split: frame.truncated,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_lines() {
        let cases: &[(&[u8], bool, &[u8])] = &[
            (b"hello", false, b"hello"),
            (b"", false, b""),
            (b"crlf\r", false, b"crlf"),
            (b"two\r\r", false, b"two\r"),
            (b"\r", false, b""),
            (b"inner\rcr", false, b"inner\rcr"),
            (b"piece\r", true, b"piece\r"),
            (b"piece", true, b"piece"),
        ];
        let now = Bytes::from_static(b"2024-01-01T00:00:00.000000000Z");
        for &(line, truncated, message) in cases {
            let frame = Frame {
                bytes: Bytes::copy_from_slice(line),
                start_offset: 0,
                end_offset: line.len() as u64,
                truncated,
            };
            let mut out = Vec::new();
            PlainDecoder::new().decode(frame, &now, &mut out);
            let want = LogRecord {
                time: now.clone(),
                stream: None,
                message: Bytes::copy_from_slice(message),
                split: truncated,
            };
            assert_eq!(out, [want], "{line:?}");
        }
    }
}
