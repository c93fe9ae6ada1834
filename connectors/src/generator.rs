//! A deterministic generator of machine telemetry with rare faults, exposed as
//! a bounded or unbounded DataFusion table.
//!
//! Every value of row `seq` is a function of `(seed, seq)` alone (a counter-based
//! SplitMix64 stream per row), so the data do not depend on the batch size,
//! and a restart can resume at any row and produce exactly what an
//! uninterrupted run would have.
//!
//! # The stream
//!
//! | column | type | normal rows |
//! |---|---|---|
//! | `seq` | Int64 | 0, 1, 2, ... (the stream is ordered by it) |
//! | `event_time` | Timestamp(ms, UTC) | 2026-01-01T00:00:00Z + 100 ms x `seq` |
//! | `machine_id` | Int32 | `seq` mod 16 |
//! | `temperature_c` | Float64 | 65 + 0.4 x (`machine_id` - 7.5) + N(0, 2.5) |
//! | `vibration_mm_s` | Float64 | 2.2 + N(0, 0.35), at least 0.05 |
//! | `pressure_bar` | Float64 | 6.0 + N(0, 0.25) |
//! | `rotation_rpm` | Float64 | 1500 + N(0, 40) |
//! | `current_a` | Float64 | 12 + N(0, 0.8) |
//! | `label` | Int64 | 0 normal, 1 fault |
//!
//! A row is a fault with probability `minority_share` (default 2%) before row
//! `prior_shift_at` (default 60,000) and `shifted_minority_share` (default
//! 3.5%) from that row on: a change of the class mix.
//!
//! A fault of severity `s ~ U(0.5, 1.5)` shows in the features differently
//! before and after row `concept_shift_at` (default 120,000), a change of the
//! feature-to-label relation:
//! - before: temperature + 9s, vibration + 1.6s, rotation - 60s (overheating
//!   bearing);
//! - from then on: pressure - 1.0s, current + 3.5s, vibration + 0.3s (a leak
//!   that the pump compensates), temperature and rotation stay normal.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, exec_datafusion_err, plan_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use equipoise_operators::JobRuntime;
use equipoise_operators::options::from_option_string;
use equipoise_operators::runtime::{OperatorSnapshot, StatefulOperator};

pub const KIND: &str = "generator";
/// Name of the SQL table function.
pub const FUNCTION_NAME: &str = "equipoise_generator";
const STATE_VERSION: u32 = 1;
const MACHINES: i64 = 16;
const EPOCH_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const STEP_MS: i64 = 100;

/// What to generate. See the module documentation for the stream itself.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    pub seed: u64,
    /// Stop after this many rows; `None` streams forever.
    pub rows: Option<u64>,
    pub batch_size: usize,
    pub minority_share: f64,
    pub prior_shift_at: u64,
    pub shifted_minority_share: f64,
    pub concept_shift_at: u64,
    /// Pace the stream to this many rows per second (a live feed);
    /// `None` generates as fast as the consumer pulls.
    pub rows_per_second: Option<f64>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            rows: None,
            batch_size: 8192,
            minority_share: 0.02,
            prior_shift_at: 60_000,
            shifted_minority_share: 0.035,
            concept_shift_at: 120_000,
            rows_per_second: None,
        }
    }
}

impl GeneratorConfig {
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return plan_err!("{FUNCTION_NAME}: batch_size must be at least 1");
        }
        for (name, share) in [
            ("minority_share", self.minority_share),
            ("shifted_minority_share", self.shifted_minority_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return plan_err!("{FUNCTION_NAME}: {name} must be within [0, 1], got {share}");
            }
        }
        if let Some(rate) = self.rows_per_second
            && !(rate.is_finite() && rate > 0.0)
        {
            return plan_err!("{FUNCTION_NAME}: rate must be a positive number of rows per second");
        }
        Ok(())
    }

    /// Read `rows`, `seed`, `batch_size`, `minority_share`, `prior_shift_at`,
    /// `shifted_minority_share`, `concept_shift_at` and `rate` (rows per
    /// second) from an option string;
    /// the rest keep their defaults.
    pub fn from_options(text: &str) -> Result<Self> {
        Self::from_keys(from_option_string(FUNCTION_NAME, text)?)
    }

    /// The settings `keys` give over the defaults, validated.
    pub fn from_keys(keys: GeneratorKeys) -> Result<Self> {
        let defaults = Self::default();
        let config = Self {
            rows: keys.rows,
            rows_per_second: keys.rate,
            seed: keys.seed.unwrap_or(defaults.seed),
            batch_size: keys.batch_size.unwrap_or(defaults.batch_size),
            minority_share: keys.minority_share.unwrap_or(defaults.minority_share),
            prior_shift_at: keys.prior_shift_at.unwrap_or(defaults.prior_shift_at),
            shifted_minority_share: keys
                .shifted_minority_share
                .unwrap_or(defaults.shifted_minority_share),
            concept_shift_at: keys.concept_shift_at.unwrap_or(defaults.concept_shift_at),
        };
        config.validate()?;
        Ok(config)
    }
}

