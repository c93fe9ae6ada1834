//! The documentation section and argument texts every function of this
//! crate shares (what `SHOW FUNCTIONS` and DataFusion's docs print).

use datafusion::logical_expr::{DocSection, Documentation};

pub(crate) const DOC_SECTION: DocSection = DocSection {
    include: true,
    label: "Imbalance Metrics",
    description: Some("Metrics that stay honest when one class is rare."),
};

pub(crate) fn metric_doc(description: &str, syntax: &str) -> Documentation {
    Documentation::builder(DOC_SECTION, description, syntax)
        .with_argument("label", "True class: integer, boolean or string column.")
        .with_argument("prediction", "Predicted class, of the same kind as label.")
        .build()
}

pub(crate) fn class_doc(description: &str, syntax: &str) -> Documentation {
    Documentation::builder(DOC_SECTION, description, syntax)
        .with_argument("label", "Class: integer, boolean or string column.")
        .build()
}

pub(crate) fn score_doc(description: &str, syntax: &str) -> Documentation {
    Documentation::builder(DOC_SECTION, description, syntax)
        .with_argument("label", "True class: integer, boolean or string column.")
        .with_argument(
            "score",
            "Numeric score, higher meaning more likely positive.",
        )
        .with_argument(
            "positive_class",
            "Optional constant: the positive class (default 1; required for strings).",
        )
        .build()
}
