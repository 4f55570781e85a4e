//! User-facing problems in input files, each pinned to `file:line:column`.
//!
//! Every file the bot reads (the developer's trigger files and the operator's configuration)
//! goes through [`SourceFile`]: it caps the size before reading, parses strictly, and turns
//! parser errors and semantic rule violations alike into [`Diagnostic`]s that say where the
//! problem is and what to change.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use serde::de::DeserializeOwned;
use yamlpath::{Component, Route};

/// No input file the bot reads is larger than this. Trigger files and configuration are a few
/// kilobytes; a bigger file is a mistake or an attack, and is refused before it is read.
pub const MAX_INPUT_BYTES: u64 = 1024 * 1024;

/// One problem in one file, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Diagnostic {
    pub fn new(
        file: impl Into<String>,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            line,
            column,
            message: message.into(),
        }
    }

    /// A problem with a file as a whole (it is missing, too large, unreadable).
    pub fn whole_file(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(file, 1, 1, message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// A list of diagnostics, the error type of every "validate this input" operation.
///
/// At most [`Diagnostics::SHOWN`] are kept; the rest are only counted. A hostile or broken file
/// can hold tens of thousands of problems, and nobody reads past the first screen: keeping them
/// would cost time (each position is a walk of the syntax tree) and make texts too long to post.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>, usize);

impl Diagnostics {
    pub const SHOWN: usize = 50;

    pub fn push(&mut self, d: Diagnostic) {
        if self.is_full() {
            self.1 += 1;
        } else {
            self.0.push(d);
        }
    }
    /// Pushes the diagnostic `make` builds, building it only when it will be kept.
    pub fn push_with(&mut self, make: impl FnOnce() -> Diagnostic) {
        if self.is_full() {
            self.1 += 1;
        } else {
            self.0.push(make());
        }
    }
    pub fn is_full(&self) -> bool {
        self.0.len() >= Self::SHOWN
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// How many problems were found, kept or not.
    pub fn total(&self) -> usize {
        self.0.len() + self.1
    }
    /// How many were found beyond the ones kept.
    pub fn omitted(&self) -> usize {
        self.1
    }
    /// Adds every diagnostic `more` yields.
    pub fn extend_from(&mut self, more: impl IntoIterator<Item = Diagnostic>) {
        for d in more {
            self.push(d);
        }
    }
    pub fn extend(&mut self, other: Diagnostics) {
        self.1 += other.1;
        for d in other.0 {
            self.push(d);
        }
    }
    /// `Ok(value)` when nothing was reported, otherwise every problem found.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Self(vec![d], 0)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        if self.1 > 0 {
            write!(f, "\n(and {} more not shown)", self.1)?;
        }
        Ok(())
    }
}

/// The text of one input file and the name it is reported under.
#[derive(Clone)]
pub struct SourceFile {
    /// The path as the user knows it (relative to where they ran the command, or to the
    /// repository for files read from git).
    pub name: String,
    pub text: String,
    /// The syntax tree positions are found in, parsed once on the first diagnostic: parsing
    /// it again for each problem made validation quadratic in the file's size.
    tree: OnceLock<Option<Arc<yamlpath::Document>>>,
    /// Where each item of a block sequence begins, by the sequence's route: yamlpath lists a
    /// sequence's items for every lookup of one of them, which made reporting problems in a
    /// long list quadratic.
    items: Arc<Mutex<HashMap<String, Arc<Vec<usize>>>>>,
}

impl fmt::Debug for SourceFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceFile")
            .field("name", &self.name)
            .field("bytes", &self.text.len())
            .finish()
    }
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
            tree: OnceLock::new(),
            items: Arc::default(),
        }
    }

    fn tree(&self) -> Option<&yamlpath::Document> {
        self.tree
            .get_or_init(|| {
                yamlpath::Document::new(self.text.clone())
                    .ok()
                    .map(Arc::new)
            })
            .as_deref()
    }

    /// Reads a file from disk, refusing anything over [`MAX_INPUT_BYTES`] before reading it.
    pub fn read(path: &Path, name: impl Into<String>) -> Result<Self, Diagnostic> {
        let name = name.into();
        let meta = std::fs::metadata(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Diagnostic::whole_file(&name, "file not found")
            } else {
                Diagnostic::whole_file(&name, format!("cannot read file: {e}"))
            }
        })?;
        if !meta.is_file() {
            return Err(Diagnostic::whole_file(&name, "not a regular file"));
        }
        Self::check_size(&name, meta.len())?;
        let bytes = std::fs::read(path)
            .map_err(|e| Diagnostic::whole_file(&name, format!("cannot read file: {e}")))?;
        Self::from_bytes(name, bytes)
    }

    /// Builds a source file from bytes read elsewhere (for example a blob in git).
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> Result<Self, Diagnostic> {
        let name = name.into();
        Self::check_size(&name, bytes.len() as u64)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let (line, column) = line_col(&e.as_bytes()[..e.utf8_error().valid_up_to()]);
            Diagnostic::new(&name, line, column, "file is not valid UTF-8 text")
        })?;
        Ok(Self::new(name, text))
    }

    fn check_size(name: &str, len: u64) -> Result<(), Diagnostic> {
        if len > MAX_INPUT_BYTES {
            return Err(Diagnostic::whole_file(
                name,
                format!("file is {len} bytes; the limit is {MAX_INPUT_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    /// A diagnostic at the given byte offset.
    pub fn at_offset(&self, offset: usize, message: impl Into<String>) -> Diagnostic {
        let (line, column) = line_col(
            self.text
                .as_bytes()
                .get(..offset)
                .unwrap_or(self.text.as_bytes()),
        );
        Diagnostic::new(&self.name, line, column, message)
    }

    /// A diagnostic at the value found at `route` (keys and indexes from the document root).
    /// Where the route does not exist, the closest existing parent is used; failing that the
    /// start of the file.
    pub fn at(&self, route: &[Seg<'_>], message: impl Into<String>) -> Diagnostic {
        let (line, column) = self.position(route);
        Diagnostic::new(&self.name, line, column, message)
    }

    /// A diagnostic at `word` inside the value at `route` (one name of a list written as
    /// `a, b` or `[a, b]`), or at the value where the word is not found in it.
    pub fn at_word(&self, route: &[Seg<'_>], word: &str, message: impl Into<String>) -> Diagnostic {
        let found = self.tree().and_then(|doc| {
            let f = doc.query_exact(&to_route(route)).ok().flatten()?;
            let (start, end) = f.location.byte_span;
            let span = self.text.get(start..end)?;
            let is_name = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | '.');
            span.match_indices(word)
                .find(|(i, _)| {
                    !span[..*i].ends_with(is_name) && !span[i + word.len()..].starts_with(is_name)
                })
                .map(|(i, _)| start + i)
        });
        match found {
            Some(offset) => self.at_offset(offset, message),
            None => self.at(route, message),
        }
    }

    /// Where the value of item `index` of the block sequence at `parent` begins; `None` when
    /// `parent` is not a block sequence or has no such item (the general lookup then decides).
    fn block_item(
        &self,
        doc: &yamlpath::Document,
        parent: &[Seg<'_>],
        index: usize,
    ) -> Option<usize> {
        let key = format!("{parent:?}");
        let cached = self.items.lock().ok()?.get(&key).cloned();
        let items = match cached {
            Some(items) => items,
            None => {
                let f = doc.query_exact(&to_route(parent)).ok().flatten()?;
                if f.kind() != yamlpath::FeatureKind::BlockSequence {
                    return None;
                }
                let items = Arc::new(block_items(&self.text, f.location.byte_span));
                self.items.lock().ok()?.insert(key, items.clone());
                items
            }
        };
        items.get(index).copied()
    }

    /// The 1-based position of the value at `route` (see [`SourceFile::at`]).
    pub fn position(&self, route: &[Seg<'_>]) -> (usize, usize) {
        let Some(doc) = self.tree() else {
            return (1, 1);
        };
        if let Some((Seg::Index(i), parent)) = route.split_last()
            && let Some(offset) = self.block_item(doc, parent, *i)
        {
            let before = &self.text.as_bytes()[..offset];
            let line_start = before
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |n| n + 1);
            let row = before.iter().filter(|b| **b == b'\n').count();
            return (row + 1, offset - line_start + 1);
        }
        let mut len = route.len();
        loop {
            let r = to_route(&route[..len]);
            // The value itself where it has one, else its key.
            let found = if len == 0 {
                doc.top_feature().ok().map(|f| f.location.point_span.0)
            } else {
                match doc.query_exact(&r) {
                    // A multi-line value (a block mapping or list) is pointed at by its key.
                    Ok(Some(f)) if !f.is_multiline() => Some(f.location.point_span.0),
                    _ => doc.query_key_only(&r).ok().map(|f| f.location.point_span.0),
                }
            };
            if let Some((row, col)) = found {
                return (row + 1, col + 1);
            }
            if len == 0 {
                return (1, 1);
            }
            len -= 1;
        }
    }

    /// Strict YAML parsing: unknown fields, wrong types, duplicate keys and alias bombs are all
    /// errors with a position.
    pub fn parse_yaml<T: DeserializeOwned>(&self) -> Result<T, Diagnostic> {
        if self.text.trim().is_empty() {
            return Err(Diagnostic::whole_file(&self.name, "file is empty"));
        }
        let de = yaml_serde::Deserializer::from_str(&self.text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let inner = e.inner();
            let (mut line, mut column) = inner
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let text = inner.to_string();
            // A scanner error names two places: where it gave up, and (after ", while ...")
            // where the construct it was reading began, which is where the mistake is.
            if let Some(context) = text.split(", while ").nth(1)
                && let Some(pos) = positions(context).last()
            {
                (line, column) = *pos;
            }
            let message = remove_positions(&text);
            let path = e.path().to_string();
            // The YAML parser counts a lone `\r` (and NEL, LS, PS) as a line break; every other
            // position here, like most editors' line numbers on Unix, counts `\n` only.
            let offset = yaml_mark_offset(&self.text, line, column);
            self.at_offset(offset, with_path(&path, &message))
        })
    }

    /// Strict JSON parsing, with the JSON path of the offending value in the message.
    pub fn parse_json<T: DeserializeOwned>(&self) -> Result<T, Diagnostic> {
        let at = |e: &serde_json::Error, path: &str| {
            let message = strip_position(&e.to_string());
            Diagnostic::new(
                &self.name,
                e.line().max(1),
                e.column().max(1),
                with_path(path, &message),
            )
        };
        let mut de = serde_json::Deserializer::from_str(&self.text);
        let value = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| at(e.inner(), &e.path().to_string()))?;
        // Trailing garbage after the JSON value is an error too.
        de.end().map_err(|e| at(&e, "."))?;
        Ok(value)
    }
}

/// One step of a route into a YAML or JSON document.
#[derive(Debug, Clone, Copy)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

impl<'a> From<&'a str> for Seg<'a> {
    fn from(k: &'a str) -> Self {
        Seg::Key(k)
    }
}

impl From<usize> for Seg<'_> {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// Builds a `&[Seg]` route: `route!["services", 0, "values"]`.
#[macro_export]
macro_rules! route {
    ($($seg:expr),* $(,)?) => { &[$($crate::diagnostics::Seg::from($seg)),*][..] };
}

fn to_route<'a>(segs: &[Seg<'a>]) -> Route<'a> {
    let components: Vec<Component<'a>> = segs
        .iter()
        .map(|s| match s {
            Seg::Key(k) => Component::Key((*k).into()),
            Seg::Index(i) => Component::Index(*i),
        })
        .collect();
    Route::from(components)
}

