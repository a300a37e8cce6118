//! A YAML document tree that remembers where every key and value came from.
//!
//! Built from `yaml-rust2`'s event stream. Unlike a `HashMap`-based tree, a
//! mapping keeps *every* entry in source order, duplicates included, so the
//! validator can report each duplicate key instead of silently keeping one.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diagnostic::Span;

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) span: Span,
    pub(crate) kind: NodeKind,
}

#[derive(Debug, Clone)]
pub(crate) enum NodeKind {
    Scalar(Scalar),
    Sequence(Vec<Node>),
    Mapping(Vec<(Key, Node)>),
}

#[derive(Debug, Clone)]
pub(crate) struct Scalar {
    pub(crate) text: String,
    /// Plain (unquoted) scalars are the only ones that can be `null` or a
    /// boolean: `"true"` is a string.
    pub(crate) plain: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub(crate) text: String,
    pub(crate) span: Span,
}

impl Node {
    /// An empty value (`key:`), `~` or `null`.
    pub(crate) fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar(s) if s.plain && matches!(s.text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub(crate) fn as_scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            NodeKind::Scalar(s) if !self.is_null() => Some(s),
            _ => None,
        }
    }

    /// The number of nodes in this tree.
    fn size(&self) -> usize {
        1 + match &self.kind {
            NodeKind::Scalar(_) => 0,
            NodeKind::Sequence(items) => items.iter().map(Node::size).sum(),
            NodeKind::Mapping(entries) => entries.iter().map(|(_, value)| 1 + value.size()).sum(),
        }
    }

    /// Says what this node is, for "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            _ if self.is_null() => "nothing".to_owned(),
            NodeKind::Scalar(s) => format!("'{}'", s.text.escape_debug()),
            NodeKind::Sequence(_) => "a list".to_owned(),
            NodeKind::Mapping(_) => "a mapping".to_owned(),
        }
    }

    /// Whether the node starts on the line of its key (a scalar or a flow
    /// collection) rather than on the lines below it (a block collection).
    pub(crate) fn is_inline(&self, source: &Source) -> bool {
        match self.kind {
            NodeKind::Scalar(_) => true,
            _ => matches!(
                source.char_at(self.span.line, self.span.column),
                Some('[' | '{')
            ),
        }
    }
}

/// A problem found while reading the YAML itself.
#[derive(Debug)]
pub(crate) struct YamlError {
    pub(crate) span: Span,
    pub(crate) message: String,
    pub(crate) help: Option<String>,
}

/// The source text split into lines, to measure spans and show snippets.
pub(crate) struct Source<'a> {
    lines: Vec<&'a str>,
}

impl<'a> Source<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Source {
            lines: text
                .split('\n')
                .map(|line| line.strip_suffix('\r').unwrap_or(line))
                .collect(),
        }
    }

    /// The text of a 1-based line.
    pub(crate) fn line(&self, line: usize) -> Option<&'a str> {
        line.checked_sub(1).and_then(|i| self.lines.get(i)).copied()
    }

    fn char_at(&self, line: usize, column: usize) -> Option<char> {
        self.line(line)?.chars().nth(column.checked_sub(1)?)
    }

    /// The rest of a line from a 1-based column.
    fn rest(&self, line: usize, column: usize) -> &'a str {
        let Some(text) = self.line(line) else {
            return "";
        };
        match text.char_indices().nth(column.saturating_sub(1)) {
            Some((byte, _)) => &text[byte..],
            None => "",
        }
    }

    /// Where the `-` or `:` before an empty value is: the last character
    /// before `line:column` that is neither blank nor in a comment. The
    /// parser marks an empty value at the token after it, often a line
    /// below, and sometimes just after that token's `-`.
    fn indicator_before(&self, line: usize, column: usize) -> Option<Span> {
        let mut line = line;
        let mut limit = column.saturating_sub(1);
        let mut first = true;
        loop {
            let head: String = self.line(line)?.chars().take(limit).collect();
            let content = strip_comment(&head).trim_end();
            let next_item = first && content.trim_start() == "-";
            first = false;
            if !content.is_empty() && !next_item {
                return Some(Span {
                    line,
                    column: content.chars().count(),
                    len: 1,
                });
            }
            line = line.checked_sub(1).filter(|&l| l > 0)?;
            limit = usize::MAX;
        }
    }

    /// Measures a scalar that starts at `line:column`, in characters.
    fn scalar_len(
        &self,
        line: usize,
        column: usize,
        scalar: &Scalar,
        style: TScalarStyle,
    ) -> usize {
        let rest = self.rest(line, column);
        let len = match style {
            TScalarStyle::Plain if rest.starts_with(scalar.text.as_str()) => {
                scalar.text.chars().count()
            }
            TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => {
                quoted_len(rest).unwrap_or_else(|| trimmed_len(rest))
            }
            _ => trimmed_len(rest),
        };
        len.max(1)
    }

    /// Measures a flow collection (`[...]` or `{...}`) when it fits on its
    /// line; a block collection is marked by its first character.
    fn collection_len(&self, line: usize, column: usize) -> usize {
        let rest = self.rest(line, column);
        let mut depth = 0usize;
        let mut quote = None;
        for (i, c) in rest.chars().enumerate() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '[' | '{') => depth += 1,
                (None, ']' | '}') => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            if depth == 0 {
                break;
            }
        }
        1
    }
}

