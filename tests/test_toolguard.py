import json

import pytest

from agent.core.dialects import Dialect
from agent.core.toolguard import ToolCallGuard, called_tools, denied_tool_calls

A, C, R, G = Dialect.ANTHROPIC, Dialect.OPENAI_CHAT, Dialect.OPENAI_RESPONSES, Dialect.GEMINI
DENIED = {"Bash", "multi_agent_v1.spawn_agent", "mcp__evil__drop", "apply_patch"}


def is_denied(name):
    return name in DENIED


def sse(name, data, eol="\n"):
    head = f"event: {name}{eol}" if name else ""
    return f"{head}data: {json.dumps(data)}{eol}{eol}".encode()


def anthropic_block(index, block):
    return sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


ANTHROPIC_HEAD = (
    sse("message_start", {"type": "message_start", "message": {"id": "msg_1", "content": [], "usage": {}}})
    + anthropic_block(0, {"type": "text", "text": ""})
    + sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                  "delta": {"type": "text_delta", "text": "I'll run Bash"}})
    + sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    + anthropic_block(1, {"type": "tool_use", "id": "t1", "name": "Read", "input": {}})
    + sse("content_block_stop", {"type": "content_block_stop", "index": 1})
    + b": keep-alive comment\n\n"
)  # fmt: skip
ANTHROPIC_TAIL = sse("content_block_delta", {"type": "content_block_delta", "index": 2,
                                             "delta": {"type": "input_json_delta", "partial_json": "{}"}})
ANTHROPIC_TAIL += sse("message_stop", {"type": "message_stop"})


def chat_chunk(delta):
    return sse("", {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]})


CHAT_HEAD = chat_chunk({"role": "assistant", "content": "ok"}) + chat_chunk(
    {"tool_calls": [{"index": 0, "id": "a", "type": "function", "function": {"name": "Read", "arguments": ""}}]}
) + chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"Bash\": 1}"}}]})
CHAT_TAIL = chat_chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}) + b"data: [DONE]\n\n"


def resp(kind, seq, **fields):
    return sse(kind, {"type": kind, "sequence_number": seq, **fields})


RESPONSES_HEAD = (
    resp("response.created", 0, response={"id": "resp_1", "model": "gpt-5", "status": "in_progress"})
    + resp("response.output_item.added", 1, output_index=0, item={"type": "function_call", "name": "Read"})
    + resp("response.output_item.done", 2, output_index=0, item={"type": "function_call", "name": "Read"})
)
RESPONSES_TAIL = resp("response.completed", 9, response={"id": "resp_1", "status": "completed"})

GEMINI_HEAD = sse("", {"candidates": [{"content": {"parts": [{"text": "hi"}]}}]}, "\r\n") + sse(
    "", {"candidates": [{"content": {"parts": [{"functionCall": {"name": "Read", "args": {}}}]}}]}, "\r\n"
)
GEMINI_TAIL = sse("", {"candidates": [{"finishReason": "STOP"}], "usageMetadata": {}}, "\r\n")


def gemini_call(name):
    return sse("", {"candidates": [{"content": {"parts": [{"functionCall": {"name": name, "args": {}}}]}}]}, "\r\n")


CASES = {
    "anthropic": (A, ANTHROPIC_HEAD, anthropic_block(2, {"type": "tool_use", "id": "t2", "name": "Bash"}), ANTHROPIC_TAIL),
    "anthropic-mcp": (A, ANTHROPIC_HEAD, anthropic_block(2, {"type": "mcp_tool_use", "id": "t2", "name": "drop",
                                                              "server_name": "evil", "input": {}}), ANTHROPIC_TAIL),
    "chat": (C, CHAT_HEAD, chat_chunk({"tool_calls": [{"index": 1, "id": "b", "type": "function",
                                                      "function": {"name": "Bash", "arguments": ""}}]}), CHAT_TAIL),
    "responses": (R, RESPONSES_HEAD, resp("response.output_item.added", 3, output_index=1,
                                          item={"type": "function_call", "name": "Bash", "call_id": "x"}), RESPONSES_TAIL),
    "responses-custom": (R, RESPONSES_HEAD, resp("response.output_item.added", 3, output_index=1,
                                                 item={"type": "custom_tool_call", "name": "apply_patch"}), RESPONSES_TAIL),
    "responses-namespace": (R, RESPONSES_HEAD, resp("response.output_item.added", 3, output_index=1,
                            item={"type": "function_call", "namespace": "multi_agent_v1", "name": "spawn_agent"}),
                            RESPONSES_TAIL),
    "responses-mcp": (R, RESPONSES_HEAD, resp("response.output_item.added", 3, output_index=1,
                                              item={"type": "mcp_call", "server_label": "evil", "name": "drop"}),
                      RESPONSES_TAIL),
    "gemini": (G, GEMINI_HEAD, gemini_call("Bash"), GEMINI_TAIL),
}  # fmt: skip


