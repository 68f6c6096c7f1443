"""A quiet console for ``train.py`` and ``evaluate.py``: library notices that say nothing to a user
(Lightning's accelerator census and tips, deprecation warnings from libraries, save progress bars)
are silenced; lorarl's own lines and real warnings stay. With the progress bar on, the
per-iteration lines go to the run's log file only (the bar shows the same numbers); so do the
lines that record how the run was set up ("lorarl.run")."""

from __future__ import annotations

import errno
import logging
import shutil
import threading
import traceback
import warnings
from pathlib import Path

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def quiet_console(progress_bar: bool = True) -> None:
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda", "torch.distributed.nn.jit.instantiator"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    # "lorarl.run" lines (thread count, what the run was built from) are for the log file only.
    file_only = ("lorarl.run", "lorarl.iterations") if progress_bar else ("lorarl.run",)
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # the console, not the file handler
            handler.addFilter(lambda record: not record.name.startswith(file_only))
    logging.getLogger("lorarl.iterations").setLevel(logging.INFO)


def chain(exc: BaseException):
    """An exception, its cause, and theirs."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def disk_full(exc: BaseException, run_dir: Path) -> str | None:
    """One line for a full disk anywhere in ``exc``'s chain (TensorBoard's writer thread, the base
    model, a log file), naming the directory; None when the failure is something else."""
    full = next((e for e in chain(exc) if isinstance(e, OSError) and e.errno in _DISK_FULL
                 or "no space left on device" in str(e).lower()), None)  # safetensors' error is no OSError
    if full is None:
        return None
    where = Path(full.filename).parent if getattr(full, "filename", None) else None
    if where is None:
        frames = "".join(traceback.format_exception(full))
        where = run_dir / "tb" if "tensorboard" in frames else run_dir
    return f"disk full: no space left on device in {where}"


def quiet_disk_full_in_threads() -> None:
    """A writer thread (TensorBoard's) that hits a full disk prints nothing: the main thread meets
    the same error on its next write and says it in one line (``disk_full``)."""
    previous = threading.excepthook

    def hook(args):
        if not (isinstance(args.exc_value, OSError) and args.exc_value.errno in _DISK_FULL):
            previous(args)

    threading.excepthook = hook


def fresh_run_dir(run_dir: Path) -> bool:
    """Whether this invocation made ``run_dir`` (Hydra writes .hydra/ and train.log first)."""
    return run_dir.is_dir() and not (set(p.name for p in run_dir.iterdir()) - {".hydra", "train.log"})


def discard_run_dir(run_dir: Path) -> None:
    """A run that ends in a config error leaves no directory behind (when it made it)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == run_dir:
            handler.close()
            logging.getLogger().removeHandler(handler)
    shutil.rmtree(run_dir, ignore_errors=True)
