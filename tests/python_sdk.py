"""Chats through the gateway with the official Python openai SDK, as a Python user would.

Usage: python_sdk.py <base_url> <key>   (prints one JSON line with what it saw)
"""
import json
import sys

from openai import OpenAI

base_url, key = sys.argv[1], sys.argv[2]
client = OpenAI(api_key=key, base_url=base_url, max_retries=0)
messages = [{"role": "user", "content": "hello from python"}]

plain = client.chat.completions.create(model="openai/gpt-4o-mini", messages=messages)
streamed = ""
usage = None
for chunk in client.chat.completions.create(model="openai/gpt-4o-mini", messages=messages, stream=True):
    if chunk.choices:
        streamed += chunk.choices[0].delta.content or ""
    if chunk.usage:
        usage = chunk.usage.model_dump()
try:
    client.chat.completions.create(model="openai/gpt-4o-mini", messages=[])
    bad_request = None
except Exception as err:  # the SDK raises BadRequestError
    bad_request = {"type": type(err).__name__, "status": getattr(err, "status_code", None)}

print(json.dumps({
    "plain": plain.choices[0].message.content,
    "plain_usage": plain.usage.model_dump(),
    "streamed": streamed,
    "stream_usage": usage,
    "bad_request": bad_request,
}))
