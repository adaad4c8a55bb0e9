"""The perturbation budget (threat model) of every attack, training's and evaluation's, and the params types that
declare one: a leaf module, so that the methods, the attacks and the params can all use it.

Numbers of pixel scale may be written as fractions ("8/255").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from acdistill.errors import AcdistillError

Norm = Literal["Linf", "L2"]
NORMS: tuple[Norm, ...] = get_args(Norm)
# The largest radius of each norm's ball around an image in [0, 1] pixel units: an L-inf ball of radius 1 already
# holds every image, so a larger L-inf eps is most often one written in 1/255 units; an L2 ball grows with the
# image size.
LARGEST_EPS: dict[Norm, float] = {"Linf": 1.0, "L2": math.inf}


def fraction(value: Any) -> Any:
    """ "8/255" -> 0.0313...; anything else is left to pydantic's own checks."""
    if isinstance(value, str):
        num, _, den = value.replace(" ", "").partition("/")
        try:
            return float(num) / float(den or 1)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"expected a number or a fraction like 8/255, got '{value}'") from None
    return value


def eps_text(eps: float, norm: str = "Linf") -> str:
    """A budget as the field writes it: an L-inf eps on the 1/255 grid as k/255 (8/255, not 0.03137), any other
    as a plain number."""
    steps = eps * 255
    if norm == "Linf" and abs(steps - round(steps)) < 1e-3:  # JSON keeps eps to 6 decimals: 4/255 -> 0.015686
        return f"{round(steps)}/255" if round(steps) else "0"
    return f"{eps:.4g}"


def pixel_scale_hint(value: float) -> str:
    """What to say of a pixel-scale number above 1: most often a budget written in 1/255 units."""
    return f"{value:g} is above 1, but pixel values are in [0, 1] units: did you mean {value:g}/255?"


def at_most_one(value: float) -> float:
    if value > 1:
        raise ValueError(pixel_scale_hint(value))
    return value


PixelFloat = Annotated[float, BeforeValidator(fraction), Field(ge=0), AfterValidator(at_most_one)]
Eps = Annotated[float, BeforeValidator(fraction), Field(ge=0)]  # capped by LARGEST_EPS where the norm is known


@dataclass(frozen=True)
class Budget:
    """The threat model of one attack run, in [0, 1] pixel units: the `norm` ball of radius `eps` (at most
    LARGEST_EPS[norm]), searched in `steps` iterations of `step_size`. None keeps each attack's own: the evaluation
    attacks' protocols fix their step sizes, and their iteration counts unless `steps` is given; the training attack
    gets both from its params section (TrainAttack.budget). Raises AcdistillError on an unknown norm, an eps out of
    range or negative steps."""

    eps: float = 8 / 255
    norm: Norm = "Linf"
    steps: int | None = None
    step_size: float | None = None

    def __post_init__(self):
        if self.norm not in NORMS:
            raise AcdistillError(f"unknown norm '{self.norm}'; choose from: {', '.join(NORMS)}")
        if not 0 <= self.eps <= LARGEST_EPS[self.norm]:
            raise AcdistillError(f"eps must be in [0, 1] for L-inf (>= 0 for L2), got {self.eps}")
        if self.steps is not None and self.steps < 0:
            raise AcdistillError(f"steps must be >= 0, got {self.steps}")


class Strict(BaseModel):
    """A params section: unknown keys are errors, and a validated section is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainAttack(Strict):
    """The training attack's L-inf budget as a params section declares it; each method chooses its loss and random
    start."""

    eps: PixelFloat = 8 / 255
    step_size: PixelFloat = 2 / 255
    steps: int = Field(10, ge=0)

    def budget(self) -> Budget:
        """This section's budget, as the methods' attack and the trainer's monitor take it."""
        return Budget(self.eps, "Linf", self.steps, self.step_size)
