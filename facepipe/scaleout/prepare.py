"""`facepipe prepare SRC DST --ray`: prepare's chunks of photos on Ray actors (one prepare Worker, models loaded once,
per actor). The driver keeps everything else of prepare: the scan, the manifest (a line only after its chips are
written), resume, hygiene, packing. The actors write the chips into DST, so on a cluster DST is a shared folder."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from typing import Callable, Iterable, Iterator

import pyarrow as pa
import ray
import ray.data

from facepipe.prepare.worker import Job, Worker, WorkerSpec
from facepipe.scaleout.job import actor_count, connect


class PrepareActor:
    def __init__(self, spec: WorkerSpec):
        self.worker = Worker(spec)

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = [json.dumps(self.worker.process([Job(**job) for job in json.loads(chunk)]))
               for chunk in batch["jobs"].to_pylist()]
        return pa.table({"records": out})


def ray_runner(address: str | None, workers: int | None = None) -> Callable[[Iterable[list[Job]], WorkerSpec],
                                                                             Iterator[list[dict]]]:
    """A runner for facepipe.prepare.run.RunOptions: chunks of jobs in, each chunk's records out as it finishes."""
    def run(chunks: Iterable[list[Job]], spec: WorkerSpec) -> Iterator[list[dict]]:
        resources = connect(address)
        actors, gpus = actor_count(resources, spec.model, workers)
        spec = replace(spec, dst=os.path.abspath(spec.dst), model=replace(spec.model, threads=spec.model.threads or 1))
        rows = [{"jobs": json.dumps([asdict(replace(job, path=os.path.abspath(job.path))) for job in chunk])}
                for chunk in chunks]
        ray.data.DataContext.get_current().enable_progress_bars = True
        ds = ray.data.from_items(rows).map_batches(
            PrepareActor, fn_constructor_args=(spec,), batch_size=1, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1, num_gpus=gpus or None)
        for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for records in block["records"].to_pylist():
                yield json.loads(records)
    return run
