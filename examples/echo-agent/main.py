"""An agent that follows the AgentCore HTTP contract using only Python's
standard library: POST /invocations echoes the prompt (as server-sent events
when the request asks for "stream": true), GET /ping reports health."""

import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def answer(prompt):
    # A real agent calls its model here (Bedrock, OpenAI, a local model...)
    # and yields tokens as they arrive.
    for word in ("You", "said:", *prompt.split()):
        yield word


class Agent(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY, a reply written as headers then body waits for a
    # delayed ACK on keep-alive connections: 40 ms per call.
    disable_nagle_algorithm = True

    def do_GET(self):
        if self.path == "/ping":
            self.reply(200, {"status": "Healthy", "time_of_last_update": int(time.time())})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        if self.path != "/invocations":
            return self.reply(404, {"error": "not found"})
        try:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        except ValueError:
            return self.reply(400, {"error": "Invalid JSON"})
        prompt = str(req.get("prompt", ""))
        print("prompt:", prompt, flush=True)
        if not req.get("stream"):
            return self.reply(200, {"result": " ".join(answer(prompt))})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for token in answer(prompt):
            frame = ("data: " + json.dumps(token) + "\n\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()
            time.sleep(0.1)
        self.wfile.write(b"0\r\n\r\n")

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass  # keep the session log for the agent's own output


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Agent).serve_forever()
