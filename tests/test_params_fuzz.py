"""Property-based: whatever a user writes into params.yaml or -S, the answer is a valid config or one line that
says what is wrong (an AcdistillError; through the CLI, exit code 2), never a traceback."""

import pytest
import yaml
from conftest import REPO, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acdistill.config import load_params, parse_override
from acdistill.errors import AcdistillError

DEFAULTS = yaml.safe_load((REPO / "params.yaml").read_text())


def dotted_keys(node: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        keys.append(prefix + str(key))
        if isinstance(value, dict):
            keys += dotted_keys(value, f"{prefix}{key}.")
    return keys


KNOWN_KEYS = dotted_keys(DEFAULTS)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["8/255", "1/0", "x/255", "-3", "1e400", "[", "cifar10", "gacd"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6) | st.integers(0, 3), inner, max_size=3)
    ),
    max_leaves=6,
)
keys = st.sampled_from(KNOWN_KEYS) | st.builds(
    lambda k, extra: f"{k}.{extra}", st.sampled_from(KNOWN_KEYS), st.text("abcdefgh_.", min_size=1, max_size=6)
)
edits = st.lists(st.tuples(keys, values), min_size=1, max_size=4)


def check_one_line(call) -> None:
    try:
        call()
    except AcdistillError as e:
        assert str(e) and "\n" not in str(e)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=edits)
def test_random_edits_of_a_valid_file_validate_or_give_one_line(tmp_path, edits):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(DEFAULTS))
    check_one_line(lambda: load_params(path, dict(edits)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_random_file_contents_validate_or_give_one_line(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    check_one_line(lambda: load_params(path))


def flow(value) -> str:
    """A value as one line of YAML, as a user would type it after -S key=."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=edits)
def test_random_overrides_through_the_cli_exit_2_with_one_line(tmp_path, monkeypatch, edits):
    """A config that validates goes on to the missing teacher, which is a user error too. The last -S keeps the
    method one that needs a teacher, so that no example trains for real."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(DEFAULTS))
    sets = [arg for key, value in edits for arg in ("-S", f"{key}={flow(value)}")]
    run("distill", "--teacher", "missing.safetensors", *sets, "-S", "distill.method=gacd", ok=False)


@pytest.mark.parametrize("override", ["distill.epochs=", "=3", "distill", "distill.attack.eps=[", "data.dataset.x=1"])
def test_malformed_overrides_give_one_line(override):
    with pytest.raises(AcdistillError) as e:
        load_params(REPO / "params.yaml", dict([parse_override(override)]))
    assert "\n" not in str(e.value)