def run(dialect, stream, size):
    guard = ToolCallGuard(dialect, is_denied)
    out = b"".join(guard.feed(stream[i : i + size]) for i in range(0, len(stream), size)) + guard.finish()
    return guard, out


def events(raw):
    return [e for e in raw.replace(b"\r\n", b"\n").split(b"\n\n") if e]


def data_of(event):
    return json.loads(b"\n".join(line[6:] for line in event.split(b"\n") if line.startswith(b"data: ")))


@pytest.mark.parametrize("case", CASES)
def test_denied_call_is_cut_for_any_chunking(case):
    dialect, head, bad, tail = CASES[case]
    stream = head + bad + tail
    _, whole = run(dialect, stream, len(stream))
    assert whole.startswith(head) and whole != head
    terminal = whole[len(head) :]
    assert b"Bash" not in terminal or b"blocked by policy" in terminal
    assert bad not in whole and tail not in whole
    for size in [1, 2, 3, 5, 7, 11, 64, 1000]:
        guard, out = run(dialect, stream, size)
        assert out == whole, f"chunk size {size}"
        assert guard.denied is not None


@pytest.mark.parametrize("case", CASES)
def test_clean_stream_passes_byte_for_byte(case):
    dialect, head, _bad, tail = CASES[case]
    stream = head + tail
    for size in [1, 3, 17, len(stream)]:
        guard, out = run(dialect, stream, size)
        assert out == stream and guard.denied is None


def test_incomplete_trailing_event_is_held_then_flushed():
    guard = ToolCallGuard(A, is_denied)
    partial = anthropic_block(2, {"type": "tool_use", "id": "t", "name": "Read"})[:-2]
    assert guard.feed(ANTHROPIC_HEAD + partial) == ANTHROPIC_HEAD
    assert guard.finish() == partial


def test_denied_call_in_unterminated_last_event_is_still_cut():
    guard = ToolCallGuard(A, is_denied)
    out = guard.feed(ANTHROPIC_HEAD + anthropic_block(2, {"type": "tool_use", "name": "Bash"})[:-2])
    out += guard.finish()
    assert out.startswith(ANTHROPIC_HEAD) and b"permission_error" in out


def test_anthropic_terminal_event():
    _, out = run(*CASES["anthropic"][:1], b"".join(CASES["anthropic"][1:]), 4)
    (terminal,) = events(out[len(ANTHROPIC_HEAD) :])
    assert terminal.startswith(b"event: error\n")
    assert data_of(terminal) == {"type": "error", "error": {"type": "permission_error",
                                                            "message": 'tool "Bash" is blocked by policy'}}


def test_anthropic_mcp_call_is_named_like_claude_code():
    guard, _ = run(A, b"".join(CASES["anthropic-mcp"][1:]), 9)
    assert guard.denied == "mcp__evil__drop"


def test_chat_terminal_frames():
    _, out = run(C, b"".join(CASES["chat"][1:]), 5)
    error, done = events(out[len(CHAT_HEAD) :])
    assert data_of(error)["error"]["code"] == "policy_violation"
    assert data_of(error)["error"]["message"] == 'tool "Bash" is blocked by policy'
    assert done == b"data: [DONE]"


