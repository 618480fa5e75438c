"""The add-on's files, checked the way the Supervisor and the add-on linter read them.

A config.yaml the Supervisor cannot read does not fail anywhere visible: the store skips the add-on and the
repository shows up empty. These rules come from `../shared/reference/ha_addon.md` (Supervisor
`apps/validate.py`, `apps/options.py`, the store's file scan, and frenck/action-addon-linter).
"""

from __future__ import annotations

import re
import stat
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from marstek_webasto_addon import __version__
from marstek_webasto_addon.addon import manifest
from marstek_webasto_addon.addon.options import OptionsError, parse_options

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ("name", "version", "slug", "description", "arch")
ARCHES = {"aarch64", "amd64"}  # the others are unsupported since HA 2025.12
# Keys the linter's JSON schema knows that this add-on may use; anything else is a typo or a new feature
# that deserves a look at the reference first.
KNOWN_KEYS = {
    *REQUIRED,
    "url",
    "init",
    "stage",
    "timeout",
    "ingress",
    "ingress_port",
    "ingress_entry",
    "panel_icon",
    "panel_title",
    "panel_admin",
    "homeassistant_api",
    "hassio_api",
    "host_network",
    "services",
    "map",
    "image",
    "homeassistant",
    "backup_exclude",
    "options",
    "schema",
    "startup",
    "boot",
}
# The linter rejects a key written with its default value.
DEFAULTS = {
    "startup": "application",
    "boot": "auto",
    "init": True,
    "ingress": False,
    "ingress_port": 8099,
    "panel_icon": "mdi:puzzle",
    "panel_admin": True,
    "homeassistant_api": False,
    "hassio_api": False,
    "host_network": False,
    "stage": "stable",
    "timeout": 10,
    "backup": "hot",
    "map": [],
}
SLUG = re.compile(r"^[-_.A-Za-z0-9]+$")
SERVICE = re.compile(r"^(?:mqtt|mysql):(?:provide|want|need)$")
# The Supervisor's schema element grammar (apps/options.py), narrowed to what older Supervisors also
# parse: their number bounds are unsigned ("[\d.]+"), so a negative bound would hide the add-on there.
BOUND = r"(?:\d*\.?\d+)?"
ELEMENT = re.compile(
    r"^(?:bool|email|url|port"
    r"|device(?:\(subsystem=[a-z]+\))?"
    r"|str(?:\(\d*,\d*\))?"
    r"|password(?:\(\d*,\d*\))?"
    rf"|int(?:\({BOUND},{BOUND}\))?"
    rf"|float(?:\({BOUND},{BOUND}\))?"
    r"|match\(.*\)"
    r"|list\(.+\)"
    r")\??$"
)


def load(name: str) -> Any:
    return yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    data = load("config.yaml")
    assert isinstance(data, dict)
    return data


# --- a small Supervisor option validator (the rules of apps/options.py, as the reference states them) ---


class Invalid(Exception):
    pass


def check_element(element: str, value: Any, where: str) -> None:
    kind = element.rstrip("?")
    match = re.fullmatch(r"(\w+)(?:\((.*)\))?", kind)
    assert match, f"{where}: unreadable schema element {element!r}"
    name, argument = match.group(1), match.group(2)
    if name in ("str", "password"):
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise Invalid(f"{where}: expected text, got {value!r}")
        low, _, high = (argument or ",").partition(",")
        text = str(value)
        if (low and len(text) < int(low)) or (high and len(text) > int(high)):
            raise Invalid(f"{where}: length out of range")
    elif name in ("int", "float", "port"):
        try:
            number = int(value) if name in ("int", "port") else float(value)
        except (TypeError, ValueError):
            raise Invalid(f"{where}: expected a number, got {value!r}") from None
        if name == "port":
            argument = "1,65535"
        low, _, high = (argument or ",").partition(",")
        if (low and number < float(low)) or (high and number > float(high)):
            raise Invalid(f"{where}: {number} out of range {argument}")
    elif name == "bool":
        if not isinstance(value, bool):
            raise Invalid(f"{where}: expected true/false")
    elif name == "match":
        if not isinstance(value, str) or not re.match(argument or "", value):
            raise Invalid(f"{where}: {value!r} does not match {argument}")
    elif name == "list":
        if str(value) not in (argument or "").split("|"):
            raise Invalid(f"{where}: {value!r} is not one of {argument}")
    else:
        raise AssertionError(f"{where}: element {name} not handled by this test")