/// `line` without a trailing comment: a `#` at its start or after a blank.
fn strip_comment(line: &str) -> &str {
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        if c == '#' && previous.is_whitespace() {
            return &line[..i];
        }
        previous = c;
    }
    line
}

/// The length of a quoted scalar at the start of `rest`, quotes included,
/// if it closes on the same line.
fn quoted_len(rest: &str) -> Option<usize> {
    let mut chars = rest.chars();
    let quote = chars.next()?;
    let mut len = 1;
    let mut escaped = false;
    let mut chars = chars.peekable();
    while let Some(c) = chars.next() {
        len += 1;
        if escaped {
            escaped = false;
        } else if quote == '"' && c == '\\' {
            escaped = true;
        } else if c == quote {
            // In single quotes, `''` is an escaped quote.
            if quote == '\'' && chars.peek() == Some(&'\'') {
                chars.next();
                len += 1;
            } else {
                return Some(len);
            }
        }
    }
    None
}

/// The length of the rest of a line, without a trailing comment.
fn trimmed_len(rest: &str) -> usize {
    let without_comment = match rest.find(" #") {
        Some(i) => &rest[..i],
        None => rest,
    };
    without_comment.trim_end().chars().count()
}

/// Parses one YAML document. `Err` holds the errors that made reading it
/// impossible (syntax errors); `Ok` may still carry errors about constructs
/// Gantry does not accept (tags, non-string keys, several documents).
pub(crate) fn parse(text: &str) -> (Option<Node>, Vec<YamlError>) {
    let source = Source::new(text);
    if let Some(error) = too_deep(&source) {
        return (None, vec![error]);
    }
    let mut builder = Builder {
        source: &source,
        stack: Vec::new(),
        anchors: Vec::new(),
        aliased_nodes: 0,
        documents: Vec::new(),
        errors: Vec::new(),
    };
    let mut parser = Parser::new(text.chars());
    if let Err(err) = parser.load(&mut builder, true) {
        let span = builder.span_at(*err.marker(), 1);
        let mut errors = builder.errors;
        errors.push(YamlError {
            span,
            message: format!("invalid YAML: {}", err.info()),
            help: syntax_help(err.info()),
        });
        return (None, errors);
    }
    let mut documents = builder.documents.into_iter();
    let first = documents.next();
    for extra in documents {
        builder.errors.push(YamlError {
            span: extra.span,
            message: "a pipeline file holds a single YAML document".to_owned(),
            help: Some("remove the `---` line and everything after it".to_owned()),
        });
    }
    (first, builder.errors)
}

/// How far a line may be indented, counting `- `, `? ` and `: ` prefixes.
/// `yaml-rust2` parses block nesting recursively, so a few thousand levels
/// (`- - - - ...`) overflow the stack and abort the process; flow nesting is
/// already capped at 255 levels by its scanner.
const MAX_INDENT: usize = 120;

/// Refuses input nested deeply enough to endanger the parser's stack.
fn too_deep(source: &Source) -> Option<YamlError> {
    for (index, line) in source.lines.iter().enumerate() {
        let mut indent = 0;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                ' ' => indent += 1,
                '-' | '?' | ':' if chars.peek() == Some(&' ') => {
                    chars.next();
                    indent += 2;
                }
                _ => break,
            }
        }
        if indent > MAX_INDENT {
            return Some(YamlError {
                span: Span {
                    line: index + 1,
                    column: 1,
                    len: indent,
                },
                message: format!("this line is nested too deeply (more than {MAX_INDENT} columns)"),
                help: None,
            });
        }
    }
    None
}

/// How many nodes aliases may copy in all, so that a few lines of nested
/// aliases ("billion laughs") cannot exhaust memory.
const MAX_ALIASED_NODES: usize = 10_000;

fn syntax_help(info: &str) -> Option<String> {
    let help = if info.contains("tabs") {
        "indent with spaces: YAML does not allow tabs for indentation"
    } else if info.contains("mapping values are not allowed") {
        "a value that contains ': ' must be quoted, e.g. \"echo a: b\""
    } else if info.contains("invalid indentation") || info.contains("did not find expected") {
        "check the indentation here, and look for an unclosed `[`, `{` or quote above"
    } else if info.contains("unknown anchor") {
        "an alias (`*name`) must refer to an anchor (`&name`) defined before it"
    } else {
        return None;
    };
    Some(help.to_owned())
}

