//! Plain text lines: the frame is the message, stamped with the time it was read.

use bytes::Bytes;

use crate::tail::framing::Frame;
use crate::tail::record::LogRecords;

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
    pub fn decode(&mut self, frame: Frame<'_>, now: &Bytes, out: &mut LogRecords) {
        let mut message = frame.bytes;
        if !frame.truncated
            && let [rest @ .., b'\r'] = message
        {
            message = rest;
        }
        let time = out.shared(now, now);
        let message = out.shared(frame.chunk, message);
        out.push(time, message, None, frame.truncated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::LogRecord;
    use crate::tail::format::collect;
    use crate::tail::framing::OwnedFrame;

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
            let frame = OwnedFrame::new(line, 0, truncated);
            let mut out = LogRecords::new();
            PlainDecoder::new().decode(frame.frame(), &now, &mut out);
            let want = LogRecord {
                time: &now,
                stream: None,
                message,
                split: truncated,
            };
            assert_eq!(collect(&out), [want], "{line:?}");
        }
    }
}
