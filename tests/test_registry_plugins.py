"""Third-party plugin discovery: entry points found, broken plugins isolated, strict mode, disabling, clashes."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from icon_bench.errors import PluginLoadError, UnknownNameError
from icon_bench.hooks import registry
from icon_bench.hooks import specs as hookspecs
from icon_bench.hooks.registry import ENV_DISABLE, ENV_STRICT, load_registry


def _broken_builtins() -> set[str]:
    """Built-in modules that do not import (yet): disabled in strict tests so the failure is ours."""
    reg = load_registry(entry_points=False, strict=False)
    return {p.name for p in reg.failures}


KERNEL_PLUGIN = """
    from icon_bench import hookimpl

    def heavy_tail(dof: float = 1.0):
        '''A test kernel.'''
        return ("heavy_tail", dof)

    @hookimpl
    def register_kernels(register):
        register("heavy_tail", heavy_tail, aliases=("ht",))
"""


def test_third_party_plugin_is_discovered_with_its_distribution_and_version(site: Callable[..., str]) -> None:
    name = site("icon-bench-heavy", KERNEL_PLUGIN, entry="heavy")
    reg = load_registry()
    info = reg.plugins[name]
    assert info.status == "ok", info.error
    assert (info.distribution, info.version) == ("icon-bench-heavy", "1.2.3")
    comp = reg.get("kernel", "heavy_tail")
    assert (comp.plugin, comp.distribution, comp.version) == ("heavy", "icon-bench-heavy", "1.2.3")
    assert comp.description == "A test kernel."
    assert [(p.name, p.type, p.default) for p in comp.params] == [("dof", "float", 1.0)]
    assert reg.get("kernel", "ht") is comp
    assert reg.create("kernel", "heavy_tail", dof=3.0) == ("heavy_tail", 3.0)
    assert reg.distributions()["icon-bench-heavy"] == "1.2.3"


@pytest.mark.parametrize("kind", sorted(hookspecs.KINDS))
def test_every_hook_is_collected_from_a_third_party_plugin(site: Callable[..., str], kind: str) -> None:
    hook = hookspecs.KINDS[kind]
    name = site(
        f"icon-bench-only-{kind}",
        f"""
        from icon_bench import hookimpl

        def thing(size: int = 2):
            '''One {kind}.'''
            return size

        @hookimpl
        def {hook}(register):
            register("third_party_{kind}", thing)
        """,
    )
    reg = load_registry()
    assert reg.plugins[name].status == "ok", reg.plugins[name].error
    assert reg.plugins[name].components == [f"{kind}:third_party_{kind}"]
    assert reg.get(kind, f"third_party_{kind}").distribution == f"icon-bench-only-{kind}"
    for other in set(hookspecs.KINDS) - {kind}:
        assert f"third_party_{kind}" not in reg.names(other)


def _one_hook_plugin(site: Callable[..., str], hook: str, component: str) -> str:
    return site(
        f"icon-bench-{component}",
        f"""
        from icon_bench import hookimpl

        def factory():
            '''From {hook}.'''
            return "{component}"

        @hookimpl
        def {hook}(register):
            register("{component}", factory)
        """,
    )


# One named test per hook: tests/test_plugin_docs.py checks that every hook has a test of its own.
def test_register_kernels_hook(site: Callable[..., str]) -> None:
    _one_hook_plugin(site, "register_kernels", "my_kernel")
    assert load_registry().create("kernel", "my_kernel") == "my_kernel"


def test_register_divergences_hook(site: Callable[..., str]) -> None:
    _one_hook_plugin(site, "register_divergences", "my_divergence")
    assert load_registry().create("divergence", "my_divergence") == "my_divergence"


def test_register_methods_hook(site: Callable[..., str]) -> None:
    _one_hook_plugin(site, "register_methods", "my_method")
    assert load_registry().create("method", "my_method") == "my_method"


def test_register_datasets_hook(site: Callable[..., str]) -> None:
    _one_hook_plugin(site, "register_datasets", "my_dataset")
    assert load_registry().create("dataset", "my_dataset") == "my_dataset"


def test_register_models_hook(site: Callable[..., str]) -> None:
    _one_hook_plugin(site, "register_models", "my_model")
    assert load_registry().create("model", "my_model") == "my_model"


def test_register_metrics_hook(site: Callable[..., str]) -> None:
    _one_hook_plugin(site, "register_metrics", "my_metric")
    assert load_registry().create("metric", "my_metric") == "my_metric"


IMPORT_ERROR_PLUGIN = """
    import a_module_that_does_not_exist_anywhere
