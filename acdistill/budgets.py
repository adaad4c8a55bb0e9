"""Perturbation budgets as params declare them: a leaf module, so that the methods and the params can both use it.

Numbers of pixel scale may be written as fractions ("8/255").
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field


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
Eps = Annotated[float, BeforeValidator(fraction), Field(ge=0)]  # L-inf budgets are also capped at 1 where used


class Strict(BaseModel):
    """A params section: unknown keys are errors, and a validated section is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainAttack(Strict):
    """The training attack's L-inf budget; each method chooses its loss and random start."""

    eps: PixelFloat = 8 / 255
    step_size: PixelFloat = 2 / 255
    steps: int = Field(10, ge=0)
