//! `advisor_report('table_or_view')`: runs the input to its end, then one
//! row per variant of every `train_detector` in it with what its advisor
//! found over the whole run (the per-variant table of the run summary).
//! Bounded input only.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, plan_err};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;

use super::exec::TrainExec;
use crate::report_exec::{Report, ReportKind, ReportTable};
use crate::runtime::JobRuntime;
use crate::table_args::{resolve_table, string_arg};

const NAME: &str = "advisor_report";

fn report_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("operator", DataType::Utf8, false),
        Field::new("variant", DataType::Utf8, false),
        Field::new("learns_synthetic", DataType::Boolean, false),
        Field::new("champion", DataType::Boolean, false),
        Field::new("champion_rows", DataType::Int64, false),
        Field::new("gmean", DataType::Float64, true),
        Field::new("minority_recall", DataType::Float64, true),
        Field::new("metric", DataType::Utf8, false),
        Field::new("score", DataType::Float64, true),
    ]))
}

/// The table function.
#[derive(Debug, Default)]
pub struct AdvisorReportFunction;

impl TableFunctionImpl for AdvisorReportFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.len() != 1 {
            return plan_err!(
                "{NAME} expects ('table_or_view'), got {} argument(s)",
                exprs.len()
            );
        }
        let table = string_arg(NAME, exprs, 0, "table or view")?;
        let provider = resolve_table(NAME, &args, &table)?;
        let input = LogicalPlanBuilder::scan(table.as_str(), provider_as_source(provider), None)?
            .build()?;
        Ok(Arc::new(ReportTable::new(
            NAME,
            input,
            report_schema(),
            "read the equipoise_variant_* metrics or the job's summary",
            Box::new(|state, plan| {
                let runtime = JobRuntime::from_config(state.config())?;
                let mut detectors = Vec::new();
                plan.apply(|node| {
                    if let Some(train) = node.downcast_ref::<TrainExec>() {
                        detectors.push(train.operator_id().to_string());
                    }
                    Ok(TreeNodeRecursion::Continue)
                })?;
                if detectors.is_empty() {
                    return plan_err!("{NAME}: no train_detector in the input");
                }
                Ok(Arc::new(AdvisorReportKind { detectors, runtime }) as Arc<dyn ReportKind>)
            }),
        )))
    }
}

/// The detectors whose reports are read once the input has ended.
#[derive(Debug)]
struct AdvisorReportKind {
    detectors: Vec<String>,
    runtime: Arc<JobRuntime>,
}

impl ReportKind for AdvisorReportKind {
    fn name(&self) -> &'static str {
        "AdvisorReportExec"
    }

    fn details(&self) -> String {
        format!("detectors={}", self.detectors.join(" "))
    }

    fn schema(&self) -> SchemaRef {
        report_schema()
    }

    fn start(&self) -> Box<dyn Report> {
        Box::new(AdvisorTable {
            detectors: self.detectors.clone(),
            runtime: Arc::clone(&self.runtime),
        })
    }
}

/// Reads the run's reports at the end; the rows themselves are not needed.
struct AdvisorTable {
    detectors: Vec<String>,
    runtime: Arc<JobRuntime>,
}

impl Report for AdvisorTable {
    fn absorb(&mut self, _batch: &RecordBatch) -> Result<()> {
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<RecordBatch> {
        let reports = self.runtime.report().operators()?;
        let mut rows = Vec::new();
        for id in &self.detectors {
            // A detector with one learner has nothing to compare.
            let Some(advisor) = reports.get(id).and_then(|r| r.advisor.as_ref()) else {
                continue;
            };
            for v in &advisor.variants {
                rows.push((id.as_str(), advisor, v));
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.2.variant.as_str()),
            )),
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|r| Some(r.2.learns_synthetic)),
            )),
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|r| Some(r.1.champion == r.2.variant)),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter()
                    .map(|r| i64::try_from(r.2.champion_rows).unwrap_or(i64::MAX)),
            )),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.2.gmean))),
            Arc::new(Float64Array::from_iter(
                rows.iter().map(|r| r.2.minority_recall),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.1.metric.as_str()),
            )),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.2.score))),
        ];
        Ok(RecordBatch::try_new(report_schema(), columns)?)
    }
}
