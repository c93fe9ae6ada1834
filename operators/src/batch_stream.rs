//! The output stream every batch-at-a-time operator shares: pull a batch,
//! hand it (with the control signals that arrived meanwhile) to the
//! operator's processor, emit what it returns; at the end of input, emit
//! what `finish` returns and then any deferred batches one per poll. An
//! error ends the stream after it is reported.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{Result, exec_err, internal_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
};
use futures::StreamExt;
use prometheus::Histogram;

use crate::metrics::SharedMetrics;
use crate::runtime::{
    ControlReceiver, ControlSignal, JobRuntime, OperatorSnapshot, StatefulOperator,
};
use crate::sync::lock;

/// The `ExecutionPlan` methods every single-stream operator shares: its
/// `properties` and `input` fields, one input partition (the operator's
/// state is global to the stream, and the stream's order matters), no
/// benefit from repartitioning, no expressions. `$keeps_order`: whether the
/// output keeps the input's order. Names resolve where it is used, so the
/// operator's module imports `Arc`, `Distribution`, `ExecutionPlan`,
/// `PhysicalExpr`, `PlanProperties`, `Result` and `TreeNodeRecursion`.
macro_rules! single_stream_plan_methods {
    (keeps_order: $keeps_order:expr) => {
        fn properties(&self) -> &Arc<PlanProperties> {
            &self.properties
        }

        fn required_input_distribution(&self) -> Vec<Distribution> {
            vec![Distribution::SinglePartition]
        }

        fn benefits_from_input_partitioning(&self) -> Vec<bool> {
            vec![false]
        }

        fn maintains_input_order(&self) -> Vec<bool> {
            vec![$keeps_order]
        }

        fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
            vec![&self.input]
        }

        fn apply_expressions(
            &self,
            _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
        ) -> Result<TreeNodeRecursion> {
            Ok(TreeNodeRecursion::Continue)
        }
    };
}
pub(crate) use single_stream_plan_methods;

/// The one child of a single-stream operator, from `with_new_children`.
pub fn only_child(
    operator: &str,
    mut children: Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if children.len() != 1 {
        return internal_err!("{operator} takes one child, got {}", children.len());
    }
    Ok(children.swap_remove(0))
}

/// The input stream of a one-partition operator asked for `partition`:
/// partition 0 of its input, or an internal error for any other.
pub fn only_input_stream(
    operator: &str,
    input: &Arc<dyn ExecutionPlan>,
    partition: usize,
    context: Arc<TaskContext>,
) -> Result<SendableRecordBatchStream> {
    if partition != 0 {
        return internal_err!("{operator} has one partition, asked for {partition}");
    }
    input.execute(0, context)
}

/// Whether `input` merges several partitions into one stream (the
/// distribution the optimizer inserts below a single-partition operator),
/// which makes the arrival order vary between runs.
pub fn merges_partitions(input: &dyn ExecutionPlan) -> bool {
    matches!(
        input.name(),
        "CoalescePartitionsExec" | "SortPreservingMergeExec"
    ) && input
        .children()
        .first()
        .is_some_and(|child| child.output_partitioning().partition_count() > 1)
}

/// Plan properties of an operator that reads one ordered stream and emits
/// `schema`: one partition, the input's boundedness.
pub fn single_stream_properties(
    schema: &SchemaRef,
    input: &dyn ExecutionPlan,
    emission: EmissionType,
) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(Arc::clone(schema)),
        Partitioning::UnknownPartitioning(1),
        emission,
        input.properties().boundedness,
    ))
}

/// What an operator does with its input, batch by batch.
pub trait BatchProcessor: Send + 'static {
    /// The output for one input batch.
    fn process(
        &mut self,
        batch: RecordBatch,
        signals: &[ControlSignal],
    ) -> Result<Vec<RecordBatch>>;

    /// The output at the end of input.
    fn finish(&mut self) -> Result<Vec<RecordBatch>>;

    /// After `finish`, further output materialized one batch per poll (so
    /// memory holds one of them at a time); `None` when done.
    fn next_deferred(&mut self) -> Result<Option<RecordBatch>> {
        Ok(None)
    }

    /// Bytes of the state the operator holds between batches (reservoirs,
    /// windows, buffered rows), as the session's memory pool should count
    /// them. Small fixed-size state may be left out.
    fn memory_size(&self) -> usize {
        0
    }

    /// The operator's state, to restore a later run from; `None` while the
    /// operator's state is not snapshotted (it is then rebuilt from the
    /// stream after a restart).
    fn snapshot(&self) -> Result<Option<OperatorSnapshot>> {
        Ok(None)
    }

    /// Continue from `snapshot`, one that [`Self::snapshot`] of the operator
    /// with the same id took.
    fn restore(&mut self, snapshot: &OperatorSnapshot) -> Result<()> {
        exec_err!(
            "cannot restore a {} snapshot: this operator keeps no snapshot",
            snapshot.kind
        )
    }
}

