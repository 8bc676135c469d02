"""The review page's server, ``draw_bboxes.py --serve``: serves BOXES_DIR/review.html and the
pictures it shows, and saves every decision to BOXES_DIR/picks.json.

Built on the standard library's ``ThreadingHTTPServer``: nothing to install (it works offline
and on a plain Debian), every line of it fits in this file, and each route is an explicit
mapping from a URL to a file rather than a static-file helper whose path handling we would
have to trust. It is a tool for one user on their own machine, not a web server for the internet.

Routes (every other path is 404, directories are never listed):

- ``GET /`` and ``/review.html``: the page;
- ``GET /review_data/cards-NNNN.js``: the page's data, one page of cards each;
- ``GET /<mode>/<file_name>``, ``/original/<image_id>.jpg``: what stage 3 drew in BOXES_DIR;
- ``GET /clean/<mode>/<file_name>``: stage 2's clean picture; ``GET /source/<image_id>``: the original;
- ``GET /picks.json``: the saved decisions (404 before the first one);
- ``POST /picks``: a tab's whole state as a picks file (cocoaug.picks, the rejected pictures under
  ``"rejected"``, the pictures it changed since its last save under ``"changed"``), merged into
  BOXES_DIR/picks.json under a lock (read, merge, atomic write) and answered with the file's new
  content.

Bound to localhost, it answers only requests for 127.0.0.1, localhost or ::1 (a DNS-rebinding
guard); a POST must come from the page's own origin. A URL is looked up, once percent-decoded,
in the table of the run's pictures; encoded dots and slashes, ``..``, backslashes and files that
resolve outside their folder (symbolic links) are refused with 404 before that.
"""

import errno
import ipaddress
import logging
import mimetypes
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import orjson

from cocoaug.errors import UserError, listed
from cocoaug.paths import resolve_under
from cocoaug.picks import REVIEW_PICKS_FILE, check_picks, parse_picks, read_picks, write_picks
from cocoaug.atomic import write_bytes_atomic
from cocoaug.review import CARDS_PER_PAGE, DATA_SUBDIR, REVIEW_PAGE, original_name, sidecar_name

log = logging.getLogger("cocoaug")
MAX_BODY_BYTES = 10 * 1024 * 1024  # a picks file of 50,000 pictures is about 3 MB
DISCARD_LIMIT = 4 * MAX_BODY_BYTES  # an oversized body is read (and dropped) up to this, so the client gets the 400
SUSPICIOUS = re.compile(r"%2e|%2f|%5c|%00", re.IGNORECASE)
LISTEN_BACKLOG = 128  # connections waiting to be accepted


