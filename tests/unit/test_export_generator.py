"""The export generator: determinism, every feature on demand, valid output in every form,
facts that match the data, streaming in constant memory."""

from __future__ import annotations

import gzip
import importlib.util
import json
import statistics
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from soulworker.testing.export_generator import (
    ConversationFacts,
    DuplicateKind,
    ExportForm,
    Feature,
    GeneratorConfig,
    conversation_rng,
    generate_conversation,
    iter_export,
    write_export,
)

REPOSITORY = Path(__file__).resolve().parents[2]


def nodes(data: dict[str, Any]) -> list[dict[str, Any]]:
    return list(data["mapping"].values())


def messages(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for node in nodes(data):
        if node["message"] is not None:
            yield node["message"]


def content_types(data: dict[str, Any]) -> set[str]:
    return {m["content"]["content_type"] for m in messages(data)}


def parts_of(message: dict[str, Any]) -> list[Any]:
    parts = message["content"].get("parts")
    return parts if isinstance(parts, list) else []


def dict_parts(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for message in messages(data):
        for part in parts_of(message):
            if isinstance(part, dict):
                yield part


def strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def all_text(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False)


def load_members(path: Path, form: ExportForm) -> dict[str, Any]:
    """Every JSON member of an export, parsed with the standard library."""
    if form is ExportForm.GZIP:
        return {"conversations.json": json.loads(gzip.decompress(path.read_bytes()))}
    if not form.is_zip:
        return {"conversations.json": json.loads(path.read_bytes())}
    with zipfile.ZipFile(path) as archive:
        return {
            name: json.loads(archive.read(name))
            for name in archive.namelist()
            if name.endswith(".json") and "shared" not in name
        }


def generate(
    count: int, seed: int = 1, **options: Any
) -> list[tuple[dict[str, Any], ConversationFacts]]:
    config = GeneratorConfig(seed=seed, conversations=count, **options)
    return [(item.data, item.facts) for item in iter_export(config)]


# -- determinism ----------------------------------------------------------------------------


def test_the_same_seed_writes_the_same_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    for form in (ExportForm.JSON, ExportForm.ZIP_SHARDS, ExportForm.GZIP):
        config = GeneratorConfig(seed=4, conversations=25, form=form, shard_bytes=100_000)
        first = write_export(tmp_path / "a", config).path.read_bytes()
        second = write_export(tmp_path / "b", config).path.read_bytes()
        other = write_export(
            tmp_path / "c", GeneratorConfig(seed=5, conversations=25, form=form)
        ).path.read_bytes()
        assert first == second, form
        assert first != other, form


def test_a_conversation_depends_only_on_seed_and_index(tmp_path: Path) -> None:
    config = GeneratorConfig(seed=8, conversations=12, rates={Feature.DUPLICATES: 0.0})
    summary = write_export(
        tmp_path / "e.zip",
        GeneratorConfig(
            seed=8,
            target_bytes=1_500_000,
            form=ExportForm.ZIP_SHARDS,
            shard_bytes=300_000,
            rates={Feature.DUPLICATES: 0.0},
        ),
    )
    members = load_members(summary.path, ExportForm.ZIP_SHARDS)
    written = [item for name in summary.members for item in members[name]]
    for index in (0, 5, 11):
        alone = generate_conversation(conversation_rng(config, index), config, index)
        assert alone.data == written[index]


# -- every feature when asked, none when switched off ---------------------------------------

EVIDENCE: dict[Feature, Callable[[dict[str, Any], ConversationFacts], bool]] = {
    Feature.BRANCHES: lambda d, f: (
        bool(f.dead_branch_nodes) and f.dead_branch_nodes <= set(d["mapping"])
    ),
    Feature.HIDDEN_SYSTEM: lambda d, f: (
        any(
            m["author"]["role"] == "system"
            and m["metadata"].get("is_visually_hidden_from_conversation")
            for m in messages(d)
            if "metadata" in m
        )
        and nodes(d)[0]["message"] is not None
        and nodes(d)[0]["parent"] == nodes(d)[1]["id"]
    ),
    Feature.PYTHON_TOOL: lambda d, f: (
        {"code", "execution_output"} <= content_types(d)
        and any(m["recipient"] == "python" for m in messages(d))
    ),
    Feature.BROWSING: lambda d, f: bool(
        {"tether_browsing_display", "sonic_webpage"} & content_types(d)
    ),
    Feature.FILE_SEARCH: lambda d, f: "tether_quote" in content_types(d),
    Feature.IMAGE_GENERATION: lambda d, f: any(
        m["recipient"] == "dalle.text2im" for m in messages(d)
    ),
    Feature.REASONING: lambda d, f: {"thoughts", "reasoning_recap"} <= content_types(d),
    Feature.VOICE: lambda d, f: any(
        p.get("content_type") == "audio_transcription" for p in dict_parts(d)
    ),
    Feature.IMAGES: lambda d, f: any(
        p.get("content_type") == "image_asset_pointer" for p in dict_parts(d)
    ),
    Feature.CUSTOM_INSTRUCTIONS: lambda d, f: (
        "user_editable_context" in content_types(d) and f.custom_instructions is not None
    ),
    Feature.BIO_MEMORY: lambda d, f: (
        any(m["recipient"] == "bio" for m in messages(d)) and bool(f.bio_writes)
    ),
    Feature.USER_SYSTEM_MESSAGES: lambda d, f: any(
        m["author"]["role"] == "system" and m.get("metadata", {}).get("is_user_system_message")
        for m in messages(d)
    ),
    Feature.CONTINUATIONS: lambda d, f: any(len(m.node_ids) > 1 for m in f.messages),
    Feature.CITATIONS: lambda d, f: any(
        "\ue200cite\ue202" in part or "\u3010" in part for m in f.messages for part in m.raw_parts
    ),
    Feature.METADATA_BULK: lambda d, f: "search_result_groups" in all_text(d),
    Feature.MISSING_CHILDREN: lambda d, f: all("children" not in n for n in nodes(d)),
    Feature.MISSING_CURRENT_NODE: lambda d, f: "current_node" not in d,
    Feature.DANGLING_CURRENT_NODE: lambda d, f: (
        "current_node" in d and d["current_node"] not in d["mapping"]
    ),
    Feature.NULL_TITLES: lambda d, f: d.get("title") is None,
    Feature.MISSING_METADATA: lambda d, f: any("metadata" not in m for m in messages(d)),
    Feature.UNKNOWN_CONTENT_TYPES: lambda d, f: bool(
        {"future_rich_note", "novel_parts_type"} & content_types(d)
    ),
    Feature.SHUFFLED_MAPPING: lambda d, f: any(
        list(d["mapping"]).index(n["parent"]) > position
        for position, n in enumerate(nodes(d))
        if n["parent"] is not None
    ),
    Feature.UNICODE: lambda d, f: any(
        0x4E00 <= ord(c) <= 0x9FFF or 0x0590 <= ord(c) <= 0x06FF or ord(c) >= 0x1F300
        for m in f.messages
        for part in m.parts
        for c in part
    ),
    Feature.HUGE_MESSAGES: lambda d, f: any(len(p) >= 50_000 for m in f.messages for p in m.parts),
    Feature.MANY_MESSAGES: lambda d, f: len(f.messages) >= 1200,
    Feature.VOICE_VIDEO: lambda d, f: any(
        p.get("content_type") == "real_time_user_audio_video_asset_pointer"
        and p.get("frames_asset_pointers")
        for p in dict_parts(d)
    ),
    Feature.HIGHLIGHTS: lambda d, f: any(
        "\ue203" in part and "\ue200entity\ue202" in part and "\ue200cite" not in part
        for m in f.messages
        for part in m.raw_parts
    ),
    Feature.CANVAS: lambda d, f: (
        any(m["recipient"] == "canmore.create_textdoc" for m in messages(d))
        and any(m["author"]["name"] == "canmore.create_textdoc" for m in messages(d))
        and bool(f.canvas_documents)
    ),
    Feature.MISSING_ID: lambda d, f: "id" not in d and "conversation_id" not in d,
}


FEATURES_WITH_EVIDENCE = sorted(EVIDENCE, key=lambda feature: feature.value)


@pytest.mark.parametrize(
    "feature", FEATURES_WITH_EVIDENCE, ids=[feature.value for feature in FEATURES_WITH_EVIDENCE]
)
def test_every_feature_appears_when_asked_for(feature: Feature) -> None:
    count = 2 if feature is Feature.MANY_MESSAGES else 6
    rates = {feature: 1.0}
    if feature is Feature.DANGLING_CURRENT_NODE:
        rates[Feature.MISSING_CURRENT_NODE] = 0.0
    if feature is Feature.VOICE_VIDEO:
        rates[Feature.VOICE] = 1.0  # the camera is on in voice conversations only
    generated = generate(count, seed=3, rates=rates)
    assert any(EVIDENCE[feature](data, facts) for data, facts in generated), feature
    assert any(feature in facts.features for _, facts in generated)


@pytest.mark.parametrize(
    "feature",
    [
        Feature.BRANCHES,
        Feature.HIDDEN_SYSTEM,
        Feature.PYTHON_TOOL,
        Feature.REASONING,
        Feature.CUSTOM_INSTRUCTIONS,
        Feature.BIO_MEMORY,
        Feature.CITATIONS,
        Feature.UNICODE,
        Feature.MISSING_METADATA,
    ],
    ids=lambda feature: str(getattr(feature, "value", feature)),
)
def test_a_switched_off_feature_never_appears(feature: Feature) -> None:
    rates = dict.fromkeys(Feature, 0.5)
    rates.update({Feature.MANY_MESSAGES: 0.0, Feature.HUGE_MESSAGES: 0.0})
    features = frozenset(Feature) - {feature}
    for data, facts in generate(20, seed=6, rates=rates, features=features):
        assert feature not in facts.features
        assert not EVIDENCE[feature](data, facts)


def test_duplicates_repeat_an_id_and_the_summary_names_the_winner(tmp_path: Path) -> None:
    config = GeneratorConfig(seed=2, conversations=80, rates={Feature.DUPLICATES: 0.3})
    summary = write_export(tmp_path / "d.json", config, collect_facts=True)
    assert summary.expected is not None
    items = json.loads(summary.path.read_bytes())
    by_id: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_id.setdefault(item["id"], []).append(item)
    duplicated = {key for key, copies in by_id.items() if len(copies) == 2}
    assert duplicated == set(summary.duplicates)
    assert {DuplicateKind.NEWER_LATER, DuplicateKind.TIE_LARGER} & set(summary.duplicates.values())
    for key in duplicated:
        first, second = by_id[key]
        winner = summary.expected[key]
        # The newest update_time wins; a tie goes to the larger mapping.
        ranked = max((first, second), key=lambda c: (c["update_time"], len(c["mapping"])))
        assert winner.update_time == ranked["update_time"]
        assert winner.node_count == len(ranked["mapping"])
    assert summary.unique_conversations == len(by_id) == 80


# -- facts match the data -------------------------------------------------------------------


def test_facts_describe_the_thread_a_correct_walk_finds() -> None:
    rates = {
        Feature.MISSING_CURRENT_NODE: 0.2,
        Feature.DANGLING_CURRENT_NODE: 0.2,
        Feature.BRANCHES: 0.4,
    }
    for data, facts in generate(40, seed=12, rates=rates):
        mapping = data["mapping"]
        path = []
        cursor: str | None = facts.expected_leaf
        while cursor is not None:
            path.append(cursor)
            cursor = mapping[cursor]["parent"]
        assert tuple(reversed(path)) == facts.path
        if facts.current_node_state == "ok":
            assert data["current_node"] == facts.expected_leaf
        parents = {node["parent"] for node in mapping.values()}
        leaves = [key for key, node in mapping.items() if key not in parents and node["message"]]
        newest = max(leaves, key=lambda key: mapping[key]["message"]["create_time"] or 0.0)
        assert newest == facts.expected_leaf  # the fallback when current_node is unusable
        assert not facts.dead_branch_nodes & set(facts.path)
        live_text = json.dumps([mapping[key]["message"] for key in facts.path], ensure_ascii=False)
        for text in facts.dead_texts:
            assert text not in live_text
        order = list(facts.path)
        for message in facts.messages:
            positions = [order.index(key) for key in message.node_ids]
            assert positions == sorted(positions)
            texts = [
                text
                for key in message.node_ids
                for text in strings(mapping[key]["message"]["content"])
            ]
            if message.canvas:
                continue  # an edited document's final text is in no node: checked elsewhere
            for raw in message.raw_parts:
                assert raw == "[image]" or raw in texts
        dialogue = " ".join(part for message in facts.messages for part in message.parts)
        for text in facts.hidden_texts:
            assert text not in dialogue


def test_citation_markers_are_only_in_the_raw_parts() -> None:
    rates = {Feature.BROWSING: 1.0, Feature.HIGHLIGHTS: 1.0}
    for _, facts in generate(8, seed=1, rates=rates):
        for message in facts.messages:
            for raw, clean in zip(message.raw_parts, message.parts, strict=True):
                assert not any(0xE200 <= ord(char) <= 0xE206 for char in clean)
                assert "\u3010" not in clean
                if raw != clean:
                    assert len(clean) < len(raw)


def test_the_traits_added_for_real_exports_are_off_by_default() -> None:
    """Exports generated before they existed keep their bytes (benchmarks stay comparable)."""
    added = (Feature.VOICE_VIDEO, Feature.HIGHLIGHTS, Feature.CANVAS, Feature.MISSING_ID)
    for data, facts in generate(40, seed=2):
        assert not set(added) & facts.features
        assert "id" in data and facts.has_id and not facts.canvas_documents


def test_canvas_facts_hold_each_document_once_with_its_final_text() -> None:
    rates = {Feature.CANVAS: 0.6, Feature.BRANCHES: 0.3}
    seen_update = seen_dead = 0
    for data, facts in generate(30, seed=4, rates=rates):
        calls = [m for m in messages(data) if str(m["recipient"]).startswith("canmore.")]
        seen_update += any(m["recipient"] == "canmore.update_textdoc" for m in calls)
        seen_dead += any(
            key in facts.dead_branch_nodes
            for key, node in data["mapping"].items()
            if node["message"] is not None and node["message"]["recipient"].startswith("canmore.")
        )
        canvas = [m for m in facts.messages if m.canvas]
        assert [m.parts[0] for m in canvas] == list(facts.canvas_documents)
        for message in canvas:
            assert message.parts[0].startswith("[canvas: ")
            assert message.parts[0].endswith(message.raw_parts[0])
    assert seen_update and seen_dead, "edits, and calls on dead branches, both occur"


def test_an_id_less_conversation_is_duplicated_only_as_an_identical_copy(tmp_path: Path) -> None:
    rates = {Feature.MISSING_ID: 0.5, Feature.DUPLICATES: 0.5}
    config = GeneratorConfig(seed=5, conversations=40, rates=rates)
    summary = write_export(tmp_path / "noid.json", config, collect_facts=True)
    items = json.loads(summary.path.read_bytes())
    id_less = [json.dumps(item, sort_keys=True) for item in items if "id" not in item]
    assert len(id_less) > len(set(id_less)) > 0, "some id-less conversations are repeated"
    assert summary.expected is not None
    for key, kind in summary.duplicates.items():
        if not summary.expected[key].has_id:
            assert kind is DuplicateKind.IDENTICAL


# -- output forms ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", list(ExportForm), ids=lambda f: f.value)
def test_every_form_is_valid_json_with_every_conversation(tmp_path: Path, form: ExportForm) -> None:
    config = GeneratorConfig(seed=9, conversations=30, form=form, shard_bytes=150_000)
    summary = write_export(tmp_path / f"x.{form.value}", config)
    members = load_members(summary.path, form)
    conversation_members = [name for name in members if "conversations" in name]
    assert conversation_members == summary.members or set(conversation_members) == set(
        summary.members
    )
    items = []
    for name in summary.members:
        value = members[name]
        if form is ExportForm.WRAPPED:
            assert set(value) == {"conversations"}
            value = value["conversations"]
        assert isinstance(value, list)
        items.extend(value)
    assert len(items) == summary.items_written
    if form is ExportForm.ZIP_SHARDS:
        assert len(summary.members) > 1
        assert summary.members[0] == "conversations-000.json"
    if form is ExportForm.ZIP_FOLDER:
        assert all(name.startswith("ChatGPT-export/") for name in summary.members)


def test_zip_exports_carry_the_usual_decoys(tmp_path: Path) -> None:
    summary = write_export(
        tmp_path / "z.zip", GeneratorConfig(seed=1, conversations=5, form=ExportForm.ZIP_SHARDS)
    )
    with zipfile.ZipFile(summary.path) as archive:
        names = set(archive.namelist())
    for decoy in (
        "chat.html",
        "shared_conversations.json",
        "user.json",
        "export_manifest.json",
        "conversations.json.index",
    ):
        assert decoy in names
    assert any(name.endswith(".jpeg") for name in names)


def test_ensure_ascii_output_is_pure_ascii(tmp_path: Path) -> None:
    config = GeneratorConfig(
        seed=1, conversations=10, ensure_ascii=True, rates={Feature.UNICODE: 1.0}
    )
    data = write_export(tmp_path / "a.json", config).path.read_bytes()
    assert data.isascii()
    assert b"\\u" in data


def test_sizes_follow_the_real_distribution(tmp_path: Path) -> None:
    summary = write_export(tmp_path / "s.json", GeneratorConfig(seed=21, target_bytes=15_000_000))
    sizes = sorted(summary.conversation_sizes)
    assert 22_000 <= statistics.median(sizes) <= 42_000
    assert 150_000 <= sizes[int(len(sizes) * 0.99)] <= 700_000
    assert summary.json_bytes >= 15_000_000


def test_a_file_size_target_measures_the_output_file(tmp_path: Path) -> None:
    config = GeneratorConfig(seed=2, target_bytes=400_000, size_basis="file", form=ExportForm.GZIP)
    summary = write_export(tmp_path / "f.gz", config)
    assert 400_000 <= summary.file_bytes < 700_000
    assert summary.json_bytes > 2 * summary.file_bytes


def _peak_rss_kib(target: int, path: Path) -> int:
    code = (
        "import resource, sys\n"
        "from soulworker.testing.export_generator import (\n"
        "    GeneratorConfig, ExportForm, write_export)\n"
        "config = GeneratorConfig(seed=1, target_bytes=int(sys.argv[1]),\n"
        "                         form=ExportForm.ZIP_SHARDS, compresslevel=1)\n"
        "write_export(sys.argv[2], config)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(target), str(path)],
        capture_output=True,
        check=True,
        timeout=120,
        cwd=REPOSITORY,
    )
    return int(result.stdout)


def test_generation_streams_in_constant_memory(tmp_path: Path) -> None:
    small = _peak_rss_kib(2_000_000, tmp_path / "small.zip")
    large = _peak_rss_kib(20_000_000, tmp_path / "large.zip")
    assert large - small < 6 * 1024, (small, large)


def test_the_cli_writes_an_export(tmp_path: Path) -> None:
    out = tmp_path / "cli.zip"
    result = subprocess.run(
        [
            sys.executable,
            str(REPOSITORY / "bench" / "generate_export.py"),
            "--size",
            "300KB",
            "--form",
            "zip-shards",
            "--seed",
            "3",
            "--shard-size",
            "100KB",
            "--without",
            "unicode",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "conversations" in result.stdout
    with zipfile.ZipFile(out) as archive:
        shards = [name for name in archive.namelist() if name.startswith("conversations-")]
    assert len(shards) >= 2
    spec = importlib.util.spec_from_file_location(
        "generate_export", REPOSITORY / "bench" / "generate_export.py"
    )
    assert spec is not None
    assert spec.loader is not None
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    parse_size = cli.parse_size
    assert parse_size("1GB") == 10**9
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("100") == 100
