"""Task variables (`envs`, `secrets`, ``--env`` overrides) and ``$VAR`` substitution.

Substitution happens in the YAML fields that name places and buckets (mount paths, storage
names, sources, stores, `workdir`), never in `setup`/`run`: the shell expands those, and the
variables reach the commands as environment variables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from hangar.errors import SpecError
from hangar.spec_messages import describe

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# ${NAME}, an unclosed or malformed ${...}, or $NAME. A lone "$" is left as it is.
_REF = re.compile(r"\$\{(?P<braced>[^}]*)\}|(?P<open>\$\{)|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class EnvScope:
    """The task's variables after merging. `values` maps every declared or overridden name to
    its value, or to None when it was declared null and not overridden (declared, no value)."""

    envs: dict[str, str]
    secrets: dict[str, str]
    values: dict[str, str | None]
    null_where: dict[str, str]  # name -> where it was declared null

    def substitute(self, text: str, where: str) -> str:
        """`text` with ``${VAR}`` and ``$VAR`` replaced; SpecError for a variable with no value."""

        def repl(match: re.Match[str]) -> str:
            if match.group("open") is not None:
                raise SpecError(
                    f"unclosed '${{' in {text!r}. To fix: write ${{NAME}} (or $NAME).", where
                )
            braced = match.group("braced")
            name = match.group("bare") if braced is None else braced
            if not _NAME.match(name):
                raise SpecError(
                    f"'${{{name}}}' in {text!r} is not a variable Hangar can substitute: only "
                    "${NAME} and $NAME are supported (no defaults or other shell forms). "
                    "To fix: write ${NAME} and give NAME a value in envs or with --env.",
                    where,
                )
            value = self.values.get(name)
            if value is None:
                raise SpecError(self._unset_message(name, text), where)
            return value

        return _REF.sub(repl, text)

    def _unset_message(self, name: str, text: str) -> str:
        if name in self.null_where:
            why = f"{self.null_where[name]} is null"
        else:
            why = "it is not defined in envs or secrets"
        msg = f"${name} (in {text!r}) has no value: {why}. To fix: pass --env {name}=<value>"
        msg += ", or give it a value under envs:."
        if name == "HOME":
            msg += " For your home directory, write ~ instead."
        elif name not in self.values:
            msg += (
                " Only the task's envs, secrets and --env values are substituted here, "
                "not the shell's environment."
            )
        return msg


def build_env_scope(
    raw_envs: object, raw_secrets: object, overrides: Mapping[str, str]
) -> EnvScope:
    """Merge `envs` and `secrets` (YAML mappings, or None) with the ``--env`` `overrides`.

    Values may be strings, numbers or booleans (converted with ``str()``, as SkyPilot does) or
    null. An override replaces a secret's value when the name is a secret, else it sets (or adds)
    an env. A secret left null is an error (a secret must be given); an env left null has no value
    and is left out of `envs` (using it in a substituted field is an error).
    """
    envs = _parse_vars(raw_envs, "envs")
    secrets = _parse_vars(raw_secrets, "secrets")
    for name in secrets:
        if name in envs:
            raise SpecError(
                f"{name!r} is defined in both envs and secrets. To fix: keep it in one of them.",
                where=f"secrets.{name}",
            )
    for name, value in overrides.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise SpecError(
                f"{name!r} is not a valid variable name (letters, digits and _, not starting "
                "with a digit). To fix: --env NAME=value.",
                where="--env",
            )
        if not isinstance(value, str):
            raise SpecError(
                f"the value of {name} must be a string. To fix: --env {name}=value.", "--env"
            )
        (secrets if name in secrets else envs)[name] = value
    for name, secret in secrets.items():
        if secret is None:
            raise SpecError(
                f"secret {name} has no value. To fix: pass it with --env {name}=<value> "
                "(secrets are kept out of the task file on purpose).",
                where=f"secrets.{name}",
            )
    for kind, table in (("envs", envs), ("secrets", secrets)):
        for name, held in table.items():
            if held is not None and "\x00" in held:
                raise SpecError(
                    f"the value of {name} contains a NUL character, which no environment "
                    "variable can hold. To fix: remove it.",
                    where=f"{kind}.{name}",
                )
    null_where = {n: f"envs.{n}" for n, v in envs.items() if v is None}
    values = {**envs, **secrets}
    return EnvScope(
        envs={n: v for n, v in envs.items() if v is not None},
        secrets={n: v for n, v in secrets.items() if v is not None},
        values=values,
        null_where=null_where,
    )


def _parse_vars(raw: object, key: str) -> dict[str, str | None]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SpecError(
            f"expected a mapping of NAME: value, got {describe(raw)}. "
            f"To fix: write e.g.\n  {key}:\n    MY_VAR: value",
            where=key,
        )
    out: dict[str, str | None] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise SpecError(
                f"{name!r} is not a valid variable name (letters, digits and _, not starting "
                "with a digit). To fix: rename it, e.g. MY_VAR.",
                where=f"{key}.{name}",
            )
        if value is None:
            out[name] = None
        elif isinstance(value, str | int | float):  # bool is an int
            out[name] = str(value)
        else:
            raise SpecError(
                f"expected a string, number, boolean or null, got {describe(value)}. "
                "To fix: quote the value to pass it as a string.",
                where=f"{key}.{name}",
            )
    return out
