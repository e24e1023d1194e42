//! Diagnostics: located errors and warnings about a registry or policy file.

use std::fmt;

/// How serious a [`Diagnostic`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The file is rejected.
    Error,
    /// The file is accepted, but something in it is probably a mistake.
    Warning,
}

impl Severity {
    /// The lowercase name: `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One located message about a file; displays as `file:line:col: message`.
///
/// `line` and `col` are 1-based; both are 0 when the location is unknown, and then the
/// display is `file: message`. Warnings display their message prefixed with `warning: `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name given by the caller (used only in messages).
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: u32,
    /// 1-based column (in characters), 0 when unknown.
    pub col: u32,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, one line, without the location.
    pub message: String,
}

impl Diagnostic {
    /// Whether this is an error (as opposed to a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: ", self.file)?;
        } else {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.col)?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A list of diagnostics in file order; displays one per line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    /// An empty list.
    pub fn new() -> Diagnostics {
        Diagnostics(Vec::new())
    }

    /// All diagnostics, errors and warnings, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// Only the errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> + '_ {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }

    /// Only the warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> + '_ {
        self.0.iter().filter(|d| d.severity == Severity::Warning)
    }

    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of diagnostics.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Appends one diagnostic.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// The diagnostics as a vector.
    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.0
    }

    /// Sorts by position (stable, so same-position diagnostics keep their order).
    pub(crate) fn sort_by_position(&mut self) {
        self.0.sort_by_key(|d| (d.line, d.col));
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Vec<Diagnostic>> for Diagnostics {
    fn from(v: Vec<Diagnostic>) -> Diagnostics {
        Diagnostics(v)
    }
}

impl FromIterator<Diagnostic> for Diagnostics {
    fn from_iter<I: IntoIterator<Item = Diagnostic>>(iter: I) -> Self {
        Diagnostics(iter.into_iter().collect())
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A 1-based position in a file; `(0, 0)` when unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub(crate) line: u32,
    pub(crate) col: u32,
}

impl Pos {
    pub(crate) fn new(line: u32, col: u32) -> Pos {
        Pos { line, col }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl From<serde_saphyr::Location> for Pos {
    fn from(l: serde_saphyr::Location) -> Pos {
        Pos {
            line: u32::try_from(l.line()).unwrap_or(u32::MAX),
            col: u32::try_from(l.column()).unwrap_or(u32::MAX),
        }
    }
}

/// Collects the diagnostics of one file while it is being checked.
pub(crate) struct Sink<'f> {
    file: &'f str,
    out: Diagnostics,
}

impl<'f> Sink<'f> {
    pub(crate) fn new(file: &'f str) -> Sink<'f> {
        Sink {
            file,
            out: Diagnostics::new(),
        }
    }

    pub(crate) fn error(&mut self, at: impl Into<Pos>, message: impl Into<String>) {
        self.push(at.into(), Severity::Error, message.into());
    }

    pub(crate) fn warning(&mut self, at: impl Into<Pos>, message: impl Into<String>) {
        self.push(at.into(), Severity::Warning, message.into());
    }

    fn push(&mut self, at: Pos, severity: Severity, message: String) {
        self.out.push(Diagnostic {
            file: self.file.to_owned(),
            line: at.line,
            col: at.col,
            severity,
            message,
        });
    }

    /// Whether an error has been recorded so far.
    pub(crate) fn has_errors(&self) -> bool {
        self.out.has_errors()
    }

    /// Ends checking: `Ok(warnings)` when there is no error, else `Err(everything)`.
    pub(crate) fn finish(self) -> Result<Diagnostics, Diagnostics> {
        let mut out = self.out;
        out.sort_by_position();
        if out.has_errors() { Err(out) } else { Ok(out) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_formats() {
        let mut s = Sink::new("p.yaml");
        s.warning(Pos::new(3, 4), "w");
        s.error(Pos::new(1, 2), "e");
        s.error(Pos::default(), "nowhere");
        let d = s.finish().unwrap_err();
        assert_eq!(
            d.to_string(),
            "p.yaml: nowhere\np.yaml:1:2: e\np.yaml:3:4: warning: w"
        );
        assert_eq!(d.errors().count(), 2);
        assert_eq!(d.warnings().count(), 1);
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn warnings_only_is_ok() {
        let mut s = Sink::new("f");
        s.warning(Pos::new(1, 1), "w");
        assert_eq!(s.finish().unwrap().len(), 1);
    }
}
