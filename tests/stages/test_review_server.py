"""The review server (draw_bboxes.py --serve), over real HTTP on 127.0.0.1: it serves the page and
the run's pictures only, refuses every traversal form with 404, accepts only POST /picks with a
valid picks file of this run (400 with the reason otherwise), writes nothing but
BOXES_DIR/picks.json, survives concurrent POSTs, and a port in use is one error line."""

import http.client
import json
import shutil
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cocoaug.picks import REVIEW_PICKS_FILE, read_picks
from cocoaug.review_server import LISTEN_BACKLOG, MAX_BODY_BYTES, is_local, make_server, start_lines
from tests.helpers.review_run import start_server, stop_server
from tests.helpers.scripts import run_script, tree_hashes
from tests.helpers.stage_outputs import make_scores

SCRIPT = "draw_bboxes.py"


@pytest.fixture(scope="module")
def served(tmp_path_factory, stage_outputs, sample_dataset):
    """A running server on a scored run: (host, port, OUT_DIR, BOXES_DIR, the process)."""
    root = tmp_path_factory.mktemp("served")
    out, boxes = root / "out", root / "boxes"
    shutil.copytree(stage_outputs, out)
    make_scores(out)
    (root / "secret.txt").write_text("outside every served folder")
    process, url = start_server("-g", out, "-p", out / "blip2_post.json", "-i", sample_dataset / "images", "-o", boxes,
                                log_path=root / "server.log")
    parts = urlsplit(url)
    yield parts.hostname, parts.port, out, boxes, process
    code, rest = stop_server(process)
    assert code == 0 and "stopped serving" in rest