/// The keys of the generator's settings, typed once: the table function's
/// option string and a job file's `[generator]` table.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorKeys {
    pub rows: Option<u64>,
    /// Rows per second.
    pub rate: Option<f64>,
    pub seed: Option<u64>,
    pub batch_size: Option<usize>,
    pub minority_share: Option<f64>,
    pub prior_shift_at: Option<u64>,
    pub shifted_minority_share: Option<f64>,
    pub concept_shift_at: Option<u64>,
}

/// The schema of the telemetry stream.
pub fn telemetry_schema() -> SchemaRef {
    let float = |name: &str| Field::new(name, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("machine_id", DataType::Int32, false),
        float("temperature_c"),
        float("vibration_mm_s"),
        float("pressure_bar"),
        float("rotation_rpm"),
        float("current_a"),
        Field::new("label", DataType::Int64, false),
    ]))
}

/// SplitMix64 over a per-row counter: cheap, and stable forever (unlike a
/// library RNG whose stream may change between versions).
struct RowRng(u64);

impl RowRng {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

    fn for_row(seed: u64, seq: u64) -> Self {
        Self(mix64(seed ^ mix64(seq.wrapping_add(Self::GOLDEN))))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::GOLDEN);
        mix64(self.0)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller; one of the pair is discarded so every row
    /// draws a fixed number of values).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln is finite
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Rows `start .. start + count` of the stream.
pub fn generate_batch(config: &GeneratorConfig, start: u64, count: usize) -> Result<RecordBatch> {
    let mut seq = Vec::with_capacity(count);
    let mut time = Vec::with_capacity(count);
    let mut machine = Vec::with_capacity(count);
    let mut temperature = Vec::with_capacity(count);
    let mut vibration = Vec::with_capacity(count);
    let mut pressure = Vec::with_capacity(count);
    let mut rotation = Vec::with_capacity(count);
    let mut current = Vec::with_capacity(count);
    let mut label = Vec::with_capacity(count);
    for row in start..start + count as u64 {
        let row_i64 = i64::try_from(row)
            .map_err(|_| exec_datafusion_err!("{FUNCTION_NAME}: row number {row} overflows"))?;
        let mut rng = RowRng::for_row(config.seed, row);
        let share = if row < config.prior_shift_at {
            config.minority_share
        } else {
            config.shifted_minority_share
        };
        let fault = rng.uniform() < share;
        let machine_id = row_i64 % MACHINES;
        let mut t = 65.0 + 0.4 * (machine_id as f64 - 7.5) + 2.5 * rng.normal();
        let mut v = 2.2 + 0.35 * rng.normal();
        let mut p = 6.0 + 0.25 * rng.normal();
        let mut r = 1500.0 + 40.0 * rng.normal();
        let mut c = 12.0 + 0.8 * rng.normal();
        let severity = 0.5 + rng.uniform();
        if fault {
            if row < config.concept_shift_at {
                t += 9.0 * severity;
                v += 1.6 * severity;
                r -= 60.0 * severity;
            } else {
                p -= 1.0 * severity;
                c += 3.5 * severity;
                v += 0.3 * severity;
            }
        }
        seq.push(row_i64);
        time.push(EPOCH_MS + STEP_MS * row_i64);
        machine.push(machine_id as i32);
        temperature.push(t);
        vibration.push(v.max(0.05));
        pressure.push(p);
        rotation.push(r);
        current.push(c);
        label.push(i64::from(fault));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(seq)),
        Arc::new(TimestampMillisecondArray::from(time).with_timezone("UTC")),
        Arc::new(Int32Array::from(machine)),
        Arc::new(Float64Array::from(temperature)),
        Arc::new(Float64Array::from(vibration)),
        Arc::new(Float64Array::from(pressure)),
        Arc::new(Float64Array::from(rotation)),
        Arc::new(Float64Array::from(current)),
        Arc::new(Int64Array::from(label)),
    ];
    Ok(RecordBatch::try_new(telemetry_schema(), columns)?)
}

