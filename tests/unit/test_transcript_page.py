"""The evaluation's HTML page: episodes of every model side by side, self-contained, and (slow,
on demand) rendered by a real headless Chromium from Debian's packages."""

import json
import re
import shutil
import subprocess

import pytest

from lorarl.rollout import Episode
from lorarl.transcript_page import page_data, render_page, write_page

EVIL = "</script><script>document.title='pwned'</script>"


def episode(task: int, outcome: str, reply: str, skill: str = "count") -> Episode:
    e = Episode(group_id=task, seed=task)
    e.outcome, e.task_type, e.reward, e.turns, e.prompt_turns = outcome, skill, 1.0 if outcome == "correct" else -0.5, 2, 1
    instructions = "\n".join(f"instruction line {i}" for i in range(15))  # AgentBench's are 17 lines
    e.messages = [{"role": "user", "content": f"{instructions}\nHow many rows have age > 30?"},
                  {"role": "assistant", "content": "Action: Operation\n```sql\nSELECT COUNT(*) FROM t\n```"},
                  {"role": "user", "content": "[(4,)]"}, {"role": "assistant", "content": f"Final Answer: [{reply}]"}]
    e.verdict = {"observation": "Answer received.", "expected": "Final Answer: [4]", "reference": "label"}
    return e


def played() -> dict:
    adapter = [episode(i, "correct" if i % 3 else "incorrect", "4", "count" if i % 2 else "sum") for i in range(6)]
    base = [episode(i, "correct" if i == 0 else "incorrect", EVIL if i == 1 else "7", "count" if i % 2 else "sum")
            for i in range(6)]
    return {"runs/x/checkpoints/iter_000010": adapter, "none": base}


def test_rows_pair_models_by_task_and_sample():
    data = page_data(played(), {"none": "base"})
    assert data["models"] == ["runs/x/checkpoints/iter_000010", "base"] and len(data["rows"]) == 6
    row = data["rows"][1]
    assert row["task"] == 1 and set(row["by_model"]) == {"runs/x/checkpoints/iter_000010", "base"}
    assert row["by_model"]["base"]["transcript"][0]["prompt"] and not row["by_model"]["base"]["transcript"][1]["prompt"]
    assert row["by_model"]["base"]["verdict"]["reference"] == "label"
    assert data["skills"] == ["count", "sum"] and data["outcomes"] == ["correct", "incorrect"]
    several = page_data({"m": [episode(0, "correct", "4"), episode(0, "incorrect", "5")]})
    assert [r["task"] for r in several["rows"]] == [0, "0 (sample 2)"]


def test_the_page_is_self_contained_and_text_cannot_break_out():
    page = render_page(page_data(played()), "t")
    assert EVIL not in page and "<\\/script>" in page  # episode text stays data
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page)  # nothing fetched: no CDN, no network
    data = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(data.replace("<\\/", "</"))["rows"][1]["by_model"]["none"]["transcript"][3]["content"].endswith(
        EVIL + "]")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium: bash scripts/install.sh --browser")
def test_chromium_renders_filters_and_opens_transcripts(tmp_path):
    from PIL import Image

    page = write_page(tmp_path / "eval.html", played(), "lorarl evaluation", {"none": "base"},
                      [("success_rate (95% CI)", ["0.667 [0.30, 0.90]", "0.167 [0.03, 0.56]"])])
    run = lambda *args: subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    dom = run("--dump-dom", f"file://{page}#outcome=correct&of=base").stdout
    assert dom.count('class="ep"') == 1 and "1 of 6 episodes" in dom  # the filter ran: base solved task 0 only
    assert "<title>lorarl evaluation</title>" in dom and "pwned" not in dom.split("<title>")[1].split("</title>")[0]
    opened = run("--dump-dom", f"file://{page}#skill=count&open=1").stdout
    assert opened.count('class="ep"') == 3 and opened.count('class="msg assistant"') == 4  # two models x two turns
    assert "expected: Final Answer: [4]" in opened  # the verdict says what was right
    folded = opened.split("<details>")[1].split("</details>")[0]  # long instructions fold; the question stays visible
    assert "12 lines of instructions" in folded and "How many rows" not in folded and "How many rows" in opened
    shot = tmp_path / "shot.png"
    run("--window-size=1280,820", f"--screenshot={shot}", f"file://{page}#open=2")
    image = Image.open(shot).convert("RGB")
    colours = set(image.getdata())
    assert image.size == (1280, 820)
    for rgb in ((0x1A, 0x7F, 0x37), (0xCF, 0x22, 0x2E), (0x3B, 0x74, 0xD9), (0x82, 0x50, 0xDF)):  # badges, agent, verdict
        assert rgb in colours, rgb