enum Frame {
    Sequence {
        start: Span,
        anchor: usize,
        items: Vec<Node>,
    },
    Mapping {
        start: Span,
        anchor: usize,
        entries: Vec<(Key, Node)>,
        /// `None` while waiting for a key. `Some(None)` when the key was not a
        /// string: the value is read and dropped.
        key: Option<Option<Key>>,
    },
}

struct Builder<'s, 'a> {
    source: &'s Source<'a>,
    stack: Vec<Frame>,
    /// Anchored nodes by anchor id, with their sizes, for aliases.
    anchors: Vec<(usize, Node, usize)>,
    /// Nodes copied by aliases so far.
    aliased_nodes: usize,
    documents: Vec<Node>,
    errors: Vec<YamlError>,
}

impl Builder<'_, '_> {
    fn span_at(&self, mark: Marker, len: usize) -> Span {
        Span {
            line: mark.line(),
            column: mark.col() + 1,
            len,
        }
    }

    fn tag_error(&mut self, span: Span) {
        self.errors.push(YamlError {
            span,
            message: "YAML tags are not supported".to_owned(),
            help: Some("remove the tag (`!name`); quote a value to keep it a string".to_owned()),
        });
    }

    /// Hands a finished node to the collection it belongs to.
    fn add(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            let size = node.size();
            self.anchors.push((anchor, node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some(Frame::Sequence { items, .. }) => items.push(node),
            Some(Frame::Mapping { entries, key, .. }) => match key.take() {
                Some(Some(key)) => entries.push((key, node)),
                Some(None) => {}
                None => {
                    let key = match &node.kind {
                        NodeKind::Scalar(s) => Some(Key {
                            text: s.text.clone(),
                            span: node.span,
                        }),
                        _ => {
                            self.errors.push(YamlError {
                                span: node.span,
                                message: "mapping keys must be strings".to_owned(),
                                help: None,
                            });
                            None
                        }
                    };
                    if let Some(Frame::Mapping { key: slot, .. }) = self.stack.last_mut() {
                        *slot = Some(key);
                    }
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder<'_, '_> {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let scalar = Scalar {
                    text,
                    plain: style == TScalarStyle::Plain,
                };
                let span = if scalar.plain && scalar.text.is_empty() {
                    self.source
                        .indicator_before(mark.line(), mark.col() + 1)
                        .unwrap_or_else(|| self.span_at(mark, 1))
                } else {
                    Span {
                        line: mark.line(),
                        column: mark.col() + 1,
                        len: self
                            .source
                            .scalar_len(mark.line(), mark.col() + 1, &scalar, style),
                    }
                };
                if tag.is_some() {
                    self.tag_error(span);
                }
                self.add(
                    Node {
                        span,
                        kind: NodeKind::Scalar(scalar),
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, tag) => {
                let start = self.span_at(
                    mark,
                    self.source.collection_len(mark.line(), mark.col() + 1),
                );
                if tag.is_some() {
                    self.tag_error(start);
                }
                self.stack.push(Frame::Sequence {
                    start,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, tag) => {
                let start = self.span_at(
                    mark,
                    self.source.collection_len(mark.line(), mark.col() + 1),
                );
                if tag.is_some() {
                    self.tag_error(start);
                }
                self.stack.push(Frame::Mapping {
                    start,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Sequence {
                        start,
                        anchor,
                        items,
                    }) => (
                        Node {
                            span: start,
                            kind: NodeKind::Sequence(items),
                        },
                        anchor,
                    ),
                    Some(Frame::Mapping {
                        start,
                        anchor,
                        entries,
                        ..
                    }) => {
                        // A block mapping's start mark is unreliable; its
                        // first key is where a reader sees it start.
                        let span = match entries.first() {
                            Some((key, _))
                                if !self.source.rest(start.line, start.column).starts_with('{') =>
                            {
                                key.span
                            }
                            _ => start,
                        };
                        (
                            Node {
                                span,
                                kind: NodeKind::Mapping(entries),
                            },
                            anchor,
                        )
                    }
                    None => return,
                };
                self.add(node, anchor);
            }
            Event::Alias(anchor) => {
                let Some((_, node, size)) =
                    self.anchors.iter().rev().find(|(id, _, _)| *id == anchor)
                else {
                    return;
                };
                self.aliased_nodes += size;
                let node = if self.aliased_nodes <= MAX_ALIASED_NODES {
                    node.clone()
                } else {
                    let span = self.span_at(mark, 1);
                    if self.aliased_nodes - size <= MAX_ALIASED_NODES {
                        self.errors.push(YamlError {
                            span,
                            message: format!(
                                "aliases expand to more than {MAX_ALIASED_NODES} values"
                            ),
                            help: Some("use fewer or smaller aliases".to_owned()),
                        });
                    }
                    Node {
                        span,
                        kind: NodeKind::Scalar(Scalar {
                            text: String::new(),
                            plain: true,
                        }),
                    }
                };
                self.add(node, 0);
            }
            Event::DocumentStart => self.anchors.clear(),
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
}
