//! Lines out of a byte stream, with a bound on the memory one connection holds.
//!
//! A line longer than the bound is not buffered: it is reported once as
//! [`Rejection::LineTooLong`] and the bytes up to its newline are skipped as they arrive, so a
//! 10 MB line without a newline costs at most `max_line_bytes` of memory.

use super::parse::Rejection;

/// A stream's partial line and whether the current line is being skipped.
#[derive(Debug)]
pub struct LineFramer {
    /// The start of a line whose newline has not arrived yet.
    partial: Vec<u8>,
    /// Longest line kept.
    max_line_bytes: usize,
    /// The current line is over the bound: its bytes are dropped up to its newline.
    skipping: bool,
}

impl LineFramer {
    /// A framer for lines of at most `max_line_bytes` (newline excluded).
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            partial: Vec::new(),
            max_line_bytes,
            skipping: false,
        }
    }

    /// Feeds bytes read from the stream; `on_line` gets each complete line (without its
    /// newline) or the rejection of an over-long one.
    pub fn feed(&mut self, mut data: &[u8], mut on_line: impl FnMut(Result<&[u8], Rejection>)) {
        while let Some(at) = memchr::memchr(b'\n', data) {
            let (line, rest) = (&data[..at], &data[at + 1..]);
            data = rest;
            if self.skipping {
                self.skipping = false;
                continue;
            }
            if self.partial.is_empty() {
                if line.len() > self.max_line_bytes {
                    on_line(Err(Rejection::LineTooLong));
                } else {
                    on_line(Ok(line));
                }
            } else if self.partial.len() + line.len() > self.max_line_bytes {
                self.partial.clear();
                on_line(Err(Rejection::LineTooLong));
            } else {
                self.partial.extend_from_slice(line);
                on_line(Ok(&self.partial));
                self.partial.clear();
            }
        }
        if self.skipping || data.is_empty() {
            return;
        }
        if self.partial.len() + data.len() > self.max_line_bytes {
            self.partial = Vec::new();
            self.skipping = true;
            on_line(Err(Rejection::LineTooLong));
        } else {
            self.partial.extend_from_slice(data);
        }
    }

    /// The stream ended: a line without its newline is [`Rejection::IncompleteLine`] (it may
    /// be half of what the sender meant). A skipped line was already reported.
    pub fn finish(&mut self) -> Option<Rejection> {
        let incomplete = !self.partial.is_empty() && !self.skipping;
        self.partial.clear();
        incomplete.then_some(Rejection::IncompleteLine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(chunks: &[&[u8]], max: usize) -> Vec<Result<String, Rejection>> {
        let mut f = LineFramer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, |l| {
                out.push(l.map(|b| String::from_utf8_lossy(b).into_owned()))
            });
        }
        if let Some(r) = f.finish() {
            out.push(Err(r));
        }
        out
    }

    #[test]
    fn lines_are_the_same_however_reads_are_split() {
        let text = b"a 1\nbb 2\n\nccc 3\n";
        for split in 0..text.len() {
            let (x, y) = text.split_at(split);
            assert_eq!(
                frame(&[x, y], 64),
                vec![
                    Ok("a 1".into()),
                    Ok("bb 2".into()),
                    Ok(String::new()),
                    Ok("ccc 3".into())
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn an_over_long_line_is_one_rejection_and_the_next_line_survives() {
        let big = vec![b'x'; 10 * 1024 * 1024];
        let mut chunks: Vec<&[u8]> = big.chunks(65536).collect();
        chunks.push(b"\nok 1\n");
        assert_eq!(
            frame(&chunks, 4096),
            vec![Err(Rejection::LineTooLong), Ok("ok 1".into())]
        );
        // Over the bound across a complete line too.
        assert_eq!(
            frame(&[b"aaaa", b"aaaa\nb 1\n"], 6),
            vec![Err(Rejection::LineTooLong), Ok("b 1".into())]
        );
    }

    #[test]
    fn a_half_line_at_the_end_is_incomplete() {
        assert_eq!(
            frame(&[b"a 1\nb 2"], 64),
            vec![Ok("a 1".into()), Err(Rejection::IncompleteLine)]
        );
        let big = vec![b'x'; 100];
        assert_eq!(frame(&[&big], 64), vec![Err(Rejection::LineTooLong)]);
    }
}