/// What the output stream of one operator receives from the runtime: its
/// control signals, its latency series, its reservation in the session's
/// memory pool, and the state registry it restores from and records to.
pub struct StreamServices {
    operator_id: String,
    runtime: Arc<JobRuntime>,
    control: ControlReceiver,
    latency: Histogram,
    memory: MemoryReservation,
}

impl StreamServices {
    /// The services of operator `operator_id` in a stream executed with
    /// `context`. Subscribes to the control bus now, so no signal published
    /// after this call is missed.
    pub fn new(
        runtime: &Arc<JobRuntime>,
        operator_id: &str,
        context: &TaskContext,
    ) -> Result<Self> {
        Ok(Self {
            operator_id: operator_id.to_string(),
            runtime: Arc::clone(runtime),
            control: runtime.control().subscribe(),
            latency: runtime
                .metric_set::<SharedMetrics>()?
                .batch_duration
                .with_label_values(&[operator_id]),
            memory: MemoryConsumer::new(operator_id).register(context.memory_pool()),
        })
    }
}

struct State<P> {
    input: SendableRecordBatchStream,
    /// Shared with the state registry, which snapshots it at a checkpoint's
    /// cut; locked only between awaits, so a cut (taken while this stream
    /// waits on its input) never waits for it.
    processor: Arc<Mutex<P>>,
    services: StreamServices,
    pending: VecDeque<RecordBatch>,
    finished: bool,
    failed: bool,
}

/// The registry's handle to a stream's processor.
struct SharedProcessor<P> {
    operator_id: String,
    processor: Arc<Mutex<P>>,
}

impl<P: BatchProcessor> StatefulOperator for SharedProcessor<P> {
    fn operator_id(&self) -> &str {
        &self.operator_id
    }

    fn snapshot(&self) -> Result<Option<OperatorSnapshot>> {
        lock(&self.processor)?.snapshot()
    }

    fn restore(&self, snapshot: &OperatorSnapshot) -> Result<()> {
        lock(&self.processor)?.restore(snapshot)
    }
}

/// `input` through `processor`, as a stream of `schema`.
///
/// Before the first batch the processor restores from the runtime's
/// restore point, if that holds its operator's state, and is registered in
/// the state registry, which snapshots it at every checkpoint. The time of
/// each `process` call is observed in the operator's series of
/// `equipoise_batch_duration_seconds`. After each batch the processor's
/// state is counted in its memory reservation: past the session's memory
/// limit the stream ends with DataFusion's `ResourcesExhausted` error.
pub fn processed_stream<P: BatchProcessor>(
    input: SendableRecordBatchStream,
    mut processor: P,
    schema: SchemaRef,
    services: StreamServices,
) -> Result<SendableRecordBatchStream> {
    let registry = services.runtime.state();
    if let Some(snapshot) = registry.restore_point(&services.operator_id)? {
        processor.restore(&snapshot)?;
    }
    let processor = Arc::new(Mutex::new(processor));
    registry.track(Arc::new(SharedProcessor {
        operator_id: services.operator_id.clone(),
        processor: Arc::clone(&processor),
    }))?;
    let state = State {
        input,
        processor,
        services,
        pending: VecDeque::new(),
        finished: false,
        failed: false,
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        loop {
            if state.failed {
                return None;
            }
            if let Some(batch) = state.pending.pop_front() {
                return Some((Ok(batch), state));
            }
            if state.finished {
                let deferred = lock(&state.processor).and_then(|mut p| p.next_deferred());
                return match deferred {
                    Ok(Some(batch)) => Some((Ok(batch), state)),
                    Ok(None) => None,
                    Err(e) => {
                        state.failed = true;
                        Some((Err(e), state))
                    }
                };
            }
            let next = state.input.next().await;
            let step = lock(&state.processor).and_then(|mut processor| {
                let batches = match next {
                    Some(Ok(batch)) => {
                        let signals = state.services.control.drain();
                        let _timer = state.services.latency.start_timer();
                        processor.process(batch, &signals)
                    }
                    Some(Err(e)) => Err(e),
                    None => {
                        state.finished = true;
                        processor.finish()
                    }
                }?;
                state.services.memory.try_resize(processor.memory_size())?;
                Ok(batches)
            });
            match step {
                Ok(batches) => state.pending.extend(batches),
                Err(e) => {
                    state.failed = true;
                    return Some((Err(e), state));
                }
            }
        }
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
}