def request(served, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """One request with the path sent exactly as given (no normalisation); returns (status, body)."""
    host, port = served[0], served[1]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    connection.putrequest(method, path, skip_host="Host" in (headers or {}), skip_accept_encoding=True)
    for key, value in (headers or {}).items():
        connection.putheader(key, value)
    if body is not None:
        connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def post_picks(served, document, content_type="application/json", **headers):
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return request(served, "POST", "/picks", body, {"Content-Type": content_type, **headers})


def names(out: Path, mode: str) -> list[str]:
    return sorted(p.name for p in (out / mode).glob("*.png"))


def picks_of(out: Path, pairs, **extra) -> dict:
    return {"format": "cocoaug-picks", "version": 1, "generated_dir": str(out.resolve()), "source": "review page",
            "picks": [{"mode": m, "file_name": n} for m, n in pairs], **extra}


# ---------------------------------------------------------------- what is served


def test_the_page_and_the_run_pictures_are_served(served, sample_dataset):
    _, _, out, boxes, _ = served
    for path in ("/", "/review.html"):
        status, body = request(served, "GET", path)
        assert status == 200 and body == (boxes / "review.html").read_bytes()
    name = names(out, "generation")[0]
    assert request(served, "GET", f"/generation/{name}") == (200, (boxes / "generation" / name).read_bytes())
    assert request(served, "GET", f"/clean/generation/{name}") == (200, (out / "generation" / name).read_bytes())
    record = json.loads((out / "blip2_post.json").read_text())[0]
    assert request(served, "GET", f"/original/{record['image_id']}.jpg") == (200, (boxes / "original" / f"{record['image_id']}.jpg").read_bytes())
    assert request(served, "GET", f"/source/{record['image_id']}") == (200, (sample_dataset / "images" / record["file_name"]).read_bytes())
    assert request(served, "GET", f"/generation/{name}?cache=1")[0] == 200
    assert request(served, "GET", "/review_data/cards-0000.js") == (200, (boxes / "review_data" / "cards-0000.js").read_bytes())
    assert request(served, "GET", "/review_data/cards-0001.js")[0] == 404  # 4 cards: one sidecar
    # While it serves, the marker tells the file:// page where to go; the server itself does not serve it.
    marker = (boxes / "review_data" / "server.js").read_text()
    assert marker == f'cocoaugServer("http://127.0.0.1:{served[1]}/");\n' and request(served, "GET", "/review_data/server.js")[0] == 404


@pytest.mark.parametrize("path", [
    "/../blip2_post.json", "/generation/../../out/blip2_post.json", "/generation/..%2f..%2fout%2fblip2_post.json",
    "/%2e%2e/out/blip2_post.json", "/%2E%2E/%2E%2E/secret.txt", "/generation%2f{name}", "/generation/%2e%2e/{name}",
    "/..%5c..%5csecret.txt", "/generation\\..\\..\\secret.txt", "//etc/passwd", "/etc/passwd", "{absolute}",
    "/generation/", "/generation", "/clean/", "/overview/101.png", "/clean/generation/manifest.jsonl",
    "/clean/generation/scores.jsonl", "/source/999999", "/original/", "/picks", "/%00", "/generation/{name}%00.png",
    "/../../../../../../etc/passwd", "/clean/generation/../../secret.txt", "http://127.0.0.1/etc/passwd",
])
def test_traversal_and_anything_unlisted_is_404(served, path):
    _, _, out, boxes, _ = served
    path = path.format(name=names(out, "generation")[0], absolute=str((boxes / "review.html").resolve()))
    status, body = request(served, "GET", path)
    assert status == 404, path
    assert b"<" not in body and b"secret" not in body  # no listing, no file


def test_a_symlink_that_leads_outside_is_404(served, tmp_path):
    _, _, out, boxes, _ = served
    name = names(out, "inpainting")[-1]
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not a picture of this run")
    target = boxes / "inpainting" / name
    kept = target.read_bytes()
    target.unlink()
    target.symlink_to(outside)
    try:
        assert request(served, "GET", f"/inpainting/{name}")[0] == 404
    finally:
        target.unlink()
        target.write_bytes(kept)
    assert request(served, "GET", f"/inpainting/{name}") == (200, kept)


# ---------------------------------------------------------------- POST /picks


def test_a_posted_picks_file_is_saved_and_served_back(served):
    _, _, out, boxes, _ = served
    chosen = [("generation", names(out, "generation")[0]), ("inpainting", names(out, "inpainting")[1])]
    rejected = [("generation", names(out, "generation")[2])]
    document = picks_of(out, chosen, rejected=[{"mode": m, "file_name": n} for m, n in rejected])
    status, body = post_picks(served, document)
    assert status == 200, body
    assert json.loads(body) == json.loads((boxes / REVIEW_PICKS_FILE).read_bytes())  # the answer is the saved file
    saved = read_picks(boxes / REVIEW_PICKS_FILE)
    assert [(p.mode, p.file_name) for p in saved.picks] == sorted(chosen)
    assert saved.provenance["rejected"] == [{"mode": m, "file_name": n} for m, n in rejected]
    assert saved.generated_dir == str(out.resolve())
    status, body = request(served, "GET", "/picks.json")
    assert status == 200 and json.loads(body) == json.loads((boxes / REVIEW_PICKS_FILE).read_bytes())


def test_changes_of_two_tabs_are_merged_not_overwritten(served):
    _, _, out, boxes, _ = served
    a, b = ("generation", names(out, "generation")[0]), ("inpainting", names(out, "inpainting")[0])
    entry = lambda pick: {"mode": pick[0], "file_name": pick[1]}

    def saved():
        document = read_picks(boxes / REVIEW_PICKS_FILE)
        return [(p.mode, p.file_name) for p in document.picks], [(e["mode"], e["file_name"]) for e in document.provenance["rejected"]]

    assert post_picks(served, picks_of(out, [a]))[0] == 200  # no "changed": the whole state replaces the file
    assert saved() == ([a], [])
    # A second tab, opened earlier, knows nothing of a: it keeps b, and only b changes.
    assert post_picks(served, picks_of(out, [b], changed=[entry(b)]))[0] == 200
    assert saved() == (sorted([a, b]), [])
    # The first tab rejects a; its stale view of b does not matter.
    assert post_picks(served, picks_of(out, [], rejected=[entry(a)], changed=[entry(a)]))[0] == 200
    assert saved() == ([b], [a])
    # The second tab clears b (undecided): neither kept nor rejected.
    status, body = post_picks(served, picks_of(out, [], changed=[entry(b)]))
    assert status == 200 and saved() == ([], [a]) and json.loads(body)["rejected"] == [entry(a)]
    status, body = post_picks(served, picks_of(out, [], changed=[entry(("generation", "nope.png"))]))
    assert status == 400 and b"generation/nope.png" in body


@pytest.mark.parametrize("case, reason", [
    ("oversized", b"over the limit"),
    ("malformed", b"not valid JSON"),
    ("not picks", b"not a picks file"),
    ("bad entry", b"picks[0] must be an object, got 42"),
    ("folder in name", b"picks[0]: file_name climbs out of the image folder with '..'"),
    ("unknown picture", b"stage 2 did not make: generation/1_9999.png, inpainting/holiday.png"),
    ("unknown rejected", b"stage 2 did not make: generation/nope.png"),
    ("kept and rejected", b"both kept and rejected"),
    ("other folder", b"made for the stage-2 folder"),
    ("form body", b"Content-Type: application/json"),
    ("other origin", b"requests from http://evil.example are refused"),
])
def test_bad_posts_get_400_with_the_reason_and_change_nothing(served, case, reason):
    _, _, out, boxes, _ = served
    good = [("generation", names(out, "generation")[0])]
    assert post_picks(served, picks_of(out, good))[0] == 200
    before = tree_hashes(out, boxes)
    headers, content_type = {}, "application/json"
    if case == "oversized":
        body = b'{"picks": [' + b" " * MAX_BODY_BYTES + b"]}"
    elif case == "malformed":
        body = b'{"picks": [{"mode": "generation",'
    elif case == "not picks":
        body = b'[1, 2, 3]'
    elif case == "bad entry":
        body = json.dumps(picks_of(out, [])).replace('"picks": []', '"picks": [42]').encode()
    elif case == "folder in name":
        body = json.dumps(picks_of(out, [("generation", "../../secret.txt")])).encode()
    elif case == "unknown picture":
        body = json.dumps(picks_of(out, good + [("generation", "1_9999.png"), ("inpainting", "holiday.png")])).encode()
    elif case == "unknown rejected":
        body = json.dumps(picks_of(out, good, rejected=[{"mode": "generation", "file_name": "nope.png"}])).encode()
    elif case == "kept and rejected":
        body = json.dumps(picks_of(out, good, rejected=[{"mode": m, "file_name": n} for m, n in good])).encode()
    elif case == "other folder":
        body = json.dumps({**picks_of(out, good), "generated_dir": str(out.parent / "another_out")}).encode()
    elif case == "form body":
        body, content_type = b"picks=1", "application/x-www-form-urlencoded"
    elif case == "other origin":
        body, headers = json.dumps(picks_of(out, [])).encode(), {"Origin": "http://evil.example"}
    status, answer = post_picks(served, body, content_type, **headers)
    assert status == 400 and reason in answer, answer
    assert tree_hashes(out, boxes) == before


def test_requests_for_another_host_name_are_refused(served):
    _, port, out, boxes, _ = served
    before = tree_hashes(out, boxes)
    status, body = request(served, "GET", "/", headers={"Host": f"evil.example:{port}"})
    assert status == 400 and b"'evil.example' are refused" in body
    body = json.dumps(picks_of(out, [])).encode()
    headers = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}", "Content-Type": "application/json"}
    assert request(served, "POST", "/picks", body, headers)[0] == 400
    assert request(served, "GET", "/", headers={"Host": f"localhost:{port}"})[0] == 200
    assert tree_hashes(out, boxes) == before