def check_options(options: dict[str, Any], schema: dict[str, Any], where: str = "") -> None:
    for key, value in options.items():
        if key not in schema:
            raise Invalid(f"{where}{key}: not in the schema")
        element = schema[key]
        if isinstance(element, dict):
            if not isinstance(value, dict):
                raise Invalid(f"{where}{key}: expected a section")
            check_options(value, element, f"{where}{key}.")
        elif isinstance(element, list):
            if not isinstance(value, list):
                raise Invalid(f"{where}{key}: expected a list")
            for index, item in enumerate(value):
                if isinstance(element[0], dict):
                    if not isinstance(item, dict):
                        raise Invalid(f"{where}{key}[{index}]: expected a section")
                    check_options(item, element[0], f"{where}{key}[{index}].")
                else:
                    check_element(element[0], item, f"{where}{key}[{index}]")
        else:
            check_element(element, value, f"{where}{key}")
    for key, element in schema.items():
        # Only "type?" may be left out; sections and lists are always required (no "?" is possible there).
        optional = isinstance(element, str) and element.endswith("?")
        if key not in options and not optional:
            raise Invalid(f"{where}{key}: missing option")


def elements(schema: dict[str, Any], where: str = "") -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for key, element in schema.items():
        if isinstance(element, dict):
            found += elements(element, f"{where}{key}.")
        elif isinstance(element, list):
            assert len(element) == 1, f"{where}{key}: a list schema has exactly one element"
            if isinstance(element[0], dict):
                found += elements(element[0], f"{where}{key}[].")
            else:
                assert isinstance(element[0], str), f"{where}{key}: no lists of lists"
                found.append((f"{where}{key}[]", element[0]))
        else:
            found.append((f"{where}{key}", element))
    return found


# --- config.yaml ---


def test_config_is_generated_from_the_options_model() -> None:
    hint = "run: python -m marstek_webasto_addon manifest --write"
    assert (ROOT / "config.yaml").read_text() == manifest.render(), hint
    docs = (ROOT / "DOCS.md").read_text()
    assert manifest.render_docs(docs) == docs, hint


def test_required_keys_and_their_formats(config: dict[str, Any]) -> None:
    assert [key for key in REQUIRED if not config.get(key)] == []
    assert SLUG.fullmatch(config["slug"])
    assert config["version"] == __version__
    assert f'\nversion: "{__version__}"\n' in (ROOT / "config.yaml").read_text(), "quote the version"
    assert config["arch"]
    assert set(config["arch"]) <= ARCHES


def test_only_known_keys_and_none_with_its_default_value(config: dict[str, Any]) -> None:
    assert set(config) - KNOWN_KEYS == set()
    written_defaults = {key for key, default in DEFAULTS.items() if key in config and config[key] == default}
    assert written_defaults == set()
    assert "watchdog" not in config, "the linter calls watchdog obsolete: the Dockerfile has a HEALTHCHECK"
    assert not (config.get("ingress") and "webui" in config)
    assert 10 <= config.get("timeout", 10) <= 300


def test_platform_choices_the_issue_asks_for(config: dict[str, Any]) -> None:
    assert config["init"] is False
    assert config["ingress"] is True
    assert config["panel_icon"].startswith("mdi:")
    assert config["panel_title"]
    assert config["homeassistant_api"] is True
    assert config["host_network"] is True
    assert config["services"] == ["mqtt:want"]
    assert all(SERVICE.fullmatch(service) for service in config["services"])
    assert config["url"].startswith("https://")


def test_every_schema_element_is_one_the_supervisor_parses(config: dict[str, Any]) -> None:
    found = elements(config["schema"])
    assert [(where, element) for where, element in found if not ELEMENT.fullmatch(element)] == []
    for _, element in found:
        if element.startswith("match("):
            re.compile(element[6:].rstrip("?")[:-1])  # a broken pattern would fail every user's save


def test_the_element_grammar_rejects_what_the_supervisor_rejects() -> None:
    for wrong in ("int(1,1e3)", "list()", "float(-5,)", "string", "str=default", "int(,)x"):
        assert not ELEMENT.fullmatch(wrong), wrong
    for right in ("int(0,255)?", "float(,5)", "float(0.5,100)", "port", "list(next|unite)", "password?"):
        assert ELEMENT.fullmatch(right), right


def test_the_default_options_satisfy_the_schema_and_the_bridge(config: dict[str, Any]) -> None:
    check_options(config["options"], config["schema"])
    parse_options(config["options"])