"""

RAISING_HOOK_PLUGIN = """
    from icon_bench import hookimpl

    def ok():
        return 1

    @hookimpl
    def register_kernels(register):
        register("half_registered", ok)   # must not survive: the plugin fails as a whole

    @hookimpl
    def register_divergences(register):
        raise RuntimeError("the divergence hook exploded")
"""


def test_import_error_is_listed_and_does_not_stop_other_plugins(site: Callable[..., str]) -> None:
    bad = site("icon-bench-broken", IMPORT_ERROR_PLUGIN, entry="broken")
    good = site("icon-bench-heavy", KERNEL_PLUGIN, entry="heavy")
    reg = load_registry()
    info = reg.plugins[bad]
    assert info.status == "failed"
    assert "ModuleNotFoundError" in info.error and "a_module_that_does_not_exist_anywhere" in info.error
    assert "Traceback" in info.traceback
    assert info in reg.failures
    assert reg.plugins[good].status == "ok"
    assert "heavy_tail" in reg.names("kernel")


def test_hook_that_raises_is_listed_and_registers_nothing(site: Callable[..., str]) -> None:
    bad = site("icon-bench-raises", RAISING_HOOK_PLUGIN, entry="raises")
    site("icon-bench-heavy", KERNEL_PLUGIN, entry="heavy")
    reg = load_registry()
    assert reg.plugins[bad].status == "failed"
    assert "RuntimeError: the divergence hook exploded" in reg.plugins[bad].error
    assert "half_registered" not in reg.names("kernel")
    assert "heavy_tail" in reg.names("kernel")


def test_failed_plugin_shows_in_cli_listing(site: Callable[..., str], capsys: pytest.CaptureFixture) -> None:
    from icon_bench import cli

    site("icon-bench-broken", IMPORT_ERROR_PLUGIN, entry="broken")
    assert cli.main(["plugins"]) == 0
    captured = capsys.readouterr()
    line = next(line for line in captured.out.splitlines() if line.startswith("broken"))
    assert "icon-bench-broken" in line and "failed" in line
    # The error itself goes under the table, at the terminal's full width.
    assert any(line.strip().startswith("broken: ModuleNotFoundError") for line in captured.out.splitlines())
    assert "failed to load" in captured.err


@pytest.mark.parametrize("how", ["argument", "environment"])
@pytest.mark.parametrize("source", [IMPORT_ERROR_PLUGIN, RAISING_HOOK_PLUGIN], ids=["import", "hook"])
def test_strict_mode_raises_naming_the_plugin(
    site: Callable[..., str], monkeypatch: pytest.MonkeyPatch, how: str, source: str
) -> None:
    name = site("icon-bench-broken", source, entry="broken")
    skip = _broken_builtins()
    if how == "argument":
        load = lambda: load_registry(strict=True, disable=skip)  # noqa: E731
    else:
        monkeypatch.setenv(ENV_STRICT, "1")
        load = lambda: load_registry(disable=skip)  # noqa: E731
    with pytest.raises(PluginLoadError) as excinfo:
        load()
    message = str(excinfo.value)
    assert f"plugin {name!r}" in message and "icon-bench-broken 1.2.3" in message
    # strict=False wins over the environment variable: the tool still starts
    assert load_registry(strict=False).plugins[name].status == "failed"


def test_strict_cli_flag_exits_with_a_clean_error(site: Callable[..., str], capsys: pytest.CaptureFixture) -> None:
    from icon_bench import cli

    site("icon-bench-broken", IMPORT_ERROR_PLUGIN, entry="broken")
    assert cli.main(["plugins", "--strict"]) == 2
    assert "failed to load" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_disabled_plugin_is_not_loaded(site: Callable[..., str], monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    bad = site("icon-bench-broken", IMPORT_ERROR_PLUGIN, entry="broken")
    heavy = site("icon-bench-heavy", KERNEL_PLUGIN, entry="heavy")
    if how == "argument":
        reg = load_registry(disable=[bad, heavy], strict=False)
    else:
        monkeypatch.setenv(ENV_DISABLE, f" {bad} ,{heavy}")
        reg = load_registry(strict=False)
    assert reg.plugins[bad].status == "disabled" and reg.plugins[heavy].status == "disabled"
    assert bad not in {p.name for p in reg.failures}
    assert "heavy_tail" not in reg.names("kernel")
    assert "a_module_that_does_not_exist_anywhere" not in sys.modules


def test_disabling_a_broken_plugin_makes_strict_mode_pass(site: Callable[..., str]) -> None:
    bad = site("icon-bench-broken", IMPORT_ERROR_PLUGIN, entry="broken")
    site("icon-bench-heavy", KERNEL_PLUGIN, entry="heavy")
    reg = load_registry(strict=True, disable={bad} | _broken_builtins())
    assert "heavy_tail" in reg.names("kernel")


def test_duplicate_component_names_an_error_naming_both_sources(site: Callable[..., str]) -> None:
    first = site("icon-bench-first", KERNEL_PLUGIN, entry="first")
    second = site("icon-bench-second", KERNEL_PLUGIN, entry="second", version="0.9")
    reg = load_registry(strict=False)
    statuses = {first: reg.plugins[first].status, second: reg.plugins[second].status}
    assert sorted(statuses.values()) == ["failed", "ok"]  # the first one loaded wins; order is the env's
    loser = reg.plugins[first if statuses[first] == "failed" else second]
    assert "DuplicateComponentError" in loser.error and "'heavy_tail'" in loser.error
    for text in (f"plugin {first!r}", f"plugin {second!r}", "icon-bench-first 1.2.3", "icon-bench-second 0.9"):
        assert text in loser.error
    with pytest.raises(PluginLoadError, match="registered twice"):
        load_registry(strict=True, disable=_broken_builtins())


def test_duplicate_with_a_builtin_names_icon_bench(site: Callable[..., str]) -> None:
    reg = load_registry(entry_points=False)
    taken = next((n for n in reg.names("divergence")), None)
    if taken is None:
        pytest.skip("no built-in divergence registered yet")
    name = _one_hook_plugin(site, "register_divergences", taken)
    info = load_registry(strict=False).plugins[name]
    assert info.status == "failed"
    assert registry.BUILTIN_SOURCE in info.error and f"icon-bench-{taken}" in info.error


def test_unknown_component_name_suggests_close_matches(site: Callable[..., str]) -> None:
    site("icon-bench-heavy", KERNEL_PLUGIN, entry="heavy")
    reg = load_registry()
    with pytest.raises(UnknownNameError, match=r"did you mean 'heavy_tail'"):
        reg.get("kernel", "heavy_tial")
    with pytest.raises(UnknownNameError, match=r"unknown parameter 'dofs'.*did you mean 'dof'"):
        reg.create("kernel", "heavy_tail", dofs=2.0)
    with pytest.raises(UnknownNameError, match=r"did you mean 'kernel'"):
        reg.names("kernle")


def test_registry_does_not_leak_between_tests() -> None:
    # Runs after the fixtures above have been torn down (same worker): the fake plugins are gone.
    assert not any(p.startswith("_icb_test_plugin_") for p in sys.modules)
    assert "heavy_tail" not in load_registry(strict=False).names("kernel")
