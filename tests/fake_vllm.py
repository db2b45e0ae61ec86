"""A scripted stand-in for the vLLM OpenAI server, for fast tests of the supervisor, client and API.

It speaks the few routes tuneloop uses (/health, /v1/models, /v1/chat/completions with SSE
streaming, /v1/load_lora_adapter, /v1/unload_lora_adapter) with vLLM's status codes, and answers
"<model>: <last user message>" word by word. Run as a process it can misbehave on purpose:

    python tests/fake_vllm.py --port 8123 --served-model-name base [--exit-after 1] [--spawn-child PIDFILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeVllm(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's listen backlog is 5: a burst of new connections (the load tests) overflows it and the
    # kernel resets some, which the API reports as 503. vLLM (uvicorn) listens with 2048.
    request_queue_size = 2048

    def __init__(self, port: int, served_name: str = "base"):
        super().__init__(("127.0.0.1", port), Handler)
        self.served_name = served_name
        self.adapters: dict[str, str] = {}
        self.refuse_loads = ""  # set to a message to make every adapter load fail with a 500
        self.answer_delay = 0.0  # seconds each chat completion waits before answering (to watch progress)
        self.requests: list[tuple[str, str, dict]] = []
        self.word_delay = 0.0  # seconds between streamed words (a slow model, for disconnect tests)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start_in_thread(self) -> "FakeVllm":
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    # `with FakeVllm(port) as srv:` serves in a thread and always stops and closes the socket.
    def __enter__(self) -> "FakeVllm":
        return self.start_in_thread()

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    server: FakeVllm

    def log_message(self, *args) -> None:
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": {"message": message, "type": "NotFoundError" if status == 404 else "Error",
                                      "param": None, "code": status}})

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path, {}))
        if self.path == "/health":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/v1/models":
            s = self.server
            data = [{"id": s.served_name, "object": "model", "created": 1, "owned_by": "vllm", "root": "/models/base",
                     "parent": None, "max_model_len": 2048}]
            data += [{"id": n, "object": "model", "created": 1, "owned_by": "vllm", "root": p,
                      "parent": s.served_name} for n, p in s.adapters.items()]
            self._json(200, {"object": "list", "data": data})
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self.server.requests.append(("POST", self.path, body))
        s = self.server
        if self.path == "/v1/load_lora_adapter":
            name, path = body.get("lora_name"), body.get("lora_path")
            if s.refuse_loads:
                return self._error(500, s.refuse_loads)
            if name in s.adapters:
                return self._error(400, f"The lora adapter '{name}' has already been loaded.")
            if not path or not os.path.isdir(path):
                return self._error(404, f"Loading lora {name} failed: No adapter found for {path}")
            s.adapters[name] = path
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/v1/unload_lora_adapter":
            if s.adapters.pop(body.get("lora_name"), None) is None:
                return self._error(404, f"The lora adapter '{body.get('lora_name')}' cannot be found.")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/v1/chat/completions":
            model = body.get("model")
            if model != s.served_name and model not in s.adapters:
                return self._error(404, f"The model `{model}` does not exist.")
            if s.answer_delay:
                time.sleep(s.answer_delay)
            user = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
            words = f"{model}: {user[-1] if user else ''}".split(" ")
            # Like vLLM, an answer longer than max_tokens is cut there, with finish_reason "length".
            cut = isinstance(body.get("max_tokens"), int) and len(words) > body["max_tokens"]
            words = words[:body["max_tokens"]] if cut else words
            if body.get("stream"):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for i, w in enumerate(words):
                    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": model,
                             "choices": [{"index": 0, "delta": {"content": w if i == 0 else " " + w},
                                          "finish_reason": ("length" if cut else "stop") if i == len(words) - 1 else None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                    if s.word_delay:
                        time.sleep(s.word_delay)
                if (body.get("stream_options") or {}).get("include_usage"):  # vLLM's usage-only last chunk
                    usage = {"prompt_tokens": 1, "completion_tokens": len(words), "total_tokens": 1 + len(words)}
                    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": model,
                             "choices": [], "usage": usage}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
            else:
                self._json(200, {"id": "x", "object": "chat.completion", "created": 1, "model": model,
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": " ".join(words)}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": len(words), "total_tokens": 1}})
        else:
            self._json(404, {"detail": "Not Found"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name", default="base")
    parser.add_argument("--start-delay", type=float, default=0.0, help="seconds before listening")
    parser.add_argument("--exit-after", type=float, default=0.0, help="crash this many seconds after listening")
    parser.add_argument("--fail-start", action="store_true", help="exit with code 3 before listening")
    parser.add_argument("--spawn-child", default="", help="start a long-lived child and write its pid here")
    args, _ = parser.parse_known_args()
    if args.fail_start:
        print("fake vllm: refusing to start", flush=True)
        sys.exit(3)
    if args.spawn_child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(args.spawn_child, "w") as f:
            f.write(str(child.pid))
    time.sleep(args.start_delay)
    server = FakeVllm(args.port, args.served_model_name)
    print(f"fake vllm listening on {server.url}", flush=True)
    if args.exit_after:
        threading.Timer(args.exit_after, lambda: os._exit(1)).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
