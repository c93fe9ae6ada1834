//! Kafka messages into Arrow rows, one message one row, and the messages
//! that cannot become a row, each with its reason.
//!
//! Avro values (arrow-avro's streaming `Decoder`, Confluent wire format)
//! are decoded with the table's writer schema, then matched to the table's
//! columns by name and cast; a table column the record lacks is NULL.
//!
//! arrow-json reports a syntax error from `decode` but a type mismatch only
//! from `flush`, for the whole batch and without the row, and neither
//! decoder is usable after an error. So a batch is decoded in one pass
//! (the fast path), and only when that pass fails are its messages decoded
//! one by one to find the ones at fault; the rest are decoded again as one
//! batch. Bad records are rare, so the slow path costs nothing in the
//! common case.

use std::sync::Arc;

use arrow_avro::reader::{Decoder as AvroDecoder, ReaderBuilder as AvroReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use datafusion::arrow::array::new_null_array;
use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::common::{DataFusionError, Result};

use super::options::{AvroSchemaSource, Format};

// Metadata columns a table may declare: filled from the message, never
// decoded from its value (operators never take them as features).
pub use equipoise_operators::columns::{
    KAFKA_KEY as KEY, KAFKA_OFFSET as OFFSET, KAFKA_PARTITION as PARTITION,
    KAFKA_TIMESTAMP as TIMESTAMP, METADATA_COLUMNS,
};

/// A consumed message, owned (its payload outlives the consumer's buffer).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, when the broker gave one.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Why a message could not become a row: the `reason` label of
/// `equipoise_bad_records_total` and of the dead-letter header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadReason {
    Empty,
    Oversized,
    /// Not a value of the format (a JSON syntax error, a CSV line with the
    /// wrong number of fields, more or less than one record).
    Malformed,
    /// A value of the format that does not fit the table's columns.
    SchemaMismatch,
    MissingLabel,
}

impl BadReason {
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Oversized => "oversized",
            Self::Malformed => "malformed",
            Self::SchemaMismatch => "schema_mismatch",
            Self::MissingLabel => "missing_label",
        }
    }
}

/// One message that did not become a row.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRecord {
    /// Position of the message in the decoded slice.
    pub index: usize,
    pub reason: BadReason,
    pub error: String,
}

/// The rows of a slice of messages, and the messages that are not rows.
#[derive(Debug)]
pub struct Decoded {
    /// Rows in message order, in the table's schema; `None` when no message
    /// became a row.
    pub batch: Option<RecordBatch>,
    pub bad: Vec<BadRecord>,
}

/// Decodes messages into rows of one table's schema.
#[derive(Debug, Clone)]
pub struct RecordDecoder {
    format: Format,
    /// The table's columns.
    schema: SchemaRef,
    /// The columns decoded from the value: the table's minus metadata.
    value_schema: SchemaRef,
    /// For each table column: `Ok(i)` value column `i`, or `Err(name)` the
    /// metadata column `name`.
    layout: Vec<std::result::Result<usize, &'static str>>,
    /// Position of the label among the value columns.
    label: Option<usize>,
    max_message_bytes: usize,
    /// The writer schema of Avro values.
    avro: Option<AvroCodec>,
}

/// What Avro values are decoded with: the id messages must carry and the
/// store that maps it to the writer schema.
#[derive(Debug, Clone)]
struct AvroCodec {
    id: u32,
    store: SchemaStore,
}

