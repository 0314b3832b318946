import json
def reduce_slp(path):
    d = json.load(open(path))
    resp = d.get("response")
    if isinstance(resp, dict):
        for ch in resp.get("choices") or []:
            msg = ch.get("message") or ch.get("delta")
            if isinstance(msg, dict):
                for k in ("provider_specific_fields", "thinking_blocks", "reasoning_content", "annotations", "tool_calls", "function_call", "images", "audio"):
                    msg.pop(k, None)
                if isinstance(msg.get("content"), str):
                    msg["content"] = "(omitted)"
        resp.pop("provider_specific_fields", None)
    hp = d.get("hidden_params")
    if isinstance(hp, dict):
        hp.pop("additional_headers", None)
    mm = d.get("model_map_information")
    if isinstance(mm, dict) and isinstance(mm.get("model_map_value"), dict):
        mm["model_map_value"].pop("supported_openai_params", None)
    return d