def test_responses_terminal_events():
    guard, out = run(R, b"".join(CASES["responses-namespace"][1:]), 6)
    assert guard.denied == "multi_agent_v1.spawn_agent"
    error, failed = events(out[len(RESPONSES_HEAD) :])
    assert error.startswith(b"event: error\n") and failed.startswith(b"event: response.failed\n")
    assert data_of(error)["code"] == "policy_violation" and data_of(error)["sequence_number"] == 3
    body = data_of(failed)
    assert body["type"] == "response.failed" and body["sequence_number"] == 4
    assert body["response"]["id"] == "resp_1" and body["response"]["status"] == "failed"
    assert body["response"]["error"] == {"code": "policy_violation",
                                         "message": 'tool "multi_agent_v1.spawn_agent" is blocked by policy'}


def test_responses_output_item_done_alone_is_checked():
    stream = RESPONSES_HEAD + resp("response.output_item.done", 3, item={"type": "function_call", "name": "Bash"})
    guard, out = run(R, stream, 10)
    assert guard.denied == "Bash" and out.startswith(RESPONSES_HEAD)


def test_gemini_terminal_frame_uses_the_stream_line_ending():
    _, out = run(G, b"".join(CASES["gemini"][1:]), 3)
    terminal = out[len(GEMINI_HEAD) :]
    assert terminal.endswith(b"\r\n\r\n")
    (event,) = events(terminal)
    assert data_of(event) == {"error": {"code": 403, "message": 'tool "Bash" is blocked by policy',
                                        "status": "PERMISSION_DENIED"}}


def gemini_array(*chunks):
    return b"[" + b",\r\n".join(json.dumps(c).encode() for c in chunks) + b"]"


TEXT = {"candidates": [{"content": {"parts": [{"text": "a \"[{\" b"}]}}]}
CALL = {"candidates": [{"content": {"parts": [{"functionCall": {"name": "Bash", "args": {}}}]}}]}


def test_gemini_json_array_stream():
    stream = gemini_array(TEXT, TEXT, CALL, TEXT)
    cut_at = stream.index(json.dumps(CALL).encode())
    for size in [1, 4, 50, len(stream)]:
        guard, out = run(G, b"\n  " + stream, size)
        assert out.startswith(b"\n  " + stream[:cut_at]) and guard.denied == "Bash"
        assert json.loads(out)[-1]["error"]["status"] == "PERMISSION_DENIED"
        assert len(json.loads(out)) == 3
    clean = gemini_array(TEXT, TEXT)
    for size in [1, 7, len(clean)]:
        assert run(G, clean, size)[1] == clean


def test_first_element_denied_in_gemini_array():
    _, out = run(G, gemini_array(CALL), 2)
    assert [e["error"]["code"] for e in json.loads(out)] == [403]


def test_denied_tool_calls_in_json_bodies():
    anthropic = {"content": [{"type": "text", "text": "x"}, {"type": "tool_use", "name": "Bash"},
                             {"type": "server_tool_use", "name": "web_search"},
                             {"type": "mcp_tool_use", "name": "drop", "server_name": "evil"}]}
    assert denied_tool_calls(A, anthropic, is_denied) == ["Bash", "mcp__evil__drop"]
    chat = {"choices": [{"message": {"tool_calls": [{"function": {"name": "Bash"}}, {"function": {"name": "Bash"}},
                                                    {"function": {"name": "Read"}}]}}]}
    assert denied_tool_calls(C, chat, is_denied) == ["Bash"]
    assert denied_tool_calls(C, {"choices": [{"message": {"function_call": {"name": "Bash"}}}]}, is_denied) == ["Bash"]
    responses = {"output": [{"type": "message"}, {"type": "custom_tool_call", "name": "apply_patch"},
                            {"type": "mcp_call", "server_label": "evil", "name": "drop"},
                            {"type": "function_call", "name": "spawn_agent", "namespace": "multi_agent_v1"}]}
    assert denied_tool_calls(R, responses, is_denied) == ["apply_patch", "mcp__evil__drop",
                                                           "multi_agent_v1.spawn_agent"]
    assert denied_tool_calls(G, CALL, is_denied) == ["Bash"]
    assert denied_tool_calls(G, [TEXT, CALL], is_denied) == ["Bash"]
    assert denied_tool_calls(G, TEXT, is_denied) == []


def test_called_tools_ignores_garbage():
    assert called_tools(A, "nope") == [] and called_tools(C, {"choices": "x"}) == []


def test_unparsable_events_pass_untouched():
    stream = b"data: {not json tool_calls\n\n" + CHAT_TAIL
    assert run(C, stream, 3)[1] == stream
