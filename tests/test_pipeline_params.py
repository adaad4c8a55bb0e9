"""Each stage of both pipelines (dvc.yaml, study/dvc.yaml) declares the params sections its command reads, so that
`dvc status` sees every change that can change its outputs.

What a command reads is derived, not listed: every stage's command runs, in pipeline order, on a seconds-long
version of the pipeline's own params, while every read of a top-level section of the validated params is recorded.
The versions keep each pipeline's structure (its methods, attacks, ablation points) and shrink only sizes; the main
one also gets an ablation point that fine-tunes, which the quick profile has none of, so that every branch that
reads a section runs."""

import shlex
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run

from acdistill import config, create_model, save_model
from acdistill.config import Params

# Where and how fast a run executes, not what it computes: left out of fingerprints too (docs/pipeline.md).
NOT_A_RESULT = {"device", "speed"}
# Whether a model of another dataset is accepted at all: it refuses a run or lets it go, and changes no result, so a
# stage that reads only this key of its section does not depend on the section (and DVC would require the key in
# every params file).
ACCEPTANCE_ONLY = {"teacher": {"cross_dataset"}}

TINY_RUN = {
    "batch_size": 16,
    "epochs": 1,
    "monitor_n": 8,
    "monitor_steps": 1,
    "attack": {"steps": 1},
}
# Sizes only: the study's data, models, schedules and evaluation scaled down to seconds.
STUDY_SIZES = {
    "data": {"train_subset": 32, "test_subset": 16, "val_subset": "32:40"},
    "distill": {"student": "small_cnn", **TINY_RUN, "gacd": {"k": 8}},
    "aft": TINY_RUN,
    "eval": {"n": 8, "n_per_attack": {"aa-fast": 4}, "steps": 1},
    "figures": {"n": 16, "tsne_classes": [0, 9], "tsne_per_class": 2},
    # in this process, where the reads are recorded; two lr values
    "ablate": {"jobs": 1, "search": {"key": "distill.lr", "values": [0.05, 0.1], "by": "pgd20"}},
}
MAIN_ABLATION = {"ablate": {"grid": {}, "points": [{"name": "tuned", "adv_finetune": True}]}}


def merged(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        is_section = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = merged(base[key], value) if is_section else value
    return out


def stages(dvc_yaml: Path) -> list[tuple[str, str, set[str]]]:
    """(stage, command, declared top-level params sections) per stage, `foreach` expanded."""
    out = []
    for name, stage in yaml.safe_load(dvc_yaml.read_text())["stages"].items():
        expanded = (
            [(f"{name}@{item}", stage["do"], item) for item in stage["foreach"]]
            if "foreach" in stage
            else [(name, stage, None)]
        )
        for label, body, item in expanded:
            commands = body["cmd"] if isinstance(body["cmd"], list) else [body["cmd"]]
            for i, cmd in enumerate(commands):
                cmd = cmd if item is None else cmd.replace("${item}", item)
                out.append(
                    (label + (f"#{i + 1}" if len(commands) > 1 else ""), cmd, declared_sections(body.get("params", [])))
                )
    return out


def declared_sections(entries: list) -> set[str]:
    """`seed`, `distill.epochs` or {file: [keys]} entries, as top-level sections."""
    keys = []
    for entry in entries:
        keys += [entry] if isinstance(entry, str) else [k for ks in entry.values() for k in ks]
    return {key.split(".")[0] for key in keys}


@contextmanager
def recorded_reads(monkeypatch):
    """The top-level sections of any validated params read while the block runs; a section of ACCEPTANCE_ONLY
    counts only when a key other than those was read from it."""
    read: set[str] = set()
    keys: dict[str, set[str]] = {section: set() for section in ACCEPTANCE_ONLY}

    def recording(cls, record, by_validation: bool = True):
        original = cls.__getattribute__

        def getattribute(self, name):
            if name in cls.model_fields and (by_validation or sys._getframe(1).f_code.co_filename != config.__file__):
                record(name)
            return original(self, name)

        return getattribute

    with monkeypatch.context() as patch:
        patch.setattr(Params, "__getattribute__", recording(Params, read.add))
        for section in ACCEPTANCE_ONLY:
            cls = Params.model_fields[section].annotation
            # the section's own validators read its keys in every command: only the stages' reads count
            patch.setattr(cls, "__getattribute__", recording(cls, keys[section].add, by_validation=False))
        yield read
        read -= {s for s, only in ACCEPTANCE_ONLY.items() if s in read and keys[s] and keys[s] <= only}


def reads_per_stage(dvc_yaml: Path, cwd: Path, monkeypatch) -> dict[str, tuple[set[str], set[str]]]:
    """stage -> (sections its command read, sections dvc.yaml declares), each command run in `cwd`."""
    monkeypatch.chdir(cwd)
    out = {}
    for label, cmd, declared in stages(dvc_yaml):
        words = shlex.split(cmd)
        assert words[0] == "acdistill", f"{label}: {cmd}"
        with recorded_reads(monkeypatch) as read:
            run(*words[1:])
        out[label] = (read - NOT_A_RESULT, declared)
    return out


@pytest.fixture
def mirror_env(monkeypatch, mirror):
    monkeypatch.setenv("ACDISTILL_DATA_DIR", str(mirror))


def test_the_main_pipeline_declares_what_each_stage_reads(tmp_path, monkeypatch, mirror_env):
    tiny = yaml.safe_load((REPO / "tests" / "tiny_params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(merged(tiny, MAIN_ABLATION)))
    reads = reads_per_stage(REPO / "dvc.yaml", tmp_path, monkeypatch)
    assert "aft" in reads["ablate"][0]  # the fine-tuning point ran
    assert {label: read for label, (read, _) in reads.items()} == {
        label: declared for label, (_, declared) in reads.items()
    }


@pytest.mark.slow
def test_the_study_pipeline_declares_what_each_stage_reads(tmp_path, monkeypatch, mirror_env):
    (tmp_path / "configs").mkdir()
    (tmp_path / "study").mkdir()
    study = yaml.safe_load((REPO / "configs" / "study.yaml").read_text())
    (tmp_path / "configs" / "study.yaml").write_text(yaml.safe_dump(merged(study, STUDY_SIZES)))
    shutil.copy(REPO / "study" / "dvc.yaml", tmp_path / "study" / "dvc.yaml")
    # a small stand-in for the released teacher, at the path the study reads
    save_model(create_model("small_cnn"), tmp_path / "study" / study["teacher"]["path"], dataset="cifar10")
    reads = reads_per_stage(tmp_path / "study" / "dvc.yaml", tmp_path / "study", monkeypatch)
    assert {label: read for label, (read, _) in reads.items()} == {
        label: declared for label, (_, declared) in reads.items()
    }
