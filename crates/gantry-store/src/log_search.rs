//! Finding text in a stage's log, for viewers that show only the lines on screen.
//!
//! A line matches when the text the web view shows for it contains the needle, ignoring case:
//! colour codes and other escape sequences are not text, and a progress bar redrawn with `\r`
//! shows only its last state. [`shown_text`] is the view's drawing (`web/ansi.js`, `parse`)
//! without the styles; the two must change together. Case is folded with Unicode's lower-case
//! mapping on both sides (`to_lowercase` here, `toLowerCase` there).
//!
//! SQLite cannot draw a line, so SQL picks the lines that may show the needle and Rust draws
//! those and looks. Drawing deletes (escapes, control characters, DEL) and adds spaces (tabs,
//! cursor moves right, erasing); only a cursor moving left reorders, by overwriting. Lower-casing
//! brings only `İ` and the Kelvin sign from beyond ASCII into it (as `i` and `k`). So a line may
//! show the needle only if
//! - it holds the needle's ASCII characters but spaces in order, `i` and `k` standing for any
//!   character (`LIKE '%n%e%e%d%l%e%'`, which folds ASCII case), and
//!   - holds the needle itself (the whole answer for a line of printable ASCII), or
//!   - has a control character (`json_quote` lengthens exactly the lines with one, `"` or `\`)
//!     or DEL, or
//!   - has characters beyond ASCII (`length` counts characters, `octet_length` bytes) while the
//!     needle has `i`, `k` or characters beyond ASCII, whose case `LIKE` does not fold; or
//! - it has a control character and moves the cursor left (`\r`, `\b`, `ESC[…D`, `ESC[…G`) or
//!   holds a NUL, where `LIKE` and `GLOB` stop reading.
//!
//! A plain line that does not match costs one `LIKE` and one `json_quote`; the other tests run
//! only on the lines those let through. Through a million lines this takes about twice as long
//! as the bare `LIKE` it replaces, three to four times on a log coloured throughout
//! (`cargo xtask bench search` prints the figures).

use std::borrow::Cow;

use crate::error::Context;
use crate::{Result, Store};

/// The cursor never moves further right than this (or than the text already written), as a
/// terminal stops at its right edge: a line cannot make the drawing allocate more than its own
/// length and this. `web/ansi.js` has the same limit.
const MAX_CURSOR_COLUMN: usize = 1_024;

/// The lines that may show a needle, a page at a time: `?4` is the needle's scattered pattern,
/// `?5` the exact one, `?6` whether characters beyond ASCII may fold into the needle. `[^@-~]`
/// is any character of a control sequence's body (`ESC[` up to a final in `@`..`~`).
const CANDIDATES: &str = "\
    SELECT seq, text FROM log_lines \
    WHERE run_id = ?1 AND stage = ?2 AND seq > ?3 \
      AND ((text LIKE ?4 ESCAPE '\\' \
            AND (text LIKE ?5 ESCAPE '\\' \
                 OR octet_length(json_quote(text)) <> octet_length(text) + 2 \
                 OR text GLOB '*'||char(127)||'*' \
                 OR (?6 AND length(text) <> octet_length(text)))) \
           OR (octet_length(json_quote(text)) <> octet_length(text) + 2 \
               AND (text GLOB '*'||char(13)||'*' \
                    OR text GLOB '*'||char(8)||'*' \
                    OR (text GLOB '*'||char(27)||'*' \
                        AND (text GLOB '*D*' OR text GLOB '*G*') \
                        AND (text GLOB '*'||char(27)||'[[][DG]*' \
                             OR text GLOB '*'||char(27)||'[[][^@-~][DG]*' \
                             OR text GLOB '*'||char(27)||'[[][^@-~][^@-~][DG]*' \
                             OR text GLOB '*'||char(27)||'[[][^@-~][^@-~][^@-~]*')) \
                    OR (length(text) <> octet_length(text) AND instr(text, char(0)) > 0)))) \
    ORDER BY seq LIMIT ?7";

/// Candidate lines read per query.
const PAGE: i64 = 1_024;

