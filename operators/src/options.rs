//! Option strings of table functions: `'rows=1000, seed=7'`, deserialized
//! with serde.
//!
//! DataFusion 55 table functions take positional arguments only, so options
//! travel as one string literal of comma-separated `key=value` pairs. Each
//! operator types its keys once, as a struct deriving `Deserialize` with
//! unknown fields denied; [`from_option_string`] feeds that struct from an
//! option string, and any other serde format (a TOML table) feeds the same
//! struct. Keys are case-insensitive; a key given twice, a pair without
//! `=`, a value of the wrong type, a value outside an enumeration or a key
//! the function does not know is a plan error naming the function and the
//! key, and saying what was expected.
//!
//! Values are text, read as the field's type: numbers and booleans are
//! parsed, an enumeration takes one of its names, and a list is
//! space-separated (`exclude=seq machine_id`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use datafusion::common::{DataFusionError, Result, plan_err};
use serde::de::value::{MapDeserializer, SeqDeserializer, StringDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

/// Deserialize `T` (an operator's option keys) from the option string
/// `text` of `function` (named in errors).
pub fn from_option_string<T: DeserializeOwned>(function: &str, text: &str) -> Result<T> {
    let pairs = parse_pairs(function, text)?;
    let map = MapDeserializer::new(pairs.into_iter().map(|(key, raw)| {
        let value = OptionValue {
            key: key.clone(),
            raw,
        };
        (key, value)
    }));
    T::deserialize(map).map_err(|e: OptionError| DataFusionError::Plan(format!("{function}: {e}")))
}

/// The `key=value` pairs of `text`, keys lower-cased.
fn parse_pairs(function: &str, text: &str) -> Result<BTreeMap<String, String>> {
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
    Ok(entries)
}

/// An error reading an option string, in the words users see.
#[derive(Debug)]
pub struct OptionError(String);

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OptionError {}

impl de::Error for OptionError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self(format!(
            "unknown option '{field}'; the options are {}",
            expected.join(", ")
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        Self(format!("option '{field}' is required"))
    }
}

/// `a, b or c`, for messages.
fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The text value of one option, read as whatever its field asks for.
struct OptionValue {
    key: String,
    raw: String,
}

impl OptionValue {
    fn parse<T: FromStr>(&self) -> Result<T, OptionError>
    where
        T::Err: fmt::Display,
    {
        self.raw.parse().map_err(|e| {
            OptionError(format!(
                "option {}='{}' is invalid: {e}",
                self.key, self.raw
            ))
        })
    }
}

impl IntoDeserializer<'_, OptionError> for OptionValue {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

macro_rules! parsed {
    ($($method:ident => $visit:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, OptionError> {
                visitor.$visit(self.parse()?)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for OptionValue {
    type Error = OptionError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, OptionError> {
        visitor.visit_string(self.raw)
    }

    parsed! {
        deserialize_bool => visit_bool,
        deserialize_i8 => visit_i8,
        deserialize_i16 => visit_i16,
        deserialize_i32 => visit_i32,
        deserialize_i64 => visit_i64,
        deserialize_u8 => visit_u8,
        deserialize_u16 => visit_u16,
        deserialize_u32 => visit_u32,
        deserialize_u64 => visit_u64,
        deserialize_f32 => visit_f32,
        deserialize_f64 => visit_f64,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, OptionError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, OptionError> {
        visitor.visit_newtype_struct(self)
    }

    /// A list: space-separated words.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, OptionError> {
        let words: Vec<String> = self.raw.split_whitespace().map(str::to_string).collect();
        visitor.visit_seq(SeqDeserializer::new(words.into_iter()))
    }

    /// One of the enumeration's names.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, OptionError> {
        if !variants.contains(&self.raw.as_str()) {
            return Err(OptionError(format!(
                "unknown {} '{}'; use {}",
                self.key,
                self.raw,
                one_of(variants)
            )));
        }
        visitor.visit_enum(StringDeserializer::<OptionError>::new(self.raw))
    }

    serde::forward_to_deserialize_any! {
        char str string bytes byte_buf unit unit_struct tuple tuple_struct map struct
        identifier ignored_any i128 u128
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Keys {
        rows: Option<u64>,
        seed: Option<u64>,
        rate: Option<f64>,
        scale: Option<bool>,
        exclude: Option<Vec<String>>,
        name: Option<String>,
        mode: Option<Mode>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Auto,
        Stream,
    }

    fn error(text: &str) -> String {
        from_option_string::<Keys>("f", text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn every_value_is_read_as_its_fields_type() -> Result<()> {
        let keys: Keys = from_option_string(
            "f",
            " rows=10 , Seed=7, rate=1e-3, scale=false, exclude=seq  machine_id, name=7, \
             mode=stream,",
        )?;
        assert_eq!(
            keys,
            Keys {
                rows: Some(10),
                seed: Some(7),
                rate: Some(1e-3),
                scale: Some(false),
                exclude: Some(vec!["seq".into(), "machine_id".into()]),
                name: Some("7".into()),
                mode: Some(Mode::Stream),
            }
        );
        assert_eq!(from_option_string::<Keys>("f", "")?, Keys::default());
        Ok(())
    }

    #[test]
    fn each_mistake_is_named_with_what_was_expected() {
        assert!(
            error("colour=red").contains("f: unknown option 'colour'; the options are rows, seed")
        );
        assert!(error("rows=many").contains("f: option rows='many' is invalid"));
        assert!(error("mode=later").contains("f: unknown mode 'later'; use auto or stream"));
        assert!(error("rows").contains("not of the form key=value"));
        assert!(error("rows=1, ROWS=2").contains("'rows' is given twice"));
        assert!(error("scale=maybe").contains("option scale='maybe' is invalid"));
    }

    #[test]
    fn another_serde_format_feeds_the_same_keys() -> Result<()> {
        // Typed values, lists as arrays, as a TOML table holds them.
        let table = serde_json::json!({"rows": 10, "exclude": ["seq"], "mode": "auto"});
        let keys: Keys =
            serde_json::from_value(table).map_err(|e| DataFusionError::Plan(e.to_string()))?;
        assert_eq!(keys.rows, Some(10));
        assert_eq!(keys.mode, Some(Mode::Auto));
        Ok(())
    }
}
