"""``botkit.personas``: persona files load, and a bad one names its file and field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from botkit.errors import PersonaError, UnknownPersonaError
from botkit.personas import GenerationSettings, PersonaRegistry, load_persona

REPO_PERSONAS = Path(__file__).resolve().parents[1] / "personas"

MINIMAL = 'name = "pine"\nsystem_prompt = "You are Pine."\n'


def write(folder: Path, text: str, name: str = "pine.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the shipped persona ----------------------------------------------------------------


def test_shipped_pine_persona_loads() -> None:
    pine = load_persona(REPO_PERSONAS / "pine.toml")

    assert pine.name == "pine"
    assert pine.display_name == "Pine"
    assert "agent" in pine.escalation_keywords
    assert pine.greeting.startswith("Hi, I'm Pine")
    assert "Harbor & Pine" in pine.system_prompt
    assert pine.adapter == REPO_PERSONAS / "adapters" / "pine"
    assert pine.generation.max_new_tokens == 200
    assert pine.path == REPO_PERSONAS / "pine.toml"


def test_registry_loads_the_repository_personas_folder() -> None:
    registry = PersonaRegistry.from_dir(REPO_PERSONAS)

    assert "pine" in registry
    assert registry["pine"].display_name == "Pine"
    assert len(registry) == len(list(REPO_PERSONAS.glob("*.toml")))


def test_minimal_persona_takes_the_documented_defaults(tmp_path: Path) -> None:
    persona = load_persona(write(tmp_path, MINIMAL))

    assert persona.display_name == "pine"
    assert persona.greeting == ""
    assert persona.escalation_keywords == ()
    assert persona.generation == GenerationSettings()


# --- malformed files --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field"),
    [
        pytest.param('name = "pine"\n', "system_prompt", id="missing-system-prompt"),
        pytest.param('system_prompt = "x"\n', "name", id="missing-name"),
        pytest.param(MINIMAL + 'colour = "green"\n', "colour", id="unknown-top-level-field"),
        pytest.param(MINIMAL + "[generation]\ntemprature = 0.5\n", "temprature",
                     id="unknown-generation-field"),
        pytest.param(MINIMAL + "[memory]\nhistory = 10\n", "history",
                     id="unknown-memory-field"),
        pytest.param(MINIMAL + '[generation]\ntemperature = "hot"\n', "temperature",
                     id="temperature-as-text"),
        pytest.param(MINIMAL + "[generation]\ntemperature = -0.1\n", "temperature",
                     id="negative-temperature"),
        pytest.param(MINIMAL + "[generation]\ntop_p = 1.5\n", "top_p", id="top-p-above-one"),
        pytest.param(MINIMAL + "[generation]\ntop_p = 0\n", "top_p", id="top-p-zero"),
        pytest.param(MINIMAL + "[generation]\nmax_new_tokens = 0\n", "max_new_tokens",
                     id="max-new-tokens-zero"),
        pytest.param(MINIMAL + "[generation]\nmax_new_tokens = 1.5\n", "max_new_tokens",
                     id="max-new-tokens-float"),
        pytest.param(MINIMAL + "[generation]\ntop_k = true\n", "top_k", id="bool-for-int"),
        pytest.param(MINIMAL + "[generation]\ntemperature = false\n", "temperature",
                     id="bool-for-float"),
        pytest.param(MINIMAL + '[generation]\nstop = [""]\n', "stop", id="empty-stop-string"),
        pytest.param(MINIMAL + '[generation]\nstop = "###"\n', "stop", id="stop-not-a-list"),
        pytest.param(MINIMAL + "[memory]\nhistory_tokens = -1\n", "history_tokens",
                     id="negative-history"),
        pytest.param(MINIMAL + 'escalation_keywords = "agent"\n', "escalation_keywords",
                     id="keywords-not-a-list"),
        pytest.param(MINIMAL + "escalation_keywords = [1]\n", "escalation_keywords",
                     id="keyword-not-text"),
        pytest.param(MINIMAL + "greeting = 5\n", "greeting", id="greeting-not-text"),
        pytest.param(MINIMAL + 'generation = "fast"\n', "generation",
                     id="generation-not-a-table"),
        pytest.param('name = "Pine Bot"\nsystem_prompt = "x"\n', "name", id="bad-name-chars"),
        pytest.param('name = ""\nsystem_prompt = "x"\n', "name", id="empty-name"),
        pytest.param('name = "pine"\nsystem_prompt = "   "\n', "system_prompt",
                     id="blank-system-prompt"),
    ],
)
def test_malformed_persona_error_names_the_file_and_the_field(
    tmp_path: Path, text: str, field: str
) -> None:
    path = write(tmp_path, text)

    with pytest.raises(PersonaError) as caught:
        load_persona(path)

    message = str(caught.value)
    assert str(path) in message
    assert field in message


def test_bad_name_error_says_which_characters_are_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "Pine Bot"\nsystem_prompt = "x"\n')

    with pytest.raises(PersonaError, match="'Pine Bot' must be lowercase letters"):
        load_persona(path)


def test_invalid_toml_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "pine"\nsystem_prompt = "unterminated\n')

    with pytest.raises(PersonaError, match="not valid TOML") as caught:
        load_persona(path)

    assert str(path) in str(caught.value)
    assert "line 2" in str(caught.value)


def test_missing_persona_file_says_not_found(tmp_path: Path) -> None:
    with pytest.raises(PersonaError, match="persona file not found"):
        load_persona(tmp_path / "ghost.toml")


def test_missing_personas_folder_says_not_found(tmp_path: Path) -> None:
    with pytest.raises(PersonaError, match="personas folder not found"):
        PersonaRegistry.from_dir(tmp_path / "nowhere")


def test_duplicate_names_in_one_folder_name_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, MINIMAL, "a.toml")
    second = write(tmp_path, MINIMAL, "b.toml")

    with pytest.raises(PersonaError, match="'pine' is already used") as caught:
        PersonaRegistry.from_dir(tmp_path)

    assert str(first) in str(caught.value)
    assert str(second) in str(caught.value)


def test_one_bad_file_stops_the_folder_loading_with_its_error(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL, "a.toml")
    bad = write(tmp_path, 'name = "b"\n', "b.toml")

    with pytest.raises(PersonaError, match="system_prompt") as caught:
        PersonaRegistry.from_dir(tmp_path)

    assert str(bad) in str(caught.value)


# --- paths, lookups, sampling ------------------------------------------------------------


def test_relative_adapter_path_resolves_against_the_persona_folder(tmp_path: Path) -> None:
    folder = tmp_path / "personas"
    folder.mkdir()
    path = write(folder, MINIMAL + 'adapter = "../adapters/pine-lora"\n')

    persona = load_persona(path)

    assert persona.adapter == folder / "../adapters/pine-lora"
    assert persona.adapter.resolve() == (tmp_path / "adapters" / "pine-lora").resolve()


def test_absolute_adapter_path_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "lora"
    path = write(tmp_path, MINIMAL + f'adapter = "{target}"\n')

    assert load_persona(path).adapter == target


def test_unknown_persona_error_lists_the_known_ones(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL, "pine.toml")
    write(tmp_path, 'name = "fern"\nsystem_prompt = "You are Fern."\n', "fern.toml")
    registry = PersonaRegistry.from_dir(tmp_path)

    with pytest.raises(UnknownPersonaError, match=r"unknown persona 'nope' \(known: fern, pine\)"):
        registry["nope"]


def test_membership_test_of_an_unknown_name_is_false_without_raising() -> None:
    registry = PersonaRegistry.from_dir(REPO_PERSONAS)

    assert ("nope" in registry) is False
    assert ("pine" in registry) is True


def test_empty_folder_gives_an_empty_registry_that_says_none_are_known(tmp_path: Path) -> None:
    registry = PersonaRegistry.from_dir(tmp_path)

    assert len(registry) == 0
    with pytest.raises(UnknownPersonaError, match=r"known: none"):
        registry["pine"]


def test_generation_settings_sampling_carries_every_field() -> None:
    settings = GenerationSettings(
        temperature=0.0,
        top_p=0.5,
        top_k=7,
        repetition_penalty=1.3,
        max_new_tokens=33,
        stop=("###", "\nUser:"),
    )

    sampling = settings.sampling(seed=1234)

    for field in dataclasses.fields(GenerationSettings):
        value = getattr(settings, field.name)
        assert value != field.default, f"pick a non-default {field.name} for this test"
        assert getattr(sampling, field.name) == value
    assert sampling.seed == 1234


def test_generation_settings_from_a_file_reach_the_sampling_params(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL + "[generation]\ntemperature = 1\ntop_k = 0\nstop = ['</s>']\n",
    )

    sampling = load_persona(path).generation.sampling()

    assert sampling.temperature == 1.0
    assert isinstance(sampling.temperature, float)
    assert sampling.top_k == 0
    assert sampling.stop == ("</s>",)
    assert sampling.seed is None


def test_registry_get_of_an_unknown_name_returns_the_default() -> None:
    registry = PersonaRegistry.from_dir(REPO_PERSONAS)

    assert registry.get("nope") is None
