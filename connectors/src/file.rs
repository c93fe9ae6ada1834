//! File sources: CSV (optionally gzip), Parquet and newline-delimited JSON,
//! registered as tables and chosen by file extension.

use std::path::Path;

use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};

use crate::error::ConnectorError;

/// The file formats a table can be read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormatKind {
    Csv,
    CsvGzip,
    Parquet,
    NdJson,
}

impl FileFormatKind {
    /// The format named by a path's extension (case-insensitive).
    pub fn from_path(path: &str) -> Option<Self> {
        let lower = path.to_ascii_lowercase();
        // `.csv.gz` before `.gz`-less checks: the longest suffix decides.
        [
            (".csv.gz", Self::CsvGzip),
            (".csv", Self::Csv),
            (".parquet", Self::Parquet),
            (".ndjson", Self::NdJson),
            (".jsonl", Self::NdJson),
            (".json", Self::NdJson),
        ]
        .into_iter()
        .find(|(suffix, _)| lower.ends_with(suffix))
        .map(|(_, kind)| kind)
    }

    /// The exact suffix of `path` that DataFusion must match when listing it.
    fn suffix(self, path: &str) -> &str {
        let len = match self {
            Self::CsvGzip => ".csv.gz".len(),
            Self::Csv => ".csv".len(),
            Self::Parquet => ".parquet".len(),
            Self::NdJson => path.len() - path.rfind('.').unwrap_or(path.len()),
        };
        &path[path.len() - len..]
    }
}

/// Register the file at `path` as table `name`. Types are inferred as
/// DataFusion infers them; in CSV the first row is the header and empty
/// fields are NULL.
pub async fn register_file_table(
    ctx: &SessionContext,
    name: &str,
    path: &str,
) -> Result<(), ConnectorError> {
    let kind = FileFormatKind::from_path(path).ok_or_else(|| {
        ConnectorError::user(format!(
            "table '{name}': cannot tell the format of '{path}' \
             (expected .csv, .csv.gz, .parquet, .json, .ndjson or .jsonl)"
        ))
    })?;
    let file = Path::new(path);
    if !file.exists() {
        return Err(ConnectorError::user(format!(
            "table '{name}': file not found: {path}"
        )));
    }
    if !file.is_file() {
        return Err(ConnectorError::user(format!(
            "table '{name}': not a regular file: {path}"
        )));
    }
    let suffix = kind.suffix(path);
    let registered = match kind {
        FileFormatKind::Csv | FileFormatKind::CsvGzip => {
            let compression = if kind == FileFormatKind::CsvGzip {
                FileCompressionType::GZIP
            } else {
                FileCompressionType::UNCOMPRESSED
            };
            let options = CsvReadOptions::new()
                .has_header(true)
                .file_extension(suffix)
                .file_compression_type(compression);
            ctx.register_csv(name, path, options).await
        }
        FileFormatKind::Parquet => {
            let options = ParquetReadOptions {
                file_extension: suffix,
                ..Default::default()
            };
            ctx.register_parquet(name, path, options).await
        }
        FileFormatKind::NdJson => {
            let options = JsonReadOptions::default().file_extension(suffix);
            ctx.register_json(name, path, options).await
        }
    };
    registered.map_err(|e| {
        ConnectorError::user(format!("table '{name}': cannot read {path}: {e}")).with_source(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_the_longest_extension() {
        assert_eq!(
            FileFormatKind::from_path("a/b.CSV"),
            Some(FileFormatKind::Csv)
        );
        assert_eq!(
            FileFormatKind::from_path("b.csv.gz"),
            Some(FileFormatKind::CsvGzip)
        );
        assert_eq!(
            FileFormatKind::from_path("b.parquet"),
            Some(FileFormatKind::Parquet)
        );
        assert_eq!(
            FileFormatKind::from_path("b.jsonl"),
            Some(FileFormatKind::NdJson)
        );
        assert_eq!(FileFormatKind::from_path("b.gz"), None);
        assert_eq!(FileFormatKind::NdJson.suffix("x.ndjson"), ".ndjson");
        assert_eq!(FileFormatKind::CsvGzip.suffix("x.CSV.GZ"), ".CSV.GZ");
    }

    #[tokio::test]
    async fn missing_and_unknown_files_are_user_errors() {
        let ctx = SessionContext::new();
        let missing = register_file_table(&ctx, "t", "/nonexistent/x.csv").await;
        assert!(
            matches!(&missing, Err(e) if e.message.contains("file not found")),
            "{missing:?}"
        );
        let unknown = register_file_table(&ctx, "t", "x.xlsx").await;
        assert!(
            matches!(&unknown, Err(e) if e.message.contains("cannot tell the format")),
            "{unknown:?}"
        );
    }
}
