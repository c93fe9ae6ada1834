//! `equipoise sql`, spawned as a user would run it.

use std::io::Write;

use super::common::{equipoise, shared_data, stderr, stdout};

fn write_file(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, content).expect("write fixture");
    path.display().to_string()
}

/// An error is one line on stderr naming `cause`, a non-zero exit, and
/// nothing on stdout.
fn assert_one_line_error(args: &[&str], cause: &str) {
    let output = equipoise(args);
    let err = stderr(&output);
    assert!(!output.status.success(), "{args:?} succeeded");
    assert_eq!(err.lines().count(), 1, "{args:?} printed {err:?}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains(cause),
        "{args:?}: expected {cause:?} in {err:?}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert!(stdout(&output).is_empty());
}

#[test]
fn readme_example_counts_pc1_defects() {
    let Some(pc1) = shared_data("defect/nasa_mdp_pc1.csv") else {
        return;
    };
    let table = format!("t={}", pc1.display());
    let output = equipoise(&[
        "sql",
        "--table",
        &table,
        "--format",
        "csv",
        "SELECT label, count(*) AS n FROM t GROUP BY label ORDER BY label",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "label,n\n0,1031\n1,76\n");
}

#[test]
fn empty_csv_fields_are_null() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write_file(&dir, "t.csv", b"x,name,label\n1,a,0\n,b,1\n3,,0\n");
    let output = equipoise(&[
        "sql",
        "--table",
        &format!("t={csv}"),
        "--format",
        "csv",
        "SELECT count(*) AS n, count(x) AS nx, count(name) AS nname, sum(x) AS sx FROM t",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "n,nx,nname,sx\n3,2,2,4\n");
}

#[test]
fn reads_gzip_csv_parquet_and_ndjson() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gz_path = dir.path().join("t.csv.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz_path).expect("create gz"),
        flate2::Compression::default(),
    );
    gz.write_all(b"label,x\n0,1.5\n1,2.5\n1,3.0\n")
        .expect("write gz");
    gz.finish().expect("finish gz");
    let json = write_file(
        &dir,
        "t.ndjson",
        b"{\"label\": 1, \"x\": 2.0}\n{\"label\": 0, \"x\": 4.0}\n",
    );
    let parquet = dir.path().join("t.parquet").display().to_string();

    // Parquet written by the CLI itself (COPY TO), then read back.
    let gz_table = format!("g={}", gz_path.display());
    let copy = equipoise(&[
        "sql",
        "--table",
        &gz_table,
        &format!("COPY (SELECT * FROM g) TO '{parquet}' STORED AS PARQUET"),
    ]);
    assert!(copy.status.success(), "{}", stderr(&copy));

    let output = equipoise(&[
        "sql",
        "--table",
        &gz_table,
        "--table",
        &format!("p={parquet}"),
        "--table",
        &format!("j={json}"),
        "--format",
        "csv",
        "SELECT (SELECT sum(x) FROM g) AS g, (SELECT sum(x) FROM p) AS p, \
         (SELECT sum(x) FROM j WHERE label = 1) AS j",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "g,p,j\n7.0,7.0,2.0\n");
}

#[test]
fn statements_run_in_order_and_the_last_is_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sql = write_file(
        &dir,
        "q.sql",
        b"CREATE VIEW v AS SELECT 'a;b' AS s, 2 AS n;\n\
          CREATE VIEW w AS SELECT s, n * 10 AS n FROM v;\n\
          SELECT s, n FROM w;\n",
    );
    let output = equipoise(&["sql", "-f", &sql, "--format", "json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "{\"s\":\"a;b\",\"n\":20}\n");
}

#[test]
fn table_format_is_the_default() {
    let output = equipoise(&["sql", "SELECT 1 AS one, 'x' AS two"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "+-----+-----+\n| one | two |\n+-----+-----+\n| 1   | x   |\n+-----+-----+\n"
    );
}

#[test]
fn a_limit_makes_an_unbounded_query_printable_as_a_table() {
    let output = equipoise(&["sql", "SELECT seq FROM equipoise_generator() LIMIT 2"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "+-----+\n| seq |\n+-----+\n| 0   |\n| 1   |\n+-----+\n"
    );
}

#[test]
fn csv_streams_rows_of_an_unbounded_query_with_a_limit() {
    let output = equipoise(&[
        "sql",
        "--format",
        "csv",
        "SELECT seq, label FROM equipoise_generator('batch_size=10') LIMIT 3",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "seq,label\n0,0\n1,0\n2,0\n");
}

#[test]
fn empty_results_keep_their_header() {
    let output = equipoise(&["sql", "--format", "csv", "SELECT 1 AS a WHERE false"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "a\n");
}

#[test]
fn errors_are_one_line_with_a_non_zero_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_file(&dir, "good.csv", b"a,b\n1,2\n3,4\n");
    // Schema inference reads the first rows; the bad line comes later.
    let mut bad_body = String::from("a,b\n");
    for i in 0..2000 {
        bad_body.push_str(&format!("{i},{i}\n"));
    }
    bad_body.push_str("1,2,3\n");
    let bad = write_file(&dir, "bad.csv", bad_body.as_bytes());
    let good_table = format!("t={good}");

    assert_one_line_error(
        &["sql", "--table", "t=/nonexistent/x.csv", "SELECT 1"],
        "file not found: /nonexistent/x.csv",
    );
    assert_one_line_error(&["sql", "SELECT * FROM nowhere"], "nowhere' not found");
    assert_one_line_error(
        &["sql", "--table", &good_table, "SELECT c FROM t"],
        "No field named c",
    );
    assert_one_line_error(&["sql", "SELEC 1"], "SQL error");
    assert_one_line_error(
        &[
            "sql",
            "--table",
            &format!("t={bad}"),
            "SELECT sum(a) FROM t",
        ],
        "incorrect number of fields",
    );
    assert_one_line_error(
        &["sql", "--table", "t=data.xlsx", "SELECT 1"],
        "cannot tell the format",
    );
    assert_one_line_error(&["sql", "-f", "/nonexistent/q.sql"], "cannot read SQL file");
    assert_one_line_error(&["sql", "  ;  "], "no SQL statement");
    assert_one_line_error(
        &["sql", "SELECT * FROM equipoise_generator()"],
        "unbounded stream and would never finish as a table",
    );
    // DataFusion's own message names the blocking operator; it stays short.
    let output = equipoise(&[
        "sql",
        "SELECT label, count(*) FROM equipoise_generator() GROUP BY label",
    ]);
    let err = stderr(&output);
    assert!(!output.status.success());
    assert!(
        err.contains("Cannot execute pipeline breaking queries"),
        "{err}"
    );
    assert!(err.lines().count() == 1 && err.len() < 500, "{err}");
}

#[test]
fn oversampling_table_functions_work_on_csv_files() {
    let table = "t=tests/data/oversampling/binary_overlap.csv";
    let output = equipoise(&[
        "sql",
        "--table",
        table,
        "--format",
        "csv",
        "CREATE VIEW b AS SELECT * FROM qc_smote('t', 'label', 'seed=3'); \
         SELECT label, is_synthetic, count(*) AS n FROM b GROUP BY 1, 2 ORDER BY 1, 2",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "label,is_synthetic,n\n0,false,540\n1,false,60\n1,true,480\n"
    );
    for (options, cause) in [
        ("k=0", "qc_smote: k must be at least 1"),
        ("colour=red", "qc_smote: unknown option 'colour'"),
        (
            "ratio=2, strategy=all",
            "qc_smote: give either strategy or ratio",
        ),
    ] {
        let sql = format!("SELECT * FROM qc_smote('t', 'label', '{options}')");
        assert_one_line_error(&["sql", "--table", table, &sql], cause);
    }
    assert_one_line_error(
        &["sql", "--table", table, "SELECT * FROM smote('t', 'class')"],
        "smote: label column 'class' not found",
    );
}
