//! Located validation errors, rendered the way rustc renders its errors.

use std::fmt;

/// A place in the source: 1-based line and column (in characters) and the
/// number of characters to underline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) len: usize,
}

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
    pub help: Option<String>,
    /// The text of the offending line, shown under the message.
    pub source_line: Option<String>,
    /// How many characters from `column` to underline (at least 1).
    pub span_len: usize,
}

/// Every problem found in a pipeline file, in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// The diagnostics as `[{"file", "line", "column", "message", "help"}]`,
    /// for `gantry lint --format json`. `help` is `null` when there is none.
    pub fn to_json(&self) -> serde_json::Value {
        self.0
            .iter()
            .map(|d| {
                serde_json::json!({
                    "file": d.file,
                    "line": d.line,
                    "column": d.column,
                    "message": d.message,
                    "help": d.help,
                })
            })
            .collect()
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gutter = " ".repeat(self.line.to_string().len());
        writeln!(f, "error: {}", self.message)?;
        write!(f, "{gutter}--> {}:{}:{}", self.file, self.line, self.column)?;
        if let Some(text) = &self.source_line {
            // Tabs are shown as four spaces so that the carets line up.
            let shown = text.replace('\t', "    ");
            let width = |c: char| if c == '\t' { 4 } else { 1 };
            let before: usize = text
                .chars()
                .take(self.column.saturating_sub(1))
                .map(width)
                .sum();
            let underlined: usize = text
                .chars()
                .skip(self.column.saturating_sub(1))
                .take(self.span_len)
                .map(width)
                .sum();
            let carets = "^".repeat(underlined.max(1));
            write!(f, "\n{gutter} |")?;
            write!(f, "\n{} | {}", self.line, shown.trim_end())?;
            write!(f, "\n{gutter} | {}{carets}", " ".repeat(before))?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n{gutter} = help: {help}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in &self.0 {
            write!(f, "{diagnostic}\n\n")?;
        }
        let file = self.0.first().map_or("", |d| d.file.as_str());
        let count = self.0.len();
        let plural = if count == 1 { "" } else { "s" };
        write!(
            f,
            "error: could not validate `{file}` due to {count} previous error{plural}"
        )
    }
}

impl std::error::Error for Diagnostics {}
