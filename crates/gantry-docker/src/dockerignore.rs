//! `.dockerignore` with Docker's own semantics, which differ from `.gitignore`'s: patterns are
//! anchored at the context root (`foo` means `./foo`, not any `foo`), `*` and `?` never match
//! `/`, `**` matches any number of directories, a pattern that matches a directory excludes
//! everything under it, and the last matching pattern wins, so `!` exceptions re-include.
//!
//! This follows the Docker 20.10 client (`fileutils.PatternMatcher`): each pattern is cleaned
//! like Go's `filepath.Clean`, a leading `/` dropped, then compiled to a regular expression; a
//! path that does not match is also tried as its parent directory cut to the pattern's depth.
//! No crate implements these rules: the `ignore` crate's gitignore matcher is unanchored and
//! treats a trailing `/` differently, which would silently send or drop the wrong files.

use regex::Regex;

/// The parsed `.dockerignore` of a build context.
#[derive(Debug, Default)]
pub(crate) struct DockerIgnore {
    patterns: Vec<Pattern>,
}

#[derive(Debug)]
struct Pattern {
    regex: Regex,
    /// Re-includes what earlier patterns excluded.
    exception: bool,
    /// The number of path components in the cleaned pattern.
    depth: usize,
}

impl DockerIgnore {
    /// Parses a `.dockerignore`; an error names the line and the pattern.
    pub(crate) fn parse(text: &str) -> Result<DockerIgnore, String> {
        let mut patterns = Vec::new();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, line) in text.lines().enumerate() {
            // A comment is a `#` in the first column only, as in Docker.
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (exception, raw) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            if raw.is_empty() {
                continue;
            }
            let mut cleaned = clean(raw);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let regex = compile(&cleaned).map_err(|err| {
                format!(
                    ".dockerignore line {}: invalid pattern '{raw}': {err}",
                    index + 1
                )
            })?;
            patterns.push(Pattern {
                regex,
                exception,
                depth: cleaned.split('/').count(),
            });
        }
        Ok(DockerIgnore { patterns })
    }

    /// Whether `path` (relative to the context root, `/`-separated, no trailing `/`) is left
    /// out of the context.
    pub(crate) fn excludes(&self, path: &str) -> bool {
        let parent_dirs: Vec<&str> = match path.rsplit_once('/') {
            Some((parent, _)) => parent.split('/').collect(),
            None => Vec::new(),
        };
        let mut excluded = false;
        for pattern in &self.patterns {
            let mut matched = pattern.regex.is_match(path);
            // A pattern naming a directory covers everything inside it.
            if !matched && !parent_dirs.is_empty() && pattern.depth <= parent_dirs.len() {
                matched = pattern
                    .regex
                    .is_match(&parent_dirs[..pattern.depth].join("/"));
            }
            if matched {
                excluded = !pattern.exception;
            }
        }
        excluded
    }
}