impl RecordDecoder {
    pub fn try_new(
        format: Format,
        schema: SchemaRef,
        label: Option<&str>,
        max_message_bytes: usize,
        avro: Option<&AvroSchemaSource>,
    ) -> Result<Self> {
        let mut value_fields: Vec<Arc<Field>> = Vec::new();
        let mut layout = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            match METADATA_COLUMNS.iter().find(|m| **m == field.name()) {
                Some(name) => {
                    check_metadata_type(field)?;
                    layout.push(Err(*name));
                }
                None => {
                    layout.push(Ok(value_fields.len()));
                    value_fields.push(Arc::clone(field));
                }
            }
        }
        let value_schema = Arc::new(Schema::new(value_fields));
        let label = match label {
            None => None,
            Some(name) => Some(value_schema.index_of(name).map_err(|_| {
                DataFusionError::Plan(format!(
                    "kafka: label column '{name}' is not a column of the table"
                ))
            })?),
        };
        let avro = match (format, avro) {
            (Format::Avro, Some(source)) => {
                let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
                store
                    .set(
                        Fingerprint::Id(source.id),
                        AvroSchema::new(source.json.clone()),
                    )
                    .map_err(|e| {
                        DataFusionError::Plan(format!(
                            "kafka: avro_schema_file '{}': {e}",
                            source.file
                        ))
                    })?;
                let codec = AvroCodec {
                    id: source.id,
                    store,
                };
                // A schema that does not parse is a plan error, not a bad
                // record per message.
                codec.decoder(1).map_err(|e| {
                    DataFusionError::Plan(format!(
                        "kafka: avro_schema_file '{}' is not a usable Avro schema: {e}",
                        source.file
                    ))
                })?;
                Some(codec)
            }
            (Format::Avro, None) => {
                return Err(DataFusionError::Plan(
                    "kafka: 'format' 'avro' needs its writer schema".to_string(),
                ));
            }
            _ => None,
        };
        Ok(Self {
            format,
            schema,
            value_schema,
            layout,
            label,
            max_message_bytes,
            avro,
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The rows of `messages` and the messages that are not rows.
    pub fn decode(&self, messages: &[Message]) -> Result<Decoded> {
        let mut bad = Vec::new();
        let mut accepted: Vec<usize> = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            match message.payload.as_deref() {
                None | Some([]) => bad.push(BadRecord {
                    index,
                    reason: BadReason::Empty,
                    error: "the message has no value".to_string(),
                }),
                Some(payload) if payload.len() > self.max_message_bytes => bad.push(BadRecord {
                    index,
                    reason: BadReason::Oversized,
                    error: format!(
                        "the value has {} bytes, more than max_message_bytes={}",
                        payload.len(),
                        self.max_message_bytes
                    ),
                }),
                Some(_) => accepted.push(index),
            }
        }
        let payload = |i: usize| messages[i].payload.as_deref().unwrap_or_default();
        let values = match self.decode_values(accepted.iter().map(|&i| payload(i))) {
            Ok(values) => values,
            Err(_) => {
                // Find the messages at fault one by one, then decode the
                // others together.
                let mut good = Vec::with_capacity(accepted.len());
                for &index in &accepted {
                    match self.decode_values(std::iter::once(payload(index))) {
                        Ok(_) => good.push(index),
                        Err(failure) => bad.push(BadRecord {
                            index,
                            reason: failure.reason,
                            error: failure.error,
                        }),
                    }
                }
                accepted = good;
                self.decode_values(accepted.iter().map(|&i| payload(i)))
                    .map_err(|failure| {
                        DataFusionError::Internal(format!(
                            "kafka: messages that decode one by one failed together: {}",
                            failure.error
                        ))
                    })?
            }
        };
        let Some(mut values) = values else {
            bad.sort_by_key(|b| b.index);
            return Ok(Decoded { batch: None, bad });
        };
        if let Some(label) = self.label {
            let labels = values.column(label);
            if labels.null_count() > 0 {
                let keep: BooleanArray = (0..labels.len())
                    .map(|r| Some(labels.is_valid(r)))
                    .collect();
                let mut kept = Vec::with_capacity(accepted.len());
                for (row, &index) in accepted.iter().enumerate() {
                    if labels.is_valid(row) {
                        kept.push(index);
                    } else {
                        bad.push(BadRecord {
                            index,
                            reason: BadReason::MissingLabel,
                            error: format!(
                                "the label column '{}' is missing or null",
                                self.value_schema.field(label).name()
                            ),
                        });
                    }
                }
                values = filter_record_batch(&values, &keep)?;
                accepted = kept;
            }
        }
        bad.sort_by_key(|b| b.index);
        if accepted.is_empty() {
            return Ok(Decoded { batch: None, bad });
        }
        let rows: Vec<&Message> = accepted.iter().map(|&i| &messages[i]).collect();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.layout.len());
        for (field, place) in self.schema.fields().iter().zip(&self.layout) {
            columns.push(match place {
                Ok(i) => Arc::clone(values.column(*i)),
                Err(name) => metadata_column(name, field.data_type(), &rows)?,
            });
        }
        Ok(Decoded {
            batch: Some(RecordBatch::try_new(Arc::clone(&self.schema), columns)?),
            bad,
        })
    }

