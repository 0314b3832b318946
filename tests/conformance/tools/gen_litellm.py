"""Run LiteLLM (whatever version this interpreter has) against a loopback server that replays ONE recorded
provider response, and print the StandardLoggingPayload LiteLLM hands its callbacks."""
import json, sys, threading, time
from http.server import BaseHTTPRequestHandler, HTTPServer

provider_model, body_file = sys.argv[1], sys.argv[2]
stream = "stream" in sys.argv[3:]
body = open(body_file, "rb").read()

class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream" if stream else "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

srv = HTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
base = f"http://127.0.0.1:{srv.server_address[1]}"

import litellm
from litellm.integrations.custom_logger import CustomLogger
captured = []
class Cap(CustomLogger):
    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        captured.append(kwargs.get("standard_logging_object"))
litellm.callbacks = [Cap()]
kw = dict(model=provider_model, messages=[{"role": "user", "content": "hi"}], stream=stream)
if provider_model.startswith("bedrock/"):
    kw.update(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="x", aws_region_name=provider_model.split(":")[3] if "arn:" in provider_model else "us-east-1", aws_bedrock_runtime_endpoint=base)
else:
    kw.update(api_key="sk-test", api_base=base)
if stream:
    kw["stream_options"] = {"include_usage": True}
r = litellm.completion(**kw)
if stream:
    for _ in r:
        pass
for _ in range(100):
    if captured:
        break
    time.sleep(0.05)
open(sys.argv[-1], "w").write(json.dumps(captured[0], default=str, indent=1))
