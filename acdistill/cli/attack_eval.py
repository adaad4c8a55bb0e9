"""acdistill attack-eval: accuracy of a model under each attack, as JSON, a terminal table and markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from acdistill.attacks import EVAL_ATTACKS
from acdistill.cli.common import (
    STAGE,
    FormatOpt,
    NormalizeOpt,
    choice,
    given,
    load,
    parse_normalize,
    shared_options,
    user_errors,
)
from acdistill.models import list_models
from acdistill.pipeline import evaluate_checkpoint


def parse_eps_list(text: str) -> list[str]:
    """'0,2/255,8/255' -> its items; params validation turns each into a number (or names the bad one)."""
    return [item.strip() for item in text.split(",") if item.strip()]


@shared_options(last=("force", *STAGE))
def attack_eval(
    model: Annotated[
        Path,
        typer.Option(
            help="checkpoint: ours (.safetensors + .json sidecar), or a released state "
            "dict (.safetensors / .pt, read with weights_only=True)"
        ),
    ],
    arch: Annotated[
        str | None,
        choice(
            "architecture of a bare state dict in acdistill's layout (released layouts name their own): ", list_models
        ),
    ] = None,
    fmt: FormatOpt = None,
    normalize: NormalizeOpt = None,
    attacks: Annotated[
        str | None,
        choice("comma-separated, from: ", EVAL_ATTACKS.names, " (see `acdistill attacks`)", comma_separated=True),
    ] = None,
    n: Annotated[int | None, typer.Option(help="evaluate the first n test images")] = None,
    eps: Annotated[str | None, typer.Option(help="budget, e.g. 8/255 (L-inf) or 0.5 (L2)")] = None,
    norm: Annotated[str | None, typer.Option(help="threat model: Linf or L2")] = None,
    steps: Annotated[
        int | None, typer.Option(help="iterations of every iterative attack (pgd*, cw*, aa-fast) instead of their own")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="attack batch size")] = None,
    sweep: Annotated[
        str | None,
        typer.Option(
            help="accuracy-vs-eps curve at these comma-separated eps (e.g. 0,2/255,4/255,8/255,16/255) for the attack "
            "eval.sweep.attack (default pgd20)"
        ),
    ] = None,
    sanity: Annotated[
        bool,
        typer.Option(
            "--sanity", help="also run the gradient-masking checks (more steps, larger eps, Square, huge eps)"
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="JSON to write; a markdown report goes beside it (.md), the sweep as _sweep.json and _sweep.png"
        ),
    ] = None,
    **shared: Any,
) -> None:
    """Evaluate a model under attacks on the params' test subset (section `eval`)."""
    attack_list = [a.strip() for a in attacks.split(",") if a.strip()] if attacks is not None else None
    options = given("eval", attacks=attack_list, n=n, eps=eps, norm=norm, steps=steps, batch_size=batch_size)
    sweep_eps = parse_eps_list(sweep) if sweep is not None else None
    params, stage = load(shared, options | {"eval.sweep.eps": ("--sweep", sweep_eps)})
    evaluate_checkpoint(
        params,
        model=model,
        out=out,
        arch=arch,
        format=fmt,
        normalize=parse_normalize(normalize),
        sanity=sanity,
        **stage,
    )


def register(app: typer.Typer) -> None:
    app.command("attack-eval")(user_errors(attack_eval))
