"""evaluate.py on a freshly trained tiny adapter."""

import json
import re
import subprocess
import sys

import pytest

from conftest import ROOT, run_all, run_train


def run_eval(args):
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *args], capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    proc = run_train(["env=target_word", "trainer.iterations=4", "trainer.progress_bar=false", f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run


def test_dynamic_and_merged_give_identical_greedy_transcripts_and_base_is_compared(trained, tmp_path):
    ckpt, merged = trained / "checkpoints/iter_000004", tmp_path / "merged"
    common = ["env=target_word", "num_samples=8", f"model_path={trained / 'base_model'}"]
    dyn = run_eval(common + [f"adapter={ckpt}", "compare=[none]", f"report={tmp_path / 'dyn'}"])
    assert dyn.returncode == 0, dyn.stderr[-2000:]
    assert "success_rate (95% CI)" in dyn.stdout and "base" in dyn.stdout and "paired p-value" in dyn.stdout
    mer = run_eval(common + [f"adapter={ckpt}", "mode=both", f"merged_path={merged}", "use_merged=true", "baseline=false",
                             f"report={tmp_path / 'merged.json'}"])
    assert mer.returncode == 0, mer.stderr[-2000:]
    assert (merged / "config.json").exists() and (merged / "tokenizer.json").exists()
    a = json.loads((tmp_path / "dyn" / "iter_000004_TargetWord-v0.json").read_text())
    b = json.loads((tmp_path / "merged.json").read_text())
    base = json.loads((tmp_path / "dyn" / "base_TargetWord-v0.json").read_text())
    assert [e["transcript"] for e in a["episodes"]] == [e["transcript"] for e in b["episodes"]]
    assert [e["transcript"] for e in a["episodes"]] != [e["transcript"] for e in base["episodes"]]  # the adapter matters
    for report in (a, b, base):
        assert set(report) == {"model", "config", "metrics", "confidence", "paired", "episodes"}
        lo, hi = report["confidence"]["intervals"]["success_rate"]
        assert 0 <= lo <= report["metrics"]["success_rate"] <= hi <= 1
        m = report["metrics"]
        assert m["episodes"] == 8 and 0 <= m["success_rate"] <= 1
        assert set(m) >= {"success_rate", "reward_mean", "turns_mean", "tokens_per_s", "outcome/correct"}  # training's names
        assert any(k.startswith("success_rate/") for k in m)  # per task type
        assert abs(sum(v for k, v in m.items() if k.startswith("outcome/")) - 1) < 1e-6
        assert all(set(e) == {"task", "sample", "seed", "task_type", "outcome", "reward", "turns", "prompt_turns", "transcript",
                              "verdict"} for e in report["episodes"])
    # the same seeded tasks for every model, compared in pairs, and a page to read them side by side
    assert [e["seed"] for e in a["episodes"]] == [e["seed"] for e in base["episodes"]]
    assert a["paired"]["none"]["test"] == "mcnemar_exact" and 0 <= a["paired"]["none"]["p_value"] <= 1
    page = (tmp_path / "dyn" / "iter_000004_TargetWord-v0.html").read_text()
    assert '"models": ["' in page and "base" in page and "<script" in page


def test_pass_at_k_samples_each_task_k_times(trained, tmp_path):
    ckpt = trained / "checkpoints/iter_000004"
    proc = run_eval(["num_samples=3", "num_samples_per_task=4", "algorithm.sampling.greedy=false", f"adapter={ckpt}",
                     f"report={tmp_path}", "baseline=false"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert report["metrics"]["episodes"] == 12 and report["confidence"]["k"] == 4 and "pass@4" in report["confidence"]
    assert sorted({e["task"] for e in report["episodes"]}) == [0, 1, 2]
    greedy = run_eval(["num_samples=3", "num_samples_per_task=4", f"adapter={ckpt}"])
    assert greedy.returncode != 0 and "set algorithm.sampling.greedy=false" in greedy.stderr


def test_run_env_is_used_reports_land_next_to_adapter_and_tensorboard(trained, tmp_path):
    """No env= given: the adapter's run trained on target_word (its .hydra/config.yaml), so that is evaluated."""
    ckpt = trained / "checkpoints/iter_000004"
    proc = run_eval(["num_samples=4", f"adapter={ckpt}", f"log_dir={tmp_path / 'tb'}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (ckpt / "eval_TargetWord-v0.json").exists() and (ckpt / "eval_TargetWord-v0_base.json").exists()
    assert list((tmp_path / "tb").rglob("events.out.tfevents*"))
    assert not (ROOT / "evaluate.log").exists()


def test_error_cases_are_one_clear_line(trained, tmp_path, defaults):
    from dataclasses import replace

    from lorarl.models import build_tiny_model
    from lorarl.tokenizer import build_byte_tokenizer

    tok = build_byte_tokenizer()
    other = build_tiny_model(replace(defaults.model.tiny, hidden_size=32, num_heads=2, num_kv_heads=1), len(tok), tok.eos_token_id, tok.pad_token_id)
    other.save_pretrained(tmp_path / "other")
    tok.save_pretrained(tmp_path / "other")
    ckpt = trained / "checkpoints/iter_000004"
    import shutil

    warm = tmp_path / "warm"  # stage=warmstart's layout: sft/ then rl/
    shutil.copytree(ckpt, warm / "rl/checkpoints/iter_000004")
    cases = [
        ([f"adapter={tmp_path / 'missing'}"], "error: adapter=", "no such directory"),
        ([f"adapter={ckpt}", f"model_path={tmp_path / 'other'}"], "does not fit this base model", "size mismatch"),
        ([f"adapter={ckpt}", "env=nope"], "error:", "env"),
        ([f"adapter={ckpt}", "env.id=lorarl/Nope-v0"], "error: env.id='lorarl/Nope-v0'", ""),
        (["adapter=none", "env=target_word"], "model_path", ""),
        (["adapter=none"], "error: env", "pass env="),
        ([f"adapter={ckpt}", "mode=merge"], "merged_path", ""),
        ([f"adapter={ckpt}", f"compare=[{tmp_path / 'gone'}]"], f"error: compare={tmp_path / 'gone'}: no such directory", ""),
        ([f"adapter={ckpt}", f"model_path={tmp_path / 'gone'}"], f"error: model_path={tmp_path / 'gone'}: no such directory", ""),
        ([f"adapter={ckpt}", "report=/proc/lorarl/r.json", "baseline=false"], "error: report: cannot write in /proc/lorarl", ""),
        ([f"adapter={warm}"], "warm-start run's directory", f"adapter={warm / 'rl/checkpoints/iter_000004'}"),
        ([f"adapter={ckpt}", f"report={tmp_path / 'busy.json'}", "baseline=false"], f"error: report={tmp_path / 'busy.json'}",
         "another evaluate.py is writing this report"),  # held below, as a running evaluate.py holds it
    ]
    from lorarl.evaluation import report_lock

    with report_lock(tmp_path / "busy.json"):
        procs = run_all([[str(ROOT / "evaluate.py"), *args, "num_samples=2"] for args, _, _ in cases])
    for (args, needle, also), proc in zip(cases, procs):
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert proc.returncode != 0 and lines, (args, proc.stderr[-1500:])
        assert needle in lines[-1] and also in lines[-1], (args, lines)
        assert "Traceback" not in proc.stderr, args


def test_an_interrupted_evaluation_keeps_what_finished_and_the_same_command_continues(trained, tmp_path):
    """Ctrl-C after the first batches leaves a readable partial report; the same command then plays
    only the episodes left, and the report equals an uninterrupted evaluation's, sampled (pass@k)
    too, and with another batch size: each episode samples from its own stream."""
    import signal
    import time

    ckpt = trained / "checkpoints/iter_000004"
    # 2 envs; the 5th reset waits until the gate exists: 4 episodes start, and the run stops once
    # 3 of them (4, if the last two end in the same round) have ended, on any machine
    gate = tmp_path / "go"
    args = [f"adapter={ckpt}", "env=target_word", "env.id=jitter:jitter/TargetWord-v0", "+env.kwargs.max_delay_s=0.1",
            f"+env.kwargs.gate_file={gate}", "+env.kwargs.gate_after_resets=4",
            "num_samples=5", "num_samples_per_task=2", "algorithm.sampling.greedy=false", "batch_size=2",
            "baseline=false", f"model_path={trained / 'base_model'}"]
    cmd = [sys.executable, str(ROOT / "evaluate.py"), *args, f"report={tmp_path / 'a.json'}"]
    # Ctrl-C as a terminal sends it: SIGINT at its default in the child, however the suite was
    # started (a background job of a non-interactive shell ignores SIGINT, and children inherit that)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**__import__("os").environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen, done = "", None
    deadline = time.monotonic() + 300
    while done is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        counted = re.search(r"(\d+)/10 episodes", line)
        done = int(counted[1]) if counted and int(counted[1]) >= 3 else None
    assert done in (3, 4), seen
    proc.send_signal(signal.SIGINT)
    while not (tmp_path / "a.partial.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    gate.touch()  # an env thread waiting at the gate would otherwise hold the interpreter's exit
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "run the same command to continue" in err, seen + err
    partial = json.loads((tmp_path / "a.partial.json").read_text())
    assert partial["partial"] and partial["episodes_done"] == done and partial["metrics"]["episodes"] == done
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env={**__import__("os").environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"})
    assert again.returncode == 0 and "continuing an interrupted evaluation" in again.stderr, again.stderr[-2000:]
    whole = subprocess.run([*cmd[:-1], "batch_size=3", f"report={tmp_path / 'b.json'}"], cwd=ROOT, capture_output=True,
                           text=True,
                           timeout=600, env={**__import__("os").environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"})
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert [(e["task"], e["sample"]) for e in a["episodes"]] == [(t, k) for t in range(5) for k in range(2)]
    assert [(e["task"], e["transcript"]) for e in a["episodes"]] == [(e["task"], e["transcript"]) for e in b["episodes"]]
    # sampled, not greedy: a task's two samples differ somewhere
    assert any(a["episodes"][2 * t]["transcript"] != a["episodes"][2 * t + 1]["transcript"] for t in range(5))
    assert not list(tmp_path.glob("*.partial.*"))  # the progress files go once the report is written
