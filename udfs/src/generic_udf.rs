//! What the three generic aggregate wrappers (`ConfusionMetricUdf`,
//! `ClassStatisticUdf`, `ScoreMetricUdf`) share: their trait boilerplate and
//! the list-encoded partial state.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, ListArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::Field;
use datafusion::common::{Result, internal_err};

/// Whether `row` passes an aggregate's `FILTER (WHERE ...)`.
pub(crate) fn row_selected(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(row) && f.value(row))
}

/// `GroupsAccumulator::merge_batch` for per-group states: grow `groups` to
/// `total_num_groups`, then fold state row `row` into its group.
pub(crate) fn merge_groups<G: Default>(
    groups: &mut Vec<G>,
    group_indices: &[usize],
    total_num_groups: usize,
    mut merge_row: impl FnMut(&mut G, usize) -> Result<()>,
) -> Result<()> {
    groups.resize_with(total_num_groups, G::default);
    for (row, g) in group_indices.iter().enumerate() {
        merge_row(&mut groups[*g], row)?;
    }
    Ok(())
}

/// `GroupsAccumulator::convert_to_state`, which these accumulators do not
/// support (`supports_convert_to_state()` is false, so DataFusion never calls
/// it).
pub(crate) fn no_convert_to_state(name: &str) -> Result<Vec<ArrayRef>> {
    internal_err!("{name} does not convert rows to state")
}

/// One list column per state column: group `g` owns the values between
/// `offsets[g]` and `offsets[g + 1]` of every column.
pub(crate) fn list_state(
    offsets: &OffsetBuffer<i32>,
    columns: Vec<ArrayRef>,
) -> Result<Vec<ArrayRef>> {
    columns
        .into_iter()
        .map(|values| -> Result<ArrayRef> {
            let field = Arc::new(Field::new_list_field(values.data_type().clone(), true));
            Ok(Arc::new(ListArray::try_new(
                field,
                offsets.clone(),
                values,
                None,
            )?))
        })
        .collect()
}

/// Debug, equality, hashing, `Default` (a user-defined signature, since each
/// wrapper coerces its own arguments) and `udaf()` for a wrapper
/// `$udf<$param: $bound>` with fields `signature` and `marker`.
macro_rules! generic_udf_boilerplate {
    ($udf:ident, $bound:ident) => {
        impl<P> std::fmt::Debug for $udf<P> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($udf)).finish_non_exhaustive()
            }
        }

        impl<P> PartialEq for $udf<P> {
            fn eq(&self, other: &Self) -> bool {
                self.signature == other.signature
            }
        }

        impl<P> Eq for $udf<P> {}

        impl<P> std::hash::Hash for $udf<P> {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.signature.hash(state);
            }
        }

        impl<P: $bound> Default for $udf<P> {
            fn default() -> Self {
                Self {
                    signature: datafusion::logical_expr::Signature::user_defined(
                        datafusion::logical_expr::Volatility::Immutable,
                    ),
                    marker: std::marker::PhantomData,
                }
            }
        }

        impl<P: $bound> $udf<P> {
            pub fn udaf() -> std::sync::Arc<datafusion::logical_expr::AggregateUDF> {
                std::sync::Arc::new(datafusion::logical_expr::AggregateUDF::from(Self::default()))
            }
        }
    };
}

pub(crate) use generic_udf_boilerplate;
