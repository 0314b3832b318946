"""Reduce a recorded provider response/stream to the fields metering reads (ids, model, times, usage)."""
import json, subprocess, sys

KEEP = ("id", "object", "type", "model", "created", "created_at", "status", "service_tier", "usage",
        "usageMetadata", "modelVersion", "responseId", "system_fingerprint", "error")

def show(repo, rev, path):
    return subprocess.run(["git", "-C", repo, "show", f"{rev}:{path}"], capture_output=True, text=True, check=True).stdout

def chunks_of(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("data:"):
            line = line[5:].strip()
        if not line or line == "[DONE]" or not line.startswith("{"):
            continue
        out.append(json.loads(line))
    return out

def slim(obj):
    d = {k: obj[k] for k in KEEP if k in obj}
    if "candidates" in obj:  # Gemini: keep only finishReason per candidate
        d["candidates"] = [{k: c[k] for k in ("finishReason", "index") if k in c} for c in obj["candidates"]]
    if "choices" in obj:  # OpenAI chat: keep index/finish_reason, no text
        d["choices"] = [{k: c[k] for k in ("index", "finish_reason") if k in c} for c in obj["choices"]]
    return d

def reduce_stream(items):
    out = []
    for i, ev in enumerate(items):
        t = ev.get("type")
        if t == "message_start":
            m = dict(ev["message"]); m.pop("content", None); m["content"] = []
            out.append({"type": t, "message": slim(m) | {"content": []}})
        elif t in ("message_delta", "message_stop", "error"):
            out.append(ev)
        elif t in ("response.created", "response.completed", "response.incomplete", "response.failed"):
            out.append({k: ev[k] for k in ("type", "sequence_number") if k in ev} | {"response": slim(ev["response"])})
        elif ev.get("object") == "chat.completion.chunk":
            if i == 0 or ev.get("usage") or any(c.get("finish_reason") for c in ev.get("choices", [])):
                out.append(slim(ev) | {"choices": [{k: c[k] for k in ("index", "finish_reason", "delta") if k in c and k != "delta"} | {"delta": {}} for c in ev.get("choices", [])]})
        elif "usageMetadata" in ev or "candidates" in ev:
            fin = any(c.get("finishReason") for c in ev.get("candidates", []))
            if "usageMetadata" in ev or fin:
                out.append(slim(ev))
    return out

def reduce(repo, rev, path):
    text = show(repo, rev, path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return reduce_stream(chunks_of(text))
    if isinstance(doc, list):
        return reduce_stream(doc)
    return slim(doc)

if __name__ == "__main__":
    repo, rev, path = sys.argv[1:4]
    print(json.dumps(reduce(repo, rev, path)))