/// Go's `filepath.Clean` for `/`-separated paths: no repeated separators, no `.` components,
/// `..` folded into its parent where it has one, no trailing separator.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            part => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Docker's translation of a pattern to an anchored regular expression.
fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    let mut regex = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `**/` is `**`: it may match no directory at all.
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    regex.push_str(".*");
                } else {
                    regex.push_str("(.*/)?");
                }
            }
            '*' => regex.push_str("[^/]*"),
            '?' => regex.push_str("[^/]"),
            '\\' => match chars.next() {
                Some(escaped) => regex.push_str(&regex::escape(&escaped.to_string())),
                None => regex.push_str(r"\\"),
            },
            // Character classes keep their meaning; Go's `[^…]` negation is the regex one too.
            '[' => {
                regex.push('[');
                for c in chars.by_ref() {
                    if c == '\\' {
                        regex.push_str(r"\\");
                        continue;
                    }
                    regex.push(c);
                    if c == ']' {
                        break;
                    }
                }
            }
            c => regex.push_str(&regex::escape(&c.to_string())),
        }
    }
    regex.push('$');
    Regex::new(&regex)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks which of `paths` the `.dockerignore` text excludes, as `-path` (excluded) or
    /// `+path` (sent).
    fn check(dockerignore: &str, paths: &[&str], expected: &[&str]) {
        let ignore = DockerIgnore::parse(dockerignore).unwrap();
        let actual: Vec<String> = paths
            .iter()
            .map(|path| {
                let sign = if ignore.excludes(path) { '-' } else { '+' };
                format!("{sign}{path}")
            })
            .collect();
        assert_eq!(actual, expected, "with .dockerignore:\n{dockerignore}");
    }

    #[test]
    fn patterns_are_anchored_at_the_root() {
        check(
            "secret.txt\n",
            &["secret.txt", "sub/secret.txt"],
            &["-secret.txt", "+sub/secret.txt"],
        );
        check(
            "/build\n./dist/\n",
            &["build", "build/a", "dist/x/y", "src/build"],
            &["-build", "-build/a", "-dist/x/y", "+src/build"],
        );
    }

    #[test]
    fn stars_and_question_marks_stay_within_a_directory() {
        check(
            "*.log\nsrc/?.tmp\n",
            &["a.log", "logs/a.log", "src/x.tmp", "src/xy.tmp"],
            &["-a.log", "+logs/a.log", "-src/x.tmp", "+src/xy.tmp"],
        );
        check(
            "*/temp*\n",
            &["a/temporary", "a/b/temp", "temp"],
            &["-a/temporary", "+a/b/temp", "+temp"],
        );
    }

    #[test]
    fn double_star_matches_any_depth() {
        check(
            "**/*.pyc\n",
            &["a.pyc", "x/a.pyc", "x/y/z/a.pyc", "a.py"],
            &["-a.pyc", "-x/a.pyc", "-x/y/z/a.pyc", "+a.py"],
        );
        check(
            "docs/**\n",
            &["docs", "docs/a", "docs/a/b", "docsx"],
            // The directory itself is sent, empty, as Docker does.
            &["+docs", "-docs/a", "-docs/a/b", "+docsx"],
        );
    }

    #[test]
    fn a_directory_excludes_its_contents_and_exceptions_reinclude() {
        check(
            "node_modules\n*.md\n!README.md\n",
            &["node_modules/x/index.js", "CHANGES.md", "README.md"],
            &["-node_modules/x/index.js", "-CHANGES.md", "+README.md"],
        );
        check(
            "data\n!data/keep.txt\n",
            &["data", "data/drop.txt", "data/keep.txt"],
            &["-data", "-data/drop.txt", "+data/keep.txt"],
        );
        // The last matching pattern wins.
        check(
            "!a.txt\n*.txt\n",
            &["a.txt", "b.txt"],
            &["-a.txt", "-b.txt"],
        );
    }

    #[test]
    fn comments_blanks_and_escapes() {
        check(
            "# a comment\n\n   \n  spaced.txt  \n\\#hash\nlit\\*\n",
            &["# a comment", "spaced.txt", "#hash", "lit*", "litx"],
            &["+# a comment", "-spaced.txt", "-#hash", "-lit*", "+litx"],
        );
    }

    #[test]
    fn character_classes_and_regex_characters() {
        check(
            "file[0-9].txt\na+b(c).txt\n",
            &["file1.txt", "filea.txt", "a+b(c).txt", "aab(c).txt"],
            &["-file1.txt", "+filea.txt", "-a+b(c).txt", "+aab(c).txt"],
        );
    }

    #[test]
    fn invalid_patterns_name_their_line() {
        let err = DockerIgnore::parse("ok\n[z-a]\n").unwrap_err();
        assert!(
            err.starts_with(".dockerignore line 2: invalid pattern '[z-a]'"),
            "{err}"
        );
    }

    #[test]
    fn cleaning() {
        for (input, expected) in [
            ("a//b/", "a/b"),
            ("./a/./b", "a/b"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("/a/..", "/"),
            (".", "."),
        ] {
            assert_eq!(clean(input), expected, "{input}");
        }
    }
}