    /// The value columns of `payloads`, one row each, or why not.
    fn decode_values<'a>(
        &self,
        payloads: impl ExactSizeIterator<Item = &'a [u8]>,
    ) -> std::result::Result<Option<RecordBatch>, Failure> {
        let rows = payloads.len();
        if rows == 0 {
            return Ok(None);
        }
        match self.format {
            Format::Json => self.decode_json(payloads, rows),
            Format::Csv => self.decode_csv(payloads, rows),
            Format::Avro => self.decode_avro(payloads, rows),
        }
    }

    fn decode_avro<'a>(
        &self,
        payloads: impl Iterator<Item = &'a [u8]>,
        rows: usize,
    ) -> std::result::Result<Option<RecordBatch>, Failure> {
        let Some(avro) = &self.avro else {
            return Err(Failure::malformed("no Avro writer schema"));
        };
        let mut decoder = avro.decoder(rows + 1).map_err(|e| Failure::internal(&e))?;
        for payload in payloads {
            // One writer schema: a message naming another id is not ours
            // to guess (arrow-avro would refuse it too, less clearly).
            match payload {
                [0, a, b, c, d, ..] if u32::from_be_bytes([*a, *b, *c, *d]) == avro.id => {}
                [0, a, b, c, d, ..] => {
                    return Err(Failure::malformed(format!(
                        "the message names Avro schema id {}, the table's avro_schema_id is {}",
                        u32::from_be_bytes([*a, *b, *c, *d]),
                        avro.id
                    )));
                }
                _ => {
                    return Err(Failure::malformed(
                        "the message has no Confluent Avro header (magic byte 0 and a schema id)",
                    ));
                }
            }
            let before = decoder.capacity();
            let read = decoder
                .decode(payload)
                .map_err(|e| Failure::malformed(e.to_string()))?;
            if read != payload.len() || before - decoder.capacity() != 1 {
                return Err(Failure::malformed("the message is not one Avro record"));
            }
        }
        let Some(decoded) = decoder
            .flush()
            .map_err(|e| Failure::malformed(e.to_string()))?
        else {
            return Ok(None);
        };
        // The table's value columns, by name, in the table's types.
        let mut columns = Vec::with_capacity(self.value_schema.fields().len());
        for field in self.value_schema.fields() {
            columns.push(match decoded.column_by_name(field.name()) {
                Some(column) => cast(column, field.data_type()).map_err(|e| Failure::schema(&e))?,
                None if field.is_nullable() => {
                    new_null_array(field.data_type(), decoded.num_rows())
                }
                None => {
                    return Err(Failure {
                        reason: BadReason::SchemaMismatch,
                        error: format!("the Avro record has no field '{}'", field.name()),
                    });
                }
            });
        }
        RecordBatch::try_new(Arc::clone(&self.value_schema), columns)
            .map(Some)
            .map_err(|e| Failure::schema(&e))
    }

    fn decode_json<'a>(
        &self,
        payloads: impl Iterator<Item = &'a [u8]>,
        rows: usize,
    ) -> std::result::Result<Option<RecordBatch>, Failure> {
        let mut decoder =
            datafusion::arrow::json::ReaderBuilder::new(Arc::clone(&self.value_schema))
                .with_batch_size(rows + 1)
                .build_decoder()
                .map_err(|e| Failure::internal(&e))?;
        for payload in payloads {
            let before = decoder.len();
            feed(payload, |bytes| decoder.decode(bytes))?;
            if decoder.has_partial_record() {
                return Err(Failure::malformed("the JSON value is truncated"));
            }
            match decoder.len() - before {
                1 => {}
                0 => return Err(Failure::malformed("the message holds no JSON object")),
                n => {
                    return Err(Failure::malformed(format!(
                        "the message holds {n} JSON values, not one"
                    )));
                }
            }
        }
        decoder.flush().map_err(|e| Failure::schema(&e))
    }

    fn decode_csv<'a>(
        &self,
        payloads: impl Iterator<Item = &'a [u8]>,
        rows: usize,
    ) -> std::result::Result<Option<RecordBatch>, Failure> {
        let mut decoder =
            datafusion::arrow::csv::ReaderBuilder::new(Arc::clone(&self.value_schema))
                .with_header(false)
                .with_batch_size(rows + 1)
                .build_decoder();
        for payload in payloads {
            let before = decoder.capacity();
            let line = payload.strip_suffix(b"\n").unwrap_or(payload);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.contains(&b'\n') {
                return Err(Failure::malformed(
                    "the message holds more than one CSV line",
                ));
            }
            for part in [line, b"\n".as_slice()] {
                feed(part, |bytes| decoder.decode(bytes))?;
            }
            if before - decoder.capacity() != 1 {
                return Err(Failure::malformed("the message holds no CSV record"));
            }
        }
        decoder.flush().map_err(|e| Failure::schema(&e))
    }
}

