# Sourced by benches/load.sh and benches/count.sh: the LLM-shaped bodies of the
# governed profile. bench_bodies DIR writes DIR/chat.json and DIR/stream.json (the
# requests an agent sends), and DIR/chat-answer.json (a ~300-byte chat completion
# with usage) and DIR/sse-answer.txt (24 server-sent events, ~4.6 KB, usage in the
# last chunk) for the origin to return. nginx serves the answers as static files (a
# `return` string is limited to 4 KiB); `error_page 405 =200 $uri` lets a POST fetch
# them: nginx_answer_location PATH FILE TYPE prints that location block.
bench_bodies() {
  local dir="$1"
  printf '%s' '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say one short sentence about foxes."}],"max_tokens":64}' \
    >"$dir/chat.json"
  printf '%s' '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say one short sentence about foxes."}],"max_tokens":64,"stream":true,"stream_options":{"include_usage":true}}' \
    >"$dir/stream.json"
  printf '%s' '{"id":"chatcmpl-bench","object":"chat.completion","created":1764720000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog."},"finish_reason":"stop"}],"usage":{"prompt_tokens":15,"completion_tokens":11,"total_tokens":26}}' \
    >"$dir/chat-answer.json"
  python3 - >"$dir/sse-answer.txt" <<'PY'
import json
head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1764720000,
        "model": "gpt-4o-mini-2024-07-18"}
words = ("The quick brown fox jumps over the lazy dog while the cat watches "
         "from the warm windowsill and purrs softly at dusk").split()
events = []
for i, w in enumerate(words[:22]):
    delta = {"role": "assistant", "content": w} if i == 0 else {"content": " " + w}
    events.append(dict(head, choices=[{"index": 0, "delta": delta, "finish_reason": None}]))
events.append(dict(head, choices=[], usage={"prompt_tokens": 19, "completion_tokens": 22, "total_tokens": 41}))
out = "".join("data: " + json.dumps(e, separators=(",", ":")) + "\n\n" for e in events)
out += "data: [DONE]\n\n"
print(out, end="")
PY
}

nginx_answer_location() { # path file content-type
  printf 'location = %s { alias %s; default_type %s; error_page 405 =200 $uri; }\n' "$1" "$2" "$3"
}
