"""The plugin registry: loads built-in and entry-point plugins with pluggy and indexes their components."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata as md
import inspect
import os
import traceback
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pluggy

from icon_bench.errors import ComponentTypeError, DuplicateComponentError, PluginLoadError, UnknownNameError
from icon_bench.hooks import specs as hookspecs

#: Modules that hold the built-in components; each implements the hooks like any third party.
BUILTIN_MODULES: tuple[str, ...] = (
    "icon_bench.loss.kernels",
    "icon_bench.loss.divergences",
    "icon_bench.loss.families",
    "icon_bench.train.models",
    "icon_bench.data.load",
    "icon_bench.train.recipes",
    "icon_bench.evaluation.evaluator",
    "icon_bench.report.references",
    "icon_bench.report.claims",
    "icon_bench.features.backbones",
    "icon_bench.features.dataset",
)
BUILTIN_SOURCE = "icon-bench"

ENV_STRICT = "ICON_BENCH_STRICT"
ENV_DISABLE = "ICON_BENCH_DISABLE_PLUGINS"


@dataclasses.dataclass(frozen=True)
class Param:
    """One parameter of a component factory."""

    name: str
    type: str
    default: Any = inspect.Parameter.empty

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        if not self.required:
            d["default"] = self.default if _jsonable(self.default) else repr(self.default)
        return d


@dataclasses.dataclass(frozen=True)
class Component:
    """A registered kernel, divergence, method, dataset, model, metric, reference set, claim set or backbone."""

    kind: str
    name: str
    factory: Callable[..., Any]
    description: str
    params: tuple[Param, ...]
    plugin: str  # the pluggy plugin name that registered it
    distribution: str  # the installed distribution that ships it
    version: str
    aliases: tuple[str, ...] = ()

    @property
    def discovery(self) -> Any:
        """Its loss-discovery declaration: the factory's `discovery`, else that of the class it is annotated to return."""
        try:
            returned = getattr(self.factory, "discovery", None) or typing.get_type_hints(self.factory).get("return")
        except Exception:  # an annotation that does not resolve: nothing declared
            return None
        return returned if not isinstance(returned, type) else getattr(returned, "discovery", None)

    @property
    def accepts_any(self) -> bool:
        """True when the factory takes **kwargs, so parameter names are not checked."""
        return any(p.type == "**" for p in self.params)

    def create(self, **params: Any) -> Any:
        """Call the factory after checking parameter names (with "did you mean")."""
        if not self.accepts_any:
            known = [p.name for p in self.params]
            for key in params:
                if key not in known:
                    raise UnknownNameError("parameter", key, known, where=f"{self.kind} {self.name!r}")
        return self.factory(**params)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "description": self.description,
            "params": [p.to_dict() for p in self.params if p.type != "**"],
            "plugin": self.plugin,
            "distribution": self.distribution,
            "version": self.version,
            "aliases": list(self.aliases),
        }