/// Where the generator is: the row it starts from (moved by a restore) and
/// the next row it would emit (its progress, for snapshots).
struct GeneratorCursor {
    id: String,
    start_row: AtomicU64,
    next_row: AtomicU64,
}

impl StatefulOperator for GeneratorCursor {
    fn operator_id(&self) -> &str {
        &self.id
    }

    fn snapshot(&self) -> Result<Option<OperatorSnapshot>> {
        let state = serde_json::json!({ "next_row": self.next_row.load(Ordering::SeqCst) });
        OperatorSnapshot::encode(&self.id, KIND, STATE_VERSION, &state).map(Some)
    }

    fn restore(&self, snapshot: &OperatorSnapshot) -> Result<()> {
        let state: std::collections::BTreeMap<String, u64> =
            snapshot.decode(&self.id, KIND, STATE_VERSION)?;
        let next_row = *state
            .get("next_row")
            .ok_or_else(|| exec_datafusion_err!("{}: snapshot without next_row", self.id))?;
        self.start_row.store(next_row, Ordering::SeqCst);
        self.next_row.store(next_row, Ordering::SeqCst);
        Ok(())
    }
}

/// The single partition of the generator.
struct GeneratorPartition {
    config: GeneratorConfig,
    cursor: Arc<GeneratorCursor>,
    runtime: Arc<JobRuntime>,
    schema: SchemaRef,
}

impl fmt::Debug for GeneratorPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratorPartition")
            .field("id", &self.cursor.id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PartitionStream for GeneratorPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let config = self.config.clone();
        let cursor = Arc::clone(&self.cursor);
        let runtime = Arc::clone(&self.runtime);
        let start = cursor.start_row.load(Ordering::SeqCst);
        let end = config.rows.map(|rows| start.saturating_add(rows));
        let started = tokio::time::Instant::now();
        let batches = futures::stream::unfold(start, move |next| {
            let config = config.clone();
            let cursor = Arc::clone(&cursor);
            let runtime = Arc::clone(&runtime);
            async move {
                if let Some(rate) = config.rows_per_second {
                    // Due time of this batch on a fixed schedule, so pacing
                    // does not drift with the time spent downstream.
                    let due = started + Duration::from_secs_f64((next - start) as f64 / rate);
                    tokio::time::sleep_until(due).await;
                }
                // A stop request ends the stream between batches, never inside one.
                if runtime.control().stop_requested() {
                    return None;
                }
                let remaining = end.map_or(u64::MAX, |end| end.saturating_sub(next));
                let count = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(config.batch_size);
                if count == 0 {
                    return None;
                }
                let batch = generate_batch(&config, next, count);
                let next = next + count as u64;
                cursor.next_row.store(next, Ordering::SeqCst);
                Some((batch, next))
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            batches,
        ))
    }
}

/// The generator as a table: unbounded unless `rows` is set.
#[derive(Debug, Clone)]
pub struct GeneratorTable {
    config: GeneratorConfig,
}

impl GeneratorTable {
    pub fn try_new(config: GeneratorConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }
}

#[async_trait]
impl TableProvider for GeneratorTable {
    fn schema(&self) -> SchemaRef {
        telemetry_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let runtime = JobRuntime::from_config(state.config())?;
        let cursor = Arc::new(GeneratorCursor {
            id: runtime.next_operator_id(KIND)?,
            start_row: AtomicU64::new(0),
            next_row: AtomicU64::new(0),
        });
        runtime
            .state()
            .register(&(Arc::clone(&cursor) as Arc<dyn StatefulOperator>))?;
        let schema = telemetry_schema();
        let partition = GeneratorPartition {
            config: self.config.clone(),
            cursor,
            runtime,
            schema: Arc::clone(&schema),
        };
        // Declaring the order by `seq` lets `OVER (ORDER BY seq ...)` run on
        // the unbounded stream without a (blocking) sort.
        let seq_position = match projection {
            None => Some(0),
            Some(indices) => indices.iter().position(|&i| i == 0),
        };
        let ordering = seq_position
            .and_then(|i| {
                LexOrdering::new([PhysicalSortExpr::new_default(Arc::new(Column::new(
                    "seq", i,
                )))])
            })
            .into_iter();
        Ok(Arc::new(StreamingTableExec::try_new(
            schema,
            vec![Arc::new(partition)],
            projection,
            ordering,
            self.config.rows.is_none(),
            limit,
        )?))
    }
}

