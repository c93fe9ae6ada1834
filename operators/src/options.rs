//! Option strings of table functions: `'rows=1000, seed=7'`.
//!
//! DataFusion 55 table functions take positional arguments only, so options
//! travel as one string literal of comma-separated `key=value` pairs. Keys are
//! case-insensitive; a key given twice, a pair without `=`, a value of the
//! wrong type or a key the function does not know is a plan error naming it.

use std::collections::BTreeMap;
use std::str::FromStr;

use datafusion::common::{Result, plan_err};

#[derive(Debug, Default)]
pub struct Options {
    function: String,
    entries: BTreeMap<String, String>,
}

impl Options {
    /// Parse the option string of `function` (used in error messages).
    pub fn parse(function: &str, text: &str) -> Result<Self> {
        let mut entries = BTreeMap::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return plan_err!("{function}: option '{pair}' is not of the form key=value");
            };
            let key = key.trim().to_ascii_lowercase();
            if entries
                .insert(key.clone(), value.trim().to_string())
                .is_some()
            {
                return plan_err!("{function}: option '{key}' is given twice");
            }
        }
        Ok(Self {
            function: function.to_string(),
            entries,
        })
    }

    /// Remove and parse option `key`.
    pub fn take<T: FromStr>(&mut self, key: &str) -> Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        match self.entries.remove(key) {
            None => Ok(None),
            Some(raw) => raw
                .parse()
                .map(Some)
                .or_else(|e| plan_err!("{}: option {key}='{raw}' is invalid: {e}", self.function)),
        }
    }

    /// Fail on any option nobody took.
    pub fn finish(self) -> Result<()> {
        match self.entries.keys().next() {
            None => Ok(()),
            Some(key) => plan_err!("{}: unknown option '{key}'", self.function),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_typed_options_and_rejects_leftovers() -> Result<()> {
        let mut options = Options::parse("f", " rows=10 , Seed=7,")?;
        assert_eq!(options.take::<u64>("rows")?, Some(10));
        assert_eq!(options.take::<u64>("seed")?, Some(7));
        assert_eq!(options.take::<u64>("batch_size")?, None);
        options.finish()?;

        let mut extra = Options::parse("f", "rows=1, colour=red")?;
        extra.take::<u64>("rows")?;
        let err = extra
            .finish()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unknown option 'colour'"), "{err}");
        Ok(())
    }

    #[test]
    fn malformed_options_are_errors() {
        assert!(Options::parse("f", "rows").is_err());
        assert!(Options::parse("f", "rows=1, rows=2").is_err());
        let bad_type = Options::parse("f", "rows=many").and_then(|mut o| o.take::<u64>("rows"));
        assert!(bad_type.is_err());
    }
}
