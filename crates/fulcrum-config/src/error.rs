//! Configuration errors: what is wrong, at which key and where in the file.

use std::fmt;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `pools.api.backends[2].weight` (empty for the file).
    pub path: String,
    /// 1-based line and column of the offending value, when known.
    pub location: Option<(usize, usize)>,
    /// What is wrong and what would be right.
    pub message: String,
}

/// Every problem found in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file (or other source) the errors are in.
    pub source: String,
    /// The problems, in file order where known.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// A single error about the whole file.
    pub fn single(source: String, message: String) -> Self {
        Self { source, errors: vec![ConfigError { path: String::new(), location: None, message }] }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, column)) = self.location {
            write!(f, "{line}:{column}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{error}", self.source)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