def test_only_post_picks_is_accepted(served):
    _, _, out, boxes, _ = served
    before = tree_hashes(out, boxes)
    body = json.dumps(picks_of(out, [])).encode()
    assert request(served, "POST", "/picks.json", body, {"Content-Type": "application/json"})[0] == 404
    assert request(served, "POST", "/../picks", body, {"Content-Type": "application/json"})[0] == 404
    assert request(served, "PUT", "/picks", body, {"Content-Type": "application/json"})[0] == 501
    assert request(served, "DELETE", "/picks.json")[0] == 501
    assert tree_hashes(out, boxes) == before


def test_concurrent_posts_leave_a_valid_file_and_nothing_else(served):
    _, _, out, boxes, _ = served
    everything = [(m, n) for m in ("generation", "inpainting") for n in names(out, m)]
    states = [everything[: k + 1] for k in range(8)]
    before = {p for p in tree_hashes(out, boxes) if p.name != REVIEW_PICKS_FILE}
    errors = []

    def post_many(state):
        for _ in range(6):
            status, body = post_picks(served, picks_of(out, state))
            if status != 200:
                errors.append(body)
            saved = json.loads((boxes / REVIEW_PICKS_FILE).read_bytes())  # never half-written
            assert len(saved["picks"]) in range(1, 9)

    threads = [threading.Thread(target=post_many, args=(state,)) for state in states]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    saved = read_picks(boxes / REVIEW_PICKS_FILE)
    assert [(p.mode, p.file_name) for p in saved.picks] in [sorted(s) for s in states]
    after = {p for p in tree_hashes(out, boxes) if p.name != REVIEW_PICKS_FILE}
    assert after == before  # no temp file left behind, nothing else written


