"""The README's config reference is the config model's own schema, and says every key the model has."""

from __future__ import annotations

from tools import docs, offerings
from tools.render import PROJECT_ROOT
from vllm_platform.config.platform import PlatformConfig


def test_the_committed_readme_matches_the_schema() -> None:
    assert docs.main(["--check"]) == 0, "run `make docs`"


def test_every_key_of_the_model_has_a_row_with_a_meaning() -> None:
    schema = PlatformConfig.model_json_schema(by_alias=True)
    documented = {path: rows for path, _, rows in docs.sections(schema, schema, "")}
    assert {"", "cluster", "cluster.gpuNodePools[]", "models[]", "models[].autoscaling", "observability", "verify"} <= set(documented)
    for path, rows in documented.items():
        assert rows, path
        for row in rows:
            key, default, meaning = [cell.strip() for cell in row.strip("|").split(" | ")]
            assert key.startswith("`") and default and meaning, (path, row)


def test_a_drifted_readme_is_caught(tmp_path, monkeypatch) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(docs.README.read_text().replace("`\"m6i.xlarge\"`", "`\"m5.large\"`", 1))
    monkeypatch.setattr(docs, "README", readme)
    assert docs.main(["--check"]) == 1
    assert docs.main([]) == 0 and docs.main(["--check"]) == 0


def test_the_readme_names_every_region_the_offline_render_knows() -> None:
    text = " ".join((PROJECT_ROOT / "README.md").read_text().split())
    listed = text.split("It knows the ")[1].split(", and where in them")[0]
    assert f"{len(offerings.REGION_ZONES)} regions with g5, p4d or p5" in listed
    named = {name.strip() for name in listed.split(":", 1)[1].replace(" and ", ", ").split(",")}
    assert named == set(offerings.REGION_ZONES)
    assert offerings.AS_OF in text
    # The zone rows' commit, and the dates that bound it, since the commit's own date is not known.
    assert f"commit {offerings.CATALOG_COMMIT[:8]}, of {offerings.CATALOG_DATED[0]} or later, read by {offerings.CATALOG_DATED[1]}" in text


def layout_table() -> str:
    text = (PROJECT_ROOT / "README.md").read_text()
    return text.split("| path | what |", 1)[1].split("## Stack config reference", 1)[0]


def test_the_readme_layout_names_every_module_of_the_layers_and_every_tool() -> None:
    """A newcomer finds each module's place from the layout table; a module added without a line there is caught."""
    table = layout_table()
    layers = [PROJECT_ROOT / "vllm_platform" / layer for layer in ("plan", "k8s", "aws", "components")]
    modules = [f"`{path.name}`" for folder in layers for path in sorted(folder.glob("*.py")) if path.name != "__init__.py"]
    tools = [f"`tools/{path.name}`" for path in sorted((PROJECT_ROOT / "tools").iterdir())
             if path.name not in ("__init__.py", "__pycache__", "verify")] + ["`tools/verify/`"]  # fmt: skip
    assert [name for name in modules + tools if name not in table] == []
