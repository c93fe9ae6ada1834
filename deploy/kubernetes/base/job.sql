-- The default detector pipeline as a Kafka job:
--   equipoise run --sql examples/kafka-job.sql
-- Telemetry readings come from topic `readings`; each original row leaves
-- on topic `predictions` with the detector's prediction and score and the
-- drift monitor's state. Records that cannot be rows go to
-- `readings.dead-letters` with the reason in their headers.
-- The brokers come from the environment variable KAFKA_BROKERS (set in
-- statefulset.yaml; overlays patch it), the pod's name from POD_NAME (set
-- there from the pod's metadata), credentials from the Secret
-- `equipoise-kafka` the same way: each named in the options with a dollar
-- sign and braces around the variable's name (docs/configuration.md,
-- "Secrets").

CREATE UNBOUNDED EXTERNAL TABLE readings (
    seq BIGINT,
    machine_id INT,
    temperature_c DOUBLE,
    vibration_mm_s DOUBLE,
    pressure_bar DOUBLE,
    rotation_rpm DOUBLE,
    current_a DOUBLE,
    label INT,
    _partition INT,
    _offset BIGINT
)
STORED AS KAFKA LOCATION 'readings'
OPTIONS (
    'bootstrap.servers' '${KAFKA_BROKERS}',
    'group.id' 'equipoise-detector',
    -- A replica that dies without leaving the group keeps its partitions
    -- this long (librdkafka's default is 45 s).
    'session.timeout.ms' '10000',
    -- A static group member named after the pod (StatefulSet names are
    -- stable): a restarted pod rejoins as itself and gets its partitions
    -- back without a rebalance (and over brokers that mishandle a new
    -- member's rejoin, such as tansu 0.6.0, at all).
    'group.instance.id' '${POD_NAME}',
    'format' 'json',
    'start' 'committed',
    'label' 'label',
    'dead_letter_topic' 'readings.dead-letters'
);

CREATE EXTERNAL TABLE predictions (
    seq BIGINT,
    source_partition INT,
    source_offset BIGINT,
    label INT,
    prediction INT,
    score DOUBLE,
    model_version BIGINT,
    drift_state VARCHAR,
    drift_signal VARCHAR
)
STORED AS KAFKA LOCATION 'predictions'
OPTIONS (
    'bootstrap.servers' '${KAFKA_BROKERS}',
    'format' 'json',
    'key_column' 'seq'
);

-- QC-SMOTE, then iCost weights, then the detector (test-then-train), then
-- the drift monitor on its predictions; identifiers are not features.
CREATE VIEW balanced AS
    SELECT * FROM qc_smote('readings', 'label', 'mode=stream, exclude=seq machine_id');
CREATE VIEW weighed AS
    SELECT * FROM icost('balanced', 'label', 'mode=stream, exclude=seq machine_id');
CREATE VIEW scored AS
    SELECT * FROM train_detector('weighed', 'label', 'exclude=seq machine_id');
CREATE VIEW watched AS
    SELECT * FROM drift_monitor('scored', 'label', 'prediction');

INSERT INTO predictions
SELECT seq, _partition AS source_partition, _offset AS source_offset, label,
       prediction, score, model_version, drift_state, drift_signal
FROM watched;
