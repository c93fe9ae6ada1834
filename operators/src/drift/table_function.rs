//! `drift_monitor` as a SQL table function:
//! `SELECT * FROM drift_monitor('table_or_view', 'label' [, 'prediction' [, 'options']])`.
//! An empty prediction argument (`''`) watches the class mix only, which
//! leaves room for options without a prediction column.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;

use super::exec::{DriftMonitorStage, KIND};
use super::monitor::DriftMonitorOptions;
use crate::stage::StageTable;
use crate::table_args::{resolve_table, string_arg};

#[derive(Debug, Default)]
pub struct DriftMonitorFunction;

impl TableFunctionImpl for DriftMonitorFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if !(2..=4).contains(&exprs.len()) {
            return plan_err!(
                "{KIND} expects ('table_or_view', 'label_column' [, 'prediction_column' \
                 [, 'options']]), got {} argument(s)",
                exprs.len()
            );
        }
        let table = string_arg(KIND, exprs, 0, "table or view")?;
        let label = string_arg(KIND, exprs, 1, "label column")?;
        let prediction = match exprs.len() {
            3.. => Some(string_arg(KIND, exprs, 2, "prediction column")?),
            _ => None,
        }
        .filter(|p| !p.is_empty());
        let options = match exprs.len() {
            4 => string_arg(KIND, exprs, 3, "options")?,
            _ => String::new(),
        };
        let options = DriftMonitorOptions::parse(&label, prediction.as_deref(), &options)?;
        let provider = resolve_table(KIND, &args, &table)?;
        let input = LogicalPlanBuilder::scan(table.as_str(), provider_as_source(provider), None)?
            .build()?;
        let stage = DriftMonitorStage::try_new(options)?;
        Ok(Arc::new(StageTable::try_new(input, Arc::new(stage))?))
    }
}
