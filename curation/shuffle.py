"""`shuffle`: a global random permutation of the documents.

Useful before sampling or splitting a mixture so that no source or crawl order survives into later
steps. It is a global op: Ray Data's ``random_shuffle`` moves every row across the cluster, so the
runner materialises its input and output as Parquet (a stage boundary). With a ``seed`` the
permutation is repeatable for the same input blocks.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from curation.operator import GlobalContext, GlobalOp, OpConfig, register_op


class ShuffleConfig(OpConfig):
    seed: int | None = Field(0, description="seed for a repeatable shuffle; null for a different order each run")


@register_op
class Shuffle(GlobalOp):
    """Randomly permute all documents (a global Ray Data shuffle)."""

    name = "shuffle"
    memory = ("Ray Data's random shuffle: blocks in the object store, spilled to disk beyond it; a worker holds "
              "a few blocks")
    Config = ShuffleConfig

    def apply(self, ds: Any, context: GlobalContext) -> Any:
        return ds.random_shuffle(seed=self.config.seed)
