"""A quiet console for ``train.py`` and ``evaluate.py``: library notices that say nothing to a user
(Lightning's accelerator census and tips, deprecation warnings from libraries, save progress bars)
are silenced; lorarl's own lines and real warnings stay. With the progress bar on, the
per-iteration lines go to the run's log file only (the bar shows the same numbers)."""

from __future__ import annotations

import logging
import warnings


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
    if progress_bar:
        iterations = logging.getLogger("lorarl.iterations")
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler:  # the console, not the file handler
                handler.addFilter(lambda record: not record.name.startswith("lorarl.iterations"))
        iterations.setLevel(logging.INFO)
