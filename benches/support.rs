//! What the benchmarks share: reading the little-endian arrays the Python
//! halves write, and putting rows into an in-memory table.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::MemTable;

const BATCH: usize = 8192;

/// A little-endian array written by a `scripts/bench_*.py`; the error names
/// the script (`writer`) that writes it.
pub fn read_le<T, const N: usize>(
    path: &Path,
    writer: &str,
    decode: fn([u8; N]) -> T,
) -> Result<Vec<T>> {
    let bytes = std::fs::read(path).map_err(|e| {
        DataFusionError::Execution(format!(
            "{}: {e}; run {writer}, which writes it",
            path.display()
        ))
    })?;
    Ok(bytes
        .chunks_exact(N)
        .map(|c| decode(c.try_into().unwrap_or([0; N])))
        .collect())
}

/// Rows `x` (row-major, `features` wide) with labels `y` as columns
/// `f0..`, `label`, in 8,192-row batches of one partition.
pub fn table_of(x: &[f64], y: &[i64], features: usize) -> Result<MemTable> {
    let mut fields: Vec<Field> = (0..features)
        .map(|i| Field::new(format!("f{i}"), DataType::Float64, false))
        .collect();
    fields.push(Field::new("label", DataType::Int64, false));
    let schema = Arc::new(Schema::new(fields));
    let mut batches = Vec::new();
    for start in (0..y.len()).step_by(BATCH) {
        let end = (start + BATCH).min(y.len());
        let mut columns: Vec<ArrayRef> = (0..features)
            .map(|f| {
                Arc::new(Float64Array::from_iter_values(
                    (start..end).map(|r| x[r * features + f]),
                )) as ArrayRef
            })
            .collect();
        columns.push(Arc::new(Int64Array::from(y[start..end].to_vec())));
        batches.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
    }
    MemTable::try_new(schema, vec![batches])
}