# What a user fills in, as the Supervisor writes /data/options.json.
USER_OPTIONS: dict[str, Any] = {
    "batteries": [
        {"name": "FaseA", "host": "192.168.1.31"},
        {"name": "FaseB", "host": "192.168.1.32", "port": 30000, "ble_mac": "009c17aabbcc"},
    ],
    "wallboxes": [{"name": "Carport", "host": "192.168.1.40", "model": "next", "max_current": 16}],
    "mqtt": {"host": "core-mosquitto", "port": 1883, "username": "addons", "password": "secret"},
    "grid_source": {"type": "entity", "entity_id": "sensor.p1_power", "unit": "kW"},
    "pv_forecast": {"type": "weather", "entity_id": "weather.home"},
    "pv_power": {"type": "none"},
    "optimiser": {"enabled": True, "peak_target": 2.5, "night_start": "22:30"},
    "rediscovery_targets": ["192.168.1.0/24"],
    "tariff": {
        "periods": [{"name": "peak", "price": 0.3, "days": "mon-fri", "start": "07:00", "end": "22:00"}],
        "injection_price": 0.05,
    },
    "timing": {"timeout": 2.5},
    "log_level": "debug",
    # a section added by an update: the Supervisor fills it in from config.yaml's options (top-level merge)
    "prices": {"type": "entity", "entity_id": "sensor.nordpool_kwh_be_eur", "vat_percent": 6},
}


def test_a_filled_in_options_tab_satisfies_both(config: dict[str, Any]) -> None:
    check_options(USER_OPTIONS, config["schema"])
    options = parse_options(USER_OPTIONS)
    assert [b.name for b in options.batteries] == ["FaseA", "FaseB"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("wallboxes", 0, "model"), "pulsar"),
        (("wallboxes", 0, "max_current"), 80),
        (("batteries", 0, "port"), 70000),
        (("batteries", 1, "ble_mac"), "not-a-mac"),
        (("batteries", 0, "name"), "a/b"),
        (("log_level"), "verbose"),
        (("optimiser", "night_start"), "25:00"),
        (("tariff", "periods", 0, "days"), "weekdays"),
    ],
)
def test_the_schema_and_the_bridge_reject_the_same_mistakes(
    config: dict[str, Any], path: tuple[Any, ...] | str, value: Any
) -> None:
    import copy

    options = copy.deepcopy(USER_OPTIONS)
    keys = (path,) if isinstance(path, str) else path
    target: Any = options
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    with pytest.raises(Invalid):
        check_options(options, config["schema"])
    with pytest.raises(OptionsError):
        parse_options(options)


def test_sections_cannot_be_left_out(config: dict[str, Any]) -> None:
    options = {key: value for key, value in config["options"].items() if key != "timing"}
    with pytest.raises(Invalid, match="timing: missing option"):
        check_options(options, config["schema"])


# --- translations ---


def translation_problems(schema: dict[str, Any], given: dict[str, Any], where: str = "") -> list[str]:
    """Schema keys (nested fields too) without a name or a description, and labels for keys that do not
    exist. The options tab shows both under every option: a missing description leaves the user guessing."""
    problems = [f"{where}{key}: no translation for a removed option" for key in set(given) - set(schema)]
    for key, element in schema.items():
        label = given.get(key)
        if not isinstance(label, dict):
            problems.append(f"{where}{key}: no translation")
            continue
        for text in ("name", "description"):
            value = label.get(text)
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{where}{key}: no {text}")
        inner = element[0] if isinstance(element, list) else element
        if isinstance(inner, dict):
            problems += translation_problems(inner, label.get("fields", {}), f"{where}{key}.")
        elif "fields" in label:
            problems.append(f"{where}{key}: fields on a plain option")
    return problems


@pytest.mark.parametrize("language", ["en", "nl", "de"])
def test_translations_cover_every_option(config: dict[str, Any], language: str) -> None:
    translation = load(f"translations/{language}.yaml")
    assert set(translation) <= {"configuration", "network"}
    assert translation_problems(config["schema"], translation["configuration"]) == []


def test_a_missing_description_is_a_translation_problem(config: dict[str, Any]) -> None:
    labels = load("translations/en.yaml")["configuration"]
    assert translation_problems(config["schema"], labels) == []
    del labels["tariff"]["fields"]["periods"]["fields"]["end"]["description"]  # a field of a list's items
    labels["log_level"]["description"] = " "
    assert sorted(translation_problems(config["schema"], labels)) == [
        "log_level: no description",
        "tariff.periods.end: no description",
    ]


def test_translations_differ_from_english() -> None:
    english = load("translations/en.yaml")["configuration"]
    for language in ("nl", "de"):
        other = load(f"translations/{language}.yaml")["configuration"]
        same = [key for key in english if english[key]["name"] == other[key]["name"]]
        assert len(same) < len(english) / 4, f"{language}: most names are still English: {same}"


# --- repository layout and the other add-on files ---


def repository_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [name for name in listed if (ROOT / name).exists()]