@dataclasses.dataclass
class PluginInfo:
    """A plugin module as loaded (or not): where it came from and what went wrong."""

    name: str
    distribution: str
    version: str
    status: str  # "ok" | "failed" | "disabled"
    error: str = ""
    traceback: str = ""
    components: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Registry:
    """All components of every kind, keyed by name, plus the plugins they came from."""

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Component]] = {kind: {} for kind in hookspecs.KINDS}
        self._aliases: dict[str, dict[str, str]] = {kind: {} for kind in hookspecs.KINDS}
        self.plugins: dict[str, PluginInfo] = {}
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)

    # -- lookups ------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._kind(kind))

    def get(self, kind: str, name: str) -> Component:
        """The component `name` of `kind`; an unknown name raises with close matches."""
        table = self._kind(kind)
        name = self._aliases[kind].get(name, name)
        if name not in table:
            raise UnknownNameError(kind, name, list(table) + list(self._aliases[kind]))
        return table[name]

    def create(self, kind: str, name: str, **params: Any) -> Any:
        return self.get(kind, name).create(**params)

    @property
    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins.values() if p.status == "failed"]

    def distributions(self) -> dict[str, str]:
        """Installed distribution -> version of every plugin that loaded."""
        return {p.distribution: p.version for p in self.plugins.values() if p.status == "ok"}

    def to_dict(self) -> dict[str, Any]:
        return {
            "plugins": [p.to_dict() for p in self.plugins.values()],
            "components": {
                kind: [c.to_dict() for _, c in sorted(table.items())]
                for kind, table in self.components.items()
            },
        }

    def _kind(self, kind: str) -> dict[str, Component]:
        if kind not in self.components:
            raise UnknownNameError("component kind", kind, self.components)
        return self.components[kind]

    # -- loading ------------------------------------------------------------------------------
    def add_plugin(self, plugin: Any, name: str, distribution: str, version: str) -> PluginInfo:
        """Register one plugin object and collect its components; failures are recorded, not raised."""
        info = PluginInfo(name=name, distribution=distribution, version=version, status="ok")
        self.plugins[name] = info
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # pluggy validates hookimpl signatures here
            return self._fail(info, exc)
        staged: list[Component] = []
        for kind, hook_name in hookspecs.KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name != name:
                    continue
                try:
                    impl.function(register=self._collector(kind, info, staged))
                except Exception as exc:
                    self.pm.unregister(name=name)
                    return self._fail(info, exc)
        # Commit only when the whole plugin registered cleanly: half a plugin is worse than none.
        try:
            self._check_duplicates(staged)
        except DuplicateComponentError as exc:
            self.pm.unregister(name=name)
            return self._fail(info, exc)
        for comp in staged:
            self.components[comp.kind][comp.name] = comp
            for alias in comp.aliases:
                self._aliases[comp.kind][alias] = comp.name
            info.components.append(f"{comp.kind}:{comp.name}")
        return info

    def _collector(self, kind: str, info: PluginInfo, staged: list[Component]) -> hookspecs.Register:
        def register(
            name: str,
            factory: Callable[..., Any],
            *,
            description: str | None = None,
            aliases: Iterable[str] = (),
        ) -> None:
            if not isinstance(name, str) or not name:
                raise ValueError(f"{kind} name must be a non-empty string, got {name!r}")
            if not callable(factory):
                raise TypeError(f"{kind} {name!r}: factory {factory!r} is not callable")
            staged.append(
                Component(
                    kind=kind,
                    name=name,
                    factory=factory,
                    description=description or _first_line(factory.__doc__),
                    params=_params_of(factory),
                    plugin=info.name,
                    distribution=info.distribution,
                    version=info.version,
                    aliases=tuple(aliases),
                )
            )

        return register

    def _check_duplicates(self, staged: list[Component]) -> None:
        seen: dict[tuple[str, str], Component] = {}
        for comp in staged:
            for key in [comp.name, *comp.aliases]:
                other = seen.get((comp.kind, key)) or self._existing(comp.kind, key)
                if other is not None:
                    raise DuplicateComponentError(
                        f"{comp.kind} {key!r} is registered twice: by plugin {other.plugin!r} "
                        f"({other.distribution} {other.version}) and by plugin {comp.plugin!r} "
                        f"({comp.distribution} {comp.version}); rename one, or disable a plugin "
                        f"with {ENV_DISABLE}={comp.plugin}"
                    )
                seen[(comp.kind, key)] = comp

    def _existing(self, kind: str, name: str) -> Component | None:
        name = self._aliases[kind].get(name, name)
        return self.components[kind].get(name)

    @staticmethod
    def _fail(info: PluginInfo, exc: BaseException) -> PluginInfo:
        info.status = "failed"
        info.error = f"{type(exc).__name__}: {exc}"
        info.traceback = "".join(traceback.format_exception(exc))
        return info


def _first_line(doc: str | None) -> str:
    return (inspect.cleandoc(doc).splitlines() or [""])[0] if doc else ""