@dataclass
class ReviewSite:
    """What the server may serve and accept: ``files`` maps URL paths to (file, the folder it must stay in)."""

    boxes_dir: Path
    generated_dir: str
    files: dict[str, tuple[Path, Path]]
    available: set[tuple[str, str]]
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def picks_path(self) -> Path:
        return self.boxes_dir / REVIEW_PICKS_FILE

    @classmethod
    def for_stage3(cls, boxes_dir, generated, folders: dict, images_dir, items, records_by_id) -> "ReviewSite":
        """The site of one stage-3 run: its page, boxed copies, originals with boxes, clean pictures and originals."""
        boxes_dir = Path(boxes_dir)
        files = {"/": (boxes_dir / REVIEW_PAGE, boxes_dir), f"/{REVIEW_PAGE}": (boxes_dir / REVIEW_PAGE, boxes_dir)}
        available = set()
        sources = {item[0].source_image_id for item in items}
        for chunk in range(-(-len(sources) // CARDS_PER_PAGE)):
            files[f"/{sidecar_name(chunk)}"] = (boxes_dir / sidecar_name(chunk), boxes_dir)
        for item in items:
            image = item[0]
            available.add((image.mode, image.file_name))
            files[f"/{image.mode}/{image.file_name}"] = (boxes_dir / image.mode / image.file_name, boxes_dir)
            files[f"/clean/{image.mode}/{image.file_name}"] = (image.path, Path(folders[image.mode]))
        if images_dir is not None:
            for image_id in {item[0].source_image_id for item in items}:
                files[f"/{original_name(image_id)}"] = (boxes_dir / original_name(image_id), boxes_dir)
                files[f"/source/{image_id}"] = (resolve_under(images_dir, records_by_id[image_id]["file_name"]), Path(images_dir))
        return cls(boxes_dir, os.path.realpath(generated), files, available)

    def resolve(self, target: str) -> Path | None:
        """The file a request target names, or None (-> 404)."""
        path = target.split("?", 1)[0].split("#", 1)[0]
        if SUSPICIOUS.search(path):
            return None
        try:
            decoded = unquote(path, errors="strict")
        except UnicodeDecodeError:
            return None
        if "\\" in decoded or "//" in decoded or "\x00" in decoded or ".." in decoded.split("/"):
            return None
        entry = self.files.get(decoded)
        if entry is None:
            return None
        file, root = entry
        real, real_root = os.path.realpath(file), os.path.realpath(root)
        if os.path.commonpath([real, real_root]) != real_root or not os.path.isfile(real):
            return None
        return Path(real)

    def save_picks(self, body: bytes) -> dict:
        """Validate a POSTed picks file and save it as BOXES_DIR/picks.json; returns the object written.

        The body is a tab's whole state. With ``"changed"`` (the pictures that tab changed since its
        last save) and a picks.json already there, only those pictures take the body's decision and
        the others keep the saved one, so that two tabs do not undo each other's decisions.
        UserError says what is wrong with the body.
        """
        source = "POST /picks"
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UserError(f"the body is not valid JSON: {exc}", source) from None
        keep = self._checked(parse_picks(data, source), source)
        reject = self._checked(parse_picks({"picks": data.get("rejected", [])}, f"{source}, 'rejected'"), f"{source}, 'rejected'")
        both = sorted(f"{p.mode}/{p.file_name}" for p in keep & reject)
        if both:
            raise UserError(f"{len(both)} picture(s) are both kept and rejected: {listed(both)}", source)
        changed = None
        if data.get("changed") is not None:
            changed = self._checked(parse_picks({"picks": data["changed"]}, f"{source}, 'changed'"), f"{source}, 'changed'")
        with self.lock:
            saved = self._saved_state() if changed is not None else None
            if saved is not None:
                saved_keep, saved_reject = saved
                keep = (saved_keep - changed) | (keep & changed)
                reject = (saved_reject - changed) | (reject & changed)
            rejected_list = [{"mode": p.mode, "file_name": p.file_name} for p in sorted(reject)]
            return write_picks(self.picks_path, keep, self.generated_dir, source="review page", rejected=rejected_list)

    def _checked(self, picks_file, source) -> set:
        check_picks(picks_file, self.generated_dir, self.available, source)
        return set(picks_file.picks)

    def _saved_state(self) -> tuple[set, set] | None:
        """(kept, rejected) of BOXES_DIR/picks.json, or None when there is none yet (or it is not a picks file)."""
        if not self.picks_path.is_file():
            return None
        try:
            saved = read_picks(self.picks_path)
            rejected = parse_picks({"picks": saved.provenance.get("rejected", [])}, self.picks_path)
        except UserError as exc:
            log.warning("%s is replaced: %s", self.picks_path, exc.message)
            return None
        return set(saved.picks), set(rejected.picks)

    def saved_picks(self) -> bytes | None:
        with self.lock:
            try:
                return self.picks_path.read_bytes()
            except FileNotFoundError:
                return None


class ReviewHandler(BaseHTTPRequestHandler):
    """GET the page, its pictures and picks.json; POST /picks. Nothing else."""

    server_version = "cocoaug-review"
    protocol_version = "HTTP/1.1"

    @property
    def site(self) -> ReviewSite:
        return self.server.site

    def log_message(self, format, *args):
        log.debug("%s %s", self.address_string(), format % args)

    def send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8", head: bool = False):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-cache")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def foreign_host(self) -> bool:
        """True (and answered with 400) when a server bound to localhost is asked for another host name:
        a web page whose name was rebound to 127.0.0.1 (DNS rebinding) gets nothing."""
        if not self.server.local_only:
            return False
        host = url_host(self.headers.get("Host", ""))
        if host is not None and is_local(host):
            return False
        self.close_connection = True
        reason = "the Host header is malformed" if host is None else f"requests for the host {host!r} are refused"
        self.send(400, f"{reason}: open the page at 127.0.0.1 or localhost\n".encode())
        return True

    def do_GET(self, head: bool = False):
        if self.foreign_host():
            return
        if self.path.split("?", 1)[0] == f"/{REVIEW_PICKS_FILE}":
            saved = self.site.saved_picks()
            if saved is None:
                return self.send(404, b"no decision saved yet\n", head=head)
            return self.send(200, saved, "application/json", head=head)
        path = self.site.resolve(self.path)
        if path is None:
            return self.send(404, b"not found\n", head=head)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if content_type == "text/html":
            content_type += "; charset=utf-8"
        self.send(200, path.read_bytes(), content_type, head=head)

    def do_HEAD(self):
        self.do_GET(head=True)

    def do_POST(self):
        if self.foreign_host():
            return
        if self.path != "/picks":
            self.close_connection = True
            return self.send(404, b"not found: only POST /picks is accepted\n")
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        origin = self.headers.get("Origin")
        length = self.headers.get("Content-Length", "")
        reason = None
        if not length.isdigit():
            reason, self.close_connection = "a Content-Length header is required", True
        elif int(length) > MAX_BODY_BYTES:
            reason = f"the body is {int(length)} bytes, over the limit of {MAX_BODY_BYTES} (10 MB)"
            self.discard_body(int(length))
        elif content_type != "application/json":
            reason = "the body must be JSON sent with Content-Type: application/json"
            self.discard_body(int(length))
        elif origin is not None and url_host(origin, scheme=True) is None:
            reason = "the Origin header is malformed"
            self.discard_body(int(length))
        elif origin is not None and urlsplit(origin).netloc != self.headers.get("Host"):
            # Another web site's page may not change the picks (its fetch carries its own Origin).
            reason = f"requests from {origin} are refused"
            self.discard_body(int(length))
        if reason is not None:
            return self.send(400, (reason + "\n").encode())
        body = self.rfile.read(int(length))
        try:
            document = self.site.save_picks(body)
        except UserError as exc:
            return self.send(400, (exc.message + "\n").encode())
        self.send(200, orjson.dumps(document), "application/json")

    def discard_body(self, length: int):
        """Read a refused body so that the client gets the answer; past DISCARD_LIMIT just close."""
        self.close_connection = True
        if length > DISCARD_LIMIT:
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)


