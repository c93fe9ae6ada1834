//! `complexity_report('table_or_view', 'label_column' [, 'options'])`: one
//! row per class with its size, imbalance ratio, the data set's C2, the
//! class's mean kDN and N3, and its share of safe / borderline / rare /
//! outlier rows (Napierała–Stefanowski typology).
//!
//! Features are the numeric columns other than the label (options
//! `features=a b c` or `exclude=id`); `k` (default 5) sets the neighbours of
//! kDN and the typology. Every measure is over the rows with a label and
//! finite features (the others are counted in `incomplete_rows` of their
//! class, or skipped when unlabelled). Bounded input only: the report is
//! exact, over every row. Imbalance ratio of a class: largest class size
//! over its size. C2 (ECoL): 1 - 1/IR_L, IR_L = (C-1)/C * sum n_c/(n - n_c);
//! NULL with one class.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;

use super::{ClassedRows, DEFAULT_K, LabelledRows, Typology};
use crate::class_label::{ClassValue, for_each_class};
use crate::features::FeatureSelection;
use crate::knn::{Exclude, PointSet, search};
use crate::options::from_option_string;
use crate::report_exec::{Report, ReportKind, ReportTable};
use crate::table_args::{resolve_table, string_arg};

const NAME: &str = "complexity_report";

fn report_schema() -> SchemaRef {
    let float = |name: &str| Field::new(name, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        Field::new("class", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("incomplete_rows", DataType::Int64, false),
        float("imbalance_ratio"),
        float("c2"),
        float("kdn_mean"),
        float("n3"),
        float("safe"),
        float("borderline"),
        float("rare"),
        float("outlier"),
    ]))
}

/// The table function.
#[derive(Debug, Default)]
pub struct ComplexityReportFunction;

/// The keys of the report's options.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportKeys {
    k: Option<usize>,
    features: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
}

impl TableFunctionImpl for ComplexityReportFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if !(2..=3).contains(&exprs.len()) {
            return plan_err!(
                "{NAME} expects ('table_or_view', 'label_column' [, 'options']), got {} \
                 argument(s)",
                exprs.len()
            );
        }
        let table = string_arg(NAME, exprs, 0, "table or view")?;
        let label = string_arg(NAME, exprs, 1, "label column")?;
        let text = match exprs.len() {
            3 => string_arg(NAME, exprs, 2, "options")?,
            _ => String::new(),
        };
        let keys: ReportKeys = from_option_string(NAME, &text)?;
        let selection = FeatureSelection::from_options(keys.features, keys.exclude)?;
        let k = keys.k.unwrap_or(DEFAULT_K);
        if k == 0 {
            return plan_err!("{NAME}: k must be at least 1");
        }
        let provider = resolve_table(NAME, &args, &table)?;
        let input = LogicalPlanBuilder::scan(table.as_str(), provider_as_source(provider), None)?
            .build()?;
        let schema = Arc::clone(input.schema().inner());
        let columns = selection.resolve(NAME, &schema, &label, &[])?;
        let kind = Arc::new(ComplexityReportKind {
            label_index: columns.label_index,
            feature_indices: columns.feature_indices,
            k,
        });
        Ok(Arc::new(ReportTable::new(
            NAME,
            input,
            report_schema(),
            "use kdn_mean(...) or n3(...) OVER a window, or the icost operator's complexity \
             metrics",
            Box::new(move |_, _| Ok(Arc::clone(&kind) as Arc<dyn ReportKind>)),
        )))
    }
}

/// The report's settings; a fresh [`ComplexityTally`] per execution.
#[derive(Debug)]
struct ComplexityReportKind {
    label_index: usize,
    feature_indices: Vec<usize>,
    k: usize,
}

impl ReportKind for ComplexityReportKind {
    fn name(&self) -> &'static str {
        "ComplexityReportExec"
    }

    fn details(&self) -> String {
        format!("k={}, features={}", self.k, self.feature_indices.len())
    }

    fn schema(&self) -> SchemaRef {
        report_schema()
    }

    fn start(&self) -> Box<dyn Report> {
        Box::new(ComplexityTally {
            rows: LabelledRows::new(self.feature_indices.len()),
            labelled: Default::default(),
            label_index: self.label_index,
            feature_indices: self.feature_indices.clone(),
            k: self.k,
        })
    }
}

/// Every labelled row with its features, and the rows per class.
struct ComplexityTally {
    rows: LabelledRows,
    labelled: std::collections::BTreeMap<ClassValue, i64>,
    label_index: usize,
    feature_indices: Vec<usize>,
    k: usize,
}

impl Report for ComplexityTally {
    fn absorb(&mut self, batch: &RecordBatch) -> Result<()> {
        let label = batch.column(self.label_index);
        let features: Vec<ArrayRef> = self
            .feature_indices
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        self.rows.extend(label, &features)?;
        let labelled = &mut self.labelled;
        for_each_class(label, |_, class| {
            if let Some(class) = class {
                *labelled.entry(class).or_insert(0) += 1;
            }
        })
    }