impl AvroCodec {
    fn decoder(&self, batch_size: usize) -> std::result::Result<AvroDecoder, ArrowError> {
        AvroReaderBuilder::new()
            .with_writer_schema_store(self.store.clone())
            .with_active_fingerprint(Fingerprint::Id(self.id))
            .with_batch_size(batch_size)
            .build_decoder()
    }
}

/// Hand `bytes` to a decoder until it has taken them all (or stops taking:
/// its batch is full); a decoder error makes the message malformed.
fn feed(
    mut bytes: &[u8],
    mut decode: impl FnMut(&[u8]) -> std::result::Result<usize, ArrowError>,
) -> std::result::Result<(), Failure> {
    while !bytes.is_empty() {
        let read = decode(bytes).map_err(|e| Failure::malformed(e.to_string()))?;
        if read == 0 {
            break;
        }
        bytes = &bytes[read..];
    }
    Ok(())
}

/// Why a set of payloads did not decode.
#[derive(Debug)]
struct Failure {
    reason: BadReason,
    error: String,
}

impl Failure {
    fn malformed(error: impl Into<String>) -> Self {
        Self {
            reason: BadReason::Malformed,
            error: error.into(),
        }
    }

    fn schema(error: &ArrowError) -> Self {
        Self {
            reason: BadReason::SchemaMismatch,
            error: error.to_string(),
        }
    }

    fn internal(error: &ArrowError) -> Self {
        Self {
            reason: BadReason::Malformed,
            error: format!("cannot build the decoder: {error}"),
        }
    }
}

