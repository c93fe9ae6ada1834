//! `icost` as a SQL table function:
//! `SELECT * FROM icost('table_or_view', 'label_column' [, 'method=gini, k=7'])`.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;

use super::{IcostOptions, IcostStage};
use crate::stage::StageTable;
use crate::table_args::{resolve_table, string_arg};

#[derive(Debug, Default)]
pub struct IcostFunction;

impl TableFunctionImpl for IcostFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if !(2..=3).contains(&exprs.len()) {
            return plan_err!(
                "icost expects ('table_or_view', 'label_column' [, 'options']), got {} \
                 argument(s)",
                exprs.len()
            );
        }
        let table = string_arg("icost", exprs, 0, "table or view")?;
        let label = string_arg("icost", exprs, 1, "label column")?;
        let options = match exprs.len() {
            3 => string_arg("icost", exprs, 2, "options")?,
            _ => String::new(),
        };
        let options = IcostOptions::parse(&label, &options)?;
        let provider = resolve_table("icost", &args, &table)?;
        let input = LogicalPlanBuilder::scan(table.as_str(), provider_as_source(provider), None)?
            .build()?;
        let stage = IcostStage::try_new(options)?;
        Ok(Arc::new(StageTable::try_new(input, Arc::new(stage))?))
    }
}
