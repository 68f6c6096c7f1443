"""evaluate.py's report files: one per model, never two models in one file."""

from types import SimpleNamespace

import pytest

from lorarl.evaluation import _report_path


def config(adapter, compare, report):
    return SimpleNamespace(adapter=adapter, compare=compare, baseline=True, report=report, model_path=None,
                           env=SimpleNamespace(id="lorarl/DBBench-v0"))


def test_models_sharing_a_directory_name_get_their_own_reports(tmp_path):
    a, b = "runs/study/seed0/grpo/checkpoints/iter_000006", "runs/study/seed2/grpo/checkpoints/iter_000006"
    cfg = config(a, [b], str(tmp_path))
    paths = {name: _report_path(name, cfg) for name in (a, b, "none")}
    assert len(set(paths.values())) == 3
    assert paths[a].name == "seed0_grpo_iter_000006_DBBench-v0.json" and paths["none"].name == "base_DBBench-v0.json"
    # distinct names stay as they were
    cfg = config("runs/x/checkpoints/iter_000004", ["runs/y/checkpoints/iter_000008"], str(tmp_path))
    assert _report_path("runs/x/checkpoints/iter_000004", cfg).name == "iter_000004_DBBench-v0.json"


def test_console_columns_of_models_sharing_a_directory_name_differ():
    from lorarl.evaluation import _column_labels, format_table
    from lorarl.rewards import OUTCOMES

    a, b = "runs/study/seed0/grpo/checkpoints/iter_000006", "runs/study/seed2/grpo/checkpoints/iter_000006"
    labels = _column_labels([a, b, "none", "runs/x/checkpoints/iter_000004", "runs/merged"])
    assert labels == {a: "seed0/grpo/iter_000006", b: "seed2/grpo/iter_000006", "none": "base",
                      "runs/x/checkpoints/iter_000004": "x/iter_000004", "runs/merged": "merged"}
    result = {"success_rate": 0.5, "confidence": {"intervals": {"success_rate": (0.2, 0.8)}, "k": 1},
              "reward_mean": 0.0, "turns_mean": 1.0, "tokens_per_s": 1.0,
              **{f"outcome/{o}": 0.0 for o in OUTCOMES}}
    head = format_table({a: result, b: result}).splitlines()[0]
    assert "seed0/grpo/iter_000006" in head and "seed2/grpo/iter_000006" in head


def test_a_report_being_written_is_refused_to_a_second_evaluation_and_freed_after(tmp_path):
    """Two evaluate.py on one report would both append to its .partial.jsonl: the second stops."""
    import os
    import subprocess
    import sys

    from lorarl.evaluation import EvalError, report_lock

    report = tmp_path / "r.json"
    with report_lock(report):
        with pytest.raises(EvalError, match="another evaluate.py is writing this report"):
            with report_lock(report):
                pass
        holder = "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)"
        other = subprocess.run([sys.executable, "-c", holder, str(tmp_path / "r.json.lock")], capture_output=True)
        assert other.returncode != 0  # another process cannot take it either
    assert not (tmp_path / "r.json.lock").exists()
    with report_lock(report):  # free again
        pass
    # a process killed while it held the lock leaves the file behind, not the lock (the OS drops it)
    crashed = tmp_path / "c.json.lock"
    crashed.touch()
    assert subprocess.run([sys.executable, "-c", holder + "; os._exit(9)", str(crashed)]).returncode == 9
    assert os.path.exists(crashed)
    with report_lock(tmp_path / "c.json"):
        pass