fn check_metadata_type(field: &Field) -> Result<()> {
    let ok = match field.name().as_str() {
        PARTITION | OFFSET => field.data_type().is_integer(),
        TIMESTAMP => matches!(
            field.data_type(),
            DataType::Int64 | DataType::Timestamp(_, _)
        ),
        _ => matches!(
            field.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Binary
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(DataFusionError::Plan(format!(
            "kafka: metadata column '{}' cannot have type {}; use an integer for \
             _partition and _offset, TIMESTAMP or BIGINT for _timestamp, VARCHAR or \
             BYTEA for _key",
            field.name(),
            field.data_type()
        )))
    }
}

/// A metadata column of `rows`, in the declared type.
fn metadata_column(name: &str, data_type: &DataType, rows: &[&Message]) -> Result<ArrayRef> {
    let array: ArrayRef = match name {
        PARTITION => Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|m| i64::from(m.partition)),
        )),
        OFFSET => Arc::new(Int64Array::from_iter_values(rows.iter().map(|m| m.offset))),
        TIMESTAMP => {
            let millis: ArrayRef =
                Arc::new(Int64Array::from_iter(rows.iter().map(|m| m.timestamp)));
            match data_type {
                DataType::Timestamp(unit, tz) => {
                    let as_millis = cast(
                        &millis,
                        &DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
                    )?;
                    if *unit == TimeUnit::Millisecond {
                        as_millis
                    } else {
                        cast(&as_millis, data_type)?
                    }
                }
                _ => millis,
            }
        }
        _ => match data_type {
            DataType::Binary => Arc::new(BinaryArray::from_iter(
                rows.iter().map(|m| m.key.as_deref()),
            )),
            _ => Arc::new(StringArray::from_iter(rows.iter().map(|m| {
                m.key
                    .as_deref()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
            }))),
        },
    };
    if array.data_type() == data_type {
        Ok(array)
    } else {
        Ok(cast(&array, data_type)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Float64Type, Int64Type};

    fn message(offset: i64, payload: &[u8]) -> Message {
        Message {
            topic: "t".into(),
            partition: 2,
            offset,
            timestamp: Some(1_700_000_000_000 + offset),
            key: Some(format!("k{offset}").into_bytes()),
            payload: Some(payload.to_vec()),
            headers: Vec::new(),
        }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("f1", DataType::Float64, true),
            Field::new("label", DataType::Int64, true),
            Field::new(OFFSET, DataType::Int64, false),
            Field::new(KEY, DataType::Utf8, true),
        ]))
    }

    /// (message index, reason) of every bad record.
    fn reasons(decoded: &Decoded) -> Vec<(usize, &'static str)> {
        decoded
            .bad
            .iter()
            .map(|b| (b.index, b.reason.name()))
            .collect()
    }

    #[test]
    fn every_kind_of_bad_json_record_is_named_and_the_rest_decode() -> Result<()> {
        let decoder = RecordDecoder::try_new(Format::Json, schema(), Some("label"), 64, None)?;
        let messages = vec![
            message(0, br#"{"f1": 1.5, "label": 0}"#),
            message(1, br#"{"f1": "#),
            message(2, br#"{"f1": 2.5, "label": "x"}"#),
            message(3, b""),
            message(4, &[b' '; 100]),
            message(5, br#"{"f1": 3.5}"#),
            message(6, br#"{"f1": 4.5, "label": 1} {"f1": 1}"#),
            message(7, br#"{"f1": 5.5, "label": 1, "extra": true}"#),
        ];
        let decoded = decoder.decode(&messages)?;
        let reasons = reasons(&decoded);
        assert_eq!(
            reasons,
            vec![
                (1, "malformed"),
                (2, "schema_mismatch"),
                (3, "empty"),
                (4, "oversized"),
                (5, "missing_label"),
                (6, "malformed"),
            ]
        );
        let Some(batch) = decoded.batch else {
            panic!("two messages are rows");
        };
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(
            batch.column(0).as_primitive::<Float64Type>().values(),
            &[1.5, 5.5]
        );
        assert_eq!(
            batch.column(2).as_primitive::<Int64Type>().values(),
            &[0, 7]
        );
        assert_eq!(batch.column(3).as_string::<i32>().value(1), "k7");
        Ok(())
    }

    #[test]
    fn csv_lines_decode_and_wrong_lines_are_bad() -> Result<()> {
        let decoder = RecordDecoder::try_new(Format::Csv, schema(), Some("label"), 1024, None)?;
        let messages = vec![
            message(10, b"1.5,0\n"),
            message(11, b"2.5,1"),
            message(12, b"oops,1"),
            message(13, b"1,2,3"),
            message(14, b"3.5,"),
        ];
        let decoded = decoder.decode(&messages)?;
        let reasons = reasons(&decoded);
        assert_eq!(
            reasons,
            vec![
                (2, "schema_mismatch"),
                (3, "malformed"),
                (4, "missing_label")
            ]
        );
        let batch = decoded.batch.map(|b| b.num_rows());
        assert_eq!(batch, Some(2));
        Ok(())
    }

    const WRITER_SCHEMA: &str = r#"{"type": "record", "name": "reading", "fields": [
        {"name": "f1", "type": "double"},
        {"name": "label", "type": ["null", "long"]},
        {"name": "extra", "type": "string"}
    ]}"#;

    /// Confluent-framed Avro records of (f1, label, extra), schema id 7,
    /// written by arrow-avro's encoder.
    fn avro_records(rows: &[(f64, Option<i64>)]) -> Vec<Vec<u8>> {
        use arrow_avro::schema::{FingerprintStrategy, SCHEMA_METADATA_KEY};
        use arrow_avro::writer::WriterBuilder;
        use arrow_avro::writer::format::AvroSoeFormat;
        let schema = Schema::new(vec![
            Field::new("f1", DataType::Float64, false),
            Field::new("label", DataType::Int64, true),
            Field::new("extra", DataType::Utf8, false),
        ])
        .with_metadata([(SCHEMA_METADATA_KEY.to_string(), WRITER_SCHEMA.to_string())].into());
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![
                Arc::new(datafusion::arrow::array::Float64Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(vec!["x"; rows.len()])),
            ],
        )
        .expect("batch");
        let mut encoder = WriterBuilder::new(schema)
            .with_fingerprint_strategy(FingerprintStrategy::Id(7))
            .build_encoder::<AvroSoeFormat>()
            .expect("encoder");
        encoder.encode(&batch).expect("encode");
        encoder.flush().iter().map(|row| row.to_vec()).collect()
    }

    #[test]
    fn confluent_avro_records_decode_by_name_and_wrong_ones_are_bad() -> Result<()> {
        let source = AvroSchemaSource {
            id: 7,
            file: "reading.avsc".into(),
            json: WRITER_SCHEMA.into(),
        };
        let decoder =
            RecordDecoder::try_new(Format::Avro, schema(), Some("label"), 1024, Some(&source))?;
        let good = avro_records(&[(1.5, Some(0)), (2.5, Some(1)), (3.5, None)]);
        let mut other_id = good[0].clone();
        other_id[4] = 8;
        let truncated = good[1][..good[1].len() - 3].to_vec();
        let mut two = good[0].clone();
        two.extend_from_slice(&good[1]);
        let messages = vec![
            message(10, &good[0]),
            message(11, &other_id),
            message(12, b"{\"f1\": 1}"),
            message(13, &good[1]),
            message(14, &truncated),
            message(15, &two),
            message(16, &good[2]),
        ];
        let decoded = decoder.decode(&messages)?;
        assert_eq!(
            reasons(&decoded),
            vec![
                (1, "malformed"),
                (2, "malformed"),
                (4, "malformed"),
                (5, "malformed"),
                (6, "missing_label")
            ]
        );
        let Some(batch) = decoded.batch else {
            panic!("rows decoded");
        };
        let ints = |i: usize| {
            batch
                .column(i)
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        };
        let f1 = batch
            .column(0)
            .as_primitive::<Float64Type>()
            .values()
            .to_vec();
        assert_eq!(f1, vec![1.5, 2.5]);
        assert_eq!(ints(1), vec![0, 1], "labels");
        assert_eq!(ints(2), vec![10, 13], "offsets");
        Ok(())
    }

    #[test]
    fn an_avro_schema_that_does_not_parse_is_a_plan_error() {
        let source = AvroSchemaSource {
            id: 1,
            file: "bad.avsc".into(),
            json: "{\"type\": \"nonsense\"}".into(),
        };
        let error = RecordDecoder::try_new(Format::Avro, schema(), None, 1024, Some(&source))
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(
            error.as_ref().is_err_and(|e| e.contains("bad.avsc")),
            "{error:?}"
        );
    }

    #[test]
    fn a_metadata_column_of_the_wrong_type_is_a_plan_error() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            PARTITION,
            DataType::Utf8,
            true,
        )]));
        assert!(RecordDecoder::try_new(Format::Json, schema, None, 10, None).is_err());
    }
}
