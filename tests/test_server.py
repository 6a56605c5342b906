"""The HTTP API, in process (FastAPI's TestClient), over a real index of real photos."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server needs the [server] extra")

import anyio  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from lookalike import Collection  # noqa: E402
from lookalike.cli import main  # noqa: E402
from lookalike.demo import TRANSFORMS, sample_photo  # noqa: E402
from lookalike.server import THUMB_SIZE, create_app  # noqa: E402

BASE = "http://localhost"
WEB = Path(__file__).parents[1] / "src" / "lookalike" / "web"


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def upload(client: TestClient, data: bytes, name: str = "query.jpg", **fields: str):
    return client.post("/api/search", files={"image": (name, data, "image/jpeg")}, data=fields)


@pytest.fixture(scope="module")
def client(built_index: Path) -> Iterator[TestClient]:
    with TestClient(create_app(built_index), base_url=BASE) as client:
        yield client


def ids_by_stem(index: Path) -> dict[str, int]:
    with Collection.open(index) as collection:
        records = collection.catalog.images_by_id(range(1, collection.catalog.max_image_id() + 1))
    return {Path(r.path).stem: r.id for r in records.values()}


# --- searching ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("photo", "transform"), [("chelsea", "crop"), ("coffee", "colour"), ("rocket", "jpeg20"), ("astronaut", "flip")]
)
def test_an_uploaded_copy_finds_its_original_first(client: TestClient, photo: str, transform: str) -> None:
    data = jpeg_bytes(TRANSFORMS[transform](sample_photo(photo)))
    response = upload(client, data, f"{photo}-{transform}.jpg", k="5", fast="true")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["query"] == {"name": f"{photo}-{transform}.jpg"}
    results = body["results"]
    assert len(results) == 5
    assert all(sorted(hit) == ["id", "path", "score"] for hit in results)
    assert Path(results[0]["path"]).stem == photo
    scores = [hit["score"] for hit in results]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.6 > scores[-1]
    assert isinstance(body["took_ms"], float) and body["took_ms"] > 0


def test_an_upload_is_searched_accurately_unless_fast(client: TestClient) -> None:
    data = jpeg_bytes(sample_photo("rocket").transpose(Image.Transpose.ROTATE_90))
    accurate = upload(client, data, k="3")
    fast = upload(client, data, k="3", fast="true")
    assert accurate.status_code == 200 and fast.status_code == 200
    hits = accurate.json()["results"]
    assert [sorted(hit) for hit in hits] == [["copy", "copy_score", "evidence", "id", "path", "score"]] * 3
    assert Path(hits[0]["path"]).stem == "rocket" and hits[0]["copy"] is True and hits[0]["copy_score"] >= 0.5
    assert [hit["copy"] for hit in hits[1:]] == [False, False]
    assert [sorted(hit) for hit in fast.json()["results"]] == [["id", "path", "score"]] * 3
    refused = upload(client, data, fast="maybe")
    assert refused.status_code == 422 and refused.json() == {"error": "fast: must be true or false, not 'maybe'"}


def test_upload_accepts_search_knobs_and_defaults_to_ten(client: TestClient) -> None:
    data = jpeg_bytes(sample_photo("coins"))
    assert len(upload(client, data).json()["results"]) == 10
    tuned = upload(client, data, k="3", nprobe="4", ef="32")
    assert tuned.status_code == 200
    assert Path(tuned.json()["results"][0]["path"]).stem == "coins"


def test_search_by_id_uses_the_stored_embedding(client: TestClient, built_index: Path) -> None:
    camera = ids_by_stem(built_index)["camera"]
    response = client.get("/api/search", params={"id": camera, "k": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"]["id"] == camera and Path(body["query"]["path"]).stem == "camera"
    with Collection.open(built_index) as collection:
        expected = collection.search_ids([camera], k=4)[0].to_dict()["results"]
        assert collection._embedder is None
    assert body["results"] == expected
    assert body["results"][0]["id"] == camera and body["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_search_by_unknown_id_is_404(client: TestClient) -> None:
    response = client.get("/api/search", params={"id": 999_999})
    assert response.status_code == 404
    assert "no indexed image has id 999999" in response.json()["error"]


# --- files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stem", "media_type"), [("astronaut", "image/jpeg"), ("chelsea", "image/png"), ("coffee", "image/webp")]
)
def test_images_endpoint_returns_the_original_file(
    client: TestClient, built_index: Path, originals: Path, stem: str, media_type: str
) -> None:
    image_id = ids_by_stem(built_index)[stem]
    response = client.get(f"/api/images/{image_id}")
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == next(originals.rglob(f"{stem}.*")).read_bytes()


def test_thumbnails_are_small_cached_jpegs(client: TestClient, built_index: Path) -> None:
    image_id = ids_by_stem(built_index)["hubble_deep_field"]
    first = client.get(f"/api/thumbs/{image_id}")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(first.content)) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) == THUMB_SIZE
    cached = client.app.state.service.thumbs.bytes
    assert cached >= len(first.content)
    again = client.get(f"/api/thumbs/{image_id}")
    assert again.content == first.content
    assert client.app.state.service.thumbs.bytes == cached  # served from the cache, not stored twice


@pytest.mark.parametrize("path", ["/api/images/424242", "/api/thumbs/424242"])
def test_unknown_ids_are_404_json(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json() == {"error": "no indexed image has id 424242"}


def test_a_file_that_vanished_is_404_not_500(index_copy: Path, tmp_path: Path) -> None:
    extra = tmp_path / "more"
    extra.mkdir()
    victim = extra / "rocket-copy.jpg"
    TRANSFORMS["small"](sample_photo("rocket")).save(victim, quality=90)
    with Collection.open(index_copy) as collection:
        collection.add_folder(extra)
    rocket = ids_by_stem(index_copy)["rocket-copy"]
    with TestClient(create_app(index_copy), base_url=BASE) as client:
        assert client.get(f"/api/images/{rocket}").status_code == 200
        victim.unlink()
        for path in (f"/api/images/{rocket}", f"/api/thumbs/{rocket}"):
            response = client.get(path)
            assert response.status_code == 404
            assert response.json() == {"error": f"the file of image {rocket} is no longer where it was indexed"}


# --- bad requests ---------------------------------------------------------------------------------


def test_an_upload_over_the_limit_is_413(built_index: Path, originals: Path) -> None:
    photo = next(originals.rglob("camera.*")).read_bytes()
    assert len(photo) > 50_000
    with TestClient(create_app(built_index, max_upload_bytes=50_000), base_url=BASE) as client:
        response = client.post("/api/search", files={"image": ("camera.png", photo, "image/png")})
        assert response.status_code == 413
        assert response.json() == {"error": "upload larger than the server's limit of 50000 bytes"}
        small = upload(client, jpeg_bytes(sample_photo("coins").resize((128, 96))), k="1")
        assert small.status_code == 200 and Path(small.json()["results"][0]["path"]).stem == "coins"


def test_a_streamed_upload_without_length_is_cut_at_the_limit(built_index: Path, originals: Path) -> None:
    """Driven at the ASGI level, chunk by chunk, as uvicorn would: the server stops reading past the limit."""
    photo = next(originals.rglob("camera.*")).read_bytes()
    boundary = "lookalike-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="camera.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{boundary}--\r\n".encode()
    )
    chunks = [body[start : start + 16_384] for start in range(0, len(body), 16_384)]
    app = create_app(built_index, max_upload_bytes=50_000)
    consumed = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal consumed
        if consumed == len(chunks):
            return {"type": "http.disconnect"}
        consumed += 1
        return {"type": "http.request", "body": chunks[consumed - 1], "more_body": consumed < len(chunks)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/search",
        "raw_path": b"/api/search",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost"), (b"content-type", f"multipart/form-data; boundary={boundary}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    try:
        anyio.run(app, scope, receive, send)
    finally:
        app.state.service.close()
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert json.loads(b"".join(m.get("body", b"") for m in sent[1:])) == {
        "error": "upload larger than the server's limit of 50000 bytes"
    }
    assert 50_000 // 16_384 < consumed < len(chunks)  # read just past the limit, not to the end


def test_a_declared_length_over_the_limit_is_refused_before_reading(built_index: Path) -> None:
    with TestClient(create_app(built_index, max_upload_bytes=1000), base_url=BASE) as client:
        response = client.post(
            "/api/search",
            content=b"--x\r\n",
            headers={"content-type": "multipart/form-data; boundary=x", "content-length": "999999999"},
        )
    assert response.status_code == 413


def test_a_text_file_is_415_with_a_message(client: TestClient) -> None:
    response = client.post("/api/search", files={"image": ("notes.txt", b"just some words\n", "text/plain")})
    assert response.status_code == 415
    assert response.json() == {
        "error": "not an image lookalike can read: notes.txt: not an image, or a format lookalike does not read"
    }


def test_a_truncated_photo_is_415(client: TestClient) -> None:
    data = jpeg_bytes(sample_photo("rocket"))
    response = upload(client, data[: len(data) // 3])
    assert response.status_code == 415
    assert "corrupt or truncated" in response.json()["error"]


def test_a_form_that_is_not_multipart_is_415(client: TestClient) -> None:
    response = client.post("/api/search", data={"k": "3"})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["error"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"k": "0"}, "k: must be between 1 and 10000, not 0"),
        ({"k": "10001"}, "k: must be between 1 and 10000, not 10001"),
        ({"k": "ten"}, "k: must be a whole number, not 'ten'"),
        ({"nprobe": "-2"}, "nprobe: must be between 1 and 65536, not -2"),
    ],
)
def test_bad_upload_fields_are_422(client: TestClient, fields: dict[str, str], message: str) -> None:
    response = upload(client, jpeg_bytes(sample_photo("coins")), **fields)
    assert response.status_code == 422
    assert response.json() == {"error": message}


def test_a_missing_image_field_is_422(client: TestClient) -> None:
    response = client.post("/api/search", files={"picture": ("a.jpg", jpeg_bytes(sample_photo("coins")), "image/jpeg")})
    assert response.status_code == 422
    assert response.json() == {"error": "image: send the image as the multipart file field 'image'"}
    text_field = client.post("/api/search", files={"k": (None, "3")}, data={"image": "not a file"})
    assert text_field.status_code == 422
    assert text_field.json() == {"error": "image: must be a file, not a text field"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("id=1&k=0", "k: Input should be greater than or equal to 1"),
        ("id=1&k=10001", "k: Input should be less than or equal to 10000"),
        ("k=3", "id: Field required"),
        ("id=abc", "id: Input should be a valid integer, unable to parse string as an integer"),
        ("id=0", "id: Input should be greater than or equal to 1"),
    ],
)
def test_bad_search_parameters_are_422(client: TestClient, query: str, message: str) -> None:
    response = client.get(f"/api/search?{query}")
    assert response.status_code == 422
    assert response.json() == {"error": message}


def test_unknown_routes_and_methods_are_json(client: TestClient) -> None:
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    wrong = client.delete("/api/search")
    assert wrong.status_code == 405 and wrong.json() == {"error": "Method Not Allowed"}
    not_a_number = client.get("/api/images/abc")
    assert not_a_number.status_code == 422 and "image_id" in not_a_number.json()["error"]


# --- guards ---------------------------------------------------------------------------------------


def test_a_token_is_required_on_the_api_when_set(built_index: Path) -> None:
    with TestClient(create_app(built_index, token="s3cret-token"), base_url=BASE) as client:
        refused = client.get("/api/stats")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "needs its token" in refused.json()["error"]
        assert client.get("/api/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/thumbs/1").status_code == 401
        assert upload(client, jpeg_bytes(sample_photo("coins"))).status_code == 401
        assert client.get("/api/stats", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert client.get("/api/thumbs/1?token=s3cret-token").status_code == 200
        # The page and the liveness probe carry no data: they load without the token.
        assert client.get("/").status_code == 200
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST."])
def test_local_host_headers_are_accepted(client: TestClient, host: str) -> None:
    assert client.get("/healthz", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.2", ""])
def test_other_host_headers_are_400(client: TestClient, host: str) -> None:
    for path in ("/", "/healthz", "/api/stats"):
        response = client.get(path, headers={"host": host})
        assert response.status_code == 400
        assert response.json() == {"error": "this server does not answer to that Host header"}


def test_the_bound_host_can_be_allowed(built_index: Path) -> None:
    app = create_app(built_index, allowed_hosts=["localhost", "photos.lan"])
    with TestClient(app, base_url="http://photos.lan:8000") as client:
        assert client.get("/api/stats").status_code == 200
        assert client.get("/api/stats", headers={"host": "127.0.0.1"}).status_code == 400


# --- stats, page, docs ----------------------------------------------------------------------------


def test_stats_match_the_catalog(client: TestClient, built_index: Path) -> None:
    body = client.get("/api/stats").json()
    with Collection.open(built_index) as collection:
        info = collection.info()
        indexed = collection.catalog.count("indexed")
    assert body["images"] == indexed == info.images == 14
    assert body["skipped"] == info.skipped == 0
    assert body["index_vectors"] == body["served_vectors"] == info.index_vectors == 14
    assert body["embedder"] == info.embedder and body["embedder"].startswith("efficientnet-lite0@")
    assert (body["index_kind"], body["index_factory"]) == (info.index_kind, info.index_factory) == ("flat", "Flat")
    assert body["bytes_on_disk"]["index.faiss"] == (built_index / "index.faiss").stat().st_size
    assert body == {**info.to_dict(), "served_vectors": 14}  # one JSON shape: `lookalike info --json`


def test_the_page_and_its_assets_load_nothing_from_elsewhere(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "http" not in csp
    for asset in ("client.js", "app.js", "style.css", "icon.svg"):
        assert f"/static/{asset}" in page.text
        served = client.get(f"/static/{asset}")
        assert served.status_code == 200
        assert served.text == (WEB / asset).read_text()
        assert "http://" not in served.text.replace("http://www.w3.org/2000/svg", "") and "https://" not in served.text
    assert "http://" not in page.text and "https://" not in page.text


def test_the_api_docs_work_offline(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "/static/swagger-ui-bundle.js" in docs.text and "/static/swagger-ui.css" in docs.text
    assert "cdn" not in docs.text.lower()
    assert client.get("/static/swagger-ui-bundle.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/images/{image_id}", "/api/thumbs/{image_id}", "/api/stats"} <= set(schema["paths"])
    assert (
        "image"
        in schema["paths"]["/api/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"][
            "properties"
        ]
    )


# --- another process updates the index ---------------------------------------------------------


def test_an_index_updated_elsewhere_is_served_after_the_swap(index_copy: Path, tmp_path: Path) -> None:
    extra = tmp_path / "more"
    extra.mkdir()
    TRANSFORMS["crop"](sample_photo("chelsea")).save(extra / "chelsea-cropped.jpg", quality=90)
    query = jpeg_bytes(TRANSFORMS["colour"](sample_photo("chelsea")))
    with TestClient(create_app(index_copy, reload_check_seconds=0), base_url=BASE) as client:
        before = upload(client, query, k="3").json()["results"]
        assert [Path(hit["path"]).stem for hit in before][:1] == ["chelsea"]
        assert client.get("/api/stats").json()["served_vectors"] == 14
        with Collection.open(index_copy) as writer:  # as `lookalike index` in another process would
            writer.add_folder(extra)
        stats = client.get("/api/stats").json()
        assert (stats["images"], stats["index_vectors"], stats["served_vectors"]) == (15, 15, 15)
        after = upload(client, query, k="3").json()["results"]
        assert {Path(hit["path"]).stem for hit in after[:2]} == {"chelsea", "chelsea-cropped"}
        assert client.app.state.service.reloads == 1


def test_concurrent_searches_during_reindexing_each_see_one_whole_index(index_copy: Path) -> None:
    """Searches by id while another writer swaps the index kind back and forth: never an error, never a mix."""
    failures: list[str] = []
    stop = threading.Event()
    with TestClient(create_app(index_copy, reload_check_seconds=0), base_url=BASE) as client:
        expected = {i: client.get("/api/search", params={"id": i, "k": 14}).json()["results"] for i in (1, 5, 9)}

        def search_forever(image_id: int) -> None:
            while not stop.is_set():
                try:
                    response = client.get("/api/search", params={"id": image_id, "k": 14})
                except Exception as error:  # noqa: BLE001 - the TestClient re-raises server errors: record them
                    failures.append(repr(error))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                    continue
                ids = [hit["id"] for hit in response.json()["results"]]
                if ids != [hit["id"] for hit in expected[image_id]]:
                    failures.append(f"id {image_id}: {ids}")

        threads = [threading.Thread(target=search_forever, args=(i,)) for i in (1, 5, 9)]
        for thread in threads:
            thread.start()
        try:
            with Collection.open(index_copy) as writer:
                for kind in ("hnsw", "flat", "hnsw", "flat"):
                    writer.reindex(kind)
                    time.sleep(0.05)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        served = client.get("/api/stats").json()
    assert failures == []
    assert client.app.state.service.reloads >= 1
    assert served["index_factory"] == "Flat" and served["served_vectors"] == 14


# --- the serve command's refusals (the server itself is started in test_browser.py) -------------------


def test_serve_refuses_a_public_address_without_a_token(built_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOKALIKE_TOKEN", raising=False)
    result = CliRunner().invoke(main, ["serve", "--index", str(built_index), "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: --host 0.0.0.0 lets other machines reach this collection: give --token T (or set LOOKALIKE_TOKEN), "
        "or serve on 127.0.0.1"
    ]


def test_create_app_refuses_a_public_address_without_a_token_and_trusts_only_its_names(built_index: Path) -> None:
    from lookalike import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="needs a token"):
        create_app(built_index, host="0.0.0.0")
    app = create_app(built_index, host="192.0.2.7", token="t0k3n")
    with TestClient(app, base_url="http://192.0.2.7:8000") as client:
        headers = {"Authorization": "Bearer t0k3n"}
        assert client.get("/api/stats", headers=headers).status_code == 200
        assert client.get("/api/stats", headers={**headers, "host": "evil.example"}).status_code == 400


def test_serve_reports_a_missing_index_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["serve", "--index", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert len(result.output.splitlines()) == 1
    assert result.output.startswith("error: no lookalike collection in ")


# --- hostile requests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/api/search?id=9223372036854775808", "/api/images/9223372036854775808", "/api/thumbs/99999999999999999999"],
)
def test_ids_beyond_sqlite_integers_are_422_not_500(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 422 and "error" in response.json()


def test_ids_beyond_sqlite_integers_are_one_line_on_the_command_line(built_index: Path) -> None:
    result = CliRunner().invoke(main, ["search", "--id", "9223372036854775808", "--index", str(built_index)])
    assert result.exit_code == 1
    assert result.output.splitlines() == ["error: no indexed image has id 9223372036854775808"]


def test_file_names_that_are_not_utf8_travel_escaped_as_in_the_cli_json(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    raw = os.path.join(os.fsencode(photos), b"latin1_\xe9\xff.jpg")
    sample_photo("coffee").save(raw.decode("utf-8", "surrogateescape"), quality=90)
    with Collection.create(tmp_path / "idx", embedder="colour-layout") as collection:
        collection.add_folder(photos)
    with TestClient(create_app(tmp_path / "idx"), base_url=BASE) as client:
        response = client.get("/api/search", params={"id": 1, "k": 1})
    assert response.status_code == 200
    assert "latin1_\\udce9\\udcff.jpg" in response.text  # the escapes json.dumps writes for the CLI
    assert os.fsencode(response.json()["results"][0]["path"]) == raw


def test_a_client_that_goes_away_mid_upload_gets_one_log_line(
    built_index: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(built_index)
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": b"--x\r\nContent-Disposition: form-data;", "more_body": True}]

    async def receive() -> dict:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/search",
        "raw_path": b"/api/search",
        "query_string": b"",
        "headers": [(b"host", b"localhost"), (b"content-type", b"multipart/form-data; boundary=x")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("localhost", 80),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
    }
    with caplog.at_level("INFO", logger="lookalike.server"):
        anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 400
    assert [r.getMessage() for r in caplog.records] == ["a client went away during its upload"]


def test_an_app_serves_again_after_its_server_restarts(built_index: Path) -> None:
    """Each server start and stop runs the app's lifespan; the embedding thread and index come back."""
    app = create_app(built_index)
    query = jpeg_bytes(TRANSFORMS["colour"](sample_photo("coffee")))
    for _ in range(2):
        with TestClient(app, base_url=BASE) as client:
            response = upload(client, query, k="1")
            assert response.status_code == 200 and Path(response.json()["results"][0]["path"]).stem == "coffee"
