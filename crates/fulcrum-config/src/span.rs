//! Locating a key path (`pools.api.backends[2].weight`) in the TOML text,
//! so validation errors found after parsing still point at a line:column.

use toml_edit::{ArrayOfTables, ImDocument, Item, Table, Value};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A key path under construction during validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// This path extended by a table key.
    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.to_string()));
        next
    }

    /// This path extended by an array index.
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }
}

impl std::fmt::Display for KeyPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where the value at `path` starts in `text`, if the path exists.
pub fn locate(text: &str, path: &KeyPath) -> Option<(usize, usize)> {
    let document = ImDocument::parse(text).ok()?;
    let mut node = Node::from_item(document.as_item())?;
    for segment in &path.0 {
        node = node.child(segment)?;
    }
    Some(line_col(text, node.span()?.start))
}

/// A position in the parsed document while walking a key path.
enum Node<'a> {
    Table(&'a Table),
    Tables(&'a ArrayOfTables),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn from_item(item: &'a Item) -> Option<Self> {
        match item {
            Item::Table(t) => Some(Node::Table(t)),
            Item::ArrayOfTables(a) => Some(Node::Tables(a)),
            Item::Value(v) => Some(Node::Value(v)),
            Item::None => None,
        }
    }

    fn child(&self, segment: &Segment) -> Option<Self> {
        match (self, segment) {
            (Node::Table(t), Segment::Key(k)) => t.get(k).and_then(Node::from_item),
            (Node::Tables(a), Segment::Index(i)) => a.get(*i).map(Node::Table),
            (Node::Value(Value::InlineTable(t)), Segment::Key(k)) => t.get(k).map(Node::Value),
            (Node::Value(Value::Array(a)), Segment::Index(i)) => a.get(*i).map(Node::Value),
            _ => None,
        }
    }

    fn span(&self) -> Option<std::ops::Range<usize>> {
        match self {
            Node::Table(t) => t.span(),
            Node::Tables(a) => a.span(),
            Node::Value(v) => v.span(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_in_tables_arrays_and_inline_tables() {
        let text = "[server]\nworker_threads = 2\n\n[pools.api]\nbackends = [\n  { address = \"a\" },\n  { address = \"b\", weight = 0 },\n]\n\n[[listeners]]\nname = \"x\"\n[[listeners]]\nname = \"y\"\n";
        let root = KeyPath::default();
        assert_eq!(locate(text, &root.key("server").key("worker_threads")), Some((2, 18)));
        let weight = root.key("pools").key("api").key("backends").index(1).key("weight");
        assert_eq!(weight.to_string(), "pools.api.backends[1].weight");
        assert_eq!(locate(text, &weight), Some((7, 29)));
        assert_eq!(locate(text, &root.key("listeners").index(1).key("name")), Some((13, 8)));
        assert_eq!(locate(text, &root.key("nope")), None);
    }
}