def _params_of(factory: Callable[..., Any]) -> tuple[Param, ...]:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return ()
    params = []
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            params.append(Param(p.name, "**"))
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            params.append(Param(p.name, _type_name(p.annotation), p.default))
    return tuple(params)


def _type_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "any"
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, list, tuple, dict))


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def disabled_plugins() -> set[str]:
    """Plugin names listed (comma-separated) in ICON_BENCH_DISABLE_PLUGINS."""
    return {n.strip() for n in os.environ.get(ENV_DISABLE, "").split(",") if n.strip()}


def strict_from_env() -> bool:
    return _truthy(os.environ.get(ENV_STRICT))


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "0+unknown"


def load_registry(
    *,
    strict: bool | None = None,
    disable: Iterable[str] | None = None,
    entry_points: bool = True,
    extra_plugins: Mapping[str, Any] | None = None,
) -> Registry:
    """Build a registry from the built-ins, the `icon_bench` entry points and `extra_plugins`.

    A plugin that fails to import or register is recorded with its error; with `strict`
    (or ICON_BENCH_STRICT=1) the first such failure raises PluginLoadError instead.
    """
    strict = strict_from_env() if strict is None else strict
    disabled = disabled_plugins() | set(disable or ())
    reg = Registry()
    own_version = _version(BUILTIN_SOURCE)

    candidates: list[tuple[str, str, str, Callable[[], Any]]] = []
    for module in BUILTIN_MODULES:
        candidates.append((module, BUILTIN_SOURCE, own_version, lambda m=module: importlib.import_module(m)))
    if entry_points:
        for ep in md.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else "?"
            candidates.append((ep.name, dist, version, ep.load))
    for name, obj in (extra_plugins or {}).items():
        candidates.append((name, "(in process)", "0", lambda o=obj: o))

    for name, dist, version, load in candidates:
        if name in disabled:
            reg.plugins[name] = PluginInfo(name, dist, version, status="disabled")
            continue
        if name in reg.plugins:
            info = PluginInfo(name, dist, version, status="failed")
            Registry._fail(info, DuplicateComponentError(f"two plugins are named {name!r}"))
            reg.plugins[f"{name} ({dist})"] = info
            continue
        try:
            plugin = load()
        except Exception as exc:
            info = PluginInfo(name, dist, version, status="failed")
            reg.plugins[name] = Registry._fail(info, exc)
        else:
            info = reg.add_plugin(plugin, name, dist, version)
        if strict and info.status == "failed":
            raise PluginLoadError(f"plugin {name!r} ({dist} {version}) failed to load: {info.error}")
    return reg


_REGISTRY: Registry | None = None


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, loaded once on first use."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        _REGISTRY = load_registry()
    return _REGISTRY


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (tests; embedding applications)."""
    global _REGISTRY
    _REGISTRY = registry


def create(kind: str, spec: Any, /, **params: Any) -> Any:
    """Build a component from a name, a ``(name, {params})`` pair, or a ``{"name": ..., **params}`` dict."""
    name, spec_params = split_spec(spec)
    return get_registry().create(kind, name, **{**spec_params, **params})


def create_as(kind: str, spec: Any, cls: type) -> Any:
    """`spec` itself when it is already a `cls`, else the component it names, checked to be a `cls`."""
    if isinstance(spec, cls):
        return spec
    built = create(kind, spec)
    if not isinstance(built, cls):
        name = split_spec(spec)[0]
        raise ComponentTypeError(f"{kind} {name!r} built a {type(built).__name__}, not a {cls.__name__}")
    return built


def split_spec(spec: Any) -> tuple[str, dict[str, Any]]:
    """Normalise the three ways of naming a component into ``(name, params)``."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        return spec[0], dict(spec[1])
    if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        params = dict(spec)
        return params.pop("name"), params
    raise TypeError(f"cannot name a component with {spec!r}; use 'name', ('name', {{...}}) or {{'name': ...}}")
