//! The SQL table functions `train_detector('t', 'label' [, 'options'])`
//! and `score_detector('t', 'model_path')`.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;

use super::score::ScoreStage;
use super::{DetectorOptions, TrainStage};
use crate::stage::StageTable;
use crate::table_args::{resolve_table, string_arg};

#[derive(Debug, Default)]
pub struct TrainDetectorFunction;

impl TableFunctionImpl for TrainDetectorFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if !(2..=3).contains(&exprs.len()) {
            return plan_err!(
                "train_detector expects ('table_or_view', 'label_column' [, 'options']), got {} \
                 argument(s)",
                exprs.len()
            );
        }
        let table = string_arg("train_detector", exprs, 0, "table or view")?;
        let label = string_arg("train_detector", exprs, 1, "label column")?;
        let options = match exprs.len() {
            3 => string_arg("train_detector", exprs, 2, "options")?,
            _ => String::new(),
        };
        let options = DetectorOptions::parse(&label, &options)?;
        let provider = resolve_table("train_detector", &args, &table)?;
        let input = LogicalPlanBuilder::scan(table.as_str(), provider_as_source(provider), None)?
            .build()?;
        let stage = TrainStage::try_new(options)?;
        Ok(Arc::new(StageTable::try_new(input, Arc::new(stage))?))
    }
}

#[derive(Debug, Default)]
pub struct ScoreDetectorFunction;

impl TableFunctionImpl for ScoreDetectorFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.len() != 2 {
            return plan_err!(
                "score_detector expects ('table_or_view', 'model_path'), got {} argument(s)",
                exprs.len()
            );
        }
        let table = string_arg("score_detector", exprs, 0, "table or view")?;
        let path = PathBuf::from(string_arg("score_detector", exprs, 1, "model path")?);
        let stage = ScoreStage::try_new(path)?;
        let provider = resolve_table("score_detector", &args, &table)?;
        let input = LogicalPlanBuilder::scan(table.as_str(), provider_as_source(provider), None)?
            .build()?;
        Ok(Arc::new(StageTable::try_new(input, Arc::new(stage))?))
    }
}
