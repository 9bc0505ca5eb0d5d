"""No setting silently dropped (kdlightning.job.keys, kdlightning.job.precheck): a key nothing
reads is refused with the nearest valid one; a value of the wrong kind is refused before the
slow imports. (The real command line: tests/e2e/test_cli.py.)"""

from __future__ import annotations

import pytest
from conftest import CONF_DIR, compose, config_options
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from kdlightning.job.errors import ConfigError
from kdlightning.job.keys import (
    TARGET_GROUPS,
    added_keys,
    check_added_keys,
    check_target_keys,
    closest,
    target_nodes,
)
from kdlightning.job.precheck import (
    TASKS,
    baseline_config,
    check_missing,
    check_task,
    check_value_kinds,
    precheck,
)


def added(*overrides: str):
    """(composed config, its overrides, the baseline without the settings)"""
    return compose(list(overrides)), list(overrides), compose([])


def test_closest_is_difflib_with_a_typo_cutoff() -> None:
    assert closest("temprature", ["temperature", "alpha"]) == "temperature"
    assert closest("xyz", ["temperature", "alpha"]) is None


def test_a_plus_typo_under_kd_is_refused_with_the_nearest_key() -> None:
    cfg, overrides, baseline = added("+kd.temprature=4")
    with pytest.raises(ConfigError, match=r"kd\.temprature is not a setting \(did you mean "
                       r"kd\.temperature\?\); fix the name or remove it"):  # fmt: skip
        check_added_keys(cfg, overrides, baseline)


def test_without_a_baseline_a_plus_key_is_still_refused() -> None:
    cfg, overrides, _ = added("+kd.temprature=4")
    with pytest.raises(ConfigError, match=r"did you mean kd\.temperature"):
        check_added_keys(cfg, overrides, None)


def test_force_add_of_a_key_the_yaml_defines_is_a_plain_change() -> None:
    cfg, overrides, baseline = added("++kd.temperature=4")
    check_added_keys(cfg, overrides, baseline)
    check_added_keys(cfg, overrides, None)  # no baseline: ++ is not judged
    cfg, overrides, baseline = added("++kd.temprature=4")
    with pytest.raises(ConfigError, match=r"did you mean kd\.temperature"):
        check_added_keys(cfg, overrides, baseline)


def test_a_nested_addition_is_reported_at_its_first_new_part() -> None:
    cfg, overrides, baseline = added("+kd.alfa.x=1")
    with pytest.raises(ConfigError, match=r"kd\.alfa is not a setting \(did you mean kd\.alpha"):
        check_added_keys(cfg, overrides, baseline)


def test_a_key_no_key_is_near_lists_the_valid_ones() -> None:
    cfg, overrides, baseline = added("+teacher.zzz=1")
    with pytest.raises(ConfigError, match=r"teacher\.zzz is not a setting \(teacher has: "):
        check_added_keys(cfg, overrides, baseline)


def test_additions_outside_the_checked_groups_and_group_choices_are_not_keys() -> None:
    assert added_keys(["+sweep=temperature_alpha", "kd=dkd", "+kd.x=1", "+foo.bar=1",
                       "++data.y=2", "hydra.run.dir=x", "+teacher/model=cnn"]) == [
        "kd.x", "data.y"]  # fmt: skip


def test_an_addition_under_a_target_node_is_checked_against_its_signature() -> None:
    cfg, overrides, baseline = added("+data.bach_size=3")
    check_added_keys(cfg, overrides, baseline)  # needs the signature: left to the next check
    with pytest.raises(ConfigError, match=r"data\.bach_size is not a setting \(kdlightning\.data"
                       r"\.DigitsDataModule takes no argument bach_size\) \(did you mean "
                       r"data\.batch_size\?\)"):  # fmt: skip
        check_target_keys(cfg, added_keys(overrides))


def test_a_typo_in_a_yaml_file_under_a_target_node_is_refused() -> None:
    cfg = compose([])
    with open_dict(cfg):  # as an experiment file or conf/local/default.yaml would add it
        cfg.optim.optimizer.weight_decya = 0.1
    with pytest.raises(ConfigError, match=r"optim\.optimizer\.weight_decya .*did you mean "
                       r"optim\.optimizer\.weight_decay"):  # fmt: skip
        check_target_keys(cfg)


def test_a_skipped_group_is_checked_for_the_command_lines_additions_only() -> None:
    cfg = compose([])
    with open_dict(cfg):
        cfg.kd._target_ = "difflib.SequenceMatcher"  # as when methods are classes (kd._target_)
        cfg.kd.temprature = 4
    check_target_keys(cfg, [], skip=("kd",))  # the kd YAML's own keys: the job reads some
    with pytest.raises(ConfigError, match=r"kd\.temprature is not a setting"):
        check_target_keys(cfg, ["kd.temprature"], skip=("kd",))


