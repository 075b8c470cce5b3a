#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: fuzz/corpus/http-parser/ and fuzz/corpus/request-json/.

Hand-written inputs: real requests (what curl, the openai client and browsers send) and malformed
ones (each a known error path of the parser or the validator). Run it after editing the lists;
the files are committed. Existing seed files are replaced; files libFuzzer adds are never written
here (fuzz/run.sh fuzzes a temporary copy).
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))

CHAT = {"model": "default", "messages": [{"role": "system", "content": "You are helpful."},
                                         {"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 32, "temperature": 0}
CHAT_BODY = json.dumps(CHAT).encode()


def head(lines):
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(body, sizes):
    out, i = b"", 0
    for n in sizes:
        piece = body[i:i + n]
        i += n
        if piece:
            out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    if i < len(body):
        out += b"%x\r\n" % (len(body) - i) + body[i:] + b"\r\n"
    return out + b"0\r\n\r\n"


def http_seeds():
    post = lambda path, body, extra=(): head(["POST %s HTTP/1.1" % path, "Host: 127.0.0.1:8080",
                                               "Content-Type: application/json", *extra,
                                               "Content-Length: %d" % len(body)]) + body
    s = {
        "get_health": head(["GET /health HTTP/1.1", "Host: localhost:8080", "User-Agent: curl/8.5.0", "Accept: */*"]),
        "get_models_http10": head(["GET /v1/models HTTP/1.0"]),
        "get_http10_keepalive": head(["GET /metrics HTTP/1.0", "Connection: keep-alive"]),
        "get_query": head(["GET /v1/models?limit=1&x=%20y HTTP/1.1", "Host: a", "Connection: close"]),
        "options_preflight": head(["OPTIONS /v1/chat/completions HTTP/1.1", "Host: a", "Origin: http://x",
                                   "Access-Control-Request-Method: POST"]),
        "post_chat": post("/v1/chat/completions", CHAT_BODY, ["Authorization: Bearer secret"]),
        "post_chat_openai_client": post("/v1/chat/completions", CHAT_BODY,
                                        ["Accept: application/json", "User-Agent: OpenAI/Python 1.40.0",
                                         "X-Stainless-Lang: python", "Accept-Encoding: gzip, deflate"]),
        "post_completions": post("/v1/completions", b'{"model":"default","prompt":"Once upon","max_tokens":8}'),
        "post_chunked": head(["POST /v1/chat/completions HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"])
        + chunked(CHAT_BODY, [7, 30, 1]),
        "post_chunked_ext_trailer": head(["POST /v1/completions HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"])
        + b"5;name=value\r\nhello\r\n6 ; x\r\n world\r\n0\r\nX-Checksum: 1\r\nX-More: two\r\n\r\n",
        "post_chunked_upper_hex": head(["POST /x HTTP/1.1", "Host: a", "Transfer-Encoding: Chunked"])
        + b"A\r\n0123456789\r\n00\r\n\r\n",
        "post_expect_continue": head(["POST /v1/chat/completions HTTP/1.1", "Host: a", "Expect: 100-continue",
                                      "Content-Length: %d" % len(CHAT_BODY)]) + CHAT_BODY,
        "post_expect_continue_chunked": head(["POST /v1/chat/completions HTTP/1.1", "Host: a", "Expect: 100-Continue",
                                              "Transfer-Encoding: chunked"]) + chunked(CHAT_BODY, [50]),
        "pipelined_three": head(["GET /health HTTP/1.1", "Host: a"]) + post("/v1/completions", b'{"prompt":"x"}')
        + head(["GET /v1/models HTTP/1.1", "Host: a", "Connection: close"]),
        "pipelined_partial_tail": head(["GET /health HTTP/1.1", "Host: a"]) + b"POST /v1/completions HTTP/1.1\r\nHost: a\r\nContent-Le",
        "leading_empty_lines": b"\r\n\n" + head(["GET /health HTTP/1.1", "Host: a"]),
        "bare_lf_lines": b"GET /health HTTP/1.1\nHost: a\n\n",
        "content_length_list_same": head(["POST /x HTTP/1.1", "Host: a", "Content-Length: 3, 3"]) + b"abc",
        "content_length_zero": head(["POST /x HTTP/1.1", "Host: a", "Content-Length: 0"]),
        "header_ows": head(["GET / HTTP/1.1", "Host:   a  ", "X-Tab:\tv\t", "X-Empty:"]),
        # Malformed: each one reaches an error path.
        "bad_request_line_spaces": head(["GET  /health HTTP/1.1", "Host: a"]),
        "bad_request_line_two_parts": head(["GET /health", "Host: a"]),
        "bad_method": head(["G(T /health HTTP/1.1", "Host: a"]),
        "bad_target_ctl": b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
        "bad_target_utf8": "GET /caf\u00e9 HTTP/1.1\r\nHost: a\r\n\r\n".encode(),
        "bad_version": head(["GET / HTTP/1.x", "Host: a"]),
        "bad_version_2": head(["GET / HTTP/2.0", "Host: a"]),
        "bad_version_lower": head(["GET / http/1.1", "Host: a"]),
        "long_target": head(["GET /" + "a" * 2000 + " HTTP/1.1", "Host: a"]),
        "huge_header": head(["GET / HTTP/1.1", "Host: a", "X-Big: " + "b" * 5000]),
        "many_headers": head(["GET / HTTP/1.1", "Host: a"] + ["X-H%d: %d" % (i, i) for i in range(200)]),
        "no_host": head(["GET / HTTP/1.1"]),
        "two_hosts": head(["GET / HTTP/1.1", "Host: a", "Host: b"]),
        "header_no_colon": head(["GET / HTTP/1.1", "Host: a", "NoColon"]),
        "header_space_before_colon": head(["GET / HTTP/1.1", "Host : a"]),
        "header_obs_fold": head(["GET / HTTP/1.1", "Host: a", "X-A: 1", " folded"]),
        "header_bad_value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
        "header_invalid_utf8": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \xff\xfe\xc3\x28\r\n\r\n",
        "bare_cr": b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
        "cl_and_te": head(["POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Transfer-Encoding: chunked"]) + b"0\r\n\r\n",
        "cl_conflict": head(["POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Content-Length: 6"]) + b"hello!",
        "cl_negative": head(["POST / HTTP/1.1", "Host: a", "Content-Length: -1"]),
        "cl_plus": head(["POST / HTTP/1.1", "Host: a", "Content-Length: +5"]) + b"hello",
        "cl_huge": head(["POST / HTTP/1.1", "Host: a", "Content-Length: 99999999999999999999"]),
        "cl_too_large": head(["POST / HTTP/1.1", "Host: a", "Content-Length: 100000"]) + b"x" * 100,
        "te_gzip_chunked": head(["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip, chunked"]) + b"0\r\n\r\n",
        "te_chunked_twice": head(["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"]),
        "te_identity": head(["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: identity"]),
        "te_http10": head(["POST / HTTP/1.0", "Transfer-Encoding: chunked"]) + b"0\r\n\r\n",
        "chunk_size_bad": head(["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"]) + b"zz\r\nhello\r\n0\r\n\r\n",
        "chunk_size_overflow": head(["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"]) + b"fffffffffffffffff\r\nx\r\n",
        "chunk_size_negative": head(["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"]) + b"-1\r\nx\r\n",
        "chunk_size_bare_lf": head(["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"]) + b"5\nhello\r\n0\r\n\r\n",
        "chunk_data_no_crlf": head(["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"]) + b"5\r\nhelloX\r\n0\r\n\r\n",
        "chunk_long_ext": head(["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"]) + b"5;" + b"e" * 5000 + b"\r\n",
        "chunk_trailer_bad": head(["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"]) + b"0\r\nbad trailer\r\n\r\n",
        "chunk_too_large": head(["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"]) + b"100000\r\nabc",
        "expect_other": head(["POST / HTTP/1.1", "Host: a", "Expect: 200-ok", "Content-Length: 1"]) + b"x",
        "binary_garbage": bytes(range(256)),
        "empty_line_only": b"\r\n",
        "nul_request": b"\x00\x00\x00\r\n\r\n",
        "tls_client_hello": bytes.fromhex("16030100a5010000a10303") + b"\x00" * 32,
    }
    return s


def json_seeds():
    def d(o):
        return json.dumps(o).encode()
    msgs = [{"role": "user", "content": "Hi"}]
    s = {
        "chat_basic": CHAT_BODY,
        "chat_stream_usage": d({"model": "default", "messages": msgs, "stream": True, "stream_options": {"include_usage": True}}),
        "chat_all_fields": d({"model": "SmolLM2-135M-Instruct.Q4_1", "messages": [
            {"role": "developer", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                                        {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                                     "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"}],
            "max_completion_tokens": 16, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": -3,
            "stop": ["\n", "END"], "n": 2, "presence_penalty": 0.5, "frequency_penalty": -0.5, "logprobs": True,
            "top_logprobs": 5, "user": "u1", "speculation": False, "response_format": {"type": "text"}}),
        "chat_json_schema": d({"model": "default", "messages": msgs, "response_format": {"type": "json_schema", "json_schema": {
            "name": "p", "strict": True, "schema": {"type": "object", "$defs": {"a": {"type": "array", "items": {"$ref": "#/$defs/a"}, "maxItems": 2}},
                                                    "properties": {"n": {"type": "string", "maxLength": 4}, "k": {"enum": [1, "x", None]},
                                                                   "v": {"anyOf": [{"type": "integer"}, {"$ref": "#/$defs/a"}]}},
                                                    "required": ["n"], "additionalProperties": False}}}}),
        "chat_json_object": d({"model": "default", "messages": msgs, "response_format": {"type": "json_object"}}),
        "chat_tools": d({"model": "default", "messages": msgs, "parallel_tool_calls": False,
                         "tools": [{"type": "function", "function": {"name": "get_weather", "description": "w",
                                                                     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                         "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
        "chat_grammar": d({"model": "default", "messages": msgs, "grammar": "root ::= (\"a\" | [b-d]+ x){1,3}\nx ::= [^\\n]? # c"}),
        "chat_logit_bias": d({"model": "default", "messages": msgs, "logit_bias": {"42": -100, "7": 5.5}}),
        "completions_json_schema": d({"model": "default", "prompt": "x", "json_schema": {"type": ["string", "null"], "minLength": 1}}),
        "completions_score": d({"model": "default", "prompt": [1, 2, 3], "max_tokens": 0, "echo": True, "logprobs": 1}),
        "completions_text": d({"model": "default", "prompt": "Once upon a time", "max_tokens": 8, "echo": True, "logprobs": 2}),
        "completions_list": d({"model": "default", "prompt": ["a", "b"]}),
        "completions_tokens": d({"model": "default", "prompt": [1, 2, 3]}),
        "completions_token_lists": d({"model": "default", "prompt": [[1, 2], [3]]}),
        "unicode_content": json.dumps({"model": "default", "messages": [{"role": "user", "content": "caf\u00e9 \U0001F600 \u4e2d\u6587 \\u0000"}]},
                                      ensure_ascii=False).encode(),
        "escapes": b'{"model":"default","messages":[{"role":"user","content":"\\ud83d\\ude00 \\n\\t\\"\\\\ \\u0000"}]}',
        # Malformed or invalid.
        "empty": b"",
        "not_json": b"model=default&prompt=hi",
        "array_top": b"[1,2,3]",
        "truncated": CHAT_BODY[:40],
        "invalid_utf8": b'{"model":"default","messages":[{"role":"user","content":"\xff\xfe\xc3\x28"}]}',
        "lone_surrogate": b'{"model":"default","messages":[{"role":"user","content":"\\ud800"}]}',
        # A high surrogate whose next escape is not a low one (the debug fuzz build trapped on it).
        "broken_surrogate_pair": b'{"model":"default","messages":[{"role":"user","content":"\\ud83d\\ud0e00 \\u0041"}]}',
        "deep_array": b'{"model":"default","messages":' + b"[" * 3000 + b"]" * 3000 + b"}",
        "deep_object": b'{"model":"default","x":' + b'{"a":' * 2000 + b"1" + b"}" * 2000 + b"}",
        "missing_model": d({"messages": msgs}),
        "model_number": d({"model": 5, "messages": msgs}),
        "messages_empty": d({"model": "m", "messages": []}),
        "messages_object": d({"model": "m", "messages": {"role": "user"}}),
        "bad_role": d({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
        "content_number": d({"model": "m", "messages": [{"role": "user", "content": 5}]}),
        "content_image_part": d({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
        "max_tokens_zero": d({"model": "m", "messages": msgs, "max_tokens": 0}),
        "max_tokens_float": d({"model": "m", "messages": msgs, "max_tokens": 1.5}),
        "max_tokens_huge": b'{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1e300}',
        "max_tokens_bool": d({"model": "m", "messages": msgs, "max_tokens": True}),
        "temperature_string": d({"model": "m", "messages": msgs, "temperature": "hot"}),
        "temperature_nan_like": b'{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":1e999}',
        "top_p_zero": d({"model": "m", "messages": msgs, "top_p": 0}),
        "seed_huge": b'{"model":"m","messages":[{"role":"user","content":"x"}],"seed":18446744073709551615}',
        "seed_float": d({"model": "m", "messages": msgs, "seed": 0.5}),
        "stop_five": d({"model": "m", "messages": msgs, "stop": ["a", "b", "c", "d", "e"]}),
        "stop_empty_string": d({"model": "m", "messages": msgs, "stop": [""]}),
        "stop_mixed": d({"model": "m", "messages": msgs, "stop": ["a", 1]}),
        "n_zero": d({"model": "m", "messages": msgs, "n": 0}),
        "top_logprobs_without": d({"model": "m", "messages": msgs, "top_logprobs": 3}),
        "stream_options_no_stream": d({"model": "m", "messages": msgs, "stream_options": {"include_usage": True}}),
        "stream_options_bad": d({"model": "m", "messages": msgs, "stream": True, "stream_options": {"include_usage": 1}}),
        "stream_int": d({"model": "m", "messages": msgs, "stream": 1}),
        "user_number": d({"model": "m", "messages": msgs, "user": 7}),
        "prompt_negative_token": d({"model": "m", "prompt": [1, -2]}),
        "prompt_token_too_big": d({"model": "m", "prompt": [4294967296]}),
        "prompt_mixed": d({"model": "m", "prompt": ["a", 1]}),
        "prompt_empty_list": d({"model": "m", "prompt": []}),
        "prompt_nested_empty": d({"model": "m", "prompt": [[]]}),
        "duplicate_keys": b'{"model":"a","model":"b","messages":[{"role":"user","content":"x"}]}',
        "nulls": d({"model": "m", "messages": msgs, "max_tokens": None, "temperature": None, "stop": None, "seed": None}),
        "big_numbers": b'{"model":"m","messages":[{"role":"user","content":"x"}],"top_k":-0,"n":1.0,"temperature":2.0000000001}',
    }
    return s


def write(name, seeds):
    directory = os.path.join(HERE, "corpus", name)
    os.makedirs(directory, exist_ok=True)
    for key, data in seeds.items():
        with open(os.path.join(directory, key), "wb") as f:
            f.write(data)
    print(f"{directory}: {len(seeds)} seeds")


if __name__ == "__main__":
    write("http-parser", http_seeds())
    write("request-json", json_seeds())
