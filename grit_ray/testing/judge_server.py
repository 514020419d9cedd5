"""A local OpenAI-compatible judge server: for tests, benchmarks and offline demos.

``POST /v1/chat/completions`` reads the GRIT judge prompt, scores the model's answer against the
standard answer with the rule judge, and replies ``{score: S}`` like an LLM would, after
``latency_s``. Faults are injected by markers in the model's answer, so one test file can
exercise every failure path against a real HTTP server:

- ``#500xN`` / ``#429xN``: the first N requests with this prompt get that status;
- ``#garbagexN``: the first N replies carry no score; ``#garbage``: every reply;
- ``#hang``: the request sleeps ``hang_s`` before answering (longer than any sane timeout).

The cross-modal question (which of two images matches) is always answered "Image 0", or with no
pick when the chain contains ``#garbage``.

``GET /stats`` returns request counts and the peak number of requests in flight.
Run it with ``python -m grit_ray.testing.judge_server --port 8011 --latency 0.3``; it binds to
127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from grit_ray.judge.rule import rule_score

_ANSWER_RE = re.compile(r"Standard answer: (.*?) \nModel\u2019s answer: (.*)", re.S)
_FAULT_RE = re.compile(r"#(500|429|garbage)(?:x(\d+))?")


class JudgeServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, latency_s: float = 0.0, hang_s: float = 60.0):
        self.latency_s = latency_s
        self.hang_s = hang_s
        self.seen: Counter[str] = Counter()
        self.requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        # (path with query, the api-key header, the Authorization header) of every POST: how a
        # client addressed the endpoint (an Azure deployment, an API version) and authenticated
        self.posts: list[tuple[str, str | None, str | None]] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> JudgeServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _reply(self, prompt: str) -> tuple[int, str]:
        """(HTTP status, reply text) for one request."""
        with self._lock:
            self.seen[prompt] += 1
            nth = self.seen[prompt]
        if "Which image matches the reasoning?" in prompt:  # the cross-modal question: a fixed pick
            return 200, "I cannot tell." if "#garbage" in prompt else "Image 0"
        m = _ANSWER_RE.search(prompt)
        reference, prediction = (m.group(1), m.group(2)) if m else ("", prompt)
        if "#hang" in prediction:
            time.sleep(self.hang_s)
        fault = _FAULT_RE.search(prediction)
        if fault:
            kind, times = fault.group(1), fault.group(2)
            if times is None or nth <= int(times):
                if kind == "garbage":
                    return 200, "I cannot decide on this one."
                return int(kind), ""
            prediction = _FAULT_RE.sub("", prediction)
        return 200, "{score: %s}" % rule_score(prediction, reference)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/stats"):
                    self._send(200, {"requests": server.requests, "peak_in_flight": server.peak_in_flight})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                with server._lock:
                    server.posts.append((self.path, self.headers.get("api-key"), self.headers.get("Authorization")))
                    server.requests += 1
                    server.in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
                finished = False

                def finish() -> None:
                    # a request stops counting as in flight before its answer goes out: the client
                    # may send its next one the moment it reads this answer
                    nonlocal finished
                    with server._lock:
                        server.in_flight -= 1
                    finished = True

                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                    content = body["messages"][-1]["content"]
                    if isinstance(content, list):  # multimodal: take the text part
                        content = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
                    time.sleep(server.latency_s)
                    status, text = server._reply(content)
                    finish()
                    if status != 200:
                        self._send(status, {"error": {"message": f"injected {status}", "type": "server_error"}})
                        return
                    self._send(200, {
                        "id": "chatcmpl-local", "object": "chat.completion", "created": int(time.time()),
                        "model": body.get("model", "local-judge"),
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": text}}],
                        "usage": {"prompt_tokens": len(content) // 4, "completion_tokens": 5,
                                  "total_tokens": len(content) // 4 + 5},
                    })
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout); nothing to answer
                finally:
                    if not finished:
                        finish()

        return Handler


class VLLMJudgeServer:
    """Ray actor: vLLM's OpenAI-compatible server for an open judge model, inside the cluster
    (no paid API). It runs ``python -m vllm.entrypoints.openai.api_server`` as a child process,
    waits until the model is served, and hands out ``base_url`` for ``reward.judge.base_url``.

    It binds to 127.0.0.1 unless ``host`` says otherwise ("node" = this node's cluster address);
    with ``api_key_env`` set, the server requires that key, read from this actor's environment."""

    def __init__(self, model: str, host: str = "127.0.0.1", port: int = 0, api_key_env: str | None = None,
                 extra_args: list[str] | None = None, startup_timeout_s: float = 900.0,
                 log_path: str | None = None):
        import os
        import socket
        import subprocess
        import sys
        import tempfile
        import urllib.request

        if host == "node":
            import ray

            host = ray.util.get_node_ip_address()
        if not port:
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = sock.getsockname()[1]
        self.host, self.port, self.model = host, port, model
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", host,
               "--port", str(port), *(extra_args or [])]
        env = dict(os.environ)
        key = os.environ.get(api_key_env) if api_key_env else None
        if api_key_env and not key:
            raise RuntimeError(f"VLLMJudgeServer: api_key_env {api_key_env!r} is not set in this actor's environment")
        if key:
            env["VLLM_API_KEY"] = key  # the server reads it from its environment: never on a command line
        self.log_path = log_path or tempfile.mktemp(prefix="vllm-judge-", suffix=".log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + startup_timeout_s
        health = f"http://{host}:{port}/health"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the vLLM judge server exited with code {self.proc.returncode}; "
                                   f"see {self.log_path}")
            try:
                with urllib.request.urlopen(health, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise TimeoutError(f"the vLLM judge server did not come up in {startup_timeout_s:.0f}s; "
                                   f"see {self.log_path}")
            time.sleep(1.0)

    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
        self._log.close()


def main() -> None:
    p = argparse.ArgumentParser(description="local OpenAI-compatible GRIT judge (rule-based scores)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8011)
    p.add_argument("--latency", type=float, default=0.0, help="seconds per reply")
    args = p.parse_args()
    server = JudgeServer(args.host, args.port, args.latency)
    print(f"judge server at {server.base_url}", flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
