import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist, N test processes share the machine: each (and every train.py it starts) gets
# its share of the cores, not torch's default of a thread per core. N processes of a thread per
# core each oversubscribe the CPU, and torch's threads then wait on each other at every op: on
# 2 cores the packaged-model test took 167-288 s that way against 55 s alone. Serial tests run
# without xdist and keep every core.
if workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(workers))))


def compose(overrides: list[str]):
    """Compose conf/ exactly as train.py does and return the validated TrainConfig."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from lorarl.schema import load

    with initialize_config_dir(str(CONF), version_base="1.3"):
        return load(hydra_compose("config", overrides=overrides))


def run_all(commands: list[list[str]], timeout: int = 600) -> list[subprocess.CompletedProcess]:
    """Run independent commands side by side (each a fresh process, as a user runs it): a battery
    of error cases costs about its longest import, not their sum."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, *cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for cmd in commands]
    done = []
    for cmd, p in zip(commands, procs):
        out, err = p.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess([sys.executable, *cmd], p.returncode, out, err))
    return done


def run_train(args: list[str], cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(scope="session")
def defaults():
    """The default training config, as conf/ defines it: the one home of every default."""
    return compose([])


@pytest.fixture
def tiny_tokenizer():
    from lorarl.tokenizer import build_byte_tokenizer

    return build_byte_tokenizer()


@pytest.fixture
def tiny_lm(tiny_tokenizer, defaults):
    from lorarl.models import build_tiny_model

    return build_tiny_model(defaults.model.tiny, len(tiny_tokenizer), tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id)


@pytest.fixture
def high_descriptors():
    """Every descriptor number below 1,100 taken, so whatever the test opens next is past
    FD_SETSIZE (1,024), as in a trainer holding hundreds of envs: select() fails there."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.fail(f"RLIMIT_NOFILE hard limit {hard} < 1200: this test needs descriptor numbers past 1,024")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    held = []
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        while (fd := os.dup(null)) < 1100:
            held.append(fd)
        held.append(fd)
        yield
    finally:
        for fd in held + [null]:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
