"""Stands in for `vllm serve` in unit tests: `healthy` serves /health and forks a worker;
`die` fails at start-up; `hang` never becomes healthy."""

import http.server
import subprocess
import sys
import time

mode, port = sys.argv[1], int(sys.argv[2])
if mode == "die":
    print("boom: model architecture not supported", flush=True)
    sys.exit(3)
# A worker in the same process group, as vLLM's engine core is.
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
if mode == "hang":
    time.sleep(600)


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
