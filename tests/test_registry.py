"""Registries: one clear error naming file, expert and field; nothing half configured."""

import pytest

from compllm.errors import RegistryError
from compllm.registry import EMBEDDED_CHAT_MODEL, default_registry, load_registry

GOOD = """
generalist: general
experts:
  - name: math
    description: Mathematics.
    examples: ["What is 2+2?"]
    system_prompt: You are a mathematician.
    generation: {max_new_tokens: 64, temperature: 0.2}
  - name: general
    description: Anything else.
    system_prompt: You are helpful.
"""


def write(tmp_path, text, name="experts.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_yaml_registry_loads_with_defaults(tmp_path):
    registry = load_registry(write(tmp_path, GOOD))
    math = registry.expert("math")
    assert registry.names == ["math", "general"]
    assert math.model == EMBEDDED_CHAT_MODEL
    assert math.generation.max_new_tokens == 64
    assert math.profile_texts == ["Mathematics.", "What is 2+2?"]
    assert registry.threshold == 0.1


def test_a_toml_registry_loads_too(tmp_path):
    path = write(
        tmp_path,
        'generalist = "general"\n[[experts]]\nname = "general"\ndescription = "All."\n'
        'system_prompt = "Be helpful."\nmodel = "HuggingFaceTB/SmolLM2-360M-Instruct"\n',
        "experts.toml",
    )
    assert load_registry(path).expert("general").model == "HuggingFaceTB/SmolLM2-360M-Instruct"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('examples: ["What is 2+2?"]', "examples: 5"), "expert 'math': field 'examples'"),
        (("temperature: 0.2", "temperature: 9"), "expert 'math': field 'generation.temperature'"),
        (
            ("    system_prompt: You are helpful.\n", "    system_prompt: ''\n"),
            "expert 'general': field 'system_prompt': String should have at least 1 character",
        ),
        (("name: math", "name: Math Expert"), "expert 'Math Expert': field 'name'"),
        (
            ("generalist: general", "generalist: nobody"),
            "generalist 'nobody' is not one of the experts",
        ),
        (("name: math", "name: general"), "duplicate expert names: general"),
        (
            (
                "    description: Mathematics.\n",
                "    description: Mathematics.\n    colour: blue\n",
            ),
            "expert 'math': field 'colour': Extra inputs are not permitted",
        ),
        (("experts:", "expert:"), "field 'experts': Field required (and 1 more)"),
    ],
)
def test_each_mistake_is_named_in_one_line(tmp_path, edit, message):
    path = write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(RegistryError) as caught:
        load_registry(path)
    text = str(caught.value)
    assert text.startswith(str(path) + ": ")
    assert message in text
    assert "\n" not in text


def test_unreadable_and_malformed_files_are_named(tmp_path):
    with pytest.raises(RegistryError, match=r"missing.yaml: cannot read"):
        load_registry(tmp_path / "missing.yaml")
    with pytest.raises(RegistryError, match=r"bad.yaml: not valid YAML"):
        load_registry(write(tmp_path, "experts: [unclosed", "bad.yaml"))
    with pytest.raises(RegistryError, match=r"list.yaml: expected a mapping"):
        load_registry(write(tmp_path, "- a\n- b\n", "list.yaml"))


def test_the_default_registry_has_domain_experts_on_the_embedded_model_and_a_calculator():
    registry = default_registry()
    assert {"math", "science", "medicine", "law", "computing", "humanities", "general"} <= set(
        registry.names
    )
    assert registry.generalist == "general"
    models = [e for e in registry.experts if e.name != "calculator"]
    assert {e.model for e in models} == {EMBEDDED_CHAT_MODEL}
    assert len({e.system_prompt for e in models}) == len(models)
    assert all(len(e.examples) >= 5 for e in models)
    calculator = registry.expert("calculator")
    assert calculator.fallback == "math" and calculator.accepts is not None


PYTHON_EXPERT = """
generalist: general
experts:
  - name: loud
    description: Shouting.
    model: "python:tests.byo_objects:{name}"
  - name: general
    description: Anything else.
"""


def test_a_python_reference_runs_code_only_when_the_caller_allows_it(tmp_path):
    path = write(tmp_path, PYTHON_EXPERT.format(name="shout"))
    with pytest.raises(RegistryError, match=r"imports and runs Python code; .*allow_python=True"):
        load_registry(path)
    from tests.byo_objects import shout

    assert load_registry(path, allow_python=True).expert("loud").model is shout


def test_a_python_factory_reference_is_called_once_and_its_result_is_the_model(tmp_path):
    from tests.byo_objects import shout

    path = write(tmp_path, PYTHON_EXPERT.format(name="make_shouter()"))
    assert load_registry(path, allow_python=True).expert("loud").model is shout


def test_a_python_reference_that_cannot_be_imported_is_named(tmp_path):
    path = write(tmp_path, PYTHON_EXPERT.format(name="nowhere"))
    with pytest.raises(RegistryError, match=r"expert 'loud': cannot import 'python:tests\.byo"):
        load_registry(path, allow_python=True)


def test_an_unknown_builtin_model_is_named(tmp_path):
    path = write(
        tmp_path, PYTHON_EXPERT.replace('"python:tests.byo_objects:{name}"', "builtin:abacus")
    )
    with pytest.raises(RegistryError, match="unknown built-in model 'builtin:abacus'"):
        load_registry(path)
