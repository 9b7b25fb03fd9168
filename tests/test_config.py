from pathlib import Path

import pytest
import yaml

from metarl.experiment.config import ConfigError, apply_overrides, load_config, read_config_file, validate

CONFIGS = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    config = load_config(path)
    untrained = path.name.endswith("-random.yaml")  # the random baseline trains for 0 iterations
    assert (config.train.iterations == 0) == untrained and config.seed != config.evaluation.seed


def test_required_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"navigation-maml.yaml", "navigation-fomaml.yaml", "navigation-hfmaml.yaml"} <= names


def test_overrides_set_dotted_keys_with_yaml_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nmeta:\n  method: maml\n")
    config = load_config(path, ["meta.inner_lr=0.05", "meta.method=hfmaml", "seed=7", "run.dir=/tmp/somewhere",
                                "train.iterations=3", "policy.hidden_sizes=[8, 8]"])
    assert (config.meta.inner_lr, config.meta.method, config.seed) == (0.05, "hfmaml", 7)
    assert config.run.dir == "/tmp/somewhere" and config.train.iterations == 3
    assert config.policy.hidden_sizes == [8, 8]


@pytest.mark.parametrize(
    "override,expected",
    [
        ("meta.inner_lr=-1", ["meta.inner_lr = -1", "greater than 0"]),
        ("meta.method=reptile", ["meta.method = 'reptile'", "'maml', 'fomaml', 'hfmaml' or 'pretrain'"]),
        ("train.iterations=many", ["train.iterations = 'many'", "integer"]),
        ("meta.batch_size=3", ["meta.batch_size", "unknown field"]),
        ("env.family=hopper", ["env.family = 'hopper'", "unknown task family", "navigation2d"]),
        ("env.kwargs={horizon: 0}", ["env: env.kwargs", "horizon"]),
        ("meta.batch_size=3", ["allowed here:", "batch_tasks", "inner_lr"]),
        ("seed=-1", ["seed = -1", "greater than or equal to 0"]),
        ("meta.batch_tasks=true", ["meta.batch_tasks = True", "valid integer"]),
        ("evaluation.seed=-5", ["evaluation.seed = -5"]),
        ("meta.inner_lr=.inf", ["meta.inner_lr = inf", "finite"]),
        ("surrogate.gamma=1.5", ["surrogate.gamma = 1.5", "less than or equal to 1"]),
        ("surrogate.baseline_ridge=l2", ["surrogate.baseline_ridge = 'l2'", "'relative' or 'absolute'"]),
        ("meta.hf_delta_rule=theory", ["meta", "rho"]),
        ("outer.kind=adaptive_sgd", ["outer", "smoothness", "lipschitz = 'online'"]),
        ("evaluation.seed=0", ["evaluation.seed = 0 equals seed"]),
        ("evaluation.tasks=1", ["evaluation.tasks = 1", "greater than or equal to 2"]),
    ],
)
def test_errors_name_field_value_and_what_is_allowed(override, expected):
    with pytest.raises(ConfigError) as info:
        validate(apply_overrides({"seed": 0}, [override]), "test.yaml")
    for text in expected:
        assert text in str(info.value)


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="dotted.key=value"):
        apply_overrides({}, ["inner_lr"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_every_method_takes_every_surrogate():
    for method in ("maml", "fomaml", "hfmaml"):
        for kind in ("dice", "reinforce", "lvc"):
            validate({"meta": {"method": method}, "surrogate": {"kind": kind}})


def test_the_library_defaults_are_the_papers_settings():
    """A config that names nothing runs Finn et al.'s estimator and outer step (configs/presets/finn2017.yaml)."""
    preset = yaml.safe_load((Path(__file__).parent.parent / "configs/presets/finn2017.yaml").read_text())
    defaults = validate({}).model_dump()
    for section in ("policy", "meta", "surrogate", "outer", "evaluation"):
        for key, value in preset[section].items():
            assert defaults[section][key] == value, f"{section}.{key}"
    assert validate({"surrogate": {"kind": "dice"}}).surrogate.discount_scores  # DiCE's scores are discounted


def test_dice_keeps_discounted_scores():
    with pytest.raises(ConfigError, match="dice.*discount_scores"):
        validate({"surrogate": {"kind": "dice", "discount_scores": False}})
    validate({"surrogate": {"kind": "reinforce", "discount_scores": False}})


def test_cross_field_errors_do_not_dump_the_config():
    with pytest.raises(ConfigError) as info:
        validate({"seed": 1, "evaluation": {"seed": 1}})
    assert str(info.value).splitlines()[1].startswith("  config: evaluation.seed = 1 equals seed")
    assert "{" not in str(info.value)


def test_exponents_without_a_dot_are_floats_and_bad_yaml_is_named():
    config = validate(apply_overrides({}, ["meta.inner_lr=2e-4", "env.kwargs={goal_low: -5e-1, goal_high: 5e-1}"]))
    assert config.meta.inner_lr == 2e-4 and config.env.kwargs == {"goal_low": -0.5, "goal_high": 0.5}
    with pytest.raises(ConfigError, match="override 'meta.method=\\[maml' is not valid YAML"):
        apply_overrides({}, ["meta.method=[maml"])


def test_online_lipschitz_needs_dice_and_feeds_the_theory_delta_rule():
    online = ["outer.kind=adaptive_sgd", "outer.lipschitz=online"]
    with pytest.raises(ConfigError, match="outer.lipschitz = 'online' with surrogate.kind = 'reinforce'"):
        validate(apply_overrides({"seed": 0}, [*online, "surrogate.kind=reinforce"]))
    config = validate(apply_overrides({"seed": 0}, [*online, "surrogate.kind=dice", "meta.method=hfmaml",
                                                    "meta.hf_delta_rule=theory"]))
    assert config.meta.rho is None and config.outer.estimates_online


def test_direction_families_take_a_forward_probability_and_reject_one_out_of_range():
    config = validate(apply_overrides({}, ["env.family=halfcheetah_dir", "env.kwargs={forward_probability: 0.8}"]))
    assert config.env.kwargs == {"forward_probability": 0.8}
    with pytest.raises(ConfigError, match=r"forward_probability must be in \[0, 1\], got 2"):
        validate(apply_overrides({}, ["env.family=ant_dir", "env.kwargs={forward_probability: 2}"]), "test.yaml")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_config_lays_its_sections_over_its_bases_in_order(tmp_path):
    write(tmp_path / "presets/paper.yaml",
          "seed: 4\nmeta: {inner_lr: 0.1, batch_tasks: 7}\nenv: {kwargs: {horizon: 30}}\n")
    write(tmp_path / "presets/short.yaml", "train: {iterations: 3}\nmeta: {batch_tasks: 2}\n")
    path = write(tmp_path / "run.yaml", "base: [presets/paper.yaml, presets/short.yaml]\nname: run\n"
                                        "meta: {inner_lr: 0.2}\nenv: {kwargs: {oracle: true}}\n")
    config = load_config(path, ["seed=9"])
    assert (config.name, config.seed, config.train.iterations) == ("run", 9, 3)
    assert (config.meta.inner_lr, config.meta.batch_tasks) == (0.2, 2)  # own value, then the later base's
    assert config.env.kwargs == {"horizon": 30, "oracle": True}  # sections merge key by key
    assert "base" not in read_config_file(path)


def test_a_base_names_its_own_bases_relative_to_itself(tmp_path):
    write(tmp_path / "a/b/root.yaml", "train: {iterations: 5}\n")
    write(tmp_path / "a/mid.yaml", "base: b/root.yaml\nseed: 2\n")
    top = write(tmp_path / "top.yaml", "base: a/mid.yaml\n")
    assert read_config_file(top) == {"train": {"iterations": 5}, "seed": 2}


@pytest.mark.parametrize("files, message", [
    ({"top.yaml": "base: missing.yaml\n"}, r"missing.yaml' does not exist \(.*top.yaml -> .*missing.yaml\)"),
    ({"top.yaml": "base: other.yaml\n", "other.yaml": "base: top.yaml\n"}, "name each other as base"),
    ({"top.yaml": "base: top.yaml\n"}, "name each other as base"),
    ({"top.yaml": "base: [ ]\n"}, "give a file name or a list of file names"),
    ({"top.yaml": "base: {a: 1}\n"}, "give a file name or a list of file names"),
    ({"top.yaml": "base: other.yaml\n", "other.yaml": "- a list\n"}, "must hold a mapping of sections"),
])
def test_bad_bases_are_named(tmp_path, files, message):
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "top.yaml")


def test_a_chain_of_bases_deeper_than_the_limit_is_refused(tmp_path):
    for i in range(12):
        write(tmp_path / f"c{i}.yaml", f"base: c{i + 1}.yaml\n" if i < 11 else "seed: 1\n")
    with pytest.raises(ConfigError, match="chain more than 8 files"):
        load_config(tmp_path / "c0.yaml")


def test_siblings_share_their_family_config():
    """A method's or baseline's config names only what differs from the family's MAML config."""
    root = Path(__file__).parent.parent / "configs"
    for family in ("navigation", "halfcheetah-vel", "halfcheetah-dir", "ant-vel", "ant-dir", "ant-goal"):
        for method in ("fomaml", "hfmaml", "random", "pretrained", "oracle"):
            own = yaml.safe_load((root / f"{family}-{method}.yaml").read_text())
            assert own["base"] == f"{family}-maml.yaml"
            assert own.keys() <= {"base", "name", "meta", "outer", "env", "train", "evaluation"}, (family, method)


def test_the_config_reference_is_generated_from_the_schema():
    """docs/configuration.md is what scripts/config_reference.py writes: edit the field docstrings, then run it."""
    from metarl.experiment.config_reference import render, rows, sections

    assert all(meaning for _, model in sections() for _, _, meaning in rows(model)), "a field has no description"
    page = Path(__file__).parent.parent / "docs" / "configuration.md"
    assert page.read_text(encoding="utf-8") == render(), "run: python scripts/config_reference.py"