impl Store {
    /// The `seq`s of up to `limit` lines of a stage whose shown text contains `needle`, ignoring
    /// case, in order.
    pub async fn search_logs(
        &self,
        run_id: i64,
        stage: &str,
        needle: &str,
        limit: i64,
    ) -> Result<Vec<i64>> {
        let needle = needle.to_lowercase();
        let like = |c: char| match c {
            '%' | '_' | '\\' => format!("\\{c}"),
            c => c.to_string(),
        };
        let exact = format!("%{}%", needle.chars().map(like).collect::<String>());
        // `İ` lower-cases to two characters, `i` and a combining dot: characters beyond ASCII
        // are left out rather than stood for.
        let mut scattered = String::from("%");
        for c in needle.chars().filter(|&c| c != ' ' && c.is_ascii()) {
            if matches!(c, 'i' | 'k') {
                scattered.push('_');
            } else {
                scattered.push_str(&like(c));
            }
            scattered.push('%');
        }
        let folds_beyond_ascii = needle
            .chars()
            .any(|c| matches!(c, 'i' | 'k') || !c.is_ascii());
        let limit = usize::try_from(limit).unwrap_or(0);
        let mut found = Vec::new();
        let mut after = 0;
        while found.len() < limit {
            let page: Vec<(i64, String)> = sqlx::query_as(CANDIDATES)
                .bind(run_id)
                .bind(stage)
                .bind(after)
                .bind(&scattered)
                .bind(&exact)
                .bind(folds_beyond_ascii)
                .bind(PAGE)
                .fetch_all(&self.reader)
                .await
                .context(|| format!("search the log of stage {stage} of run {run_id}"))?;
            let Some(&(last, _)) = page.last() else { break };
            after = last;
            let full = page.len() as i64 == PAGE;
            let matches = page.into_iter().filter(|(_, line)| shows(line, &needle));
            found.extend(matches.map(|(seq, _)| seq).take(limit - found.len()));
            if !full {
                break;
            }
        }
        Ok(found)
    }
}

/// Whether `line` as shown contains `needle` (lower case), ignoring case.
fn shows(line: &str, needle: &str) -> bool {
    let shown = shown_text(line);
    if shown.is_ascii() {
        shown.to_ascii_lowercase().contains(needle)
    } else {
        shown.to_lowercase().contains(needle)
    }
}

/// The text a log line shows, as a terminal draws it: escape sequences removed, `\r` and `\b`
/// moving the cursor back so later text overwrites, tabs to the next multiple of 8, `ESC[K`
/// erasing, `ESC[nG`, `ESC[nC` and `ESC[nD` moving the cursor, other control characters
/// dropped.
fn shown_text(line: &str) -> Cow<'_, str> {
    if !line.chars().any(is_special) {
        return Cow::Borrowed(line);
    }
    let chars: Vec<char> = line.chars().collect();
    let mut cells: Vec<char> = Vec::with_capacity(chars.len());
    let mut col = 0usize;
    let put = |cells: &mut Vec<char>, col: &mut usize, c: char| {
        if *col < cells.len() {
            cells[*col] = c;
        } else {
            cells.resize(*col, ' ');
            cells.push(c);
        }
        *col += 1;
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\x1b' => match chars.get(i + 1) {
                Some('[') => {
                    // CSI: parameters and intermediates up to a final byte in @..~.
                    let mut j = i + 2;
                    while j < chars.len() && !('@'..='~').contains(&chars[j]) {
                        j += 1;
                    }
                    let n = first_number(&chars[i + 2..j]);
                    let right_edge = cells.len().max(col).max(MAX_CURSOR_COLUMN);
                    match chars.get(j) {
                        Some('K') => match n.unwrap_or(0) {
                            0 => cells.truncate(col),
                            1 => {
                                let end = (col + 1).min(cells.len());
                                cells[..end].fill(' ');
                            }
                            2 => cells.clear(),
                            _ => {}
                        },
                        Some('G') => {
                            col = (n.filter(|&n| n > 0).unwrap_or(1) - 1).min(right_edge);
                        }
                        Some('C') => {
                            col = col
                                .saturating_add(n.filter(|&n| n > 0).unwrap_or(1))
                                .min(right_edge);
                        }
                        Some('D') => col = col.saturating_sub(n.filter(|&n| n > 0).unwrap_or(1)),
                        _ => {}
                    }
                    i = j;
                }
                Some(']') => {
                    // OSC (titles, hyperlinks): up to BEL or ST.
                    let mut j = i + 2;
                    while j < chars.len()
                        && chars[j] != '\x07'
                        && !(chars[j] == '\x1b' && chars.get(j + 1) == Some(&'\\'))
                    {
                        j += 1;
                    }
                    i = if chars.get(j) == Some(&'\x1b') {
                        j + 1
                    } else {
                        j
                    };
                }
                _ => {
                    // Other escapes: intermediates in space../ and one final byte in 0..~
                    // (`ESC ( B` from `tput sgr0`, `ESC 7`, `ESC =`).
                    let mut j = i + 1;
                    while j < chars.len() && (' '..='/').contains(&chars[j]) {
                        j += 1;
                    }
                    i = if chars.get(j).is_some_and(|c| ('0'..='~').contains(c)) {
                        j
                    } else {
                        j - 1
                    };
                }
            },
            '\r' => col = 0,
            '\x08' => col = col.saturating_sub(1),
            '\t' => {
                let stop = (col / 8 + 1) * 8;
                while col < stop {
                    put(&mut cells, &mut col, ' ');
                }
            }
            c if c < ' ' || c == '\x7f' => {}
            c => put(&mut cells, &mut col, c),
        }
        i += 1;
    }
    Cow::Owned(cells.into_iter().collect())
}

