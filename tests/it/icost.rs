//! The `icost` operator through the library API: the streaming semantics
//! checked row by row against a direct model of what docs/icost.md
//! promises (window before the batch, causal decayed IR, ties to the older
//! row), the Prometheus families, and arrival-order independence on tables.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::Result;
use datafusion::physical_plan::ExecutionPlanProperties;
use datafusion::physical_plan::execution_plan::Boundedness;
use datafusion::prelude::{CsvReadOptions, SessionConfig, SessionContext};
use equipoise::operators::{DataFrameStageExt, IcostOptions};
use futures::StreamExt;

use super::common::{explain_analyze, gathered};

const FEATURES: [&str; 4] = [
    "temperature_c",
    "vibration_mm_s",
    "pressure_bar",
    "current_a",
];
const COSTS: [f64; 4] = [0.30, 0.50, 0.70, 0.10];

/// (features if complete, label if any, weight, category) of each row.
type Row = (Option<Vec<f64>>, Option<i64>, Option<f64>, Option<String>);

fn rows_of(batch: &RecordBatch) -> Vec<Row> {
    let label = batch.column(4).as_primitive::<Int64Type>();
    let weight = batch.column(5).as_primitive::<Float64Type>();
    let category = batch.column(6).as_string::<i32>();
    (0..batch.num_rows())
        .map(|r| {
            let features: Option<Vec<f64>> = (0..4)
                .map(|c| {
                    let column = batch.column(c).as_primitive::<Float64Type>();
                    (column.is_valid(r) && column.value(r).is_finite()).then(|| column.value(r))
                })
                .collect();
            (
                features,
                label.is_valid(r).then(|| label.value(r)),
                weight.is_valid(r).then(|| weight.value(r)),
                category.is_valid(r).then(|| category.value(r).to_string()),
            )
        })
        .collect()
}

/// The documented streaming semantics, computed directly.
struct Model {
    window: Vec<(Vec<f64>, i64)>,
    capacity: usize,
    decayed: BTreeMap<i64, f64>,
    decay: f64,
    k: usize,
    /// kDN of weighed rows, by arrival.
    kdn: Vec<(usize, f64)>,
    arrived: usize,
}

impl Model {
    fn expect(&mut self, batch: &[Row]) -> Vec<(Option<f64>, Option<&'static str>)> {
        let reference = self.window.clone();
        let mut out = Vec::new();
        for (i, (features, label, _, _)) in batch.iter().enumerate() {
            let Some(label) = *label else {
                out.push((None, None));
                continue;
            };
            for w in self.decayed.values_mut() {
                *w *= self.decay;
            }
            *self.decayed.entry(label).or_insert(0.0) += 1.0;
            let largest = self
                .decayed
                .iter()
                .max_by(|a, b| a.1.total_cmp(b.1).then(a.0.cmp(b.0)))
                .map(|(c, _)| *c);
            if Some(label) == largest {
                out.push((Some(1.0), None));
                continue;
            }
            let total: f64 = self.decayed.values().sum();
            let own = self.decayed[&label];
            let ratio = (total - own) / own;
            match features {
                Some(x) if reference.len() >= self.k => {
                    let mut by_distance: Vec<(f64, usize)> = reference
                        .iter()
                        .enumerate()
                        .map(|(j, (y, _))| {
                            (x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum(), j)
                        })
                        .collect();
                    by_distance.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                    let m = by_distance[..self.k]
                        .iter()
                        .filter(|(_, j)| reference[*j].1 != label)
                        .count();
                    let (cost, name) = match m {
                        0 => (COSTS[0], "pure"),
                        m if (m as f64 / self.k as f64) < 0.5 => (COSTS[1], "safe"),
                        m if m < self.k => (COSTS[2], "border"),
                        _ => (COSTS[3], "outlier"),
                    };
                    self.kdn.push((self.arrived + i, m as f64 / self.k as f64));
                    out.push((Some(cost * ratio), Some(name)));
                }
                _ => out.push((Some(ratio), None)),
            }
        }
        for (features, label, _, _) in batch {
            if let (Some(x), Some(label)) = (features, label) {
                self.window.push((x.clone(), *label));
            }
        }
        let excess = self.window.len().saturating_sub(self.capacity);
        self.window.drain(..excess);
        self.arrived += batch.len();
        out
    }
}

/// 500-row batches bring about 10 fault rows each (the window is scanned
/// per query); 4,000-row batches bring more than the operator's tree
/// threshold (the window is indexed first). Both must give the same
/// documented semantics.
#[tokio::test]
async fn streaming_weights_follow_the_window_before_each_batch() -> Result<()> {
    streaming_weights_in_batches_of(500, 40).await
}

#[tokio::test]
async fn streaming_weights_follow_the_window_in_large_batches() -> Result<()> {
    streaming_weights_in_batches_of(4_000, 5).await
}

