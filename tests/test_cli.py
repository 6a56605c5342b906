"""The `lookalike` command end to end: the forms scripts rely on, and one clear line for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from lookalike.cli import main
from lookalike.demo import make_query, sample_photo


def lookalike(*args: str) -> subprocess.CompletedProcess:
    """Run the real command in a new process."""
    return subprocess.run([sys.executable, "-m", "lookalike.cli", *args], capture_output=True, text=True, timeout=300)


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_index_then_search_json_contract(tmp_path: Path, originals: Path) -> None:
    index = tmp_path / "idx"
    built = lookalike("index", str(originals), "--index", str(index))
    assert built.returncode == 0, built.stderr
    assert "14 embedded" in built.stdout and "index: Flat" in built.stdout
    query = make_query(tmp_path / "q", "coffee")
    found = lookalike("search", str(query), str(query), "--index", str(index), "-k", "3", "--json", "--fast")
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)
    assert [r["query"] for r in results] == [str(query), str(query)]
    first = results[0]["results"]
    assert [sorted(hit) for hit in first] == [["id", "path", "score"]] * 3
    assert Path(first[0]["path"]).stem == "coffee"
    assert first[0]["score"] > first[1]["score"] >= first[2]["score"]
    assert results[1] == results[0]


def test_search_table_by_id_and_knobs(built_index: Path) -> None:
    result = invoke("search", "--id", "1", "--id", "2", "--index", str(built_index), "-k", "2", "--nprobe", "4")
    assert result.exit_code == 0
    blocks = result.output.strip().split("\n\n")
    assert len(blocks) == 2
    first_hit = blocks[0].splitlines()[1].split()
    assert first_hit[0] == "1" and float(first_hit[1]) == pytest.approx(1.0, abs=1e-3) and first_hit[2] == "1"


def test_sheet_and_html_are_written(built_index: Path, tmp_path: Path) -> None:
    query = make_query(tmp_path / "q")
    sheet, page = tmp_path / "sheet.png", tmp_path / "page.html"
    result = invoke(
        "search", str(query), "--index", str(built_index), "-k", "4", "--sheet", str(sheet), "--html", str(page)
    )
    assert result.exit_code == 0
    with Image.open(sheet) as image:
        assert image.width > 5 * 176 and image.height > 176
    assert page.read_text().count("data:image/jpeg;base64,") == 5


def test_info_json_reports_counts_and_skips(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    sample_photo("rocket").save(photos / "rocket.jpg")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    index = tmp_path / "idx"
    assert invoke("index", str(photos), "--index", str(index), "--quiet").exit_code == 0
    details = json.loads(invoke("info", "--index", str(index), "--json").output)
    assert (details["images"], details["skipped"], details["index_vectors"]) == (1, 1, 1)
    assert details["skipped_files"][0]["path"].endswith("broken.jpg")
    assert details["embedder"].startswith("efficientnet-lite0@")


def test_reindex_changes_the_kind(index_copy: Path) -> None:
    result = invoke("reindex", "--index", str(index_copy), "--kind", "hnsw", "--hnsw-m", "16")
    assert result.exit_code == 0
    assert "HNSW16,Flat" in result.output
    assert json.loads((index_copy / "manifest.json").read_text())["index"]["factory"] == "HNSW16,Flat"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "{query}", "--index", "{missing}"], "no lookalike collection in"),
        (["search", "{text}", "--index", "{index}"], "not an image"),
        (["search", "{nothing}", "--index", "{index}"], "nothing.jpg: not a file"),
        (["search", "--id", "424242", "--index", "{index}"], "no indexed image has id 424242"),
        (["info", "--index", "{missing}"], "no lookalike collection in"),
        (["index", "{nothing}", "--index", "{index}"], "is not a folder"),
        (["index", "{photos}", "--index", "{index}", "--model", "resnet50"], "was built with efficientnet-lite0"),
        (["index", "{photos}", "--index", "{new}", "--kind", "IVF-nonsense"], "nor a Faiss factory string"),
        (["index", "{photos}", "--index", "{new}", "--model", "vgg99"], "unknown embedder 'vgg99'"),
        (["reindex", "--index", "{index}", "--kind", "ivfpq", "--m", "7"], "must divide the vector dimension"),
    ],
)
def test_bad_input_gets_one_clear_line(
    args: list[str], message: str, index_copy: Path, originals: Path, tmp_path: Path
) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    places = {
        "query": str(text),
        "missing": str(tmp_path / "missing"),
        "index": str(index_copy),
        "text": str(text),
        "nothing": str(tmp_path / "nothing.jpg"),
        "photos": str(originals),
        "new": str(tmp_path / "new"),
    }
    result = lookalike(*[arg.format(**places) for arg in args])
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_one_unreadable_query_is_reported_and_the_others_answered(built_index: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    query = tmp_path / "query.jpg"
    sample_photo("coffee").save(query, quality=90)
    result = lookalike("search", str(query), str(broken), str(query), "--index", str(built_index), "--json", "-k", "3")
    assert result.returncode == 1
    answers = json.loads(result.stdout)
    assert [a["query"] for a in answers] == [str(query), str(broken), str(query)]
    assert answers[0]["results"] and answers[0] == answers[2]
    assert set(answers[1]) == {"query", "error"} and "corrupt or truncated" in answers[1]["error"]
    assert result.stderr.strip().splitlines() == [f"error: query {broken}: {answers[1]['error']}"]


def test_k_zero_is_a_usage_error(built_index: Path) -> None:
    result = lookalike("search", "--id", "1", "--index", str(built_index), "-k", "0")
    assert result.returncode == 2
    assert "Invalid value for '-k'" in result.stderr and "Traceback" not in result.stderr


def test_a_corrupt_index_file_is_rebuilt_with_a_note(index_copy: Path) -> None:
    (index_copy / "index.faiss").write_bytes(b"\x00" * 100)
    result = lookalike("search", "--id", "3", "--index", str(index_copy), "-k", "1", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)[0]["results"][0]["id"] == 3
    assert result.stderr.startswith("note: ") and "rebuilding the index from the catalog" in result.stderr


def test_non_utf8_file_names_survive(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    raw_name = os.path.join(os.fsencode(photos), b"caf\xe9.jpg")
    sample_photo("chelsea").save(os.fsdecode(raw_name), format="JPEG")
    index = tmp_path / "idx"
    assert invoke("index", str(photos), "--index", str(index), "-q").exit_code == 0
    result = lookalike("search", "--id", "1", "--index", str(index), "--json")
    assert result.returncode == 0
    path = json.loads(result.stdout)[0]["results"][0]["path"]
    assert os.fsencode(path) == raw_name
    table = lookalike("search", "--id", "1", "--index", str(index))
    assert table.returncode == 0 and "caf\\udce9.jpg" in table.stdout


def test_python_dash_m_lookalike_is_the_command() -> None:
    result = subprocess.run([sys.executable, "-m", "lookalike", "models"], capture_output=True, text=True)
    assert result.returncode == 0 and "efficientnet-lite0" in result.stdout and "colour-layout" in result.stdout


def test_demo_writes_its_results(tmp_path: Path) -> None:
    result = lookalike("demo", "--dir", str(tmp_path / "demo"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "contact sheet:" in result.stdout and (tmp_path / "demo" / "results.png").is_file()
    top = result.stdout.split("query:")[1].splitlines()[1]
    assert "chelsea" in top


@pytest.mark.parametrize("loading", ["_swigfaiss", "onnxruntime"])
def test_ctrl_c_while_a_command_starts_is_one_line_and_status_130(
    built_index: Path, tmp_path: Path, loading: str
) -> None:
    """Interrupted while Faiss loads (imports), or while the embedder loads: one line, status 130."""
    import signal
    import time

    query = tmp_path / "new.jpg"  # not in the collection, so the embedder must load
    sample_photo("coffee").rotate(90).save(query, quality=90)
    command = [sys.executable, "-m", "lookalike", "search", str(query), "--index", str(built_index)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    maps = Path(f"/proc/{process.pid}/maps")
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if loading in maps.read_text():
                break
        except OSError:
            break
        time.sleep(0.002)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the search finished before the signal")  # nothing left to interrupt
    assert process.returncode == 130, stderr
    assert len(stderr.strip().splitlines()) == 1 and "interrupted" in stderr and "Traceback" not in stderr


def _damage_header(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.seek(4)
        handle.write(b"\xde\xad\xbe\xef")


def _truncate_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _flip_pages(path: Path) -> None:
    with open(path, "r+b") as handle:
        for offset in range(4096, path.stat().st_size, 4096 * 3):
            handle.seek(offset + 100)
            handle.write(b"\xff" * 8)


def _empty(path: Path) -> None:
    os.truncate(path, 0)


@pytest.mark.parametrize("damage", [_damage_header, _truncate_half, _flip_pages, _empty])
@pytest.mark.parametrize("command", ["info", "search", "index"])
def test_a_damaged_catalog_is_one_clear_line_for_every_command(
    index_copy: Path, originals: Path, damage: Callable[[Path], None], command: str
) -> None:
    damage(index_copy / "catalog.sqlite")
    query = next(originals.rglob("*.jpg"))
    args = {
        "info": ["info", "--index", str(index_copy)],
        "search": ["search", str(query), "--index", str(index_copy)],
        "index": ["index", str(originals), "--index", str(index_copy), "--quiet", "--model", "colour-layout"],
    }[command]
    result = lookalike(*args)
    assert "Traceback" not in result.stderr
    if result.returncode != 0:  # a damaged page that this command never reads may go unnoticed: that is fine
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert "catalog" in lines[0] and ("damaged" in lines[0] or "empty" in lines[0] or "not a" in lines[0])
    else:
        assert damage is _flip_pages


def test_an_empty_catalog_is_an_error_not_an_empty_collection(index_copy: Path) -> None:
    _empty(index_copy / "catalog.sqlite")
    result = lookalike("search", "--id", "1", "--index", str(index_copy))
    assert result.returncode == 1 and "is empty" in result.stderr
