import pytest
from conftest import REPO

from acdistill.config import fingerprint, load_params, parse_override
from acdistill.errors import AcdistillError
from acdistill.methods import METHODS
from acdistill.methods.ard import ARDParams


def test_repo_params_validate():
    p = load_params(REPO / "params.yaml")
    assert p.data.train_subset == 4000 and p.data.test_subset == 1000
    assert p.distill.attack.eps == pytest.approx(8 / 255)
    assert p.teacher.train.attack.step_size == pytest.approx(2.5 / 255)


def test_defaults_follow_spec():
    p = load_params(None)
    assert p.teacher.train.method == "sat" and p.aft.method == "sat" and p.aft.lr == 0.01
    assert p.distill.attack.steps == 10 and p.distill.attack.step_size == pytest.approx(2 / 255)


def test_method_section_is_validated_by_the_method():
    p = load_params(None, {"distill.method": "ard", "distill.ard": {"tau": 3}})
    assert p.distill.method_params() == ARDParams(tau=3.0)
    assert load_params(None, {"distill.method": "ard"}).distill.method_params() == ARDParams()


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"distill.foo": 1}, "distill: unknown key 'foo'"),
        ({"distill.ard.tauu": 1}, "distill: ard.tauu: unknown key"),
        ({"distill.ard.tau": -1}, "ard.tau: Input should be greater than 0"),
        ({"eval.attacks": ["nope"]}, "unknown attack 'nope'; choose from:"),
        (
            {"data.dataset": "imagenet"},
            "unknown dataset 'imagenet'; choose from: cifar10, cifar100, mnist, stl10, svhn",
        ),
        ({"teacher.source": "url"}, "source 'url' needs 'url' and 'sha256'"),
        ({"distill.attack.eps": "8/0"}, "distill.attack.eps: expected a number or a fraction"),
        ({"distill.epochs": 0}, "distill.epochs: Input should be greater than or equal to 1"),
        ({"eval.n_per_attack": {"pgd99": 5}}, "unknown attack 'pgd99'"),
        ({"eval.n_per_attack": {"aa-fast": 0}}, "n_per_attack: aa-fast: 0 images; give at least 1"),
    ],
)
def test_bad_params_name_the_key(override, expected):
    with pytest.raises(AcdistillError) as err:
        load_params(None, override)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_an_unknown_method_lists_the_registered_ones():
    with pytest.raises(AcdistillError) as err:
        load_params(None, {"distill.method": "nope"})
    assert str(err.value).endswith(f"unknown method 'nope'; choose from: {', '.join(sorted(METHODS.names()))}")


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("distill:\n  epohcs: 3\n")
    with pytest.raises(AcdistillError, match=rf"{f}: distill: unknown key 'epohcs'"):
        load_params(f)


def test_invalid_yaml_and_missing_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("distill: [unclosed\n")
    with pytest.raises(AcdistillError, match="invalid YAML at line"):
        load_params(f)
    with pytest.raises(AcdistillError, match="params file not found"):
        load_params(tmp_path / "missing.yaml")


def test_fractions_and_overrides():
    assert load_params(None, {"eval.eps": "4/255"}).eval.eps == pytest.approx(4 / 255)
    assert parse_override("distill.ard.tau=10") == ("distill.ard.tau", 10)
    assert parse_override("eval.attacks=[natural, fgsm]") == ("eval.attacks", ["natural", "fgsm"])
    with pytest.raises(AcdistillError, match="not KEY=VALUE"):
        parse_override("distill.epochs")


PAPER_SCALE = sorted(
    set((REPO / "configs").glob("*.yaml"))
    - {REPO / "configs" / name for name in ("study.yaml", "study-teacher.yaml", "gpu-quick.yaml")}
)


@pytest.mark.parametrize("preset", PAPER_SCALE, ids=lambda p: p.name)
def test_paper_scale_presets_validate(preset):
    p = load_params(preset)
    assert p.data.train_subset is None and p.distill.epochs >= 100


