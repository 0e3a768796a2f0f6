"""``mindspore.parallel``: the executor that runs sharded ops, and checkpoint resharding."""
from . import _executor  # noqa: F401  (registers the primitive executor)

__all__: list[str] = []
