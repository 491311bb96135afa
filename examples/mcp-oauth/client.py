"""An MCP client of examples/mcp-oauth with a token: the tools its scopes reach, a call to one of
notes', and a call to math's add (which needs the math scope).

    .venv/bin/python examples/mcp-oauth/client.py examples/mcp-oauth/reader.jwt [URL]
"""

import asyncio
import pathlib
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main(token_file: str, url: str) -> None:
    token = pathlib.Path(token_file).read_text().strip()
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    async with Client(streamable_http_client(url, http_client=http)) as client:
        print([tool.name for tool in (await client.list_tools()).tools])
        print((await client.call_tool("notes__echo", {"text": "hello"})).content[0].text)
        try:
            print((await client.call_tool("math__add", {"a": 2, "b": 3})).content[0].text)
        except Exception as refused:  # the SDK raises the gateway's JSON-RPC error
            print("refused:", refused)


asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "http://localhost:1975/mcp"))
