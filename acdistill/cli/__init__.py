"""The `acdistill` command: one module per stage, each registering its command here."""

import typer

from acdistill.cli import (
    ablate,
    adv_finetune,
    attack_eval,
    distill,
    fetch_teacher,
    figures,
    listing,
    report,
    reproduce,
    transfer_probe,
)

app = typer.Typer(
    name="acdistill",
    help="Transfer adversarial robustness from a robust teacher to a small student, and measure it.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion: the registries' names complete the options that take them
    pretty_exceptions_enable=False,
)

for _module in (
    fetch_teacher,
    distill,
    adv_finetune,
    attack_eval,
    transfer_probe,
    ablate,
    reproduce,
    figures,
    report,
    listing,
):
    _module.register(app)
