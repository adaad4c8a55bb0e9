"""Reading PyTorch pickle files (.pt, .pth, .tar, .t7) without ever running code from them.

Every file goes through `torch.load(weights_only=True)`, whose unpickler builds only tensors, containers and plain
values. Training scripts often store metadata beside the weights; numpy values (a `best_acc` numpy scalar, a dtype,
an array) are pure data that this unpickler can safely be told to build, so they are allowed. Any other object (an
`argparse.Namespace`, a model class, a function) is refused with a line that names it, and is never built.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acdistill.errors import AcdistillError


def _numpy_data_globals() -> list:
    scalar, reconstruct = np._core.multiarray.scalar, np._core.multiarray._reconstruct
    dtype_classes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    # Files written under numpy < 2 name the same functions by their old module path.
    return [
        scalar,
        reconstruct,
        np.ndarray,
        np.dtype,
        *dtype_classes,
        (scalar, "numpy.core.multiarray.scalar"),
        (reconstruct, "numpy.core.multiarray._reconstruct"),
    ]


@contextmanager
def numpy_metadata_allowed() -> Iterator[None]:
    """Within this context, `torch.load(weights_only=True)` also builds numpy scalars, dtypes and arrays."""
    with torch.serialization.safe_globals(_numpy_data_globals()):
        yield


def _first_sentence(error: BaseException) -> str:
    text = " ".join(str(error).split()) or error.__class__.__name__
    return text.split(". ")[0][:200]


def read_torch_file(path: str | Path) -> Any:
    """The object stored in a PyTorch pickle file, loaded on the CPU with weights_only=True.

    Raises AcdistillError (one line) for a file that holds other objects than data, naming the first one (it is
    not built), and for a truncated, corrupted or foreign file."""
    try:
        with numpy_metadata_allowed(), warnings.catch_warnings():
            # torch warns about pickle protocols above 2 before refusing the instructions it cannot read
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        blocked = re.search(r"GLOBAL (\S+)|but got <class '([^']+)'>", str(e))
        if blocked:
            raise AcdistillError(
                f"{path}: refused: it holds a pickled {blocked.group(1) or blocked.group(2)} "
                "object, which weights-only loading does not build (it could run code); save the "
                "state dict alone, e.g. torch.save(model.state_dict(), f)"
            ) from None
        opcode = re.search(r"Unsupported operand (\d+)", str(e))
        why = (
            f"pickle instruction {opcode.group(1)} is not one weights-only loading reads: a corrupted file, or "
            "one saved with pickle_protocol above 2"
            if opcode
            else _first_sentence(e)
        )
        raise AcdistillError(f"{path}: not a readable PyTorch file ({why})") from None
    except Exception as e:  # noqa: BLE001 - torch.load fails on foreign bytes with any exception type (KeyError...)
        raise AcdistillError(
            f"{path}: corrupted or not a PyTorch file ({e.__class__.__name__}: {_first_sentence(e)})"
        ) from None
