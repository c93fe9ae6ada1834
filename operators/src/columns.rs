//! The column vocabulary that operators share: the names of the columns one
//! operator adds and another reads, and the two rules for adding and finding
//! them. It sits on the bottom floor so that no operator imports another
//! operator to learn a column's name.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// Boolean, added by every oversampler: true on synthetic rows. Anything
/// that evaluates on the stream skips them; nothing counts them as
/// observations.
pub const IS_SYNTHETIC: &str = "is_synthetic";
/// Utf8, added by every oversampler: NULL on original rows, `interpolated`
/// or `duplicate` on synthetic ones.
pub const SYNTHETIC_KIND: &str = "synthetic_kind";
/// Float64, added by `icost`: the row's weight; `train_detector` learns with
/// it and never takes it as a feature.
pub const SAMPLE_WEIGHT: &str = "sample_weight";
/// Utf8, added by `icost`: the row's complexity category.
pub const COMPLEXITY: &str = "complexity";
/// The predicted class, added by `train_detector` and `score_detector`.
pub const PREDICTION: &str = "prediction";
/// Float64, added by the detectors: the score of the positive (minority)
/// class.
pub const SCORE: &str = "score";
/// Int64, added by the detectors: the version of the model that predicted.
pub const MODEL_VERSION: &str = "model_version";
/// Utf8, added by `drift_monitor`: `none`, `warning` or `drift`.
pub const DRIFT_STATE: &str = "drift_state";
/// Utf8, added by `drift_monitor`: the detectors in warning or drift.
pub const DRIFT_SIGNAL: &str = "drift_signal";

/// Metadata columns a Kafka table may declare (`_partition`, `_offset`,
/// `_timestamp`, `_key`): filled from the message, carried through every
/// operator, and never taken as features unless named in `features=`.
pub const KAFKA_PARTITION: &str = "_partition";
pub const KAFKA_OFFSET: &str = "_offset";
pub const KAFKA_TIMESTAMP: &str = "_timestamp";
pub const KAFKA_KEY: &str = "_key";
pub const METADATA_COLUMNS: [&str; 4] = [KAFKA_PARTITION, KAFKA_OFFSET, KAFKA_TIMESTAMP, KAFKA_KEY];

/// `input`'s fields (and metadata) followed by an operator's own columns.
pub fn with_columns(input: &Schema, added: impl IntoIterator<Item = Field>) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
    fields.extend(added.into_iter().map(Arc::new));
    Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()))
}

/// The Boolean `is_synthetic` marker an upstream oversampler added, if any.
pub fn synthetic_marker(input: &Schema) -> Option<usize> {
    input
        .index_of(IS_SYNTHETIC)
        .ok()
        .filter(|&i| input.field(i).data_type() == &DataType::Boolean)
}