/// Characters that make a line show differently from its text. A newline is not among them,
/// as in the view (lines never hold one).
fn is_special(c: char) -> bool {
    (c < ' ' && c != '\n') || c == '\x7f'
}

/// The first parameter of a control sequence, as JavaScript's `parseInt` reads it: `None` when
/// it is empty or not a number; long numbers saturate (the cursor stops at the right edge).
fn first_number(body: &[char]) -> Option<usize> {
    let mut digits = body
        .iter()
        .skip_while(|c| c.is_whitespace())
        .map_while(|c| c.to_digit(10))
        .peekable();
    digits.peek()?;
    Some(digits.fold(0usize, |n, d| {
        n.saturating_mul(10).saturating_add(d as usize)
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::Utc;

    use super::{MAX_CURSOR_COLUMN, shown_text, shows};
    use crate::{LogLine, NewRun, Store};

    #[test]
    fn a_line_shows_what_a_terminal_draws() {
        let check = |raw: &str, shown: &str| assert_eq!(shown_text(raw), shown, "{raw:?}");
        check("plain text", "plain text");
        check(
            "\x1b[32mgreen\x1b[0m and \x1b[1;38;5;208mbold orange\x1b[m",
            "green and bold orange",
        );
        check("err\x1b[1mor", "error");
        check("progress 10%\rprogress 100%", "progress 100%");
        check("abc\rX", "Xbc");
        check("50%\r\x1b[K100%", "100%");
        check("ab\x08c", "ac");
        check("abc\x08\x08\x08\x08x", "xbc");
        check("abc\x1b[2Dx", "axc");
        check("abc\x1b[1Gx", "xbc");
        check("abc\x1b[Gx", "xbc");
        check("abc\x1b[0Dx", "abx");
        check("a\x1b[3Cb", "a   b");
        check("a\tb\tc", "a       b       c");
        check("abc\x1b[2Kd", "   d");
        check("abcdef\x1b[3G\x1b[1K", "   def");
        check("abcdef\x1b[3G\x1b[0K", "ab");
        check("abcdef\x1b[3G\x1b[?2K", "ab");
        check("\x1b]0;a title\x07text", "text");
        check(
            "\x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\",
            "link",
        );
        check("\x1b(B\x1b[mreset by tput", "reset by tput");
        check("\x1b7saved\x1b8", "saved");
        check("\x1b\x1b[31mred", "red");
        check("dangling\x1b", "dangling");
        check("unfinished\x1b[31", "unfinished");
        check("bell\x07, nul\0, del\x7f", "bell, nul, del");
        check("emoji \u{1F389}\rE", "Emoji \u{1F389}");
        // The cursor stops at the right edge: column 1,024 or the end of the text, if further.
        let far = format!("{}x", " ".repeat(MAX_CURSOR_COLUMN));
        check("\x1b[99999999999999999999999Cx", &far);
        check("\x1b[4000Gx", &far);
        let long = "y".repeat(2 * MAX_CURSOR_COLUMN);
        check(&format!("{long}\x1b[5C!"), &format!("{long}!"));
    }

    #[test]
    fn only_two_characters_beyond_ascii_lower_case_into_it() {
        // `CANDIDATES` relies on this to leave most lines beyond ASCII to `LIKE`.
        let into_ascii: Vec<char> = (0..=char::MAX as u32)
            .filter_map(char::from_u32)
            .filter(|c| !c.is_ascii() && c.to_lowercase().any(|l| l.is_ascii()))
            .collect();
        assert_eq!(into_ascii, ['\u{130}', '\u{212A}']);
    }

    /// Lines whose shown text differs from what is stored, and some that do not.
    fn tricky_lines() -> Vec<String> {
        let mut lines: Vec<String> = [
            "plain error line",
            "\x1b[32mgreen\x1b[0m ok",
            "err\x1b[1mor split by a colour",
            "\x1b[31mERROR\x1b[0m in red",
            "progress 10%\rprogress 100%",
            "abc\x1b[2Dxyz",
            "abc\x1b[1;5Gxyz",
            "abc\x1b[123Dxyz",
            "abc\x1b[Dxyz",
            "abcdef\x1b[3G\x1b[1Kxyz",
            "a\tb",
            "a\x1b[1Cb",
            "ab\x08\x08xy",
            "ÉRROR in French",
            "\u{212A}ILL the \u{212A}elvin sign",
            "\u{130}STANBUL",
            "junk\0error after a nul",
            "quoted \"error\" and a back\\slash",
            "100% done_now",
            "\x1b]8;;https://example.com/error\x1b\\link\x1b]8;;\x1b\\",
        ]
        .map(str::to_owned)
        .to_vec();
        // Every control character and DEL in the middle of a word.
        lines.extend(
            (0u8..0x20)
                .chain([0x7f])
                .filter(|&b| b != b'\n')
                .map(|b| format!("err{}or", b as char)),
        );
        lines
    }

    #[tokio::test]
    async fn search_finds_what_the_view_shows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("gantry.db"))
            .await
            .unwrap();
        let run = store.create_run(new_run()).await.unwrap();
        let lines = tricky_lines();
        append(&store, run.id, "build", lines.iter().cloned()).await;
        let search = async |needle: &str| {
            store
                .search_logs(run.id, "build", needle, 1000)
                .await
                .unwrap()
        };
        let seq = |text: &str| lines.iter().position(|l| l == text).unwrap() as i64 + 1;

        // Colour codes are not text; words they split are.
        assert!(search("32m").await.is_empty());
        assert!(search("[0m").await.is_empty());
        let error = search("error").await;
        assert!(
            error.contains(&seq("err\x1b[1mor split by a colour")),
            "{error:?}"
        );
        assert!(
            error.contains(&seq("\x1b[31mERROR\x1b[0m in red")),
            "{error:?}"
        );
        assert!(error.contains(&seq("junk\0error after a nul")), "{error:?}");
        assert!(error.contains(&seq("err\x07or")), "{error:?}");
        // A carriage return shows only the last state.
        assert_eq!(
            search("progress 100%").await,
            [seq("progress 10%\rprogress 100%")]
        );
        assert!(search("progress 10%").await.is_empty());
        assert_eq!(search("axyz").await, [seq("abc\x1b[2Dxyz")]);
        assert!(search("abc").await.is_empty());
        // Case folds as in JavaScript's toLowerCase, also beyond ASCII.
        assert_eq!(search("érror").await, [seq("ÉRROR in French")]);
        assert_eq!(search("ÉRROR").await, [seq("ÉRROR in French")]);
        assert_eq!(
            search("kill").await,
            [seq("\u{212A}ILL the \u{212A}elvin sign")]
        );
        assert_eq!(search("i\u{307}stanbul").await, [seq("\u{130}STANBUL")]);
        // LIKE's wildcards are taken literally.
        assert_eq!(search("0% d").await, [seq("100% done_now")]);
        assert_eq!(search("e_n").await, [seq("100% done_now")]);
        assert_eq!(
            search("back\\slash").await,
            [seq("quoted \"error\" and a back\\slash")]
        );

        // Whatever the needle, SQL lets through every line that Rust would find.
        let needles = [
            "error",
            "err",
            "rr",
            "or",
            "e",
            "r",
            "32m",
            "ok",
            "x",
            "xy",
            "xyz",
            "axyz",
            "abx",
            "xbc",
            "a b",
            "a  b",
            "a   b",
            "a       b",
            "ab",
            "b",
            "   ",
            "progress",
            "10%",
            "k",
            "kill",
            "i",
            "\u{130}",
            "é",
            "\u{212A}",
            "link",
            "example",
            "\"",
            "\\",
            "%",
            "_",
            "done_",
            "\0",
            "\x1b",
            "\t",
        ];
        for needle in needles {
            let lowered = needle.to_lowercase();
            let expected: Vec<i64> = (1..)
                .zip(&lines)
                .filter(|(_, line)| shows(line, &lowered))
                .map(|(seq, _)| seq)
                .collect();
            assert_eq!(search(needle).await, expected, "{needle:?}");
        }
        assert_eq!(
            store.search_logs(run.id, "build", "err", 3).await.unwrap(),
            search("err").await[..3]
        );
    }

    fn new_run() -> NewRun {
        NewRun {
            project: "acme/web".to_owned(),
            event: "push".to_owned(),
            branch: Some("main".to_owned()),
            tag: None,
            commit_sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            commit_message: None,
            delivery_id: None,
            rerun_of: None,
        }
    }

    async fn append(store: &Store, run_id: i64, stage: &str, texts: impl Iterator<Item = String>) {
        let at = Utc::now();
        let mut batch = Vec::new();
        for (seq, text) in (1..).zip(texts) {
            batch.push(LogLine {
                seq,
                stream: "stdout".to_owned(),
                at,
                text,
            });
            if batch.len() == 10_000 {
                store.append_logs(run_id, stage, &batch).await.unwrap();
                batch.clear();
            }
        }
        store.append_logs(run_id, stage, &batch).await.unwrap();
    }
}