/// `equipoise_generator(['rows=..., seed=..., batch_size=..., ...'])`.
#[derive(Debug, Default)]
pub struct GeneratorTableFunction;

impl TableFunctionImpl for GeneratorTableFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let config = match args.exprs() {
            [] => GeneratorConfig::default(),
            [Expr::Literal(ScalarValue::Utf8(Some(text)), _)] => {
                GeneratorConfig::from_options(text)?
            }
            _ => {
                return plan_err!(
                    "{FUNCTION_NAME} takes one optional string of options, \
                     e.g. {FUNCTION_NAME}('rows=1000, seed=7')"
                );
            }
        };
        Ok(Arc::new(GeneratorTable::try_new(config)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::datatypes::Int64Type;

    #[test]
    fn rows_do_not_depend_on_batch_size() -> Result<()> {
        let config = GeneratorConfig::default();
        let whole = generate_batch(&config, 0, 1000)?;
        let pieces: Vec<RecordBatch> = (0..10)
            .map(|i| generate_batch(&config, i * 100, 100))
            .collect::<Result<_>>()?;
        assert_eq!(whole, concat_batches(&telemetry_schema(), &pieces)?);
        Ok(())
    }

    #[test]
    fn seeds_change_the_data() -> Result<()> {
        let a = generate_batch(&GeneratorConfig::default(), 0, 100)?;
        let b = generate_batch(
            &GeneratorConfig {
                seed: 7,
                ..Default::default()
            },
            0,
            100,
        )?;
        assert_ne!(a.column(3), b.column(3));
        assert_eq!(a.column(0), b.column(0));
        Ok(())
    }

    fn fault_share(config: &GeneratorConfig, start: u64, count: usize) -> Result<f64> {
        let batch = generate_batch(config, start, count)?;
        let labels = batch.column(8).as_primitive::<Int64Type>();
        Ok(labels.values().iter().sum::<i64>() as f64 / count as f64)
    }

    #[test]
    fn class_mix_shifts_at_the_documented_row() -> Result<()> {
        let config = GeneratorConfig::default();
        let before = fault_share(&config, 0, 60_000)?;
        let after = fault_share(&config, 60_000, 60_000)?;
        assert!((before - 0.02).abs() < 0.003, "share before shift {before}");
        assert!((after - 0.035).abs() < 0.004, "share after shift {after}");
        Ok(())
    }

    /// Mean of column `col` over faults minus over normal rows.
    fn fault_effect(config: &GeneratorConfig, start: u64, col: usize) -> Result<f64> {
        let batch = generate_batch(config, start, 50_000)?;
        let labels = batch.column(8).as_primitive::<Int64Type>();
        let values = batch
            .column(col)
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        let (mut sums, mut counts) = ([0.0; 2], [0.0; 2]);
        for (label, value) in labels.values().iter().zip(values.values()) {
            let k = usize::from(*label == 1);
            sums[k] += value;
            counts[k] += 1.0;
        }
        Ok(sums[1] / counts[1] - sums[0] / counts[0])
    }

    #[test]
    fn concept_shift_moves_the_fault_signature() -> Result<()> {
        let config = GeneratorConfig::default();
        let (temperature, pressure) = (3, 5);
        // Expected effects: 9 x E[s] = 9 and -1.0 x E[s] = -1.0, with E[s] = 1.
        assert!(fault_effect(&config, 0, temperature)? > 7.0);
        assert!(fault_effect(&config, 0, pressure)?.abs() < 0.2);
        assert!(fault_effect(&config, 130_000, temperature)?.abs() < 1.0);
        assert!(fault_effect(&config, 130_000, pressure)? < -0.8);
        Ok(())
    }

    #[test]
    fn options_override_defaults_and_reject_nonsense() -> Result<()> {
        let config = GeneratorConfig::from_options("rows=10, seed=3, batch_size=4")?;
        assert_eq!(
            (config.rows, config.seed, config.batch_size),
            (Some(10), 3, 4)
        );
        assert!(GeneratorConfig::from_options("batch_size=0").is_err());
        assert!(GeneratorConfig::from_options("minority_share=2").is_err());
        assert!(GeneratorConfig::from_options("speed=9").is_err());
        Ok(())
    }
}
