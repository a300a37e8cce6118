//! Turning raw container output into masked log lines.
//!
//! Containers write arbitrary chunks; people read lines. [`LineSplitter`]
//! reassembles lines across chunk boundaries (so a secret split across two
//! chunks is still whole when [`Masker`] sees it), and flushes a trailing
//! line that never got its newline. Both are pure and synchronous.

/// Longest line kept in one piece; longer output is cut into several lines so
/// that a process printing without newlines cannot grow memory without bound.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Reassembles lines from a stream of byte chunks.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds a chunk and returns the lines it completed, without their `\n`
    /// (a `\r\n` ending loses its `\r` too; a lone `\r` is kept so that
    /// viewers can collapse progress bars).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&rest[..newline]);
            lines.push(self.take_line());
            rest = &rest[newline + 1..];
        }
        self.pending.extend_from_slice(rest);
        while self.pending.len() >= MAX_LINE_BYTES {
            let tail = self.pending.split_off(MAX_LINE_BYTES);
            lines.push(self.take_line());
            self.pending = tail;
        }
        lines
    }

    /// Returns the last line if the stream ended without a newline.
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            None
        } else {
            Some(self.take_line())
        }
    }

    fn take_line(&mut self) -> String {
        if self.pending.last() == Some(&b'\r') {
            self.pending.pop();
        }
        let line = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        line
    }
}

/// Replaces secret values with `***`.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so that a secret containing another is masked whole.
    needles: Vec<String>,
}

pub const MASK: &str = "***";

impl Masker {
    pub fn new<I, S>(secrets: I) -> Masker
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut needles: Vec<String> = secrets
            .into_iter()
            // A multi-line secret is masked line by line, since that is how it is printed.
            .flat_map(|s| {
                s.as_ref()
                    .lines()
                    .map(str::trim_end)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Masker { needles }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    pub fn mask(&self, line: &str) -> String {
        let mut out = line.to_string();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), MASK);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&str]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut lines: Vec<String> = chunks.iter().flat_map(|c| s.push(c.as_bytes())).collect();
        lines.extend(s.finish());
        lines
    }

    #[test]
    fn lines_are_reassembled_across_chunks() {
        assert_eq!(split(&["he", "llo\nwor", "ld\n"]), ["hello", "world"]);
        assert_eq!(split(&["a\r\nb\n"]), ["a", "b"]);
        assert_eq!(split(&["no newline"]), ["no newline"]);
        assert_eq!(split(&["\n\n"]), ["", ""]);
        assert_eq!(split(&["10%\r20%\r30%\n"]), ["10%\r20%\r30%"]);
        assert!(split(&[]).is_empty());
    }

    #[test]
    fn very_long_lines_are_cut() {
        let long = "x".repeat(MAX_LINE_BYTES * 2 + 10);
        let lines = split(&[&long]);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2].len(), 10);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_dropped() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"a\xffb\n"), ["a\u{fffd}b"]);
    }

    #[test]
    fn masking() {
        let m = Masker::new(["hunter2", "hunter2-long", "", "multi\nline"]);
        assert_eq!(m.mask("pw=hunter2-long and hunter2"), "pw=*** and ***");
        assert_eq!(m.mask("multi"), "***");
        assert_eq!(m.mask("nothing here"), "nothing here");
        assert!(Masker::new([""]).is_empty());
    }

    #[test]
    fn secret_split_across_chunks_is_masked() {
        let m = Masker::new(["s3cr3t-value"]);
        let mut s = LineSplitter::default();
        let mut lines = s.push(b"token: s3cr");
        lines.extend(s.push(b"3t-value end\n"));
        let masked: Vec<String> = lines.iter().map(|l| m.mask(l)).collect();
        assert_eq!(masked, ["token: *** end"]);
    }
}