fn with_path(path: &str, message: &str) -> String {
    let message = with_hint(message);
    // serde_path_to_error reports "." for the root and "?" where it has no path (a syntax
    // error); the YAML library sometimes already put the path in front of its own message.
    if path == "." || path == "?" || path.is_empty() || message.starts_with(path) {
        message
    } else {
        format!("{path}: {message}")
    }
}

/// A parser's message, with what to do where that is clear: the closest name for an unknown
/// field, quotes for a `:` inside a plain value.
fn with_hint(message: &str) -> String {
    if message.starts_with("mapping values are not allowed") {
        return format!(
            "YAML syntax: {message} (a value holding `: ` must be quoted, or a key is indented wrongly)"
        );
    }
    // serde: "unknown field `x`, expected one of `a`, `b`" (or "expected `a` or `b`").
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        let closest = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|name| (strsim::levenshtein(field, name), name))
            .filter(|(d, name)| *d <= 2.max(name.len() / 4) && *d < name.len())
            .min_by_key(|(d, _)| *d);
        if let Some((_, name)) = closest {
            return format!("{message}; did you mean `{name}`?");
        }
    }
    message.to_string()
}

/// Parser messages end in " at line N column M"; we print the position ourselves.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Every " at line N column M" in a message, as (line, column).
fn positions(message: &str) -> Vec<(usize, usize)> {
    message
        .split(" at line ")
        .skip(1)
        .filter_map(|rest| {
            let (line, rest) = rest.split_once(" column ")?;
            let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some((line.trim().parse().ok()?, column.parse().ok()?))
        })
        .collect()
}