async fn streaming_weights_in_batches_of(batch_size: usize, batches: usize) -> Result<()> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    let runtime = equipoise::register_all(&ctx)?;
    let (window, half_life) = (2_000, 3_000.0);
    let df = ctx
        .sql(&format!(
            "SELECT {}, label FROM equipoise_generator('batch_size={batch_size}')",
            FEATURES.join(", ")
        ))
        .await?
        .icost(IcostOptions {
            window: Some(window),
            half_life_rows: half_life,
            ..IcostOptions::new("label")
        })?;
    let plan = df.clone().create_physical_plan().await?;
    assert!(matches!(plan.boundedness(), Boundedness::Unbounded { .. }));
    let mut stream = df.execute_stream().await?;
    let mut model = Model {
        window: Vec::new(),
        capacity: window,
        decayed: BTreeMap::new(),
        decay: 0.5f64.powf(1.0 / half_life),
        k: 5,
        kdn: Vec::new(),
        arrived: 0,
    };
    let (mut weighed, mut categorized) = (0usize, BTreeMap::<String, usize>::new());
    let mut most_in_a_batch = 0;
    for _ in 0..batches {
        let batch = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("the stream keeps flowing")
            .expect("an unbounded stream does not end")?;
        let rows = rows_of(&batch);
        let weighed_before = weighed;
        for (row, (weight, category)) in rows.iter().zip(model.expect(&rows)) {
            match (row.2, weight) {
                (Some(actual), Some(expected)) => assert!(
                    (actual - expected).abs() <= 1e-9 * expected.abs(),
                    "weight {actual} != {expected}"
                ),
                (actual, expected) => assert_eq!(actual, expected),
            }
            assert_eq!(row.3.as_deref(), category);
            if let Some(c) = category {
                weighed += 1;
                *categorized.entry(c.to_string()).or_default() += 1;
            }
        }
        most_in_a_batch = most_in_a_batch.max(weighed - weighed_before);
    }
    if batch_size >= 4_000 {
        assert!(
            most_in_a_batch >= 64,
            "the tree path ran: {most_in_a_batch}"
        );
    }
    // 20,000 rows at 2% faults: a few hundred weighed from neighbourhoods.
    assert!(weighed > 200, "{weighed}");
    assert!(categorized.len() >= 2, "{categorized:?}");

    // Prometheus: the category counters add up to what was emitted, and
    // the overlap gauge is the mean kDN of the weighed rows among the last
    // `window` rows.
    let counted = gathered(&runtime, "equipoise_complexity_rows_total", true);
    for (category, n) in &categorized {
        let metric = counted
            .iter()
            .find(|(l, _)| {
                l.get("category") == Some(category)
                    && l.get("class").map(String::as_str) == Some("1")
            })
            .map(|(_, v)| *v);
        assert_eq!(metric, Some(*n as f64), "{category}");
    }
    assert_eq!(
        counted.len(),
        8,
        "every category of every class seen is exported, zeros included"
    );
    let horizon = model.arrived - window;
    let recent: Vec<f64> = model
        .kdn
        .iter()
        .filter(|(at, _)| *at >= horizon)
        .map(|(_, v)| *v)
        .collect();
    let expected = recent.iter().sum::<f64>() / recent.len() as f64;
    let overlap = gathered(&runtime, "equipoise_minority_overlap", false);
    assert_eq!(overlap.len(), 1);
    assert!(
        (overlap[0].1 - expected).abs() < 1e-9,
        "{} != {expected}",
        overlap[0].1
    );
    Ok(())
}

#[tokio::test]
async fn table_weights_do_not_depend_on_the_order_rows_arrive_in() -> Result<()> {
    // Grid data: many equal distances, so ties decide neighbourhoods; the
    // merged order of four partitions varies, the weights must not.
    let ctx = SessionContext::new();
    equipoise::register_all(&ctx)?;
    ctx.register_csv("t", "tests/data/icost/grid_ties.csv", CsvReadOptions::new())
        .await?;
    let batches = ctx
        .sql("SELECT id, x0, x1, label FROM t")
        .await?
        .collect()
        .await?;
    let whole = datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches)?;
    let quarter = whole.num_rows() / 4;
    let parts: Vec<RecordBatch> = (0..4)
        .map(|i| {
            let end = if i == 3 {
                whole.num_rows()
            } else {
                (i + 1) * quarter
            };
            whole.slice(i * quarter, end - i * quarter)
        })
        .collect();
    let mut outputs = Vec::new();
    for order in [[0, 1, 2, 3], [3, 1, 0, 2]] {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
        equipoise::register_all(&ctx)?;
        let partitions = order.iter().map(|&i| vec![parts[i].clone()]).collect();
        let table = datafusion::datasource::MemTable::try_new(whole.schema(), partitions)?;
        ctx.register_table("p", Arc::new(table))?;
        let batches = ctx
            .sql(
                "SELECT id, sample_weight, complexity FROM icost('p', 'label', 'exclude=id') \
                 ORDER BY id",
            )
            .await?
            .collect()
            .await?;
        outputs.push(pretty_format_batches(&batches)?.to_string());
        let text = explain_analyze(&ctx, "SELECT * FROM icost('p', 'label', 'exclude=id')").await?;
        assert!(text.contains("IcostExec: method=neighbor"), "{text}");
        assert!(text.contains("weighed_rows="), "{text}");
    }
    assert_eq!(outputs[0], outputs[1]);
    Ok(())
}
