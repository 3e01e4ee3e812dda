"""Training-loop hooks.

:class:`TrainerCallback` packs every checkpoint a training loop saves into a
tdelta store, with its step and metrics, and can tag the best one by a
metric. It works as a Hugging Face ``transformers`` Trainer callback
(``Trainer(..., callbacks=[TrainerCallback(store)])``: its ``on_save``
event) without importing ``transformers``, and from a plain loop through
:meth:`TrainerCallback.pack_checkpoint`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, Mapping, Optional, Union

from . import Record, Store

__all__ = ["TrainerCallback"]


def _number(v: Any) -> Optional[float]:
    if isinstance(v, bool):
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, (int, float)) and math.isfinite(v):
        return v
    return None


class TrainerCallback:
    """Packs each saved checkpoint directory into ``store``.

    ``metric`` (e.g. ``"eval_loss"``) names the metric that picks the best
    checkpoint; the version with the best value so far gets tag
    ``best_tag`` (lower is better unless ``greater_is_better``). Other
    keyword arguments go to :meth:`tdelta.Store.pack` (``policy``,
    ``exclude``, ``lossy``...). ``last`` is the report of the last pack.

    Every other Trainer event is accepted and ignored, so the Trainer can
    call any ``on_*`` method.
    """

    def __init__(
        self,
        store: Union[Store, str, "os.PathLike[str]"],
        *,
        metric: Optional[str] = None,
        greater_is_better: bool = False,
        best_tag: str = "best",
        message: str = "step {step}",
        **pack_options: Any,
    ) -> None:
        self.store = store if isinstance(store, Store) else Store(store)
        self.metric = metric
        self.greater_is_better = greater_is_better
        self.best_tag = best_tag
        self.message = message
        self.pack_options = pack_options
        self.best: Optional[float] = None
        self.last: Optional[Record] = None

    def pack_checkpoint(self, path: Union[str, "os.PathLike[str]"], step: int, metrics: Optional[Mapping[str, Any]] = None) -> Record:
        """Packs checkpoint ``path`` saved at ``step`` with ``metrics``
        (numbers kept, the rest dropped), tagging it when it is the best."""
        kept: Dict[str, float] = {}
        for k, v in (metrics or {}).items():
            n = _number(v)
            if n is not None:
                kept[str(k)] = n
        rep = self.store.pack(
            path,
            message=self.message.format(step=step, **kept),
            meta={"step": step},
            metrics={"step": step, **kept},
            **self.pack_options,
        )
        value = kept.get(self.metric) if self.metric else None
        if value is not None and (
            self.best is None or (value > self.best if self.greater_is_better else value < self.best)
        ):
            self.best = value
            self.store.tag(self.best_tag, rep["id"], force=True, reason=f"{self.metric}={value}")
        self.last = rep
        return rep

    # --- transformers.TrainerCallback protocol ---------------------------

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Packs ``{args.output_dir}/checkpoint-{state.global_step}`` with the
        metrics logged at or before that step (``state.log_history``)."""
        step = int(state.global_step)
        path = os.path.join(args.output_dir, f"checkpoint-{step}")
        metrics: Dict[str, Any] = {}
        for entry in getattr(state, "log_history", None) or []:
            if entry.get("step", step) <= step:
                metrics.update(entry)
        metrics.pop("step", None)
        self.pack_checkpoint(path, step, metrics)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)
