//! The oversamplers as SQL table functions:
//! `SELECT * FROM smote('table_or_view', 'label_column' [, 'k=5, seed=7'])`.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, TableReference, plan_err};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
use futures::FutureExt;

use super::{Method, OversampleOptions, OversampleStage};
use crate::stage::StageTable;

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

fn string_arg(function: &str, exprs: &[Expr], i: usize, what: &str) -> Result<String> {
    match exprs.get(i) {
        Some(Expr::Literal(ScalarValue::Utf8(Some(s)), _))
        | Some(Expr::Literal(ScalarValue::LargeUtf8(Some(s)), _))
        | Some(Expr::Literal(ScalarValue::Utf8View(Some(s)), _)) => Ok(s.clone()),
        _ => plan_err!(
            "{function}: argument {} ({what}) must be a string literal",
            i + 1
        ),
    }
}

/// Look a table or view up in the session's catalog. Memory catalogs (the
/// CLI's, and `SessionContext`'s default) answer at once; a catalog that
/// would have to wait is refused rather than blocked on.
pub fn resolve_table(
    function: &str,
    args: &TableFunctionArgs,
    name: &str,
) -> Result<Arc<dyn TableProvider>> {
    let session = args.session();
    let options = session.config_options();
    let reference = TableReference::from(name).resolve(
        &options.catalog.default_catalog,
        &options.catalog.default_schema,
    );
    let Some(schema) = session
        .catalog_list()
        .catalog(&reference.catalog)
        .and_then(|catalog| catalog.schema(&reference.schema))
    else {
        return plan_err!("{function}: table or view '{name}' not found");
    };
    match schema.table(&reference.table).now_or_never() {
        Some(Ok(Some(table))) => Ok(table),
        Some(Ok(None)) => plan_err!("{function}: table or view '{name}' not found"),
        Some(Err(e)) => Err(e),
        None => plan_err!(
            "{function}: the catalog of '{name}' cannot answer while planning; register the \
             table in a memory catalog"
        ),
    }
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