    fn finish(self: Box<Self>) -> Result<RecordBatch> {
        report(&self.rows, &self.labelled, self.k)
    }
}

/// Per-class sums of the neighbourhood measures.
#[derive(Debug, Clone, Default)]
struct ClassSums {
    rows: usize,
    disagreeing: usize,
    nn_errors: usize,
    types: [usize; 4],
}

fn class_sums(rows: &ClassedRows, classes: usize, k: usize) -> (Vec<ClassSums>, usize) {
    let mut sums = vec![ClassSums::default(); classes];
    let set = PointSet::from_rows(&rows.features, rows.dim);
    let self_index: Vec<u32> = (0..rows.len() as u32).collect();
    let found = search(&set, &rows.features, k, Exclude::SelfIndex(&self_index));
    let k_used = found.k();
    for i in 0..rows.len() {
        let own = rows.class_of[i];
        let s = &mut sums[own as usize];
        s.rows += 1;
        if k_used == 0 {
            continue;
        }
        let neighbours = found.indices(i);
        let m = neighbours
            .iter()
            .filter(|&&j| rows.class_of[j as usize] != own)
            .count();
        s.disagreeing += m;
        s.nn_errors += usize::from(rows.class_of[neighbours[0] as usize] != own);
        s.types[Typology::of(m, k_used) as usize] += 1;
    }
    (sums, k_used)
}

/// C2 of ECoL over class sizes; `None` with fewer than two classes.
pub fn c2(sizes: &[f64]) -> Option<f64> {
    let c = sizes.len() as f64;
    if sizes.len() < 2 {
        return None;
    }
    let n: f64 = sizes.iter().sum();
    let ir_l = (c - 1.0) / c * sizes.iter().map(|s| s / (n - s)).sum::<f64>();
    Some(1.0 - 1.0 / ir_l)
}

fn report(
    rows: &LabelledRows,
    labelled: &std::collections::BTreeMap<ClassValue, i64>,
    k: usize,
) -> Result<RecordBatch> {
    let (classed, classes) = rows.canonical();
    let (sums, k_used) = class_sums(&classed, classes.len(), k);
    let size_of = |class: &ClassValue| {
        classes
            .binary_search(class)
            .map_or(0, |rank| sums[rank].rows)
    };
    let sizes: Vec<f64> = labelled.keys().map(|c| size_of(c) as f64).collect();
    let present: Vec<f64> = sizes.iter().copied().filter(|&s| s > 0.0).collect();
    let largest = present.iter().copied().fold(0.0, f64::max);
    let c2 = c2(&present);
    let mut class_names = Vec::new();
    let (mut n_rows, mut incomplete) = (Vec::new(), Vec::new());
    let (mut ir, mut c2s, mut kdn, mut n3) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut shares: [Vec<Option<f64>>; 4] = Default::default();
    for (class, &all) in labelled {
        let s = classes
            .binary_search(class)
            .map(|rank| sums[rank].clone())
            .unwrap_or_default();
        let n = s.rows as f64;
        let measured = s.rows > 0 && k_used > 0;
        class_names.push(class.to_string());
        n_rows.push(s.rows as i64);
        incomplete.push(all - s.rows as i64);
        ir.push((s.rows > 0).then(|| largest / n));
        c2s.push(c2);
        kdn.push(measured.then(|| s.disagreeing as f64 / (n * k_used as f64)));
        n3.push(measured.then(|| s.nn_errors as f64 / n));
        for (t, share) in shares.iter_mut().enumerate() {
            share.push(measured.then(|| s.types[t] as f64 / n));
        }
    }
    let [safe, borderline, rare, outlier] = shares;
    let float = |v: Vec<Option<f64>>| Arc::new(Float64Array::from(v)) as ArrayRef;
    Ok(RecordBatch::try_new(
        report_schema(),
        vec![
            Arc::new(StringArray::from(class_names)),
            Arc::new(Int64Array::from(n_rows)),
            Arc::new(Int64Array::from(incomplete)),
            float(ir),
            float(c2s),
            float(kdn),
            float(n3),
            float(safe),
            float(borderline),
            float(rare),
            float(outlier),
        ],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c2_is_zero_when_balanced_and_grows_with_imbalance() {
        assert_eq!(c2(&[5.0, 5.0]), Some(0.0));
        // Binary: IR_L = (n1/n0 + n0/n1) / 2 = (9 + 1/9) / 2.
        let expected = 1.0 - 1.0 / ((9.0 + 1.0 / 9.0) / 2.0);
        assert!((c2(&[90.0, 10.0]).unwrap_or(f64::NAN) - expected).abs() < 1e-15);
        assert_eq!(c2(&[3.0]), None);
    }
}