def url_host(text: str, scheme: bool = False) -> str | None:
    """The host name of a Host header (``scheme``: of an Origin header, ``http://host:port``); None when it
    cannot be parsed (``[``, ``http://[``, a port that is not a number)."""
    try:
        parts = urlsplit(text if scheme else "//" + text)
        parts.port  # raises ValueError for a port that is not a number
        return parts.hostname or ""
    except ValueError:
        return None


def is_local(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ReviewHTTPServer(ThreadingHTTPServer):
    """The standard threading server with a listen backlog for a page that saves in bursts (the default, 5, made
    200 parallel saves wait for retransmitted connection requests)."""

    request_queue_size = LISTEN_BACKLOG


def make_server(site: ReviewSite, host: str, port: int) -> ThreadingHTTPServer:
    """A listening server for ``site``; a port in use or an address that cannot be bound is a UserError."""
    server_class = ReviewHTTPServer
    if ":" in host:
        server_class = type("ReviewHTTPServer6", (ReviewHTTPServer,), {"address_family": socket.AF_INET6})
    try:
        server = server_class((host, port), ReviewHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} is already in use: stop the other server or pass another --port", f"{host}:{port}") from None
        raise UserError(f"cannot listen there: {exc.strerror or exc}", f"--host {host} --port {port}") from None
    server.daemon_threads = True
    server.site = site
    server.local_only = is_local(host)
    return server


def start_lines(host: str, port: int, picks_path) -> list[str]:
    """What the server says on start: a warning when others can reach it, then the URL."""
    lines = []
    if not is_local(host):
        lines.append(f"warning: listening on {host or 'every address'}, not localhost: anyone who can reach this machine "
                     f"on port {port} can see the pictures and change {picks_path}")
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    lines.append(f"serving the review page at http://{shown}:{port}/ (decisions are saved to {picks_path}; Ctrl-C stops)")
    return lines


SERVER_MARKER = f"{DATA_SUBDIR}/server.js"  # while serving: tells the page opened from file:// where the server is


def serve(server: ThreadingHTTPServer):
    """Serve until Ctrl-C, saying where first (and warning when others can reach the page).

    While it serves, BOXES_DIR/review_data/server.js holds the address, so that the page opened
    from ``file://`` (which does not save to picks.json) says where to go.
    """
    host, port = server.server_address[:2]
    lines = start_lines(host, port, server.site.picks_path)
    address = re.search(r"http://\S+/", lines[-1]).group(0)
    marker = server.site.boxes_dir / SERVER_MARKER
    write_bytes_atomic(marker, b"cocoaugServer(" + orjson.dumps(address) + b");\n")
    for line in lines:
        print(line, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped serving", flush=True)
    finally:
        server.server_close()
        marker.unlink(missing_ok=True)
