"""CPU threads per process: processes of one run on one machine's CPU share its cores."""

from types import SimpleNamespace

import torch

from lorarl.factory import cpu_threads


def trainer(threads=None, devices=1, accelerator="cpu"):
    return SimpleNamespace(threads=threads, devices=devices, accelerator=accelerator)


def test_processes_on_one_cpu_share_its_cores_and_an_explicit_count_wins(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cpu_threads(trainer()) is None  # one process: torch's default, a thread per core
    assert cpu_threads(trainer(devices=2)) == max(1, torch.get_num_threads() // 2)
    assert cpu_threads(trainer(devices=64)) == 1
    assert cpu_threads(trainer(threads=3, devices=2)) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's own choice stays
    assert cpu_threads(trainer(devices=2)) is None
    assert cpu_threads(trainer(threads=2, devices=2)) == 2