def test_a_callbacks_typo_is_refused_a_new_callback_is_not() -> None:
    overrides = ["+callbacks.model_checkpoint.patience=3", "+callbacks.mine={_target_: x.Y}"]
    cfg, _, baseline = added(*overrides)
    check_added_keys(cfg, overrides, baseline)  # callbacks and loggers are open dicts
    with pytest.raises(ConfigError, match=r"callbacks\.model_checkpoint\.patience is not"):
        check_target_keys(cfg, added_keys(overrides))


def test_a_target_taking_kwargs_accepts_any_key() -> None:
    cfg = compose([])
    with open_dict(cfg):
        cfg.data = OmegaConf.create({"_target_": "builtins.dict", "anything": 1})
    check_target_keys(cfg)


@pytest.mark.parametrize("key", ["trainer.callbacks", "trainer.logger", "trainer.default_root_dir"])
def test_trainer_arguments_the_job_sets_are_refused_with_where_to_set_them(key: str) -> None:
    cfg, overrides, baseline = added(f"+{key}=null")
    with pytest.raises(ConfigError, match=f"{key} is set by the job for each stage; use "):
        check_added_keys(cfg, overrides, baseline)
    with pytest.raises(ConfigError, match=f"{key} is set by the job"):
        check_target_keys(cfg, [key])


@pytest.mark.parametrize("group", [g for g in TARGET_GROUPS if g not in ("teacher", "student")])
def test_every_option_of_a_checked_group_passes_the_key_checks(group: str) -> None:
    """No false alarm: every YAML file's keys are arguments of its targets."""
    for name in config_options(group):
        cfg = compose([f"{group}={name}"])
        check_target_keys(cfg, [], skip=("kd",))


@pytest.mark.parametrize("name", config_options("experiment"))
def test_every_experiment_passes_the_key_checks(name: str) -> None:
    cfg = compose([f"experiment={name}"])
    check_target_keys(cfg, [], skip=("kd",))
    assert any(True for _ in target_nodes(cfg))


def test_every_model_family_passes_the_key_checks_in_both_roles() -> None:
    for role in ("teacher", "student"):
        for name in config_options(role):
            check_target_keys(compose([f"{role}={name}"]), [])


# --- the value checks before the slow imports --------------------------------------------------


def kinds(*overrides: str, groups: tuple[str, ...] = ()) -> None:
    check_value_kinds(compose([*groups, *overrides]), list(overrides), compose(list(groups)))


def test_a_word_where_the_yaml_has_a_number_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^kd\.temperature='abc' is not a number \(its default "
                       r"is 2\.0\); set kd\.temperature=<number>$"):  # fmt: skip
        kinds("kd.temperature=abc")
    with pytest.raises(ConfigError, match=r"kd\.beta=True is not a number \(its default is 8\.0"):
        kinds("kd.beta=true", groups=("kd=dkd",))


def test_a_word_where_the_yaml_has_a_boolean_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"resume='yes' is not true or false \(its default is "
                       r"false\); set resume=true or resume=false"):  # fmt: skip
        kinds("resume=yes")


def test_numbers_of_the_other_kind_and_null_pass() -> None:
    kinds("kd.temperature=4", "seed=3", "cache.lock_timeout_s=0.5", "data.num_labeled=null")


def test_under_a_target_only_a_float_default_holds() -> None:
    # Lightning takes devices=auto and deterministic=warn: integers and booleans are not judged
    kinds("trainer.devices=auto", "trainer.deterministic=warn", "trainer.max_epochs=ten")
    with pytest.raises(ConfigError, match=r"data\.val_fraction='most' is not a number"):
        kinds("data.val_fraction=most")


def test_task_and_missing_values_are_checked_from_the_config_alone() -> None:
    assert TASKS == ("distill", "classify", "eval")
    with pytest.raises(ConfigError, match="task='clasify' is not a task; use task=distill"):
        check_task("clasify")
    with pytest.raises(ConfigError, match=r"data\.root must be set .* \(the folder holding"):
        check_missing(compose(["data=imagefolder"]))


def test_the_run_module_keeps_the_same_tasks() -> None:
    from kdlightning.job.run import TASKS as RUN_TASKS

    assert RUN_TASKS == TASKS


def test_baseline_keeps_the_group_choices_and_drops_the_settings() -> None:
    overrides = ["kd=dkd", "kd.temperature=8", "+kd.x=1", "seed=5", "debug=fast"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        full = hydra_compose("train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(full)
        base = baseline_config(overrides)
    assert base is not None
    assert base.kd.method == "dkd" and base.kd.temperature == 4.0 and "x" not in base.kd
    assert base.seed == 0 and base.trainer.limit_train_batches == 3  # debug=fast kept
    assert baseline_config(overrides) is None  # outside a running Hydra app


def test_precheck_returns_the_added_keys_it_left_to_the_signature_check() -> None:
    overrides = ["+data.bach_size=3", "kd.temperature=4"]
    assert precheck(compose(overrides), overrides) == ["data.bach_size"]