def test_the_served_run_inputs_are_untouched(served, stage_outputs):
    _, _, out, _, _ = served
    for mode in ("generation", "inpainting"):
        for name in names(out, mode):
            assert (out / mode / name).read_bytes() == (stage_outputs / mode / name).read_bytes()


# ---------------------------------------------------------------- starting


def test_a_port_in_use_is_one_error_line(tmp_path, stage_outputs):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_script(SCRIPT, "-g", stage_outputs, "-p", stage_outputs / "blip2_post.json", "-o", tmp_path / "boxes",
                            "--no-overview", "--serve", "--port", port)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: port {port} is already in use: stop the other server or pass another --port (127.0.0.1:{port})"
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "boxes").exists()  # said before anything was drawn


def test_anything_but_localhost_is_announced():
    assert is_local("127.0.0.1") and is_local("localhost") and is_local("::1") and is_local("127.0.0.2")
    assert not is_local("0.0.0.0") and not is_local("") and not is_local("192.168.1.5") and not is_local("example.org")
    local = start_lines("127.0.0.1", 8765, "/b/picks.json")
    assert local == ["serving the review page at http://127.0.0.1:8765/ (decisions are saved to /b/picks.json; Ctrl-C stops)"]
    everyone = start_lines("0.0.0.0", 8765, "/b/picks.json")
    assert everyone[0].startswith("warning: listening on 0.0.0.0, not localhost: anyone who can reach this machine on port 8765")
    assert "http://127.0.0.1:8765/" in everyone[1]
    assert "http://[::1]:9000/" in start_lines("::1", 9000, "p")[0]


def raw_exchange(served, request_bytes: bytes) -> bytes:
    """Send REQUEST_BYTES as they are on a fresh connection to the server; return the whole answer."""
    with socket.create_connection((served[0], served[1]), timeout=30) as connection:
        connection.sendall(request_bytes)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("method, headers, reason", [
    ("GET", ["Host: ["], b"the Host header is malformed"),
    ("GET", ["Host: 127.0.0.1:notaport"], b"the Host header is malformed"),
    ("POST", ["Host: [", "Origin: http://[", "Content-Type: application/json"], b"the Host header is malformed"),
    ("POST", ["Host: {host}:{port}", "Origin: http://[", "Content-Type: application/json"], b"the Origin header is malformed"),
    ("POST", ["Host: {host}:{port}", "Origin: http://127.0.0.1:port", "Content-Type: application/json"], b"the Origin header is malformed"),
])
def test_a_malformed_host_or_origin_is_400_without_a_traceback(served, method, headers, reason):
    host, port, boxes = served[0], served[1], served[3]
    body = b'{"picks": []}' if method == "POST" else b""
    lines = [f"{method} {'/picks' if method == 'POST' else '/'} HTTP/1.1", *(h.format(host=host, port=port) for h in headers),
             f"Content-Length: {len(body)}", "Connection: close"]
    before = tree_hashes(boxes)
    answer = raw_exchange(served, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert reason in answer
    assert tree_hashes(boxes) == before
    assert "Traceback" not in (boxes.parent / "server.log").read_text()
    assert request(served, "GET", "/")[0] == 200  # still serving


def test_the_listen_backlog_holds_a_burst_of_connections():
    """Nothing accepts here: every connection request waits in the listen queue; with the standard
    library's backlog of 5, the 7th would get no answer to its SYN and time out."""
    server = make_server(None, "127.0.0.1", 0)
    try:
        connections = [socket.create_connection(server.server_address, timeout=2) for _ in range(LISTEN_BACKLOG // 2)]
        for connection in connections:
            connection.close()
    finally:
        server.server_close()
    assert LISTEN_BACKLOG >= 64 and server.request_queue_size == LISTEN_BACKLOG
