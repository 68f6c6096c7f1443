"""bench/recovery_sft.py's measures: the repeat rate and the rows paired against a control."""

from bench.recovery_sft import repeat_rate, rows


def episode(task, outcome, replies):
    transcript = [{"role": "user", "content": "q"}]
    for r in replies:
        transcript += [{"role": "assistant", "content": r}, {"role": "user", "content": "o"}]
    return {"task": task, "outcome": outcome, "prompt_turns": 1, "transcript": transcript}


def test_repeat_rate_counts_replies_equal_to_the_one_before():
    report = {"episodes": [episode(0, "incorrect", ["a", "a", "b", "a"]),  # 1 of 3 (a, a)
                           episode(1, "incorrect", ["x", "x", "x"]),  # 2 of 2
                           episode(2, "correct", ["y"])]}  # none to count
    assert repeat_rate(report) == (3 / 5, 5)


def test_rows_pair_each_model_with_the_control_on_the_same_tasks():
    control = {"gen": {"episodes": [episode(t, o, ["s"]) for t, o in enumerate("cciii")]}}
    arm = {"gen": {"episodes": [episode(t, o, ["s"]) for t, o in enumerate("icccc")]}}
    for res, outcomes in ((control, "cciii"), (arm, "icccc")):
        for e, o in zip(res["gen"]["episodes"], outcomes):
            e["outcome"] = "correct" if o == "c" else "incorrect"
    first, second = rows({"control": control, "arm": arm}, "control")
    assert first["held-out success (greedy)"] == "0.400" and first["McNemar vs control"] == ""
    assert second["held-out success (greedy)"] == "0.800"
    assert second["McNemar vs control"] == "p 0.625 (3 vs 1)"  # only the arm: tasks 2-4; only the control: 0; 2 * (1 + 4) / 16
