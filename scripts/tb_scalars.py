"""Print TensorBoard scalars of a run as a table: python scripts/tb_scalars.py RUN_DIR [TAG ...]"""

import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def scalars(run_dir: str, tags: list[str]) -> dict[str, list[float]]:
    acc = EventAccumulator(str(next(Path(run_dir).rglob("events.out.tfevents*")).parent))
    acc.Reload()
    tags = tags or acc.Tags()["scalars"]
    return {t: [e.value for e in acc.Scalars(t)] for t in tags}


if __name__ == "__main__":
    for tag, values in scalars(sys.argv[1], sys.argv[2:]).items():
        print(f"{tag:40s} " + " ".join(f"{v:.3g}" for v in values))
