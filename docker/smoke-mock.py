"""A stand-in provider for docker/smoke.sh, on 127.0.0.1 only.

Answers any POST like an OpenAI-style chat completion (with `usage`), streamed as server-sent
events when the body asks for `"stream": true` (eight chunks, 0.3 s apart, then usage and
[DONE]), and GET with an empty model list. Appends every request's Authorization header to the
file given as the second argument, so the smoke test can tell which key arrived without any key
being printed. Writes the port it listens on to the file given as the first argument.

For docker/smoke-team.sh: MOCK_COST adds `"cost": MOCK_COST` (dollars, as OpenRouter reports
it) to every usage, and a request whose Authorization header is a line of the file MOCK_REFUSE
is answered 429 with `Retry-After: 30`, as a provider rate-limiting that key.
"""
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT_FILE, SEEN_FILE = sys.argv[1], sys.argv[2]
USAGE = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
if os.environ.get("MOCK_COST"):
    USAGE["cost"] = float(os.environ["MOCK_COST"])
REFUSE_FILE = os.environ.get("MOCK_REFUSE")


def refused(authorization):
    if not REFUSE_FILE or not os.path.exists(REFUSE_FILE):
        return False
    with open(REFUSE_FILE) as f:
        return authorization in f.read().splitlines()


class Provider(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def seen(self):
        with open(SEEN_FILE, "a") as f:
            f.write(self.headers.get("authorization", "") + "\n")

    def send_json(self, value):
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.seen()
        self.send_json({"object": "list", "data": []})

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        request = json.loads(self.rfile.read(length) or b"{}")
        self.seen()
        if refused(self.headers.get("authorization", "")):
            body = b'{"error":{"message":"rate limited","code":429}}'
            self.send_response(429)
            self.send_header("retry-after", "30")
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if not request.get("stream"):
            self.send_json({
                "id": "mock-1", "object": "chat.completion", "model": "mock/model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                             "finish_reason": "stop"}],
                "usage": USAGE,
            })
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        events = [{"id": "mock-2", "model": "mock/model",
                   "choices": [{"index": 0, "delta": {"content": f"part{i} "}}]} for i in range(8)]
        events.append({"id": "mock-2", "model": "mock/model", "choices": [], "usage": USAGE})
        for i, event in enumerate(events):
            self.chunk(f"data: {json.dumps(event)}\n\n".encode())
            if i < 8:
                time.sleep(0.3)
        self.chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


# Loopback and any port unless told otherwise (the Compose check runs it in a container).
bind = (os.environ.get("MOCK_BIND", "127.0.0.1"), int(os.environ.get("MOCK_PORT", "0")))
server = ThreadingHTTPServer(bind, Provider)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
# Renamed into place: the smoke test never reads half a port number.
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
