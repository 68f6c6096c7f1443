"""evaluate.py's report files: one per model, never two models in one file."""

from types import SimpleNamespace

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
