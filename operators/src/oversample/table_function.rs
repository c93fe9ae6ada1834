//! The oversamplers as SQL table functions:
//! `SELECT * FROM smote('table_or_view', 'label_column' [, 'k=5, seed=7'])`.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;

use super::{Method, OversampleOptions, OversampleStage};
use crate::stage::StageTable;
use crate::table_args::{resolve_table, string_arg};

/// `method` as a table function.
#[derive(Debug)]
pub struct OversampleFunction {
    method: Method,
}

impl OversampleFunction {
    pub fn new(method: Method) -> Self {
        Self { method }
    }
}

/// Every oversampler's table function, by SQL name.
pub fn table_functions() -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    Method::ALL
        .iter()
        .map(|&m| {
            (
                m.name(),
                Arc::new(OversampleFunction::new(m)) as Arc<dyn TableFunctionImpl>,
            )
        })
        .collect()
}

impl TableFunctionImpl for OversampleFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let name = self.method.name();
        let exprs = args.exprs();
        if !(2..=3).contains(&exprs.len()) {
            return plan_err!(
                "{name} expects ('table_or_view', 'label_column' [, 'options']), got {} \
                 argument(s)",
                exprs.len()
            );
        }
        let table = string_arg(name, exprs, 0, "table or view")?;
        let label = string_arg(name, exprs, 1, "label column")?;
        let options = match exprs.len() {
            3 => string_arg(name, exprs, 2, "options")?,
            _ => String::new(),
        };
        let options = OversampleOptions::parse(self.method, &label, &options)?;
        let provider = resolve_table(name, &args, &table)?;
        let input = LogicalPlanBuilder::scan(table.as_str(), provider_as_source(provider), None)?
            .build()?;
        let stage = OversampleStage::try_new(self.method, options)?;
        Ok(Arc::new(StageTable::try_new(input, Arc::new(stage))?))
    }
}
