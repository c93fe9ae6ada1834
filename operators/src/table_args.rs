//! What every Equipoise table function does with its arguments: string
//! literals, and the table or view the first one names.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableProvider};
use datafusion::common::{Result, ScalarValue, TableReference, plan_err};
use datafusion::logical_expr::Expr;
use futures::FutureExt;

/// Argument `i` of a table function, which must be a string literal.
pub fn string_arg(function: &str, exprs: &[Expr], i: usize, what: &str) -> Result<String> {
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