def test_no_other_config_or_build_file_anywhere() -> None:
    # The Supervisor globs **/config.* and **/build.* (hidden folders included): a stray one would be read
    # as a second add-on or as this one's build file.
    stray = [
        name
        for name in repository_files()
        if re.fullmatch(r"(config|build)\..*", Path(name).name) and name not in ("config.yaml", "build.yaml")
    ]
    assert stray == []


def test_repository_yaml() -> None:
    repository = load("repository.yaml")
    assert repository["name"]
    assert repository["url"].startswith("https://")
    assert repository.get("maintainer")


def test_build_yaml_matches_the_dockerfile(config: dict[str, Any]) -> None:
    build = load("build.yaml")
    assert set(build) <= {"build_from", "args", "labels"}
    assert set(build["build_from"]) == set(config["arch"])
    images = set(build["build_from"].values())
    assert all(
        re.fullmatch(r"ghcr\.io/home-assistant/base-python:3\.13-alpine[\d.]+", image) for image in images
    )
    assert all(isinstance(value, str) for value in build.get("labels", {}).values())
    dockerfile = (ROOT / "Dockerfile").read_text()
    default = re.search(r"^ARG BUILD_FROM=(\S+)$", dockerfile, re.MULTILINE)
    assert default
    assert default.group(1) in images
    assert re.search(r"^FROM \$\{BUILD_FROM\}$", dockerfile, re.MULTILINE)


def test_dockerfile_essentials() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "HEALTHCHECK" in dockerfile
    assert "COPY rootfs /" in dockerfile
    assert "-c constraints.txt" in dockerfile, "dependencies are installed pinned"
    assert not re.search(r"\b(build-base|gcc|g\+\+|musl-dev)\b", dockerfile), "no compilers in the image"
    port = re.search(r"127\.0\.0\.1:(\d+)/api/health", dockerfile)
    assert port
    assert int(port.group(1)) == 8099  # ingress_port left at its default
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv*", "tests"} <= set(ignored)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_icon_and_logo() -> None:
    width, height = png_size(ROOT / "icon.png")
    assert width == height
    assert 96 <= width <= 256
    width, height = png_size(ROOT / "logo.png")
    assert 2 <= width / height <= 3


def test_add_on_documents_exist() -> None:
    for name in ("README.md", "DOCS.md", "CHANGELOG.md", "Dockerfile", "LICENSE"):
        assert (ROOT / name).read_text().strip(), name
    assert "## " in (ROOT / "CHANGELOG.md").read_text()


# --- s6-overlay services ---

S6 = ROOT / "rootfs/etc/s6-overlay/s6-rc.d"


def test_s6_services_are_complete() -> None:
    services = {path.name for path in S6.iterdir() if path.is_dir() and path.name != "user"}
    assert services == {"init-marstek-webasto", "marstek-webasto"}
    assert {path.name for path in (S6 / "user/contents.d").iterdir()} == services
    assert (S6 / "init-marstek-webasto/type").read_text().strip() == "oneshot"
    assert (S6 / "marstek-webasto/type").read_text().strip() == "longrun"
    assert (S6 / "marstek-webasto/dependencies.d/init-marstek-webasto").exists()
    assert (S6 / "init-marstek-webasto/dependencies.d/base").exists()
    up = (S6 / "init-marstek-webasto/up").read_text().split()
    assert up
    assert (ROOT / "rootfs" / up[0].lstrip("/")).is_file()


def executables() -> list[Path]:
    scripts = [S6 / "marstek-webasto/run", S6 / "marstek-webasto/finish"]
    scripts += sorted((ROOT / "rootfs/etc/s6-overlay/scripts").iterdir())
    return scripts


def test_s6_scripts_are_executable_in_git() -> None:
    modes = subprocess.run(
        ["git", "ls-files", "--stage", "--", "rootfs", "scripts", "tests/s6", ".ci"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    tracked = {line.split("\t")[1]: line.split()[0] for line in modes}
    for script in executables():
        name = str(script.relative_to(ROOT))
        assert script.stat().st_mode & stat.S_IXUSR, f"{name} is not executable"
        if name in tracked:  # new files are checked once they are added
            assert tracked[name] == "100755", f"{name}: git add --chmod=+x"


def shell_scripts() -> list[Path]:
    candidates = [*executables(), ROOT / ".ci/run", ROOT / "tests/s6/bin/bashio"]
    candidates += sorted((ROOT / "scripts").iterdir())
    return [path for path in candidates if re.match(r"#!.*bash", path.read_text())]


def test_shellcheck_every_shell_script() -> None:
    scripts = shell_scripts()
    assert len(scripts) >= 8
    for script in executables():
        # with-contenv is not a shell shellcheck knows: the directive tells it the dialect.
        assert "# shellcheck shell=bash" in script.read_text(), script.name
    result = subprocess.run(
        ["shellcheck", "--severity=style", *map(str, scripts)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