/// The message with every " at line N column M" taken out.
fn remove_positions(message: &str) -> String {
    let mut parts = message.split(" at line ");
    let mut out = parts.next().unwrap_or_default().to_string();
    for rest in parts {
        let after = rest
            .split_once(" column ")
            .map(|(_, r)| r.trim_start_matches(|c: char| c.is_ascii_digit()))
            .unwrap_or("");
        out.push_str(after);
    }
    out
}

/// 1-based line and column (in characters) of the end of `prefix`.
/// The offsets of the item values of the block sequence spanning `span` in `text`: the lines
/// whose first character, in the column of the sequence's first `-`, is a `-` followed by a
/// space or the line's end. (Anything else in the span, nested content, a comment or a block
/// scalar's text, is indented further or is not a `-` there.)
fn block_items(text: &str, (start, end): (usize, usize)) -> Vec<usize> {
    let bytes = text.as_bytes();
    let line_start = bytes[..start]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |n| n + 1);
    let column = start - line_start;
    let mut items = Vec::new();
    let mut line = line_start;
    while line < end {
        let next = bytes[line..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |n| line + n + 1);
        let dash = line + column;
        if dash < next
            && bytes[line..dash].iter().all(|b| *b == b' ')
            && bytes[dash] == b'-'
            && matches!(bytes.get(dash + 1), None | Some(b' ' | b'\n' | b'\r'))
        {
            let value = bytes[dash + 1..next]
                .iter()
                .position(|b| *b != b' ')
                .map_or(next, |n| dash + 1 + n);
            items.push(value);
        }
        line = next;
    }
    items
}