def test_the_gpu_quick_profile_validates_with_every_point():
    from acdistill.pipeline.points import point_params

    params = load_params(REPO / "configs/gpu-quick.yaml")
    assert params.data.train_subset is None and params.device == "cuda" and params.speed.step_graph
    points = {p["name"]: point_params(params, p) for p in params.ablate.points}
    methods = {name: (p.distill.method, p.speed.step_graph) for name, p in points.items()}
    assert methods == {
        "sat": ("sat", True),
        "ard": ("ard", True),
        "rslad": ("rslad", True),
        "crdnd": ("crdnd", True),
        "crdnd-no-acm": ("crdnd", True),
        "gacd": ("gacd", False),  # GACD cannot be graphed
        "gacd-aft": ("gacd", False),
        "gacd-eq10": ("gacd", False),
    }
    assert not points["crdnd-no-acm"].distill.method_params().acm and points["crdnd"].distill.method_params().acm
    literal = points["gacd-eq10"].distill.method_params()
    assert not literal.symmetric and not literal.embed_bn and literal.negatives == "bank"
    # one student architecture, data, training attack and epochs for every point
    shared = {(p.distill.student, p.distill.attack, p.distill.epochs, p.data) for p in points.values()}
    assert len(shared) == 1 and next(iter(shared))[0] == "resnet18"
    assert [p.get("adv_finetune", False) for p in params.ablate.points].count(True) == 1


def test_every_point_of_the_study_validates_at_every_searched_lr_and_its_teacher_is_the_released_file():
    from acdistill.pipeline.points import point_params

    params = load_params(REPO / "configs/study.yaml")
    search = params.ablate.search
    assert search.key == "distill.lr" and params.data.val_subset and params.teacher.source == "file"
    methods = {
        point_params(params, {**point, search.key: value}).distill.method
        for point in params.ablate.points
        for value in search.values
    }
    paper_methods = {"natural", "sat", "trades", "kd", "ard", "iad", "rslad", "gacd", "crdnd"}
    assert methods == paper_methods <= set(METHODS.names())
    assert not any(search.key in point for point in params.ablate.points)  # one search for every method
    teacher = load_params(REPO / "configs/study-teacher.yaml")
    assert teacher.data.train_subset is None and teacher.teacher.train.epochs > params.distill.epochs
    released = REPO / "study" / params.teacher.path
    assert released.is_file() and released.with_suffix(".json").is_file() and released.stat().st_size <= 5 * 2**20


def test_the_fingerprint_covers_the_run_method_section_and_no_other():
    ard = {"distill.method": "ard", "distill.ard": {"tau": 10}}
    reference = fingerprint(load_params(None, ard).distill)
    # A section the run never reads: editing it must not invalidate an ARD checkpoint or ablate point.
    assert fingerprint(load_params(None, {**ard, "distill.gacd": {"k": 16}}).distill) == reference
    assert fingerprint(load_params(None, {**ard, "distill.ard": {"tau": 10, "alpha": 1.0}}).distill) == reference
    assert fingerprint(load_params(None, {**ard, "distill.ard": {"tau": 20}}).distill) != reference


def test_ranges_stay_ranges_in_params_files_and_overrides(tmp_path):
    """YAML 1.1 reads 2:30 as the base-60 integer 150; params read it as the range it is."""
    from acdistill.config import parse_override

    assert parse_override("data.train_subset=2:30") == ("data.train_subset", "2:30")
    assert parse_override("distill.lr=5e-4")[1] == 0.0005 and parse_override("eval.eps=8/255")[1] == "8/255"
    (tmp_path / "p.yaml").write_text("data: {train_subset: 2:30, test_subset: 5:10, val_subset: 40:50}\n")
    data = load_params(tmp_path / "p.yaml").data
    assert (data.train_subset, data.test_subset, data.val_subset) == ("2:30", "5:10", "40:50")
    from acdistill.data.datasets import subset_indices

    assert subset_indices(data.train_subset).tolist() == list(range(2, 30))


@pytest.mark.parametrize(
    "eps, norm, text",
    [
        (8 / 255, "Linf", "8/255"),
        (round(4 / 255, 6), "Linf", "4/255"),
        (0.0, "Linf", "0"),
        (0.05, "Linf", "0.05"),
        (0.5, "L2", "0.5"),
        (127.5 / 255, "Linf", "0.5"),
    ],
)
def test_eps_is_written_as_the_field_writes_it(eps, norm, text):
    from acdistill.budgets import eps_text

    assert eps_text(eps, norm) == text
