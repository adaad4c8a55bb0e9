"""A method added in one file: defined and registered here, exactly as a file in acdistill/methods/ would be, it
trains through the CLI, and the registry-driven tests (tests/test_methods.py) test it without any edit."""

import json
import shutil

from conftest import MIRROR, REPO, run
from pydantic import Field
from toy_methods import close, kl_rows64, loss_values

from acdistill.attacks import ce_objective
from acdistill.losses import kl_rows
from acdistill.methods import METHODS
from acdistill.methods.base import Method, MethodParams, register_method


class AdvKDParams(MethodParams):
    tau: float = Field(4.0, gt=0)


@register_method
class AdvKD(Method):
    """KD on PGD examples: tau^2 KL(T(x)/tau || S(x')/tau)."""

    name = "adv_kd"
    needs_teacher = True
    Params = AdvKDParams

    def perturb(self, batch):
        return self.run_attack(lambda: ce_objective(self.student, batch.y), batch.x, "uniform")

    def loss(self, batch, x_adv):
        tau = self.params.tau
        return {"kl": tau**2 * kl_rows(self.teacher_logits(batch.x), self.student(x_adv), tau).mean()}


def test_loss_is_kd_on_the_adversarial_inputs(toy):
    s, t, batch, x_adv = toy
    assert loss_values("adv_kd", toy, tau=2.0) == close({"kl": 4 * kl_rows64(t(batch.x), s(x_adv), 2.0).mean().item()})


def test_it_registers_and_trains_through_the_cli(tmp_path, monkeypatch):
    assert "adv_kd" in METHODS.names()
    shutil.copy(REPO / "tests" / "tiny_params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACDISTILL_DATA_DIR", str(MIRROR))
    run("fetch-teacher", "-S", "teacher.train.epochs=1")
    assert "adv_kd" in run("methods").output
    run("distill", "--method", "adv_kd", "-S", "distill.adv_kd.tau=2", "-S", "data.train_subset=32")
    summary = json.loads((tmp_path / "models/student.json").read_text())["info"]
    assert summary["method"] == "adv_kd" and summary["train_images"] == 32
    assert (tmp_path / "dvclive/student/plots/metrics/loss/kl.tsv").is_file()