/// The byte offset of a 1-based line and column as the YAML parser counts them: `\r\n`, `\r`,
/// `\n`, NEL, LS and PS each end a line, and columns count characters.
fn yaml_mark_offset(text: &str, line: usize, column: usize) -> usize {
    let (mut at_line, mut at_column) = (1, 1);
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if at_line > line || (at_line == line && at_column >= column) {
            return i;
        }
        match c {
            '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
                if c == '\r' && chars.peek().is_some_and(|(_, n)| *n == '\n') {
                    chars.next();
                }
                at_line += 1;
                at_column = 1;
            }
            _ => at_column += 1,
        }
    }
    text.len()
}

fn line_col(prefix: &[u8]) -> (usize, usize) {
    let text = String::from_utf8_lossy(prefix);
    let line = text.matches('\n').count() + 1;
    let column = text
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where yamlpath alone finds an item (the slow way): its value's start, which for a
    /// multi-line item is its first line.
    fn slow(src: &SourceFile, route: &[Seg<'_>]) -> (usize, usize) {
        let fresh = SourceFile::new("x", src.text.clone());
        let doc = fresh.tree().unwrap();
        let f = doc.query_exact(&to_route(route)).unwrap().unwrap();
        let p = f.location.point_span.0;
        (p.0 + 1, p.1 + 1)
    }

    #[test]
    fn sequence_items_are_found_where_yamlpath_finds_them() {
        let text = "a: 1\nlist:\n  - one\n  # a comment\n  -   two # trailing\n\n  - {k: v}\n  - k: v\n  - \"q - x\"\n  - |\n    - not an item\n  - [1, 2]\nnested:\n  inner:\n    - x\n    - y\ntop: end\n";
        let src = SourceFile::new("x", text);
        for i in 0..7 {
            let route = [Seg::Key("list"), Seg::Index(i)];
            assert_eq!(src.position(&route), slow(&src, &route), "item {i}");
        }
        for i in 0..2 {
            let route = [Seg::Key("nested"), Seg::Key("inner"), Seg::Index(i)];
            assert_eq!(src.position(&route), slow(&src, &route), "inner item {i}");
        }
        let top = SourceFile::new("x", "- a\n- b: c\n  d: e\n- f\n");
        for i in 0..3 {
            assert_eq!(
                top.position(&[Seg::Index(i)]),
                slow(&top, &[Seg::Index(i)]),
                "top item {i}"
            );
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        count: u32,
    }

    #[test]
    fn yaml_unknown_field_names_line_column_and_field() {
        let f = SourceFile::new("s.yaml", "name: a\ncount: 2\ncolour: red\n");
        let d = f.parse_yaml::<Sample>().unwrap_err();
        assert_eq!((d.line, d.column), (3, 1));
        assert!(
            d.message.contains("unknown field `colour`"),
            "{}",
            d.message
        );
        assert!(!d.message.contains("at line"), "{}", d.message);
    }

    #[test]
    fn yaml_wrong_type_names_the_path() {
        let f = SourceFile::new("s.yaml", "name: a\ncount: many\n");
        let d = f.parse_yaml::<Sample>().unwrap_err();
        assert_eq!(d.line, 2);
        assert!(
            d.message.starts_with("count: invalid type"),
            "{}",
            d.message
        );
    }

    #[test]
    fn an_unclosed_quote_is_reported_where_it_opens() {
        let f = SourceFile::new("s.yaml", "name: \"a\ncount: 2\n");
        let d = f.parse_yaml::<Sample>().unwrap_err();
        assert_eq!((d.line, d.column), (1, 7), "{d}");
        assert!(
            d.message.contains("while scanning a quoted scalar") && !d.message.contains("line"),
            "{d}"
        );
    }

    #[test]
    fn json_errors_carry_path_and_position() {
        let f = SourceFile::new("s.json", "{\n  \"name\": \"a\",\n  \"count\": \"x\"\n}");
        let d = f.parse_json::<Sample>().unwrap_err();
        assert_eq!(d.line, 3);
        assert!(
            d.message.starts_with("count: invalid type"),
            "{}",
            d.message
        );
    }

    #[test]
    fn position_of_route_in_yaml_and_json() {
        let y = SourceFile::new("a.yaml", "a:\n  b:\n    - x\n    - y\n");
        assert_eq!(y.position(route!["a", "b", 1]), (4, 7));
        // A missing key falls back to its closest parent; a multi-line value to its key.
        assert_eq!(y.position(route!["a", "b", "zzz"]), (2, 3));
        assert_eq!(y.position(route!["a", "zzz"]), (1, 1));
        let j = SourceFile::new("a.json", "{\n  \"status\": \"open\",\n  \"n\": 1\n}\n");
        assert_eq!(j.position(route!["status"]), (2, 13));
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let d = SourceFile::from_bytes("big.yaml", vec![b'a'; MAX_INPUT_BYTES as usize + 1])
            .unwrap_err();
        assert!(
            d.message.contains("limit is 1048576 bytes"),
            "{}",
            d.message
        );
    }

    #[test]
    fn invalid_utf8_points_at_the_byte() {
        let d = SourceFile::from_bytes("b.yaml", b"a: 1\nb: \xff\n".to_vec()).unwrap_err();
        assert_eq!((d.line, d.column), (2, 4));
    }
}
