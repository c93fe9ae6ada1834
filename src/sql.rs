//! `equipoise sql`: run SQL over files with every Equipoise function
//! registered.
//!
//! Statements are split by DataFusion's SQL parser (so a `;` inside a string
//! literal is not a separator) and run in order; the result of the last one
//! is written to the output. CSV and JSON output stream batch by batch, so a
//! query over an unbounded source writes rows as they come; the table format
//! needs every row to size its columns and collects first.

use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::arrow::util::pretty::pretty_format_batches_with_schema;
use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::dataframe::DataFrame;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::DFParser;
use datafusion::sql::sqlparser::dialect::dialect_from_str;
use futures::StreamExt;

use crate::JobRuntime;

/// How `equipoise sql` prints a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Json,
}

/// A `--table NAME=PATH` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableArg {
    pub name: String,
    pub path: String,
}

impl std::str::FromStr for TableArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((name, path)) if !name.trim().is_empty() && !path.is_empty() => Ok(Self {
                name: name.trim().to_string(),
                path: path.to_string(),
            }),
            _ => Err(format!("expected NAME=PATH, got '{s}'")),
        }
    }
}

/// Whether `plan` produces a finite result: its input is bounded, or a node
/// on its single-input spine stops after a fixed number of rows (`LIMIT`).
fn ends(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut node = Arc::clone(plan);
    loop {
        if !node.boundedness().is_unbounded() || node.fetch().is_some() {
            return true;
        }
        let children = node.children();
        match children.as_slice() {
            [child] => {
                let child = Arc::clone(child);
                node = child;
            }
            _ => return false,
        }
    }
}

/// Run every statement of `sql` but the last for its effect (DDL, views:
/// their rows are not kept), and plan the last.
pub async fn run_script_to_last(ctx: &SessionContext, sql: &str) -> Result<DataFrame> {
    let dialect_name = ctx.state().config_options().sql_parser.dialect.to_string();
    // Parsed in a block: the dialect is not `Send`, and a job's plan runs
    // on a spawned task.
    let mut statements = {
        let dialect = dialect_from_str(&dialect_name)
            .ok_or_else(|| DataFusionError::Plan(format!("unknown SQL dialect {dialect_name}")))?;
        DFParser::parse_sql_with_dialect(sql, dialect.as_ref())?
    };
    let Some(last) = statements.pop_back() else {
        return plan_err!("no SQL statement given");
    };
    for statement in statements {
        let plan = ctx.state().statement_to_plan(statement).await?;
        ctx.execute_logical_plan(plan).await?.collect().await?;
    }
    let plan = ctx.state().statement_to_plan(last).await?;
    ctx.execute_logical_plan(plan).await
}

/// Register `tables`, run `sql`, write the last result to `out`.
pub async fn run_sql(
    tables: &[TableArg],
    sql: &str,
    format: OutputFormat,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let ctx = crate::new_session(Arc::new(JobRuntime::default()))?;
    for table in tables {
        equipoise_connectors::register_file_table(&ctx, &table.name, &table.path).await?;
    }
    let df = run_script_to_last(&ctx, sql).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    match format {
        OutputFormat::Table => {
            // A table is printed once every row is in: that never happens on
            // an unbounded query, so say so instead of hanging.
            let plan = df.clone().create_physical_plan().await?;
            if !ends(&plan) {
                return plan_err!(
                    "the query reads an unbounded stream and would never finish as a table; \
                     add a LIMIT or use --format csv or --format json to stream rows"
                );
            }
            let batches = df.collect().await?;
            let table = pretty_format_batches_with_schema(schema, &batches)?;
            writeln!(out, "{table}")?;
        }
        OutputFormat::Csv => {
            let mut stream = df.execute_stream().await?;
            let mut writer = CsvWriterBuilder::new().with_header(true).build(&mut *out);
            let mut wrote_any = false;
            while let Some(batch) = stream.next().await {
                writer.write(&batch?)?;
                wrote_any = true;
            }
            drop(writer);
            if !wrote_any {
                // An empty result still has a header row.
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                writeln!(out, "{}", names.join(","))?;
            }
        }
        OutputFormat::Json => {
            let mut stream = df.execute_stream().await?;
            let mut writer = LineDelimitedWriter::new(&mut *out);
            while let Some(batch) = stream.next().await {
                writer.write(&batch?)?;
            }
            writer.finish()?;
        }
    }
    out.flush()?;
    Ok(())
}
