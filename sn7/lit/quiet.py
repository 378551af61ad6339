"""Lightning's start-up lines that tell an sn7 user nothing, each silenced at its source by its
exact text: a tip to install a cloud logger, and a torch deprecation warning raised inside
Lightning's own code (not ours to fix). Other Lightning messages and warnings are untouched."""

from __future__ import annotations

import logging
import warnings

LITLOGGER_TIP = "💡 Tip: For seamless cloud logging"
# rank_zero_info's logger: it carries every other Lightning info line too, so a filter, not a level
_RANK_ZERO_LOG = "pytorch_lightning.utilities.rank_zero"


class _DropTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LITLOGGER_TIP)


_DROP_TIP = _DropTip()


def quiet_lightning() -> None:
    """Install both filters (idempotent)."""
    logging.getLogger(_RANK_ZERO_LOG).addFilter(_DROP_TIP)
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"pytorch_lightning\.utilities\._pytree",
    )
