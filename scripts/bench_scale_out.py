"""Throughput and G-mean of the example detector job with state per Kafka
partition, for 1, 2 and 4 partitions (and 4 partitions over 2 replicas),
against a tansu broker on this machine. Run by scripts/bench-scale-out.

Each configuration gets a fresh broker: the topic `readings` with P
partitions, the same generator records (round-robin over the partitions), produced
before R replicas of `equipoise run` start (release build, checkpoints
every 10 s into a shared directory; with two replicas the second one's join
is a rebalance while the first is reading). Throughput is
the number of predictions over the span of their broker timestamps (first
to last prediction, so start-up and the group join are not counted); the
G-mean is over each record's first prediction (a record predicted NULL,
before the detector has a model, counts as a miss).
"""

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from confluent_kafka import Consumer, Producer, TopicPartition

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "equipoise")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def telemetry(records):
    query = (
        "SELECT CAST(seq AS BIGINT) AS seq, CAST(machine_id AS INT) AS machine_id, "
        "temperature_c, vibration_mm_s, pressure_bar, rotation_rpm, current_a, "
        f"CAST(label AS INT) AS label FROM equipoise_generator('rows={records}')"
    )
    out = subprocess.run(
        [BINARY, "sql", "--format", "json", query], check=True, capture_output=True
    )
    return out.stdout.decode().splitlines()


class Broker:
    def __init__(self, tansu):
        self.dir = tempfile.mkdtemp(prefix="bench-scale-out-")
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        url = f"tcp://{self.address}"
        self.tansu = tansu
        self.process = subprocess.Popen(
            [tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "sqlite://tansu.sqlite", "--cluster-id", "bench", "--silent"],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("tansu did not listen")
                time.sleep(0.05)

    def topic(self, name, partitions):
        subprocess.run(
            [self.tansu, "topic", "create", "--broker", f"tcp://{self.address}",
             "--partitions", str(partitions), name],
            check=True, stdout=subprocess.DEVNULL,
        )

    def stop(self):
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def cpu_seconds(pid):
    """User and system CPU time of a live process, in seconds."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def holding(log_path):
    """The partitions a replica holds now, by its log."""
    held = set()
    try:
        lines = open(log_path).read().splitlines()
    except OSError:
        return held
    for line in lines:
        try:
            fields = json.loads(line)["fields"]
        except (ValueError, KeyError):
            continue
        if fields.get("message") == "partition assigned; starting its plan":
            held.add(fields["partition"])
        elif fields.get("message") == "partition plan ended":
            held.discard(fields["partition"])
    return held


def run(partitions, replicas, lines, tansu):
    broker = Broker(tansu)
    try:
        broker.topic("readings", partitions)
        broker.topic("readings.dead-letters", 1)
        broker.topic("predictions", 1)
        work = broker.dir
        example = open(os.path.join(ROOT, "examples", "kafka-job.sql")).read()
        open(os.path.join(work, "job.sql"), "w").write(
            example.replace("127.0.0.1:9092", broker.address)
        )
        open(os.path.join(work, "job.toml"), "w").write(
            'sql_file = "job.sql"\n[checkpoint]\n'
            f'url = "{os.path.join(work, "checkpoints")}"\ninterval = "10s"\n'
            '[server]\naddr = "127.0.0.1:0"\n[scale_out]\nstate = "per-partition"\n'
        )
        producer = Producer({"bootstrap.servers": broker.address, "linger.ms": 50, "batch.num.messages": 10000})
        producing = time.time()
        for i, line in enumerate(lines):
            while True:
                try:
                    producer.produce("readings", line.encode(), partition=i % partitions)
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.flush(60)
        produced = time.time() - producing
        procs, logs = [], []
        for r in range(replicas):
            log = os.path.join(work, f"replica-{r}.log")
            logs.append(log)
            procs.append(subprocess.Popen(
                [BINARY, "run", "--config", os.path.join(work, "job.toml")],
                env={**os.environ, "RUST_LOG": "info"},
                stdout=subprocess.DEVNULL, stderr=open(log, "w"),
            ))
        # Every partition is taken (with two replicas the second one's join
        # is a rebalance, inside the measured span).
        deadline = time.time() + 120
        while True:
            held = [holding(log) for log in logs]
            if sum(len(h) for h in held) == partitions and all(held):
                break
            if time.time() > deadline:
                raise RuntimeError(f"the replicas did not settle: {held}")
            time.sleep(0.2)

        consumer = Consumer({
            "bootstrap.servers": broker.address, "group.id": "bench-reader",
            "enable.auto.commit": False,
        })
        consumer.assign([TopicPartition("predictions", 0, 0)])
        first = {}
        stamps = []
        deadline = time.time() + 1800
        while len(first) < len(lines) and time.time() < deadline:
            for message in consumer.consume(10000, 0.5):
                if message.error():
                    continue
                value = json.loads(message.value())
                key = (value["source_partition"], value["source_offset"])
                stamps.append(message.timestamp()[1])
                if key not in first:
                    first[key] = (value["label"], value.get("prediction"))
        consumer.close()
        job_cpu = sum(cpu_seconds(proc.pid) for proc in procs)
        broker_cpu = cpu_seconds(broker.process.pid)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
        if len(first) < len(lines):
            raise RuntimeError(f"{len(first)} of {len(lines)} records predicted")
        span = (max(stamps) - min(stamps)) / 1000
        tp = {c: 0 for c in (0, 1)}
        n = {c: 0 for c in (0, 1)}
        for label, prediction in first.values():
            n[label] += 1
            tp[label] += int(prediction == label)
        recalls = [tp[c] / n[c] for c in (0, 1) if n[c]]
        gmean = math.prod(recalls) ** (1 / len(recalls))
        return {
            "partitions": partitions, "replicas": replicas, "records": len(first),
            "predictions": len(stamps), "seconds": span, "rate": len(first) / span,
            "produced": produced, "gmean": gmean,
            "job_cpu": job_cpu, "broker_cpu": broker_cpu, "recall_1": tp[1] / n[1] if n[1] else float("nan"),
        }
    finally:
        broker.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--tansu", default=shutil.which("tansu") or "tansu")
    parser.add_argument(
        "--configs", default="1:1,2:1,4:1,4:2",
        help="partitions:replicas pairs, comma-separated",
    )
    args = parser.parse_args()
    lines = telemetry(args.records)
    print(f"{len(lines)} generator records; machine: {os.cpu_count()} cores")
    print("(CPU s: the replicas' and the broker's CPU time from start to the last")
    print("prediction, producing the input included for the broker)")
    print("| partitions | replicas | records | s (first to last prediction) | records/s | job CPU s | broker CPU s | G-mean | minority recall |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    configs = [tuple(int(x) for x in c.split(":")) for c in args.configs.split(",")]
    for partitions, replicas in configs:
        r = run(partitions, replicas, lines, args.tansu)
        print(
            f"| {r['partitions']} | {r['replicas']} | {r['records']:,} | {r['seconds']:.1f} | "
            f"{r['rate']:,.0f} | {r['job_cpu']:.1f} | {r['broker_cpu']:.1f} | "
            f"{r['gmean']:.3f} | {r['recall_1']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
